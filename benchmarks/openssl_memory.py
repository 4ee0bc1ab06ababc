"""What OpenSSL itself holds for one idle TLS server connection, by source line.

``python -m benchmarks.openssl_memory`` compiles a small allocator hook (C, with ``cc``),
installs it with ``CRYPTO_set_mem_functions`` before the ``ssl`` module loads OpenSSL,
then completes ``--connections`` TLS handshakes in memory (``ssl.MemoryBIO`` pairs,
Python's default contexts, a trustme ECDSA certificate), exchanges one small record
each way, drops the client sides and reports the live OpenSSL allocations per server
connection by the OpenSSL source line that made them, with the malloc figure
(``mallinfo2``: Python's allocations too) beside them.

``--no-release-buffers`` clears ``SSL_MODE_RELEASE_BUFFERS`` (which CPython sets on
every context) first, to show what it saves. Linux with glibc, a C compiler and
OpenSSL 3 (``libcrypto.so.3``) only. Nothing asserts a figure.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import gc
import os
import subprocess
import sys
import tempfile

__all__ = ["main"]

HOOK_C = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
typedef struct { void *p; size_t n; const char *f; int l; } entry;
#define CAP (1 << 22)
static entry *table;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static size_t slot(void *p) { return ((size_t)p >> 4) * 2654435761u % CAP; }
static void put(void *p, size_t n, const char *f, int l) {
  size_t i = slot(p);
  while (table[i].p && table[i].p != (void *)1) i = (i + 1) % CAP;
  table[i] = (entry){p, n, f, l};
}
static void drop(void *p) {
  for (size_t i = slot(p); table[i].p; i = (i + 1) % CAP)
    if (table[i].p == p) { table[i].p = (void *)1; return; }
}
static void *hook_malloc(size_t n, const char *f, int l) {
  void *p = malloc(n);
  pthread_mutex_lock(&lock); if (p) put(p, n, f, l); pthread_mutex_unlock(&lock);
  return p;
}
static void *hook_realloc(void *old, size_t n, const char *f, int l) {
  pthread_mutex_lock(&lock);
  if (old) drop(old);
  void *p = realloc(old, n);
  if (p) put(p, n, f, l);
  pthread_mutex_unlock(&lock);
  return p;
}
static void hook_free(void *p, const char *f, int l) {
  if (!p) return;
  pthread_mutex_lock(&lock); drop(p); pthread_mutex_unlock(&lock);
  free(p);
}
extern int CRYPTO_set_mem_functions(void *(*)(size_t, const char *, int),
                                    void *(*)(void *, size_t, const char *, int),
                                    void (*)(void *, const char *, int));
int install(void) {
  table = calloc(CAP, sizeof(entry));
  return CRYPTO_set_mem_functions(hook_malloc, hook_realloc, hook_free);
}
int dump(const char *path) {
  FILE *out = fopen(path, "w");
  if (!out) return -1;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < CAP; i++)
    if (table[i].p && table[i].p != (void *)1)
      fprintf(out, "%zu %s %d\n", table[i].n, table[i].f ? table[i].f : "?", table[i].l);
  pthread_mutex_unlock(&lock);
  fclose(out);
  return 0;
}
"""


_MALLINFO2 = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2.split(" ")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.openssl_memory", description=__doc__
    )
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--no-release-buffers", action="store_true")
    parser.add_argument("--lines", type=int, default=15, help="source lines shown")
    args = parser.parse_args(argv)
    if "ssl" in sys.modules or "_hashlib" in sys.modules:
        sys.exit("run it as python -m benchmarks.openssl_memory: OpenSSL must not be loaded yet")
    with tempfile.TemporaryDirectory() as directory:
        source = os.path.join(directory, "hook.c")
        library = os.path.join(directory, "hook.so")
        with open(source, "w") as f:
            f.write(HOOK_C)
        try:
            subprocess.run(
                ["cc", "-O2", "-shared", "-fPIC", "-o", library, source, "-l:libcrypto.so.3"],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            sys.exit(f"cannot build the allocator hook: {exc}")
        hook = ctypes.CDLL(library)
        if hook.install() != 1:
            sys.exit("CRYPTO_set_mem_functions failed: OpenSSL allocated before the hook")
        return _measure(args, hook, os.path.join(directory, "live.txt"))


def _measure(args: argparse.Namespace, hook: ctypes.CDLL, dump_path: str) -> int:
    import ssl

    import trustme

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2

    def malloc_bytes() -> int:
        info = libc.mallinfo2()
        return int(info.uordblks + info.hblkhd)

    def live() -> collections.Counter[tuple[str, int]]:
        hook.dump(dump_path.encode())
        counter: collections.Counter[tuple[str, int]] = collections.Counter()
        with open(dump_path) as f:
            for line in f:
                size, path, lineno = line.split()
                counter[path.removeprefix("../"), int(lineno)] += int(size)
        return counter

    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    if args.no_release_buffers:
        libssl = ctypes.CDLL("libssl.so.3")
        libssl.SSL_CTX_ctrl.restype = ctypes.c_long
        libssl.SSL_CTX_ctrl.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_long,
            ctypes.c_void_p,
        ]
        # SSL_CTX *ctx is the first field after PyObject_HEAD of an SSLContext.
        ctx_pointer = ctypes.c_void_p.from_address(id(server) + 2 * ctypes.sizeof(ctypes.c_void_p))
        libssl.SSL_CTX_ctrl(ctx_pointer.value, 78, 0x10, None)  # SSL_CTRL_CLEAR_MODE, RELEASE

    def pump(source: ssl.MemoryBIO, sink: ssl.MemoryBIO) -> int:
        data = source.read()
        sink.write(data)
        return len(data)

    def connection() -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
        s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
        s = server.wrap_bio(s_in, s_out, server_side=True)
        c = client.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
        for _ in range(10):
            for side in (c, s):
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.do_handshake()
            if not pump(c_out, s_in) + pump(s_out, c_in):
                break
        c.write(b"GET / HTTP/1.1\r\n" + b"x" * 200)
        pump(c_out, s_in)
        s.read(1024)
        s.write(b"HTTP/1.1 101 Switching Protocols\r\n" + b"y" * 150)
        pump(s_out, c_in)
        c.read(1024)
        return s, s_in, s_out

    connection()
    gc.collect()
    before, malloc0 = live(), malloc_bytes()
    kept = [connection() for _ in range(args.connections)]
    gc.collect()
    after, malloc1 = live(), malloc_bytes()
    n = len(kept)
    diff = after - before
    print(
        f"{n:,} idle server connections (ssl.SSLObject + 2 MemoryBIOs), "
        f"SSL_MODE_RELEASE_BUFFERS {'off' if args.no_release_buffers else 'on'}: "
        f"OpenSSL {sum(diff.values()) / n / 1024:.1f} KiB per connection (all of malloc: "
        f"{(malloc1 - malloc0) / n / 1024:.1f} KiB; RSS isn't shown: the hook's table inflates it)"
    )
    for (path, lineno), size in diff.most_common(args.lines):
        print(f"  {size / n:8.0f} B  {path}:{lineno}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
