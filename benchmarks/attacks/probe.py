"""A well-behaved client measuring the server while it is attacked, in its own process.

It keeps one WebSocket connection (websockets' sync client, no compression) and sends
a 32-byte message every ``--interval`` seconds, timing each echo. It prints ``READY``
after the first echo and, on SIGTERM or SIGINT, one JSON object with the round-trip
percentiles of the echoes since READY and the failures::

    python -m benchmarks.attacks.probe --port 8765 [--tls-ca ca.pem]

A failure is an echo not back within ``--timeout`` seconds, or the connection lost;
the probe then reconnects (a failed reconnection is a failure too).
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading
import time
from types import FrameType
from typing import Any

__all__ = ["main", "percentile"]

PAYLOAD = b"probe-" + b"x" * 26


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


class Args(argparse.Namespace):
    port: int
    tls_ca: str | None
    interval: float
    timeout: float


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attacks.probe")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tls-ca", metavar="PATH", help="wss:// with this CA certificate")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between echoes")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds an echo may take")
    return parser.parse_args(argv, namespace=Args())


def main(argv: list[str] | None = None) -> int:
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import ClientConnection, connect

    args = parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    context: ssl.SSLContext | None = None
    scheme = "ws"
    if args.tls_ca:
        context = ssl.create_default_context(cafile=args.tls_ca)
        scheme = "wss"
    uri = f"{scheme}://127.0.0.1:{args.port}/"

    def open_connection() -> ClientConnection:
        return connect(uri, ssl=context, compression=None, open_timeout=args.timeout)

    rtts: list[float] = []
    failures: dict[str, int] = {}
    ws: ClientConnection | None = None
    ready = False
    next_at = time.monotonic()
    while not stop.is_set():
        try:
            if ws is None:
                ws = open_connection()
            t0 = time.perf_counter()
            ws.send(PAYLOAD)
            echo = ws.recv(timeout=args.timeout)
            rtt = time.perf_counter() - t0
            if echo != PAYLOAD:
                raise ValueError("wrong echo")
            if ready:
                rtts.append(rtt)
            else:
                ready = True
                print("READY", flush=True)
        except (OSError, TimeoutError, ValueError, WebSocketException) as exc:
            if not ready:
                print(f"probe failed to start: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            name = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            failures[name] = failures.get(name, 0) + 1
            if ws is not None:
                ws.close_socket()
                ws = None
        next_at += args.interval
        stop.wait(max(0.0, next_at - time.monotonic()))
        next_at = max(next_at, time.monotonic() - args.interval)
    if ws is not None:
        ws.close_socket()
    result: dict[str, Any] = {"echoes": len(rtts), "failures": failures}
    if rtts:
        result["p50_ms"] = percentile(rtts, 0.5) * 1e3
        result["p99_ms"] = percentile(rtts, 0.99) * 1e3
        result["max_ms"] = max(rtts) * 1e3
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
