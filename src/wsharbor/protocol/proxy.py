"""Connecting through a proxy, without I/O: which proxy, and the HTTP CONNECT exchange.

RFC 6455 section 4.1 ("Proxy Usage"): a client configured to use a proxy
connects to it and asks it for a tunnel to the server's host and port with an
HTTP ``CONNECT`` request (RFC 9110 section 9.3.6); once the proxy answers 2xx,
the WebSocket opening handshake (and TLS for ``wss://``) runs through the tunnel.

- :func:`parse_proxy` checks a proxy URL (``http://``, ``https://``,
  ``socks5h://``, ``socks5://``, ``socks4a://``, ``socks4://``);
- :func:`get_proxy` reads the proxy configured for a WebSocket URI from the
  environment (``ws_proxy``/``wss_proxy``, ``socks_proxy``, ``https_proxy``,
  ``http_proxy`` and ``no_proxy``, as websockets does);
- :func:`connect_request` builds the CONNECT request and :class:`ConnectParser`
  reads the proxy's answer.
"""

from __future__ import annotations

import base64
import urllib.parse
from dataclasses import dataclass

from ..exceptions import InvalidProxy, InvalidProxyStatus
from .datastructures import Headers
from .http11 import Request, Response, ResponseParser
from .uri import WebSocketURI

__all__ = ["ConnectParser", "Proxy", "connect_request", "get_proxy", "parse_proxy"]

_SCHEMES = ("socks5h", "socks5", "socks4a", "socks4", "https", "http")


@dataclass(frozen=True, slots=True)
class Proxy:
    """A parsed proxy URL; ``port`` is always set (80 for http, 443 for https)."""

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None


def parse_proxy(proxy: str) -> Proxy:
    """Check and parse a proxy URL; raise :exc:`~wsharbor.exceptions.InvalidProxy`."""
    parsed = urllib.parse.urlsplit(proxy)
    if parsed.scheme not in _SCHEMES:
        raise InvalidProxy(proxy, f"scheme {parsed.scheme} isn't supported")
    if not parsed.hostname:
        raise InvalidProxy(proxy, "hostname isn't provided")
    if parsed.path not in ("", "/"):
        raise InvalidProxy(proxy, "path is meaningless")
    if parsed.query:
        raise InvalidProxy(proxy, "query is meaningless")
    if parsed.fragment:
        raise InvalidProxy(proxy, "fragment is meaningless")
    try:
        port = parsed.port
    except ValueError:
        raise InvalidProxy(proxy, "invalid port") from None
    if port is None:
        port = 443 if parsed.scheme == "https" else 80
    host = parsed.hostname
    if not host.isascii():
        host = host.encode("idna").decode("ascii")
    username = parsed.username
    password = parsed.password
    if username is not None and password is None:
        raise InvalidProxy(proxy, "username provided without password")
    if username is not None:
        username = urllib.parse.unquote(username)
    if password is not None:
        password = urllib.parse.unquote(password)
    return Proxy(parsed.scheme, host, port, username, password)


def get_proxy(uri: WebSocketURI) -> str | None:
    """The proxy configured for ``uri`` in the environment (or the OS), or None.

    ``no_proxy`` is honoured. A SOCKS proxy is preferred, then the one for
    HTTPS, then the one for HTTP (RFC 6455 section 4.1 names SOCKS and HTTPS
    proxies); ``ws_proxy``/``wss_proxy`` come first of all.
    """
    # Imported here: urllib.request loads the http client and ssl modules.
    import urllib.request

    if urllib.request.proxy_bypass(f"{uri.host}:{uri.port}"):
        return None
    proxies = urllib.request.getproxies()
    schemes = ("wss", "socks", "https") if uri.secure else ("ws", "socks", "https", "http")
    for scheme in schemes:
        proxy = proxies.get(scheme)
        if proxy is not None:
            # The OS may declare a SOCKS proxy as {"socks": "http://host:port"}.
            if scheme == "socks" and proxy.startswith("http://"):
                proxy = "socks5h://" + proxy[len("http://") :]
            return proxy
    return None


def _authority(uri: WebSocketURI) -> str:
    host = f"[{uri.host}]" if ":" in uri.host else uri.host
    return f"{host}:{uri.port}"


def connect_request(proxy: Proxy, uri: WebSocketURI, user_agent: str | None = None) -> bytes:
    """The ``CONNECT host:port HTTP/1.1`` request asking ``proxy`` for a tunnel to ``uri``.

    Credentials in the proxy URL become ``Proxy-Authorization: Basic``
    (RFC 9110 section 11.7.2, RFC 7617).
    """
    authority = _authority(uri)
    headers = Headers()
    headers["Host"] = authority
    if user_agent is not None:
        headers["User-Agent"] = user_agent
    if proxy.username is not None and proxy.password is not None:
        credentials = f"{proxy.username}:{proxy.password}".encode()
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(credentials).decode()
    return Request(authority, headers, method="CONNECT").serialize()


class ConnectParser:
    """Reads the proxy's answer to a CONNECT request.

    :meth:`feed` returns the :class:`Response` once complete, else ``None``, and
    raises :exc:`~wsharbor.exceptions.InvalidProxyStatus` unless it is 2xx, or
    what :class:`ResponseParser` raises for malformed HTTP. Proxies often answer
    in HTTP/1.0 (``HTTP/1.0 200 Connection established``), which the WebSocket
    response parser refuses: the version is read as 1.1, the only difference
    that matters here being none (a 2xx answer to CONNECT has no body, RFC 9110
    section 9.3.6).
    """

    def __init__(self) -> None:
        self._parser = ResponseParser()
        self._head: bytes | None = b""  # the start of the status line, until 9 bytes

    def feed(self, data: bytes) -> Response | None:
        if self._head is not None:
            self._head += data
            if len(self._head) < len(b"HTTP/1.0 "):
                return None
            data, self._head = self._head, None
            if data.startswith(b"HTTP/1.0 "):
                data = b"HTTP/1.1 " + data[len(b"HTTP/1.0 ") :]
        response = self._parser.feed(data)
        if response is None:
            return None
        if not 200 <= response.status < 300:
            raise InvalidProxyStatus(response)
        return response
