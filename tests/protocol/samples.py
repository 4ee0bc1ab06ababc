"""HTTP samples and ways to feed them to a parser, shared by the protocol tests.

h11's way of testing a parser: feed the input whole, then one byte at a time, then
with bytes after it; the outcome (message or error) must be the same.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from wsharbor.exceptions import InvalidHandshake
from wsharbor.protocol.http11 import Request, RequestParser, Response, ResponseParser

__all__ = [
    "FRAME",
    "MODES",
    "REQUEST_LINE",
    "RFC_ACCEPT",
    "RFC_KEY",
    "RFC_REQUEST",
    "RFC_RESPONSE",
    "UPGRADE_FIELDS",
    "Outcome",
    "ParserFactory",
    "block",
    "both_ways",
    "feed",
    "feed_bytewise",
    "feed_whole",
    "limits_of",
    "parse_bytewise",
    "spy_line_by_line",
    "upgrade",
]

# RFC 6455 section 1.3 and 4.2.2.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

RFC_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: server.example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: http://example.com\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"\r\n"
)

RFC_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"\r\n"
)

# A masked text frame "Hello" (RFC 6455 section 5.7), pipelined after the handshake.
FRAME = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"

MODES = ["whole", "bytewise", "halves"]


def feed(parser: RequestParser | ResponseParser, data: bytes, mode: str) -> object:
    """Feed ``data`` in the given way; return the first non-None result."""
    if mode == "whole":
        chunks = [data]
    elif mode == "bytewise":
        chunks = [data[i : i + 1] for i in range(len(data))]
    else:
        chunks = [data[: len(data) // 2], data[len(data) // 2 :]]
    for i, chunk in enumerate(chunks):
        result = parser.feed(chunk)
        if result is not None:
            rest = b"".join(chunks[i + 1 :])
            if rest:
                # Bytes after completion belong to the caller, not to the parser.
                parser.leftover += rest
            return result
    return None


# The upgrade request of RFC 6455 section 1.3, as lines, to build variants of it.
REQUEST_LINE = b"GET /chat HTTP/1.1"
UPGRADE_FIELDS = [
    b"Host: server.example.com",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: " + RFC_KEY.encode(),
    b"Sec-WebSocket-Version: 13",
]


def block(first: bytes, fields: list[bytes], tail: bytes = b"", eol: bytes = b"\r\n") -> bytes:
    return eol.join([first, *fields]) + eol + eol + tail


def upgrade(replace: dict[bytes, list[bytes]] | None = None, tail: bytes = b"") -> bytes:
    """The upgrade request with the fields named in ``replace`` set to its values."""
    replace = replace or {}
    fields = []
    for line in UPGRADE_FIELDS:
        name = line.partition(b":")[0]
        if name in replace:
            fields += [name + b": " + value for value in replace.pop(name)]
        else:
            fields.append(line)
    for name, values in replace.items():
        fields += [name + b": " + value for value in values]
    return block(REQUEST_LINE, fields, tail)


def limits_of(first: bytes, fields: list[bytes]) -> dict[str, int]:
    """The tightest limits that ``first`` and ``fields`` fit in."""
    return dict(
        max_request_line=len(first),
        max_header_line=max(map(len, fields), default=0),
        max_headers=len(fields),
        max_headers_size=sum(len(field) + 2 for field in fields),
    )


# ---------------------------------------------------------------------------
# Feeding whole (fast path) and one byte at a time (line by line)
# ---------------------------------------------------------------------------

Outcome = tuple[Any, ...]
ParserFactory = Callable[[], RequestParser | ResponseParser]


def describe(message: Request | Response, leftover: bytes) -> Outcome:
    if isinstance(message, Request):
        return ("request", message.method, message.path, message.headers.items(), leftover)
    return (
        "response",
        message.status,
        message.reason_phrase,
        message.headers.items(),
        message.body,
        leftover,
    )


def error(exc: InvalidHandshake) -> Outcome:
    return ("error", type(exc), exc.status, str(exc))


def feed_whole(parser: RequestParser | ResponseParser, data: bytes) -> Outcome:
    try:
        message = parser.feed(data)
    except InvalidHandshake as exc:
        return error(exc)
    if message is None:
        return ("incomplete",)
    return describe(message, parser.leftover)


def feed_bytewise(parser: RequestParser | ResponseParser, data: bytes) -> Outcome:
    try:
        for i in range(len(data)):
            message = parser.feed(data[i : i + 1])
            if message is not None:
                if isinstance(message, Response) and message.status != 101:
                    # Not a WebSocket: the rest is not kept, fed whole or not.
                    return describe(message, parser.leftover)
                return describe(message, parser.leftover + data[i + 1 :])
    except InvalidHandshake as exc:
        return error(exc)
    return ("incomplete",)


def spy_line_by_line(parser: RequestParser | ResponseParser) -> list[bytes]:
    """Record what reaches the line by line path of ``parser``."""
    calls: list[bytes] = []
    feed_lines = parser._feed_lines

    def spy(data: bytes) -> bool:
        calls.append(data)
        return feed_lines(data)

    parser._feed_lines = spy  # type: ignore[method-assign]
    return calls


def both_ways(factory: ParserFactory, data: bytes) -> tuple[Outcome, bool]:
    """The outcome of ``data`` fed whole, checked equal to the outcome fed bytewise,
    and whether feeding it whole took the fast path.
    """
    whole_parser = factory()
    calls = spy_line_by_line(whole_parser)
    whole = feed_whole(whole_parser, data)
    bytewise = feed_bytewise(factory(), data)
    assert whole == bytewise
    return whole, not calls


def parse_bytewise(data: bytes) -> Request:
    parser = RequestParser()
    for i in range(len(data)):
        request = parser.feed(data[i : i + 1])
        if request is not None:
            return request
    raise AssertionError("incomplete")  # pragma: no cover - the requests are complete


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at ``cuts`` (positions past its end cut at its end)."""
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]
