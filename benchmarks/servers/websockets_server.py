"""Echo server on websockets' asyncio API (``websockets.asyncio.server.serve``).

Compression off, ``max_size`` from the flags, everything else at the library's defaults
(so keepalive pings every 20 s, as a websockets user gets them).
"""

from __future__ import annotations

import sys

from websockets.asyncio.server import ServerConnection, serve

from benchmarks.servers._common import (
    ServerArgs,
    announce,
    parse_args,
    run,
    ssl_context,
    wait_for_signal,
)


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def main(args: ServerArgs) -> None:
    async with serve(
        echo,
        args.host,
        args.port,
        compression=None,
        max_size=args.max_size,
        ssl=ssl_context(args),
    ) as server:
        announce(server.sockets[0].getsockname()[1])
        await wait_for_signal()


if __name__ == "__main__":
    sys.exit(run(main, parse_args(__doc__ or "")))
