/* C accelerator for wsharbor.asyncio: one call that writes to many sockets.
 *
 * send_each(fds, frames) -> list[tuple[int, int]]
 *     For each index i, send(fds[i], frames[i]) on a non-blocking socket, in
 *     order, with the GIL released once for the whole list. ``fds`` is a list
 *     of file descriptors, ``frames`` a list of ``bytes`` of the same length;
 *     a negative descriptor is an entry not to try (returned with 0).
 *     Returns the entries that didn't go out whole, as (i, sent): the bytes
 *     the socket took (0 when it would have blocked, or wasn't tried), or
 *     -errno when send() failed. Once a descriptor didn't take a whole frame, its later entries
 *     are not attempted and are returned with 0, so that the caller, which
 *     buffers what's left in index order, keeps each socket's bytes in order.
 *
 * This is the send() of broadcast() to thousands of connections: there the
 * system call is most of the cost, and in Python each one also costs a method
 * call on the transport and the socket object's wrapper around send().
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0
#endif

static PyObject *
send_each(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send_each() takes exactly 2 arguments");
        return NULL;
    }
    PyObject *fds = args[0];
    PyObject *frames = args[1];
    if (!PyList_Check(fds) || !PyList_Check(frames)) {
        PyErr_SetString(PyExc_TypeError, "send_each() takes two lists");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(fds);
    if (PyList_GET_SIZE(frames) != count) {
        PyErr_SetString(PyExc_ValueError, "send_each() needs as many frames as descriptors");
        return NULL;
    }
    PyObject *failures = PyList_New(0);
    if (failures == NULL) {
        return NULL;
    }
    if (count == 0) {
        return failures;
    }
    int *cfds = PyMem_New(int, count);
    PyObject **objects = PyMem_New(PyObject *, count);
    Py_ssize_t *results = PyMem_New(Py_ssize_t, count);
    Py_ssize_t filled = 0;
    int max_fd = 0;
    if (cfds == NULL || objects == NULL || results == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (; filled < count; filled++) {
        long fd = PyLong_AsLong(PyList_GET_ITEM(fds, filled));
        if (fd == -1 && PyErr_Occurred()) {
            goto error;
        }
        if (fd > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "invalid file descriptor: %ld", fd);
            goto error;
        }
        if (fd < 0) {
            fd = -1;
        }
        PyObject *frame = PyList_GET_ITEM(frames, filled);
        if (!PyBytes_CheckExact(frame)) {
            PyErr_Format(PyExc_TypeError, "frames must be bytes, not %.100s",
                         Py_TYPE(frame)->tp_name);
            goto error;
        }
        cfds[filled] = (int)fd;
        if (fd > max_fd) {
            max_fd = (int)fd;
        }
        /* Owned for the call: with the GIL released, another thread could
         * take the bytes out of the list. */
        Py_INCREF(frame);
        objects[filled] = frame;
    }

    /* The descriptors that didn't take a whole frame, one bit each, made at
     * the first such one. */
    unsigned char *failed = NULL;
    Py_ssize_t nfailed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++) {
        int fd = cfds[i];
        Py_ssize_t size = PyBytes_GET_SIZE(objects[i]);
        if (fd < 0 || (failed != NULL && (failed[fd >> 3] & (1u << (fd & 7))))) {
            results[i] = 0;
            nfailed++;
            continue;
        }
        ssize_t sent;
        do {
            sent = send(fd, PyBytes_AS_STRING(objects[i]), (size_t)size,
                        MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (sent < 0 && errno == EINTR);
        if (sent < 0) {
            results[i] = (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -(Py_ssize_t)errno;
        }
        else {
            results[i] = (Py_ssize_t)sent;
        }
        if (results[i] != size) {
            nfailed++;
            if (failed == NULL) {
                failed = PyMem_RawCalloc((size_t)(max_fd >> 3) + 1, 1);
                if (failed == NULL) {
                    /* No memory to remember it: stop, and report the rest
                     * as not sent (the caller buffers them in order). */
                    for (Py_ssize_t j = i + 1; j < count; j++) {
                        results[j] = 0;
                        nfailed++;
                    }
                    break;
                }
            }
            failed[fd >> 3] |= (unsigned char)(1u << (fd & 7));
        }
    }
    Py_END_ALLOW_THREADS
    PyMem_RawFree(failed);

    for (Py_ssize_t i = 0; i < count && nfailed > 0; i++) {
        if (results[i] == PyBytes_GET_SIZE(objects[i])) {
            continue;
        }
        nfailed--;
        PyObject *item = Py_BuildValue("(nn)", i, results[i]);
        if (item == NULL || PyList_Append(failures, item) < 0) {
            Py_XDECREF(item);
            goto error;
        }
        Py_DECREF(item);
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_DECREF(objects[i]);
    }
    PyMem_Free(cfds);
    PyMem_Free(objects);
    PyMem_Free(results);
    return failures;

error:
    if (objects != NULL) {
        for (Py_ssize_t i = 0; i < filled; i++) {
            Py_DECREF(objects[i]);
        }
    }
    PyMem_Free(cfds);
    PyMem_Free(objects);
    PyMem_Free(results);
    Py_DECREF(failures);
    return NULL;
}

static PyMethodDef sendeach_methods[] = {
    {"send_each", (PyCFunction)(void (*)(void))send_each, METH_FASTCALL,
     "send_each(fds, frames) -> list of (index, sent or -errno) not sent whole"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef sendeach_module = {
    PyModuleDef_HEAD_INIT,
    "wsharbor.asyncio._sendeach",
    "One call that writes to many sockets (see _sendeach.c).",
    -1,
    sendeach_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__sendeach(void)
{
    return PyModule_Create(&sendeach_module);
}
