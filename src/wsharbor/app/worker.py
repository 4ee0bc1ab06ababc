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

The hub: before it accepts connections, the process starts its
:class:`~wsharbor.pubsub.Hub` on ``--broker`` (:mod:`.broker`; handlers get it
from :func:`wsharbor.app.hub`), and closes it once its connections closed.
``/readyz`` answers 503 ``broker unavailable`` while the hub's broker
connection is down.

Metering: :class:`Meter`, the server's connection observer (a public seam of
:mod:`wsharbor.asyncio`), counts bytes and messages in plain integer slots of
each :class:`AppConnection` where the asyncio layer reads bytes, writes them,
receives messages and sends them (:func:`~wsharbor.broadcast` included).
Prometheus counters get the totals when the connection closes and, for open
connections, every few seconds.
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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ..asyncio.connection import Connection
from ..asyncio.observer import ConnectionObserver
from ..asyncio.server import (
    Server,
    ServerConnection,
    handler_callable,
    process_request_callable,
    serve,
)
from ..exceptions import ConfigError, ConnectionClosed
from ..protocol.datastructures import Headers
from ..protocol.deflate import SERVER_DEFAULTS
from ..protocol.frames import CloseCode
from ..protocol.handshake import DEFAULT
from ..protocol.http11 import Request, Response
from . import sdnotify
from .balance import Balancer, Scoreboard
from .broker import set_current, start_hub
from .config import Config
from .env import ENV_BALANCE, ENV_CONFIG, ENV_FD, ENV_READY_FD, EXIT_RECYCLED
from .importer import App, load_config_app
from .listen import describe
from .logs import ACCESS_LOGGER, APP_LOGGER, access_fields, access_message, setup_logging
from .metrics import CONTENT_TYPE, Metrics
from .proxy_headers import ProxyHeaders
from .signals import capture_signals

if TYPE_CHECKING:
    from ..pubsub import Hub

__all__ = [
    "AppConnection",
    "AppServer",
    "Meter",
    "RoutedAppConnection",
    "loop_factory",
    "loop_name",
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


class AppConnection(ServerConnection):
    """A server connection with the counters of the access log and the metrics.

    The server makes one per accepted connection (``serve(create_connection=...)``);
    :class:`Meter`, the server's observer, keeps the counters up to date.
    """

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "internal",
        "messages_in",
        "messages_out",
        "peer",
        "reported",
        "started",
    )

    def __init__(self, server: Server) -> None:
        super().__init__(server)
        self.started = self.loop.time()
        #: The client's address when a trusted proxy named it (``--proxy-headers``),
        #: else the socket's peer once the connection closed, for the access log.
        self.peer: Any = None
        #: A request to the health, readiness or metrics path.
        self.internal = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.messages_in = 0
        self.messages_out = 0
        #: The counters as last added to the Prometheus totals.
        self.reported = (0, 0, 0, 0)

    @property
    def counters(self) -> tuple[int, int, int, int]:
        """Bytes in, bytes out, messages in, messages out."""
        return self.bytes_in, self.bytes_out, self.messages_in, self.messages_out

    @property
    def remote_address(self) -> Any:
        """The client's address: the one a trusted proxy's header gave
        (``--proxy-headers``), else the socket's peer."""
        if self.peer is not None:
            return self.peer
        return super().remote_address

    @remote_address.setter
    def remote_address(self, address: Any) -> None:
        self.peer = address


class RoutedAppConnection(AppConnection):
    """An :class:`AppConnection` with room for the handler a router matched, when
    the app is a URL map (see :class:`~wsharbor.asyncio.router.RouterConnection`)."""

    __slots__ = ("handler", "handler_kwargs")


class Meter(ConnectionObserver):
    """The observer of every connection of an :class:`AppServer`: counts in plain
    integers on the connection, and tells the app server when connections open
    and close."""

    __slots__ = ("app",)

    def __init__(self, app: AppServer) -> None:
        self.app = app

    def connection_accepted(self, connection: ServerConnection) -> None:
        self.app.connection_accepted(cast(AppConnection, connection))

    def connection_opened(self, connection: Connection) -> None:
        self.app.connection_opened(cast(AppConnection, connection))

    def connection_closed(self, connection: Connection) -> None:
        self.app.connection_closed(cast(AppConnection, connection))

    def data_received(self, connection: Connection, size: int) -> None:
        cast(AppConnection, connection).bytes_in += size

    def data_sent(self, connection: Connection, size: int) -> None:
        cast(AppConnection, connection).bytes_out += size

    def message_received(self, connection: Connection) -> None:
        cast(AppConnection, connection).messages_in += 1

    def message_sent(self, connection: Connection) -> None:
        cast(AppConnection, connection).messages_out += 1


def _encrypted_key(path: str) -> bool:
    """Whether the PEM file holds an encrypted private key (PKCS#8 or OpenSSL's)."""
    try:
        with open(path, "rb") as file:
            data = file.read(1 << 20)
    except OSError:
        return False
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data


def make_ssl_context(config: Config) -> ssl_module.SSLContext | None:
    if config.ssl_certfile is None:
        return None
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    password = config.ssl_keyfile_password

    def no_password() -> bytes:
        return b""  # never OpenSSL's prompt on the terminal

    try:
        context.load_cert_chain(
            config.ssl_certfile, config.ssl_keyfile, no_password if password is None else password
        )
    except (OSError, ssl_module.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        if _encrypted_key(config.ssl_keyfile or config.ssl_certfile):
            reason = (
                "the key is encrypted: give --ssl-keyfile-password"
                if password is None
                else "wrong --ssl-keyfile-password for the encrypted key"
            )
        raise ConfigError(
            f"--ssl-certfile {config.ssl_certfile} / --ssl-keyfile {config.ssl_keyfile}: "
            f"cannot load: {reason}"
        ) from None
    if config.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(config.ssl_ca_certs)
        except (OSError, ssl_module.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise ConfigError(
                f"--ssl-ca-certs {config.ssl_ca_certs}: cannot load: {reason}"
            ) from None
    # As uvicorn: --ssl-cert-reqs decides, --ssl-ca-certs alone requests nothing.
    context.verify_mode = {
        "none": ssl_module.CERT_NONE,
        "optional": ssl_module.CERT_OPTIONAL,
        "required": ssl_module.CERT_REQUIRED,
    }[config.ssl_cert_reqs]
    return context


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``--loop``: None means asyncio's default.

    ``auto`` (the default) is uvloop when it can be imported (``pip install
    'wsharbor[fast]'``), asyncio's otherwise; ``uvloop`` requires it.
    """
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigError(
                "--loop uvloop: uvloop is not installed (pip install 'wsharbor[fast]')"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: the event loop a server runs on, for its logs."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


class AppServer:
    """The WebSocket server of one process, with the app server's endpoints and signals.

    Built on the public API of :mod:`wsharbor.asyncio` only: :func:`serve` with
    ``sock=``, ``start_serving=False``, an observer (:class:`Meter`) and a
    connection factory (:class:`AppConnection`); :meth:`Server.close` with a
    timeout and handshake draining.
    """

    def __init__(
        self,
        config: Config,
        app: App,
        sock: socket.socket,
        *,
        ssl: ssl_module.SSLContext | None = None,
        supervised: bool = False,
        ready_fd: int | None = None,
        balancer: Balancer | None = None,
    ) -> None:
        self.config = config
        self.app = app
        self.sock = sock
        self.ssl = ssl
        self.supervised = supervised
        self.ready_fd = ready_fd
        #: Spreads connections evenly across workers (supervised only).
        self.balancer = balancer
        self.state = "starting"
        self.metrics = Metrics()
        self.connections: set[AppConnection] = set()
        self.forced = False
        self.server: Server | None = None
        #: The process's pub/sub hub, once started (wsharbor.app.hub()).
        self.hub: Hub | None = None
        self._handler = handler_callable(app.handler)
        self._stop_task: asyncio.Task[None] | None = None
        self._done: asyncio.Event | None = None
        self._parent = os.getppid()
        self._internal_paths = frozenset(
            {config.health_path, config.ready_path, config.metrics_path}
        )
        self._app_process_request = (
            None if app.process_request is None else process_request_callable(app.process_request)
        )
        self.access_log = config.access_log
        self.proxy = (
            ProxyHeaders(config.forwarded_allow_ips, config.forwarded_header)
            if config.proxy_headers
            else None
        )
        #: WebSocket connections opened, for --limit-max-requests.
        self.opened = 0
        #: Retired after --limit-max-requests: exit with EXIT_RECYCLED.
        self.recycled = False

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    # Building the server.

    def build(self) -> serve:
        """``serve()`` with the settings of ``config``, on the inherited socket."""
        config = self.config
        compression = (
            None
            if config.compression == "none"
            else dataclasses.replace(
                SERVER_DEFAULTS, window_bits=config.window_bits, memory_level=config.memory_level
            )
        )
        origins: list[str | None] | None = None
        if config.origins is not None:
            origins = [origin or None for origin in config.origins]
        return serve(
            self._handle,
            sock=self.sock,
            ssl=self.ssl,
            tls_transport="loop" if config.tls_transport == "loop" else "wsharbor",
            start_serving=False,
            backlog=config.backlog,
            origins=origins,
            subprotocols=[s for s in config.subprotocols or () if s],
            compression=compression,
            process_request=self._process_request,
            # --server-header '' omits it; unset, the library's default.
            server_header=DEFAULT if config.server_header is None else config.server_header or None,
            max_size=config.max_size,
            max_fragments=config.max_fragments,
            max_buffered=config.max_buffered,
            max_queue=config.max_queue,
            read_limit=config.read_limit,
            write_limit=config.write_limit,
            ping_interval=config.ping_interval,
            ping_timeout=config.ping_timeout,
            open_timeout=config.open_timeout,
            close_timeout=config.close_timeout,
            logger=logging.getLogger("wsharbor.server"),
            observer=Meter(self),
            create_connection=AppConnection if self.app.router is None else RoutedAppConnection,
        )

    # Per connection.

    async def _handle(self, websocket: ServerConnection) -> None:
        try:
            await self._handler(websocket)
        except ConnectionClosed:
            raise
        except Exception:
            self.metrics.handler_errors.inc()
            raise

    def _process_request(self, connection: ServerConnection, request: Request) -> Any:
        if self.proxy is not None:
            client = self.proxy.client(connection.remote_address, request.headers)
            if client is not None:
                cast(AppConnection, connection).remote_address = client
        path = request.path.split("?", 1)[0]
        if path in self._internal_paths:
            cast(AppConnection, connection).internal = True
            config = self.config
            if path == config.health_path:
                return Response.text(200, "OK\n")
            if path == config.ready_path:
                if self.state != "ready":
                    return Response.text(503, f"{self.state}\n")
                hub = self.hub
                if hub is not None and not hub.ready:
                    return Response.text(503, f"broker unavailable: {hub.url}\n")
                return Response.text(200, "ready\n")
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
                return self._finish_app_process_request(result, connection)
            if result is not None:
                return result
        return self._check_capacity(connection)

    async def _finish_app_process_request(self, result: Any, connection: ServerConnection) -> Any:
        value = await result
        if value is not None:
            return value
        return self._check_capacity(connection)

    def _check_capacity(self, connection: ServerConnection) -> Response | None:
        limit = self.config.max_connections
        if limit is not None and self.open_connections >= limit:
            return connection.respond(
                503, f"too many connections ({limit} per worker); try again later"
            )
        return None

    def connection_accepted(self, connection: AppConnection) -> None:
        if self.balancer is not None:
            self.balancer.accepted()

    def connection_opened(self, connection: AppConnection) -> None:
        self.connections.add(connection)
        self.metrics.connections_open.inc()
        self.metrics.handshakes.labels("101").inc()
        limit = self.config.limit_max_requests
        if limit is not None:
            self.opened += 1
            if self.opened >= limit and self._stop_task is None:
                logger.info(
                    "served %d connections (--limit-max-requests): retiring (1012)", self.opened
                )
                self.recycled = True
                self.stop(CloseCode.SERVICE_RESTART, "service restart", drain_handshakes=True)

    def connection_closed(self, connection: AppConnection) -> None:
        if self.balancer is not None:
            self.balancer.closed()
        metrics = self.metrics
        if connection.peer is None:
            connection.peer = connection.remote_address
        if connection in self.connections:
            self.connections.discard(connection)
            metrics.connections_open.dec()
            metrics.close_codes.labels(str(connection.close_code)).inc()
        elif not connection.internal:
            response = connection.response
            status = "none" if response is None else str(response.status)
            metrics.handshakes.labels(status).inc()
        if not connection.internal:
            self._flush_connection(connection)
        if self.access_log:
            level = logging.DEBUG if connection.internal else logging.INFO
            if access_logger.isEnabledFor(level):
                self._log_access(connection, level)

    def _log_access(self, connection: AppConnection, level: int) -> None:
        bytes_in, bytes_out, messages_in, messages_out = connection.counters
        request, response = connection.request, connection.response
        fields = access_fields(
            remote=connection.peer,
            path=None if request is None else request.path,
            status=None if response is None else response.status,
            duration=connection.loop.time() - connection.started,
            # A connection that never opened has no WebSocket close code ("-").
            close_code=None if connection.protocol is None else connection.close_code,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            messages_in=messages_in,
            messages_out=messages_out,
        )
        access_logger.log(level, "%s", access_message(fields), extra={"fields": fields})

    def _flush_connection(self, connection: AppConnection) -> None:
        counters = connection.counters
        reported = connection.reported
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
        connection.reported = counters

    def flush_metrics(self) -> None:
        """Report open connections' counters, the hub's, and the memory estimate."""
        for connection in self.connections:
            self._flush_connection(connection)
        if self.hub is not None:
            self.metrics.update_hub(self.hub.stats, self.hub.ready)
        self.metrics.update_memory(self.open_connections)

    # Lifecycle.

    async def serve(self) -> int:
        """Serve until a signal stops us; return the exit status."""
        loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
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
        with capture_signals(signals, self.handle_signal, loop):
            ticker = loop.create_task(self._tick())
            try:
                # The hub first: a handler may use it as soon as we accept.
                if await self._start_hub() and self._stop_task is None:
                    server = self.server = await self.build()
                    await server.start_serving()
                    if self.balancer is not None:
                        self.balancer.start(server)
                    self.state = "ready"
                    self._announce_ready()
                await self._done.wait()
                if self._stop_task is not None:
                    await self._stop_task
            finally:
                ticker.cancel()
                await self._close_hub()
        self.flush_metrics()
        logger.info("worker stopped" if self.supervised else "server stopped")
        if self.forced:
            return 1
        return EXIT_RECYCLED if self.recycled else 0

    async def _start_hub(self) -> bool:
        """Start the process's hub; False if a stop came first.

        A single process gives up at once (ConfigError: exit 2); a supervised
        worker waits for the broker (see :mod:`.broker`).
        """
        assert self._done is not None
        starting = asyncio.ensure_future(start_hub(self.config, self.app, retry=self.supervised))
        stopped = asyncio.ensure_future(self._done.wait())
        try:
            await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await starting
        if starting.cancelled():
            return False
        self.hub = starting.result()
        set_current(self.hub)
        return True

    async def _close_hub(self) -> None:
        """Close the hub once the connections are closed (leave rooms, presence)."""
        hub = self.hub
        if hub is None:
            return
        try:
            await asyncio.wait_for(hub.close(), 1.0 if self.forced else 2 * hub.timeout + 1.0)
        except TimeoutError:
            logger.warning("the pub/sub hub did not close in time")
        finally:
            set_current(None)

    def _announce_ready(self) -> None:
        where = describe(self.sock)
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, b"R")
                os.close(self.ready_fd)
            self.ready_fd = None
            logger.info("worker ready (%s)", loop_name(asyncio.get_running_loop()))
        else:
            logger.info("listening on %s (%s)", where, loop_name(asyncio.get_running_loop()))
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
            if self.balancer is not None:
                self.balancer.leave()
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
        assert self._done is not None
        if server is None:  # stopped while the hub was starting: nothing to close
            self._done.set()
            return
        timeout = self.config.graceful_timeout
        # A client that connected just before we stopped accepting completes its
        # handshake (and then gets 1012) instead of getting a 503. The socket
        # stays open in the supervisor and the other workers: connections keep
        # queueing in its backlog for them.
        drain = min(HANDSHAKE_DRAIN, timeout) if drain_handshakes else 0.0
        open_count = len(self.connections)
        logger.info(
            "closing %d connection%s with %d (%s)",
            open_count,
            "" if open_count == 1 else "s",
            code,
            reason,
        )
        server.close(code, reason, timeout=timeout, drain_handshakes=drain)
        try:
            await asyncio.wait_for(asyncio.shield(server.wait_closed()), drain + timeout + 1.0)
        except TimeoutError:
            logger.warning("graceful timeout: aborting the remaining connections")
            server.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._done.set()


def run_server(
    config: Config,
    app: App,
    sock: socket.socket,
    *,
    supervised: bool = False,
    ready_fd: int | None = None,
    balancer: Balancer | None = None,
) -> int:
    """Run an :class:`AppServer` in a new event loop until it stops; return the exit status."""
    ssl = make_ssl_context(config)
    factory = loop_factory(config.loop)

    async def main() -> int:
        server = AppServer(
            config,
            app,
            sock,
            ssl=ssl,
            supervised=supervised,
            ready_fd=ready_fd,
            balancer=balancer,
        )
        return await server.serve()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def spawned_main() -> int:
    """Entry point of a worker started by the supervisor."""
    config = Config.from_json(os.environ.pop(ENV_CONFIG))
    fd = int(os.environ.pop(ENV_FD))
    ready_fd = int(os.environ.pop(ENV_READY_FD))
    balance = os.environ.pop(ENV_BALANCE, None)
    # Our parent handles SIGINT from a terminal for us: take it only once serving.
    try:
        setup_logging(
            config.log_level,
            config.log_format,
            config.log_config,
            level_given="log_level" in config.explicit,
        )
        app = load_config_app(config)
    except ConfigError as exc:
        logger.error("worker cannot start: %s", exc)
        return 2
    sock = socket.socket(fileno=fd)
    balancer = None
    if balance is not None:
        board_fd, slot = (int(part) for part in balance.split(":"))
        balancer = Balancer(Scoreboard.attach(board_fd), slot, sock)
    try:
        return run_server(config, app, sock, supervised=True, ready_fd=ready_fd, balancer=balancer)
    except ConfigError as exc:
        logger.error("worker cannot start: %s", exc)
        return 2


if __name__ == "__main__":
    # Run the module under its real name, not as a second copy named __main__.
    from wsharbor.app.worker import spawned_main as _main

    sys.exit(_main())
