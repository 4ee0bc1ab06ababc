"""python-socketio's AsyncRedisManager: what a Socket.IO user writes for several workers.

``python -m benchmarks.servers.rooms_socketio_redis --port P --workers N
--redis redis://HOST:PORT/0`` starts N worker processes, each an aiohttp app
with a ``socketio.AsyncServer(client_manager=socketio.AsyncRedisManager(url))``
listening on P (``SO_REUSEPORT``), WebSocket transport only (no long-polling,
so no sticky sessions are needed):

- a client that connects without ``role=pub`` in its query joins the room;
- a ``publish`` event from the publisher (``role=pub``) is emitted to the
  room with ``sio.emit("msg", data, room=...)``: the manager publishes it on
  its Redis channel, and every worker's manager sends it to its local members.

Engine.IO pings every 300 s (the other servers of the fan-out benchmark have
keepalive off). It prints ``READY <port>`` once every worker listens.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
from typing import Any

from benchmarks.servers._common import announce, raise_nofile_limit, wait_for_signal

ROOM = "fanout"


async def worker(port: int, url: str) -> None:
    import socketio
    from aiohttp import web

    sio: Any = socketio.AsyncServer(
        async_mode="aiohttp",
        client_manager=socketio.AsyncRedisManager(url),
        transports=["websocket"],
        ping_interval=300,
        ping_timeout=300,
        logger=False,
        engineio_logger=False,
    )
    app = web.Application()
    sio.attach(app)

    @sio.event  # type: ignore[untyped-decorator,unused-ignore]
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if "role=pub" not in environ.get("QUERY_STRING", ""):
            await sio.enter_room(sid, ROOM)

    @sio.on("publish")  # type: ignore[untyped-decorator,unused-ignore]
    async def publish(sid: str, data: Any) -> None:
        await sio.emit("msg", data, room=ROOM)

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=4096)
    await site.start()
    announce(port)
    await wait_for_signal()
    await runner.cleanup()


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
    try:
        import socketio  # noqa: F401
    except ImportError as exc:
        sys.stderr.write(f"python-socketio is not available: {exc}\n")
        return 3
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
            if not process.stdout.readline().startswith(b"READY "):
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
    sys.exit(main())
