"""The threaded WebSocket server: :func:`serve`, :class:`Server`, :class:`ServerConnection`.

One thread per connection runs the opening handshake, then the handler, then
the closing handshake, as websockets' ``websockets.sync.server``::

    from wsharbor.sync.server import serve

    def echo(websocket):
        for message in websocket:
            websocket.send(message)

    with serve(echo, "localhost", 8765) as server:
        server.serve_forever()

:meth:`Server.shutdown`, from another thread, stops accepting, answers
handshakes still in progress with 503, closes open connections with 1001 and
waits for every handler to return.
"""

from __future__ import annotations

import contextlib
import copy
import http
import logging
import re
import selectors
import socket
import ssl as ssl_module
import threading
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Self

from .. import defaults
from ..exceptions import ConnectionClosed, InvalidHandshake
from ..protocol.auth import basic_credentials, credentials_checker, www_authenticate_basic
from ..protocol.connection import Side, State
from ..protocol.deflate import DeflateSettings, server_extension_factories
from ..protocol.extensions import Extension, ServerExtensionFactory
from ..protocol.frames import CloseCode
from ..protocol.handshake import DEFAULT, DefaultType, ServerHandshake, error_response
from ..protocol.http11 import Request, RequestParser, Response
from ..typing import LoggerLike, Origin, Subprotocol
from .connection import (
    Connection,
    MaxQueue,
    MaxSize,
    broadcast,
    read_http,
    validate_options,
)
from .utils import Deadline

__all__ = ["Server", "ServerConnection", "basic_auth", "broadcast", "serve", "unix_serve"]

#: ``process_request(connection, request)``: a :class:`Response` to answer
#: with instead of the handshake, or None to go on.
ProcessRequest = Callable[["ServerConnection", Request], Response | None]
#: ``process_response(connection, request, response)``: a :class:`Response`
#: replacing ``response``, or None to keep it (it may be modified in place).
ProcessResponse = Callable[["ServerConnection", Request, Response], Response | None]
#: ``select_subprotocol(connection, offered)``: the subprotocol, or None.
SelectSubprotocol = Callable[["ServerConnection", Sequence[Subprotocol]], Subprotocol | None]


class ServerConnection(Connection):
    """A connection accepted by a :class:`Server`, given to the handler.

    :meth:`recv`, :meth:`send`, iteration as in
    :class:`~wsharbor.sync.client.ClientConnection`; :meth:`respond` builds an
    HTTP response for ``process_request``.

    :param sock: the accepted socket (TLS handshake done).
    :param handshake: the server side of the opening handshake.
    :param server: the server this connection belongs to.

    The other arguments are those of :func:`serve`.
    """

    side = Side.SERVER

    def __init__(
        self,
        sock: socket.socket,
        handshake: ServerHandshake,
        server: Server,
        *,
        ping_interval: float | None = defaults.PING_INTERVAL,
        ping_timeout: float | None = defaults.PING_TIMEOUT,
        close_timeout: float | None = defaults.CLOSE_TIMEOUT,
        max_size: MaxSize = defaults.MAX_SIZE,
        max_fragments: int | None = defaults.MAX_FRAGMENTS,
        max_queue: MaxQueue = defaults.MAX_QUEUE,
        read_limit: int = defaults.READ_LIMIT,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(
            sock,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=max_size,
            max_fragments=max_fragments,
            max_queue=max_queue,
            read_limit=read_limit,
            logger=logger,
        )
        self._handshake = handshake
        #: The server this connection belongs to.
        self.server = server
        #: Set by :func:`basic_auth` once the client authenticated.
        self.username: str

    def respond(self, status: http.HTTPStatus | int, text: str) -> Response:
        """A plain-text HTTP response, for ``process_request`` to return instead of
        performing the WebSocket handshake (a health check, a refusal).

        The body is ``text`` in UTF-8; modify the response (its headers) before
        returning it if needed.
        """
        return Response.text(int(status), text)

    def handshake(
        self,
        process_request: ProcessRequest | None = None,
        process_response: ProcessResponse | None = None,
        timeout: float | None = None,
    ) -> None:
        """Perform the opening handshake (RFC 6455 section 4.2) within ``timeout`` seconds.

        Reads the request, runs ``process_request``, accepts or rejects the
        upgrade, runs ``process_response`` and sends the response. The
        connection is open afterwards if the response was 101. Raises
        :exc:`TimeoutError` or :exc:`EOFError` if no whole request arrived.
        """
        deadline = Deadline(timeout)
        parser = RequestParser()
        try:
            request = read_http(self.socket, parser.feed, deadline)
        except InvalidHandshake as exc:
            # Malformed HTTP, or headers over the limits: 400, 431, 505.
            self.logger.info("invalid handshake: %s", exc)
            self._send_response(self._handshake.reject(exc), deadline, accepting=True)
            return
        self.request = request
        server_header = self._handshake.server_header

        def failed(hook: str) -> Response:
            self.logger.error("%s failed", hook, exc_info=True)
            return error_response(500, f"{hook} failed", server_header=server_header)

        response: Response | None = None
        if process_request is not None:
            try:
                response = process_request(self, request)
                if response is not None and not isinstance(response, Response):
                    raise TypeError(
                        "process_request must return a Response or None, "
                        f"not {type(response).__name__}"
                    )
            except Exception:
                self.logger.error("process_request failed", exc_info=True)
                response = error_response(
                    500, "process_request failed", server_header=server_header
                )
        accepting = response is None
        extensions: Sequence[Extension] = ()
        if response is None:
            try:
                accepted = self._handshake.accept(request)
            except InvalidHandshake as exc:
                self.logger.info("invalid handshake: %s", exc)
                response = self._handshake.reject(exc)
            else:
                response = accepted.response
                self.subprotocol = accepted.subprotocol
                extensions = accepted.extensions
        elif server_header is not None and "Server" not in response.headers:
            response.headers["Server"] = server_header

        if process_response is not None:
            try:
                replaced = process_response(self, request, response)
                if replaced is not None and not isinstance(replaced, Response):
                    raise TypeError(
                        "process_response must return a Response or None, "
                        f"not {type(replaced).__name__}"
                    )
            except Exception:
                self.logger.error("process_response failed", exc_info=True)
                replaced = error_response(
                    500, "process_response failed", server_header=server_header
                )
            if replaced is not None:
                response = replaced

        if response.status == 101 and self.server.is_shutting_down():
            response = error_response(
                503, "server is shutting down; try again later", server_header=server_header
            )
        self._send_response(response, deadline, accepting=accepting)
        if response.status == 101:
            self._open(extensions, parser.leftover)
            self.logger.info("connection open")

    def _send_response(self, response: Response, deadline: Deadline, *, accepting: bool) -> None:
        self.response = response
        self.socket.settimeout(deadline.timeout())
        self.socket.sendall(response.serialize())
        self.socket.settimeout(None)
        if response.status != 101:
            log = "connection rejected (%d %s)" if accepting else "HTTP response sent (%d %s)"
            self.logger.info(log, response.status, response.reason_phrase)


class Server:
    """A WebSocket server, as returned by :func:`serve`; its API follows
    :class:`socketserver.BaseServer`.

    :param sock: the listening socket.
    :param handler: called in a new thread for each accepted socket with
        ``(socket, address)``: :func:`serve` gives one that runs a
        :class:`ServerConnection`.
    :param logger: the server's logger (``wsharbor.server`` by default).
    """

    def __init__(
        self,
        sock: socket.socket,
        handler: Callable[[socket.socket, Any], None],
        logger: LoggerLike | None = None,
    ) -> None:
        #: The listening socket.
        self.socket = sock
        self.handler = handler
        if logger is None:
            logger = logging.getLogger("wsharbor.server")
        self.logger = logger
        self._lock = threading.Lock()
        # Notified when a connection opens or a handler thread ends.
        self._changed = threading.Condition(self._lock)
        self._all_connections: set[ServerConnection] = set()
        self._handler_threads: set[threading.Thread] = set()
        self._serving = False
        self._shutting_down = False
        # Set once no connection will be accepted any more.
        self._socket_closed = threading.Event()
        # Wakes serve_forever() up when shutdown() closes the listening socket.
        self._wakeup_reader, self._wakeup_writer = _socketpair()

    @property
    def connections(self) -> set[ServerConnection]:
        """The open connections: handshake complete, closing handshake not started.

        Useful with :func:`broadcast`.
        """
        with self._lock:
            return {c for c in self._all_connections if c.state is State.OPEN}

    def is_shutting_down(self) -> bool:
        """Whether :meth:`shutdown` was called."""
        return self._shutting_down

    def fileno(self) -> int:
        """The listening socket's file descriptor (see :class:`socketserver.BaseServer`)."""
        return self.socket.fileno()

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown` is called from another thread.

        Each connection runs in its own thread::

            with serve(handler, "localhost", 8765) as server:
                server.serve_forever()
        """
        with self._lock:
            if self._shutting_down or self._serving:
                return
            self._serving = True
        poller = selectors.DefaultSelector()
        try:
            poller.register(self._wakeup_reader, selectors.EVENT_READ)
            try:
                poller.register(self.socket, selectors.EVENT_READ)
            except (OSError, ValueError):  # shutdown() closed it already
                return
            self.logger.info("server listening on %s", _socket_name(self.socket))
            while True:
                poller.select()
                if self._shutting_down:
                    break
                try:
                    sock, address = self.socket.accept()
                except OSError as exc:
                    if self._shutting_down:
                        break
                    # EMFILE and the like: keep serving, without spinning.
                    self.logger.error("accept() failed: %s", exc)
                    self._socket_closed.wait(0.1)
                    continue
                thread = threading.Thread(
                    target=self._handle, args=(sock, address), name=f"wsharbor-conn-{address}"
                )
                # Registered before it starts, so that shutdown() waits for it.
                with self._lock:
                    self._handler_threads.add(thread)
                thread.start()
        finally:
            poller.close()
            self._socket_closed.set()

    def _handle(self, sock: socket.socket, address: Any) -> None:
        try:
            self.handler(sock, address)
        finally:
            with self._lock:
                self._handler_threads.discard(threading.current_thread())
                self._changed.notify_all()

    def shutdown(
        self,
        close_connections: bool = True,
        code: int = CloseCode.GOING_AWAY,
        reason: str = "",
    ) -> None:
        """Stop the server; return when every connection handler returned.

        Closes the listening socket. With ``close_connections`` (the default),
        answers handshakes in progress with 503 and closes open connections
        with ``code`` (1001, going away) and ``reason``; otherwise lets them end
        by themselves. Idempotent; may be called from a handler (it doesn't
        wait for its own thread).
        """
        with self._lock:
            first = not self._shutting_down
            self._shutting_down = True
            serving = self._serving
        if first:
            self.logger.info("server closing")
        with contextlib.suppress(OSError):
            self.socket.close()
        with contextlib.suppress(OSError):
            self._wakeup_writer.send(b"x")
        if serving:
            self._socket_closed.wait()
        else:
            self._socket_closed.set()
        current = threading.current_thread()
        closed: set[ServerConnection] = set()
        while True:
            with self._lock:
                threads = [t for t in self._handler_threads if t is not current]
                if not threads:
                    break
                to_close: list[ServerConnection] = []
                if close_connections:
                    to_close = [
                        c
                        for c in self._all_connections
                        if c not in closed and c.state is State.OPEN
                    ]
                if not to_close:
                    # Wait for a handshake to finish or a handler to return.
                    self._changed.wait()
                    continue
            closed.update(to_close)
            closers = [
                threading.Thread(target=connection.close, args=(code, reason))
                for connection in to_close
            ]
            for closer in closers:
                closer.start()
            for closer in closers:
                closer.join()
        with contextlib.suppress(OSError):
            self._wakeup_reader.close()
        with contextlib.suppress(OSError):
            self._wakeup_writer.close()
        if first:
            self.logger.info("server closed")

    def _connection_opened(self, connection: ServerConnection) -> None:
        with self._lock:
            self._all_connections.add(connection)
            self._changed.notify_all()

    def _connection_closed(self, connection: ServerConnection) -> None:
        with self._lock:
            self._all_connections.discard(connection)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.shutdown()


def _socketpair() -> tuple[socket.socket, socket.socket]:
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    return reader, writer


def _socket_name(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    return str(name)


def serve(
    handler: Callable[[ServerConnection], None],
    host: str | None = None,
    port: int | None = None,
    *,
    # TCP and TLS
    sock: socket.socket | None = None,
    ssl: ssl_module.SSLContext | None = None,
    unix: bool = False,
    path: str | None = None,
    # WebSocket
    origins: Sequence[Origin | re.Pattern[str] | None] | None = None,
    extensions: Sequence[ServerExtensionFactory] | None = None,
    subprotocols: Sequence[Subprotocol] | None = None,
    select_subprotocol: SelectSubprotocol | None = None,
    compression: str | DeflateSettings | None = "deflate",
    # HTTP
    process_request: ProcessRequest | None = None,
    process_response: ProcessResponse | None = None,
    server_header: str | DefaultType | None = DEFAULT,
    # Timeouts
    open_timeout: float | None = defaults.OPEN_TIMEOUT,
    ping_interval: float | None = defaults.PING_INTERVAL,
    ping_timeout: float | None = defaults.PING_TIMEOUT,
    close_timeout: float | None = defaults.CLOSE_TIMEOUT,
    # Limits
    max_size: MaxSize = defaults.MAX_SIZE,
    max_fragments: int | None = defaults.MAX_FRAGMENTS,
    max_queue: MaxQueue = defaults.MAX_QUEUE,
    read_limit: int = defaults.READ_LIMIT,
    # Logging
    logger: LoggerLike | None = None,
    # Customization
    create_connection: type[ServerConnection] | None = None,
    **kwargs: Any,
) -> Server:
    """Create a WebSocket server listening on ``host`` and ``port``.

    For each connection, a thread performs the opening handshake and calls
    ``handler(connection)`` with a :class:`ServerConnection`; when the handler
    returns, the connection is closed (1000; 1011 if it raised). Call
    :meth:`Server.serve_forever` to serve and :meth:`Server.shutdown` from
    another thread to stop; as a context manager, the server shuts down on exit.

    :param handler: ``def handler(websocket)``.
    :param host: interfaces to listen on (see :func:`socket.create_server`).
    :param port: TCP port; 0 picks a free one.
    :param sock: a listening socket; replaces ``host`` and ``port``.
    :param ssl: TLS settings: serve ``wss://``.
    :param unix: listen on the Unix socket at ``path`` (see :func:`unix_serve`).
    :param origins: allowed values of Origin (strings, or ``re.Pattern`` that
        must match the whole value); ``None`` in the list allows requests
        without Origin; ``None``: no check.
    :param extensions: extension factories, tried in order for each offer.
    :param subprotocols: subprotocols supported, by order of preference.
    :param select_subprotocol: ``select_subprotocol(connection, offered)``
        picks the subprotocol instead of the default choice.
    :param compression: ``"deflate"`` accepts permessage-deflate with
        :data:`~wsharbor.protocol.deflate.SERVER_DEFAULTS`; a
        :class:`~wsharbor.protocol.deflate.DeflateSettings` with those settings;
        ``None`` disables compression.
    :param process_request: ``process_request(connection, request)`` runs
        before the handshake; a :class:`Response` it returns (see
        :meth:`ServerConnection.respond`) is sent instead.
    :param process_response: ``process_response(connection, request,
        response)`` may modify or replace the response.
    :param server_header: value of the Server header (``wsharbor/<version>``
        by default); ``None`` omits it.
    :param open_timeout: seconds for the TLS and opening handshakes; ``None``:
        no limit.
    :param ping_interval: seconds between keepalive pings; ``None`` disables them.
    :param ping_timeout: seconds to wait for a keepalive pong before failing the
        connection with 1011; ``None``: no limit.
    :param close_timeout: seconds to wait for the closing handshake.
    :param max_size: the largest message received, in bytes (larger closes with
        1009), or ``(message, frame)`` limits; ``None``: no limit.
    :param max_fragments: frames in one message received; more closes with
        1009; ``None``: no limit.
    :param max_queue: frames received and not read yet above which reading
        pauses, or ``(high, low)``; ``None``: no limit in frames.
    :param read_limit: the most bytes one read from the socket takes, and the
        bytes received and not read yet above which reading pauses too
        (resuming at a quarter of it).
    :param logger: the server's logger (``wsharbor.server`` by default).
    :param create_connection: a :class:`ServerConnection` subclass to create.

    Other keyword arguments go to :func:`socket.create_server`.
    """
    if not callable(handler):
        raise TypeError("handler must be a callable: def handler(websocket)")
    if logger is None:
        logger = logging.getLogger("wsharbor.server")
    if create_connection is None:
        create_connection = ServerConnection
    # Built here: bad settings (compression, origins, Server header) fail in the caller.
    base_handshake = ServerHandshake(
        origins=origins,
        subprotocols=subprotocols,
        extensions=server_extension_factories(extensions, compression),
        server_header=server_header,
    )
    # Checked here, before the socket is bound.
    validate_options(
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        max_size=max_size,
        max_queue=max_queue,
        max_fragments=max_fragments,
        read_limit=read_limit,
    )

    if sock is None:
        if unix:
            if path is None:
                raise ValueError("missing path argument")
            kwargs.setdefault("family", socket.AF_UNIX)
            sock = socket.create_server(path, **kwargs)
        else:
            sock = socket.create_server((host or "", port or 0), **kwargs)
    else:
        if host is not None:
            raise ValueError("host is incompatible with sock")
        if port is not None:
            raise ValueError("port is incompatible with sock")
        if path is not None:
            raise ValueError("path is incompatible with sock")

    if ssl is not None:
        # The TLS handshake happens in the connection's thread, with a timeout.
        sock = ssl.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)

    def handle(conn_sock: socket.socket, address: Any) -> None:
        """Run one connection: TLS, opening handshake, handler, closing handshake.

        Logs what goes wrong (nobody else can catch it) and always closes the socket.
        """
        deadline = Deadline(open_timeout)
        try:
            if conn_sock.family in (socket.AF_INET, socket.AF_INET6):
                conn_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            if isinstance(conn_sock, ssl_module.SSLSocket):
                conn_sock.settimeout(deadline.timeout())
                conn_sock.do_handshake()
                conn_sock.settimeout(None)
            handshake = base_handshake
            if select_subprotocol is not None:
                # A copy per connection: the callback is bound to this connection.
                handshake = copy.copy(base_handshake)
            assert create_connection is not None
            connection = create_connection(
                conn_sock,
                handshake,
                server,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                close_timeout=close_timeout,
                max_size=max_size,
                max_fragments=max_fragments,
                max_queue=max_queue,
                read_limit=read_limit,
                logger=logger,
            )
            if select_subprotocol is not None:
                handshake.select_subprotocol = lambda offered: select_subprotocol(
                    connection, offered
                )
        except Exception as exc:
            logger.info("opening handshake failed: %s", exc or type(exc).__name__)
            with contextlib.suppress(OSError):
                conn_sock.close()
            return

        try:
            try:
                connection.handshake(process_request, process_response, deadline.timeout())
            except (OSError, EOFError) as exc:
                # Timeout, reset, or the client went away.
                connection.logger.info("opening handshake failed: %s", exc or type(exc).__name__)
                return
            if connection.protocol is None:
                return  # answered with an HTTP response
            server._connection_opened(connection)
            try:
                connection._start_keepalive()
                handler(connection)
            except ConnectionClosed:
                connection.close()
            except Exception:
                connection.logger.error("connection handler failed", exc_info=True)
                connection.close(CloseCode.INTERNAL_ERROR)
            else:
                connection.close()
            finally:
                server._connection_closed(connection)
                connection.logger.info("connection closed")
        except Exception:
            connection.logger.error("unexpected internal error", exc_info=True)
        finally:
            # Don't leak the socket, whatever happened.
            connection._close_socket()

    server = Server(sock, handle, logger)
    return server


def unix_serve(
    handler: Callable[[ServerConnection], None],
    path: str | None = None,
    **kwargs: Any,
) -> Server:
    """Like :func:`serve`, listening on the Unix socket at ``path``."""
    return serve(handler, unix=True, path=path, **kwargs)


def basic_auth(
    realm: str = "",
    credentials: tuple[str, str] | Iterable[tuple[str, str]] | None = None,
    check_credentials: Callable[[str, str], bool] | None = None,
) -> ProcessRequest:
    """A ``process_request`` enforcing HTTP Basic Authentication (RFC 7235, RFC 7617)::

        serve(handler, ..., process_request=basic_auth(
            realm="my dev server", credentials=("hello", "iloveyou")))

    Give ``credentials`` (a ``(username, password)`` pair or several) or
    ``check_credentials(username, password) -> bool``, not both. On success the
    connection's ``username`` attribute is set; otherwise the answer is 401 with
    ``WWW-Authenticate: Basic realm="..."``.
    """
    if (credentials is None) == (check_credentials is None):
        raise ValueError("provide either credentials or check_credentials")
    if credentials is not None:
        check_credentials = credentials_checker(credentials)
    assert check_credentials is not None
    check = check_credentials
    challenge = www_authenticate_basic(realm)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        authorization = request.headers.get("Authorization")
        if authorization is None:
            text = "Missing credentials\n"
        else:
            parsed = basic_credentials(authorization)
            if parsed is None:
                text = "Unsupported credentials\n"
            elif not check(*parsed):
                text = "Invalid credentials\n"
            else:
                connection.username = parsed[0]
                return None
        response = connection.respond(http.HTTPStatus.UNAUTHORIZED, text)
        response.headers["WWW-Authenticate"] = challenge
        return response

    return process_request
