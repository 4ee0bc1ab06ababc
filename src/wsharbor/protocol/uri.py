"""WebSocket URIs: ``ws://`` and ``wss://`` (RFC 6455 section 3).

Sans-I/O: a string in, a :class:`WebSocketURI` out, with what the client needs to
open the connection (host, port, TLS or not) and to write its upgrade request (the
Host header, the resource name, the credentials for ``Authorization: Basic``).

:func:`parse_uri` raises :exc:`~wsharbor.exceptions.InvalidURI` and nothing else.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from ..exceptions import InvalidURI

__all__ = ["WebSocketURI", "parse_uri"]


@dataclass(frozen=True, slots=True)
class WebSocketURI:
    """A parsed ws:// or wss:// URI (RFC 6455 section 3).

    ``secure`` is true for ``wss``; ``host`` is lowercase, IDNA-encoded if it was not
    ASCII, without the brackets of an IPv6 literal; ``port`` is always set (80 or 443
    by default); ``path`` is the resource name, path and query, percent-encoded;
    ``user_info`` is ``(username, password)`` when the URI carries both.
    """

    secure: bool
    host: str
    port: int
    path: str
    user_info: tuple[str, str] | None = None

    @property
    def host_header(self) -> str:
        """Value of the Host header: IPv6 literals bracketed, port if not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == (443 if self.secure else 80):
            return host
        return f"{host}:{self.port}"


# RFC 3986 section 2: reserved and unreserved characters stay as they are, and so
# does "%" (percent-encoding is kept raw); anything else is percent-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
# RFC 3986 section 3.2.2: a host has no control character and no space (nor would
# the Host header accept a control character).
_INVALID_IN_HOST_RE = re.compile(r"[\x00-\x20\x7f]")


def parse_uri(uri: str) -> WebSocketURI:
    """Parse a WebSocket URI (RFC 6455 section 3)::

        ws-URI = "ws:" "//" host [ ":" port ] path [ "?" query ]
        wss-URI = "wss:" "//" host [ ":" port ] path [ "?" query ]

    Raises :exc:`~wsharbor.exceptions.InvalidURI` for another scheme, a fragment,
    a missing host, a control character or a space in the host, or an invalid port.
    """
    try:
        parsed = urllib.parse.urlsplit(uri)
    except ValueError as exc:
        raise InvalidURI(uri, str(exc)) from None
    if parsed.scheme not in ("ws", "wss"):
        raise InvalidURI(uri, "scheme isn't ws or wss")
    # "Fragment identifiers are meaningless in the context of WebSocket URIs and
    # MUST NOT be used on these URIs."
    if "#" in uri:
        raise InvalidURI(uri, "fragment identifiers aren't allowed")
    if not parsed.hostname:
        raise InvalidURI(uri, "hostname isn't provided")
    secure = parsed.scheme == "wss"
    try:
        port = parsed.port
    except ValueError:
        raise InvalidURI(uri, "invalid port") from None
    if port is None:
        port = 443 if secure else 80
    host = parsed.hostname
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidURI(uri, "invalid internationalized hostname") from None
    if _INVALID_IN_HOST_RE.search(host):
        raise InvalidURI(uri, "invalid character in hostname")
    path = urllib.parse.quote(parsed.path or "/", safe=_PATH_SAFE)
    if parsed.query:
        path += "?" + urllib.parse.quote(parsed.query, safe=_QUERY_SAFE)
    user_info = None
    if parsed.username is not None:
        if parsed.password is None:
            raise InvalidURI(uri, "username provided without password")
        user_info = (
            urllib.parse.unquote(parsed.username),
            urllib.parse.unquote(parsed.password),
        )
    return WebSocketURI(secure, host, port, path, user_info)
