"""The asyncio WebSocket server: :func:`serve`, :class:`Server`, :class:`ServerConnection`.

Theory of operation
-------------------

**Listening.** A :class:`Server` owns its listening sockets and accepts from them
itself (it is not an :class:`asyncio.Server`), for three things asyncio's accept
loop doesn't do:

- :meth:`Server.pause_accepting` / :meth:`Server.resume_accepting`: connections
  wait in the kernel's backlog meanwhile, for another process sharing the socket
  or for later (``wsharbor run`` balances connections across workers that way);
- out of file descriptors (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) it
  stops accepting, logs one warning, tries again every second, and logs once
  more when it accepts again (asyncio logs a traceback per backlog slot, every
  second, and spins);
- the connection object exists from the moment the TCP connection is accepted,
  so that ``observer.connection_accepted()`` sees it, and with TLS the TLS
  handshake is bounded by ``open_timeout`` (asyncio's default is 60 s).

**Opening handshake.** :meth:`ServerConnection.handshake` does it top to bottom:
``process_request`` → check the request and negotiate (or reject it) → the
``Server`` header → ``process_response`` → the closing check (503 once the
server closes) → the 101 that opens the connection, or the HTTP response that
ends it. It is a coroutine, run eagerly (:mod:`.eager`): when the hooks don't
wait for anything, it runs to the end inside the ``data_received`` callback
that completed the request, with no task; a hook that awaits makes it continue
in a task. Without hooks, the same steps run in that callback without a
coroutine (``_check_request`` and ``_answer``, which the coroutine calls too).
What ``select_subprotocol`` raises is logged ("opening handshake failed") and
answered with a 500. An HTTP response other than 101 ends with a lingering close: the
response is sent, then our side of TCP is shut down, and what the client still
sends is read and dropped until it closes too (at most ``close_timeout``), so
that the kernel doesn't answer unread input with a reset that could destroy the
response before the client reads it.

**Graceful shutdown** (the deployment guide's first recipe) is :meth:`Server.close`:
stop accepting, answer handshakes still in progress with 503, send 1001 to
every open connection, wait up to ``close_timeout`` for the closing handshakes
and the handlers, then abort what is left and cancel handlers still running
(their ``finally`` blocks run). :meth:`Server.wait_closed` returns when all of
that is done. ``async with serve(...)`` does the same on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import errno
import functools
import http
import inspect
import logging
import os
import re
import socket
import ssl as ssl_module
import stat
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeAlias

from .. import defaults
from ..exceptions import ConnectionClosed, InvalidHandshake
from ..protocol.auth import basic_credentials, credentials_checker, www_authenticate_basic
from ..protocol.connection import Side, State, WebSocketProtocol
from ..protocol.datastructures import Headers
from ..protocol.deflate import DeflateSettings, server_extension_factories
from ..protocol.extensions import ServerExtensionFactory
from ..protocol.frames import CloseCode
from ..protocol.handshake import DEFAULT, Accepted, DefaultType, ServerHandshake, error_response
from ..protocol.http11 import Request, RequestParser, Response
from ..typing import LoggerLike, Origin, Subprotocol
from .budget import ReadBudget
from .connection import (
    Connection,
    ConnectionOptions,
    MaxQueue,
    MaxSize,
    WriteLimit,
    broadcast,
)
from .eager import start_eagerly
from .observer import ConnectionObserver
from .tls import TLS_TRANSPORTS, TLSTransport, TLSTransportName
from .transport import inherits_nodelay, make_transport

__all__ = [
    "Server",
    "ServerConnection",
    "basic_auth",
    "broadcast",
    "handler_callable",
    "process_request_callable",
    "serve",
    "unix_serve",
]

Handler: TypeAlias = Callable[..., Awaitable[Any]]
#: ``process_request(connection, request)`` or, as in the deployment guide,
#: ``process_request(path, request_headers)``; sync or async; returns a
#: :class:`Response`, a ``(status, headers, body)`` tuple, or None to continue.
ProcessRequest: TypeAlias = Callable[..., Any]
ProcessResponse: TypeAlias = Callable[..., Any]
SelectSubprotocol: TypeAlias = Callable[["ServerConnection", Sequence[str]], str | None]

_LEGACY_PATH_NAMES = frozenset({"path", "request_path"})

#: accept() errors that mean "out of resources": stop accepting for a while.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: Seconds between attempts to accept again after running out of resources.
ACCEPT_RETRY_DELAY = 1.0
#: Default listen() backlog, as asyncio's create_server().
BACKLOG = 100


# Legacy signatures of the deployment guide, adapted once.


def _positional_count(func: Callable[..., Any]) -> int:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return 1
    count = 0
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_POSITIONAL:
            return 1
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD) and (
            parameter.default is parameter.empty
        ):
            count += 1
    return count


def handler_callable(handler: Handler) -> Callable[[ServerConnection], Awaitable[Any]]:
    """``handler`` as ``handler(connection)``: the deployment guide's
    ``handler(websocket, path)`` is adapted; any other handler is returned as is."""
    if not callable(handler):
        raise TypeError("handler must be an async callable: async def handler(websocket)")
    if _positional_count(handler) < 2:
        return handler

    def legacy(connection: ServerConnection) -> Awaitable[Any]:
        return handler(connection, connection.path)

    return legacy


def process_request_callable(hook: ProcessRequest) -> Callable[[ServerConnection, Request], Any]:
    """``hook`` as ``process_request(connection, request)``: the deployment guide's
    ``process_request(path, request_headers)`` is adapted (told apart by the name
    of its first parameter); any other hook is returned as is."""
    try:
        parameters = list(inspect.signature(hook).parameters)
    except (TypeError, ValueError):
        parameters = []
    if not parameters or parameters[0] not in _LEGACY_PATH_NAMES:
        return hook

    def legacy(connection: ServerConnection, request: Request) -> Any:
        return hook(request.path, request.headers)

    return legacy


def _as_response(result: Any, server_header: str | None) -> Response | None:
    """Turn what ``process_request`` returned into a :class:`Response`."""
    if result is None:
        return None
    if isinstance(result, Response):
        response = result
    elif isinstance(result, tuple) and len(result) == 3:
        status, raw_headers, body = result
        status = http.HTTPStatus(int(status))
        if isinstance(body, str):
            body = body.encode()
        headers = raw_headers if isinstance(raw_headers, Headers) else Headers(raw_headers or ())
        response = Response(status.value, status.phrase, headers, bytes(body))
    else:
        raise TypeError(
            "process_request must return None, a Response or a (status, headers, body) tuple, "
            f"not {type(result).__name__}"
        )
    headers = response.headers
    if "Content-Length" not in headers:
        headers["Content-Length"] = str(len(response.body))
    if "Connection" not in headers:
        headers["Connection"] = "close"
    if server_header is not None and "Server" not in headers:
        headers["Server"] = server_header
    return response


class ServerConnection(Connection):
    """A connection accepted by a :class:`Server`.

    ``request`` is the opening handshake's request (``request.path``,
    ``request.headers``); ``path`` is a shortcut for ``request.path``.
    """

    __slots__ = ("_parser", "_pending", "server")

    side = Side.SERVER

    #: Set by :func:`basic_auth` once the client authenticated (in the
    #: connection's ``__dict__``, like any attribute an application sets).
    username: str

    def __init__(self, server: Server) -> None:
        super().__init__(server.options, server.loop)
        self.server = server
        self._parser: RequestParser | None = RequestParser()
        self._pending = b""

    @property
    def path(self) -> str:
        return "" if self.request is None else self.request.path

    def respond(self, status: int, text: str) -> Response:
        """A plain-text HTTP response for ``process_request`` to return, with the
        server's ``Server`` header: ``return connection.respond(200, "OK\\n")``."""
        return error_response(status, text, server_header=self.server.handshake.server_header)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._timers.open is not None:
            self._timers.open.add(self)

    def _open_timeout(self) -> None:
        if self.protocol is None and self.transport is not None:
            if self.response is None:
                self.logger.info("%r: opening handshake timed out", self)
            self.transport.abort()

    # The opening handshake.

    def handshake_data_received(self, data: bytes) -> None:
        if self.response is not None:
            return  # an HTTP response was sent: lingering close, input dropped
        parser = self._parser
        if parser is None:
            # The request is being handled (a hook awaits): keep pipelined bytes.
            self._pending += data
            if len(self._pending) > self.options.read_limit and self.transport is not None:
                self.transport.pause_reading()
            return
        try:
            request = parser.feed(data)
        except InvalidHandshake as exc:
            if self.options.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug("! invalid handshake: %s", exc)
            self._send_http_response(self.server.handshake.reject(exc), rejected=True)
            return
        if request is None:
            return
        self._pending = parser.leftover
        self._parser = None
        self.request = request
        server = self.server
        if server.process_request is None and server.process_response is None:
            # No hook that could wait: answered here, without a coroutine.
            self._answer(*self._check_request(request))
        else:
            start_eagerly(self.handshake(request), self.loop, server._tasks)

    async def handshake(self, request: Request) -> None:
        """The server side of the opening handshake (RFC 6455 section 4.2), top to bottom.

        Runs eagerly (see the module docstring): with synchronous hooks, it
        completes in the callback that received the request. Without hooks it
        isn't used: that callback calls :meth:`_check_request` and
        :meth:`_answer` itself.
        """
        server = self.server
        response: Response | None = None
        accepted: Accepted | None = None
        rejected = False  # the handshake was refused (not answered by a hook)
        hook = "process_request"
        try:
            # 1. process_request may answer with plain HTTP (health checks).
            if server.process_request is not None:
                result = server.process_request(self, request)
                if inspect.isawaitable(result):
                    if self.transport is not None:
                        self.transport.pause_reading()  # keep pipelined bytes bounded
                    result = await result
                response = _as_response(result, server.handshake.server_header)
            # 2. and 3.: the checks (_check_request).
            if response is None:
                response, accepted, rejected = self._check_request(request)
            # 4. process_response may replace the response.
            hook = "process_response"
            if server.process_response is not None:
                result = server.process_response(self, request, response)
                if inspect.isawaitable(result):
                    if self.transport is not None:
                        self.transport.pause_reading()
                    result = await result
                if result is not None:
                    response = result
        except Exception as exc:
            self.logger.error("%s failed", hook, exc_info=exc)
            response, accepted = self.respond(500, f"{hook} failed"), None
        assert response is not None
        self._answer(response, accepted, rejected)

    def _check_request(self, request: Request) -> tuple[Response, Accepted | None, bool]:
        """2. Check the request and negotiate, or reject it; 3. the Server header is
        the handshake's (ServerHandshake.server_header).

        Returns the response, what was negotiated (for a 101) and whether the
        handshake was refused. What ``select_subprotocol`` (or an extension) raises
        is logged and answered with a 500.
        """
        server = self.server
        try:
            accepted = server._negotiate(self, request)
        except InvalidHandshake as exc:
            if self.options.logger.isEnabledFor(logging.DEBUG):
                self.logger.debug("! invalid handshake: %s", exc)
            return server.handshake.reject(exc), None, True
        except Exception as exc:
            self.logger.error("opening handshake failed", exc_info=exc)
            return self.respond(500, "opening handshake failed"), None, False
        return accepted.response, accepted, False

    def _answer(self, response: Response, accepted: Accepted | None, rejected: bool) -> None:
        """Send the handshake's answer: the 101 opens the connection, anything else
        ends it (5. and 6.)."""
        server = self.server
        # 5. The closing check: a server that started closing meanwhile takes
        # no new connection.
        if server.closing and response.status == 101:
            response = self.respond(503, "server is shutting down; try again later")
        if self.transport is None or self.transport.is_closing():
            return
        # 6. The 101 opens the connection; anything else ends it.
        if response.status == 101 and accepted is not None:
            self._open(response, accepted)
        else:
            self._send_http_response(response, rejected=rejected)

    def _send_http_response(self, response: Response, *, rejected: bool = False) -> None:
        """Send an HTTP response that ends the connection, then close lingering.

        Logged at INFO as websockets does: ``connection rejected (status reason)``
        when the handshake was refused, ``HTTP response sent (status reason)``
        when a hook answered.
        """
        if self.options.logger.isEnabledFor(logging.INFO):
            message = "connection rejected (%d %s)" if rejected else "HTTP response sent (%d %s)"
            self._log_info(message, response.status, response.reason_phrase)
        self.response = response
        self._parser = None
        self._pending = b""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._write_http(response.serialize())
        if transport.can_write_eof():
            # Lingering close: our FIN after the response; what the client
            # still sends is read and dropped (handshake_data_received) until
            # it closes too, at most close_timeout.
            transport.write_eof()
            transport.resume_reading()
            self._arm_close_timer()
        else:
            transport.close()  # TLS: close_notify after the response

    def _open(self, response: Response, accepted: Accepted) -> None:
        transport = self.transport
        assert transport is not None
        self.response = response
        self.subprotocol = accepted.subprotocol
        self._write_http(response.serialize())
        # Both are kept as long as the connection: their fields packed, they cost
        # about 1.3 KiB less (Headers.compact; reading them works as before).
        request = self.request
        if request is not None:
            request.headers.compact()
        response.headers.compact()
        self._log_info("connection open")
        self.protocol = WebSocketProtocol(
            Side.SERVER,
            extensions=accepted.extensions,
            max_size=self.options.max_size,
            max_fragments=self.options.max_fragments,
            max_frame_size=self.options.max_frame_size,
            logger=self.options.logger,
        )
        if self._timers.open is not None:
            self._timers.open.discard(self)
        self._start_keepalive()
        server = self.server
        server._opened(self)
        budget = self.options.budget
        if budget is not None:
            budget.join(self)
        observer = self.options.observer
        if observer is not None:
            observer.connection_opened(self)
        server._start_handler(self)
        if self._write_paused:
            # The 101 filled the write buffer (write_limit=0): resume_writing()
            # resumes reading.
            transport.pause_reading()
        else:
            transport.resume_reading()
        pending, self._pending = self._pending, b""
        if pending:
            self.protocol.receive_data(pending)
            self._process_events()

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost follows

    def _connection_closed(self) -> None:
        if self._timers.open is not None:
            self._timers.open.discard(self)
        if self.response is not None:
            self._log_info("connection closed")
        self.server._lost(self)


class Server:
    """A WebSocket server, as returned by :func:`serve`.

    It is an async context manager: on exit it closes gracefully (1001 to every
    connection) and waits until every handler finished.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        options: ConnectionOptions,
        handshake: ServerHandshake,
        process_request: ProcessRequest | None = None,
        process_response: ProcessResponse | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        create_connection: Callable[[Server], ServerConnection] | None = None,
        ssl: ssl_module.SSLContext | None = None,
        tls_transport: TLSTransportName = "wsharbor",
        logger: LoggerLike,
    ) -> None:
        self.handler = handler_callable(handler)
        self._handler_is_async = inspect.iscoroutinefunction(self.handler)
        self.options = options
        self.handshake = handshake
        self.process_request = (
            None if process_request is None else process_request_callable(process_request)
        )
        self.process_response = process_response
        self.select_subprotocol = select_subprotocol
        self.create_connection = (
            ServerConnection if create_connection is None else create_connection
        )
        self.ssl = ssl
        #: Who does TLS: ``"wsharbor"`` (:class:`~.tls.TLSTransport`, small) or
        #: ``"loop"`` (the event loop's own, asyncio's ``SSLProtocol`` or uvloop's).
        self.tls_transport = tls_transport
        #: Bound on the TLS handshake (``open_timeout`` unless ``serve()`` set it).
        self.ssl_handshake_timeout = options.open_timeout
        #: Bound on the TLS shutdown (``close_timeout`` unless ``serve()`` set it).
        self.ssl_shutdown_timeout = options.close_timeout
        self.logger = logger
        self.loop = asyncio.get_running_loop()
        #: True once :meth:`close` was called: handshakes get 503.
        self.closing = False
        self._sockets: list[socket.socket] = []
        self._backlog = BACKLOG
        self._serving = False  # start_serving() was called and close() wasn't
        self._accepting = True  # not paused with pause_accepting()
        self._starved_since: float | None = None  # out of file descriptors since then
        self._retry: asyncio.TimerHandle | None = None
        self._readers: list[int] = []
        # Every connection from accept() to connection_lost(), and those still
        # in their opening handshake (for drain_handshakes).
        self._connections: set[ServerConnection] = set()
        self._opening: set[ServerConnection] = set()
        self._opening_done: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # The handler tasks running, and the connection of each.
        self._handler_tasks: dict[asyncio.Task[None], ServerConnection] = {}
        self._handler_done = self._handler_ended  # bound once, shared by the tasks
        self._close_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    # Public API.

    @property
    def connections(self) -> set[ServerConnection]:
        """The open WebSocket connections (handshake complete, not closed)."""
        return {c for c in self._connections if c.state is State.OPEN}

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (empty once closed)."""
        return tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    def is_serving(self) -> bool:
        """Whether the server accepts connections (or will, once resumed)."""
        return self._serving

    async def start_serving(self) -> None:
        """Start accepting connections (``serve(..., start_serving=False)``)."""
        if self.closing or self._serving:
            return
        self._serving = True
        self._listen()
        for sock in self._sockets:
            self.logger.info("server listening on %s", _socket_name(sock))

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called and the shutdown is complete."""
        await self.start_serving()
        await self.wait_closed()

    def pause_accepting(self) -> None:
        """Stop accepting connections; they wait in the kernel's backlog.

        Connections already accepted go on. Another process listening on the
        same socket takes the waiting ones; :meth:`resume_accepting` takes them
        here again.
        """
        if self._accepting:
            self._accepting = False
            self._unlisten()

    def resume_accepting(self) -> None:
        """Accept connections again after :meth:`pause_accepting`."""
        if not self._accepting:
            self._accepting = True
            self._listen()

    @property
    def accepting(self) -> bool:
        """Whether connections are being accepted now (serving, not paused,
        not out of file descriptors, not closing)."""
        return bool(self._readers)

    def close(
        self,
        code: int = CloseCode.GOING_AWAY,
        reason: str = "",
        *,
        close_connections: bool = True,
        timeout: float | None = None,
        drain_handshakes: float = 0.0,
    ) -> None:
        """Start a graceful shutdown; :meth:`wait_closed` waits for its end.

        Stops accepting, closes the listening sockets, then:

        - ``drain_handshakes`` seconds (default 0) let handshakes already in
          progress complete, so that their clients get ``code`` like everyone
          else instead of a 503 (``wsharbor run`` retires a worker that way);
        - open connections get a close frame with ``code`` and ``reason``
          (unless ``close_connections`` is false: then they end when their
          handlers return, without a deadline);
        - handlers and closing handshakes get ``timeout`` seconds (default
          ``close_timeout``), after which connections are aborted and handlers
          cancelled.

        Calling it again while a shutdown is in progress does nothing.
        """
        if self._close_task is None:
            self._close_task = self.loop.create_task(
                self._close(code, reason, close_connections, timeout, drain_handshakes)
            )

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every handler has finished."""
        await self._closed.wait()

    def abort(self) -> None:
        """Force the shutdown: abort every connection and cancel every handler."""
        self.closing = True
        self._stop_listening()
        for connection in list(self._connections):
            connection.abort()
        for task in list(self._handler_tasks) + list(self._tasks):
            task.cancel()
        self.close()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        await self.wait_closed()

    # Listening and accepting.

    def _listen(self) -> None:
        if self._readers or not (self._serving and self._accepting) or self.closing:
            return
        if self._starved_since is not None and self._retry is not None:
            return  # out of file descriptors: the retry timer resumes
        for sock in self._sockets:
            fd = sock.fileno()
            # TCP_NODELAY on each accepted socket, unless it inherits it.
            self.loop.add_reader(fd, self._accept, sock, not inherits_nodelay(sock))
            self._readers.append(fd)

    def _unlisten(self) -> None:
        for fd in self._readers:
            self.loop.remove_reader(fd)
        self._readers.clear()

    def _stop_listening(self) -> None:
        self._serving = False
        self._unlisten()
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def _accept(self, sock: socket.socket, nodelay: bool) -> None:
        # At most a backlog's worth per wake-up, as asyncio does, so that a
        # storm of connections can't starve the connections already open.
        for _ in range(self._backlog):
            if not self._readers:
                return  # paused (maybe by the observer) or closing
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up before we accepted
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._starved(exc)
                else:
                    self.logger.error("accept() failed: %s", exc)
                return
            if self._starved_since is not None:
                self.logger.warning(
                    "accepting connections again after %.1f s without file descriptors",
                    self.loop.time() - self._starved_since,
                )
                self._starved_since = None
            self._start_connection(conn, address, nodelay)

    def _starved(self, exc: OSError) -> None:
        """Out of file descriptors (or socket buffers): stop accepting, retry later.

        The kernel keeps queueing connections in the backlog meanwhile. Logged
        once per episode, not once per attempt: the readiness of the listening
        socket persists while it has waiting connections, and accepting in a
        loop would spin and flood the log.
        """
        self._unlisten()
        if self._starved_since is None:
            self._starved_since = self.loop.time()
            self.logger.warning(
                "can't accept connections: %s (%d connections open); "
                "retrying every %.0f s until one is freed",
                os.strerror(exc.errno or 0),
                len(self._connections),
                ACCEPT_RETRY_DELAY,
            )
        self._retry = self.loop.call_later(ACCEPT_RETRY_DELAY, self._retry_accepting)

    def _retry_accepting(self) -> None:
        self._retry = None
        self._listen()

    def _start_connection(self, sock: socket.socket, address: Any, nodelay: bool) -> None:
        connection = self.create_connection(self)
        self._connections.add(connection)
        self._opening.add(connection)
        observer = self.options.observer
        if observer is not None:
            observer.connection_accepted(connection)
        if self.ssl is None:
            # Plain TCP on asyncio's selector loop: the transport at once, no
            # task (see .transport); connection_made() follows as with asyncio.
            try:
                transport = make_transport(self.loop, sock, connection, address, nodelay=nodelay)
            except OSError as exc:  # the client left already
                sock.close()
                self.logger.info("connection failed before the opening handshake: %r", exc)
                self._forget_unopened(connection)
                return
            if transport is not None:
                return
            # Plain TCP on a loop with transports of its own (uvloop).
            self._adopt(self.loop.connect_accepted_socket(lambda: connection, sock), connection)
            return
        task = self.loop.create_task(self._connect(connection, sock))
        self._tasks.add(task)

    def _adopt(
        self, coro: Coroutine[Any, Any, Any], connection: ServerConnection, _: object = None
    ) -> None:
        """Run ``connect_accepted_socket()``'s coroutine without a task.

        Its first step, here in the accept callback, makes the transport and
        schedules ``connection_made()``; then it waits for a future (that
        ``connection_made()`` ran) and goes on from the future's callback. A
        task would add an object, a loop iteration before the transport exists
        and two more callbacks to every handshake: about 4% of a handshake's
        server CPU on uvloop. Nothing cancels it: :meth:`close` and
        :meth:`abort` find the connection in ``_connections`` as they find one
        on asyncio's loop between its transport and ``connection_made()``.
        The last argument is the future, when called back by it.
        """
        try:
            waiting_on = coro.send(None)
        except StopIteration:
            pass
        except OSError as exc:  # the client left already
            self.logger.info("connection failed before the opening handshake: %r", exc)
        except Exception as exc:
            self.logger.error("connection failed before the opening handshake", exc_info=exc)
        else:
            resume = functools.partial(self._adopt, coro, connection)
            if isinstance(waiting_on, asyncio.Future):
                waiting_on.add_done_callback(resume)
            else:  # a bare yield: the next iteration
                self.loop.call_soon(resume)
            return
        if connection.transport is None:
            self._forget_unopened(connection)

    def _forget_unopened(self, connection: ServerConnection) -> None:
        # No connection_made(), so no connection_lost() either: this is the end
        # of this connection for the server and its observer.
        self._lost(connection)
        observer = self.options.observer
        if observer is not None:
            observer.connection_closed(connection)

    async def _connect(self, connection: ServerConnection, sock: socket.socket) -> None:
        """Do the TLS handshake of an accepted socket and make it a transport."""
        try:
            if self.ssl is not None and self.tls_transport == "wsharbor":
                # TLS with a small footprint (.tls); connection_made() once the
                # handshake is complete, as with the loop's TLS.
                waiter: asyncio.Future[None] = self.loop.create_future()
                tls = TLSTransport(
                    connection,
                    self.ssl,
                    server_side=True,
                    waiter=waiter,
                    handshake_timeout=self.ssl_handshake_timeout,
                    shutdown_timeout=self.ssl_shutdown_timeout,
                )
                await self.loop.connect_accepted_socket(lambda: tls, sock)
                try:
                    await waiter
                except asyncio.CancelledError:
                    tls.abort()  # the server is closing: drop the handshake
                    raise
            else:
                await self.loop.connect_accepted_socket(
                    lambda: connection,
                    sock,
                    ssl=self.ssl,
                    ssl_handshake_timeout=self.ssl_handshake_timeout,
                    ssl_shutdown_timeout=self.ssl_shutdown_timeout,
                )
        except (OSError, ssl_module.SSLError, TimeoutError) as exc:
            # A TLS handshake that failed or timed out, a client that left.
            # (asyncio closed the socket.)
            self.logger.info("connection failed before the opening handshake: %r", exc)
        finally:
            self._tasks.discard(asyncio.current_task(self.loop))
            if connection.transport is None:
                self._forget_unopened(connection)

    # Connection lifecycle, from ServerConnection.

    def _negotiate(self, connection: ServerConnection, request: Request) -> Accepted:
        select = self.select_subprotocol
        if select is not None:
            # accept() is synchronous: binding the connection here is safe.
            self.handshake.select_subprotocol = functools.partial(select, connection)
        return self.handshake.accept(request)

    def _opened(self, connection: ServerConnection) -> None:
        self._done_opening(connection)

    def _lost(self, connection: ServerConnection) -> None:
        self._connections.discard(connection)
        self._done_opening(connection)

    def _done_opening(self, connection: ServerConnection) -> None:
        opening = self._opening
        if connection in opening:
            opening.discard(connection)
            if not opening and self._opening_done is not None:
                self._opening_done.set()

    def _start_handler(self, connection: ServerConnection) -> None:
        # The handler's coroutine is the task's: no wrapper coroutine, whose
        # frame an idle connection would keep (~230 bytes). What a wrapper did
        # is done by _handler_done, a callback shared by every handler task (in
        # the C task's slot for a first callback: no allocation) and run in the
        # handler's context, as the wrapper's except clause was. The dict finds
        # the connection of a task; an entry costs less than a set's did.
        context = contextvars.copy_context()
        handler: Coroutine[Any, Any, Any]
        if self._handler_is_async:
            # Calling a coroutine function runs none of its code yet.
            try:
                handler = self.handler(connection)  # type: ignore[assignment]
            except Exception:
                # It doesn't take the connection (TypeError): raised again in
                # the task, it is a handler's error, logged, 1011.
                handler = _call_handler(self.handler, connection)
        else:
            # Another callable runs in the task, as before: what it raises or
            # returns that can't be awaited ends as a handler's error.
            handler = _call_handler(self.handler, connection)
        task = self.loop.create_task(handler, context=context)
        self._handler_tasks[task] = connection
        # If an eager task factory ran it to the end already, the callback is
        # scheduled at once.
        task.add_done_callback(self._handler_done, context=context)

    def _handler_ended(self, task: asyncio.Task[None]) -> None:
        """A handler returned or raised: log its error, close its connection
        (1000 when it returned, 1011 when it failed), forget the task."""
        connection = self._handler_tasks.pop(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            connection._start_closing(CloseCode.NORMAL_CLOSURE, "")
        elif isinstance(exc, ConnectionClosed):
            pass
        elif isinstance(exc, Exception):
            self.logger.error("connection handler failed", exc_info=exc)
            connection._start_closing(CloseCode.INTERNAL_ERROR, "internal error")

    async def _close(
        self,
        code: int,
        reason: str,
        close_connections: bool,
        timeout: float | None,
        drain_handshakes: float,
    ) -> None:
        self.logger.info("server closing")
        self._stop_listening()
        if drain_handshakes > 0 and self._opening:
            # Handshakes in progress complete (and then get the close code).
            self._opening_done = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_handshakes):
                    await self._opening_done.wait()
        self.closing = True
        if close_connections:
            for connection in list(self._connections):
                protocol = connection.protocol
                if protocol is not None and protocol.state is State.OPEN:
                    if connection._fragmenting is not None:
                        protocol.fail(code, reason)
                    else:
                        protocol.send_close(code, reason)
                    connection._flush()
        waiters: set[asyncio.Future[Any]] = set(self._handler_tasks) | set(self._tasks)
        waiters |= {
            self.loop.create_task(connection.wait_closed()) for connection in self._connections
        }
        if waiters:
            if timeout is None:
                timeout = self.options.close_timeout
            if not close_connections:
                timeout = None
            _, pending = await asyncio.wait(waiters, timeout=timeout)
            if pending:
                for connection in list(self._connections):
                    connection.abort()
                for task in list(self._handler_tasks) + list(self._tasks):
                    task.cancel()
                await asyncio.wait(pending)
        self.logger.info("server closed")
        self._closed.set()


async def _call_handler(
    handler: Callable[[ServerConnection], Awaitable[Any]], connection: ServerConnection
) -> Any:
    """Run a handler that isn't a coroutine function (a callable object, a
    function returning an awaitable) inside its task."""
    return await handler(connection)


def _socket_name(sock: socket.socket) -> str:
    """``host:port``, ``[host]:port`` or the path of a listening socket, for logs."""
    address = sock.getsockname()
    if sock.family == socket.AF_INET:
        return f"{address[0]}:{address[1]}"
    if sock.family == socket.AF_INET6:
        return f"[{address[0]}]:{address[1]}"
    return str(address)


def _bind(
    host: str | Sequence[str] | None,
    port: int | None,
    *,
    family: int,
    flags: int,
    backlog: int,
    reuse_address: bool | None,
    reuse_port: bool | None,
) -> list[socket.socket]:
    """Listening TCP sockets for ``host`` and ``port``, as ``create_server()`` binds them."""
    hosts: Iterable[str | None] = [host] if host is None or isinstance(host, str) else host
    infos = []
    for one in hosts:
        infos += socket.getaddrinfo(
            one or None, port or 0, family, socket.SOCK_STREAM, 0, flags | socket.AI_PASSIVE
        )
    sockets: list[socket.socket] = []
    try:
        for af, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(af, kind, proto)
            sockets.append(sock)
            if reuse_address is None or reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if af == socket.AF_INET6:
                # Serve IPv4 on its own socket, as asyncio does.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"error while attempting to bind on address {address!r}: {exc}"
                ) from None
            sock.listen(backlog)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind_unix(path: str | None, backlog: int) -> socket.socket:
    if path is None:
        raise ValueError("unix_serve() needs a path, or sock=")
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.remove(path)  # a stale socket, as create_unix_server() does
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class serve:
    """Create a WebSocket server listening on ``host`` and ``port`` (or ``sock``).

    ``await serve(...)`` returns a started :class:`Server`; ``async with
    serve(...) as server:`` also closes it gracefully on exit::

        async def echo(websocket):
            async for message in websocket:
                await websocket.send(message)

        async with wsharbor.serve(echo, "127.0.0.1", 8765) as server:
            await server.serve_forever()

    The handler is ``async def handler(websocket)``; the deployment guide's
    ``async def handler(websocket, path)`` is accepted too. See the docs for
    every option; they keep the names websockets users know. Beyond them:
    ``observer`` sees every connection's events (:mod:`.observer`),
    ``create_connection`` makes the :class:`ServerConnection` of each accepted
    connection (a subclass, say), and ``start_serving=False`` returns a server
    that accepts nothing until :meth:`Server.start_serving`.

    ``ssl`` (an :class:`ssl.SSLContext`) serves ``wss://``. TLS is done by
    :class:`~wsharbor.asyncio.tls.TLSTransport`, which keeps an idle connection
    small (no 256 KiB read buffer per connection, as asyncio's has), on asyncio
    and on uvloop; ``tls_transport="loop"`` uses the event loop's own TLS
    instead. The TLS handshake is bounded by ``ssl_handshake_timeout``, which
    defaults to ``open_timeout``.
    """

    def __init__(
        self,
        handler: Handler,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        ssl: ssl_module.SSLContext | None = None,
        unix: bool = False,
        path: str | None = None,
        origins: Sequence[Origin | re.Pattern[str] | None] | None = None,
        extensions: Sequence[ServerExtensionFactory] | None = None,
        subprotocols: Sequence[Subprotocol] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        compression: str | DeflateSettings | None = "deflate",
        process_request: ProcessRequest | None = None,
        process_response: ProcessResponse | None = None,
        server_header: str | DefaultType | None = DEFAULT,
        open_timeout: float | None = defaults.OPEN_TIMEOUT,
        ping_interval: float | None = defaults.PING_INTERVAL,
        ping_timeout: float | None = defaults.PING_TIMEOUT,
        close_timeout: float | None = defaults.CLOSE_TIMEOUT,
        max_size: MaxSize = defaults.MAX_SIZE,
        max_fragments: int | None = defaults.MAX_FRAGMENTS,
        max_buffered: int | None = defaults.MAX_BUFFERED,
        max_queue: MaxQueue = defaults.MAX_QUEUE,
        read_limit: int = defaults.READ_LIMIT,
        write_limit: WriteLimit = defaults.WRITE_LIMIT,
        logger: LoggerLike | None = None,
        observer: ConnectionObserver | None = None,
        create_connection: Callable[[Server], ServerConnection] | None = None,
        # What websockets passes to loop.create_server(): named here, so that
        # an option neither library knows is a TypeError at the call.
        start_serving: bool = True,
        backlog: int = BACKLOG,
        family: int = socket.AF_UNSPEC,
        flags: int = 0,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        tls_transport: TLSTransportName = "wsharbor",
    ) -> None:
        self._handler = handler_callable(handler)
        if tls_transport not in TLS_TRANSPORTS:
            raise ValueError(
                f"tls_transport must be one of {', '.join(TLS_TRANSPORTS)}, got {tls_transport!r}"
            )
        self._tls_transport = tls_transport
        if logger is None:
            logger = logging.getLogger("wsharbor.server")
        if (host is not None or port is not None) and sock is not None:
            raise ValueError("host/port and sock can not be specified at the same time")
        self._host = host
        self._port = port
        self._sock = sock
        self._ssl = ssl
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._unix = unix
        self._path = path
        self._start_serving = start_serving
        self._bind_options = {
            "family": family,
            "flags": flags,
            "backlog": backlog,
            "reuse_address": reuse_address,
            "reuse_port": reuse_port,
        }
        self._backlog = backlog
        self._options = ConnectionOptions(
            max_size=max_size,
            max_fragments=max_fragments,
            max_queue=max_queue,
            read_limit=read_limit,
            write_limit=write_limit,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            logger=logger,
            observer=observer,
        )
        if max_buffered is not None:
            # Shared by every connection of the server: see .budget.
            self._options.budget = ReadBudget(max_buffered)
        # Built here so that bad settings (compression, origins, the Server
        # header) fail in the caller's frame. The one Server header rule:
        # DEFAULT is wsharbor/<version>, None omits it, and every response of
        # this server (101, errors, process_request's) carries this value.
        self._handshake = ServerHandshake(
            origins=origins,
            subprotocols=subprotocols,
            extensions=server_extension_factories(extensions, compression),
            server_header=server_header,
        )
        self._process_request = process_request
        self._process_response = process_response
        self._select_subprotocol = select_subprotocol
        self._create_connection = create_connection
        self._logger = logger
        self.server: Server | None = None

    def _sockets(self) -> list[socket.socket]:
        if self._sock is not None:
            return [self._sock]
        backlog = self._backlog
        if self._unix:
            return [_bind_unix(self._path, backlog)]
        return _bind(self._host, self._port, **self._bind_options)  # type: ignore[arg-type]

    async def _create(self) -> Server:
        server = Server(
            self._handler,
            options=self._options,
            handshake=self._handshake,
            process_request=self._process_request,
            process_response=self._process_response,
            select_subprotocol=self._select_subprotocol,
            create_connection=self._create_connection,
            ssl=self._ssl,
            tls_transport=self._tls_transport,
            logger=self._logger,
        )
        if self._ssl_handshake_timeout is not None:
            server.ssl_handshake_timeout = self._ssl_handshake_timeout
        if self._ssl_shutdown_timeout is not None:
            server.ssl_shutdown_timeout = self._ssl_shutdown_timeout
        sockets = self._sockets()
        for sock in sockets:
            sock.setblocking(False)
        server._sockets = sockets
        server._backlog = self._backlog
        self.server = server
        if self._start_serving:
            await server.start_serving()
        return server

    def __await__(self) -> Any:
        return self._create().__await__()

    async def __aenter__(self) -> Server:
        return await self._create()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def unix_serve(handler: Handler, path: str | None = None, **kwargs: Any) -> serve:
    """Like :func:`serve`, on a Unix socket at ``path``."""
    return serve(handler, unix=True, path=path, **kwargs)


def basic_auth(
    realm: str = "",
    credentials: tuple[str, str] | Iterable[tuple[str, str]] | None = None,
    check_credentials: Callable[[str, str], Awaitable[bool] | bool] | None = None,
) -> Callable[[ServerConnection, Request], Awaitable[Response | None]]:
    """A ``process_request`` enforcing HTTP Basic Authentication (RFC 7235, RFC 7617)::

        async with serve(handler, ..., process_request=basic_auth(
            realm="my dev server", credentials=("hello", "iloveyou"))):

    Give ``credentials`` (a ``(username, password)`` pair or several) or
    ``check_credentials(username, password)`` (a function or a coroutine
    function returning whether they are valid), not both: :exc:`ValueError`
    otherwise, :exc:`TypeError` for credentials that aren't pairs of strings.
    On success the connection's ``username`` attribute is set and the handshake
    goes on; otherwise the answer is 401 with ``WWW-Authenticate: Basic
    realm="..."``, as websockets' ``basic_auth``.
    """
    if (credentials is None) == (check_credentials is None):
        raise ValueError("provide either credentials or check_credentials")
    check = credentials_checker(credentials) if credentials is not None else check_credentials
    assert check is not None
    challenge = www_authenticate_basic(realm)

    async def process_request(connection: ServerConnection, request: Request) -> Response | None:
        authorization = request.headers.get("Authorization")
        if authorization is None:
            text = "Missing credentials\n"
        else:
            parsed = basic_credentials(authorization)
            if parsed is None:
                text = "Unsupported credentials\n"
            else:
                valid = check(*parsed)
                if inspect.isawaitable(valid):
                    valid = await valid
                if valid:
                    connection.username = parsed[0]
                    return None
                text = "Invalid credentials\n"
        response = connection.respond(http.HTTPStatus.UNAUTHORIZED, text)
        response.headers["WWW-Authenticate"] = challenge
        return response

    return process_request
