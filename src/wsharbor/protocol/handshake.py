"""The opening handshake of RFC 6455 section 4: HTTP/1.1 upgrade request and response.

Sans-I/O: bytes in, objects out. Nothing here reads or writes a socket.

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

HTTP parsing
------------

The HTTP/1.1 grammar (RFC 7230 section 3) is checked by **httptools**, the Python
binding of llhttp, the parser of Node.js. It was chosen for speed: in a reconnect
storm (every client of a restarted worker reconnecting within seconds) parsing
handshakes is the hot path, and llhttp parses a header block in C without creating
a Python object per byte or per line.

httptools buffers header names and values internally, so it cannot by itself stop
a peer streaming an endless header. The parsers here therefore split the input into
lines first (``bytes.find``, in C too) and enforce every size limit on raw bytes as
they arrive, before llhttp sees them; llhttp only ever receives complete lines. The
same split finds the end of the header block, so the bytes after it (WebSocket
frames sent right behind the request, or behind the 101 response) are kept in
``leftover`` and never lost. Feeding input whole or one byte at a time gives the
same result and the same error, except for a request that breaks both a size limit
and the HTTP grammar: which of the two is reported depends on where the input was
cut (whole, every line is measured before llhttp parses any; byte by byte, llhttp
parses each line as it completes).

The usual case, a whole header block in the first bytes received, takes a shorter
way: a few ``bytes.count`` and ``bytes.find`` calls tell whether every line is within
its limit (and no bare LF ends one), and llhttp gets the block at once. When any
check fails the line by line path runs instead and raises the exact error.

Limits answer 431 (:class:`~wsharbor.exceptions.HeadersTooLarge`), including an
over-long *request line*: 414 URI Too Long would describe the request-target only,
while the limit bounds the whole line (method, target and version), and the error
tree maps every size limit of the header block to one exception and one status.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import http
import os
import re
import sys
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, Literal, TypeVar

import httptools

from ..exceptions import (
    HeadersTooLarge,
    InvalidHandshake,
    InvalidHeader,
    InvalidHTTPVersion,
    InvalidMessage,
    InvalidMethod,
    InvalidOrigin,
    InvalidState,
    InvalidStatus,
    InvalidUpgrade,
    InvalidURI,
    InvalidVersion,
    NegotiationError,
)
from ..typing import ExtensionName, ExtensionParameter, Subprotocol
from .extensions import ClientExtensionFactory, Extension, ServerExtensionFactory

if TYPE_CHECKING:
    # Only in the type stubs: the base class of both parsers.
    from httptools.parser.parser import HttpParser

__all__ = [
    "DEFAULT",
    "GUID",
    "Accepted",
    "ClientHandshake",
    "Headers",
    "HeadersLike",
    "MultipleValuesError",
    "Request",
    "RequestParser",
    "Response",
    "ResponseParser",
    "ServerHandshake",
    "WebSocketURI",
    "accept_key",
    "error_response",
    "parse_extension_header",
    "parse_subprotocol_header",
    "parse_uri",
    "serialize_extension_header",
    "serialize_subprotocol_header",
]

#: The GUID of RFC 6455 section 1.3, appended to Sec-WebSocket-Key.
GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"

    def __repr__(self) -> str:
        return "DEFAULT"


#: Default value of ``server_header`` and ``user_agent_header``: ``wsharbor/<version>``.
DEFAULT: Final = _Default.DEFAULT


def _product(value: str | Literal[_Default.DEFAULT] | None) -> str | None:
    """Resolve ``DEFAULT`` to ``wsharbor/<version>``."""
    if value is not DEFAULT:
        return value
    # Imported here: wsharbor/__init__.py may import the layers built on this
    # module before it defines __version__.
    from .. import __version__

    return f"wsharbor/{__version__}"


# RFC 7230 section 3.2.6: token = 1*tchar.
_TOKEN_RE = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
# RFC 7230 section 3.2.6: quoted-string, with obs-text.
_QUOTED_STRING_RE = re.compile(
    r'"(?:[\x09\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\x09\x20-\x7e\x80-\xff])*"'
)
_UNQUOTE_RE = re.compile(r"\\([\x09\x20-\x7e\x80-\xff])")
_FORBIDDEN_IN_VALUE_RE = re.compile(r"[\r\n\x00]")

_T = TypeVar("_T")
_M = TypeVar("_M", "Request", "Response")


def _is_token(value: str) -> bool:
    return _TOKEN_RE.fullmatch(value) is not None


def _check_field(name: str, value: str) -> None:
    """Raise :exc:`ValueError` unless ``name: value`` is a field safe to send."""
    if not isinstance(name, str) or not _is_token(name):
        raise ValueError(f"invalid header name: {name!r}")
    if not isinstance(value, str) or _FORBIDDEN_IN_VALUE_RE.search(value):
        raise ValueError(f"invalid header value for {name}: {value!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header value for {name} is not ISO-8859-1: {value!r}") from None


# ---------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------


class MultipleValuesError(KeyError):
    """A header that must appear once has several values."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the argument.
        return str(self.args[0]) if self.args else ""


#: What :class:`Headers` and ``additional_headers`` accept: pairs or a mapping.
HeadersLike = Iterable[tuple[str, str]] | Mapping[str, str]


class Headers:
    """HTTP headers: a case-insensitive, order-preserving multi-dict of ``str`` to ``str``.

    ``headers[name] = value`` *appends* a field (as in websockets); ``del headers[name]``
    removes every field of that name. ``headers[name]`` and :meth:`get` return the
    single value and raise :exc:`MultipleValuesError` when there are several: read
    list-valued headers with :meth:`get_all`.

    Names must be tokens (RFC 7230 section 3.2.6); values must not contain CR, LF or
    NUL and must be encodable in ISO-8859-1, so that a value cannot inject a header
    or a response (response splitting). Both raise :exc:`ValueError`.
    """

    # The fields, and beside them their lowercase names, interned: lookups scan
    # ``_keys`` comparing shared string objects. A request has a dozen fields at
    # most and a server keeps one per open connection: a dict index would cost
    # about 1.5 KiB per connection, the interned names 8 bytes per field.
    __slots__ = ("_keys", "_list")

    def __init__(self, items: Headers | HeadersLike | None = None, **kwargs: str) -> None:
        self._list: list[tuple[str, str]] = []
        self._keys: list[str] = []
        self.update(items, **kwargs)

    @classmethod
    def _from_parser(cls, fields: list[tuple[str, str]]) -> Headers:
        """Headers from fields an HTTP parser already validated (no checks again).

        ``fields`` is taken over, not copied.
        """
        headers = cls.__new__(cls)
        headers._list = fields
        headers._keys = [sys.intern(name.lower()) for name, _ in fields]
        return headers

    @classmethod
    def _trusted(cls, fields: list[tuple[str, str]], keys: list[str]) -> Headers:
        """Headers from fields this library built and knows valid, with their interned
        lowercase names (no checks): the 101 response. Both lists are taken over.
        """
        headers = cls.__new__(cls)
        headers._list = fields
        headers._keys = keys
        return headers

    def _value(self, name: str) -> str | None:
        """The single value of ``name``, ``None`` if absent; raise if there are several."""
        key = name.lower()
        keys = self._keys
        count = keys.count(key)
        if count == 1:
            return self._list[keys.index(key)][1]
        if count == 0:
            return None
        raise MultipleValuesError(f"several values for header {name}")

    # Mapping-like interface.

    def __getitem__(self, name: str) -> str:
        value = self._value(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        _check_field(name, value)
        self._list.append((name, value))
        self._keys.append(sys.intern(name.lower()))

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        kept = [(k, field) for k, field in zip(self._keys, self._list, strict=True) if k != key]
        if len(kept) == len(self._list):
            raise KeyError(name)
        self._keys = [k for k, _ in kept]
        self._list = [field for _, field in kept]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._keys

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for key, (name, _) in zip(self._keys, self._list, strict=True):
            if key not in seen:
                seen.add(key)
                yield name

    def __len__(self) -> int:
        """Number of distinct header names."""
        return len(set(self._keys))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(n.lower(), v) for n, v in self._list] == [(n.lower(), v) for n, v in other._list]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._list!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The single value of ``name``, or ``default`` if absent.

        Raises :exc:`MultipleValuesError` if there are several: an ambiguous header
        is never silently replaced by ``default``.
        """
        value = self._value(name)
        return default if value is None else value

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; an empty list if absent."""
        return self._get_all(name.lower())

    def _get_all(self, key: str) -> list[str]:
        """:meth:`get_all` for a lowercase name (interned: found faster)."""
        keys = self._keys
        # A header is most often absent or once: list.count and list.index run in C.
        count = keys.count(key)
        if count == 0:
            return []
        if count == 1:
            return [self._list[keys.index(key)][1]]
        return [field[1] for k, field in zip(keys, self._list, strict=True) if k == key]

    def items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` field in order."""
        return list(self._list)

    raw_items = items

    def update(self, items: Headers | HeadersLike | None = None, **kwargs: str) -> None:
        """Append fields from ``items`` (headers, a mapping or pairs) and ``kwargs``."""
        pairs: Iterable[tuple[str, str]]
        if items is None:
            pairs = ()
        elif isinstance(items, Headers):
            pairs = items.raw_items()
        elif isinstance(items, Mapping):
            pairs = items.items()
        else:
            pairs = items
        for name, value in pairs:
            self[name] = value
        for name, value in kwargs.items():
            self[name] = value

    def copy(self) -> Headers:
        """A copy, independent of this object."""
        return Headers(self._list)

    def serialize(self) -> bytes:
        """The fields as ``Name: value\\r\\n`` lines (without the blank line)."""
        return "".join([f"{name}: {value}\r\n" for name, value in self._list]).encode("latin-1")


# ---------------------------------------------------------------------------
# Request and response
# ---------------------------------------------------------------------------


_REASON_PHRASE_FORBIDDEN_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_REQUEST_TARGET_RE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class Request:
    """An HTTP/1.1 request: the WebSocket upgrade request or any plain request.

    ``path`` is the request-target as received (percent-encoding kept).
    """

    path: str
    headers: Headers
    method: str = "GET"

    def serialize(self) -> bytes:
        """The request line, the headers and the blank line (RFC 7230 section 3)."""
        if not _is_token(self.method):
            raise ValueError(f"invalid method: {self.method!r}")
        if not _REQUEST_TARGET_RE.fullmatch(self.path):
            raise ValueError(f"invalid request target: {self.path!r}")
        return (
            f"{self.method} {self.path} HTTP/1.1\r\n".encode("ascii")
            + self.headers.serialize()
            + b"\r\n"
        )


def _reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


@dataclass(slots=True)
class Response:
    """An HTTP/1.1 response: 101 Switching Protocols or an error with a body."""

    status: int
    reason_phrase: str
    headers: Headers
    body: bytes = b""

    def serialize(self) -> bytes:
        """The status line, the headers, the blank line and the body."""
        if not 100 <= self.status <= 999:
            raise ValueError(f"invalid status code: {self.status}")
        if _REASON_PHRASE_FORBIDDEN_RE.search(self.reason_phrase):
            raise ValueError(f"invalid reason phrase: {self.reason_phrase!r}")
        return (
            f"HTTP/1.1 {self.status} {self.reason_phrase}\r\n".encode("latin-1")
            + self.headers.serialize()
            + b"\r\n"
            + self.body
        )

    @staticmethod
    def text(
        status: int,
        body_text: str,
        headers: Headers | HeadersLike | None = None,
    ) -> Response:
        """A plain-text response: UTF-8 body, Content-Length, ``Connection: close``.

        ``headers`` are added after Content-Type and Content-Length; a
        Content-Type or Connection given there replaces the default one.
        """
        body = body_text.encode("utf-8")
        extra = Headers(headers)
        response_headers = Headers()
        if "Content-Type" not in extra:
            response_headers["Content-Type"] = "text/plain; charset=utf-8"
        response_headers["Content-Length"] = str(len(body))
        if "Connection" not in extra:
            response_headers["Connection"] = "close"
        for name, value in extra.raw_items():
            if name.lower() != "content-length":
                response_headers[name] = value
        return Response(status, _reason_phrase(status), response_headers, body)


# ---------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------


class _Callbacks:
    """What llhttp reports through httptools; never raises (errors are checked after)."""

    __slots__ = (
        "body",
        "body_limit",
        "fields",
        "headers_complete",
        "message_complete",
        "reason",
        "url",
    )

    def __init__(self, body_limit: int) -> None:
        self.url = b""
        self.reason = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.headers_complete = False
        self.message_complete = False
        self.body = bytearray()
        self.body_limit = body_limit

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_complete = True

    def on_body(self, body: bytes) -> None:
        if self.message_complete:
            # llhttp goes on parsing the bytes after the message as the next one:
            # their body is not this message's.
            return
        room = self.body_limit - len(self.body)
        if room > 0:
            self.body += body[:room]

    def on_message_complete(self) -> None:
        self.message_complete = True


_PROTOCOL_VERSION_RE = re.compile(rb"[A-Za-z]+/[0-9.]+")

# Interned lowercase names, as in Headers._keys.
_CONTENT_LENGTH: Final = sys.intern("content-length")
_TRANSFER_ENCODING: Final = sys.intern("transfer-encoding")


def _httptools_error(exc: Exception) -> Literal["upgrade", "error"]:
    """Classify an exception of ``feed_data``; raise it again if httptools didn't make it.

    The classes are recognized by name, not identity: httptools' compiled parser keeps
    the exception classes of the first import of ``httptools.parser.errors``, and
    tools that purge ``sys.modules`` (seen with pytest-cov) leave
    ``httptools.HttpParserError`` naming another class than the one raised.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "HttpParserUpgrade" in names:
        return "upgrade"
    if "HttpParserError" in names:
        return "error"
    raise exc  # pragma: no cover - the callbacks never raise


class _HTTPParser(Generic[_M]):
    """Common part of :class:`RequestParser` and :class:`ResponseParser`.

    ``_pending`` holds the current incomplete line: every complete line was checked
    against the limits and given to llhttp.
    """

    _kind = "message"

    def __init__(
        self,
        *,
        max_request_line: int,
        max_header_line: int,
        max_headers: int,
        max_headers_size: int,
        body_limit: int = 0,
    ) -> None:
        self.max_request_line = max_request_line
        self.max_header_line = max_header_line
        self.max_headers = max_headers
        self.max_headers_size = max_headers_size
        #: Bytes received after the end of the message; set when it is complete.
        self.leftover = b""
        self._cb = _Callbacks(body_limit)
        self._pending = bytearray()
        self._searched = 0  # bytes of _pending known to hold no LF
        self._lines = 0  # complete lines, including the first line
        self._headers_size = 0  # bytes of complete header lines, CRLF included
        self._in_body = False
        self._done = False
        self._error: InvalidHandshake | None = None
        self._parser: HttpParser
        self._result: _M | None = None

    def feed(self, data: bytes) -> _M | None:
        """Parse ``data``; return the message once it is complete, else ``None``."""
        if self._feed(data):
            return self._result
        return None

    def _complete(self, leftover: bytes) -> bool:
        """Mark the message complete; ``leftover`` are the bytes received after it."""
        self.leftover = leftover
        self._done = True
        self._in_body = False
        return True

    # Hooks.

    def _check_first_line(self, line: bytes) -> None:
        raise NotImplementedError

    def _on_headers_complete(self, rest: bytes) -> bool:
        """Return True if the message is complete (``leftover`` set)."""
        raise NotImplementedError

    def _on_body_data(self, data: bytes) -> bool:
        raise NotImplementedError

    # Driver.

    def _feed(self, data: bytes) -> bool:
        if self._error is not None:
            raise self._error
        if self._done:
            raise InvalidState(f"the HTTP {self._kind} is already complete")
        try:
            if self._in_body:
                return self._on_body_data(data)
            return self._feed_headers(data)
        except InvalidHandshake as exc:
            self._error = exc
            raise

    def _feed_headers(self, data: bytes) -> bool:
        if not self._lines and not self._pending and type(data) is bytes:
            end = data.find(b"\r\n\r\n")
            first_line = self._whole_head(data, end) if end > 0 else None
            if first_line is not None:
                # The whole header block in one piece, and within every limit: check
                # and parse it at once, as the line by line path would.
                self._check_first_line(first_line)
                self._parse(data[: end + 4])
                if not self._cb.headers_complete:  # pragma: no cover - llhttp raised already
                    raise InvalidMessage(f"malformed HTTP {self._kind}: incomplete header block")
                return self._on_headers_complete(data[end + 4 :])
        return self._feed_lines(data)

    def _whole_head(self, data: bytes, end: int) -> bytes | None:
        """The first line of ``data[:end]``, a header block without its final CRLF CRLF,
        if every line passes the size checks of :meth:`_check_line`, else ``None``.

        Never raises: for ``None``, :meth:`_feed_lines` finds the error and raises
        it, so that both paths raise the same error.
        """
        # Every LF ends a CRLF: no bare LF (which ends a line, or the header block,
        # for the line by line path). Then no line but the first can be empty, as
        # CRLF CRLF first appears at ``end``, and each CRLF starts a header line.
        count = data.count(b"\r\n", 0, end)
        if data.count(b"\n", 0, end) != count:
            return None
        first_length = data.find(b"\r\n", 0, end) if count else end
        if not 0 < first_length <= self.max_request_line:
            return None
        if count == 0:
            return data[:end]
        if (
            count > self.max_headers
            # Each header line counts with its CRLF: the head after the first line.
            or end - first_length > self.max_headers_size
        ):
            return None
        # The header lines, without the CRLF before each: if they fit in one header
        # line, each one does.
        if end - first_length - 2 > self.max_header_line and (
            max(map(len, data[first_length + 2 : end].split(b"\r\n"))) > self.max_header_line
        ):
            return None
        return data[:first_length]

    def _feed_lines(self, data: bytes) -> bool:
        buf = self._pending
        buf += data
        start = 0  # start of the current line in buf
        search = self._searched
        end = -1  # end of the header block in buf
        while True:
            nl = buf.find(b"\n", search)
            if nl == -1:
                break
            length = nl - start
            if length > 0 and buf[nl - 1] == 0x0D:
                length -= 1
            self._check_line(buf, start, length, nl + 1 - start)
            start = search = nl + 1
            if length == 0:
                end = start
                break
        self._searched = len(buf) - start if end == -1 else 0
        if start:
            self._parse(bytes(buf[:start]))
        if end == -1:
            del buf[:start]
            self._check_partial_line(len(buf))
            return False
        rest = bytes(buf[end:])
        buf.clear()
        if not self._cb.headers_complete:  # pragma: no cover - llhttp raised already
            raise InvalidMessage(f"malformed HTTP {self._kind}: incomplete header block")
        return self._on_headers_complete(rest)

    def _check_line(self, buf: bytearray, start: int, length: int, size: int) -> None:
        self._lines += 1
        if self._lines == 1:
            if length > self.max_request_line:
                raise HeadersTooLarge(
                    f"{self._first_line_name} too long: over {self.max_request_line} bytes"
                )
            if length == 0:
                raise InvalidMessage(f"malformed HTTP {self._kind}: empty first line")
            self._check_first_line(bytes(buf[start : start + length]))
            return
        if length == 0:  # end of the header block
            return
        if length > self.max_header_line:
            raise HeadersTooLarge(f"header line too long: over {self.max_header_line} bytes")
        if self._lines - 1 > self.max_headers:
            raise HeadersTooLarge(f"too many headers: over {self.max_headers}")
        self._headers_size += size
        if self._headers_size > self.max_headers_size:
            raise HeadersTooLarge(f"headers too large: over {self.max_headers_size} bytes")

    def _check_partial_line(self, length: int) -> None:
        # A trailing CR may be the first half of the CRLF: don't count it yet.
        if self._lines == 0:
            if length - 1 > self.max_request_line:
                raise HeadersTooLarge(
                    f"{self._first_line_name} too long: over {self.max_request_line} bytes"
                )
            return
        if length - 1 > self.max_header_line:
            raise HeadersTooLarge(f"header line too long: over {self.max_header_line} bytes")
        # A lone CR may begin the blank line ending the header block: not a header.
        if self._lines > self.max_headers and length > 0 and self._pending != b"\r":
            raise HeadersTooLarge(f"too many headers: over {self.max_headers}")
        if self._headers_size + length - 1 > self.max_headers_size:
            raise HeadersTooLarge(f"headers too large: over {self.max_headers_size} bytes")

    @property
    def _first_line_name(self) -> str:
        return "request line" if self._kind == "request" else "status line"

    def _check_version(self, version: bytes) -> None:
        if version.startswith(b"HTTP/"):
            if version != b"HTTP/1.1":
                shown = version[:16].decode("latin-1")
                raise InvalidHTTPVersion(f"unsupported HTTP version: {shown} (expected HTTP/1.1)")
        elif _PROTOCOL_VERSION_RE.fullmatch(version):
            # llhttp also parses RTSP and ICE messages.
            shown = version[:16].decode("latin-1")
            raise InvalidMessage(f"malformed HTTP {self._kind}: {shown} isn't HTTP")

    def _parse(self, data: bytes) -> None:
        """Give llhttp bytes; errors after the headers (llhttp pausing) are expected."""
        try:
            self._parser.feed_data(data)
        except Exception as exc:
            # After the header block llhttp stops: HttpParserUpgrade for every
            # upgrade request, checked first as the common case.
            if self._cb.headers_complete:
                return
            if _httptools_error(exc) == "upgrade":
                return  # pragma: no cover - llhttp completes the headers first
            detail = str(exc) or type(exc).__name__
            raise InvalidMessage(f"malformed HTTP {self._kind}: {detail}") from exc

    def _headers(self) -> Headers:
        # llhttp checked that names are tokens and values hold no CR, LF or NUL.
        try:
            return Headers._from_parser(
                [
                    # RFC 7230 section 3.2.4: OWS around the field-value is not part of it.
                    (name.decode("ascii"), value.decode("latin-1").strip(" \t"))
                    for name, value in self._cb.fields
                ]
            )
        except UnicodeDecodeError as exc:  # pragma: no cover - llhttp checks
            raise InvalidMessage(f"malformed HTTP {self._kind}: invalid header") from exc

    def _http_version(self) -> None:
        version = self._parser.get_http_version()
        if version != "1.1":
            raise InvalidHTTPVersion(
                f"unsupported HTTP version: HTTP/{version} (expected HTTP/1.1)"
            )


class RequestParser(_HTTPParser[Request]):
    """Incremental parser of an HTTP/1.1 request header block (RFC 7230 section 3).

    :meth:`feed` returns the :class:`Request` once the blank line ending the headers
    arrived, else ``None``; then :attr:`leftover` holds the bytes received after it.
    Any method and target parse (``GET /healthz`` without Upgrade is a valid request):
    :meth:`ServerHandshake.accept` validates the WebSocket upgrade separately.

    Errors (each raised again by later calls):

    - :exc:`~wsharbor.exceptions.HeadersTooLarge` (431): request line, a header line,
      the header count or the header section size over its limit, detected while the
      bytes arrive;
    - :exc:`~wsharbor.exceptions.InvalidHTTPVersion` (505): not HTTP/1.1;
    - :exc:`~wsharbor.exceptions.InvalidMessage` (400): malformed HTTP, or a request
      body (``Content-Length`` other than 0, or ``Transfer-Encoding``), which has no
      meaning on a handshake.
    """

    _kind = "request"

    def __init__(
        self,
        *,
        max_request_line: int = 8192,
        max_header_line: int = 8192,
        max_headers: int = 128,
        max_headers_size: int = 65536,
    ) -> None:
        super().__init__(
            max_request_line=max_request_line,
            max_header_line=max_header_line,
            max_headers=max_headers,
            max_headers_size=max_headers_size,
        )
        self._request_parser = httptools.HttpRequestParser(self._cb)
        self._parser = self._request_parser

    def _check_first_line(self, line: bytes) -> None:
        # request-line = method SP request-target SP HTTP-version
        self._check_version(line.rpartition(b" ")[2])

    def _on_headers_complete(self, rest: bytes) -> bool:
        self._http_version()
        headers = self._headers()
        try:
            path = self._cb.url.decode("ascii")
            method = self._request_parser.get_method().decode("ascii")
        except UnicodeDecodeError as exc:  # pragma: no cover - llhttp rejects it first
            raise InvalidMessage("malformed HTTP request: non-ASCII request line") from exc
        keys = headers._keys
        if _TRANSFER_ENCODING in keys or (
            _CONTENT_LENGTH in keys
            and any(value != "0" for value in headers.get_all("Content-Length"))
        ):
            raise InvalidMessage("request body not supported")
        self._result = Request(path, headers, method)
        return self._complete(rest)

    def _on_body_data(self, data: bytes) -> bool:  # pragma: no cover - requests have no body
        raise AssertionError("unreachable")


class ResponseParser(_HTTPParser[Response]):
    """Incremental parser of an HTTP/1.1 response (RFC 7230 section 3), for the client.

    :meth:`feed` returns the :class:`Response` once complete, else ``None``.

    - 101: complete at the end of the headers; :attr:`leftover` holds the bytes
      received after them (the first WebSocket frames).
    - Any other status: the body is read when its length is known
      (``Content-Length`` or chunked), up to ``max_body_size`` bytes (a longer body
      is truncated there), so that :exc:`~wsharbor.exceptions.InvalidStatus` can
      carry it; a body delimited by the end of the connection is not read (the
      response has an empty body). :attr:`leftover` is ``b""``: the connection is
      not reused.

    Errors are those of :class:`RequestParser`.
    """

    _kind = "response"

    def __init__(
        self,
        *,
        max_request_line: int = 8192,
        max_header_line: int = 8192,
        max_headers: int = 128,
        max_headers_size: int = 65536,
        max_body_size: int = 1 << 20,
    ) -> None:
        super().__init__(
            max_request_line=max_request_line,
            max_header_line=max_header_line,
            max_headers=max_headers,
            max_headers_size=max_headers_size,
            body_limit=max_body_size,
        )
        self.max_body_size = max_body_size
        self._response_parser = httptools.HttpResponseParser(self._cb)
        self._parser = self._response_parser

    def _check_first_line(self, line: bytes) -> None:
        # status-line = HTTP-version SP status-code SP reason-phrase
        self._check_version(line.partition(b" ")[0])

    def _on_headers_complete(self, rest: bytes) -> bool:
        self._http_version()
        status = self._response_parser.get_status_code()
        reason = self._cb.reason.decode("latin-1")
        self._result = Response(status, reason, self._headers())
        if status == 101:
            return self._complete(rest)
        if self._cb.message_complete:  # no body: 1xx, 204, 304, Content-Length: 0
            return self._complete(b"")
        headers = self._result.headers
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            return self._complete(b"")  # the body ends with the connection
        self._in_body = True
        return self._on_body_data(rest)

    def _on_body_data(self, data: bytes) -> bool:
        if data:
            self._parse_body(data)
        cb = self._cb
        if cb.message_complete or len(cb.body) >= self.max_body_size:
            assert self._result is not None
            self._result.body = bytes(cb.body)
            return self._complete(b"")
        return False

    def _parse_body(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception as exc:
            _httptools_error(exc)
            # Errors on bytes after the end of the body don't matter.
            if not self._cb.message_complete:
                raise InvalidMessage(f"malformed HTTP response body: {exc}") from exc


# ---------------------------------------------------------------------------
# Header values: Sec-WebSocket-Extensions and Sec-WebSocket-Protocol
# ---------------------------------------------------------------------------

ExtensionHeader = list[tuple[ExtensionName, list[ExtensionParameter]]]


def _ows(header: str, pos: int) -> int:
    # OWS = *( SP / HTAB )
    while pos < len(header) and header[pos] in " \t":
        pos += 1
    return pos


def _token(header: str, pos: int, name: str) -> tuple[str, int]:
    match = _TOKEN_RE.match(header, pos)
    if match is None:
        raise InvalidHeader(name, header, f"expected token at {pos}")
    return match.group(), match.end()


def _list(
    parse_item: Callable[[str, int, str], tuple[_T, int]], header: str, name: str
) -> list[_T]:
    """``1#element`` of RFC 7230 section 7: empty elements are ignored, one is needed."""
    items: list[_T] = []
    pos = _ows(header, 0)
    while True:
        # Skip empty elements: "," OWS.
        while pos < len(header) and header[pos] == ",":
            pos = _ows(header, pos + 1)
        if pos == len(header):
            break
        item, pos = parse_item(header, pos, name)
        items.append(item)
        pos = _ows(header, pos)
        if pos == len(header):
            break
        if header[pos] != ",":
            raise InvalidHeader(name, header, f"expected comma at {pos}")
    if not items:
        raise InvalidHeader(name, header, "no value")
    return items


def _extension(
    header: str, pos: int, name: str
) -> tuple[tuple[ExtensionName, list[ExtensionParameter]], int]:
    # extension = extension-token *( ";" extension-param )
    extension_name, pos = _token(header, pos, name)
    params: list[ExtensionParameter] = []
    while True:
        pos = _ows(header, pos)
        if pos == len(header) or header[pos] != ";":
            return (extension_name, params), pos
        pos = _ows(header, pos + 1)
        # extension-param = token [ "=" (token | quoted-string) ]
        param_name, pos = _token(header, pos, name)
        value: str | None = None
        after = _ows(header, pos)
        if after < len(header) and header[after] == "=":
            pos = _ows(header, after + 1)
            if pos < len(header) and header[pos] == '"':
                match = _QUOTED_STRING_RE.match(header, pos)
                if match is None:
                    raise InvalidHeader(name, header, f"invalid quoted string at {pos}")
                value = _UNQUOTE_RE.sub(r"\1", match.group()[1:-1])
                # RFC 6455 section 9.1 and RFC 7692 section 7: after unescaping, the
                # value of a quoted-string must be a token.
                if not _is_token(value):
                    raise InvalidHeader(name, header, f"quoted value isn't a token at {pos}")
                pos = match.end()
            else:
                value, pos = _token(header, pos, name)
        params.append((param_name, value))


def parse_extension_header(value: str | Sequence[str]) -> ExtensionHeader:
    """Parse Sec-WebSocket-Extensions (RFC 6455 section 9.1)::

        Sec-WebSocket-Extensions = extension-list
        extension-list = 1#extension
        extension = extension-token *( ";" extension-param )
        extension-param = token [ "=" (token | quoted-string) ]

    A sequence of values (several header lines) is parsed as their concatenation
    with ``", "`` (RFC 7230 section 3.2.2). Quoted parameter values are unescaped
    and must then be tokens. Raises
    :exc:`~wsharbor.exceptions.InvalidHeader` (400) when malformed.
    """
    header = value if isinstance(value, str) else ", ".join(value)
    return _list(_extension, header, "Sec-WebSocket-Extensions")


def serialize_extension_header(
    extensions: Sequence[tuple[ExtensionName, Sequence[ExtensionParameter]]],
) -> str:
    """Build a Sec-WebSocket-Extensions value (RFC 6455 section 9.1).

    Raises :exc:`ValueError` if a name or a value is not a token.
    """
    parts = []
    for name, params in extensions:
        items = [name]
        for param_name, param_value in params:
            items.append(param_name if param_value is None else f"{param_name}={param_value}")
        for item in items:
            for token in item.split("=", 1):
                if not _is_token(token):
                    raise ValueError(f"not a token in extension {name!r}: {token!r}")
        parts.append("; ".join(items))
    return ", ".join(parts)


def parse_subprotocol_header(value: str | Sequence[str]) -> list[Subprotocol]:
    """Parse Sec-WebSocket-Protocol (RFC 6455 section 4.3 and 11.3.4)::

        Sec-WebSocket-Protocol-Client = 1#token

    A sequence of values (several header lines) is parsed as their concatenation.
    Raises :exc:`~wsharbor.exceptions.InvalidHeader` (400) when malformed.
    """
    header = value if isinstance(value, str) else ", ".join(value)
    return _list(_token, header, "Sec-WebSocket-Protocol")


def serialize_subprotocol_header(subprotocols: Sequence[Subprotocol]) -> str:
    """Build a Sec-WebSocket-Protocol value. Raises :exc:`ValueError` for a non-token."""
    for subprotocol in subprotocols:
        if not _is_token(subprotocol):
            raise ValueError(f"subprotocol is not a token: {subprotocol!r}")
    return ", ".join(subprotocols)


def _tokens(values: list[str]) -> list[str]:
    """Lowercased comma-separated items of the ``values`` of a header, empty ones ignored."""
    return [
        item.strip(" \t").lower()
        for value in values
        for item in value.split(",")
        if item.strip(" \t")
    ]


def _has_token(values: list[str], token: str) -> bool:
    """Whether the values of a header list ``token`` (lowercase), in any case."""
    # The usual case first: one field holding only the token.
    return (len(values) == 1 and values[0].lower() == token) or token in _tokens(values)


# ---------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2, item 5.4).

    base64 of the SHA-1 of the key concatenated with the GUID.
    """
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return binascii.b2a_base64(digest, newline=False).decode("ascii")


# Names of the fields of the upgrade request and of the 101 response, interned
# lowercase as in Headers._keys.
_HOST: Final = sys.intern("host")
_SEC_WEBSOCKET_KEY: Final = sys.intern("sec-websocket-key")
_SEC_WEBSOCKET_VERSION: Final = sys.intern("sec-websocket-version")
_ORIGIN: Final = sys.intern("origin")
_UPGRADE_FIELD: Final = ("Upgrade", "websocket")
_CONNECTION_FIELD: Final = ("Connection", "Upgrade")
_UPGRADE: Final = sys.intern("upgrade")
_CONNECTION: Final = sys.intern("connection")
_SEC_WEBSOCKET_ACCEPT: Final = sys.intern("sec-websocket-accept")
_SEC_WEBSOCKET_EXTENSIONS: Final = sys.intern("sec-websocket-extensions")
_SEC_WEBSOCKET_PROTOCOL: Final = sys.intern("sec-websocket-protocol")
_SERVER: Final = sys.intern("server")


@dataclass(slots=True)
class Accepted:
    """A successful handshake: the 101 response and what was negotiated."""

    response: Response
    subprotocol: Subprotocol | None
    extensions: list[Extension]


def error_response(status: int, text: str, *, server_header: str | None = None) -> Response:
    """A plain-text error response for a failed handshake.

    The body is ``text`` on one line. 426 carries ``Sec-WebSocket-Version: 13``
    (RFC 6455 section 4.4), 405 carries ``Allow: GET`` (RFC 7231 section 6.5.5).
    """
    headers = Headers()
    if status == 426:
        headers["Sec-WebSocket-Version"] = "13"
    elif status == 405:
        headers["Allow"] = "GET"
    if server_header is not None:
        headers["Server"] = server_header
    line = " ".join(text.splitlines())
    return Response.text(status, line + "\n", headers)


class ServerHandshake:
    """Server side of the opening handshake (RFC 6455 section 4.2).

    :param origins: allowed values of Origin; ``None`` in the list allows requests
        without Origin; ``None`` (the default) disables the check.
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
        origins: Sequence[str | None] | None = None,
        subprotocols: Sequence[Subprotocol] | None = None,
        select_subprotocol: Callable[[Sequence[Subprotocol]], Subprotocol | None] | None = None,
        extensions: Sequence[ServerExtensionFactory] = (),
        server_header: str | Literal[_Default.DEFAULT] | None = DEFAULT,
    ) -> None:
        self.origins = None if origins is None else list(origins)
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
            _check_field("Server", value)
        self._server_header = value

    def accept(self, request: Request) -> Accepted:
        """Check ``request`` and build the 101 response (RFC 6455 section 4.2.1, 4.2.2).

        Raises the :exc:`~wsharbor.exceptions.InvalidHandshake` child of the first
        rule broken, in this order: method (405), Host (400), Upgrade and Connection
        (400), Sec-WebSocket-Key (400), Sec-WebSocket-Version (426), Origin (403),
        extensions (400), subprotocol (400).
        """
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
        if not _has_token(upgrade, "websocket"):
            raise InvalidUpgrade("Upgrade", ", ".join(upgrade), "expected websocket")

        # 4.2.1 item 4: a Connection header field that includes the token "Upgrade".
        connection = headers._get_all(_CONNECTION)
        if not connection:
            raise InvalidUpgrade("Connection")
        if not _has_token(connection, "upgrade"):
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

        # 4.2.1 item 7 and 10.2: Origin, when the server checks it.
        if self.origins is not None:
            origins = headers._get_all(_ORIGIN)
            if len(origins) > 1:
                raise InvalidHeader("Origin", ", ".join(origins), "more than one")
            origin = origins[0] if origins else None
            if origin not in self.origins:
                raise InvalidOrigin(origin)

        # 4.2.1 item 9 and 9.1: extensions.
        extensions, extension_header = self._negotiate_extensions(headers)

        # 4.2.1 item 8 and 4.2.2 item 5.4: subprotocol.
        subprotocol = self._negotiate_subprotocol(headers)

        # 4.2.2 item 5: the 101 response. Every field but the subprotocol is known
        # valid: constant, base64, tokens (serialize_extension_header checks them)
        # or checked when set (server_header); the subprotocol, which may come from
        # select_subprotocol, is checked.
        fields = [_UPGRADE_FIELD, _CONNECTION_FIELD, ("Sec-WebSocket-Accept", accept_key(key))]
        names = [_UPGRADE, _CONNECTION, _SEC_WEBSOCKET_ACCEPT]
        if extension_header:
            fields.append(
                ("Sec-WebSocket-Extensions", serialize_extension_header(extension_header))
            )
            names.append(_SEC_WEBSOCKET_EXTENSIONS)
        if subprotocol is not None:
            _check_field("Sec-WebSocket-Protocol", subprotocol)  # as headers[...] = checks
            fields.append(("Sec-WebSocket-Protocol", subprotocol))
            names.append(_SEC_WEBSOCKET_PROTOCOL)
        server_header = self._server_header
        if server_header is not None:
            fields.append(("Server", server_header))
            names.append(_SERVER)
        response = Response(101, "Switching Protocols", Headers._trusted(fields, names))
        return Accepted(response, subprotocol, extensions)

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


@dataclass(frozen=True, slots=True)
class WebSocketURI:
    """A parsed ws:// or wss:// URI (RFC 6455 section 3)."""

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
        if _tokens(upgrade) != ["websocket"]:
            raise InvalidUpgrade("Upgrade", ", ".join(upgrade), "expected websocket")

        # "... |Connection| header field doesn't contain a token that is an ASCII
        # case-insensitive match for the value "Upgrade" ..."
        connection = headers.get_all("Connection")
        if not connection:
            raise InvalidUpgrade("Connection")
        if not _has_token(connection, "upgrade"):
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
