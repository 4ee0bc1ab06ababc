"""Echo server on aiohttp (``web.WebSocketResponse``).

Compression off, ``max_msg_size`` from the flags, no access log, everything else at the
library's defaults (no heartbeat).
"""

from __future__ import annotations

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


def make_app(max_size: int) -> web.Application:
    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=max_size)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    return app


async def main(args: ServerArgs) -> None:
    runner = web.AppRunner(make_app(args.max_size), access_log=None, handle_signals=False)
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
