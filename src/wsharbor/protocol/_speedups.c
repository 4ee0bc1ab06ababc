/* C accelerator for wsharbor.protocol: masking, frame headers, payload buffers, UTF-8
 * validation, the usual handshake request and its checks.
 *
 * apply_mask(data, mask) -> bytes
 *     XORs a bytes-like object with a 4-byte mask repeated (RFC 6455 section
 *     5.3) into a new bytes object.
 *
 * apply_mask_inplace(data, mask, offset=0) -> None
 *     The same, in place, on a writable buffer whose first byte is byte
 *     ``offset`` of the payload (the mask repeats from the payload's start).
 *
 * PayloadBuffer(size)
 *     The payload of one frame, assembled where it will stay: a bytes object
 *     of ``size`` bytes, not initialised (no page is touched before data
 *     arrives, so a header announcing a large frame costs no resident memory
 *     by itself), exposed as a writable buffer while it is filled (socket
 *     reads go straight into it) and handed out by ``finish()`` without a
 *     copy. ``write(offset, data, mask=None)`` copies (and unmasks) received
 *     bytes into it in one pass.
 *
 * Utf8Validator()
 *     A streaming UTF-8 validator (Unicode 15, table 3-7: no overlong forms,
 *     no surrogates, nothing above U+10FFFF) that keeps its state across
 *     ``feed(data, final=False)`` calls and raises UnicodeDecodeError as soon
 *     as a byte makes the text invalid, or at ``final`` when a sequence is
 *     cut short. It produces no output: the text is decoded once, at the end.
 *
 * parse_frame(buf, pos, mask, max_size) -> (b0, data, header_size, length) | None
 *     The frame that starts at ``pos`` in ``buf``, as FrameParser.parse_raw
 *     reads it (see _parse_frame_python in frames.py, which it must match
 *     byte for byte and error for error): None while the header is
 *     incomplete, ``data`` None while the payload is, else the payload
 *     unmasked into a new bytes object. Raises the ProtocolError and
 *     PayloadTooBig classes given to set_exceptions() (frames.py does, at
 *     import) for a header RFC 6455 forbids or a frame over ``max_size``.
 *
 * parse_request(data, end, max_request_line, max_header_line, max_headers,
 *               max_headers_size) -> (path, fields, keys) | None
 *     The usual opening handshake in one call: a GET request whose header
 *     block, ``data[:end + 4]``, is within every limit and written the plain
 *     way (one SP between the request line's parts, a target starting with
 *     "/", HTTP/1.1, a token and a colon starting each header line, no
 *     control character, no bare CR or LF, no Content-Length or
 *     Transfer-Encoding). Returns the request-target,
 *     the ``(name, value)`` fields (values without the OWS around them, decoded
 *     as ISO-8859-1) and their lowercase names, interned. Anything else is
 *     None, and http11.RequestParser parses it the general way (llhttp, which
 *     also reports the exact error): this path accepts a subset of what that
 *     one accepts and must return the same request for it (tests compare
 *     both).
 *
 * accept_upgrade(keys, fields) -> str | None
 *     The server's checks of a GET upgrade request's fields, RFC 6455 section
 *     4.2.1 items 2 to 6, in one pass over them (the ``_keys`` and ``_list``
 *     of its Headers), and then its Sec-WebSocket-Accept value (SHA-1 and
 *     base64 here too): one Host, not empty; one Upgrade listing "websocket";
 *     one Connection listing "upgrade" (any ASCII case, OWS around items);
 *     one Sec-WebSocket-Key of 22 base64 characters and "=="; one
 *     Sec-WebSocket-Version, "13". Anything else is None, and
 *     ServerHandshake.accept checks these items the general way, which raises
 *     the exact error: this path accepts a subset of what that one accepts
 *     and must answer the same for it (tests compare both). Origin,
 *     extensions and the subprotocol are left to ServerHandshake.accept.
 *
 * Masking works 8 bytes at a time (16 with SSE2), which is memory-bound on
 * any modern CPU; the GIL is released for large inputs only (releasing it
 * costs more than masking a small frame).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Inputs at least this large are processed without holding the GIL. */
#define RELEASE_GIL_FROM 16384

/* out[i] = in[i] ^ m[i % 4] for i in [0, len); in and out may be the same. */
static void
xor_mask(const unsigned char *in, unsigned char *out, Py_ssize_t len, const unsigned char m[4])
{
    Py_ssize_t i = 0;
    uint32_t mask32;
    uint64_t mask64;
    memcpy(&mask32, m, 4);
    mask64 = ((uint64_t)mask32 << 32) | mask32;
#if defined(__SSE2__)
    {
        __m128i mask128 = _mm_set1_epi32((int)mask32);
        /* 64 bytes an iteration: the loop's speed then doesn't depend on
         * where the compiler happens to place it. One 16-byte step an
         * iteration ran at half speed after an unrelated change moved the
         * loop across a 64-byte boundary of the code (23 against 45 us for
         * 1 MiB). */
        for (; i + 64 <= len; i += 64) {
            __m128i c0 = _mm_loadu_si128((const __m128i *)(in + i));
            __m128i c1 = _mm_loadu_si128((const __m128i *)(in + i + 16));
            __m128i c2 = _mm_loadu_si128((const __m128i *)(in + i + 32));
            __m128i c3 = _mm_loadu_si128((const __m128i *)(in + i + 48));
            _mm_storeu_si128((__m128i *)(out + i), _mm_xor_si128(c0, mask128));
            _mm_storeu_si128((__m128i *)(out + i + 16), _mm_xor_si128(c1, mask128));
            _mm_storeu_si128((__m128i *)(out + i + 32), _mm_xor_si128(c2, mask128));
            _mm_storeu_si128((__m128i *)(out + i + 48), _mm_xor_si128(c3, mask128));
        }
        for (; i + 16 <= len; i += 16) {
            __m128i chunk = _mm_loadu_si128((const __m128i *)(in + i));
            _mm_storeu_si128((__m128i *)(out + i), _mm_xor_si128(chunk, mask128));
        }
    }
#endif
    for (; i + 8 <= len; i += 8) {
        uint64_t chunk;
        memcpy(&chunk, in + i, 8);
        chunk ^= mask64;
        memcpy(out + i, &chunk, 8);
    }
    /* i is a multiple of 4 here, so the mask phase is still aligned. */
    for (; i < len; i++) {
        out[i] = in[i] ^ m[i & 3];
    }
}

/* xor_mask with the mask rotated to start at payload offset ``offset``. */
static void
xor_mask_at(const unsigned char *in, unsigned char *out, Py_ssize_t len,
            const unsigned char *mask, Py_ssize_t offset)
{
    unsigned char m[4];
    int k;
    for (k = 0; k < 4; k++) {
        m[k] = mask[(offset + k) & 3];
    }
    if (len >= RELEASE_GIL_FROM) {
        Py_BEGIN_ALLOW_THREADS
        xor_mask(in, out, len, m);
        Py_END_ALLOW_THREADS
    }
    else {
        xor_mask(in, out, len, m);
    }
}

static PyObject *
apply_mask(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "mask", NULL};
    Py_buffer data, mask;
    PyObject *result = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*:apply_mask", kwlist, &data, &mask)) {
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
        goto exit;
    }
    result = PyBytes_FromStringAndSize(NULL, data.len);
    if (result == NULL) {
        goto exit;
    }
    xor_mask_at((const unsigned char *)data.buf, (unsigned char *)PyBytes_AS_STRING(result),
                data.len, (const unsigned char *)mask.buf, 0);

exit:
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

static PyObject *
apply_mask_inplace(PyObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "mask", "offset", NULL};
    Py_buffer data, mask;
    Py_ssize_t offset = 0;
    PyObject *result = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "w*y*|n:apply_mask_inplace", kwlist, &data,
                                     &mask, &offset)) {
        return NULL;
    }
    if (mask.len != 4) {
        PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
        goto exit;
    }
    if (offset < 0) {
        PyErr_SetString(PyExc_ValueError, "offset must be >= 0");
        goto exit;
    }
    xor_mask_at((const unsigned char *)data.buf, (unsigned char *)data.buf, data.len,
                (const unsigned char *)mask.buf, offset);
    result = Py_NewRef(Py_None);

exit:
    PyBuffer_Release(&data);
    PyBuffer_Release(&mask);
    return result;
}

/* PayloadBuffer */

typedef struct {
    PyObject_HEAD
    /* The payload: a bytes object nobody else sees until finish(). Kept until
     * this object dies, since a memoryview made before finish() may still
     * point into it. */
    PyObject *bytes;
    /* The payload's size; the bytes object holds ``spare`` more bytes after
     * it (see PayloadBuffer_new) until finish(). */
    Py_ssize_t size;
    int finished;
} PayloadBufferObject;

static PyObject *
PayloadBuffer_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"size", "spare", NULL};
    Py_ssize_t size;
    Py_ssize_t spare = 0;
    PayloadBufferObject *self;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "n|n:PayloadBuffer", kwlist, &size, &spare)) {
        return NULL;
    }
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "size must be positive");
        return NULL;
    }
    if (spare < 0 || spare > 64) {
        PyErr_SetString(PyExc_ValueError, "spare must be between 0 and 64");
        return NULL;
    }
    if (size > PY_SSIZE_T_MAX - spare) {
        PyErr_SetString(PyExc_OverflowError, "size too large");
        return NULL;
    }
    self = (PayloadBufferObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    /* Not initialised: malloc'd pages are only made resident when written.
     * ``spare`` bytes past the payload: a read that completes it may bring
     * the start of what follows into the same buffer (the next frame's
     * header); finish() shortens the bytes object to the payload, in place. */
    self->bytes = PyBytes_FromStringAndSize(NULL, size + spare);
    if (self->bytes == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->size = size;
    self->finished = 0;
    return (PyObject *)self;
}

static void
PayloadBuffer_dealloc(PayloadBufferObject *self)
{
    Py_XDECREF(self->bytes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
PayloadBuffer_getbuffer(PayloadBufferObject *self, Py_buffer *view, int flags)
{
    if (self->finished) {
        PyErr_SetString(PyExc_BufferError, "the payload was finished");
        view->obj = NULL;
        return -1;
    }
    return PyBuffer_FillInfo(view, (PyObject *)self, PyBytes_AS_STRING(self->bytes),
                             PyBytes_GET_SIZE(self->bytes), 0, flags);
}

static PyBufferProcs PayloadBuffer_as_buffer = {
    (getbufferproc)PayloadBuffer_getbuffer,
    NULL,
};

static PyObject *
PayloadBuffer_write(PayloadBufferObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"offset", "data", "mask", NULL};
    Py_ssize_t offset;
    Py_buffer data;
    PyObject *mask_obj = Py_None;
    Py_buffer mask;
    int have_mask = 0;
    PyObject *result = NULL;
    unsigned char *dest;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ny*|O:write", kwlist, &offset, &data,
                                     &mask_obj)) {
        return NULL;
    }
    if (mask_obj != Py_None) {
        if (PyObject_GetBuffer(mask_obj, &mask, PyBUF_SIMPLE) < 0) {
            goto exit;
        }
        have_mask = 1;
        if (mask.len != 4) {
            PyErr_SetString(PyExc_ValueError, "mask must contain 4 bytes");
            goto exit;
        }
    }
    if (self->finished) {
        PyErr_SetString(PyExc_ValueError, "the payload was finished");
        goto exit;
    }
    if (offset < 0 || data.len > self->size - offset) {
        PyErr_SetString(PyExc_ValueError, "write past the end of the payload");
        goto exit;
    }
    dest = (unsigned char *)PyBytes_AS_STRING(self->bytes) + offset;
    if (have_mask) {
        xor_mask_at((const unsigned char *)data.buf, dest, data.len,
                    (const unsigned char *)mask.buf, offset);
    }
    else {
        memcpy(dest, data.buf, data.len);
    }
    result = Py_NewRef(Py_None);

exit:
    PyBuffer_Release(&data);
    if (have_mask) {
        PyBuffer_Release(&mask);
    }
    return result;
}

static PyObject *
PayloadBuffer_finish(PayloadBufferObject *self, PyObject *Py_UNUSED(ignored))
{
    /* The caller has filled every byte (the frame parser counts them). */
    if (self->finished) {
        PyErr_SetString(PyExc_ValueError, "the payload was finished");
        return NULL;
    }
    self->finished = 1;
    if (PyBytes_GET_SIZE(self->bytes) != self->size) {
        /* Drop the spare bytes without moving the payload: memoryviews made
         * before finish() may still point into it. Nobody else has seen this
         * bytes object, its hash isn't cached yet, and the allocation keeps
         * its size (freed whole with the object). */
        Py_SET_SIZE(self->bytes, self->size);
        PyBytes_AS_STRING(self->bytes)[self->size] = '\0';
    }
    return Py_NewRef(self->bytes);
}

static PyObject *
PayloadBuffer_len(PayloadBufferObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->size);
}

static PyMethodDef PayloadBuffer_methods[] = {
    {"write", (PyCFunction)(void (*)(void))PayloadBuffer_write, METH_VARARGS | METH_KEYWORDS,
     "write(offset, data, mask=None)\n\nCopy data to the payload at offset, unmasking it "
     "with mask (the mask phase of that offset) when given."},
    {"finish", (PyCFunction)PayloadBuffer_finish, METH_NOARGS,
     "finish() -> bytes\n\nThe payload, without a copy; no new buffer is exported after."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef PayloadBuffer_getset[] = {
    {"size", (getter)PayloadBuffer_len, NULL, "size of the payload in bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject PayloadBuffer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wsharbor.protocol._speedups.PayloadBuffer",
    .tp_basicsize = sizeof(PayloadBufferObject),
    .tp_dealloc = (destructor)PayloadBuffer_dealloc,
    .tp_as_buffer = &PayloadBuffer_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "PayloadBuffer(size, spare=0)\n\nA frame's payload filled in place, then "
              "finished as bytes without a copy. Its buffer has ``spare`` bytes more, "
              "dropped by finish(), for whatever a read brings after the payload.",
    .tp_methods = PayloadBuffer_methods,
    .tp_getset = PayloadBuffer_getset,
    .tp_new = PayloadBuffer_new,
};

/* Utf8Validator
 *
 * State: ``need``, the continuation bytes still expected in the current
 * sequence (0 between characters); ``lo`` and ``hi``, the range of the next
 * continuation byte (narrower than 80..BF right after E0, ED, F0 and F4);
 * ``seen``, the bytes of the current sequence already accepted (to report
 * where it started).
 */

typedef struct {
    PyObject_HEAD
    int need;
    int seen;
    unsigned char lo;
    unsigned char hi;
} Utf8ValidatorObject;

static PyObject *
Utf8Validator_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Utf8ValidatorObject *self;
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Utf8Validator() takes no arguments");
        return NULL;
    }
    self = (Utf8ValidatorObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->need = 0;
        self->seen = 0;
        self->lo = 0x80;
        self->hi = 0xBF;
    }
    return (PyObject *)self;
}

static void
utf8_error(Py_buffer *data, Py_ssize_t start, Py_ssize_t end, const char *reason)
{
    PyObject *exc;
    /* A sequence that began in an earlier piece is reported from this piece's start. */
    if (start < 0) {
        start = 0;
    }
    if (end <= start) {
        end = start + 1;
    }
    if (end > data->len) {
        end = data->len;
    }
    exc = PyUnicodeDecodeError_Create("utf-8", (const char *)data->buf, data->len, start, end,
                                      reason);
    if (exc != NULL) {
        PyErr_SetObject(PyExc_UnicodeDecodeError, exc);
        Py_DECREF(exc);
    }
}

static PyObject *
Utf8Validator_feed(Utf8ValidatorObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"data", "final", NULL};
    Py_buffer data;
    int final = 0;
    const unsigned char *s;
    Py_ssize_t len, i = 0;
    int need, seen;
    unsigned char lo, hi;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|p:feed", kwlist, &data, &final)) {
        return NULL;
    }
    s = (const unsigned char *)data.buf;
    len = data.len;
    need = self->need;
    seen = self->seen;
    lo = self->lo;
    hi = self->hi;

    while (i < len) {
        unsigned char c;
        if (need == 0) {
            /* ASCII runs, 8 bytes at a time. */
            while (i + 8 <= len) {
                uint64_t chunk;
                memcpy(&chunk, s + i, 8);
                if (chunk & UINT64_C(0x8080808080808080)) {
                    break;
                }
                i += 8;
            }
            while (i < len && s[i] < 0x80) {
                i++;
            }
            if (i == len) {
                break;
            }
            c = s[i];
            if (c >= 0xC2 && c <= 0xDF) {
                need = 1;
                lo = 0x80;
                hi = 0xBF;
            }
            else if (c >= 0xE0 && c <= 0xEF) {
                need = 2;
                lo = c == 0xE0 ? 0xA0 : 0x80;
                hi = c == 0xED ? 0x9F : 0xBF;
            }
            else if (c >= 0xF0 && c <= 0xF4) {
                need = 3;
                lo = c == 0xF0 ? 0x90 : 0x80;
                hi = c == 0xF4 ? 0x8F : 0xBF;
            }
            else {
                utf8_error(&data, i, i + 1, "invalid start byte");
                goto error;
            }
            seen = 1;
            i++;
            continue;
        }
        c = s[i];
        if (c < lo || c > hi) {
            utf8_error(&data, i - seen, i, "invalid continuation byte");
            goto error;
        }
        lo = 0x80;
        hi = 0xBF;
        need--;
        seen++;
        i++;
    }
    if (need == 0) {
        seen = 0;
    }
    else if (final) {
        utf8_error(&data, len - seen, len, "unexpected end of data");
        goto error;
    }
    self->need = need;
    self->seen = seen;
    self->lo = lo;
    self->hi = hi;
    PyBuffer_Release(&data);
    Py_RETURN_NONE;

error:
    PyBuffer_Release(&data);
    return NULL;
}

static PyMethodDef Utf8Validator_methods[] = {
    {"feed", (PyCFunction)(void (*)(void))Utf8Validator_feed, METH_VARARGS | METH_KEYWORDS,
     "feed(data, final=False)\n\nValidate the next bytes; raise UnicodeDecodeError when the "
     "text is invalid, or at final when it ends inside a sequence."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Utf8Validator_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wsharbor.protocol._speedups.Utf8Validator",
    .tp_basicsize = sizeof(Utf8ValidatorObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Utf8Validator()\n\nStreaming UTF-8 validation, without output.",
    .tp_methods = Utf8Validator_methods,
    .tp_new = Utf8Validator_new,
};

/* The exception classes of parse_frame (set_exceptions); strong references. */
static PyObject *ProtocolError = NULL;
static PyObject *PayloadTooBig = NULL;

static PyObject *
set_exceptions(PyObject *self, PyObject *args)
{
    PyObject *protocol_error, *payload_too_big;
    if (!PyArg_ParseTuple(args, "OO:set_exceptions", &protocol_error, &payload_too_big)) {
        return NULL;
    }
    if (!PyExceptionClass_Check(protocol_error) || !PyExceptionClass_Check(payload_too_big)) {
        PyErr_SetString(PyExc_TypeError, "set_exceptions() takes two exception classes");
        return NULL;
    }
    Py_INCREF(protocol_error);
    Py_XSETREF(ProtocolError, protocol_error);
    Py_INCREF(payload_too_big);
    Py_XSETREF(PayloadTooBig, payload_too_big);
    Py_RETURN_NONE;
}

/* Reserved opcodes (RFC 6455 section 5.2): 0x3-0x7 and 0xB-0xF. */
#define RESERVED_OPCODE(op) (((op) >= 0x3 && (op) <= 0x7) || (op) >= 0xB)

static PyObject *
parse_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer view;
    const unsigned char *buf;
    Py_ssize_t pos, available, header_size;
    unsigned long long length;
    unsigned char b0, b1, opcode;
    int mask, masked;
    PyObject *max_size, *data = NULL, *result = NULL;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse_frame(buf, pos, mask, max_size)");
        return NULL;
    }
    if (ProtocolError == NULL || PayloadTooBig == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "parse_frame() before set_exceptions()");
        return NULL;
    }
    pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    mask = PyObject_IsTrue(args[2]);
    if (mask < 0) {
        return NULL;
    }
    max_size = args[3];
    if (max_size != Py_None && !PyLong_Check(max_size)) {
        PyErr_SetString(PyExc_TypeError, "max_size must be an int or None");
        return NULL;
    }
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    buf = (const unsigned char *)view.buf;
    if (pos < 0 || pos > view.len) {
        PyErr_SetString(PyExc_ValueError, "pos out of the buffer");
        goto exit;
    }
    available = view.len - pos;
    if (available < 2) {
        result = Py_NewRef(Py_None);
        goto exit;
    }
    b0 = buf[pos];
    b1 = buf[pos + 1];
    opcode = b0 & 0x0F;
    if (RESERVED_OPCODE(opcode)) {
        PyErr_Format(ProtocolError, "reserved opcode 0x%x (RFC 6455 section 5.2)", opcode);
        goto exit;
    }
    masked = (b1 & 0x80) != 0;
    if (masked != mask) {
        PyErr_SetString(ProtocolError, mask ? "client frame not masked (RFC 6455 section 5.1)"
                                            : "server frame masked (RFC 6455 section 5.1)");
        goto exit;
    }
    length = b1 & 0x7F;
    header_size = 2;
    if (length == 126) {
        if (available < 4) {
            result = Py_NewRef(Py_None);
            goto exit;
        }
        length = ((unsigned long long)buf[pos + 2] << 8) | buf[pos + 3];
        header_size = 4;
    }
    else if (length == 127) {
        int k;
        if (available < 10) {
            result = Py_NewRef(Py_None);
            goto exit;
        }
        length = 0;
        for (k = 2; k < 10; k++) {
            length = (length << 8) | buf[pos + k];
        }
        if (length >> 63) {
            PyErr_SetString(ProtocolError, "64-bit payload length with most significant bit "
                                           "set (RFC 6455 section 5.2)");
            goto exit;
        }
        header_size = 10;
    }
    if (opcode >= 0x8) {
        if (length > 125) {
            PyErr_SetString(ProtocolError, "control frame too long (RFC 6455 section 5.5)");
            goto exit;
        }
        if (!(b0 & 0x80)) {
            PyErr_SetString(ProtocolError, "fragmented control frame (RFC 6455 section 5.5)");
            goto exit;
        }
    }
    else if (max_size != Py_None) {
        int overflow;
        long long limit = PyLong_AsLongLongAndOverflow(max_size, &overflow);
        if (limit == -1 && PyErr_Occurred()) {
            goto exit;
        }
        /* A limit beyond 2**63 - 1 admits every length a header can carry. */
        if (overflow < 0 || (overflow == 0 && (limit < 0 || length > (unsigned long long)limit))) {
            PyErr_Format(PayloadTooBig, "frame of %llu bytes exceeds limit of %S bytes", length,
                         max_size);
            goto exit;
        }
    }
    if (masked) {
        header_size += 4;
    }
    if (available < header_size) {
        result = Py_NewRef(Py_None);
        goto exit;
    }
    if (length > (unsigned long long)(available - header_size)) {
        data = Py_NewRef(Py_None);  /* the payload is incomplete */
    }
    else {
        const unsigned char *start = buf + pos + header_size;
        if (masked) {
            data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)length);
            if (data == NULL) {
                goto exit;
            }
            xor_mask_at(start, (unsigned char *)PyBytes_AS_STRING(data), (Py_ssize_t)length,
                        start - 4, 0);
        }
        else {
            data = PyBytes_FromStringAndSize((const char *)start, (Py_ssize_t)length);
            if (data == NULL) {
                goto exit;
            }
        }
    }
    result = PyTuple_New(4);
    if (result == NULL) {
        Py_DECREF(data);
        goto exit;
    }
    PyTuple_SET_ITEM(result, 0, PyLong_FromLong(b0));
    PyTuple_SET_ITEM(result, 1, data);
    PyTuple_SET_ITEM(result, 2, PyLong_FromSsize_t(header_size));
    PyTuple_SET_ITEM(result, 3, PyLong_FromUnsignedLongLong(length));
    if (PyTuple_GET_ITEM(result, 0) == NULL || PyTuple_GET_ITEM(result, 2) == NULL ||
        PyTuple_GET_ITEM(result, 3) == NULL) {
        Py_CLEAR(result);
    }

exit:
    PyBuffer_Release(&view);
    return result;
}

/* Bytes of a header name (RFC 9110 section 5.6.2, tchar) and of a header
 * value as the general path accepts them (HTAB, SP, VCHAR, obs-text). */
static unsigned char TCHAR[256];
static unsigned char FIELD_VCHAR[256];

static void
init_http_tables(void)
{
    const char *specials = "!#$%&'*+-.^_`|~";
    int c;
    for (c = '0'; c <= '9'; c++) {
        TCHAR[c] = 1;
    }
    for (c = 'a'; c <= 'z'; c++) {
        TCHAR[c] = 1;
        TCHAR[c - 'a' + 'A'] = 1;
    }
    for (; *specials; specials++) {
        TCHAR[(unsigned char)*specials] = 1;
    }
    FIELD_VCHAR['\t'] = 1;
    for (c = 0x20; c <= 0x7E; c++) {
        FIELD_VCHAR[c] = 1;
    }
    for (c = 0x80; c <= 0xFF; c++) {
        FIELD_VCHAR[c] = 1;
    }
}

/* The lowercase name of a header, interned; NULL with an error set. */
static PyObject *
field_key(const unsigned char *name, Py_ssize_t len)
{
    PyObject *key = PyUnicode_New(len, 127);
    Py_UCS1 *out;
    Py_ssize_t i;
    if (key == NULL) {
        return NULL;
    }
    out = PyUnicode_1BYTE_DATA(key);
    for (i = 0; i < len; i++) {
        unsigned char c = name[i];
        out[i] = (c >= 'A' && c <= 'Z') ? (Py_UCS1)(c + 32) : (Py_UCS1)c;
    }
    PyUnicode_InternInPlace(&key);
    return key;
}

#define IS_OWS(c) ((c) == ' ' || (c) == '\t')

static PyObject *
parse_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    const unsigned char *p;
    Py_ssize_t len, end, limits[4], i, target, first, pos;
    Py_ssize_t count = 0, size = 0, longest = 0;
    PyObject *path = NULL, *fields = NULL, *keys = NULL, *result = NULL;
    int k;

    if (nargs != 6 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "parse_request(data: bytes, end, max_request_line, max_header_line, "
                        "max_headers, max_headers_size)");
        return NULL;
    }
    p = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    len = PyBytes_GET_SIZE(args[0]);
    end = PyLong_AsSsize_t(args[1]);
    if (end == -1 && PyErr_Occurred()) {
        return NULL;
    }
    for (k = 0; k < 4; k++) {
        limits[k] = PyLong_AsSsize_t(args[2 + k]);
        if (limits[k] == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (end < 0 || end > len - 4 || memcmp(p + end, "\r\n\r\n", 4) != 0) {
        PyErr_SetString(PyExc_ValueError, "end must be where data has CRLF CRLF");
        return NULL;
    }
    /* request-line = "GET" SP request-target SP "HTTP/1.1", the target in
     * origin-form (llhttp takes any VCHAR after its first "/"). */
    if (end < 5 || memcmp(p, "GET /", 5) != 0) {
        Py_RETURN_NONE;
    }
    i = target = 4;
    while (i < end && p[i] >= 0x21 && p[i] <= 0x7E) {
        i++;
    }
    if (i == target || end - i < 9 || memcmp(p + i, " HTTP/1.1", 9) != 0) {
        Py_RETURN_NONE;
    }
    first = i + 9;
    if (first > limits[0] || (first < end && (p[first] != '\r' || p[first + 1] != '\n'))) {
        Py_RETURN_NONE;
    }
    path = PyUnicode_DecodeASCII((const char *)p + target, i - target, NULL);
    fields = PyList_New(0);
    keys = PyList_New(0);
    if (path == NULL || fields == NULL || keys == NULL) {
        goto error;
    }
    /* field-line = field-name ":" OWS field-value OWS; each ends with the CRLF
     * found at its end, the last one with the first half of data[end:end + 4]. */
    pos = first + 2;
    while (first < end) {
        Py_ssize_t name = pos, colon, value, value_end;
        PyObject *key, *field;
        while (pos < end && TCHAR[p[pos]]) {
            pos++;
        }
        if (pos == name || pos >= end || p[pos] != ':') {
            goto general;
        }
        colon = pos++;
        while (pos < end && FIELD_VCHAR[p[pos]]) {
            pos++;
        }
        if (pos < end && (p[pos] != '\r' || p[pos + 1] != '\n')) {
            goto general;  /* a bare CR or LF, or a control character */
        }
        count++;
        size += pos - name + 2;
        if (pos - name > longest) {
            longest = pos - name;
        }
        if (count > limits[2] || size > limits[3] || longest > limits[1]) {
            goto general;
        }
        value = colon + 1;
        value_end = pos;
        while (value < value_end && IS_OWS(p[value])) {
            value++;
        }
        while (value_end > value && IS_OWS(p[value_end - 1])) {
            value_end--;
        }
        key = field_key(p + name, colon - name);
        if (key == NULL) {
            goto error;
        }
        if (PyUnicode_GET_LENGTH(key) == 14 || PyUnicode_GET_LENGTH(key) == 17) {
            /* A body announced: the general path checks it. */
            if (PyUnicode_CompareWithASCIIString(key, "content-length") == 0 ||
                PyUnicode_CompareWithASCIIString(key, "transfer-encoding") == 0) {
                Py_DECREF(key);
                goto general;
            }
        }
        k = PyList_Append(keys, key);
        Py_DECREF(key);
        if (k < 0) {
            goto error;
        }
        field = Py_BuildValue(
            "(NN)", PyUnicode_DecodeASCII((const char *)p + name, colon - name, NULL),
            PyUnicode_DecodeLatin1((const char *)p + value, value_end - value, NULL));
        if (field == NULL) {
            goto error;
        }
        k = PyList_Append(fields, field);
        Py_DECREF(field);
        if (k < 0) {
            goto error;
        }
        if (pos == end) {
            break;
        }
        pos += 2;
    }
    result = PyTuple_Pack(3, path, fields, keys);
    goto error;  /* release the references the tuple took */

general:
    result = Py_NewRef(Py_None);
error:
    Py_XDECREF(path);
    Py_XDECREF(fields);
    Py_XDECREF(keys);
    return result;
}

/* accept_upgrade: the server's checks of RFC 6455 section 4.2.1, items 2 to 6, on
 * the usual request, and the Sec-WebSocket-Accept value (section 4.2.2, item 5.4). */

/* SHA-1 (FIPS 180-4 section 6.1) of one 64-byte block into h. */
static void
sha1_block(uint32_t h[5], const unsigned char *block)
{
    uint32_t w[80], a, b, c, d, e, f, k, t;
    int i;
    for (i = 0; i < 16; i++) {
        w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
               (uint32_t)block[4 * i + 2] << 8 | (uint32_t)block[4 * i + 3];
    }
    for (i = 16; i < 80; i++) {
        t = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
        w[i] = t << 1 | t >> 31;
    }
    a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (i = 0; i < 80; i++) {
        if (i < 20) {
            f = (b & c) | (~b & d), k = 0x5A827999u;
        }
        else if (i < 40) {
            f = b ^ c ^ d, k = 0x6ED9EBA1u;
        }
        else if (i < 60) {
            f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDCu;
        }
        else {
            f = b ^ c ^ d, k = 0xCA62C1D6u;
        }
        t = (a << 5 | a >> 27) + f + e + k + w[i];
        e = d, d = c, c = b << 30 | b >> 2, b = a, a = t;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
}

#define KEY_SIZE 24 /* base64 of 16 bytes */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_GUID_SIZE 36
#define ACCEPT_SIZE 28 /* base64 of a 20-byte digest */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* base64(SHA-1(key + GUID)) of a KEY_SIZE-byte key into out. */
static void
accept_value(const unsigned char *key, char out[ACCEPT_SIZE])
{
    /* key + GUID is 60 bytes: two blocks with the padding and the bit length. */
    unsigned char msg[128] = {0}, digest[21] = {0};
    uint32_t h[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu, 0x10325476u, 0xC3D2E1F0u};
    int i, j;
    memcpy(msg, key, KEY_SIZE);
    memcpy(msg + KEY_SIZE, WS_GUID, WS_GUID_SIZE);
    msg[KEY_SIZE + WS_GUID_SIZE] = 0x80;
    msg[126] = (unsigned char)(((KEY_SIZE + WS_GUID_SIZE) * 8) >> 8);
    msg[127] = (unsigned char)(((KEY_SIZE + WS_GUID_SIZE) * 8) & 0xFF);
    sha1_block(h, msg);
    sha1_block(h, msg + 64);
    for (i = 0; i < 5; i++) {
        for (j = 0; j < 4; j++) {
            digest[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
        }
    }
    /* 20 bytes: six groups of three, then two bytes and one "=" (digest[20] is 0). */
    for (i = 0, j = 0; i < 21; i += 3, j += 4) {
        uint32_t v = (uint32_t)digest[i] << 16 | (uint32_t)digest[i + 1] << 8 | digest[i + 2];
        out[j] = B64[v >> 18];
        out[j + 1] = B64[(v >> 12) & 63];
        out[j + 2] = B64[(v >> 6) & 63];
        out[j + 3] = B64[v & 63];
    }
    out[ACCEPT_SIZE - 1] = '=';
}

/* Whether an ASCII str equals the lowercase ASCII name. */
static int
key_is(PyObject *key, const char *name, Py_ssize_t len)
{
    return PyUnicode_GET_LENGTH(key) == len && PyUnicode_IS_ASCII(key) &&
           memcmp(PyUnicode_1BYTE_DATA(key), name, (size_t)len) == 0;
}

/* Whether the comma-separated items of value, OWS around each ignored, hold the
 * lowercase token in any ASCII case: headers.has_token for one field. A value that
 * isn't ASCII is "no" (the Python path decides). */
static int
has_token(PyObject *value, const char *token, Py_ssize_t len)
{
    const unsigned char *s;
    Py_ssize_t n, i = 0, start, stop, m;
    if (!PyUnicode_IS_ASCII(value)) {
        return 0;
    }
    s = PyUnicode_1BYTE_DATA(value);
    n = PyUnicode_GET_LENGTH(value);
    while (i <= n) {
        start = i;
        while (i < n && s[i] != ',') {
            i++;
        }
        stop = i++;
        while (start < stop && IS_OWS(s[start])) {
            start++;
        }
        while (stop > start && IS_OWS(s[stop - 1])) {
            stop--;
        }
        if (stop - start == len) {
            for (m = 0; m < len; m++) {
                unsigned char c = s[start + m];
                if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)token[m]) {
                    break;
                }
            }
            if (m == len) {
                return 1;
            }
        }
    }
    return 0;
}

/* Whether value is base64 of exactly 16 bytes, as binascii.a2b_base64(strict_mode=True)
 * reads it: 22 characters of the alphabet, then "==". */
static int
is_key(PyObject *value)
{
    const unsigned char *s;
    int i;
    if (PyUnicode_GET_LENGTH(value) != KEY_SIZE || !PyUnicode_IS_ASCII(value)) {
        return 0;
    }
    s = PyUnicode_1BYTE_DATA(value);
    for (i = 0; i < KEY_SIZE - 2; i++) {
        unsigned char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/')) {
            return 0;
        }
    }
    return s[KEY_SIZE - 2] == '=' && s[KEY_SIZE - 1] == '=';
}

enum { F_HOST, F_UPGRADE, F_CONNECTION, F_KEY, F_VERSION, F_CHECKED };

/* The lowercase names of the checked fields, by their index above. */
static const struct {
    const char *name;
    Py_ssize_t len;
} CHECKED_FIELDS[F_CHECKED] = {
    {"host", 4},
    {"upgrade", 7},
    {"connection", 10},
    {"sec-websocket-key", 17},
    {"sec-websocket-version", 21},
};

static PyObject *
accept_upgrade(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *keys, *fields, *values[F_CHECKED] = {NULL}, *result;
    Py_ssize_t n, i;
    int counts[F_CHECKED] = {0};

    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "accept_upgrade(keys: list[str], fields: list[tuple[str, str]])");
        return NULL;
    }
    keys = args[0];
    fields = args[1];
    n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(fields) != n) {
        PyErr_SetString(PyExc_ValueError, "keys and fields differ in length");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i), *field = PyList_GET_ITEM(fields, i);
        int which;
        if (!PyUnicode_Check(key) || !PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 2 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(field, 1))) {
            PyErr_SetString(PyExc_TypeError, "keys must be str, fields (str, str) tuples");
            return NULL;
        }
        for (which = 0; which < F_CHECKED; which++) {
            if (key_is(key, CHECKED_FIELDS[which].name, CHECKED_FIELDS[which].len)) {
                counts[which]++;
                values[which] = PyTuple_GET_ITEM(field, 1);
                break;
            }
        }
    }
    for (i = 0; i < F_CHECKED; i++) {
        if (counts[i] != 1) {
            Py_RETURN_NONE; /* missing or repeated: the Python path says which */
        }
    }
    if (PyUnicode_GET_LENGTH(values[F_HOST]) == 0 ||
        !has_token(values[F_UPGRADE], "websocket", 9) ||
        !has_token(values[F_CONNECTION], "upgrade", 7) || !is_key(values[F_KEY]) ||
        !key_is(values[F_VERSION], "13", 2)) {
        Py_RETURN_NONE;
    }
    result = PyUnicode_New(ACCEPT_SIZE, 127);
    if (result != NULL) {
        accept_value(PyUnicode_1BYTE_DATA(values[F_KEY]), (char *)PyUnicode_1BYTE_DATA(result));
    }
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"set_exceptions", (PyCFunction)set_exceptions, METH_VARARGS,
     "set_exceptions(protocol_error, payload_too_big)\n\nThe classes parse_frame raises."},
    {"parse_frame", (PyCFunction)(void (*)(void))parse_frame, METH_FASTCALL,
     "parse_frame(buf, pos, mask, max_size) -> (b0, data, header_size, length) | None\n\n"
     "The frame at pos in buf (see the module's documentation)."},
    {"parse_request", (PyCFunction)(void (*)(void))parse_request, METH_FASTCALL,
     "parse_request(data, end, max_request_line, max_header_line, max_headers, "
     "max_headers_size) -> (path, fields, keys) | None\n\n"
     "The usual opening handshake request (see the module's documentation)."},
    {"accept_upgrade", (PyCFunction)(void (*)(void))accept_upgrade, METH_FASTCALL,
     "accept_upgrade(keys, fields) -> str | None\n\n"
     "Sec-WebSocket-Accept for the usual upgrade request (see the module's documentation)."},
    {"apply_mask", (PyCFunction)(void (*)(void))apply_mask, METH_VARARGS | METH_KEYWORDS,
     "apply_mask(data, mask) -> bytes\n\nXOR data with the 4-byte mask repeated."},
    {"apply_mask_inplace", (PyCFunction)(void (*)(void))apply_mask_inplace,
     METH_VARARGS | METH_KEYWORDS,
     "apply_mask_inplace(data, mask, offset=0)\n\nXOR the writable buffer data in place with "
     "the 4-byte mask repeated from payload offset offset."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "wsharbor.protocol._speedups",
    "C accelerator for WebSocket masking, frame headers, payload buffers, UTF-8 validation and "
    "the usual handshake request and its checks.",
    -1,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module;
    if (PyType_Ready(&PayloadBuffer_Type) < 0 || PyType_Ready(&Utf8Validator_Type) < 0) {
        return NULL;
    }
    init_http_tables();
    module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "PayloadBuffer", (PyObject *)&PayloadBuffer_Type) < 0 ||
        PyModule_AddObjectRef(module, "Utf8Validator", (PyObject *)&Utf8Validator_Type) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
