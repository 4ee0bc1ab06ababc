"""Echo server on wsharbor (``wsharbor.serve``), the library this benchmark is for.

Compression off unless ``--compression`` (then ``compression="deflate"``, wsharbor's
default settings), ``max_size`` from the flags, everything else at the library's
defaults. ``--fanout`` sends each message received to every open connection with
``wsharbor.broadcast``. Exits with status 3 and a one-line reason on stderr when
``wsharbor.serve`` is not available yet, which the harness reports as "not available".
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks.servers._common import ServerArgs, announce, parse_args, run, wait_for_signal

NOT_AVAILABLE = 3


async def echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


CONNECTIONS: set[Any] = set()


async def fanout(ws: Any) -> None:
    import wsharbor

    broadcast: Any = wsharbor.broadcast  # type: ignore[attr-defined,unused-ignore]
    CONNECTIONS.add(ws)
    try:
        async for message in ws:
            broadcast(CONNECTIONS, message)
    finally:
        CONNECTIONS.discard(ws)


async def main(args: ServerArgs) -> None:
    import wsharbor

    serve: Any = wsharbor.serve  # type: ignore[attr-defined,unused-ignore]
    async with serve(
        fanout if args.fanout else echo,
        args.host,
        args.port,
        compression="deflate" if args.compression else None,
        max_size=args.max_size,
    ) as server:
        announce(server.sockets[0].getsockname()[1])
        await wait_for_signal()


if __name__ == "__main__":
    try:
        from wsharbor import serve as _serve  # noqa: F401
    except ImportError as exc:
        print(f"wsharbor.serve is not available: {exc}", file=sys.stderr)
        sys.exit(NOT_AVAILABLE)
    sys.exit(run(main, parse_args(__doc__ or "")))
