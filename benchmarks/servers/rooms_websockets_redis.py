"""What a user writes by hand today: websockets workers relaying a Redis channel.

``python -m benchmarks.servers.rooms_websockets_redis --port P --workers N
--redis redis://HOST:PORT/0`` starts N worker processes that each listen on P
(``SO_REUSEPORT``: the kernel spreads connections over them), subscribe to one
Redis channel with redis-py's asyncio client (hiredis when installed) and, for
every message, call ``websockets.broadcast()`` on the worker's subscribers:

- ``/sub``: a subscriber, kept until it closes;
- ``/pub``: every message received is ``PUBLISH``-ed to the channel (awaited
  one at a time).

It prints ``READY <port>`` once every worker listens and is subscribed, and
stops on SIGTERM. Compression and keepalive pings are off, as for every server
of the fan-out benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

from benchmarks.servers._common import announce, raise_nofile_limit, wait_for_signal

CHANNEL = "fanout"


async def worker(port: int, url: str) -> None:
    import redis.asyncio as redis
    import websockets
    from websockets.asyncio.server import serve

    client: Any = redis.Redis.from_url(url)
    subscribers: set[Any] = set()

    async def handler(websocket: Any) -> None:
        if websocket.request.path == "/pub":
            async for message in websocket:
                await client.publish(CHANNEL, message)
        else:
            subscribers.add(websocket)
            try:
                await websocket.wait_closed()
            finally:
                subscribers.discard(websocket)

    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)

    async def relay() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                websockets.broadcast(subscribers, message["data"], text=True)

    async with serve(
        handler,
        "127.0.0.1",
        port,
        reuse_port=True,
        compression=None,
        ping_interval=None,
        max_size=2**20,
    ):
        relaying = asyncio.ensure_future(relay())
        announce(port)
        await wait_for_signal()
        relaying.cancel()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_nofile_limit()
    if args.worker:
        if args.uvloop:
            import uvloop

            uvloop.run(worker(args.port, args.redis))
        else:
            asyncio.run(worker(args.port, args.redis))
        return 0
    command = [sys.executable, "-m", __spec__.name if __spec__ else __name__]
    command += ["--port", str(args.port), "--redis", args.redis, "--worker"]
    if args.uvloop:
        command.append("--uvloop")
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        for _ in range(args.workers)
    ]
    try:
        for process in workers:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line.startswith(b"READY "):
                sys.stderr.write(f"a worker did not start (exit {process.wait()})\n")
                return 1
        announce(args.port)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        for process in workers:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in workers:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
