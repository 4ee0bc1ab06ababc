"""The asyncio WebSocket client: :func:`connect` and :class:`ClientConnection`."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import ssl as ssl_module
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

from .. import defaults
from ..exceptions import InvalidHandshake, InvalidMessage, InvalidStatus, InvalidURI
from ..protocol.connection import Side, WebSocketProtocol
from ..protocol.datastructures import Headers, HeadersLike
from ..protocol.deflate import DeflateSettings, enable_client_deflate
from ..protocol.handshake import ClientHandshake
from ..protocol.http11 import ResponseParser
from ..protocol.uri import parse_uri
from ..typing import LoggerLike, Origin, Subprotocol
from .connection import Connection, ConnectionOptions
from .observer import ConnectionObserver

__all__ = ["ClientConnection", "connect", "unix_connect"]


class ClientConnection(Connection):
    """A connection opened by :func:`connect`."""

    __slots__ = ("_handshake", "_handshake_waiter", "_parser")

    side = Side.CLIENT

    def __init__(self, options: ConnectionOptions, handshake: ClientHandshake) -> None:
        super().__init__(options)
        self._handshake = handshake
        self._parser: ResponseParser | None = ResponseParser()
        self._handshake_waiter: asyncio.Future[None] = self.loop.create_future()
        self.request = handshake.request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.request is not None
        self._write_http(self.request.serialize())

    def handshake_data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            return
        try:
            response = parser.feed(data)
            if response is None:
                return
            self._parser = None
            self.response = response
            accepted = self._handshake.process_response(response)
        except InvalidHandshake as exc:
            self._parser = None
            self._handshake_failed(exc)
            return
        self.subprotocol = accepted.subprotocol
        self.protocol = WebSocketProtocol(
            Side.CLIENT,
            extensions=accepted.extensions,
            max_size=self.options.max_size,
            max_fragments=self.options.max_fragments,
            logger=self.options.logger,
        )
        self._start_keepalive()
        observer = self.options.observer
        if observer is not None:
            observer.connection_opened(self)
        self._handshake_waiter.set_result(None)
        leftover = parser.leftover
        if leftover:
            self.protocol.receive_data(leftover)
            self._process_events()

    def _handshake_failed(self, exc: Exception) -> None:
        if not self._handshake_waiter.done():
            self._handshake_waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def _connection_closed(self) -> None:
        if not self._handshake_waiter.done():
            self._handshake_waiter.set_exception(
                InvalidMessage("connection closed during the opening handshake")
            )


def _retryable(exc: BaseException) -> bool:
    """Whether reconnecting may succeed after ``exc``."""
    if isinstance(exc, InvalidStatus):
        return exc.status >= 500 or exc.status == 429
    if isinstance(exc, InvalidMessage):
        return True  # the server went away mid-handshake
    return isinstance(exc, OSError | TimeoutError)


class connect:  # used like a function, as in websockets
    """Open a WebSocket connection to ``uri`` (``ws://`` or ``wss://``).

    ``await connect(uri)`` returns a :class:`ClientConnection`; ``async with
    connect(uri) as websocket:`` closes it on exit; ``async for websocket in
    connect(uri):`` reconnects whenever the connection drops, waiting between
    attempts with a capped exponential backoff and full jitter (``backoff_min``,
    ``backoff_factor``, ``backoff_max``). Errors that retrying can't fix (a bad
    URI, a 4xx answer) are raised.
    """

    def __init__(
        self,
        uri: str,
        *,
        origin: Origin | None = None,
        subprotocols: Sequence[Subprotocol] | None = None,
        additional_headers: Headers | HeadersLike | None = None,
        compression: str | DeflateSettings | None = "deflate",
        ssl: ssl_module.SSLContext | None = None,
        sock: socket.socket | None = None,
        unix: bool = False,
        path: str | None = None,
        open_timeout: float | None = defaults.OPEN_TIMEOUT,
        ping_interval: float | None = defaults.PING_INTERVAL,
        ping_timeout: float | None = defaults.PING_TIMEOUT,
        close_timeout: float | None = defaults.CLOSE_TIMEOUT,
        max_size: int | None = defaults.MAX_SIZE,
        max_fragments: int | None = defaults.MAX_FRAGMENTS,
        max_queue: int | None = defaults.MAX_QUEUE,
        read_limit: int = defaults.READ_LIMIT,
        write_limit: int = defaults.WRITE_LIMIT,
        backoff_min: float = 1.0,
        backoff_max: float = 60.0,
        backoff_factor: float = 1.618,
        logger: LoggerLike | None = None,
        observer: ConnectionObserver | None = None,
        **kwargs: Any,
    ) -> None:
        self.uri = parse_uri(uri)
        if ssl is not None and not self.uri.secure:
            raise InvalidURI(uri, "ssl= given for a ws:// URI; use wss://")
        if logger is None:
            logger = logging.getLogger("wsharbor.client")
        self._origin = origin
        self._subprotocols = subprotocols
        self._additional_headers = additional_headers
        self._extensions = enable_client_deflate(compression)
        self._ssl = ssl
        self._sock = sock
        self._unix = unix
        self._path = path
        self._open_timeout = open_timeout
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
        if not 0 < backoff_min <= backoff_max or backoff_factor < 1:
            raise ValueError("need 0 < backoff_min <= backoff_max and backoff_factor >= 1")
        self._backoff = (backoff_min, backoff_max, backoff_factor)
        self._kwargs = kwargs
        self._logger = logger
        self.connection: ClientConnection | None = None

    async def _create(self) -> ClientConnection:
        loop = asyncio.get_running_loop()
        handshake = ClientHandshake.from_uri(
            self.uri,
            origin=self._origin,
            subprotocols=self._subprotocols,
            extensions=self._extensions,
            additional_headers=self._additional_headers,
        )
        ssl = self._ssl
        if self.uri.secure and ssl is None:
            ssl = ssl_module.create_default_context()

        def factory() -> ClientConnection:
            return ClientConnection(self._options, handshake)

        async with asyncio.timeout(self._open_timeout):
            if self._unix:
                _, connection = await loop.create_unix_connection(
                    factory,
                    self._path,
                    sock=self._sock,
                    ssl=ssl,
                    server_hostname=self.uri.host if ssl else None,
                    **self._kwargs,
                )
            elif self._sock is not None:
                _, connection = await loop.create_connection(
                    factory,
                    sock=self._sock,
                    ssl=ssl,
                    server_hostname=self.uri.host if ssl else None,
                    **self._kwargs,
                )
            else:
                _, connection = await loop.create_connection(
                    factory, self.uri.host, self.uri.port, ssl=ssl, **self._kwargs
                )
            try:
                await connection._handshake_waiter
            except BaseException:
                connection.abort()
                raise
        return connection

    def __await__(self) -> Any:
        return self._create().__await__()

    async def __aenter__(self) -> ClientConnection:
        self.connection = await self._create()
        return self.connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.connection is not None
        await self.connection.__aexit__(exc_type, exc_value, traceback)

    async def __aiter__(self) -> AsyncIterator[ClientConnection]:
        backoff_min, backoff_max, factor = self._backoff
        delay = backoff_min
        while True:
            try:
                connection = await self._create()
            except Exception as exc:
                if not _retryable(exc):
                    raise
                wait = random.uniform(0, delay)
                self._logger.info("connect failed (%s); retrying in %.1f s", exc, wait)
                await asyncio.sleep(wait)
                delay = min(delay * factor, backoff_max)
                continue
            delay = backoff_min
            try:
                yield connection
            finally:
                await connection.close()


def unix_connect(path: str | None = None, uri: str | None = None, **kwargs: Any) -> connect:
    """Like :func:`connect`, over the Unix socket at ``path``."""
    if uri is None:
        uri = "wss://localhost/" if kwargs.get("ssl") is not None else "ws://localhost/"
    return connect(uri, unix=True, path=path, **kwargs)
