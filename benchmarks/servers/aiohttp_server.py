"""Echo server on aiohttp (``web.WebSocketResponse``).

Compression off unless ``--compression`` (then ``compress=True``, aiohttp's default
settings), ``max_msg_size`` from the flags, no access log, everything else at the
library's defaults (no heartbeat). aiohttp has no broadcast: ``--fanout`` awaits
``send_str`` (``send_bytes``) for each open connection in turn.
"""

from __future__ import annotations

import contextlib
import sys

from aiohttp import WSMsgType, web

from benchmarks.servers._common import (
    ServerArgs,
    announce,
    parse_args,
    run,
    ssl_context,
    wait_for_signal,
)


def make_app(max_size: int, compress: bool = False, fanout: bool = False) -> web.Application:
    connections: set[web.WebSocketResponse] = set()

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=compress, max_msg_size=max_size)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    async def room(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=compress, max_msg_size=max_size)
        await ws.prepare(request)
        connections.add(ws)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT and msg.type is not WSMsgType.BINARY:
                    continue
                for peer in list(connections):
                    # A peer closing meanwhile must not stop the others' delivery.
                    with contextlib.suppress(ConnectionError):
                        if msg.type is WSMsgType.TEXT:
                            await peer.send_str(msg.data)
                        else:
                            await peer.send_bytes(msg.data)
        finally:
            connections.discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/", room if fanout else echo)
    return app


async def main(args: ServerArgs) -> None:
    app = make_app(args.max_size, args.compression, args.fanout)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=ssl_context(args))
    await site.start()
    try:
        announce(runner.addresses[0][1])
        await wait_for_signal()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(run(main, parse_args(__doc__ or "")))
