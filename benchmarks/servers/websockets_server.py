"""Echo server on websockets' asyncio API (``websockets.asyncio.server.serve``).

Compression off unless ``--compression`` (then ``compression="deflate"``, websockets'
default settings), ``max_size`` from the flags, everything else at the library's defaults
(so keepalive pings every 20 s, as a websockets user gets them). ``--fanout`` sends each
message received to every open connection with ``websockets.asyncio.server.broadcast``.
"""

from __future__ import annotations

import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

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


CONNECTIONS: set[ServerConnection] = set()


async def fanout(ws: ServerConnection) -> None:
    CONNECTIONS.add(ws)
    try:
        async for message in ws:
            broadcast(CONNECTIONS, message)
    except ConnectionClosed:
        pass  # the load generator's clients leave without closing
    finally:
        CONNECTIONS.discard(ws)


async def main(args: ServerArgs) -> None:
    async with serve(
        fanout if args.fanout else echo,
        args.host,
        args.port,
        compression="deflate" if args.compression else None,
        max_size=args.max_size,
        ssl=ssl_context(args),
    ) as server:
        announce(server.sockets[0].getsockname()[1])
        await wait_for_signal()


if __name__ == "__main__":
    sys.exit(run(main, parse_args(__doc__ or "")))
