"""The asyncio WebSocket server: :func:`serve`, :class:`Server`, :class:`ServerConnection`.

Graceful shutdown (the deployment guide's first recipe) is :meth:`Server.close`:
stop accepting, answer handshakes still in progress with 503, send 1001 to every
open connection, wait up to ``close_timeout`` for the closing handshakes and the
handlers, then abort what is left and cancel handlers still running (their
``finally`` blocks run). :meth:`Server.wait_closed` returns when all of that is
done. ``async with serve(...)`` does the same on exit.
"""

from __future__ import annotations

import asyncio
import functools
import http
import inspect
import logging
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import Any, TypeAlias

from .. import defaults
from ..exceptions import ConnectionClosed, InvalidHandshake
from ..protocol.connection import Side, State, WebSocketProtocol
from ..protocol.datastructures import Headers
from ..protocol.deflate import DeflateSettings, enable_server_deflate
from ..protocol.frames import CloseCode
from ..protocol.handshake import ServerHandshake, error_response
from ..protocol.http11 import Request, RequestParser, Response
from ..typing import LoggerLike, Origin, Subprotocol
from .connection import Connection, ConnectionOptions

__all__ = ["Server", "ServerConnection", "serve", "unix_serve"]

Handler: TypeAlias = Callable[..., Awaitable[Any]]
#: ``process_request(connection, request)`` or, as in the deployment guide,
#: ``process_request(path, request_headers)``; sync or async; returns a
#: :class:`Response`, a ``(status, headers, body)`` tuple, or None to continue.
ProcessRequest: TypeAlias = Callable[..., Any]
ProcessResponse: TypeAlias = Callable[..., Any]
SelectSubprotocol: TypeAlias = Callable[["ServerConnection", Sequence[str]], str | None]

_LEGACY_PATH_NAMES = frozenset({"path", "request_path"})


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


def _first_parameter(func: Callable[..., Any]) -> str | None:
    try:
        parameters = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None
    return parameters[0] if parameters else None


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

    def __init__(self, server: Server) -> None:
        super().__init__(server.options)
        self.server = server
        self._parser: RequestParser | None = RequestParser()
        self._pending = b""

    @property
    def path(self) -> str:
        return "" if self.request is None else self.request.path

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._connections.add(self)
        if self._timers.open is not None:
            self._timers.open.add(self)

    def _open_timeout(self) -> None:
        if self.protocol is None and self.transport is not None:
            self.logger.info("%r: opening handshake timed out", self)
            self.transport.abort()

    def handshake_data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            # A request is being processed asynchronously; keep pipelined bytes.
            self._pending += data
            if len(self._pending) > self.options.read_limit and self.transport is not None:
                self.transport.pause_reading()
            return
        try:
            request = parser.feed(data)
        except InvalidHandshake as exc:
            self._reject(exc)
            return
        if request is None:
            return
        self._pending = parser.leftover
        self._parser = None
        self.request = request
        self._handle_request(request)

    def _reject(self, exc: InvalidHandshake) -> None:
        self.logger.info("%r: invalid handshake: %s", self, exc)
        self._send_http_response(self.server.handshake.reject(exc))

    def _send_http_response(self, response: Response) -> None:
        self.response = response
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(response.serialize())
            transport.close()
        self._parser = None

    def _handle_request(self, request: Request) -> None:
        server = self.server
        if server.closing:
            self._send_http_response(
                server._error_response(503, "server is shutting down; try again later")
            )
            return
        if server.process_request is not None:
            try:
                result = server._call_process_request(self, request)
            except Exception as exc:
                self._hook_failed("process_request", exc)
                return
            if inspect.isawaitable(result):
                self._run_async(self._finish_process_request(result))
                return
            if not self._answer_with(result):
                return
        self._accept(request)

    def _answer_with(self, result: Any) -> bool:
        """Send the HTTP response ``process_request`` returned; False if it did."""
        try:
            response = _as_response(result, self.server.server_header)
        except (TypeError, ValueError) as exc:
            self._hook_failed("process_request", exc)
            return False
        if response is None:
            return True
        self._send_http_response(response)
        return False

    async def _finish_process_request(self, result: Awaitable[Any]) -> None:
        try:
            value = await result
        except Exception as exc:
            self._hook_failed("process_request", exc)
            return
        if self.transport is None or self.transport.is_closing():
            return
        if self.server.closing:
            self._send_http_response(
                self.server._error_response(503, "server is shutting down; try again later")
            )
            return
        if self._answer_with(value):
            assert self.request is not None
            self._accept(self.request)

    def _hook_failed(self, name: str, exc: Exception) -> None:
        self.logger.error("%s failed", name, exc_info=exc)
        self._send_http_response(self.server._error_response(500, f"{name} failed"))

    def _run_async(self, coro: Coroutine[Any, Any, None]) -> None:
        if self.transport is not None:
            self.transport.pause_reading()
        task: asyncio.Task[None] = self.loop.create_task(coro)
        self.server._tasks.add(task)
        task.add_done_callback(self.server._tasks.discard)

    def _accept(self, request: Request) -> None:
        server = self.server
        try:
            accepted = server._accept(self, request)
        except InvalidHandshake as exc:
            self._reject(exc)
            return
        response = accepted.response
        if server.process_response is not None:
            try:
                result = server.process_response(self, request, response)
            except Exception as exc:
                self._hook_failed("process_response", exc)
                return
            if inspect.isawaitable(result):

                async def finish() -> None:
                    try:
                        replaced = await result
                    except Exception as exc:
                        self._hook_failed("process_response", exc)
                        return
                    self._open(replaced or response, accepted.subprotocol, accepted.extensions)

                self._run_async(finish())
                return
            if result is not None:
                response = result
        self._open(response, accepted.subprotocol, accepted.extensions)

    def _open(self, response: Response, subprotocol: str | None, extensions: list[Any]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if response.status != 101:
            self._send_http_response(response)
            return
        self.response = response
        self.subprotocol = subprotocol
        transport.write(response.serialize())
        self.protocol = WebSocketProtocol(
            Side.SERVER,
            extensions=extensions,
            max_size=self.options.max_size,
            logger=self.logger,
        )
        if self._timers.open is not None:
            self._timers.open.discard(self)
        self._start_keepalive()
        self.server._start_handler(self)
        transport.resume_reading()
        pending, self._pending = self._pending, b""
        if pending:
            self.protocol.receive_data(pending)
            self._process_events()

    def _connection_closed(self) -> None:
        if self._timers.open is not None:
            self._timers.open.discard(self)
        self.server._connections.discard(self)


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
        server_header: str | None = None,
        logger: LoggerLike,
    ) -> None:
        self.handler = handler
        self._legacy_handler = _positional_count(handler) >= 2
        self.options = options
        self.handshake = handshake
        self.process_request = process_request
        self._legacy_process_request = (
            process_request is not None and _first_parameter(process_request) in _LEGACY_PATH_NAMES
        )
        self.process_response = process_response
        self.select_subprotocol = select_subprotocol
        self.server_header = server_header
        self.logger = logger
        self.loop = asyncio.get_running_loop()
        self.server: asyncio.Server | None = None
        self._connections: set[ServerConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    # Public API.

    @property
    def connections(self) -> set[ServerConnection]:
        """The open WebSocket connections (handshake complete, not closed)."""
        return {c for c in self._connections if c.protocol is not None and c.state is State.OPEN}

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (empty once closed)."""
        if self.server is None:
            return ()
        return tuple(self.server.sockets)

    def close(self, code: int = CloseCode.GOING_AWAY, reason: str = "") -> None:
        """Start a graceful shutdown; :meth:`wait_closed` waits for its end."""
        if self._close_task is None:
            self._close_task = self.loop.create_task(self._close(code, reason))

    async def wait_closed(self) -> None:
        """Wait until the server is closed and every handler has finished."""
        await self._closed.wait()

    async def serve_forever(self) -> None:
        """Serve until :meth:`close` is called and the shutdown is complete."""
        assert self.server is not None
        await self.server.start_serving()
        await self.wait_closed()

    async def start_serving(self) -> None:
        assert self.server is not None
        await self.server.start_serving()

    def abort(self) -> None:
        """Force the shutdown: abort every connection and cancel every handler."""
        self.closing = True
        if self.server is not None:
            self.server.close()
        for connection in list(self._connections):
            connection.abort()
        for task in list(self._handler_tasks) + list(self._tasks):
            task.cancel()
        self.close()

    def is_serving(self) -> bool:
        return self.server is not None and self.server.is_serving()

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

    # Internals.

    def _attach(self, server: asyncio.Server) -> None:
        self.server = server

    def _make_connection(self) -> ServerConnection:
        return ServerConnection(self)

    def _error_response(self, status: int, text: str) -> Response:
        return error_response(status, text, server_header=self.server_header)

    def _call_process_request(self, connection: ServerConnection, request: Request) -> Any:
        assert self.process_request is not None
        if self._legacy_process_request:
            return self.process_request(request.path, request.headers)
        return self.process_request(connection, request)

    def _accept(self, connection: ServerConnection, request: Request) -> Any:
        select = self.select_subprotocol
        if select is not None:
            # accept() is synchronous: binding the connection here is safe.
            self.handshake.select_subprotocol = functools.partial(select, connection)
        return self.handshake.accept(request)

    def _start_handler(self, connection: ServerConnection) -> None:
        task = self.loop.create_task(self._run_handler(connection))
        if not task.done():  # an eager task factory may have run it to the end
            self._handler_tasks.add(task)

    async def _run_handler(self, connection: ServerConnection) -> None:
        # The task leaves _handler_tasks itself: cheaper than a done callback,
        # which costs one more event loop callback per connection.
        try:
            if self._legacy_handler:
                await self.handler(connection, connection.path)
            else:
                await self.handler(connection)
        except ConnectionClosed:
            pass
        except Exception:
            self.logger.error("connection handler failed", exc_info=True)
            await connection.close(CloseCode.INTERNAL_ERROR, "internal error")
        else:
            await connection.close()
        finally:
            self._handler_tasks.discard(asyncio.current_task())

    async def _close(self, code: int, reason: str) -> None:
        self.closing = True
        if self.server is not None:
            self.server.close()
        for connection in list(self._connections):
            protocol = connection.protocol
            if protocol is not None and protocol.state is State.OPEN:
                if connection._fragmenting is not None:
                    protocol.fail(code, reason)
                else:
                    protocol.send_close(code, reason)
                connection._flush()
        waiters: set[asyncio.Future[Any]] = set(self._handler_tasks) | set(self._tasks)
        closers = {
            self.loop.create_task(connection.wait_closed()) for connection in self._connections
        }
        waiters |= closers
        if waiters:
            _, pending = await asyncio.wait(waiters, timeout=self.options.close_timeout)
            if pending:
                for connection in list(self._connections):
                    connection.abort()
                for task in list(self._handler_tasks) + list(self._tasks):
                    task.cancel()
                await asyncio.wait(pending)
        if self.server is not None:
            await self.server.wait_closed()
        self._closed.set()


class serve:
    """Create a WebSocket server listening on ``host`` and ``port``.

    ``await serve(...)`` returns a started :class:`Server`; ``async with
    serve(...) as server:`` also closes it gracefully on exit::

        async def echo(websocket):
            async for message in websocket:
                await websocket.send(message)

        async with wsharbor.serve(echo, "127.0.0.1", 8765) as server:
            await server.serve_forever()

    The handler is ``async def handler(websocket)``; the deployment guide's
    ``async def handler(websocket, path)`` is accepted too. See the docs for
    every option; they keep the names websockets users know.
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
        origins: Sequence[Origin | None] | None = None,
        subprotocols: Sequence[Subprotocol] | None = None,
        select_subprotocol: SelectSubprotocol | None = None,
        compression: str | DeflateSettings | None = "deflate",
        process_request: ProcessRequest | None = None,
        process_response: ProcessResponse | None = None,
        server_header: str | None = None,
        open_timeout: float | None = defaults.OPEN_TIMEOUT,
        ping_interval: float | None = defaults.PING_INTERVAL,
        ping_timeout: float | None = defaults.PING_TIMEOUT,
        close_timeout: float | None = defaults.CLOSE_TIMEOUT,
        max_size: int | None = defaults.MAX_SIZE,
        max_queue: int | None = defaults.MAX_QUEUE,
        read_limit: int = defaults.READ_LIMIT,
        write_limit: int = defaults.WRITE_LIMIT,
        logger: LoggerLike | None = None,
        **kwargs: Any,
    ) -> None:
        if not callable(handler):
            raise TypeError("handler must be an async callable: async def handler(websocket)")
        from .. import __version__

        if logger is None:
            logger = logging.getLogger("wsharbor.server")
        if server_header is None:
            server_header = f"wsharbor/{__version__}"
        self._handler = handler
        self._host = host
        self._port = port
        self._sock = sock
        self._ssl = ssl
        self._unix = unix
        self._path = path
        self._kwargs = kwargs
        self._options = ConnectionOptions(
            max_size=max_size,
            max_queue=max_queue,
            read_limit=read_limit,
            write_limit=write_limit,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            logger=logger,
        )
        # Built here so that bad settings (compression, origins) fail in the caller's frame.
        self._handshake = ServerHandshake(
            origins=origins,
            subprotocols=subprotocols,
            extensions=enable_server_deflate(compression),
            server_header=server_header,
        )
        self._process_request = process_request
        self._process_response = process_response
        self._select_subprotocol = select_subprotocol
        self._server_header = server_header
        self._logger = logger
        self.server: Server | None = None

    async def _create(self) -> Server:
        loop = asyncio.get_running_loop()
        server = Server(
            self._handler,
            options=self._options,
            handshake=self._handshake,
            process_request=self._process_request,
            process_response=self._process_response,
            select_subprotocol=self._select_subprotocol,
            server_header=self._server_header,
            logger=self._logger,
        )
        if self._unix:
            asyncio_server = await loop.create_unix_server(
                server._make_connection, self._path, sock=self._sock, ssl=self._ssl, **self._kwargs
            )
        elif self._sock is not None:
            asyncio_server = await loop.create_server(
                server._make_connection, sock=self._sock, ssl=self._ssl, **self._kwargs
            )
        else:
            asyncio_server = await loop.create_server(
                server._make_connection, self._host, self._port, ssl=self._ssl, **self._kwargs
            )
        server._attach(asyncio_server)
        self.server = server
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
