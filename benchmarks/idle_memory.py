"""Where an idle server connection's memory goes, by the line that allocated it.

``python -m benchmarks.idle_memory`` starts ``wsharbor.serve`` with an echo handler
(``async for message in ws: await ws.send(message)``, ``compression=None``, every
other option at its default) in this process, opens ``--warmup`` connections, then
``--connections`` more from raw client sockets that send the opening handshake
and read the 101, and waits until they are idle. tracemalloc's difference between
a snapshot before and one after is reported per connection, each allocation
attributed to the innermost line of ``wsharbor`` (or of the handler) on its stack,
else to the innermost line (asyncio's own). The client sockets' objects are counted
apart and left out of the server's total.

Traced bytes, not RSS: ``python -m benchmarks --workloads memory`` measures RSS
with the server in its own process. Nothing asserts a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import socket
import sys
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import wsharbor

__all__ = ["main", "measure"]

SRC = str(Path(wsharbor.__file__).resolve().parent.parent) + "/"
HERE = str(Path(__file__).resolve())


async def echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


def _where(traceback: tracemalloc.Traceback) -> str:
    """The innermost frame of wsharbor or of the handler, else the innermost frame."""
    handler_lines = range(echo.__code__.co_firstlineno, echo.__code__.co_firstlineno + 3)
    for frame in reversed(traceback):
        if frame.filename.startswith(SRC):
            return f"{frame.filename[len(SRC) :]}:{frame.lineno}"
        if frame.filename == HERE and frame.lineno in handler_lines:
            return f"handler (benchmarks/idle_memory.py:{frame.lineno})"
    frame = traceback[-1]
    if frame.filename == HERE:
        return "client"
    return f"{Path(frame.filename).name}:{frame.lineno}"


async def measure(connections: int, warmup: int) -> tuple[float, float, list[tuple[str, float]]]:
    """(server bytes per connection, client bytes per connection, [(line, bytes)])."""
    server = await wsharbor.serve(echo, "127.0.0.1", 0, compression=None)
    port = server.sockets[0].getsockname()[1]
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    clients: list[socket.socket] = []

    async def open_one() -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        await loop.sock_sendall(sock, request)
        reply = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
        if not reply.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake failed: {reply[:80]!r}")
        clients.append(sock)

    try:
        for _ in range(warmup):
            await open_one()
        await asyncio.sleep(0.3)  # let the handlers start waiting (no figure depends on it)
        gc.collect()
        tracemalloc.start(30)
        before = tracemalloc.take_snapshot()
        for _ in range(connections):
            await open_one()
        await asyncio.sleep(0.5)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
    finally:
        for sock in clients:
            sock.close()
        server.close()
        await server.wait_closed()
    own = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(own).compare_to(before.filter_traces(own), "traceback")
    by_line: dict[str, int] = {}
    for stat in stats:
        key = _where(stat.traceback)
        by_line[key] = by_line.get(key, 0) + stat.size_diff
    client = sum(size for key, size in by_line.items() if key == "client" or "socket.py" in key)
    server_total = sum(by_line.values()) - client
    rows = [
        (key, size / connections)
        for key, size in sorted(by_line.items(), key=lambda item: -item[1])
        if key != "client" and "socket.py:8" not in key
    ]
    return server_total / connections, client / connections, rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.idle_memory", description=__doc__)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--min-bytes", type=float, default=8, help="hide smaller lines")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * (args.connections + args.warmup) + 64
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))
        if hard < needed:
            print(f"error: RLIMIT_NOFILE hard limit {hard} is below {needed}", file=sys.stderr)
            return 2
    server, client, rows = asyncio.run(measure(args.connections, args.warmup))
    print(
        f"idle echo server connection, compression=None: {server:.0f} B traced per "
        f"connection ({args.connections} connections; client sockets {client:.0f} B, left out)"
    )
    for key, size in rows:
        if abs(size) >= args.min_bytes:
            print(f"{size:7.0f} B  {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
