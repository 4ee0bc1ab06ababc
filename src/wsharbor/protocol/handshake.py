"""The opening handshake of RFC 6455 section 4: the rules of both sides.

Sans-I/O: a parsed request or response in, a response or a verdict out. Nothing here
reads or writes a socket, and nothing here parses HTTP (that is :mod:`.http11`).

Theory of operation
-------------------

Server side::

    parser = RequestParser()
    request = parser.feed(data)          # None until the header block is complete
    handshake = ServerHandshake(origins=[...], subprotocols=[...], extensions=[...])
    try:
        accepted = handshake.accept(request)   # RFC 6455 section 4.2.1 and 4.2.2
    except InvalidHandshake as exc:
        send(handshake.reject(exc).serialize())   # 400, 403, 405, 426, ...
    else:
        send(accepted.response.serialize())       # 101 Switching Protocols
        start_connection(parser.leftover)          # frames pipelined after the request

Client side::

    handshake = ClientHandshake(host="example.com", path="/chat")
    send(handshake.request.serialize())
    parser = ResponseParser()
    response = parser.feed(data)                 # None until complete
    accepted = handshake.process_response(response)   # RFC 6455 section 4.1 and 4.2.2

Each side checks the rules of RFC 6455 section 4.1 (client) or 4.2.1 (server) in
the order the RFC lists them (but for the server's extensions, item 9, negotiated
before the subprotocol, item 8) and raises the
:exc:`~wsharbor.exceptions.InvalidHandshake` child of the first rule broken. That
exception carries the HTTP status of the answer, which :meth:`ServerHandshake.reject`
and :func:`error_response` build: one line of plain text saying why.

The server side is the hot path of a reconnect storm, so :meth:`ServerHandshake.accept`
reads the request's fields by interned lowercase names (``Headers._get_all``),
recognizes the usual single-token ``Upgrade`` and ``Connection`` values before
splitting lists (:func:`.headers.has_token`), decodes the key with
``binascii`` directly, and builds the 101 response from fields it knows valid
without checking them again, packed as a connection keeps them
(``Headers._packed``). With the C accelerator, the checks of the usual request
(items 1 to 6 of section 4.2.1, one field each) take one C call that also computes
Sec-WebSocket-Accept (``_speedups.accept_upgrade``); every other request, valid or
not, goes through these checks in Python, which raise the exact error. Origin,
extensions and the subprotocol are negotiated in Python either way.

Where the rest lives
--------------------

- :mod:`.http11`: :class:`~.http11.Request`, :class:`~.http11.Response` and their
  parsers, :class:`~.http11.RequestParser` and :class:`~.http11.ResponseParser`
  (HTTP/1.1 on httptools, the size limits, ``leftover``);
- :mod:`.datastructures`: :class:`~.datastructures.Headers`;
- :mod:`.headers`: the grammar of header values (Sec-WebSocket-Extensions,
  Sec-WebSocket-Protocol, token lists);
- :mod:`.uri`: ``ws://`` and ``wss://`` URIs;
- :mod:`.extensions` and :mod:`.deflate`: what an extension negotiates.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from ..exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidMethod,
    InvalidOrigin,
    InvalidStatus,
    InvalidUpgrade,
    InvalidVersion,
    NegotiationError,
)
from ..typing import ExtensionName, ExtensionParameter, Subprotocol
from ..version import __version__
from .datastructures import Headers, HeadersLike, check_field
from .extensions import ClientExtensionFactory, Extension, ServerExtensionFactory
from .frames import SPEEDUPS
from .headers import (
    has_token,
    lowercase_items,
    parse_extension_header,
    parse_subprotocol_header,
    serialize_extension_header,
    serialize_subprotocol_header,
)
from .http11 import Request, Response
from .uri import WebSocketURI, parse_uri

__all__ = [
    "DEFAULT",
    "GUID",
    "Accepted",
    "ClientHandshake",
    "DefaultType",
    "ServerHandshake",
    "accept_key",
    "error_response",
]

#: The GUID of RFC 6455 section 1.3, appended to Sec-WebSocket-Key.
GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


#: Default value of ``server_header`` and ``user_agent_header``: ``wsharbor/<version>``.
DEFAULT: Final = _Default.DEFAULT
#: The type of :data:`DEFAULT`, for annotations: ``str | DefaultType | None``.
DefaultType: TypeAlias = Literal[_Default.DEFAULT]


def _product(value: str | Literal[_Default.DEFAULT] | None) -> str | None:
    """Resolve ``DEFAULT`` to ``wsharbor/<version>``."""
    if value is not DEFAULT:
        return value
    return f"wsharbor/{__version__}"


# ---------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2, item 5.4).

    base64 of the SHA-1 of the key concatenated with the GUID.
    """
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


# Names of the fields of the upgrade request, interned lowercase as in Headers._keys.
_HOST: Final = sys.intern("host")
_SEC_WEBSOCKET_KEY: Final = sys.intern("sec-websocket-key")
_SEC_WEBSOCKET_VERSION: Final = sys.intern("sec-websocket-version")
_ORIGIN: Final = sys.intern("origin")
_UPGRADE: Final = sys.intern("upgrade")
_CONNECTION: Final = sys.intern("connection")
_SEC_WEBSOCKET_EXTENSIONS: Final = sys.intern("sec-websocket-extensions")
_SEC_WEBSOCKET_PROTOCOL: Final = sys.intern("sec-websocket-protocol")
#: The first fields of every 101, packed (Headers.compact's text), up to
#: Sec-WebSocket-Accept's value.
_101_FIELDS: Final = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "

#: The C checks of the usual upgrade request (``_speedups.accept_upgrade``), or None
#: without the accelerator (:data:`.frames.SPEEDUPS` decides, as for the other C
#: routines: ``WSHARBOR_NO_SPEEDUPS=1``, or not built).
_accept_upgrade: Callable[[list[str], list[tuple[str, str]]], str | None] | None
if SPEEDUPS:
    from ._speedups import accept_upgrade as _accept_upgrade
else:  # pragma: no cover - depends on the build
    _accept_upgrade = None


@dataclass(slots=True)
class Accepted:
    """A successful handshake: the 101 response and what was negotiated."""

    response: Response
    subprotocol: Subprotocol | None
    extensions: list[Extension]


def error_response(status: int, text: str, *, server_header: str | None = None) -> Response:
    """A plain-text error response for a failed handshake.

    The body is ``text`` on one line. 426 carries ``Upgrade: websocket`` (RFC
    9110 section 15.5.22: the protocol to switch to) and ``Sec-WebSocket-Version:
    13`` (RFC 6455 section 4.4), 405 carries ``Allow: GET`` (RFC 7231 section
    6.5.5).
    """
    headers = Headers()
    if status == 426:
        headers["Upgrade"] = "websocket"
        headers["Sec-WebSocket-Version"] = "13"
    elif status == 405:
        headers["Allow"] = "GET"
    if server_header is not None:
        headers["Server"] = server_header
    line = " ".join(text.splitlines())
    return Response.text(status, line + "\n", headers)


class ServerHandshake:
    """Server side of the opening handshake (RFC 6455 section 4.2).

    :param origins: allowed values of Origin: strings match exactly, compiled
        regular expressions (``re.compile(...)``) must match the whole value;
        ``None`` in the list allows requests without Origin; ``None`` (the
        default) disables the check.
    :param subprotocols: subprotocols supported, by order of preference.
    :param select_subprotocol: picks the subprotocol among the client's offers
        (in the client's order), or returns ``None`` for none; replaces the default
        choice (the first of ``subprotocols`` the client offered).
    :param extensions: extension factories, tried in order for each offer.
    :param server_header: value of the Server header; ``None`` omits it.
    """

    def __init__(
        self,
        *,
        origins: Sequence[str | re.Pattern[str] | None] | None = None,
        subprotocols: Sequence[Subprotocol] | None = None,
        select_subprotocol: Callable[[Sequence[Subprotocol]], Subprotocol | None] | None = None,
        extensions: Sequence[ServerExtensionFactory] = (),
        server_header: str | Literal[_Default.DEFAULT] | None = DEFAULT,
    ) -> None:
        self.origins = None if origins is None else list(origins)
        # Exact values (and None) are looked up in a set; patterns (compiled
        # with re.compile, as websockets takes them) must match the whole Origin.
        self._exact_origins: frozenset[str | None] = frozenset(
            origin for origin in self.origins or () if not isinstance(origin, re.Pattern)
        )
        self._origin_patterns: tuple[re.Pattern[str], ...] = tuple(
            origin for origin in self.origins or () if isinstance(origin, re.Pattern)
        )
        for origin in self.origins or ():
            if not (origin is None or isinstance(origin, str | re.Pattern)):
                raise TypeError(f"origins must be str, re.Pattern or None, not {origin!r}")
        self.subprotocols = list(subprotocols or ())
        self.select_subprotocol = select_subprotocol
        self.extensions = list(extensions)
        self.server_header = _product(server_header)

    @property
    def server_header(self) -> str | None:
        """Value of the Server header; ``None`` omits it.

        Checked when set, as ``headers["Server"] = value`` checks it (:exc:`ValueError`),
        so that a bad value fails here rather than on every handshake.
        """
        return self._server_header

    @server_header.setter
    def server_header(self, value: str | None) -> None:
        if value is not None:
            check_field("Server", value)
        self._server_header = value

    def accept(self, request: Request) -> Accepted:
        """Check ``request`` and build the 101 response (RFC 6455 section 4.2.1, 4.2.2).

        Raises the :exc:`~wsharbor.exceptions.InvalidHandshake` child of the first
        rule broken, in this order: method (405), Host (400), Upgrade and Connection
        (426), Sec-WebSocket-Key (400), Sec-WebSocket-Version (426), Origin (403),
        extensions (400), subprotocol (400).
        """
        headers = request.headers
        keys = headers._keys
        # Items 1 to 6 of the usual request (one field each) in one pass in C, with
        # Sec-WebSocket-Accept; anything else, valid or not, is None there and is
        # checked in Python, which raises the exact error.
        accept = None
        if _accept_upgrade is not None and keys is not None and request.method == "GET":
            accept = _accept_upgrade(keys, headers._list)
        if accept is None:
            accept = accept_key(self._check_upgrade(request))

        # 4.2.1 item 7 and 10.2: Origin, when the server checks it.
        if self.origins is not None:
            origins = headers._get_all(_ORIGIN)
            if len(origins) > 1:
                raise InvalidHeader("Origin", ", ".join(origins), "more than one")
            origin = origins[0] if origins else None
            if origin not in self._exact_origins and (
                origin is None
                or not any(pattern.fullmatch(origin) for pattern in self._origin_patterns)
            ):
                raise InvalidOrigin(origin)

        # 4.2.1 item 9 and 9.1: extensions.
        extensions, extension_header = self._negotiate_extensions(headers)

        # 4.2.1 item 8 and 4.2.2 item 5.4: subprotocol.
        subprotocol = self._negotiate_subprotocol(headers)

        # 4.2.2 item 5: the 101 response, its fields packed (Headers.compact's
        # text: a connection keeps them so). Every field but the subprotocol is
        # known valid: constant, base64, tokens (serialize_extension_header checks
        # them) or checked when set (server_header); the subprotocol, which may
        # come from select_subprotocol, is checked.
        text = f"{_101_FIELDS}{accept}\r\n"
        if extension_header:
            text += f"Sec-WebSocket-Extensions: {serialize_extension_header(extension_header)}\r\n"
        if subprotocol is not None:
            check_field("Sec-WebSocket-Protocol", subprotocol)  # as headers[...] = checks
            text += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
        if self._server_header is not None:
            text += f"Server: {self._server_header}\r\n"
        response = Response(101, "Switching Protocols", Headers._packed(text))
        return Accepted(response, subprotocol, extensions)

    def _check_upgrade(self, request: Request) -> str:
        """Items 1 to 6 of RFC 6455 section 4.2.1, in Python: the Sec-WebSocket-Key."""
        headers = request.headers

        # 4.2.1 item 1: an HTTP/1.1 or higher GET request.
        if request.method != "GET":
            raise InvalidMethod(f"unsupported HTTP method: {request.method} (expected GET)")

        # 4.2.1 item 2: a Host header field containing the server's authority.
        hosts = headers._get_all(_HOST)
        if not hosts:
            raise InvalidHeader("Host")
        if len(hosts) > 1:
            raise InvalidHeader("Host", ", ".join(hosts), "more than one")
        if not hosts[0]:
            raise InvalidHeader("Host", "")

        # 4.2.1 item 3: an Upgrade header field containing "websocket".
        upgrade = headers._get_all(_UPGRADE)
        if not upgrade:
            raise InvalidUpgrade("Upgrade")
        if not has_token(upgrade, "websocket"):
            raise InvalidUpgrade("Upgrade", ", ".join(upgrade), "expected websocket")

        # 4.2.1 item 4: a Connection header field that includes the token "Upgrade".
        connection = headers._get_all(_CONNECTION)
        if not connection:
            raise InvalidUpgrade("Connection")
        if not has_token(connection, "upgrade"):
            raise InvalidUpgrade("Connection", ", ".join(connection), "expected Upgrade")

        # 4.2.1 item 5: Sec-WebSocket-Key, base64 of 16 bytes.
        keys = headers._get_all(_SEC_WEBSOCKET_KEY)
        if not keys:
            raise InvalidHeader("Sec-WebSocket-Key")
        if len(keys) > 1:
            raise InvalidHeader("Sec-WebSocket-Key", ", ".join(keys), "more than one")
        key = keys[0]
        try:
            # What base64.b64decode(validate=True) does in Python 3.11, without its
            # Python-level wrapper.
            raw_key = binascii.a2b_base64(key.encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError):
            raise InvalidHeader("Sec-WebSocket-Key", key, "not base64") from None
        if len(raw_key) != 16:
            raise InvalidHeader("Sec-WebSocket-Key", key, "expected 16 bytes base64-encoded")

        # 4.2.1 item 6 and 4.4: Sec-WebSocket-Version 13, else 426 with the version.
        versions = headers._get_all(_SEC_WEBSOCKET_VERSION)
        if not versions:
            raise InvalidVersion("Sec-WebSocket-Version")
        if versions != ["13"]:
            raise InvalidVersion("Sec-WebSocket-Version", ", ".join(versions), "expected 13")
        return key

    def _negotiate_extensions(
        self, headers: Headers
    ) -> tuple[list[Extension], list[tuple[ExtensionName, list[ExtensionParameter]]]]:
        """Walk the client's offers in order; the first acceptable offer of a name wins."""
        accepted: list[Extension] = []
        header: list[tuple[ExtensionName, list[ExtensionParameter]]] = []
        if not self.extensions:
            return accepted, header
        values = headers._get_all(_SEC_WEBSOCKET_EXTENSIONS)
        if not values:
            return accepted, header
        offers = parse_extension_header(values)
        for name, params in offers:
            if any(accepted_name == name for accepted_name, _ in header):
                continue
            for factory in self.extensions:
                if factory.name != name:
                    continue
                try:
                    response_params, extension = factory.process_request_params(params, accepted)
                except NegotiationError:
                    continue  # decline this offer with this factory
                accepted.append(extension)
                header.append((name, response_params))
                break
        return accepted, header

    def _negotiate_subprotocol(self, headers: Headers) -> Subprotocol | None:
        values = headers._get_all(_SEC_WEBSOCKET_PROTOCOL)
        if not values:
            return None
        offered = parse_subprotocol_header(values)
        if self.select_subprotocol is not None:
            subprotocol = self.select_subprotocol(offered)
            if subprotocol is not None and subprotocol not in offered:
                raise NegotiationError(
                    f"selected subprotocol {subprotocol} was not offered "
                    f"(offered: {', '.join(offered)})"
                )
            return subprotocol
        if not self.subprotocols:
            return None
        for subprotocol in self.subprotocols:
            if subprotocol in offered:
                return subprotocol
        raise NegotiationError(
            f"no supported subprotocol (offered: {', '.join(offered)}; "
            f"supported: {', '.join(self.subprotocols)})"
        )

    def reject(self, exc: InvalidHandshake) -> Response:
        """The plain-text error response for ``exc``: ``exc.status``, ``str(exc)``."""
        return error_response(exc.status, str(exc), server_header=self.server_header)


# ---------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------


class ClientHandshake:
    """Client side of the opening handshake (RFC 6455 section 4.1).

    :param host: value of the Host header, with the port if not the default
        (see :attr:`WebSocketURI.host_header`).
    :param path: resource name: path and query.
    :param origin: value of the Origin header, if any.
    :param subprotocols: subprotocols offered, by order of preference.
    :param extensions: extension factories, offered in order.
    :param additional_headers: extra request headers.
    :param user_agent_header: value of the User-Agent header; ``None`` omits it.

    :attr:`request` is built at once, with a fresh random key.
    """

    def __init__(
        self,
        *,
        host: str,
        path: str = "/",
        origin: str | None = None,
        subprotocols: Sequence[Subprotocol] | None = None,
        extensions: Sequence[ClientExtensionFactory] = (),
        additional_headers: Headers | HeadersLike | None = None,
        user_agent_header: str | Literal[_Default.DEFAULT] | None = DEFAULT,
    ) -> None:
        self.subprotocols = list(subprotocols or ())
        self.extensions = list(extensions)
        #: The Sec-WebSocket-Key sent: 16 random bytes, base64 (4.1 item 7).
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        headers = Headers()
        headers["Host"] = host
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        headers["Sec-WebSocket-Key"] = self.key
        headers["Sec-WebSocket-Version"] = "13"
        if origin is not None:
            headers["Origin"] = origin
        if self.extensions:
            headers["Sec-WebSocket-Extensions"] = serialize_extension_header(
                [(factory.name, factory.get_request_params()) for factory in self.extensions]
            )
        if self.subprotocols:
            headers["Sec-WebSocket-Protocol"] = serialize_subprotocol_header(self.subprotocols)
        headers.update(additional_headers)
        user_agent = _product(user_agent_header)
        if user_agent is not None and "User-Agent" not in headers:
            headers["User-Agent"] = user_agent
        #: The upgrade request to send.
        self.request = Request(path, headers)

    @classmethod
    def from_uri(
        cls,
        uri: str | WebSocketURI,
        *,
        origin: str | None = None,
        subprotocols: Sequence[Subprotocol] | None = None,
        extensions: Sequence[ClientExtensionFactory] = (),
        additional_headers: Headers | HeadersLike | None = None,
        user_agent_header: str | Literal[_Default.DEFAULT] | None = DEFAULT,
    ) -> ClientHandshake:
        """A handshake for ``uri``; user info becomes ``Authorization: Basic``."""
        wsuri = parse_uri(uri) if isinstance(uri, str) else uri
        headers = Headers(additional_headers)
        if wsuri.user_info is not None and "Authorization" not in headers:
            credentials = ":".join(wsuri.user_info).encode("utf-8")
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        return cls(
            host=wsuri.host_header,
            path=wsuri.path,
            origin=origin,
            subprotocols=subprotocols,
            extensions=extensions,
            additional_headers=headers,
            user_agent_header=user_agent_header,
        )

    def process_response(self, response: Response) -> Accepted:
        """Check the server's response (RFC 6455 section 4.1, client requirements).

        Raises :exc:`~wsharbor.exceptions.InvalidStatus` if it isn't 101,
        :exc:`~wsharbor.exceptions.InvalidUpgrade` for Upgrade or Connection,
        :exc:`~wsharbor.exceptions.InvalidHeader` for Sec-WebSocket-Accept and
        :exc:`~wsharbor.exceptions.NegotiationError` for an extension or a
        subprotocol that was not offered or is unacceptable.
        """
        if response.status != 101:
            raise InvalidStatus(response)
        headers = response.headers

        # "If the response lacks an |Upgrade| header field or the |Upgrade| header
        # field contains a value that is not an ASCII case-insensitive match for
        # the value "websocket", the client MUST _Fail the WebSocket Connection_."
        upgrade = headers.get_all("Upgrade")
        if not upgrade:
            raise InvalidUpgrade("Upgrade")
        if lowercase_items(upgrade) != ["websocket"]:
            raise InvalidUpgrade("Upgrade", ", ".join(upgrade), "expected websocket")

        # "... |Connection| header field doesn't contain a token that is an ASCII
        # case-insensitive match for the value "Upgrade" ..."
        connection = headers.get_all("Connection")
        if not connection:
            raise InvalidUpgrade("Connection")
        if not has_token(connection, "upgrade"):
            raise InvalidUpgrade("Connection", ", ".join(connection), "expected Upgrade")

        accepts = headers.get_all("Sec-WebSocket-Accept")
        if not accepts:
            raise InvalidHeader("Sec-WebSocket-Accept")
        if len(accepts) > 1:
            raise InvalidHeader("Sec-WebSocket-Accept", ", ".join(accepts), "more than one")
        if accepts[0] != accept_key(self.key):
            raise InvalidHeader("Sec-WebSocket-Accept", accepts[0], "doesn't match the key")

        extensions = self._process_extensions(headers)
        subprotocol = self._process_subprotocol(headers)
        return Accepted(response, subprotocol, extensions)

    def _process_extensions(self, headers: Headers) -> list[Extension]:
        # "If the response includes a |Sec-WebSocket-Extensions| header field and
        # this header field indicates the use of an extension that was not present
        # in the client's handshake, the client MUST _Fail the WebSocket Connection_."
        values = headers.get_all("Sec-WebSocket-Extensions")
        accepted: list[Extension] = []
        if not values:
            return accepted
        for name, params in parse_extension_header(values):
            factories = [factory for factory in self.extensions if factory.name == name]
            if not factories:
                raise NegotiationError(f"server accepted extension {name} which wasn't offered")
            error: NegotiationError | None = None
            for factory in factories:
                try:
                    extension = factory.process_response_params(params, accepted)
                except NegotiationError as exc:
                    error = exc
                    continue
                accepted.append(extension)
                break
            else:
                raise NegotiationError(
                    f"server's parameters for extension {name} were rejected: {error}"
                )
        return accepted

    def _process_subprotocol(self, headers: Headers) -> Subprotocol | None:
        values = headers.get_all("Sec-WebSocket-Protocol")
        if not values:
            return None
        subprotocols = parse_subprotocol_header(values)
        if len(subprotocols) > 1:
            raise NegotiationError(
                f"server selected several subprotocols: {', '.join(subprotocols)}"
            )
        subprotocol = subprotocols[0]
        if subprotocol not in self.subprotocols:
            raise NegotiationError(
                f"server selected subprotocol {subprotocol} which wasn't offered"
            )
        return subprotocol
