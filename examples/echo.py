#!/usr/bin/env python
"""Echo server: runs until SIGTERM or SIGINT, answers GET /healthz with 200.

Used by `make run`, by conformance tools and by the benchmarks::

    python examples/echo.py --host 127.0.0.1 --port 8765 [--no-compression] [--max-size N]
"""

from __future__ import annotations

import argparse
import http
import logging
import sys

import wsharbor


async def echo(websocket: wsharbor.ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(message)


def health_check(
    connection: wsharbor.ServerConnection, request: wsharbor.Request
) -> wsharbor.Response | None:
    if request.path == "/healthz":
        return wsharbor.Response(http.HTTPStatus.OK, "OK", wsharbor.Headers(), b"OK\n")
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--no-compression", action="store_true", help="disable permessage-deflate")
    parser.add_argument(
        "--max-size",
        type=int,
        default=2**20,
        help="maximum message size in bytes; 0 for no limit (default: 1 MiB)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.max_size < 0:
        parser.error("--max-size must be >= 0")
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    return wsharbor.run(
        echo,
        args.host,
        args.port,
        compression=None if args.no_compression else "deflate",
        max_size=args.max_size or None,
        process_request=health_check,
    )


if __name__ == "__main__":
    sys.exit(main())
