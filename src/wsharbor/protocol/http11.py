"""HTTP/1.1 messages and their incremental parsers (RFC 7230 section 3).

Sans-I/O: bytes in, :class:`Request` or :class:`Response` out. Nothing here reads or
writes a socket, and nothing here knows about WebSocket: :mod:`.handshake` checks
the upgrade on the parsed message.

Theory of operation
-------------------

::

    parser = RequestParser()            # or ResponseParser() on the client
    request = parser.feed(data)         # None until the header block is complete
    ...                                 # feed again with the next bytes received
    parser.leftover                     # the bytes received after the message

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
way: a few ``bytes.count`` and ``bytes.find`` calls measure the block (first line,
number of header lines, longest header line, size of the header section; and no
bare LF ends a line), and llhttp gets the block at once. The limits are compared to
those measures in one place, :meth:`_HTTPParser._limit_broken`, which the line by
line path also calls for each line and for the incomplete line being received. When
the block breaks a limit the line by line path runs instead and raises the exact
error, at the first line that breaks it.

With the C accelerator, the usual opening handshake takes a shorter way still:
``_speedups.parse_request`` parses a whole header block in one call when it is a
GET written the plain way (one SP between the parts of the request line,
HTTP/1.1, each header line a token, a colon and a value without control
characters, no bare CR or LF, no body announced) and within every limit. It
accepts a subset of what llhttp accepts, returns the same :class:`Request` for it
(tests compare the two on crafted and random requests), and answers None for
anything else, which then goes the way above: llhttp is only created for such a
request, and it alone raises errors. Parsing a handshake of five fields goes from
about 11 µs to 4 (the C call itself about 1.5).

A request may start with empty lines (RFC 9112 section 2.2): the line by line path
drops them before llhttp sees anything, within ``max_request_line`` bytes in all.

Limits answer 431 (:class:`~wsharbor.exceptions.HeadersTooLarge`), including an
over-long *request line*: 414 URI Too Long would describe the request-target only,
while the limit bounds the whole line (method, target and version), and the error
tree maps every size limit of the header block to one exception and one status.
"""

from __future__ import annotations

import http
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, Literal, TypeVar

import httptools

from ..exceptions import (
    HeaderLineTooLong,
    HeadersTooLarge,
    InvalidHandshake,
    InvalidHTTPVersion,
    InvalidMessage,
    InvalidState,
    RequestLineTooLong,
    StatusLineTooLong,
    TooManyHeaders,
)
from .datastructures import Headers, HeadersLike
from .frames import SPEEDUPS
from .headers import is_token

if TYPE_CHECKING:
    # Only in the type stubs: the base class of both parsers.
    from httptools.parser.parser import HttpParser

#: The C parser of the usual handshake request (``_speedups.parse_request``), or
#: None without the accelerator (:data:`.frames.SPEEDUPS` decides, as for the
#: other C routines: ``WSHARBOR_NO_SPEEDUPS=1``, or not built).
_parse_request: (
    Callable[
        [bytes, int, int, int, int, int],
        tuple[str, list[tuple[str, str]], list[str]] | None,
    ]
    | None
)
if SPEEDUPS:
    from ._speedups import parse_request as _parse_request
else:  # pragma: no cover - depends on the build
    _parse_request = None

__all__ = ["Request", "RequestParser", "Response", "ResponseParser"]

_M = TypeVar("_M", "Request", "Response")


# ---------------------------------------------------------------------------
# Messages
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
        if not is_token(self.method):
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

    @property
    def status_code(self) -> int:
        """:attr:`status`, under the name websockets gives it (read-only)."""
        return self.status

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


#: Bytes no HTTP/1.1 line may hold (RFC 9112 section 2.2 and 3, RFC 9110 section
#: 5.5): controls other than HTAB, LF (which ends lines) and CR (which has rules
#: of its own, checked where lines are split).
_CONTROL_RE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PROTOCOL_VERSION_RE = re.compile(rb"[A-Za-z]+/[0-9.]+")
_BODY_FIELDS: Final = frozenset({"content-length", "transfer-encoding"})


#: Field names received, as bytes, to their ``str`` and their interned lowercase
#: key (what :class:`Headers` keeps beside each field): the same few names arrive
#: in every request, and a lookup costs less than decoding, lowercasing and
#: interning each one again. Bounded, so that a peer sending made-up names can't
#: grow it; names past the bound are decoded every time.
_FIELD_NAMES: dict[bytes, tuple[str, str]] = {}
_FIELD_NAMES_MAX: Final = 256


def _field_name(raw: bytes) -> tuple[str, str]:
    """The name and the key of a field name received (see :data:`_FIELD_NAMES`)."""
    name = raw.decode("ascii")
    entry = (name, sys.intern(name.lower()))
    if len(_FIELD_NAMES) < _FIELD_NAMES_MAX:
        _FIELD_NAMES[raw] = entry
    return entry


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
    _first_line = "first line"
    #: Whether empty lines before the first line are ignored (RFC 9112 section 2.2).
    _skips_empty_lines = False

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
        self._skipped = 0  # bytes of empty lines ignored before the first line
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
        """Check the first line, neither empty nor starting with CR, before llhttp
        parses it.
        """
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
        if it is neither empty nor starting with CR and the block is within every limit,
        else ``None``.

        Never raises: for ``None``, :meth:`_feed_lines` finds the error and raises
        it, so that both paths raise the same error.
        """
        # Every LF ends a CRLF: no bare LF (which ends a line, or the header block,
        # for the line by line path). Then no line but the first can be empty, as
        # CRLF CRLF first appears at ``end``, and each CRLF starts a header line.
        count = data.count(b"\r\n", 0, end)
        if data.count(b"\n", 0, end) != count:
            return None
        # Empty lines or a CR before the first line, control characters: for the
        # line by line path.
        if data[0] == 0x0D or _CONTROL_RE.search(data, 0, end):
            return None
        first = data.find(b"\r\n", 0, end) if count else end
        # The header lines, each with the CRLF before it (the size the line by line
        # path counts, each with the CRLF after it).
        size = end - first
        # The header lines without the CRLF before each: if they fit in one header
        # line, each one does; else measure each.
        longest = size - 2
        if longest > self.max_header_line:
            longest = max(map(len, data[first + 2 : end].split(b"\r\n")))
        if self._limit_broken(first, count, longest, size) is not None:
            return None
        return data[:first]

    def _feed_lines(self, data: bytes) -> bool:
        buf = self._pending
        buf += data
        start = 0  # start of the current line in buf
        skipped = 0  # end of the empty lines ignored before the first line, in buf
        search = self._searched
        end = -1  # end of the header block in buf
        while True:
            nl = buf.find(b"\n", search)
            if nl == -1:
                break
            length = nl - start
            if length > 0 and buf[nl - 1] == 0x0D:
                length -= 1
            if length == 0 and not self._lines and self._skips_empty_lines:
                self._skip_empty_line(nl + 1 - start)
                start = search = skipped = nl + 1
                continue
            if self._check_line(buf, start, length, nl + 1 - start):
                # A control character: llhttp first judges the lines before it,
                # as it does when they arrive one by one.
                if start > skipped:
                    self._parse(bytes(buf[skipped:start]))
                raise self._control_character(first=self._lines == 1)
            start = search = nl + 1
            if length == 0:
                end = start
                break
        self._searched = len(buf) - start if end == -1 else 0
        if start > skipped:
            self._parse(bytes(buf[skipped:start]))
        if end == -1:
            del buf[:start]
            self._check_partial_line(len(buf))
            return False
        rest = bytes(buf[end:])
        buf.clear()
        if not self._cb.headers_complete:  # pragma: no cover - llhttp raised already
            raise InvalidMessage(f"malformed HTTP {self._kind}: incomplete header block")
        return self._on_headers_complete(rest)

    def _check_line(self, buf: bytearray, start: int, length: int, size: int) -> bool:
        """Check the complete line ``buf[start : start + length]`` (``size`` bytes with
        its line end) before llhttp parses it; true if it holds a control character.
        """
        self._lines += 1
        if self._lines == 1:
            if error := self._limit_broken(length, 0, 0, 0):
                raise error
            if _CONTROL_RE.search(buf, start, start + length):
                return True
            if length == 0:
                raise InvalidMessage(f"malformed HTTP {self._kind}: empty first line")
            # RFC 9112 section 2.2: a bare CR ends no line. llhttp would skip a CR
            # here and take the next line for the first one, measured as a header.
            if buf[start] == 0x0D:
                raise InvalidMessage(
                    f"malformed HTTP {self._kind}: CR at the start of the {self._first_line}"
                )
            self._check_first_line(bytes(buf[start : start + length]))
            return False
        if length == 0:  # end of the header block
            return False
        # The limit its bytes broke first, as they arrived one by one (up to
        # the CR of a CRLF), then the line as a whole.
        if error := self._first_broken(self._lines - 1, size - 1, buf[start] == 0x0D):
            raise error
        self._headers_size += size
        if error := self._limit_broken(0, self._lines - 1, length, self._headers_size):
            raise error
        return _CONTROL_RE.search(buf, start, start + length) is not None

    def _first_broken(self, headers: int, received: int, cr_first: bool) -> HeadersTooLarge | None:
        """The error for the limit that a header line broke first, if any, with
        ``received`` of its bytes in, measured as :meth:`_check_partial_line`
        measures an incomplete line after each byte: ``headers`` header lines
        with it (from its first byte, or its second if that is a CR, which may
        begin the blank line ending the block), and as long as its bytes but the
        last (which may be the CR of its end). The same error whatever the cuts
        of the input: checked only where the input was cut, the measures of
        the last byte received could break several limits, and the one named
        would be the first in :meth:`_limit_broken`'s order rather than the one
        broken first.
        """
        # The first byte count at which each limit is broken.
        first = received + 1
        if headers > self.max_headers:
            first = 2 if cr_first else 1
        first = min(first, self.max_header_line + 2, self.max_headers_size - self._headers_size + 2)
        if first > received:
            return None
        return self._limit_broken(0, headers, first - 1, self._headers_size + first - 1)

    def _skip_empty_line(self, size: int) -> None:
        """Ignore an empty line of ``size`` bytes (CRLF or LF) before the first line.

        RFC 9112 section 2.2: "a server that is expecting to receive and parse a
        request-line SHOULD ignore at least one empty line (CRLF) received prior to
        the request-line." As many are ignored as fit in ``max_request_line`` bytes
        in all (4096 CRLF by default), so that a peer cannot keep the parser reading
        empty lines forever; past that the request is malformed (400).
        """
        self._skipped += size
        if self._skipped > self.max_request_line:
            raise InvalidMessage(
                f"malformed HTTP {self._kind}: over {self.max_request_line} bytes of "
                f"empty lines before the {self._first_line}"
            )

    def _check_partial_line(self, length: int) -> None:
        """Check the incomplete line being received, ``length`` bytes so far."""
        # A trailing CR may be the first half of the CRLF: don't count it yet.
        if self._lines == 0:
            error = self._limit_broken(length - 1, 0, 0, 0)
        else:
            # The line's first byte counts it as a header, unless that is a CR (it
            # may begin the blank line ending the header block).
            error = self._first_broken(self._lines, length, self._pending[:1] == b"\r")
        if error:
            raise error
        # A control character can't be in any line: say so now, rather than
        # wait for a line end that may never come (1 KiB of NUL bytes used to
        # wait for open_timeout). Checked after the limits, as for a whole line.
        if _CONTROL_RE.search(self._pending):
            raise self._control_character(first=self._lines == 0)

    def _control_character(self, *, first: bool) -> InvalidMessage:
        where = f"the {self._first_line}" if first else "a header line"
        return InvalidMessage(f"malformed HTTP {self._kind}: control character in {where}")

    def _limit_broken(
        self, first_line: int, headers: int, header_line: int, headers_size: int
    ) -> HeadersTooLarge | None:
        """The error for the first limit these measures break, if any: the only place
        the limits are compared to what was received.

        :param first_line: length of the request line or status line, line end excluded;
        :param headers: number of header lines;
        :param header_line: length of the longest header line, line end excluded;
        :param headers_size: bytes of the header lines, each with its line end.

        Both paths call it: :meth:`_whole_head` with the measures of a whole header
        block, the line by line path with those of the block up to each line.
        """
        if first_line > self.max_request_line:
            too_long = StatusLineTooLong if self._kind == "response" else RequestLineTooLong
            return too_long(f"{self._first_line} too long: over {self.max_request_line} bytes")
        if header_line > self.max_header_line:
            return HeaderLineTooLong(f"header line too long: over {self.max_header_line} bytes")
        if headers > self.max_headers:
            return TooManyHeaders(f"too many headers: over {self.max_headers}")
        if headers_size > self.max_headers_size:
            return TooManyHeaders(f"headers too large: over {self.max_headers_size} bytes")
        return None

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
        names = _FIELD_NAMES
        fields: list[tuple[str, str]] = []
        keys: list[str] = []
        try:
            for raw, value in self._cb.fields:
                name = names.get(raw) or _field_name(raw)
                # RFC 7230 section 3.2.4: OWS around the field-value is not part of it.
                fields.append((name[0], value.decode("latin-1").strip(" \t")))
                keys.append(name[1])
        except UnicodeDecodeError as exc:  # pragma: no cover - llhttp checks
            raise InvalidMessage(f"malformed HTTP {self._kind}: invalid header") from exc
        return Headers._trusted(fields, keys)

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

    Empty lines (CRLF, or a bare LF as llhttp also accepts there) before the request
    line are ignored, as RFC 9112 section 2.2 asks of a server, up to
    ``max_request_line`` bytes of them; a client may send one after the body of a
    previous request.

    Errors (each raised again by later calls):

    - :exc:`~wsharbor.exceptions.HeadersTooLarge` (431): request line, a header line,
      the header count or the header section size over its limit, detected while the
      bytes arrive;
    - :exc:`~wsharbor.exceptions.InvalidHTTPVersion` (505): not HTTP/1.1;
    - :exc:`~wsharbor.exceptions.InvalidMessage` (400): malformed HTTP, more empty
      lines before the request line than ``max_request_line`` bytes, or a request
      body (``Content-Length`` other than 0, or ``Transfer-Encoding``), which has no
      meaning on a handshake.
    """

    _kind = "request"
    _first_line = "request line"
    _skips_empty_lines = True

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
        # llhttp's parser, made when the general path first needs it.
        self._request_parser: httptools.HttpRequestParser | None = None

    def _feed_headers(self, data: bytes) -> bool:
        if self._request_parser is None:
            # The usual handshake, whole in the first bytes received: in C at once
            # when it is written the plain way (see _speedups.parse_request).
            if _parse_request is not None and not self._pending and type(data) is bytes:
                end = data.find(b"\r\n\r\n")
                if end > 0:
                    parsed = _parse_request(
                        data,
                        end,
                        self.max_request_line,
                        self.max_header_line,
                        self.max_headers,
                        self.max_headers_size,
                    )
                    if parsed is not None:
                        path, fields, keys = parsed
                        self._result = Request(path, Headers._trusted(fields, keys), "GET")
                        return self._complete(data[end + 4 :])
            self._request_parser = self._parser = httptools.HttpRequestParser(self._cb)
        return super()._feed_headers(data)

    def _check_first_line(self, line: bytes) -> None:
        # request-line = method SP request-target SP HTTP-version
        self._check_version(line.rpartition(b" ")[2])

    def _on_headers_complete(self, rest: bytes) -> bool:
        self._http_version()
        headers = self._headers()
        try:
            path = self._cb.url.decode("ascii")
            assert self._request_parser is not None
            raw_method = self._request_parser.get_method()
            # The handshake's method, shared rather than a new string a connection.
            method = "GET" if raw_method == b"GET" else raw_method.decode("ascii")
        except UnicodeDecodeError as exc:  # pragma: no cover - llhttp rejects it first
            raise InvalidMessage("malformed HTTP request: non-ASCII request line") from exc
        # RFC 7230 section 3.3: a body is announced by Content-Length or
        # Transfer-Encoding; none has a meaning on a handshake. One scan for both.
        if headers.has_any(_BODY_FIELDS) and (
            "Transfer-Encoding" in headers
            or any(value != "0" for value in headers.get_all("Content-Length"))
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

    Errors are those of :class:`RequestParser`; an empty line before the status line
    is malformed (400): RFC 9112 section 2.2 asks servers only to ignore them.
    """

    _kind = "response"
    _first_line = "status line"

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
