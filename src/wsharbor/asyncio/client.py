"""The asyncio WebSocket client: :func:`connect` and :class:`ClientConnection`.

The API of websockets' ``websockets.asyncio.client``: ``await connect(uri)``,
``async with connect(uri) as websocket``, ``async for websocket in connect(uri)``
(reconnecting, with ``process_exception`` and ``reconnect_delays``), redirects,
proxies (HTTP CONNECT, and SOCKS with ``python-socks``) read from the
environment by default.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
import traceback as traceback_module
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, cast

from .. import defaults
from ..exceptions import (
    InvalidHandshake,
    InvalidMessage,
    InvalidProxyMessage,
    ProxyError,
    SecurityError,
)
from ..protocol.connection import Side, WebSocketProtocol
from ..protocol.datastructures import Headers, HeadersLike
from ..protocol.deflate import DeflateSettings, enable_client_deflate
from ..protocol.extensions import ClientExtensionFactory
from ..protocol.handshake import DEFAULT, ClientHandshake, DefaultType
from ..protocol.http11 import ResponseParser
from ..protocol.proxy import ConnectParser, Proxy, connect_request, get_proxy, parse_proxy
from ..protocol.reconnect import backoff, follow_redirect, process_exception, without_credentials
from ..protocol.uri import WebSocketURI, parse_uri
from ..typing import LoggerLike, Origin, Subprotocol
from .connection import Connection, ConnectionOptions, MaxQueue, MaxSize, WriteLimit
from .observer import ConnectionObserver
from .tls import TLS_TRANSPORTS, TLSTransport, TLSTransportName

__all__ = ["ClientConnection", "backoff", "connect", "process_exception", "unix_connect"]


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
        # Kept as long as the connection: packed (Headers.compact), as the server does.
        if self.request is not None:
            self.request.headers.compact()
        response.headers.compact()
        self.protocol = WebSocketProtocol(
            Side.CLIENT,
            extensions=accepted.extensions,
            max_size=self.options.max_size,
            max_fragments=self.options.max_fragments,
            max_frame_size=self.options.max_frame_size,
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
            exc = InvalidMessage("connection closed during the opening handshake")
            # As websockets: process_exception() retries an EOF during the handshake.
            exc.__cause__ = EOFError("connection closed")
            self._handshake_waiter.set_exception(exc)


_default_process_exception = process_exception


def _client_extensions(
    extensions: Sequence[ClientExtensionFactory] | None,
    compression: str | DeflateSettings | None,
) -> list[ClientExtensionFactory]:
    """``extensions`` (custom factories, offered in order), then permessage-deflate
    for ``compression`` unless ``extensions`` has a factory of that name already."""
    factories = list(extensions or ())
    if not any(factory.name == "permessage-deflate" for factory in factories):
        factories += enable_client_deflate(compression)
    return factories


def _jittered_backoff(minimum: float, maximum: float, factor: float) -> Iterator[float]:
    """wsharbor's own schedule (``backoff_min``, ``backoff_max``, ``backoff_factor``):
    full jitter, each delay random in [0, min(minimum * factor**n, maximum)]."""
    import random

    delay = minimum
    while True:
        yield random.uniform(0, delay)
        delay = min(delay * factor, maximum)


class connect:  # used like a function, as in websockets
    """Open a WebSocket connection to ``uri`` (``ws://`` or ``wss://``).

    ``await connect(uri)`` returns a :class:`ClientConnection`; ``async with
    connect(uri) as websocket:`` closes it on exit (with 1011 if leaving on an
    exception); ``async for websocket in connect(uri):`` reconnects: each
    iteration opens a connection and closes it after; an attempt that fails
    with an error ``process_exception`` says is transient (network errors,
    EOF during the handshake, HTTP 500, 502, 503, 504) waits
    (``reconnect_delays``, websockets' :func:`backoff` by default, from
    :mod:`wsharbor.defaults`) and tries again; other errors are raised.

    The options are websockets', with its meanings (see ``docs/asyncio.md``):

    :param origin: the Origin header. :param extensions: extension factories,
        offered before permessage-deflate. :param subprotocols: offered, by
        preference. :param compression: ``"deflate"``, a
        :class:`~wsharbor.protocol.deflate.DeflateSettings` or ``None``.
    :param additional_headers: extra request headers.
    :param user_agent_header: the User-Agent (``wsharbor/<version>`` by
        default); ``None`` omits it.
    :param proxy: ``True`` (the default) uses the proxy configured in the
        environment (``wss_proxy``/``ws_proxy``, ``socks_proxy``,
        ``https_proxy``, ``http_proxy``, minus ``no_proxy``); a URL uses that
        proxy (``http://``, ``https://`` tunnel with CONNECT; ``socks5h://``,
        ``socks5://``, ``socks4a://``, ``socks4://`` need ``python-socks``);
        ``None`` connects directly. ``proxy_ssl`` and
        ``proxy_server_hostname`` are for TLS to an ``https://`` proxy.
    :param process_exception: ``process_exception(exc)`` returns None to retry
        or the exception to raise (:func:`process_exception` by default).
    :param reconnect_delays: returns an iterator of delays in seconds
        (:func:`backoff` by default). ``backoff_min``, ``backoff_max`` and
        ``backoff_factor`` choose wsharbor's earlier full-jitter schedule instead.
    :param max_size: the largest message, or ``(message, frame)``.
    :param max_queue: messages waiting before reading pauses, or ``(high, low)``.
    :param write_limit: the write buffer's high-water mark, or ``(high, low)``.
    :param create_connection: a :class:`ClientConnection` subclass to create,
        called as ``create_connection(options, handshake)``.

    ``wss://`` is done by :class:`~wsharbor.asyncio.tls.TLSTransport`, small per
    connection, on asyncio and uvloop; ``tls_transport="loop"`` uses the event
    loop's own TLS instead.

    ``ssl``, ``server_hostname``, ``host``, ``port``, ``sock``, ``family``,
    ``proto``, ``flags``, ``local_addr``, ``ssl_handshake_timeout``,
    ``ssl_shutdown_timeout``, ``happy_eyeballs_delay`` and ``interleave`` go to
    :meth:`asyncio.loop.create_connection` as in websockets (``host`` and
    ``port`` change where the TCP connection goes, not the Host header); any
    other keyword raises :exc:`TypeError` here.
    """

    def __init__(
        self,
        uri: str,
        *,
        # WebSocket
        origin: Origin | None = None,
        extensions: Sequence[ClientExtensionFactory] | None = None,
        subprotocols: Sequence[Subprotocol] | None = None,
        compression: str | DeflateSettings | None = "deflate",
        # HTTP
        additional_headers: Headers | HeadersLike | None = None,
        user_agent_header: str | DefaultType | None = DEFAULT,
        proxy: str | Literal[True] | None = True,
        process_exception: Callable[[Exception], Exception | None] | None = None,
        # Timeouts
        open_timeout: float | None = defaults.OPEN_TIMEOUT,
        ping_interval: float | None = defaults.PING_INTERVAL,
        ping_timeout: float | None = defaults.PING_TIMEOUT,
        close_timeout: float | None = defaults.CLOSE_TIMEOUT,
        reconnect_delays: Callable[[], Iterator[float]] | None = None,
        backoff_min: float | None = None,
        backoff_max: float | None = None,
        backoff_factor: float | None = None,
        # Limits
        max_size: MaxSize = defaults.MAX_SIZE,
        max_fragments: int | None = defaults.MAX_FRAGMENTS,
        max_queue: MaxQueue = defaults.MAX_QUEUE,
        read_limit: int = defaults.READ_LIMIT,
        write_limit: WriteLimit = defaults.WRITE_LIMIT,
        # Logging and customization
        logger: LoggerLike | None = None,
        observer: ConnectionObserver | None = None,
        create_connection: Callable[..., ClientConnection] | None = None,
        # What websockets passes to loop.create_connection(): named here, so
        # that an option neither library knows is a TypeError at the call.
        ssl: ssl_module.SSLContext | Literal[True] | None = None,
        server_hostname: str | None = None,
        host: str | None = None,
        port: int | None = None,
        sock: socket.socket | None = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        local_addr: tuple[str, int] | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        proxy_ssl: ssl_module.SSLContext | Literal[True] | None = None,
        proxy_server_hostname: str | None = None,
        tls_transport: TLSTransportName = "wsharbor",
        # unix_connect()
        unix: bool = False,
        path: str | None = None,
    ) -> None:
        self.uri = uri
        self.ws_uri = parse_uri(uri)
        if ssl is not None and not self.ws_uri.secure:
            raise ValueError("ssl argument is incompatible with a ws:// URI")
        if tls_transport not in TLS_TRANSPORTS:
            raise ValueError(
                f"tls_transport must be one of {', '.join(TLS_TRANSPORTS)}, got {tls_transport!r}"
            )
        self._tls_transport = tls_transport
        if logger is None:
            logger = logging.getLogger("wsharbor.client")
        self._origin = origin
        self._subprotocols = subprotocols
        self.additional_headers = additional_headers
        self.user_agent_header = user_agent_header
        # Checked now: bad settings fail in the caller's frame.
        self._extensions = _client_extensions(extensions, compression)
        if unix or sock is not None:
            proxy = None
        if isinstance(proxy, str):
            parse_proxy(proxy)
        self.proxy = proxy
        self._proxy_ssl = proxy_ssl
        self._proxy_server_hostname = proxy_server_hostname
        self.process_exception = process_exception or _default_process_exception
        if backoff_min is not None or backoff_max is not None or backoff_factor is not None:
            if reconnect_delays is not None:
                raise ValueError("give reconnect_delays or backoff_min/max/factor, not both")
            minimum = defaults.BACKOFF_MIN_DELAY if backoff_min is None else backoff_min
            maximum = defaults.BACKOFF_MAX_DELAY if backoff_max is None else backoff_max
            factor = defaults.BACKOFF_FACTOR if backoff_factor is None else backoff_factor
            if not 0 < minimum <= maximum or factor < 1:
                raise ValueError("need 0 < backoff_min <= backoff_max and backoff_factor >= 1")

            def jittered() -> Iterator[float]:
                return _jittered_backoff(minimum, maximum, factor)

            reconnect_delays = jittered
        self.reconnect_delays = reconnect_delays or backoff
        self.open_timeout = open_timeout
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
        self.create_connection = create_connection or ClientConnection
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._host = host
        self._port = port
        self._sock = sock
        self._unix = unix
        self._path = path
        self._tcp_options: dict[str, Any] = {
            key: value
            for key, value in (
                ("family", family),
                ("proto", proto),
                ("flags", flags),
                ("local_addr", local_addr),
                ("happy_eyeballs_delay", happy_eyeballs_delay),
                ("interleave", interleave),
            )
            if value
        }
        self._tls_options: dict[str, Any] = {
            key: value
            for key, value in (
                ("ssl_handshake_timeout", ssl_handshake_timeout),
                ("ssl_shutdown_timeout", ssl_shutdown_timeout),
            )
            if value is not None
        }
        # Our TLS transport: the handshake is bounded by open_timeout (the
        # whole of connect() is), the shutdown by close_timeout.
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = (
            close_timeout if ssl_shutdown_timeout is None else ssl_shutdown_timeout
        )
        self.logger = logger
        self._handshake()  # a bad header or subprotocol fails here, not when connecting
        self.connection: ClientConnection | None = None

    def _handshake(self) -> ClientHandshake:
        return ClientHandshake.from_uri(
            self.ws_uri,
            origin=self._origin,
            subprotocols=self._subprotocols,
            extensions=self._extensions,
            additional_headers=self.additional_headers,
            user_agent_header=self.user_agent_header,
        )

    def _ssl_context(self) -> ssl_module.SSLContext | None:
        if not self.ws_uri.secure:
            return None
        if self._ssl is None or self._ssl is True:
            return ssl_module.create_default_context()
        return self._ssl

    async def _open_connection(self) -> ClientConnection:
        """Open the TCP (or Unix) connection, through a proxy if there is one,
        do the TLS handshake for ``wss://``, and start the opening handshake."""
        loop = asyncio.get_running_loop()
        handshake = self._handshake()

        def factory() -> ClientConnection:
            return self.create_connection(self._options, handshake)

        ssl = self._ssl_context()
        tls: dict[str, Any] = {}  # for the loop's TLS
        protocol_factory: Callable[[], asyncio.BaseProtocol] = factory
        waiter: asyncio.Future[None] | None = None
        if ssl is not None and self._tls_transport == "wsharbor":
            # Our TLS transport between a plain transport and the connection;
            # the connection's connection_made() once the TLS handshake is done.
            context = ssl
            waiter = loop.create_future()
            ssl = None

            def protocol_factory() -> TLSTransport:
                return TLSTransport(
                    factory(),
                    context,
                    server_side=False,
                    server_hostname=self._server_hostname or self.ws_uri.host,
                    waiter=waiter,
                    handshake_timeout=self._ssl_handshake_timeout,
                    shutdown_timeout=self._ssl_shutdown_timeout,
                )

        elif ssl is not None:
            tls = {"server_hostname": self._server_hostname or self.ws_uri.host}
            tls.update(self._tls_options)
        transport: asyncio.BaseTransport
        protocol: asyncio.BaseProtocol
        if self._unix:
            transport, protocol = await loop.create_unix_connection(
                protocol_factory, self._path, sock=self._sock, ssl=ssl, **tls
            )
        elif self._sock is not None:
            transport, protocol = await loop.create_connection(
                protocol_factory, sock=self._sock, ssl=ssl, **tls
            )
        elif (proxy := get_proxy(self.ws_uri) if self.proxy is True else self.proxy) is None:
            transport, protocol = await loop.create_connection(
                protocol_factory,
                self._host or self.ws_uri.host,
                self._port or self.ws_uri.port,
                ssl=ssl,
                **tls,
                **self._tcp_options,
            )
        elif (parsed := parse_proxy(proxy)).scheme.startswith("socks"):
            sock = await _connect_socks_proxy(
                parsed, self.ws_uri, local_addr=self._tcp_options.get("local_addr")
            )
            transport, protocol = await loop.create_connection(
                protocol_factory, sock=sock, ssl=ssl, **tls
            )
        else:
            user_agent = handshake.request.headers.get("User-Agent")
            tunnel = await self._connect_http_proxy(parsed, user_agent)
            protocol = protocol_factory()
            tunnel.set_protocol(protocol)
            transport = tunnel
            if ssl is not None:
                try:
                    tls_transport = await loop.start_tls(tunnel, protocol, ssl, **tls)
                except BaseException:
                    tunnel.abort()
                    raise
                assert tls_transport is not None
                transport = tls_transport
            protocol.connection_made(transport)
        if waiter is None:
            return cast(ClientConnection, protocol)
        try:
            await waiter  # the TLS handshake
        except BaseException:
            transport.abort()
            raise
        return cast(ClientConnection, cast(TLSTransport, protocol).get_protocol())

    async def _connect_http_proxy(self, proxy: Proxy, user_agent: str | None) -> asyncio.Transport:
        """A transport tunnelled to the server through an HTTP(S) proxy (RFC 9110
        section 9.3.6: CONNECT, then any 2xx answer opens the tunnel)."""
        proxy_ssl = self._proxy_ssl
        if proxy.scheme == "https":
            if proxy_ssl is None or proxy_ssl is True:
                proxy_ssl = ssl_module.create_default_context()
        elif proxy_ssl is not None:
            raise ValueError("proxy_ssl argument is incompatible with an http:// proxy")
        loop = asyncio.get_running_loop()
        tunnel = _TunnelProtocol(connect_request(proxy, self.ws_uri, user_agent))
        tls: dict[str, Any] = {}
        if proxy_ssl is not None:
            tls["server_hostname"] = self._proxy_server_hostname or proxy.host
        transport, _ = await loop.create_connection(
            lambda: tunnel,
            proxy.host,
            proxy.port,
            ssl=proxy_ssl,
            **tls,
            **self._tcp_options,
        )
        try:
            await tunnel.answer
        except BaseException:
            transport.abort()
            raise
        return transport

    def _redirect(self, exc: Exception) -> Exception | str:
        """The URI to follow if ``exc`` is a redirect, else the exception to raise."""
        target = follow_redirect(
            exc,
            self.uri,
            self.ws_uri,
            preexisting_socket=self._sock is not None,
            unix=self._unix,
            fixed_address=(
                "host or port" if self._host is not None or self._port is not None else None
            ),
        )
        if isinstance(target, Exception):
            return target
        new_uri, cross_origin = target
        if cross_origin and self.additional_headers is not None:
            self.additional_headers = without_credentials(self.additional_headers)
        return new_uri

    async def _create(self) -> ClientConnection:
        """Connect and complete the opening handshake, following redirects, all
        within ``open_timeout``."""
        try:
            async with asyncio.timeout(self.open_timeout):
                for _ in range(defaults.MAX_REDIRECTS):
                    connection = await self._open_connection()
                    try:
                        await connection._handshake_waiter
                    except asyncio.CancelledError:
                        connection.abort()
                        raise
                    except Exception as exc:
                        connection.abort()
                        uri_or_exc = self._redirect(exc)
                        if isinstance(uri_or_exc, Exception):
                            if uri_or_exc is exc:
                                raise
                            raise uri_or_exc from exc
                        self.logger.info("following redirect to %s", uri_or_exc)
                        self.uri = uri_or_exc
                        self.ws_uri = parse_uri(uri_or_exc)
                        continue
                    return connection
                raise SecurityError(f"more than {defaults.MAX_REDIRECTS} redirects")
        except TimeoutError as exc:
            raise TimeoutError("timed out during opening handshake") from exc

    def __await__(self) -> Any:
        return self._create().__await__()

    async def __aenter__(self) -> ClientConnection:
        if self.connection is not None:
            raise RuntimeError("connect() isn't reentrant")
        self.connection = await self._create()
        return self.connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.connection is not None
        try:
            await self.connection.__aexit__(exc_type, exc_value, traceback)
        finally:
            self.connection = None

    async def __aiter__(self) -> AsyncIterator[ClientConnection]:
        delays: Iterator[float] | None = None
        while True:
            try:
                async with self as connection:
                    yield connection
            except Exception as exc:
                try:
                    new_exc = self.process_exception(exc)
                except Exception as raised:  # raising instead of returning works too
                    new_exc = raised
                if new_exc is exc:
                    raise
                if new_exc is not None:
                    raise new_exc from exc
                if delays is None:
                    delays = self.reconnect_delays()
                delay = next(delays)
                self.logger.info(
                    "connect failed; reconnecting in %.1f seconds: %s",
                    delay,
                    traceback_module.format_exception_only(exc)[0].strip(),
                )
                await asyncio.sleep(delay)
            else:
                delays = None  # connected: start the backoff afresh next time


def unix_connect(path: str | None = None, uri: str | None = None, **kwargs: Any) -> connect:
    """Like :func:`connect`, over the Unix socket at ``path``; ``uri`` defaults to
    ``ws://localhost/`` (``wss://localhost/`` with ``ssl``)."""
    if uri is None:
        uri = "wss://localhost/" if kwargs.get("ssl") is not None else "ws://localhost/"
    return connect(uri, unix=True, path=path, **kwargs)


# Proxies.


class _TunnelProtocol(asyncio.Protocol):
    """Sends a CONNECT request to a proxy and reads its answer (``answer``)."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.parser = ConnectParser()
        self.answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        try:
            response = self.parser.feed(data)
        except ProxyError as exc:
            self.answer.set_exception(exc)
        except InvalidHandshake as exc:
            error = InvalidProxyMessage("did not receive a valid HTTP response from proxy")
            error.__cause__ = exc
            self.answer.set_exception(error)
        else:
            if response is not None:
                self.answer.set_result(None)

    def eof_received(self) -> bool | None:
        self.connection_lost(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            error = InvalidProxyMessage("proxy closed the connection before answering")
            error.__cause__ = exc or EOFError("connection closed")
            self.answer.set_exception(error)


_SOCKS_TYPES = {"socks5h": "SOCKS5", "socks5": "SOCKS5", "socks4a": "SOCKS4", "socks4": "SOCKS4"}


async def _connect_socks_proxy(
    proxy: Proxy, ws_uri: WebSocketURI, *, local_addr: tuple[str, int] | None = None
) -> socket.socket:
    """A socket tunnelled to the server through a SOCKS proxy, with python-socks."""
    try:
        from python_socks import ProxyType  # type: ignore[import-not-found, unused-ignore]
        from python_socks.async_.asyncio import (  # type: ignore[import-not-found, unused-ignore]
            Proxy as SocksProxy,
        )
    except ImportError:
        raise ImportError("connecting through a SOCKS proxy requires python-socks") from None
    socks_proxy = SocksProxy(
        getattr(ProxyType, _SOCKS_TYPES[proxy.scheme]),
        proxy.host,
        proxy.port,
        proxy.username,
        proxy.password,
        # socks5h and socks4a: the proxy resolves the server's name.
        proxy.scheme in ("socks5h", "socks4a"),
    )
    try:
        sock: socket.socket = await socks_proxy.connect(
            ws_uri.host, ws_uri.port, local_addr=local_addr
        )
    except OSError:
        raise
    except Exception as exc:
        # python-socks' ProxyError, ProxyConnectionError, ProxyTimeoutError...
        raise ProxyError("failed to connect to SOCKS proxy") from exc
    return sock
