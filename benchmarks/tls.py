"""Where an idle wss:// connection's memory goes, and what a TLS handshake costs the server.

``python -m benchmarks.tls`` starts one echo server per variant and event loop (a
subprocess), opens ``--connections`` wss:// connections to it from this process
(uvloop, the load generator's raw client), and reads the server's memory before and
after, three ways:

- **RSS**: ``VmRSS`` of ``/proc/PID/status``, what the machine pays;
- **malloc**: bytes allocated through glibc's ``malloc`` (``mallinfo2()``): Python's
  objects *and* OpenSSL's (and every other C library's);
- **traced**: bytes Python allocated (``tracemalloc``, in a second run: it slows the
  server down and adds its own memory), with the source lines that allocated most.

malloc minus traced is, to within allocator rounding, what OpenSSL holds. Then each
connection exchanges one ``--message-size`` message each way and the figures are read
again ("after a message"): what stays allocated once a connection has carried a large
message. Last, ``--handshakes`` TLS + WebSocket handshakes (8 at a time) against a
fresh server: handshakes per second and the server's CPU time per handshake.

Variants: ``wsharbor`` (its TLS transport, the default), ``wsharbor-loop``
(``tls_transport="loop"``: asyncio's ``SSLProtocol``, or uvloop's), ``sslproto-shared``
(asyncio's ``SSLProtocol`` subclassed to read into one shared buffer instead of its
256 KiB per connection: the other way to make TLS small, measured here to compare;
asyncio only), ``websockets``, and ``plain`` (wsharbor over ws://, the baseline).

Nothing here is imported by the test suite and nothing asserts a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import ctypes.util
import gc
import json
import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
import tracemalloc
from typing import Any

__all__ = ["main"]

JSON = dict[str, Any]
VARIANTS = ("plain", "wsharbor", "wsharbor-loop", "sslproto-shared", "websockets")
LOOPS = ("asyncio", "uvloop")


# The server side (a subprocess): ``python -m benchmarks.tls --serve VARIANT ...``.


_MALLINFO2_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2_FIELDS.split(" ")]


def _malloc_bytes() -> int:
    """Bytes in use through glibc's malloc (small blocks + mmapped ones); 0 elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return 0
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _shared_buffer_sslprotocol() -> None:
    """Replace asyncio's SSLProtocol with a subclass that reads into one buffer
    shared by every connection of the process, instead of a 256 KiB bytearray
    each (safe: buffer_updated() copies the bytes into the incoming BIO at once)."""
    import asyncio.sslproto as sslproto

    shared = memoryview(bytearray(256 * 1024))

    class SharedBufferSSLProtocol(sslproto.SSLProtocol):
        max_size = 0  # the bytearray __init__ allocates

        def get_buffer(self, n: int) -> memoryview:
            self._ssl_buffer_view = shared
            return shared

    sslproto.SSLProtocol = SharedBufferSSLProtocol  # type: ignore[misc]


async def _serve(args: argparse.Namespace) -> None:
    variant = args.serve
    context = None
    if variant != "plain":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    async def echo(ws: Any) -> None:
        # Not `async for message in ws`: the loop variable would keep the last
        # message alive while the connection idles, and "after a message" would
        # measure the application instead of the connection.
        while True:
            try:
                await ws.send(await ws.recv())
            except Exception:  # ConnectionClosed, of either library
                return

    if variant == "websockets":
        from websockets.asyncio.server import serve as ws_serve

        # No keepalive: the load generator's client doesn't answer pings, and a
        # run under tracemalloc outlasts ping_interval + ping_timeout.
        server: Any = await ws_serve(
            echo, "127.0.0.1", 0, ssl=context, compression=None, max_size=None, ping_interval=None
        )
    else:
        import wsharbor

        if variant == "sslproto-shared":
            _shared_buffer_sslprotocol()
        options: JSON = {"ssl": context} if context is not None else {}
        if variant in ("wsharbor-loop", "sslproto-shared"):
            options["tls_transport"] = "loop"
        server = await wsharbor.serve(
            echo, "127.0.0.1", 0, compression=None, max_size=None, ping_interval=None, **options
        )
    loop = asyncio.get_running_loop()
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    baseline: tracemalloc.Snapshot | None = None
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command in ("", "exit"):
            break
        await asyncio.sleep(args.settle)
        gc.collect()
        snapshot: JSON = {"rss_kib": _rss_kib(), "malloc": _malloc_bytes()}
        if tracemalloc.is_tracing():
            snapshot["traced"] = tracemalloc.get_traced_memory()[0]
            current = tracemalloc.take_snapshot()
            if command == "baseline":
                baseline = current
            elif baseline is not None:
                stats = current.compare_to(baseline, "lineno")
                snapshot["lines"] = [
                    [stat.traceback[0].filename, stat.traceback[0].lineno, stat.size_diff]
                    for stat in stats[:12]
                ]
        print(json.dumps(snapshot), flush=True)
    server.close()


def _serve_main(args: argparse.Namespace) -> int:
    from benchmarks.servers._common import raise_nofile_limit

    raise_nofile_limit()
    if args.trace:
        tracemalloc.start()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(_serve(args))
    else:
        asyncio.run(_serve(args))
    return 0


# The client side: this process.


class _Server:
    def __init__(self, variant: str, loop: str, files: tuple[str, str], trace: bool) -> None:
        cmd = [sys.executable, "-m", "benchmarks.tls", "--serve", variant, "--loop", loop]
        cmd += ["--cert", files[0], "--key", files[1]]
        if trace:
            cmd.append("--trace")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.port = int(self._read()["port"])

    def _read(self) -> JSON:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server exited with status {self.proc.wait()}")
        result: JSON = json.loads(line)
        return result

    async def snapshot(self, command: str = "snapshot") -> JSON:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return await asyncio.get_running_loop().run_in_executor(None, self._read)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("exit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def _open(
    port: int, count: int, context: ssl.SSLContext | None, concurrency: int = 50
) -> list[Any]:
    from benchmarks.loadgen import Client, connect, upgrade_request

    request = upgrade_request("127.0.0.1", port)
    clients: list[Any] = []
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            _, client = await connect(lambda: Client(request), "127.0.0.1", port, 30, context)
            clients.append(client)

    await asyncio.gather(*(one() for _ in range(count)))
    return clients


async def _exchange(port: int, clients: list[Any], size: int) -> None:
    """One ``size``-byte message each way on every connection, a few at a time."""
    from benchmarks.loadgen import OP_BINARY, EchoClient, client_frame

    frame = client_frame(OP_BINARY, random.Random(0).randbytes(size))
    limit = asyncio.Semaphore(8)

    async def one(client: Any) -> None:
        async with limit:
            echo = EchoClient(b"", frame, 1, size)
            # Reuse the open connection: the echo client only needs its transport.
            client.on_messages = echo.on_messages
            echo.transport = client.transport
            echo.start()
            await echo.stop(timeout=30)

    await asyncio.gather(*(one(client) for client in clients))


async def _measure(
    variant: str, loop: str, files: tuple[str, str], args: argparse.Namespace, trace: bool
) -> JSON:
    from benchmarks.loadgen import client_ssl_context

    context = client_ssl_context(variant != "plain")
    server = _Server(variant, loop, files, trace)
    try:
        warm = await _open(server.port, 10, context)
        await _exchange(server.port, warm[:1], 64)
        before = await server.snapshot("baseline")
        clients = await _open(server.port, args.connections, context)
        await _exchange(server.port, clients, 64)
        idle = await server.snapshot()
        await _exchange(server.port, clients, args.message_size)
        after = await server.snapshot()
        for client in (*clients, *warm):
            client.transport.abort()
    finally:
        server.stop()
    n = args.connections
    result: JSON = {}
    for name, snap in (("idle", idle), ("after", after)):
        result[f"{name}_rss_kib"] = (snap["rss_kib"] - before["rss_kib"]) / n
        result[f"{name}_malloc_kib"] = (snap["malloc"] - before["malloc"]) / n / 1024
        if "traced" in snap:
            result[f"{name}_traced_kib"] = (snap["traced"] - before["traced"]) / n / 1024
            result[f"{name}_lines"] = [
                [os.path.relpath(f) if "wsharbor" in f else f.rsplit("/", 2)[-1], line, size / n]
                for f, line, size in snap.get("lines", [])
            ]
    return result


async def _handshakes(
    variant: str, loop: str, files: tuple[str, str], count: int, concurrency: int = 8
) -> JSON:
    from benchmarks.loadgen import CLOSE_FRAME, Client, client_ssl_context, cpu_seconds
    from benchmarks.loadgen import upgrade_request as request_for

    context = client_ssl_context(variant != "plain")
    server = _Server(variant, loop, files, False)
    running = asyncio.get_running_loop()
    try:
        request = request_for("127.0.0.1", server.port)
        queue = list(range(50))  # warm-up

        async def worker() -> None:
            while queue:
                queue.pop()
                transport, client = await running.create_connection(
                    lambda: Client(request), "127.0.0.1", server.port, ssl=context
                )
                await client.upgraded
                transport.write(CLOSE_FRAME)
                await client.close_received
                await client.lost

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        queue[:] = list(range(count))
        cpu0, t0 = cpu_seconds(server.proc.pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, seconds = cpu_seconds(server.proc.pid) - cpu0, time.perf_counter() - t0
    finally:
        server.stop()
    return {
        "handshakes_per_s": count / seconds,
        "server_cpu_us": cpu / count * 1e6,
        "server_cpu_share": cpu / seconds,
    }


def _certificate(directory: str) -> tuple[str, str]:
    import trustme

    cert = trustme.CA().issue_cert("127.0.0.1")
    paths = (os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem"))
    cert.cert_chain_pems[0].write_to_path(paths[0])
    cert.private_key_pem.write_to_path(paths[1])
    return paths


def _report(results: dict[str, JSON], args: argparse.Namespace) -> str:
    out = [
        f"{args.connections:,} connections; per connection, server side, KiB: "
        f"RSS / malloc / traced; after = after one {args.message_size:,}-byte message each way.",
        "",
        "| variant | loop | idle | after a message | OpenSSL & C (malloc - traced), idle "
        "| handshakes/s | server CPU per handshake |",
        "|---|---|---|---|---|---|---|",
    ]

    def triple(r: JSON, key: str) -> str:
        parts = [r.get(f"{key}_rss_kib"), r.get(f"{key}_malloc_kib"), r.get(f"{key}_traced_kib")]
        return " / ".join("-" if v is None else f"{v:.1f}" for v in parts)

    for name, r in results.items():
        variant, loop = name.split(" ")
        c_side = "-"
        if "idle_traced_kib" in r:
            c_side = f"{r['idle_malloc_kib'] - r['idle_traced_kib']:.1f}"
        hs = r.get("handshake", {})
        rate = f"{hs['handshakes_per_s']:,.0f}" if hs else "-"
        cpu = f"{hs['server_cpu_us']:,.0f} µs" if hs else "-"
        out.append(
            f"| {variant} | {loop} | {triple(r, 'idle')} | {triple(r, 'after')} | {c_side} "
            f"| {rate} | {cpu} |"
        )
    for name, r in results.items():
        if r.get("idle_lines"):
            out += ["", f"Top lines allocating for an idle connection, {name} (bytes each):"]
            out += [f"    {size:8.0f}  {f}:{line}" for f, line, size in r["idle_lines"][:10]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tls", description=__doc__)
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--settle", type=float, default=1.0, help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help=argparse.SUPPRESS)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated")
    parser.add_argument("--loops", default=",".join(LOOPS), help="comma-separated")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--message-size", type=int, default=1 << 20)
    parser.add_argument("--handshakes", type=int, default=2000, help="0: skip")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.serve:
        return _serve_main(args)
    from benchmarks.servers._common import raise_nofile_limit

    raise_nofile_limit()
    import uvloop

    results: dict[str, JSON] = {}
    with tempfile.TemporaryDirectory() as directory:
        files = _certificate(directory)
        for loop in args.loops.split(","):
            for variant in args.variants.split(","):
                if variant == "sslproto-shared" and loop == "uvloop":
                    continue  # uvloop has its own SSLProtocol
                name = f"{variant} {loop}"
                print(f"measuring {name}", file=sys.stderr, flush=True)
                result = uvloop.run(_measure(variant, loop, files, args, trace=False))
                traced = uvloop.run(_measure(variant, loop, files, args, trace=True))
                result.update({k: v for k, v in traced.items() if "traced" in k or "lines" in k})
                if args.handshakes:
                    result["handshake"] = uvloop.run(
                        _handshakes(variant, loop, files, args.handshakes)
                    )
                results[name] = result
    print(_report(results, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"argv": sys.argv, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
