"""What every benchmark echo server script shares: flags, fd limit, event loop, readiness."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable

__all__ = [
    "DEFAULT_MAX_SIZE",
    "ServerArgs",
    "announce",
    "parse_args",
    "raise_nofile_limit",
    "run",
    "ssl_context",
    "wait_for_signal",
]

#: Largest message every server accepts: comfortably above the 1 MiB workload.
DEFAULT_MAX_SIZE = 4 * 1024 * 1024


class ServerArgs(argparse.Namespace):
    host: str
    port: int
    uvloop: bool
    max_size: int
    tls_cert: str | None
    tls_key: str | None
    compression: bool
    fanout: bool


def parse_args(
    description: str,
    argv: list[str] | None = None,
    configure: Callable[[argparse.ArgumentParser], object] | None = None,
) -> ServerArgs:
    """The flags every server takes; ``configure`` adds a server's own."""
    parser = argparse.ArgumentParser(description=description)
    if configure is not None:
        configure(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 lets the kernel pick")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    parser.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_MAX_SIZE,
        help=f"largest accepted message in bytes (default {DEFAULT_MAX_SIZE})",
    )
    parser.add_argument(
        "--tls-cert", metavar="PEM", help="serve wss:// with this certificate (and --tls-key)"
    )
    parser.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    parser.add_argument(
        "--compression",
        action="store_true",
        help="negotiate permessage-deflate with the library's default settings (default: off)",
    )
    parser.add_argument(
        "--fanout",
        action="store_true",
        help="instead of echoing, send every message received to every open connection "
        "(the sender included), the way the library's documentation does it",
    )
    args = parser.parse_args(argv, namespace=ServerArgs())
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    return args


def ssl_context(args: ServerArgs) -> ssl.SSLContext | None:
    """The server's TLS context for ``--tls-cert``/``--tls-key``, or None (plain ws://).

    Python's defaults for a server (``ssl.create_default_context(Purpose.CLIENT_AUTH)``):
    the same for every server of the benchmark, so that TLS costs them the same.
    """
    if args.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def announce(port: int) -> None:
    """Tell the harness the server is accepting connections on ``port``."""
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()


async def wait_for_signal() -> None:
    """Return on the first SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run(main: Callable[[ServerArgs], Awaitable[None]], args: ServerArgs) -> int:
    """Run ``main(args)`` on the loop that ``args.uvloop`` selects; return an exit status."""
    raise_nofile_limit()

    async def entry() -> None:
        await main(args)

    if args.uvloop:
        import uvloop

        uvloop.run(entry())
    else:
        asyncio.run(entry())
    return 0
