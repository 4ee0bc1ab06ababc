"""The fast paths of the server side of the handshake answer as the general paths do.

- :class:`RequestParser` (and :class:`ResponseParser`) check and parse a header block
  received whole at once; fed one byte at a time, they go line by line. Both must
  give the same message and raise the same error, at and just over every limit.
- :meth:`ServerHandshake.accept` recognizes the usual Upgrade, Connection and
  Sec-WebSocket-Key values without the general tokenizer, and builds the 101 response
  without checking fields it made itself.
- :class:`Headers` answers 0 or 1 value through list methods, several through a scan.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest

from wsharbor.exceptions import HeadersTooLarge, InvalidHandshake, NegotiationError
from wsharbor.protocol.datastructures import Headers, MultipleValuesError
from wsharbor.protocol.handshake import (
    ServerHandshake,
    accept_key,
)
from wsharbor.protocol.http11 import Request, RequestParser, Response, ResponseParser

RFC_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

REQUEST_LINE = b"GET /chat HTTP/1.1"
UPGRADE_FIELDS = [
    b"Host: server.example.com",
    b"Upgrade: websocket",
    b"Connection: Upgrade",
    b"Sec-WebSocket-Key: " + RFC_KEY,
    b"Sec-WebSocket-Version: 13",
]
FRAME = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"


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


# Limits: the tightest ones the upgrade request fits in, and each one byte too small.
AT_LIMITS = limits_of(REQUEST_LINE, UPGRADE_FIELDS)
OVER_LIMITS = {
    name: {**AT_LIMITS, name: value - 1}
    for name, value in AT_LIMITS.items()
    if name != "max_headers_size"
}
# max_headers_size: over by the CRLF of the last line only, and by a whole line.
OVER_LIMITS["max_headers_size"] = {
    **AT_LIMITS,
    "max_headers_size": AT_LIMITS["max_headers_size"] - 1,
}
OVER_LIMITS["max_headers_size_line"] = {
    **AT_LIMITS,
    "max_headers_size": AT_LIMITS["max_headers_size"] - len(UPGRADE_FIELDS[-1]) - 2,
}
OVER_LIMITS["request_line_and_header_line"] = {
    **AT_LIMITS,
    "max_request_line": AT_LIMITS["max_request_line"] - 1,
    "max_header_line": AT_LIMITS["max_header_line"] - 1,
}
OVER_LIMITS["all"] = {name: value - 1 for name, value in AT_LIMITS.items()}
OVER_LIMITS["zero"] = {name: 0 for name in AT_LIMITS}


class TestLimits:
    def test_at_limits(self) -> None:
        data = upgrade(tail=FRAME)
        outcome, fast = both_ways(lambda: RequestParser(**AT_LIMITS), data)
        assert outcome[0] == "request"
        assert outcome[-1] == FRAME
        assert fast

    @pytest.mark.parametrize("limits", OVER_LIMITS.values(), ids=list(OVER_LIMITS))
    def test_over_a_limit(self, limits: dict[str, int]) -> None:
        outcome, fast = both_ways(lambda: RequestParser(**limits), upgrade(tail=FRAME))
        assert outcome[:3] == ("error", HeadersTooLarge, 431)
        assert not fast

    @pytest.mark.parametrize(
        ("name", "first", "fields"),
        [
            ("longest header line last", REQUEST_LINE, [b"A: 1", b"B: " + b"b" * 50]),
            ("longest header line first", REQUEST_LINE, [b"B: " + b"b" * 50, b"A: 1"]),
            ("one header", REQUEST_LINE, [b"Host: a"]),
            ("no header", REQUEST_LINE, []),
            ("HTTP/0.9", b"GET /", []),
            ("long request line", b"GET /" + b"a" * 200 + b" HTTP/1.1", [b"Host: a"]),
        ],
    )
    def test_each_limit_at_and_over(self, name: str, first: bytes, fields: list[bytes]) -> None:
        data = block(first, fields)
        at = limits_of(first, fields)
        baseline, _ = both_ways(lambda: RequestParser(**at), data)
        for limit in at:
            for delta in (1, 0, -1):
                if at[limit] + delta < 0:
                    continue
                limits = {**at, limit: at[limit] + delta}
                outcome, fast = both_ways(functools.partial(RequestParser, **limits), data)
                if delta >= 0:
                    assert outcome == baseline, (limit, delta)
                    assert fast or baseline[0] != "request", (limit, delta)
                elif outcome[0] == "error":
                    assert not fast or outcome[1] is not HeadersTooLarge, (limit, delta)
                else:
                    # A header limit with no header to apply to.
                    assert not fields and limit != "max_request_line", (limit, delta)

    def test_header_size_counts_crlf(self) -> None:
        fields = [b"A: " + b"a" * 10] * 3
        data = block(REQUEST_LINE, fields)
        size = sum(len(field) + 2 for field in fields)
        for max_size in (size - 2, size - 1, size, size + 1):
            outcome, fast = both_ways(
                functools.partial(RequestParser, max_headers_size=max_size), data
            )
            assert (outcome[0] == "request") is (max_size >= size) is fast

    @pytest.mark.parametrize("over", [0, 1])
    def test_default_limits(self, over: int) -> None:
        # 8192 bytes per line, 128 headers, 65536 bytes of headers.
        big = [b"X: " + b"x" * 8000] * 8
        last = 65536 - sum(len(field) + 2 for field in big) - 2 + over
        for data in [
            block(REQUEST_LINE, [b"X: " + b"x" * (8189 + over)]),
            block(b"GET /" + b"a" * (8178 + over) + b" HTTP/1.1", []),
            block(REQUEST_LINE, [b"X: a"] * (128 + over)),
            block(REQUEST_LINE, [*big, b"Y: " + b"y" * (last - 3)]),
        ]:
            outcome, fast = both_ways(RequestParser, data)
            assert outcome[0] == ("error" if over else "request")
            assert fast is not over


# ---------------------------------------------------------------------------
# Requests odd or wrong: parsed the same both ways, then accepted or rejected
# ---------------------------------------------------------------------------

# (request, what ServerHandshake().accept answers: 101 or the status and message).
REQUESTS: dict[str, tuple[bytes, int, str]] = {
    "upgrade": (upgrade(), 101, ""),
    "frames after": (upgrade(tail=FRAME + b"\r\n\r\n" + FRAME), 101, ""),
    "Upgrade WebSocket": (upgrade({b"Upgrade": [b"WebSocket"]}), 101, ""),
    "Upgrade WEBSOCKET": (upgrade({b"Upgrade": [b"WEBSOCKET"]}), 101, ""),
    "Upgrade h2c, websocket": (upgrade({b"Upgrade": [b"h2c, websocket"]}), 101, ""),
    "Upgrade websocket, h2c": (upgrade({b"Upgrade": [b"websocket, h2c"]}), 101, ""),
    "Upgrade , websocket ,": (upgrade({b"Upgrade": [b", websocket ,"]}), 101, ""),
    "Upgrade padded": (upgrade({b"Upgrade": [b"\t websocket \t"]}), 101, ""),
    "Upgrade twice": (upgrade({b"Upgrade": [b"websocket", b"websocket"]}), 101, ""),
    "Upgrade h2c then websocket": (upgrade({b"Upgrade": [b"h2c", b"WebSocket"]}), 101, ""),
    "Upgrade h2c": (
        upgrade({b"Upgrade": [b"h2c"]}),
        400,
        "invalid Upgrade header: h2c (expected websocket)",
    ),
    "Upgrade h2c twice": (
        upgrade({b"Upgrade": [b"h2c", b"h2c"]}),
        400,
        "invalid Upgrade header: h2c, h2c (expected websocket)",
    ),
    "Upgrade websockets": (
        upgrade({b"Upgrade": [b"websockets"]}),
        400,
        "invalid Upgrade header: websockets (expected websocket)",
    ),
    "Upgrade websocket/13": (
        upgrade({b"Upgrade": [b"websocket/13"]}),
        400,
        "invalid Upgrade header: websocket/13 (expected websocket)",
    ),
    "Upgrade empty": (
        upgrade({b"Upgrade": [b""]}),
        400,
        "empty Upgrade header (expected websocket)",
    ),
    "Upgrade missing": (upgrade({b"Upgrade": []}), 400, "missing Upgrade header"),
    "Connection upgrade": (upgrade({b"Connection": [b"upgrade"]}), 101, ""),
    "Connection UPGRADE": (upgrade({b"Connection": [b"UPGRADE"]}), 101, ""),
    "Connection keep-alive, Upgrade": (upgrade({b"Connection": [b"keep-alive, Upgrade"]}), 101, ""),
    "Connection Upgrade, close": (upgrade({b"Connection": [b"Upgrade, close"]}), 101, ""),
    "Connection twice": (upgrade({b"Connection": [b"Upgrade", b"Upgrade"]}), 101, ""),
    "Connection keep-alive then upgrade": (
        upgrade({b"Connection": [b"keep-alive", b"upgrade"]}),
        101,
        "",
    ),
    "Connection keep-alive": (
        upgrade({b"Connection": [b"keep-alive"]}),
        400,
        "invalid Connection header: keep-alive (expected Upgrade)",
    ),
    "Connection keep-alive twice": (
        upgrade({b"Connection": [b"keep-alive", b"close"]}),
        400,
        "invalid Connection header: keep-alive, close (expected Upgrade)",
    ),
    "Connection upgrades": (
        upgrade({b"Connection": [b"upgrades"]}),
        400,
        "invalid Connection header: upgrades (expected Upgrade)",
    ),
    "Connection missing": (upgrade({b"Connection": []}), 400, "missing Connection header"),
    "Key twice": (
        upgrade({b"Sec-WebSocket-Key": [RFC_KEY, RFC_KEY]}),
        400,
        f"invalid Sec-WebSocket-Key header: {RFC_KEY.decode()}, {RFC_KEY.decode()} (more than one)",
    ),
    "Key missing": (upgrade({b"Sec-WebSocket-Key": []}), 400, "missing Sec-WebSocket-Key header"),
    "Key empty": (
        upgrade({b"Sec-WebSocket-Key": [b""]}),
        400,
        "empty Sec-WebSocket-Key header (expected 16 bytes base64-encoded)",
    ),
    "Key 15 bytes": (
        upgrade({b"Sec-WebSocket-Key": [b"AAAAAAAAAAAAAAAAAAAA"]}),
        400,
        "invalid Sec-WebSocket-Key header: AAAAAAAAAAAAAAAAAAAA (expected 16 bytes base64-encoded)",
    ),
    "Key 17 bytes": (
        upgrade({b"Sec-WebSocket-Key": [b"AAAAAAAAAAAAAAAAAAAAAAA="]}),
        400,
        "invalid Sec-WebSocket-Key header: AAAAAAAAAAAAAAAAAAAAAAA= "
        "(expected 16 bytes base64-encoded)",
    ),
    "Key padding only": (
        upgrade({b"Sec-WebSocket-Key": [b"=="]}),
        400,
        "invalid Sec-WebSocket-Key header: == (not base64)",
    ),
    "Key bad padding": (
        upgrade({b"Sec-WebSocket-Key": [b"dGhlIHNhbXBsZSBub25jZQ="]}),
        400,
        "invalid Sec-WebSocket-Key header: dGhlIHNhbXBsZSBub25jZQ= (not base64)",
    ),
    "Key data after padding": (
        upgrade({b"Sec-WebSocket-Key": [b"dGhlIHNhbXBsZSBub25jZQ==AAAA"]}),
        400,
        "invalid Sec-WebSocket-Key header: dGhlIHNhbXBsZSBub25jZQ==AAAA (not base64)",
    ),
    "Key not base64": (
        upgrade({b"Sec-WebSocket-Key": [b"not base64!"]}),
        400,
        "invalid Sec-WebSocket-Key header: not base64! (not base64)",
    ),
    "Key with a space": (
        upgrade({b"Sec-WebSocket-Key": [b"dGhlIHNhbXBs ZSBub25jZQ=="]}),
        400,
        "invalid Sec-WebSocket-Key header: dGhlIHNhbXBs ZSBub25jZQ== (not base64)",
    ),
    "Key urlsafe alphabet": (
        upgrade({b"Sec-WebSocket-Key": [b"dGhlIHNhbXBsZSBub25jZQ-_"]}),
        400,
        "invalid Sec-WebSocket-Key header: dGhlIHNhbXBsZSBub25jZQ-_ (not base64)",
    ),
    "Key non-ASCII": (
        upgrade({b"Sec-WebSocket-Key": ["dGhlIHNhbXBsZSBub25jZQé".encode("latin-1")]}),
        400,
        "invalid Sec-WebSocket-Key header: dGhlIHNhbXBsZSBub25jZQé (not base64)",
    ),
    "Key other 16 bytes": (upgrade({b"Sec-WebSocket-Key": [b"AAAAAAAAAAAAAAAAAAAAAA=="]}), 101, ""),
    "Host twice": (
        upgrade({b"Host": [b"a", b"b"]}),
        400,
        "invalid Host header: a, b (more than one)",
    ),
    "Version 8": (
        upgrade({b"Sec-WebSocket-Version": [b"8"]}),
        426,
        "invalid Sec-WebSocket-Version header: 8 (expected 13)",
    ),
    "Content-Length 0": (upgrade({b"Content-Length": [b"0"]}), 101, ""),
    "Content-Length 5": (
        upgrade({b"Content-Length": [b"5"]}, tail=b"hello"),
        400,
        "request body not supported",
    ),
    "Transfer-Encoding": (
        upgrade({b"Transfer-Encoding": [b"chunked"]}),
        400,
        "request body not supported",
    ),
    "POST": (
        upgrade().replace(b"GET", b"POST", 1),
        405,
        "unsupported HTTP method: POST (expected GET)",
    ),
}

# Requests with odd line ends or malformed: whole or bytewise, the same request or error.
ODD: dict[str, bytes] = {
    "bare LF everywhere": block(REQUEST_LINE, UPGRADE_FIELDS, eol=b"\n"),
    "bare LF after the request line": upgrade().replace(b"\r\n", b"\n", 1),
    "bare LF in the middle": upgrade().replace(b"websocket\r\n", b"websocket\n"),
    "bare LF ends the block": upgrade()[:-2] + b"\n",
    "LF CRLF ends the block": upgrade()[:-4] + b"\n\r\n",
    "bare LF before CRLF CRLF": upgrade()[:-4] + b"\n\r\n\r\n",
    "bare LF after the block": upgrade(tail=b"\n\n"),  # leftover: parsed
    "CR inside a value": upgrade({b"X": [b"a\rb"]}),
    "CR CR LF": upgrade()[:-4] + b"\r\r\n\r\n",
    "empty first line": b"\r\n" + upgrade(),
    "empty block": b"\r\n\r\n",
    "obs-fold": upgrade({b"X": [b"a\r\n b"]}),
    "no colon": upgrade().replace(b"Host: ", b"Host "),
    "NUL": upgrade({b"X": [b"a\x00b"]}),
    "HTTP/1.0": upgrade().replace(b"HTTP/1.1", b"HTTP/1.0"),
    "HTTP/0.9": b"GET /chat\r\n\r\n",
    "RTSP": upgrade().replace(b"HTTP/1.1", b"RTSP/1.0"),
    "TLS": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    "body": upgrade({b"Content-Length": [b"5"]}, tail=b"hello"),
    "non-ASCII target": upgrade().replace(b"/chat", "/é".encode()),
}


def parse_bytewise(data: bytes) -> Request:
    parser = RequestParser()
    for i in range(len(data)):
        request = parser.feed(data[i : i + 1])
        if request is not None:
            return request
    raise AssertionError("incomplete")  # pragma: no cover - the requests are complete


@pytest.mark.parametrize(("data", "status", "message"), REQUESTS.values(), ids=list(REQUESTS))
def test_request_parsed_then_accepted_or_rejected(data: bytes, status: int, message: str) -> None:
    outcome, fast = both_ways(RequestParser, data)
    if outcome[0] == "error":
        # A request body: the parser already rejects it.
        assert outcome[2:] == (status, message)
        return
    assert fast
    request = RequestParser().feed(data)
    assert request is not None
    assert request == parse_bytewise(data)
    try:
        accepted = ServerHandshake(server_header=None).accept(request)
    except InvalidHandshake as exc:
        assert (exc.status, str(exc)) == (status, message)
    else:
        assert (status, message) == (101, "")
        assert accepted.response.headers["Sec-WebSocket-Accept"] == accept_key(
            request.headers["Sec-WebSocket-Key"]
        )


@pytest.mark.parametrize("data", ODD.values(), ids=list(ODD))
@pytest.mark.parametrize("tight", [False, True])
def test_odd_requests_same_both_ways(data: bytes, tight: bool) -> None:
    limits = AT_LIMITS if tight else {}
    outcome, _ = both_ways(functools.partial(RequestParser, **limits), data)
    assert outcome[0] in ("error", "request")


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
        + RFC_ACCEPT.encode()
        + b"\r\n\r\n"
        + FRAME,
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 503 Service Unavailable\r\n\r\nuntil the end",
        b"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\n\n",
        b"HTTP/1.0 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 101 " + b"x" * 9000 + b"\r\n\r\n",
    ],
)
def test_response_same_both_ways(data: bytes) -> None:
    outcome, fast = both_ways(functools.partial(ResponseParser, max_body_size=16), data)
    if outcome[0] == "response":
        assert fast


# ---------------------------------------------------------------------------
# Where each path is taken
# ---------------------------------------------------------------------------


class TestPathTaken:
    def test_whole_block_fast(self) -> None:
        parser = RequestParser()
        calls = spy_line_by_line(parser)
        assert parser.feed(upgrade(tail=FRAME)) is not None
        assert calls == []
        assert parser.leftover == FRAME

    def test_partial_then_rest_line_by_line(self) -> None:
        data = upgrade()
        parser = RequestParser()
        calls = spy_line_by_line(parser)
        assert parser.feed(data[:10]) is None
        assert parser.feed(data[10:]) is not None
        assert calls == [data[:10], data[10:]]

    def test_after_empty_feed_fast(self) -> None:
        parser = RequestParser()
        calls = spy_line_by_line(parser)
        assert parser.feed(b"") is None
        assert parser.feed(upgrade()) is not None
        assert calls == [b""]

    def test_bytearray_line_by_line(self) -> None:
        data = upgrade(tail=FRAME)
        parser = RequestParser()
        calls = spy_line_by_line(parser)
        request = parser.feed(bytearray(data))  # type: ignore[arg-type]
        assert request == RequestParser().feed(data)
        assert parser.leftover == FRAME
        assert type(parser.leftover) is bytes
        assert len(calls) == 1

    def test_errors_sticky_after_fast_path(self) -> None:
        parser = RequestParser()
        with pytest.raises(InvalidHandshake) as first:
            parser.feed(ODD["no colon"])
        with pytest.raises(InvalidHandshake) as second:
            parser.feed(upgrade())
        assert first.value is second.value


# ---------------------------------------------------------------------------
# The 101 response
# ---------------------------------------------------------------------------


def reference_headers(*fields: tuple[str, str]) -> Headers:
    headers = Headers()
    for name, value in fields:
        headers[name] = value
    return headers


class TestResponse:
    def test_same_as_checked_headers(self) -> None:
        request = RequestParser().feed(upgrade({b"Sec-WebSocket-Protocol": [b"chat, superchat"]}))
        assert request is not None
        accepted = ServerHandshake(subprotocols=["chat"], server_header="edge/1").accept(request)
        headers = accepted.response.headers
        expected = reference_headers(
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", RFC_ACCEPT),
            ("Sec-WebSocket-Protocol", "chat"),
            ("Server", "edge/1"),
        )
        assert headers.items() == expected.items()
        assert headers._keys == expected._keys
        assert headers == expected
        for name in ("upgrade", "CONNECTION", "Sec-Websocket-Accept", "server"):
            assert name in headers
            assert headers[name] == expected[name]
            assert headers.get_all(name) == expected.get_all(name)
        # Still a Headers of its own: appending, deleting, other responses unchanged.
        headers["X"] = "1"
        del headers["Server"]
        again = ServerHandshake(server_header=None).accept(request).response.headers
        assert again.items() == expected.items()[:3]
        assert accepted.response.serialize() == (
            b"HTTP/1.1 101 Switching Protocols\r\n"
            b"Upgrade: websocket\r\n"
            b"Connection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n"
            b"Sec-WebSocket-Protocol: chat\r\n"
            b"X: 1\r\n"
            b"\r\n"
        )

    @pytest.mark.parametrize(
        "value", ["a\r\nSet-Cookie: x", "a\nb", "a\rb", "a\x00b", "emoji \U0001f600", b"bytes"]
    )
    def test_bad_server_header_fails_at_construction(self, value: Any) -> None:
        with pytest.raises(ValueError) as expected:
            Headers()["Server"] = value
        with pytest.raises(ValueError) as exc_info:
            ServerHandshake(server_header=value)
        assert str(exc_info.value) == str(expected.value)
        handshake = ServerHandshake(server_header="good")
        with pytest.raises(ValueError) as exc_info:
            handshake.server_header = value
        assert str(exc_info.value) == str(expected.value)
        assert handshake.server_header == "good"
        handshake.server_header = None
        request = RequestParser().feed(upgrade())
        assert request is not None
        assert "Server" not in handshake.accept(request).response.headers

    def test_selected_subprotocol_still_checked(self) -> None:
        class Anything(str):
            """Equal to any offer: the check "was it offered?" cannot stop it."""

            __hash__ = str.__hash__

            def __eq__(self, other: object) -> bool:
                return True

        evil = Anything("chat\r\nSet-Cookie: x")
        handshake = ServerHandshake(select_subprotocol=lambda offered: evil)
        request = RequestParser().feed(upgrade({b"Sec-WebSocket-Protocol": [b"chat"]}))
        assert request is not None
        with pytest.raises(ValueError) as exc_info:
            handshake.accept(request)
        assert str(exc_info.value) == f"invalid header value for Sec-WebSocket-Protocol: {evil!r}"

    def test_subprotocol_not_offered_still_negotiation_error(self) -> None:
        handshake = ServerHandshake(select_subprotocol=lambda offered: "other")
        request = RequestParser().feed(upgrade({b"Sec-WebSocket-Protocol": [b"chat"]}))
        assert request is not None
        with pytest.raises(NegotiationError):
            handshake.accept(request)


def test_accept_key_matches_base64() -> None:
    import base64
    import hashlib
    import os

    for _ in range(50):
        key = base64.b64encode(os.urandom(16)).decode()
        digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        assert accept_key(key) == base64.b64encode(digest).decode()


# ---------------------------------------------------------------------------
# Headers lookups: 0, 1 and several values
# ---------------------------------------------------------------------------


class TestHeadersLookups:
    def headers(self) -> Headers:
        return Headers([("A", "1"), ("B", "2"), ("a", "3"), ("C", "4"), ("A", "5")])

    def test_absent(self) -> None:
        headers = self.headers()
        assert headers.get_all("D") == []
        assert headers.get("d") is None
        assert headers.get("d", "x") == "x"
        assert "D" not in headers
        with pytest.raises(KeyError) as exc_info:
            headers["D"]
        assert not isinstance(exc_info.value, MultipleValuesError)
        assert exc_info.value.args == ("D",)

    def test_one(self) -> None:
        headers = self.headers()
        for name in ("B", "b"):
            assert headers.get_all(name) == ["2"]
            assert headers[name] == "2"
            assert headers.get(name, "x") == "2"
            assert name in headers
        assert headers.get_all("c") == ["4"]

    def test_several_in_order(self) -> None:
        headers = self.headers()
        assert headers.get_all("a") == ["1", "3", "5"]
        for lookup in (headers.__getitem__, headers.get):
            with pytest.raises(MultipleValuesError) as exc_info:
                lookup("a")
            assert str(exc_info.value) == "several values for header a"

    def test_empty_value_is_present(self) -> None:
        headers = Headers([("A", "")])
        assert headers["a"] == ""
        assert headers.get("a", "x") == ""
        assert headers.get_all("A") == [""]

    def test_names_from_the_parser(self) -> None:
        request = RequestParser().feed(b"GET / HTTP/1.1\r\nX-One: 1\r\nx-one: 2\r\nY: 3\r\n\r\n")
        assert request is not None
        assert request.headers.get_all("X-ONE") == ["1", "2"]
        assert request.headers["y"] == "3"
        assert request.headers.items() == [("X-One", "1"), ("x-one", "2"), ("Y", "3")]
