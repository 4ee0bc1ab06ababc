"""``python -m benchmarks.limits``: what a peer can make one connection hold, per setting.

The ``max_queue`` and ``write_limit`` defaults are websockets' 16 and 32 KiB; they were
32 and 64 KiB. This measures what each pair changes in memory, on real sockets on
127.0.0.1 with the system's default kernel buffers, in one process.

``flood``
    a client sends messages of one size as fast as TCP lets it to a handler that never
    reads: reading pauses at ``max_queue`` messages or ``read_limit`` bytes, the kernel
    buffers fill, the client stalls. Reported: the most bytes the server connection held
    (``buffered_bytes``: queued messages and the frame being parsed) and the messages
    queued then.
``slow reader``
    a handler sends messages of one size to a client that never reads: the kernel buffers
    fill, the transport's write buffer grows to ``write_limit``, ``send()`` waits. Reported:
    the most bytes the server connection's write buffer held (right after each write).

Kernel socket buffers are outside these figures (the same for every setting). The
throughput side is ``python -m benchmarks --servers wsharbor,wsharbor-limits-32-64k``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
from typing import Any

import wsharbor
from wsharbor import defaults
from wsharbor.protocol.frames import Frame, Opcode, serialize_frame
from wsharbor.protocol.handshake import ClientHandshake
from wsharbor.protocol.http11 import ResponseParser

__all__ = ["SETTINGS", "flood", "main", "slow_reader"]

#: name -> serve() options.
SETTINGS: dict[str, dict[str, int]] = {
    "max_queue=32, write_limit=64 KiB (earlier)": {"max_queue": 32, "write_limit": 64 * 1024},
    "max_queue=16, write_limit=32 KiB (today, websockets')": {
        "max_queue": 16,
        "write_limit": 32 * 1024,
    },
}

#: A write (or send()) that doesn't complete within this is taken as stalled: it only
#: decides when to stop, the figures are maxima over the whole run.
STALL = 1.0

HOST = "127.0.0.1"


async def open_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client: TCP, then the opening handshake by hand."""
    reader, writer = await asyncio.open_connection(HOST, port)
    handshake = ClientHandshake(host=f"{HOST}:{port}")
    writer.write(handshake.request.serialize())
    parser = ResponseParser()
    response = None
    while response is None:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("EOF during the handshake")
        response = parser.feed(data)
    handshake.process_response(response)
    return reader, writer


#: Stop after this much even if nothing stalled (then the figure says so).
CAP = 256 * 2**20


async def flood(options: dict[str, int], size: int) -> dict[str, Any]:
    """Flood a handler that never reads with ``size``-byte messages."""
    connected: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def handler(ws: Any) -> None:
        connected.set_result(ws)
        await release.wait()

    async with wsharbor.serve(handler, HOST, 0, compression=None, **options) as server:
        port = server.sockets[0].getsockname()[1]
        _, writer = await open_client(port)
        ws = await asyncio.wait_for(connected, 10)
        frame = serialize_frame(Frame(Opcode.BINARY, b"x" * size), mask=True)
        batch = frame * max(1, 2**16 // len(frame))  # small messages: 64 KiB per write
        held = sent = 0
        stalled = False
        while sent < CAP:
            writer.write(batch)
            sent += len(batch)
            try:
                await asyncio.wait_for(writer.drain(), STALL)
            except TimeoutError:
                stalled = True
                break
            finally:
                held = max(held, ws.buffered_bytes)
        held = max(held, ws.buffered_bytes)
        writer.transport.abort()
        release.set()
    return {"held": held, "sent": sent, "stalled": stalled}


class WriteBufferPeak(wsharbor.ConnectionObserver):
    """Records the largest write buffer right after each message was written."""

    __slots__ = ("peak",)

    def __init__(self) -> None:
        self.peak = 0

    def message_sent(self, connection: Any) -> None:
        transport = connection.transport
        if transport is not None:
            self.peak = max(self.peak, transport.get_write_buffer_size())


async def slow_reader(options: dict[str, int], size: int) -> dict[str, Any]:
    """Send ``size``-byte messages from a handler to a client that never reads."""
    result: dict[str, Any] = {}
    done = asyncio.Event()
    observer = WriteBufferPeak()

    async def handler(ws: Any) -> None:
        payload = b"x" * size
        sent = 0
        stalled = False
        while sent < CAP:
            try:
                async with asyncio.timeout(STALL):
                    await ws.send(payload)
            except TimeoutError:
                stalled = True
                break
            sent += size
        result.update(held=observer.peak, sent=sent, stalled=stalled)
        ws.transport.abort()
        done.set()

    async with wsharbor.serve(
        handler, HOST, 0, compression=None, observer=observer, **options
    ) as server:
        port = server.sockets[0].getsockname()[1]
        _, writer = await open_client(port)
        # The client reads no more: its receive buffer fills, then the server's send buffer.
        writer.transport.pause_reading()
        await asyncio.wait_for(done.wait(), 300)
        writer.transport.abort()
    return result


def kernel_buffers() -> dict[str, int]:
    with socket.socket() as sock:
        return {
            "SO_SNDBUF": sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
            "SO_RCVBUF": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        }


async def measure(sizes_in: list[int], sizes_out: list[int]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, options in SETTINGS.items():
        per = results.setdefault(name, {"flood": {}, "slow reader": {}})
        for size in sizes_in:
            per["flood"][size] = await flood(options, size)
        for size in sizes_out:
            per["slow reader"][size] = await slow_reader(options, size)
    return results


def human(n: int) -> str:
    if n >= 2**20 and n % 2**20 == 0:
        return f"{n // 2**20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n:,} B"


def report(results: dict[str, Any]) -> str:
    lines = [
        f"Kernel buffers (defaults, before autotuning): {kernel_buffers()}; "
        f"max_size {human(defaults.MAX_SIZE)}, read_limit {human(defaults.READ_LIMIT)}; "
        f"load average {os.getloadavg()[0]:.1f}.",
        "",
        "| what the peer does | message | " + " | ".join(results) + " |",
        "| --- | --- |" + " ---: |" * len(results),
    ]
    first = next(iter(results.values()))
    for scenario in ("flood", "slow reader"):
        for size in first[scenario]:
            cells = []
            for per in results.values():
                r = per[scenario][size]
                cell = f"{r['held']:,} B"
                if not r["stalled"]:
                    cell += " (never stalled)"
                cells.append(cell)
            lines.append(f"| {scenario} | {human(size)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.limits",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    sizes_in = [64, 1024, 16 * 1024, 64 * 1024, defaults.MAX_SIZE]
    sizes_out = [64, 1024, 16 * 1024, 64 * 1024, defaults.MAX_SIZE]
    results = asyncio.run(measure(sizes_in, sizes_out))
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
