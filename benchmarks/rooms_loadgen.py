"""The fan-out benchmark's subscribers: one process of many idle-but-receiving clients.

Started by :mod:`benchmarks.rooms`, several at a time, each from its own
127.0.0.x source address (so that 10,000 connections never run short of
ephemeral ports), under uvloop::

    python -m benchmarks.rooms_loadgen --port P --connections 2500 --source 127.0.0.2 \\
        --slot 0 --counters FILE [--path /sub] [--sample-every 20] [--prefix TEXT]

It opens its connections (the raw ``asyncio`` client of :mod:`benchmarks.loadgen`:
upgrade, then count frames without copying them), prints ``{"ready": N}`` on
stdout, and from then on keeps the number of publications received so far in
its 8-byte slot of the shared counters file (the orchestrator's publisher reads
them to pace itself). One connection in
``--sample-every`` also reads each publication's timestamp (the publisher's
``time.monotonic_ns()``, 20 digits at the start of the payload, after
``--prefix`` for Socket.IO's event framing) and records the publish-to-receive
latency while recording is on. The slot is written as frames arrive (an
8-byte store per read), so that an idle process never wakes up.

Commands on stdin, one per line: ``record`` (start recording latencies),
``stop`` (stop, and print ``{"samples": base64 int64 nanoseconds, "closed": N}``),
``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import mmap
import os
import struct
import sys
import time
from array import array
from typing import Any

from benchmarks.loadgen import (
    OP_CLOSE,
    OP_TEXT,
    BenchError,
    Client,
    client_frame,
    raise_nofile_limit,
    upgrade_request,
)

__all__ = ["main"]

#: Most latency samples one process keeps (a uniform subsample past it).
MAX_SAMPLES = 200_000
#: Seconds to open every connection before giving up.
CONNECT_TIMEOUT = 60.0


class Stats:
    """What this process's clients received; ``received`` is mirrored in the shared slot."""

    def __init__(self) -> None:
        self.received = 0
        self.counters: mmap.mmap | None = None
        self.slot = 0
        self.recording = False
        self.samples = array("q")
        self.seen = 0  # samples offered, for the subsample


class FanoutClient(Client):
    """Counts data frames; sends ``after_upgrade`` once the server accepted."""

    def __init__(self, request: bytes, stats: Stats, after_upgrade: bytes) -> None:
        super().__init__(request)
        self.stats = stats
        self.after_upgrade = after_upgrade
        self.upgraded.add_done_callback(self._on_upgrade)

    def _on_upgrade(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and future.exception() is None and self.after_upgrade:
            assert self.transport is not None
            self.transport.write(self.after_upgrade)

    def on_messages(self, count: int) -> None:
        stats = self.stats
        stats.received += count
        if stats.counters is not None:
            struct.pack_into("q", stats.counters, stats.slot, stats.received)


class SampledClient(FanoutClient):
    """Also reads each publication's timestamp (a copy per read: few of these)."""

    def __init__(self, request: bytes, stats: Stats, after_upgrade: bytes, prefix: bytes) -> None:
        super().__init__(request, stats, after_upgrade)
        self.prefix = prefix
        self.pending = b""

    def _parse(self, n: int) -> None:
        now = time.monotonic_ns()
        data = self.pending + bytes(self._buf[:n])
        pos = 0
        messages = 0
        stats = self.stats
        prefix = self.prefix
        while len(data) - pos >= 2:
            b0 = data[pos]
            length = data[pos + 1] & 0x7F
            head = 2
            if length == 126:
                head = 4
                if len(data) - pos < head:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                head = 10
                if len(data) - pos < head:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            end = pos + head + length
            if end > len(data):
                break
            opcode = b0 & 0x0F
            if opcode == OP_CLOSE and not self.close_received.done():
                self.close_received.set_result(None)
            elif opcode < 8 and b0 & 0x80:
                messages += 1
                start = pos + head
                if stats.recording and data.startswith(prefix, start):
                    stamp = data[start + len(prefix) : start + len(prefix) + 20]
                    if stamp.isdigit():
                        record(stats, now - int(stamp))
            pos = end
        self.pending = data[pos:]
        if messages:
            self.on_messages(messages)


def record(stats: Stats, latency: int) -> None:
    stats.seen += 1
    if len(stats.samples) < MAX_SAMPLES:
        stats.samples.append(latency)
    else:  # reservoir sampling: every sample seen has the same chance to be kept
        index = int.from_bytes(os.urandom(4), "big") % stats.seen
        if index < MAX_SAMPLES:
            stats.samples[index] = latency


class Args(argparse.Namespace):
    host: str
    port: int
    path: str
    connections: int
    source: str
    slot: int
    counters: str
    sample_every: int
    prefix: str
    after_upgrade: str
    concurrency: int


async def amain(args: Args) -> int:
    loop = asyncio.get_running_loop()
    stats = Stats()
    request = upgrade_request(args.host, args.port, args.path)
    after = client_frame(OP_TEXT, args.after_upgrade.encode()) if args.after_upgrade else b""
    prefix = args.prefix.encode()
    clients: list[FanoutClient] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(args.concurrency)

    async def open_one(index: int) -> None:
        def factory() -> FanoutClient:
            if index % args.sample_every == 0:
                return SampledClient(request, stats, after, prefix)
            return FanoutClient(request, stats, after)

        async with gate:
            if len(errors) >= 10:
                return
            try:
                _, client = await asyncio.wait_for(
                    loop.create_connection(
                        factory, args.host, args.port, local_addr=(args.source, 0)
                    ),
                    CONNECT_TIMEOUT,
                )
                await asyncio.wait_for(client.upgraded, CONNECT_TIMEOUT)
            except (OSError, TimeoutError, BenchError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            clients.append(client)

    await asyncio.gather(*(open_one(i) for i in range(args.connections)))
    if errors:
        say({"error": f"opened {len(clients)} of {args.connections}; first error: {errors[0]}"})
        return 1

    with open(args.counters, "r+b") as file:
        stats.counters = mmap.mmap(file.fileno(), 0)
    stats.slot = 8 * args.slot
    struct.pack_into("q", stats.counters, stats.slot, stats.received)
    say({"ready": len(clients)})

    commands: asyncio.Queue[str] = asyncio.Queue()
    buffer = b""

    def readable() -> None:
        nonlocal buffer
        chunk = os.read(sys.stdin.fileno(), 4096)
        if not chunk:
            commands.put_nowait("quit")
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            commands.put_nowait(line.decode().strip())

    os.set_blocking(sys.stdin.fileno(), False)
    loop.add_reader(sys.stdin.fileno(), readable)
    while True:
        command = await commands.get()
        if command == "record":
            stats.recording = True
        elif command == "stop":
            stats.recording = False
            closed = sum(1 for client in clients if client.lost.done())
            samples = base64.b64encode(stats.samples.tobytes()).decode()
            say({"samples": samples, "closed": closed, "received": stats.received})
            stats.samples = array("q")
            stats.seen = 0
        elif command == "quit":
            break
    loop.remove_reader(sys.stdin.fileno())
    for client in clients:
        if client.transport is not None:
            client.transport.abort()
    return 0


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rooms_loadgen")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/sub")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--source", default="127.0.0.1", help="source address (127.0.0.x)")
    parser.add_argument("--slot", type=int, required=True, help="this process's counter slot")
    parser.add_argument("--counters", required=True, help="the shared counters file")
    parser.add_argument("--sample-every", type=int, default=20)
    parser.add_argument("--prefix", default="", help="payload text before the timestamp")
    parser.add_argument("--after-upgrade", default="", help="a text message to send first")
    parser.add_argument("--concurrency", type=int, default=64, help="handshakes at once")
    args = parser.parse_args(argv, namespace=Args())
    for address in (args.host, args.source):
        if not address.startswith("127."):
            parser.error("the load generator only uses loopback addresses")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile_limit()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(amain(args))
    return uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
