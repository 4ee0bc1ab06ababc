"""``python -m benchmarks.sync_echo``: echo round trips through the threaded APIs.

wsharbor's ``wsharbor.sync`` client and server against websockets'
``websockets.sync`` client and server, one connection, messages sent one at a
time (each ``send`` waits for the echo), ``compression=None``, keepalive off.
Prints the median of ``--runs`` runs for each size. An order of magnitude, not
the benchmark suite: client and server share the process.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any


def _echo(websocket: Any) -> None:
    for message in websocket:
        websocket.send(message)


def round_trips(
    serve: Callable[..., Any], connect: Callable[..., Any], count: int, size: int
) -> float:
    """Round trips per second of ``count`` messages of ``size`` bytes."""
    server = serve(_echo, "127.0.0.1", 0, ping_interval=None, compression=None)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        port = server.socket.getsockname()[1]
        with connect(f"ws://127.0.0.1:{port}/", ping_interval=None, compression=None) as ws:
            message = "x" * size
            start = time.perf_counter()
            for _ in range(count):
                ws.send(message)
                ws.recv()
            return count / (time.perf_counter() - start)
    finally:
        server.shutdown()
        thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import websockets.sync.client
    import websockets.sync.server

    import wsharbor.sync.client
    import wsharbor.sync.server

    def websockets_connect(uri: str, **kwargs: Any) -> Any:
        return websockets.sync.client.connect(uri, legacy=True, **kwargs)

    peers = {
        "websockets": (websockets.sync.server.serve, websockets_connect),
        "wsharbor": (wsharbor.sync.server.serve, wsharbor.sync.client.connect),
    }
    for size, count in ((64, 20_000), (65_536, 3_000)):
        for name, (serve, connect) in peers.items():
            rates = [round_trips(serve, connect, count, size) for _ in range(args.runs)]
            print(f"{name:<11} {size:>6} B  {statistics.median(rates):>8,.0f} round trips/s")


if __name__ == "__main__":
    main()
