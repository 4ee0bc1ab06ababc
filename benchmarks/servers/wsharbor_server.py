"""Echo server on wsharbor (``wsharbor.serve``), the library this benchmark is for.

Compression off, ``max_size`` from the flags, everything else at the library's defaults,
but ``--max-queue`` and ``--write-limit`` when given (to measure other values of these
defaults: the ``wsharbor-limits-32-64k`` server passes the earlier 32 and 64 KiB).
Exits with status 3 and a one-line reason on stderr when ``wsharbor.serve`` is not
available yet, which the harness reports as "not available".
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks.servers._common import ServerArgs, announce, parse_args, run, wait_for_signal

NOT_AVAILABLE = 3


async def echo(ws: Any) -> None:
    async for message in ws:
        await ws.send(message)


def parse_limits(argv: list[str]) -> tuple[dict[str, int], list[str]]:
    """``--max-queue N`` and ``--write-limit N`` as options for serve(); the other flags."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--max-queue", type=int)
    parser.add_argument("--write-limit", type=int)
    known, rest = parser.parse_known_args(argv)
    options = {k: v for k, v in vars(known).items() if v is not None}
    return options, rest


LIMITS: dict[str, int] = {}


async def main(args: ServerArgs) -> None:
    import wsharbor

    serve: Any = wsharbor.serve  # type: ignore[attr-defined,unused-ignore]
    async with serve(
        echo, args.host, args.port, compression=None, max_size=args.max_size, **LIMITS
    ) as server:
        announce(server.sockets[0].getsockname()[1])
        await wait_for_signal()


if __name__ == "__main__":
    try:
        from wsharbor import serve as _serve  # noqa: F401
    except ImportError as exc:
        print(f"wsharbor.serve is not available: {exc}", file=sys.stderr)
        sys.exit(NOT_AVAILABLE)
    LIMITS, rest = parse_limits(sys.argv[1:])
    sys.exit(run(main, parse_args(__doc__ or "", rest)))
