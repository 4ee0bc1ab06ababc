"""One serving process: the WebSocket server on an inherited socket, with health, metrics, logs.

A worker is either the only process (``--workers 1``) or a child of the
supervisor, started as ``python -m wsharbor.app.worker`` with the listening
socket inherited (see :mod:`.supervisor`). Both run :class:`AppServer`.

States: ``starting`` (``/readyz`` 503) -> ``ready`` (accepting; ``/readyz`` 200)
-> ``draining`` (not accepting; ``/readyz`` 503) -> exit.

Signals:

- SIGTERM, SIGINT: graceful stop. Stop accepting, answer handshakes in progress
  with 503, send 1001 to every connection, give handlers ``--graceful-timeout``
  seconds to finish, then abort what is left. Exit 0.
- SIGINT again during the stop: force (abort every connection now). Exit 1.
- SIGUSR1: retire (the supervisor's rolling restart, or removing a worker). Stop
  accepting, let handshakes in progress finish, send 1012 "service restart" to
  every connection, then as above. Exit 0.
- SIGHUP: without a supervisor there is no one to start a new process, so it is
  logged and ignored; run ``--workers 2`` or more for zero-downtime restarts.
- SIGTTIN, SIGTTOU: the supervisor's "add / remove a worker"; a worker or a
  single process logs and ignores them (their default action would suspend it).

Metering: :class:`MeteredConnection` counts bytes and messages in plain integer
slots (bytes in: in ``buffer_updated``; messages in: in ``_deliver``; bytes and
messages out: a thin transport wrapper that sees every frame written, so
:func:`~wsharbor.broadcast` is counted too). Prometheus counters get the totals
when the connection closes and, for open connections, every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import logging
import os
import signal
import socket
import ssl as ssl_module
import sys
from collections.abc import Callable, Iterable
from typing import Any, cast

from ..asyncio.connection import Connection, ConnectionOptions
from ..asyncio.server import Server, ServerConnection
from ..exceptions import ConfigError, ConnectionClosed
from ..protocol.datastructures import Headers
from ..protocol.deflate import SERVER_DEFAULTS, enable_server_deflate
from ..protocol.frames import CloseCode
from ..protocol.handshake import ServerHandshake, error_response
from ..protocol.http11 import Request, Response
from . import sdnotify
from .config import Config
from .importer import App, load_app
from .listen import describe
from .logs import ACCESS_LOGGER, APP_LOGGER, access_fields, access_message, setup_logging
from .metrics import CONTENT_TYPE, Metrics

__all__ = [
    "AppServer",
    "MeteredConnection",
    "loop_factory",
    "make_ssl_context",
    "run_server",
    "spawned_main",
]

logger = logging.getLogger(APP_LOGGER)
access_logger = logging.getLogger(ACCESS_LOGGER)

#: Seconds between flushes of open connections' counters to Prometheus.
METRICS_INTERVAL = 5.0
#: How long a retiring worker waits for handshakes already in progress.
HANDSHAKE_DRAIN = 2.0

#: Environment of a spawned worker (set by the supervisor, removed by the worker).
ENV_CONFIG = "_WSHARBOR_WORKER_CONFIG"
ENV_FD = "_WSHARBOR_WORKER_FD"
ENV_READY_FD = "_WSHARBOR_WORKER_READY_FD"


class _CountingTransport(asyncio.Transport):
    """Delegates to the real transport; counts bytes and whole messages written.

    Every write of a WebSocket connection is whole frames, one per buffer (the
    sans-I/O protocol serializes frame by frame). A buffer whose first byte has
    FIN set and opcode 0, 1 or 2 ends a message. The HTTP response starts with
    ``H`` (0x48), which has FIN clear.
    """

    __slots__ = ("_transport", "bytes_out", "messages_out")

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self.bytes_out = 0
        self.messages_out = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self.bytes_out += len(data)
            if data[0] & 0x8F in (0x80, 0x81, 0x82):
                self.messages_out += 1
        self._transport.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        buffers = list(list_of_data)
        for data in buffers:
            if data:
                self.bytes_out += len(data)
                if data[0] & 0x8F in (0x80, 0x81, 0x82):
                    self.messages_out += 1
        self._transport.writelines(buffers)

    def write_eof(self) -> None:
        self._transport.write_eof()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def abort(self) -> None:
        self._transport.abort()

    def close(self) -> None:
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()


_buffer_updated = Connection.buffer_updated
_deliver = Connection._deliver


class MeteredConnection(ServerConnection):
    """A server connection that counts what goes through it, for metrics and the access log."""

    __slots__ = (
        "_app",
        "_internal",
        "_peer",
        "_reported",
        "_started",
        "bytes_in",
        "messages_in",
    )

    def __init__(self, server: Server, app: AppServer) -> None:
        super().__init__(server)
        self._app = app
        self._started = self.loop.time()
        self._peer: Any = None
        self._internal = False
        self._reported = (0, 0, 0, 0)
        self.bytes_in = 0
        self.messages_in = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._peer = transport.get_extra_info("peername")
        # Wrapping first also makes uvloop's transports (not asyncio.Transport
        # subclasses) pass the library's isinstance check.
        super().connection_made(_CountingTransport(cast(asyncio.Transport, transport)))

    def buffer_updated(self, nbytes: int) -> None:
        self.bytes_in += nbytes
        _buffer_updated(self, nbytes)

    def _deliver(self, data: Any) -> None:
        self.messages_in += 1
        _deliver(self, data)

    def _open(self, response: Response, subprotocol: str | None, extensions: list[Any]) -> None:
        super()._open(response, subprotocol, extensions)
        if self.protocol is not None:
            self._app._connection_opened(self)

    def _connection_closed(self) -> None:
        super()._connection_closed()
        self._app._connection_closed(self)

    @property
    def counters(self) -> tuple[int, int, int, int]:
        """Bytes in, bytes out, messages in, messages out."""
        transport = self.transport
        if isinstance(transport, _CountingTransport):
            return self.bytes_in, transport.bytes_out, self.messages_in, transport.messages_out
        return self.bytes_in, 0, self.messages_in, 0


def make_ssl_context(config: Config) -> ssl_module.SSLContext | None:
    if config.ssl_certfile is None:
        return None
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
    except (OSError, ssl_module.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(
            f"--ssl-certfile {config.ssl_certfile} / --ssl-keyfile {config.ssl_keyfile}: "
            f"cannot load: {reason}"
        ) from None
    return context


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``--loop``: None means asyncio's default."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigError("--loop uvloop: uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


class AppServer:
    """The WebSocket server of one process, with the app server's endpoints and signals."""

    def __init__(
        self,
        config: Config,
        app: App,
        sock: socket.socket,
        *,
        ssl: ssl_module.SSLContext | None = None,
        supervised: bool = False,
        ready_fd: int | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.sock = sock
        self.ssl = ssl
        self.supervised = supervised
        self.ready_fd = ready_fd
        self.state = "starting"
        self.metrics = Metrics()
        self.open_connections = 0
        self.connections: set[MeteredConnection] = set()
        self.forced = False
        self.server: Server | None = None
        self._asyncio_server: asyncio.AbstractServer | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._done: asyncio.Event | None = None
        self._parent = os.getppid()
        self._internal_paths = frozenset(
            {config.health_path, config.ready_path, config.metrics_path}
        )
        self._app_process_request = _adapt_process_request(app.process_request)
        self.access_log = config.access_log

    # Building the server.

    def _options(self, close_timeout: float | None) -> ConnectionOptions:
        config = self.config
        return ConnectionOptions(
            max_size=config.max_size,
            max_queue=config.max_queue,
            read_limit=config.read_limit,
            write_limit=config.write_limit,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            open_timeout=config.open_timeout,
            close_timeout=close_timeout,
            logger=logging.getLogger("wsharbor.server"),
        )

    def build(self) -> Server:
        config = self.config
        compression = (
            None
            if config.compression == "none"
            else dataclasses.replace(
                SERVER_DEFAULTS, window_bits=config.window_bits, memory_level=config.memory_level
            )
        )
        server_header: str | None
        if config.server_header is None:
            from .. import __version__

            server_header = f"wsharbor/{__version__}"
        else:
            server_header = config.server_header or None
        origins: list[str | None] | None = None
        if config.origins is not None:
            origins = [origin or None for origin in config.origins]
        handshake = ServerHandshake(
            origins=origins,
            subprotocols=[s for s in config.subprotocols or () if s],
            extensions=enable_server_deflate(compression),
            server_header=server_header,
        )
        self.server = Server(
            self._handle,
            options=self._options(config.close_timeout),
            handshake=handshake,
            process_request=self._process_request,
            server_header=server_header,
            logger=logging.getLogger("wsharbor.server"),
        )
        return self.server

    # Per connection.

    async def _handle(self, websocket: ServerConnection) -> None:
        try:
            if self.app.legacy:
                await self.app.handler(websocket, websocket.path)
            else:
                await self.app.handler(websocket)
        except ConnectionClosed:
            raise
        except Exception:
            self.metrics.handler_errors.inc()
            raise

    def _process_request(self, connection: ServerConnection, request: Request) -> Any:
        path = request.path.split("?", 1)[0]
        if path in self._internal_paths:
            cast(MeteredConnection, connection)._internal = True
            config = self.config
            if path == config.health_path:
                return Response.text(200, "OK\n")
            if path == config.ready_path:
                if self.state == "ready":
                    return Response.text(200, "ready\n")
                return Response.text(503, f"{self.state}\n")
            self.flush_metrics()
            body = self.metrics.exposition()
            headers = Headers()
            headers["Content-Type"] = CONTENT_TYPE
            headers["Content-Length"] = str(len(body))
            headers["Connection"] = "close"
            return Response(200, "OK", headers, body)
        if self._app_process_request is not None:
            result = self._app_process_request(connection, request)
            if inspect.isawaitable(result):
                return self._finish_app_process_request(result, request)
            if result is not None:
                return result
        return self._check_capacity(request)

    async def _finish_app_process_request(self, result: Any, request: Request) -> Any:
        value = await result
        if value is not None:
            return value
        return self._check_capacity(request)

    def _check_capacity(self, request: Request) -> Response | None:
        limit = self.config.max_connections
        if limit is not None and self.open_connections >= limit:
            assert self.server is not None
            return error_response(
                503,
                f"too many connections ({limit} per worker); try again later",
                server_header=self.server.server_header,
            )
        return None

    def _connection_opened(self, connection: MeteredConnection) -> None:
        self.open_connections += 1
        self.connections.add(connection)
        self.metrics.connections_open.inc()
        self.metrics.handshakes.labels("101").inc()

    def _connection_closed(self, connection: MeteredConnection) -> None:
        metrics = self.metrics
        if connection in self.connections:
            self.connections.discard(connection)
            self.open_connections -= 1
            metrics.connections_open.dec()
            metrics.close_codes.labels(str(connection.close_code)).inc()
        elif not connection._internal:
            response = connection.response
            status = "none" if response is None else str(response.status)
            metrics.handshakes.labels(status).inc()
        if not connection._internal:
            self._flush_connection(connection)
        if self.access_log:
            level = logging.DEBUG if connection._internal else logging.INFO
            if access_logger.isEnabledFor(level):
                self._log_access(connection, level)

    def _log_access(self, connection: MeteredConnection, level: int) -> None:
        bytes_in, bytes_out, messages_in, messages_out = connection.counters
        request, response = connection.request, connection.response
        fields = access_fields(
            remote=connection._peer,
            path=None if request is None else request.path,
            status=None if response is None else response.status,
            duration=connection.loop.time() - connection._started,
            close_code=connection.close_code,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            messages_in=messages_in,
            messages_out=messages_out,
        )
        access_logger.log(level, "%s", access_message(fields), extra={"fields": fields})

    def _flush_connection(self, connection: MeteredConnection) -> None:
        counters = connection.counters
        reported = connection._reported
        if counters == reported:
            return
        metrics = self.metrics
        for counter, now, before in zip(
            (metrics.bytes_in, metrics.bytes_out, metrics.messages_in, metrics.messages_out),
            counters,
            reported,
            strict=True,
        ):
            if now > before:
                counter.inc(now - before)
        connection._reported = counters

    def flush_metrics(self) -> None:
        """Report open connections' counters and the memory estimate."""
        for connection in self.connections:
            self._flush_connection(connection)
        self.metrics.update_memory(self.open_connections)

    # Lifecycle.

    async def serve(self) -> int:
        """Serve until a signal stops us; return the exit status."""
        loop = asyncio.get_running_loop()
        server = self.build()
        self._done = asyncio.Event()

        def factory() -> MeteredConnection:
            return MeteredConnection(server, self)

        if self.sock.family == socket.AF_UNIX:
            asyncio_server = await loop.create_unix_server(
                factory, sock=self.sock, ssl=self.ssl, start_serving=False
            )
        else:
            asyncio_server = await loop.create_server(
                factory, sock=self.sock, ssl=self.ssl, start_serving=False
            )
        server.server = asyncio_server
        self._asyncio_server = asyncio_server
        signals = (
            signal.SIGTERM,
            signal.SIGINT,
            signal.SIGHUP,
            signal.SIGUSR1,
            # Their default action stops (suspends) the process: a single
            # process has no workers to add or remove, so they are ignored.
            signal.SIGTTIN,
            signal.SIGTTOU,
        )
        previous = {sig: signal.getsignal(sig) for sig in signals}
        for sig in signals:
            loop.add_signal_handler(sig, self.handle_signal, sig)
        ticker = loop.create_task(self._tick())
        try:
            await asyncio_server.start_serving()
            self.state = "ready"
            self._announce_ready()
            await self._done.wait()
            if self._stop_task is not None:
                await self._stop_task
        finally:
            ticker.cancel()
            for sig in signals:
                loop.remove_signal_handler(sig)
                with contextlib.suppress(OSError, ValueError, TypeError):
                    signal.signal(sig, previous[sig])
        self.flush_metrics()
        logger.info("worker stopped" if self.supervised else "server stopped")
        return 1 if self.forced else 0

    def _announce_ready(self) -> None:
        where = describe(self.sock)
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, b"R")
                os.close(self.ready_fd)
            self.ready_fd = None
            logger.info("worker ready")
        else:
            logger.info("listening on %s", where)
            sdnotify.notify(f"READY=1\nSTATUS=serving on {where}")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0 if self.supervised else METRICS_INTERVAL)
            if self.supervised and os.getppid() != self._parent:
                logger.warning("supervisor is gone: shutting down")
                self.stop(CloseCode.GOING_AWAY, "server shutting down")
            self.flush_metrics()

    def handle_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if sig in (signal.SIGTTIN, signal.SIGTTOU):
            logger.warning(
                "%s ignored: workers are added and removed by the supervisor (--workers 2 or more)",
                name,
            )
            return
        if sig == signal.SIGHUP:
            if self.supervised:
                logger.debug("SIGHUP ignored by a worker: send it to the supervisor")
            else:
                logger.warning(
                    "SIGHUP ignored: a single process can't restart without downtime; "
                    "run with --workers 2 or more for rolling restarts"
                )
            return
        if self._stop_task is None:
            if sig == signal.SIGUSR1:
                logger.info("received %s: retiring (1012 to every connection)", name)
                self.stop(CloseCode.SERVICE_RESTART, "service restart", drain_handshakes=True)
            else:
                logger.info("received %s: shutting down gracefully", name)
                self.stop(CloseCode.GOING_AWAY, "server shutting down")
        elif sig == signal.SIGINT:
            logger.warning("received SIGINT again: forcing shutdown")
            self.force()
        else:
            logger.debug("received %s while stopping: ignored", name)

    def stop(self, code: int, reason: str, *, drain_handshakes: bool = False) -> None:
        """Start a graceful stop (idempotent)."""
        if self._stop_task is None:
            self.state = "draining"
            if not self.supervised:
                sdnotify.notify("STOPPING=1")
            loop = asyncio.get_running_loop()
            self._stop_task = loop.create_task(self._stop(code, reason, drain_handshakes))

    def force(self) -> None:
        self.forced = True
        if self.server is not None:
            self.server.abort()
        if self._done is not None:
            self._done.set()

    async def _stop(self, code: int, reason: str, drain_handshakes: bool) -> None:
        server = self.server
        assert server is not None and self._asyncio_server is not None and self._done is not None
        # Stop accepting. The socket stays open in the supervisor and the other
        # workers: connections keep queueing in its backlog for them.
        self._asyncio_server.close()
        timeout = self.config.graceful_timeout
        loop = asyncio.get_running_loop()
        if drain_handshakes:
            # A client that connected just before we stopped accepting completes
            # its handshake (and then gets 1012) instead of getting a 503.
            deadline = loop.time() + min(HANDSHAKE_DRAIN, timeout)
            while loop.time() < deadline and any(
                c.protocol is None and not c._is_lost() for c in server._connections
            ):
                await asyncio.sleep(0.01)
        # Server.close waits for handlers up to its options' close_timeout:
        # make that the graceful timeout (connections keep their own options).
        server.options = self._options(timeout)
        open_count = len(self.connections)
        logger.info(
            "closing %d connection%s with %d (%s)",
            open_count,
            "" if open_count == 1 else "s",
            code,
            reason,
        )
        server.close(code, reason)
        try:
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), timeout + 1.0)
        except TimeoutError:
            logger.warning("graceful timeout: aborting the remaining connections")
            server.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._done.set()


def _adapt_process_request(hook: Callable[..., Any] | None) -> Callable[..., Any] | None:
    """The app's ``process_request``: ``(connection, request)``, or legacy ``(path, headers)``."""
    if hook is None:
        return None
    try:
        parameters = list(inspect.signature(hook).parameters)
    except (TypeError, ValueError):
        parameters = []
    if parameters and parameters[0] in ("path", "request_path"):

        def legacy(connection: ServerConnection, request: Request) -> Any:
            return hook(request.path, request.headers)

        return legacy
    return hook


def run_server(
    config: Config,
    app: App,
    sock: socket.socket,
    *,
    supervised: bool = False,
    ready_fd: int | None = None,
) -> int:
    """Run an :class:`AppServer` in a new event loop until it stops; return the exit status."""
    ssl = make_ssl_context(config)
    factory = loop_factory(config.loop)

    async def main() -> int:
        server = AppServer(config, app, sock, ssl=ssl, supervised=supervised, ready_fd=ready_fd)
        return await server.serve()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def spawned_main() -> int:
    """Entry point of a worker started by the supervisor."""
    config = Config.from_json(os.environ.pop(ENV_CONFIG))
    fd = int(os.environ.pop(ENV_FD))
    ready_fd = int(os.environ.pop(ENV_READY_FD))
    setup_logging(config.log_level, config.log_format)
    # Our parent handles SIGINT from a terminal for us: take it only once serving.
    try:
        app = load_app(config.app)
    except ConfigError as exc:
        logger.error("worker cannot start: %s", exc)
        return 2
    sock = socket.socket(fileno=fd)
    return run_server(config, app, sock, supervised=True, ready_fd=ready_fd)


if __name__ == "__main__":
    # Run the module under its real name, not as a second copy named __main__.
    from wsharbor.app.worker import spawned_main as _main

    sys.exit(_main())
