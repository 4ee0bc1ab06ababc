"""Echo server on wsharbor (``wsharbor.serve``), the library this benchmark is for.

Compression off unless ``--compression`` (then ``compression="deflate"``, wsharbor's
default settings), ``max_size`` from the flags, everything else at the library's defaults,
but ``--max-queue`` and ``--write-limit`` when given (to measure other values of these
defaults: the ``wsharbor-limits-32-64k`` server passes the earlier 32 and 64 KiB).
``--fanout`` sends each message received to every open connection with
``wsharbor.broadcast``. ``--tls-transport loop`` serves wss:// with the event loop's own
TLS instead of wsharbor's. Exits with status 3 and a one-line reason on stderr when
``wsharbor.serve`` is not available yet, which the harness reports as "not available".
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks.servers._common import (
    ServerArgs,
    announce,
    parse_args,
    run,
    ssl_context,
    wait_for_signal,
)

NOT_AVAILABLE = 3


async def echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-transport",
        choices=["wsharbor", "loop"],
        help="who does TLS for wss:// (default: the library's default, wsharbor)",
    )
    parser.add_argument("--max-queue", type=int, help="serve(max_queue=N)")
    parser.add_argument("--write-limit", type=int, help="serve(write_limit=N)")


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
    options: dict[str, Any] = {}
    for name in ("max_queue", "write_limit"):
        value = getattr(args, name, None)
        if value is not None:
            options[name] = value
    context = ssl_context(args)
    if context is not None:
        options["ssl"] = context
        tls_transport = getattr(args, "tls_transport", None)
        if tls_transport is not None:
            options["tls_transport"] = tls_transport
    async with serve(
        fanout if args.fanout else echo,
        args.host,
        args.port,
        compression="deflate" if args.compression else None,
        max_size=args.max_size,
        **options,
    ) as server:
        announce(server.sockets[0].getsockname()[1])
        await wait_for_signal()


if __name__ == "__main__":
    try:
        from wsharbor import serve as _serve  # noqa: F401
    except ImportError as exc:
        print(f"wsharbor.serve is not available: {exc}", file=sys.stderr)
        sys.exit(NOT_AVAILABLE)
    sys.exit(run(main, parse_args(__doc__ or "", configure=add_flags)))
