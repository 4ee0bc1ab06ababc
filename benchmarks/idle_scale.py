"""``python -m benchmarks.idle_scale``: memory per idle connection at 10,000 and 100,000.

The ``memory`` workload of ``python -m benchmarks`` opens 10,000 connections
from one source address. This opens as many as asked (by default 10,000, then
100,000) from several client processes, each from its own 127.0.0.x source
address (one address has about 28,000 ephemeral ports), to one fresh server
process per figure, and reports the server's resident set size per connection:
``(VmRSS after - VmRSS before) / connections``, read once every connection
has had its ``101`` and the RSS has stopped growing. The same echo servers as
the other workloads (``benchmarks/servers/*.py``: compression off, the
library's defaults). Clients are raw sockets: an upgrade request, the
response read, then nothing.

The process raises its file descriptor limit to what the connections need
(as root, up to ``fs.nr_open``); the servers and clients inherit it.
Connects to 127.0.0.0/8 only; every process stops when this one does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator

from benchmarks.registry import SERVERS

__all__ = ["main"]

#: A client process: opens COUNT upgraded connections from SOURCE, says so, waits.
CLIENT = r"""
import socket, sys
host, port, source, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
request = (
    f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
).encode()
held = []
for _ in range(count):
    sock = socket.create_connection((host, port), timeout=30, source_address=(source, 0))
    sock.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        if not chunk:
            sys.exit(f"closed during the handshake after {len(held)} connections")
        answer += chunk
    if not answer.startswith(b"HTTP/1.1 101"):
        sys.exit(f"not upgraded: {answer[:40]!r}")
    held.append(sock)
print("open", len(held), flush=True)
sys.stdin.read()
"""


def rss(pid: int) -> int:
    """The resident set size of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def settled_rss(pid: int, settle: float) -> int:
    """RSS once it stopped changing for ``settle`` seconds (at most 30 s)."""
    deadline = time.monotonic() + 30
    last = rss(pid)
    while time.monotonic() < deadline:
        time.sleep(settle)
        now = rss(pid)
        if now == last:
            return now
        last = now
    return last


@contextlib.contextmanager
def server(name: str) -> Iterator[tuple[int, int]]:
    """Start the benchmark server ``name``; (pid, port)."""
    spec = SERVERS[name]
    proc = subprocess.Popen(
        spec.command(False),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        # Handlers' errors when the clients go at the end (websockets logs a
        # traceback per connection) say nothing about memory.
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"{name} did not start: {line!r}")
        yield proc.pid, int(line.split()[1])
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(name: str, connections: int, sources: int, settle: float) -> dict[str, float]:
    per_source = -(-connections // sources)
    with server(name) as (pid, port):
        # One warm-up connection (first-connection allocations aren't per connection).
        warm = subprocess.Popen(
            [sys.executable, "-c", CLIENT, "127.0.0.1", str(port), "127.0.0.1", "1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        clients = [warm]
        try:
            assert warm.stdout is not None
            warm.stdout.readline()
            before = settled_rss(pid, settle)
            started = time.monotonic()
            left = connections
            for index in range(sources):
                count = min(per_source, left)
                left -= count
                if count <= 0:
                    break
                clients.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-c",
                            CLIENT,
                            "127.0.0.1",
                            str(port),
                            f"127.0.0.{index + 2}",
                            str(count),
                        ],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                )
            opened = 0
            for client in clients[1:]:
                assert client.stdout is not None
                line = client.stdout.readline()
                if not line.startswith("open "):
                    raise RuntimeError(f"a client failed (exit {client.wait()})")
                opened += int(line.split()[1])
            seconds = time.monotonic() - started
            after = settled_rss(pid, settle)
        finally:
            for client in clients:
                if client.stdin is not None:
                    client.stdin.close()
                client.terminate()
                client.wait()
    return {
        "connections": opened,
        "open_seconds": seconds,
        "rss_before": before,
        "rss_after": after,
        "kib_per_conn": (after - before) / opened / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.idle_scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--servers", default="wsharbor,websockets")
    parser.add_argument("--connections", default="10000,100000", help="comma-separated")
    parser.add_argument("--sources", type=int, default=5, help="client source addresses")
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    counts = [int(count) for count in args.connections.split(",")]
    # The server holds one fd per connection (the clients are spread over
    # --sources processes); a margin for the rest.
    needed = max(counts) + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(needed, hard)))
        except (ValueError, OSError) as exc:
            # Raising the hard limit needs CAP_SYS_RESOURCE; go as far as it allows.
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            allowed = [count for count in counts if count + 1024 <= hard]
            for count in counts:
                if count not in allowed:
                    print(
                        f"skipped {count:,} connections: the server needs {count + 1024:,} "
                        f"file descriptors and the hard limit is {hard:,} ({exc})",
                        flush=True,
                    )
            counts = allowed
            if not counts:
                return 1
    results: dict[str, dict[str, dict[str, float]]] = {}
    for count in counts:
        for name in args.servers.split(","):
            figure = measure(name, count, args.sources, args.settle)
            results.setdefault(name, {})[str(count)] = figure
            print(
                f"{name}: {figure['connections']:,.0f} idle connections, "
                f"{figure['kib_per_conn']:.2f} KiB RSS each "
                f"(opened in {figure['open_seconds']:.1f} s)",
                flush=True,
            )
    print()
    print("| server | " + " | ".join(f"{count:,} connections" for count in counts) + " |")
    print("|---|" + "---:|" * len(counts))
    for name, figures in results.items():
        cells = [f"{figures[str(count)]['kib_per_conn']:.2f} KiB" for count in counts]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"command": " ".join(sys.argv), "results": results}, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
