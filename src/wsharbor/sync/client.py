"""The threaded WebSocket client: :func:`connect` and :class:`ClientConnection`.

For scripts, tests and programs without an event loop; the API is websockets'
``websockets.sync.client``::

    from wsharbor.sync.client import connect

    with connect("ws://localhost:8765") as websocket:
        websocket.send("Hello world!")
        message = websocket.recv()
"""

from __future__ import annotations

import logging
import socket
import ssl as ssl_module
import time
import traceback as traceback_module
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, overload

from .. import defaults
from ..exceptions import (
    InvalidMessage,
    InvalidProxyMessage,
    ProxyError,
    SecurityError,
)
from ..protocol.connection import Side
from ..protocol.datastructures import Headers, HeadersLike
from ..protocol.deflate import DeflateSettings, enable_client_deflate
from ..protocol.extensions import ClientExtensionFactory
from ..protocol.handshake import DEFAULT, ClientHandshake, DefaultType
from ..protocol.http11 import ResponseParser
from ..protocol.proxy import ConnectParser, Proxy, connect_request, get_proxy, parse_proxy
from ..protocol.reconnect import backoff, follow_redirect, process_exception, without_credentials
from ..protocol.reconnect import process_exception as _process_exception
from ..protocol.uri import WebSocketURI, parse_uri
from ..typing import LoggerLike, Origin, Subprotocol
from .connection import Connection, MaxQueue, MaxSize, read_http, validate_options
from .utils import Deadline

__all__ = [
    "ClientConnection",
    "backoff",
    "connect",
    "process_exception",
    "reconnect",
    "unix_connect",
    "unix_reconnect",
]


class ClientConnection(Connection):
    """A connection opened by :func:`connect`: :meth:`recv`, :meth:`send`, iteration.

    Iterating ends normally when the connection closes with 1000, 1001 or no
    code, and raises :exc:`~wsharbor.exceptions.ConnectionClosedError` otherwise.

    :param sock: a socket connected to the server (TLS already done for wss://).
    :param handshake: the client side of the opening handshake, with the request.

    The other arguments are those of :func:`connect`.
    """

    side = Side.CLIENT

    def __init__(
        self,
        sock: socket.socket,
        handshake: ClientHandshake,
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

    def handshake(self, timeout: float | None = None) -> None:
        """Perform the opening handshake (RFC 6455 section 4.1) within ``timeout`` seconds.

        Raises :exc:`~wsharbor.exceptions.InvalidHandshake` (such as
        :exc:`~wsharbor.exceptions.InvalidStatus` when the server doesn't
        answer 101) or :exc:`TimeoutError`.
        """
        deadline = Deadline(timeout)
        self.request = self._handshake.request
        parser = ResponseParser()
        try:
            self.socket.settimeout(deadline.timeout())
            self.socket.sendall(self.request.serialize())
            response = read_http(self.socket, parser.feed, deadline)
        except TimeoutError:
            raise TimeoutError("timed out while waiting for handshake response") from None
        except EOFError as exc:
            raise InvalidMessage("connection closed during the opening handshake") from exc
        finally:
            if self.socket.fileno() != -1:
                self.socket.settimeout(None)
        self.response = response
        accepted = self._handshake.process_response(response)
        self.subprotocol = accepted.subprotocol
        self._open(accepted.extensions, parser.leftover)


def _extensions(
    extensions: Sequence[ClientExtensionFactory] | None,
    compression: str | DeflateSettings | None,
) -> list[ClientExtensionFactory]:
    """The extension factories: ``extensions``, then permessage-deflate unless given there."""
    factories = list(extensions or ())
    deflate = enable_client_deflate(compression)
    if not any(factory.name == "permessage-deflate" for factory in factories):
        factories += deflate
    return factories


class reconnect:  # a class used like a function, as in websockets
    """Like :func:`connect`, and reconnects when used as an iterator.

    ``for websocket in reconnect(uri): ...`` opens a connection for each
    iteration and closes it after. When opening fails with an error that
    retrying may fix (see :func:`process_exception`), it waits
    (``reconnect_delays``, exponential backoff by default) and tries again;
    other errors are raised. ``with reconnect(uri) as websocket:`` opens one
    connection, and :meth:`connect` returns one.

    :param process_exception: ``process_exception(exc)`` returns None when
        ``exc`` is worth retrying, or the exception to raise.
    :param reconnect_delays: returns an iterator of delays in seconds
        (:func:`backoff` by default).

    The other arguments are those of :func:`connect`. Redirects (3xx with
    Location) are followed, up to ``MAX_REDIRECTS``, never from wss:// to
    ws://, dropping credentials when the origin changes.
    """

    def __init__(
        self,
        uri: str,
        *,
        # TCP and TLS
        sock: socket.socket | None = None,
        ssl: ssl_module.SSLContext | None = None,
        server_hostname: str | None = None,
        # WebSocket
        origin: Origin | None = None,
        extensions: Sequence[ClientExtensionFactory] | None = None,
        subprotocols: Sequence[Subprotocol] | None = None,
        compression: str | DeflateSettings | None = "deflate",
        # HTTP
        additional_headers: Headers | HeadersLike | None = None,
        user_agent_header: str | DefaultType | None = DEFAULT,
        proxy: str | Literal[True] | None = True,
        proxy_ssl: ssl_module.SSLContext | None = None,
        proxy_server_hostname: str | None = None,
        process_exception: Callable[[Exception], Exception | None] | None = None,
        # Timeouts
        open_timeout: float | None = defaults.OPEN_TIMEOUT,
        ping_interval: float | None = defaults.PING_INTERVAL,
        ping_timeout: float | None = defaults.PING_TIMEOUT,
        close_timeout: float | None = defaults.CLOSE_TIMEOUT,
        reconnect_delays: Callable[[], Iterator[float]] | None = None,
        # Limits
        max_size: MaxSize = defaults.MAX_SIZE,
        max_fragments: int | None = defaults.MAX_FRAGMENTS,
        max_queue: MaxQueue = defaults.MAX_QUEUE,
        read_limit: int = defaults.READ_LIMIT,
        # Logging
        logger: LoggerLike | None = None,
        # Customization
        create_connection: type[ClientConnection] | None = None,
        **kwargs: Any,
    ) -> None:
        self.uri = uri
        self.ws_uri = parse_uri(uri)
        if not self.ws_uri.secure and ssl is not None:
            raise ValueError("ssl argument is incompatible with a ws:// URI")
        self._unix: bool = kwargs.pop("unix", False)
        self._path: str | None = kwargs.pop("path", None)
        if self._unix:
            if self._path is None and sock is None:
                raise ValueError("missing path argument")
            if self._path is not None and sock is not None:
                raise ValueError("path is incompatible with sock")
        validate_options(
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=max_size,
            max_queue=max_queue,
            max_fragments=max_fragments,
            read_limit=read_limit,
        )
        if self._unix or sock is not None:
            proxy = None
        # Checked now: bad settings fail here, not at the first connection.
        self._extensions = _extensions(extensions, compression)
        if isinstance(proxy, str):
            self._check_proxy(parse_proxy(proxy))
        self.sock = sock
        self.ssl = ssl
        self.server_hostname = server_hostname
        self.origin = origin
        self.subprotocols = subprotocols
        self.additional_headers = additional_headers
        self.user_agent_header = user_agent_header
        self.proxy = proxy
        self.proxy_ssl = proxy_ssl
        self.proxy_server_hostname = proxy_server_hostname
        self.process_exception = process_exception or _process_exception
        self.reconnect_delays = reconnect_delays or backoff
        self.open_timeout = open_timeout
        self.logger: LoggerLike = logger or logging.getLogger("wsharbor.client")
        self.create_connection = create_connection or ClientConnection
        self._connection_options: dict[str, Any] = {
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "close_timeout": close_timeout,
            "max_size": max_size,
            "max_fragments": max_fragments,
            "max_queue": max_queue,
            "read_limit": read_limit,
            "logger": self.logger,
        }
        self._socket_options = kwargs
        self._handshake()  # the request is valid: fail now, not when connecting
        self.connection: ClientConnection | None = None

    def _check_proxy(self, proxy: Proxy) -> None:
        if proxy.scheme == "https" and self.ws_uri.secure:
            raise NotImplementedError(
                "wss:// through an https:// proxy (TLS in TLS) isn't supported yet; "
                "use an http:// proxy or proxy=None"
            )

    def _handshake(self) -> ClientHandshake:
        return ClientHandshake.from_uri(
            self.ws_uri,
            origin=self.origin,
            subprotocols=self.subprotocols,
            extensions=self._extensions,
            additional_headers=self.additional_headers,
            user_agent_header=self.user_agent_header,
        )

    def _open_socket(self, deadline: Deadline, user_agent: str | None) -> socket.socket:
        """A socket connected to the server (or tunnelled through a proxy)."""
        kwargs = dict(self._socket_options)
        if self._unix:
            assert self._path is not None
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(deadline.timeout())
                sock.connect(self._path)
            except BaseException:
                sock.close()
                raise
            return sock
        proxy = get_proxy(self.ws_uri) if self.proxy is True else self.proxy
        if proxy is not None:
            parsed = parse_proxy(proxy)
            self._check_proxy(parsed)
            return _connect_proxy(
                parsed,
                self.ws_uri,
                deadline,
                user_agent=user_agent,
                ssl=self.proxy_ssl,
                server_hostname=self.proxy_server_hostname,
                **kwargs,
            )
        # ``address`` connects elsewhere than the URI's host and port (the Host
        # header and the TLS server name stay those of the URI).
        kwargs.setdefault("address", (self.ws_uri.host, self.ws_uri.port))
        kwargs.setdefault("timeout", deadline.timeout())
        return socket.create_connection(**kwargs)

    def _open_connection(self, deadline: Deadline) -> ClientConnection:
        handshake = self._handshake()
        sock = self.sock
        if sock is None:
            sock = self._open_socket(deadline, handshake.request.headers.get("User-Agent"))
        try:
            sock.settimeout(None)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                # Small frames go out at once (no Nagle delay).
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
            if self.ws_uri.secure:
                ssl = self.ssl or ssl_module.create_default_context()
                sock.settimeout(deadline.timeout())
                sock = ssl.wrap_socket(
                    sock, server_hostname=self.server_hostname or self.ws_uri.host
                )
                sock.settimeout(None)
            connection = self.create_connection(sock, handshake, **self._connection_options)
        except BaseException:
            sock.close()
            raise
        try:
            connection.handshake(deadline.timeout())
        except BaseException:
            connection._close_socket()
            raise
        return connection

    def _redirect(self, exc: Exception) -> Exception | str:
        """The URI to follow if ``exc`` is a redirect, else the exception to raise."""
        target = follow_redirect(
            exc,
            self.uri,
            self.ws_uri,
            preexisting_socket=self.sock is not None,
            unix=self._unix,
            fixed_address=(
                "host and port" if self._socket_options.get("address") is not None else None
            ),
        )
        if isinstance(target, Exception):
            return target
        new_uri, cross_origin = target
        if cross_origin and self.additional_headers is not None:
            self.additional_headers = without_credentials(self.additional_headers)
        return new_uri

    def connect(self) -> ClientConnection:
        """Open a connection, following redirects; see :func:`connect`."""
        # One time budget for TCP, TLS and the opening handshake, redirects included.
        deadline = Deadline(self.open_timeout)
        for _ in range(defaults.MAX_REDIRECTS + 1):
            try:
                connection = self._open_connection(deadline)
            except Exception as exc:
                uri_or_exc = self._redirect(exc)
                if isinstance(uri_or_exc, Exception):
                    if uri_or_exc is exc:
                        raise
                    raise uri_or_exc from exc
                self.logger.info("following redirect to %s", uri_or_exc)
                self.uri = uri_or_exc
                self.ws_uri = parse_uri(uri_or_exc)
                continue
            connection._start_keepalive()
            return connection
        raise SecurityError(f"more than {defaults.MAX_REDIRECTS} redirects")

    # with reconnect(...) as websocket: ...

    def __enter__(self) -> ClientConnection:
        if self.connection is not None:
            raise RuntimeError("connect() isn't reentrant")
        self.connection = self.connect()
        return self.connection.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self.connection is not None
        try:
            self.connection.__exit__(exc_type, exc_value, traceback)
        finally:
            self.connection = None

    # for websocket in reconnect(...): ...

    def __iter__(self) -> Iterator[ClientConnection]:
        delays: Iterator[float] | None = None
        while True:
            try:
                with self as connection:
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
                time.sleep(delay)
            else:
                delays = None  # connected: start the backoff afresh next time


@overload
def connect(uri: str, *, legacy: Literal[False], **kwargs: Any) -> reconnect: ...


@overload
def connect(
    uri: str, *, legacy: Literal[True] | None = None, **kwargs: Any
) -> ClientConnection: ...


def connect(
    uri: str,
    *,
    # TCP and TLS
    sock: socket.socket | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
    # WebSocket
    origin: Origin | None = None,
    extensions: Sequence[ClientExtensionFactory] | None = None,
    subprotocols: Sequence[Subprotocol] | None = None,
    compression: str | DeflateSettings | None = "deflate",
    # HTTP
    additional_headers: Headers | HeadersLike | None = None,
    user_agent_header: str | DefaultType | None = DEFAULT,
    proxy: str | Literal[True] | None = True,
    proxy_ssl: ssl_module.SSLContext | None = None,
    proxy_server_hostname: str | None = None,
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
    create_connection: type[ClientConnection] | None = None,
    # The connect() of websockets 17 returns a reconnect with legacy=False.
    legacy: bool | None = None,
    **kwargs: Any,
) -> ClientConnection | reconnect:
    """Connect to the WebSocket server at ``uri`` and return a :class:`ClientConnection`.

    Use it as a context manager to close the connection on exit::

        with connect("ws://localhost:8765") as websocket:
            ...

    ``legacy=False`` returns a :class:`reconnect` instead (as websockets 17
    does), to iterate on for automatic reconnection. The keyword arguments:

    :param sock: a socket already connected; replaces the host and port of ``uri``.
    :param ssl: TLS settings for ``wss://`` (a default context otherwise).
    :param server_hostname: the host name checked in the TLS handshake, if
        not the host of ``uri``.
    :param origin: value of the Origin header.
    :param extensions: extension factories, offered in order.
    :param subprotocols: subprotocols offered, by order of preference.
    :param compression: ``"deflate"`` offers permessage-deflate with
        :data:`~wsharbor.protocol.deflate.CLIENT_DEFAULTS`; a
        :class:`~wsharbor.protocol.deflate.DeflateSettings` offers those settings;
        ``None`` disables compression.
    :param additional_headers: extra request headers.
    :param user_agent_header: value of User-Agent (``wsharbor/<version>`` by
        default); ``None`` omits it.
    :param proxy: ``True`` uses the proxy configured in the environment
        (``ws_proxy``, ``wss_proxy``, ``socks_proxy``, ``https_proxy``,
        ``http_proxy``, minus ``no_proxy``); a URL such as
        ``http://proxy:3128`` uses that proxy; ``None`` connects directly.
        HTTP(S) proxies tunnel with CONNECT; SOCKS proxies need the
        ``python-socks`` package.
    :param proxy_ssl: TLS settings for an ``https://`` proxy.
    :param proxy_server_hostname: the host name checked in the TLS handshake
        with the proxy.
    :param open_timeout: seconds for the TCP connection, the TLS handshake and
        the opening handshake together; ``None``: no limit.
    :param ping_interval: seconds between keepalive pings; ``None`` disables them.
    :param ping_timeout: seconds to wait for a keepalive pong before failing the
        connection with 1011; ``None``: no limit.
    :param close_timeout: seconds to wait for the closing handshake; ``None``: no limit.
    :param max_size: the largest message received, in bytes (larger closes with
        1009), or ``(message, frame)`` limits; ``None``: no limit.
    :param max_fragments: frames in one message received; more closes with
        1009; ``None``: no limit.
    :param max_queue: frames received and not read yet above which reading
        pauses; reading resumes at a quarter of it; or ``(high, low)``;
        ``None``: no limit in frames.
    :param read_limit: the most bytes one read from the socket takes, and the
        bytes received and not read yet above which reading pauses too
        (resuming at a quarter of it).
    :param logger: logger of this connection (``wsharbor.client`` by default).
    :param create_connection: a :class:`ClientConnection` subclass to create.

    Other keyword arguments go to :func:`socket.create_connection` (such as
    ``address`` to connect elsewhere than the URI's host and port, or
    ``source_address``); an unknown one raises :exc:`TypeError` there.

    Raises :exc:`~wsharbor.exceptions.InvalidURI` for a bad ``uri``,
    :exc:`OSError` when the TCP connection fails,
    :exc:`~wsharbor.exceptions.InvalidHandshake` when the opening handshake
    fails, and :exc:`TimeoutError` after ``open_timeout``.
    """
    connecter = reconnect(
        uri,
        sock=sock,
        ssl=ssl,
        server_hostname=server_hostname,
        origin=origin,
        extensions=extensions,
        subprotocols=subprotocols,
        compression=compression,
        additional_headers=additional_headers,
        user_agent_header=user_agent_header,
        proxy=proxy,
        proxy_ssl=proxy_ssl,
        proxy_server_hostname=proxy_server_hostname,
        open_timeout=open_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        max_size=max_size,
        max_fragments=max_fragments,
        max_queue=max_queue,
        read_limit=read_limit,
        logger=logger,
        create_connection=create_connection,
        **kwargs,
    )
    if legacy is False:
        return connecter
    return connecter.connect()


@overload
def unix_connect(
    path: str | None = None, uri: str | None = None, *, legacy: Literal[False], **kwargs: Any
) -> reconnect: ...


@overload
def unix_connect(
    path: str | None = None,
    uri: str | None = None,
    *,
    legacy: Literal[True] | None = None,
    **kwargs: Any,
) -> ClientConnection: ...


def unix_connect(
    path: str | None = None,
    uri: str | None = None,
    *,
    legacy: bool | None = None,
    **kwargs: Any,
) -> ClientConnection | reconnect:
    """Like :func:`connect`, to a server listening on the Unix socket at ``path``.

    ``uri`` defaults to ``ws://localhost/``, or ``wss://localhost/`` when
    ``ssl`` is given.
    """
    connecter = unix_reconnect(path, uri, **kwargs)
    if legacy is False:
        return connecter
    return connecter.connect()


def unix_reconnect(path: str | None = None, uri: str | None = None, **kwargs: Any) -> reconnect:
    """Like :class:`reconnect`, to a server listening on the Unix socket at ``path``."""
    if uri is None:
        uri = "ws://localhost/" if kwargs.get("ssl") is None else "wss://localhost/"
    return reconnect(uri, unix=True, path=path, **kwargs)


# Proxies.


def _connect_proxy(
    proxy: Proxy,
    ws_uri: WebSocketURI,
    deadline: Deadline,
    *,
    user_agent: str | None,
    ssl: ssl_module.SSLContext | None,
    server_hostname: str | None,
    **kwargs: Any,
) -> socket.socket:
    """A socket tunnelled to the server through ``proxy``."""
    if proxy.scheme.startswith("socks"):
        return _connect_socks_proxy(proxy, ws_uri, deadline, **kwargs)
    if proxy.scheme != "https" and ssl is not None:
        raise ValueError("proxy_ssl argument is incompatible with an http:// proxy")
    kwargs.setdefault("timeout", deadline.timeout())
    sock = socket.create_connection((proxy.host, proxy.port), **kwargs)
    try:
        if proxy.scheme == "https":
            if ssl is None:
                ssl = ssl_module.create_default_context()
            sock.settimeout(deadline.timeout())
            sock = ssl.wrap_socket(sock, server_hostname=server_hostname or proxy.host)
        # RFC 9110 section 9.3.6: ask for a tunnel; any 2xx answer opens it.
        sock.settimeout(deadline.timeout())
        sock.sendall(connect_request(proxy, ws_uri, user_agent))
        parser = ConnectParser()
        try:
            read_http(sock, parser.feed, deadline)
        except TimeoutError:
            raise TimeoutError("timed out while connecting to HTTP proxy") from None
        except EOFError as exc:
            raise InvalidProxyMessage("proxy closed the connection before answering") from exc
        except ProxyError:
            raise
        except InvalidMessage as exc:
            raise InvalidProxyMessage("did not receive a valid HTTP response from proxy") from exc
    except BaseException:
        sock.close()
        raise
    return sock


_SOCKS_TYPES = {"socks5h": "SOCKS5", "socks5": "SOCKS5", "socks4a": "SOCKS4", "socks4": "SOCKS4"}


def _connect_socks_proxy(
    proxy: Proxy, ws_uri: WebSocketURI, deadline: Deadline, **kwargs: Any
) -> socket.socket:
    """A socket tunnelled through a SOCKS proxy, with python-socks."""
    try:
        from python_socks import ProxyType  # type: ignore[import-not-found, unused-ignore]
        from python_socks.sync import (  # type: ignore[import-not-found, unused-ignore]
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
    # socket's name for the local address; python-socks calls it local_addr.
    local_addr = kwargs.pop("source_address", None)
    try:
        sock: socket.socket = socks_proxy.connect(
            ws_uri.host, ws_uri.port, timeout=deadline.timeout(), local_addr=local_addr, **kwargs
        )
    except (OSError, TimeoutError):
        raise
    except Exception as exc:
        raise ProxyError("failed to connect to SOCKS proxy") from exc
    return sock
