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
from collections.abc import Sequence
from typing import Any, Literal

from .. import defaults
from ..exceptions import InvalidMessage, InvalidProxyMessage, ProxyError
from ..protocol.connection import Side
from ..protocol.deflate import DeflateSettings, enable_client_deflate
from ..protocol.extensions import ClientExtensionFactory
from ..protocol.handshake import (
    DEFAULT,
    ClientHandshake,
    DefaultType,
    Headers,
    HeadersLike,
    ResponseParser,
    WebSocketURI,
    parse_uri,
)
from ..protocol.proxy import ConnectParser, Proxy, connect_request, get_proxy, parse_proxy
from ..typing import LoggerLike, Origin, Subprotocol
from .connection import Connection, MaxQueue, MaxSize, read_http, validate_options
from .utils import Deadline

__all__ = ["ClientConnection", "connect", "unix_connect"]


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
        max_queue: MaxQueue = defaults.MAX_QUEUE,
        logger: LoggerLike | None = None,
    ) -> None:
        super().__init__(
            sock,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=max_size,
            max_queue=max_queue,
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
    max_queue: MaxQueue = defaults.MAX_QUEUE,
    # Logging
    logger: LoggerLike | None = None,
    # Customization
    create_connection: type[ClientConnection] | None = None,
    **kwargs: Any,
) -> ClientConnection:
    """Connect to the WebSocket server at ``uri`` and return a :class:`ClientConnection`.

    Use it as a context manager to close the connection on exit::

        with connect("ws://localhost:8765") as websocket:
            ...

    :param uri: ``ws://`` or ``wss://`` URI of the server; user information
        (``ws://user:pass@host/``) becomes ``Authorization: Basic``.
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
    :param max_queue: frames received and not read yet above which reading
        pauses; reading resumes at a quarter of it; or ``(high, low)``;
        ``None`` disables flow control.
    :param logger: logger of this connection (``wsharbor.client`` by default).
    :param create_connection: a :class:`ClientConnection` subclass to create.

    Other keyword arguments go to :func:`socket.create_connection`.

    Raises :exc:`~wsharbor.exceptions.InvalidURI` for a bad ``uri``,
    :exc:`OSError` when the TCP connection fails,
    :exc:`~wsharbor.exceptions.InvalidHandshake` when the opening handshake
    fails, and :exc:`TimeoutError` after ``open_timeout``.
    """
    unix: bool = kwargs.pop("unix", False)
    path: str | None = kwargs.pop("path", None)

    ws_uri = parse_uri(uri)
    if not ws_uri.secure and ssl is not None:
        raise ValueError("ssl argument is incompatible with a ws:// URI")
    if unix:
        if path is None and sock is None:
            raise ValueError("missing path argument")
        if path is not None and sock is not None:
            raise ValueError("path is incompatible with sock")
    if logger is None:
        logger = logging.getLogger("wsharbor.client")
    if create_connection is None:
        create_connection = ClientConnection
    if unix or sock is not None:
        proxy = None
    if proxy is True:
        proxy = get_proxy(ws_uri)
    parsed_proxy = None if proxy is None else parse_proxy(proxy)
    if parsed_proxy is not None and parsed_proxy.scheme == "https" and ws_uri.secure:
        raise NotImplementedError(
            "wss:// through an https:// proxy (TLS in TLS) isn't supported yet; "
            "use an http:// proxy or proxy=None"
        )

    # Built first: bad arguments fail before anything is connected.
    handshake = ClientHandshake.from_uri(
        ws_uri,
        origin=origin,
        subprotocols=subprotocols,
        extensions=_extensions(extensions, compression),
        additional_headers=additional_headers,
        user_agent_header=user_agent_header,
    )
    user_agent = handshake.request.headers.get("User-Agent")
    validate_options(
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        max_size=max_size,
        max_queue=max_queue,
    )

    # One time budget for TCP, TLS and the opening handshake.
    deadline = Deadline(open_timeout)
    try:
        if sock is None:
            if unix:
                assert path is not None
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(deadline.timeout())
                sock.connect(path)
            elif parsed_proxy is not None:
                sock = _connect_proxy(
                    parsed_proxy,
                    ws_uri,
                    deadline,
                    user_agent=user_agent,
                    ssl=proxy_ssl,
                    server_hostname=proxy_server_hostname,
                    **kwargs,
                )
            else:
                kwargs.setdefault("timeout", deadline.timeout())
                sock = socket.create_connection((ws_uri.host, ws_uri.port), **kwargs)
            sock.settimeout(None)

        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Small frames go out at once (no Nagle delay).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)

        if ws_uri.secure:
            if ssl is None:
                ssl = ssl_module.create_default_context()
            if server_hostname is None:
                server_hostname = ws_uri.host
            sock.settimeout(deadline.timeout())
            sock = ssl.wrap_socket(sock, server_hostname=server_hostname)
            sock.settimeout(None)

        connection = create_connection(
            sock,
            handshake,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=max_size,
            max_queue=max_queue,
            logger=logger,
        )
    except BaseException:
        if sock is not None:
            sock.close()
        raise

    try:
        connection.handshake(deadline.timeout())
    except BaseException:
        connection._close_socket()
        raise
    connection._start_keepalive()
    return connection


def unix_connect(
    path: str | None = None,
    uri: str | None = None,
    **kwargs: Any,
) -> ClientConnection:
    """Like :func:`connect`, to a server listening on the Unix socket at ``path``.

    ``uri`` defaults to ``ws://localhost/``, or ``wss://localhost/`` when
    ``ssl`` is given.
    """
    if uri is None:
        uri = "ws://localhost/" if kwargs.get("ssl") is None else "wss://localhost/"
    return connect(uri=uri, unix=True, path=path, **kwargs)


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
