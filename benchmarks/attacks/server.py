"""The server the attacks run against: an echo server on wsharbor or on websockets.

Both libraries get the same limits (:data:`LIMITS`, wsharbor's defaults, passed
explicitly to both) and keep their own default compression settings
(permessage-deflate offered to every client that asks for it). ``GET /healthz``
answers 200 through ``process_request``, as a health check on the WebSocket port
would. Warnings and errors are logged to stderr, one line each (tracebacks in
full), so the suite can count them::

    python -m benchmarks.attacks.server --lib wsharbor --port 0
    python -m benchmarks.attacks.server --lib websockets --tls-ca /tmp/ca.pem
    python -m benchmarks.attacks.server --lib wsharbor --nofile 256

``--tls-ca PATH`` serves ``wss://`` with a certificate for 127.0.0.1 issued by a
throwaway ``trustme`` CA, whose certificate is written to PATH for the clients.
``--nofile N`` lowers the soft ``RLIMIT_NOFILE`` to N once the server listens
(the fd-exhaustion attack). Prints ``READY <port>`` on stdout when it accepts
connections; stops on SIGTERM or SIGINT. SIGUSR1 runs a full ``gc.collect()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import http
import logging
import resource
import signal
import ssl
import sys
from typing import Any

from benchmarks.servers._common import announce, raise_nofile_limit, wait_for_signal
from wsharbor import defaults

__all__ = ["LIBRARIES", "LIMITS", "describe_limits", "main"]

LIBRARIES = ("wsharbor", "websockets")

#: The limits both servers run with: wsharbor's defaults, given to websockets too.
LIMITS: dict[str, Any] = {
    "max_size": defaults.MAX_SIZE,
    "max_queue": defaults.MAX_QUEUE,
    "write_limit": defaults.WRITE_LIMIT,
    "open_timeout": defaults.OPEN_TIMEOUT,
    "ping_interval": defaults.PING_INTERVAL,
    "ping_timeout": defaults.PING_TIMEOUT,
    "close_timeout": defaults.CLOSE_TIMEOUT,
}


def describe_limits() -> str:
    """The limits in one line, for the suite's output."""
    mib = LIMITS["max_size"] / 2**20
    fragments = getattr(defaults, "MAX_FRAGMENTS", None)  # when wsharbor has that limit
    return (
        f"max_size {mib:g} MiB, max_queue {LIMITS['max_queue']}, "
        f"write_limit {LIMITS['write_limit'] // 1024} KiB, "
        f"open_timeout {LIMITS['open_timeout']:g} s, "
        f"ping_interval/ping_timeout {LIMITS['ping_interval']:g}/{LIMITS['ping_timeout']:g} s, "
        f"close_timeout {LIMITS['close_timeout']:g} s; compression: each library's default "
        f"(permessage-deflate when the client offers it); wsharbor's own: "
        f"read_limit {defaults.READ_LIMIT // 1024} KiB"
        + (f", max_fragments {fragments:,}" if fragments else "")
        + " (websockets has no equivalent)"
    )


HEALTHZ = "/healthz"


class Args(argparse.Namespace):
    lib: str
    host: str
    port: int
    uvloop: bool
    tls_ca: str | None
    nofile: int | None


def parse_args(argv: list[str] | None = None) -> Args:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.attacks.server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--lib", choices=LIBRARIES, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--tls-ca", metavar="PATH", help="serve TLS; write the CA cert here")
    parser.add_argument("--nofile", type=int, metavar="N", help="soft RLIMIT_NOFILE once serving")
    args = parser.parse_args(argv, namespace=Args())
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        parser.error("the attack server only listens on loopback addresses")
    return args


def tls_context(ca_path: str) -> ssl.SSLContext:
    """A server context with a fresh certificate for 127.0.0.1; the CA goes to ``ca_path``."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca.cert_pem.write_to_path(ca_path)
    return context


async def serve_wsharbor(args: Args, context: ssl.SSLContext | None) -> None:
    import wsharbor

    async def echo(ws: wsharbor.ServerConnection) -> None:
        # A connection failed by the peer is not the handler's error: the library
        # closed it with the right code already. Only the library's own logs count.
        with contextlib.suppress(wsharbor.ConnectionClosed):
            async for message in ws:
                await ws.send(message)

    def process_request(connection: Any, request: wsharbor.Request) -> Any:
        if request.path == HEALTHZ:
            return (200, [("Content-Type", "text/plain")], b"ok\n")
        return None

    async with wsharbor.serve(
        echo, args.host, args.port, ssl=context, process_request=process_request, **LIMITS
    ) as server:
        await ready(server.sockets[0].getsockname()[1], args)


async def serve_websockets(args: Args, context: ssl.SSLContext | None) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed
    from websockets.http11 import Request, Response

    async def echo(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                await ws.send(message)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == HEALTHZ:
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        return None

    async with serve(
        echo, args.host, args.port, ssl=context, process_request=process_request, **LIMITS
    ) as server:
        await ready(next(iter(server.sockets)).getsockname()[1], args)


async def ready(port: int, args: Args) -> None:
    # SIGUSR1: a full collection, so the suite can tell memory held by garbage
    # cycles (freed here) from memory the allocator keeps.
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, gc.collect)
    if args.nofile is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    announce(port)
    await wait_for_signal()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    raise_nofile_limit()
    context = tls_context(args.tls_ca) if args.tls_ca else None
    coro = serve_wsharbor if args.lib == "wsharbor" else serve_websockets
    if args.uvloop:
        import uvloop

        uvloop.run(coro(args, context))
    else:
        asyncio.run(coro(args, context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
