"""Tests of HTTP/1.1 messages and their parsers (protocol/http11.py): real bytes, no mocks.

- :class:`RequestParser` and :class:`ResponseParser` check and parse a header block
  received whole at once (the fast path); fed one byte at a time, they go line by
  line. Both must give the same message and raise the same error, at and just over
  every limit, with or without bytes after the message.
- Any bytes in: a message, ``None`` or a documented error out (hypothesis).
"""

from __future__ import annotations

import contextlib
import functools
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsharbor.exceptions import (
    HeaderLineTooLong,
    HeadersTooLarge,
    InvalidHandshake,
    InvalidHTTPVersion,
    InvalidMessage,
    InvalidState,
    RequestLineTooLong,
    SecurityError,
    StatusLineTooLong,
    TooManyHeaders,
)
from wsharbor.protocol import http11
from wsharbor.protocol.datastructures import Headers
from wsharbor.protocol.http11 import Request, RequestParser, Response, ResponseParser

from .samples import (
    FRAME,
    MODES,
    REQUEST_LINE,
    RFC_ACCEPT,
    RFC_KEY,
    RFC_REQUEST,
    RFC_RESPONSE,
    UPGRADE_FIELDS,
    block,
    both_ways,
    chunked,
    feed,
    limits_of,
    spy_line_by_line,
    upgrade,
)

# ---------------------------------------------------------------------------
# Request and Response
# ---------------------------------------------------------------------------


class TestMessages:
    def test_request_serialize(self) -> None:
        request = Request("/chat?x=1", Headers([("Host", "a")]))
        assert request.serialize() == b"GET /chat?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"

    @pytest.mark.parametrize(
        ("method", "path"), [("GET", "/a b"), ("GET", "/a\r\n"), ("GE T", "/"), ("GET", "")]
    )
    def test_request_serialize_invalid(self, method: str, path: str) -> None:
        with pytest.raises(ValueError):
            Request(path, Headers(), method).serialize()

    def test_response_serialize(self) -> None:
        response = Response(404, "Not Found", Headers([("A", "1")]), b"body")
        assert response.serialize() == b"HTTP/1.1 404 Not Found\r\nA: 1\r\n\r\nbody"

    @pytest.mark.parametrize(("status", "reason"), [(99, "x"), (1000, "x"), (200, "O\r\nK")])
    def test_response_serialize_invalid(self, status: int, reason: str) -> None:
        with pytest.raises(ValueError):
            Response(status, reason, Headers()).serialize()

    def test_response_text(self) -> None:
        response = Response.text(503, "busy\n", [("Retry-After", "1")])
        assert response.status == 503
        assert response.reason_phrase == "Service Unavailable"
        assert response.body == b"busy\n"
        assert response.headers.items() == [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", "5"),
            ("Connection", "close"),
            ("Retry-After", "1"),
        ]

    def test_response_status_code_alias(self) -> None:
        # websockets names the fields status_code and reason_phrase.
        response = Response(404, "Not Found", Headers())
        assert response.status_code == response.status == 404
        assert response.reason_phrase == "Not Found"
        with pytest.raises(AttributeError):
            response.status_code = 200  # type: ignore[misc]
        response.status = 200
        assert response.status_code == 200

    def test_response_text_overrides(self) -> None:
        response = Response.text(
            599,
            "é",
            {"Content-Type": "text/x", "Content-Length": "99", "Connection": "keep-alive"},
        )
        assert response.reason_phrase == "Unknown"
        assert response.headers.items() == [
            ("Content-Length", "2"),
            ("Content-Type", "text/x"),
            ("Connection", "keep-alive"),
        ]


# ---------------------------------------------------------------------------
# RequestParser
# ---------------------------------------------------------------------------


class TestRequestParser:
    @pytest.mark.parametrize("mode", MODES)
    def test_rfc_request(self, mode: str) -> None:
        parser = RequestParser()
        request = feed(parser, RFC_REQUEST, mode)
        assert isinstance(request, Request)
        assert request.method == "GET"
        assert request.path == "/chat"
        assert request.headers["Sec-WebSocket-Key"] == RFC_KEY
        assert request.headers.get_all("Sec-WebSocket-Protocol") == ["chat, superchat"]
        assert parser.leftover == b""

    @pytest.mark.parametrize("mode", MODES)
    def test_trailing_frames_kept(self, mode: str) -> None:
        parser = RequestParser()
        request = feed(parser, RFC_REQUEST + FRAME, mode)
        assert isinstance(request, Request)
        assert parser.leftover == FRAME

    @pytest.mark.parametrize("mode", MODES)
    def test_plain_get_without_upgrade(self, mode: str) -> None:
        data = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        pipelined = b"GET /metrics HTTP/1.1\r\n\r\n"
        parser = RequestParser()
        request = feed(parser, data + pipelined, mode)
        assert request == Request("/healthz", Headers([("Host", "localhost")]))
        assert parser.leftover == pipelined

    def test_other_methods_parse(self) -> None:
        request = RequestParser().feed(b"POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert request is not None
        assert request.method == "POST"

    def test_percent_encoded_path_kept_raw(self) -> None:
        request = RequestParser().feed(b"GET /a%20b/%2F?q=%C3%A9&x HTTP/1.1\r\n\r\n")
        assert request is not None
        assert request.path == "/a%20b/%2F?q=%C3%A9&x"

    def test_header_values_whitespace_and_obs_text(self) -> None:
        request = RequestParser().feed(b"GET / HTTP/1.1\r\nX:   a b  \r\nY: \xe9\r\n\r\n")
        assert request is not None
        assert request.headers.items() == [("X", "a b"), ("Y", "é")]

    def test_incomplete_returns_none(self) -> None:
        parser = RequestParser()
        assert parser.feed(RFC_REQUEST[:-2]) is None
        assert parser.leftover == b""
        assert parser.feed(b"\r\n") is not None

    def test_feed_after_completion(self) -> None:
        parser = RequestParser()
        assert parser.feed(RFC_REQUEST) is not None
        with pytest.raises(InvalidState):
            parser.feed(b"more")

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize(
        "version", [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/0.9", b"HTTP/11.1"]
    )
    def test_http_version_505(self, version: bytes, mode: str) -> None:
        data = b"GET / " + version + b"\r\nHost: a\r\n\r\n"
        with pytest.raises(InvalidHTTPVersion) as exc_info:
            feed(RequestParser(), data, mode)
        assert exc_info.value.status == 505
        assert "expected HTTP/1.1" in str(exc_info.value)

    def test_http_09_505(self) -> None:
        with pytest.raises(InvalidHTTPVersion) as exc_info:
            RequestParser().feed(b"GET /\r\n\r\n")
        assert str(exc_info.value) == "unsupported HTTP version: HTTP/0.9 (expected HTTP/1.1)"

    def test_other_protocols_400(self) -> None:
        with pytest.raises(InvalidMessage) as exc_info:
            RequestParser().feed(b"GET / RTSP/1.0\r\n\r\n")
        assert str(exc_info.value) == "malformed HTTP request: RTSP/1.0 isn't HTTP"

    @pytest.mark.parametrize("mode", MODES)
    def test_http2_preface_505(self, mode: str) -> None:
        with pytest.raises(InvalidHTTPVersion) as exc_info:
            feed(RequestParser(), b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", mode)
        assert exc_info.value.status == 505

    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize(
        "data",
        [
            b"GET / HTTP/1.1\r\nHost a\r\n\r\n",  # no colon
            b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  # obs-fold
            b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",  # NUL in a value
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",  # control character
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",  # non-ASCII target
            b"\r\r\nGET / HTTP/1.1\r\n\r\n",  # CR CR LF: not an empty line
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",  # bare LF ends the headers
            b"G\x00T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",  # body
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-LENGTH: 5\r\n\r\nhello",  # any case
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nTRANSFER-ENCODING: chunked\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # TLS on a plain port
        ],
    )
    def test_malformed_400(self, data: bytes, mode: str) -> None:
        with pytest.raises(InvalidMessage) as exc_info:
            feed(RequestParser(), data, mode)
        assert exc_info.value.status == 400

    def test_content_length_zero_allowed(self) -> None:
        assert RequestParser().feed(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n") is not None

    def test_error_is_sticky(self) -> None:
        parser = RequestParser()
        with pytest.raises(InvalidMessage) as first:
            parser.feed(b"GET / HTTP/1.1\r\nHost a\r\n")
        with pytest.raises(InvalidMessage) as second:
            parser.feed(b"\r\n")
        assert first.value is second.value

    @pytest.mark.parametrize("mode", MODES)
    def test_request_line_too_long_431(self, mode: str) -> None:
        data = b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n"
        with pytest.raises(HeadersTooLarge) as exc_info:
            feed(RequestParser(max_request_line=100), data, mode)
        assert exc_info.value.status == 431
        assert "request line too long" in str(exc_info.value)

    def test_request_line_at_limit(self) -> None:
        line = b"GET /" + b"a" * 86 + b" HTTP/1.1"
        assert len(line) == 100
        assert RequestParser(max_request_line=100).feed(line + b"\r\n\r\n") is not None

    @pytest.mark.parametrize("mode", MODES)
    def test_header_line_too_long_431(self, mode: str) -> None:
        data = b"GET / HTTP/1.1\r\nX: " + b"a" * 100 + b"\r\n\r\n"
        with pytest.raises(HeadersTooLarge) as exc_info:
            feed(RequestParser(max_header_line=100), data, mode)
        assert exc_info.value.status == 431
        assert "header line too long" in str(exc_info.value)

    def test_header_line_at_limit(self) -> None:
        data = b"GET / HTTP/1.1\r\nX: " + b"a" * 97 + b"\r\n\r\n"
        assert RequestParser(max_header_line=100).feed(data) is not None

    @pytest.mark.parametrize("mode", MODES)
    def test_too_many_headers_431(self, mode: str) -> None:
        data = b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 11 + b"\r\n"
        with pytest.raises(HeadersTooLarge) as exc_info:
            feed(RequestParser(max_headers=10), data, mode)
        assert exc_info.value.status == 431
        assert "too many headers" in str(exc_info.value)

    def test_header_count_at_limit(self) -> None:
        data = b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 10 + b"\r\n"
        request = RequestParser(max_headers=10).feed(data)
        assert request is not None
        assert len(request.headers.get_all("X")) == 10

    def test_default_header_count_limit(self) -> None:
        data = b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 129 + b"\r\n"
        with pytest.raises(HeadersTooLarge):
            RequestParser().feed(data)

    @pytest.mark.parametrize("mode", MODES)
    def test_headers_too_large_431(self, mode: str) -> None:
        data = (
            b"GET / HTTP/1.1\r\n"
            + b"X: "
            + b"a" * 45
            + b"\r\n" * 1
            + b"Y: "
            + b"b" * 60
            + b"\r\n\r\n"
        )
        with pytest.raises(HeadersTooLarge) as exc_info:
            feed(RequestParser(max_headers_size=100), data, mode)
        assert exc_info.value.status == 431
        assert "headers too large" in str(exc_info.value)

    def test_endless_request_line_cut_at_limit(self) -> None:
        parser = RequestParser(max_request_line=1000)
        fed = 0
        with pytest.raises(HeadersTooLarge):
            while True:
                parser.feed(b"GET /" if fed == 0 else b"a" * 100)
                fed += 100
                assert fed <= 1200
        assert len(parser._pending) <= 1100

    def test_endless_header_cut_at_limit(self) -> None:
        parser = RequestParser()  # defaults: 8 KiB line, 64 KiB headers
        parser.feed(b"GET / HTTP/1.1\r\nX-Endless: ")
        fed = 0
        with pytest.raises(HeadersTooLarge):
            while True:
                parser.feed(b"a" * 512)
                fed += 512
                assert fed <= 8192 + 512
        assert len(parser._pending) <= 8192 + 512

    def test_endless_headers_cut_at_total_size(self) -> None:
        parser = RequestParser(max_headers=10_000)
        parser.feed(b"GET / HTTP/1.1\r\n")
        fed = 0
        with pytest.raises(HeadersTooLarge) as exc_info:
            while True:
                parser.feed(b"X: " + b"a" * 1000 + b"\r\n")
                fed += 1005
                assert fed <= 65536 + 1005
        assert "headers too large" in str(exc_info.value)

    def test_partial_header_count_over_limit(self) -> None:
        parser = RequestParser(max_headers=1)
        parser.feed(b"GET / HTTP/1.1\r\nA: 1\r\n")
        with pytest.raises(HeadersTooLarge):
            parser.feed(b"B")

    @pytest.mark.parametrize("mode", MODES)
    def test_header_count_at_limit_fed_in_pieces(self, mode: str) -> None:
        # A lone CR after the last header may begin the blank line: not a header
        # over the limit.
        data = b"GET / HTTP/1.1\r\nA: 1\r\n\r\n"
        request = feed(RequestParser(max_headers=1), data, mode)
        assert isinstance(request, Request)
        parser = RequestParser(max_headers=1)
        assert parser.feed(b"GET / HTTP/1.1\r\nA: 1\r\n\r") is None
        with pytest.raises(HeadersTooLarge) as exc_info:
            parser.feed(b"B: 2\r\n\r\n")
        assert str(exc_info.value) == "too many headers: over 1"

    def test_partial_headers_size_over_limit(self) -> None:
        parser = RequestParser(max_headers_size=20, max_header_line=100)
        parser.feed(b"GET / HTTP/1.1\r\nA: 123456789\r\n")
        with pytest.raises(HeadersTooLarge):
            parser.feed(b"B: 123456789")

    def test_connect_method(self) -> None:
        parser = RequestParser()
        request = parser.feed(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nxyz")
        assert request is not None
        assert request.method == "CONNECT"
        assert parser.leftover == b"xyz"


# ---------------------------------------------------------------------------
# ResponseParser
# ---------------------------------------------------------------------------


class TestResponseParser:
    @pytest.mark.parametrize("mode", MODES)
    def test_101_with_frames(self, mode: str) -> None:
        parser = ResponseParser()
        response = feed(parser, RFC_RESPONSE + FRAME, mode)
        assert isinstance(response, Response)
        assert response.status == 101
        assert response.reason_phrase == "Switching Protocols"
        assert response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT
        assert response.body == b""
        assert parser.leftover == FRAME

    def test_101_without_upgrade_headers(self) -> None:
        parser = ResponseParser()
        response = parser.feed(b"HTTP/1.1 101 Switching Protocols\r\n\r\nxy")
        assert response is not None
        assert response.status == 101
        assert parser.leftover == b"xy"

    @pytest.mark.parametrize("mode", MODES)
    def test_error_with_body(self, mode: str) -> None:
        data = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 10\r\n\r\nforbidden\nJUNK"
        parser = ResponseParser()
        response = feed(parser, data, mode)
        assert isinstance(response, Response)
        assert response.status == 403
        assert response.body == b"forbidden\n"

    @pytest.mark.parametrize("mode", MODES)
    def test_chunked_body(self, mode: str) -> None:
        data = (
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        response = feed(ResponseParser(), data, mode)
        assert isinstance(response, Response)
        assert response.body == b"abcde"

    def test_body_truncated_at_limit(self) -> None:
        parser = ResponseParser(max_body_size=4)
        assert parser.feed(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 10\r\n\r\n") is None
        response = parser.feed(b"0123456")
        assert response is not None
        assert response.body == b"0123"

    def test_chunked_body_truncated_at_limit(self) -> None:
        data = (
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        response = ResponseParser(max_body_size=2).feed(data)
        assert response is not None
        assert response.body == b"ab"

    def test_body_until_close_not_read(self) -> None:
        response = ResponseParser().feed(b"HTTP/1.1 400 Bad Request\r\n\r\nbody")
        assert response is not None
        assert response.body == b""

    @pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified", b"100 Continue"])
    def test_no_body_statuses(self, status: bytes) -> None:
        response = ResponseParser().feed(b"HTTP/1.1 " + status + b"\r\n\r\n")
        assert response is not None
        assert response.body == b""

    def test_empty_reason(self) -> None:
        response = ResponseParser().feed(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")
        assert response is not None
        assert (response.status, response.reason_phrase) == (200, "")

    def test_malformed_chunked_body(self) -> None:
        parser = ResponseParser()
        parser.feed(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n")
        with pytest.raises(InvalidMessage):
            parser.feed(b"zz\r\n")

    @pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/2"])
    def test_http_version_505(self, version: bytes) -> None:
        with pytest.raises(InvalidHTTPVersion):
            ResponseParser().feed(version + b" 200 OK\r\n\r\n")

    @pytest.mark.parametrize(
        "data",
        [
            b"RTSP/1.0 200 OK\r\n\r\n",
            b"ICE/1.1 200 OK\r\n\r\n",
            b"HTTX/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SSH-2.0-x\r\n\r\n",
        ],
    )
    def test_malformed(self, data: bytes) -> None:
        with pytest.raises(InvalidMessage):
            ResponseParser().feed(data)

    def test_status_line_too_long(self) -> None:
        with pytest.raises(HeadersTooLarge) as exc_info:
            ResponseParser(max_request_line=20).feed(b"HTTP/1.1 200 " + b"O" * 20 + b"\r\n")
        assert "status line too long" in str(exc_info.value)
        with pytest.raises(HeadersTooLarge):
            ResponseParser(max_request_line=20).feed(b"HTTP/1.1 200 " + b"O" * 20)


# ---------------------------------------------------------------------------
# Feeding whole (fast path) and one byte at a time (line by line): limits
# ---------------------------------------------------------------------------

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
        assert outcome[0] == "error"
        assert issubclass(outcome[1], HeadersTooLarge)
        assert outcome[2] == 431
        assert not fast

    @pytest.mark.parametrize(
        ("limit", "error"),
        [
            ("max_request_line", RequestLineTooLong),
            ("max_header_line", HeaderLineTooLong),
            ("max_headers", TooManyHeaders),
            ("max_headers_size", TooManyHeaders),
        ],
    )
    def test_websockets_names_of_each_limit(self, limit: str, error: type[HeadersTooLarge]) -> None:
        # websockets files these under SecurityError; ours are 431 too.
        with pytest.raises(error) as exc_info:
            RequestParser(**OVER_LIMITS[limit]).feed(upgrade())
        assert isinstance(exc_info.value, SecurityError)
        assert exc_info.value.status == 431

    def test_status_line_too_long(self) -> None:
        with pytest.raises(StatusLineTooLong):
            ResponseParser(max_request_line=16).feed(
                b"HTTP/1.1 101 Switching Protocols, really\r\n\r\n"
            )

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
                    assert not fast or not issubclass(outcome[1], HeadersTooLarge), (limit, delta)
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
    "empty lines, one a bare LF": b"\r\n\n" + upgrade(),
    "CR CR LF first": b"\r\r\n" + upgrade(),
    "empty lines then an empty block": b"\r\n\r\n" + b"GET / HTTP/1.1\r\n\r\n",
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
# Empty lines before the request line (RFC 9112 section 2.2)
# ---------------------------------------------------------------------------


class TestEmptyLinesBeforeRequestLine:
    @pytest.mark.parametrize("prefix", [b"\r\n", b"\n", b"\r\n\r\n", b"\n\r\n\n"])
    def test_ignored(self, prefix: bytes) -> None:
        # Whole, byte by byte and with the frames after it: the request without them.
        expected, _ = both_ways(RequestParser, upgrade(tail=FRAME))
        assert expected[0] == "request"
        assert expected[-1] == FRAME
        outcome, _ = both_ways(RequestParser, prefix + upgrade(tail=FRAME))
        assert outcome == expected

    @pytest.mark.parametrize("mode", MODES)
    def test_ignored_fed_in_pieces(self, mode: str) -> None:
        parser = RequestParser()
        request = feed(parser, b"\r\n" + RFC_REQUEST + FRAME, mode)
        assert request == RequestParser().feed(RFC_REQUEST)
        assert parser.leftover == FRAME

    def test_only_empty_lines_is_incomplete(self) -> None:
        outcome, _ = both_ways(RequestParser, b"\r\n\n\r\n")
        assert outcome == ("incomplete",)
        parser = RequestParser()
        assert parser.feed(b"\r\n\r") is None
        assert parser.feed(b"\n\r\nGE") is None
        request = parser.feed(RFC_REQUEST[2:])
        assert request == RequestParser().feed(RFC_REQUEST)

    @pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
    def test_bound_is_max_request_line_bytes(self, line_end: bytes) -> None:
        request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        factory = functools.partial(RequestParser, max_request_line=100)
        count = 100 // len(line_end)
        at, _ = both_ways(factory, line_end * count + request)
        assert at[0] == "request"
        over, _ = both_ways(factory, line_end * (count + 1) + request)
        assert over == (
            "error",
            InvalidMessage,
            400,
            "malformed HTTP request: over 100 bytes of empty lines before the request line",
        )

    def test_default_bound(self) -> None:
        assert RequestParser().feed(b"\r\n" * 4096 + RFC_REQUEST) is not None
        with pytest.raises(InvalidMessage):
            RequestParser().feed(b"\r\n" * 4097 + RFC_REQUEST)

    @pytest.mark.parametrize("chunks", [[b"\r\n" * 256], [b"\n" * 256], [b"\r", b"\n"], [b"\n"]])
    def test_endless_empty_lines_refused(self, chunks: list[bytes]) -> None:
        parser = RequestParser()
        fed = 0
        with pytest.raises(InvalidMessage) as exc_info:
            while True:
                for chunk in chunks:
                    parser.feed(chunk)
                    # Nothing kept but a CR that may begin the next CRLF.
                    assert len(parser._pending) <= 1
                    fed += len(chunk)
                assert fed <= 8192 + 512
        assert exc_info.value.status == 400
        assert str(exc_info.value) == (
            "malformed HTTP request: over 8192 bytes of empty lines before the request line"
        )
        with pytest.raises(InvalidMessage):
            parser.feed(RFC_REQUEST)

    def test_endless_cr_refused(self) -> None:
        # A bare CR ends no line: an endless one is an endless request line.
        parser = RequestParser()
        with pytest.raises(HeadersTooLarge) as exc_info:
            for _ in range(9000):
                parser.feed(b"\r")
        assert str(exc_info.value) == "request line too long: over 8192 bytes"

    @pytest.mark.parametrize("data", [b"\r\r\n" + RFC_REQUEST, b"\r\n\rGET / HTTP/1.1\r\n\r\n"])
    def test_cr_before_request_line_400(self, data: bytes) -> None:
        outcome, _ = both_ways(RequestParser, data)
        assert outcome == (
            "error",
            InvalidMessage,
            400,
            "malformed HTTP request: CR at the start of the request line",
        )

    @pytest.mark.parametrize("prefix", [b"\r\n", b"\n"])
    def test_not_before_a_status_line(self, prefix: bytes) -> None:
        outcome, _ = both_ways(ResponseParser, prefix + RFC_RESPONSE)
        message = "malformed HTTP response: empty first line"
        assert outcome == ("error", InvalidMessage, 400, message)


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
# Properties
# ---------------------------------------------------------------------------

# Input that looks like HTTP often enough to go deep into the parsers.
http_fragments = st.sampled_from(
    [
        b"GET ",
        b"HTTP/1.1 ",
        b"HTTP/1.1",
        b"HTTP/1.0",
        b" 101 ",
        b" 400 ",
        b"/",
        b"\r\n",
        b"\n",
        b"\r",
        b": ",
        b"Host",
        b"Upgrade: websocket",
        b"Content-Length: 3",
        b"Transfer-Encoding: chunked",
        b"0\r\n",
        b"\x00",
        b"\xff",
        b" ",
        b"a",
    ]
)
http_like = st.lists(st.one_of(http_fragments, st.binary(max_size=8)), max_size=40).map(b"".join)
any_input = st.one_of(st.binary(max_size=300), http_like)
splits = st.lists(st.integers(min_value=0, max_value=300), max_size=6)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_input, cuts=splits, small=st.booleans())
def test_request_parser_only_documented_errors(data: bytes, cuts: list[int], small: bool) -> None:
    limits = dict(max_request_line=40, max_header_line=40, max_headers=3, max_headers_size=80)
    parser = RequestParser(**limits) if small else RequestParser()
    try:
        for chunk in chunked(data, cuts):
            result = parser.feed(chunk)
            if result is not None:
                assert isinstance(result, Request)
                break
    except InvalidHandshake:
        pass


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=any_input, cuts=splits)
def test_response_parser_only_documented_errors(data: bytes, cuts: list[int]) -> None:
    parser = ResponseParser(max_body_size=16)
    try:
        for chunk in chunked(data, cuts):
            result = parser.feed(chunk)
            if result is not None:
                assert isinstance(result, Response)
                break
    except InvalidHandshake:
        pass


@given(prefix=st.sampled_from([b"GET / HTTP/1.1\r\n", b"HTTP/1.1 101 OK\r\n"]), rest=any_input)
def test_after_valid_first_line_only_documented_errors(prefix: bytes, rest: bytes) -> None:
    parser = RequestParser() if prefix.startswith(b"GET") else ResponseParser()
    with contextlib.suppress(InvalidHandshake):
        parser.feed(prefix + rest)


@given(cuts=splits, trailing=st.binary(max_size=50))
def test_request_split_invariance(cuts: list[int], trailing: bytes) -> None:
    data = RFC_REQUEST + trailing
    parser = RequestParser()
    result = None
    received = b""
    for chunk in chunked(data, cuts):
        if result is None:
            result = parser.feed(chunk)
        else:
            received += chunk
    assert result == RequestParser().feed(RFC_REQUEST)
    assert parser.leftover + received == trailing


@given(
    empty=st.lists(st.sampled_from([b"\r\n", b"\n"]), min_size=1, max_size=5).map(b"".join),
    cuts=splits,
    trailing=st.binary(max_size=50),
)
def test_empty_lines_split_invariance(empty: bytes, cuts: list[int], trailing: bytes) -> None:
    data = empty + RFC_REQUEST + trailing
    parser = RequestParser()
    result = None
    received = b""
    for chunk in chunked(data, cuts):
        if result is None:
            result = parser.feed(chunk)
        else:
            received += chunk
    assert result == RequestParser().feed(RFC_REQUEST)
    assert parser.leftover + received == trailing


@pytest.mark.parametrize(
    "data",
    [b"\x00" * 1024, b"GET /\x00", b"GET / HTTP/1.1\r\nX: a\x01", b"\x16\x03\x01\x02\x00"],
    ids=["NULs", "request line", "header line", "TLS record"],
)
def test_control_character_in_an_unfinished_line_is_400_at_once(data: bytes) -> None:
    """A line with a control character is refused without waiting for its end,
    which may never come (found by make attack: 1 KiB of NUL bytes waited for
    open_timeout)."""
    with pytest.raises(InvalidMessage, match="control character") as caught:
        RequestParser().feed(data)
    assert caught.value.status == 400
    with pytest.raises(InvalidMessage, match="control character"):
        feed_bytewise_raising(data)


def feed_bytewise_raising(data: bytes) -> None:
    parser = RequestParser()
    for i in range(len(data)):
        parser.feed(data[i : i + 1])


# Field names received are decoded once and kept (http11._FIELD_NAMES), bounded.


def test_field_names_keep_their_case_and_their_keys() -> None:
    request = RequestParser().feed(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Token: 1\r\nx-token: 2\r\nX-TOKEN: 3\r\n\r\n"
    )
    assert request is not None
    assert request.headers.raw_items() == [
        ("Host", "a"),
        ("X-Token", "1"),
        ("x-token", "2"),
        ("X-TOKEN", "3"),
    ]
    assert request.headers.get_all("X-token") == ["1", "2", "3"]
    # A second request gets the same names from the cache, and equal headers.
    again = RequestParser().feed(
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Token: 1\r\nx-token: 2\r\nX-TOKEN: 3\r\n\r\n"
    )
    assert again is not None
    assert again.headers == request.headers
    assert again.headers.raw_items() == request.headers.raw_items()


def test_made_up_field_names_dont_grow_the_name_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cache is the general path's (the C parser decodes names itself).
    monkeypatch.setattr(http11, "_parse_request", None)
    for batch in range(4):
        names = [f"X-Made-Up-{batch}-{index}" for index in range(100)]
        head = "".join(f"{name}: {index}\r\n" for index, name in enumerate(names))
        request = RequestParser().feed(f"GET / HTTP/1.1\r\nHost: a\r\n{head}\r\n".encode())
        assert request is not None
        # Past the bound, names are still decoded right, every time.
        assert [name for name, _ in request.headers.raw_items()] == ["Host", *names]
        assert request.headers.get_all(names[-1].lower()) == ["99"]
        assert len(http11._FIELD_NAMES) <= http11._FIELD_NAMES_MAX
    assert len(http11._FIELD_NAMES) == http11._FIELD_NAMES_MAX


# ---------------------------------------------------------------------------
# The C parser of the usual handshake (_speedups.parse_request)
# ---------------------------------------------------------------------------

needs_c_parser = pytest.mark.skipif(
    http11._parse_request is None, reason="the C accelerator isn't in use"
)

#: The opening handshake Chromium sends, field for field.
CHROMIUM_REQUEST = block(
    b"GET /chat?room=1 HTTP/1.1",
    [
        b"Host: 127.0.0.1:8765",
        b"Connection: Upgrade",
        b"Pragma: no-cache",
        b"Cache-Control: no-cache",
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        b"HeadlessChrome/131.0.0.0 Safari/537.36",
        b"Upgrade: websocket",
        b"Origin: http://127.0.0.1:8765",
        b"Sec-WebSocket-Version: 13",
        b"Accept-Encoding: gzip, deflate, br, zstd",
        b"Accept-Language: en-US,en;q=0.9",
        b"Sec-WebSocket-Key: " + RFC_KEY.encode(),
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    ],
)


def parse_generally(data: bytes, **limits: int) -> tuple[Request, bytes]:
    """``data`` fed whole to a parser without the C path."""
    parser = RequestParser(**limits)
    saved, http11._parse_request = http11._parse_request, None
    try:
        request = parser.feed(data)
    finally:
        http11._parse_request = saved
    assert request is not None
    return request, parser.leftover


def parse_in_c(data: bytes, **limits: int) -> tuple[str, list[tuple[str, str]], list[str]] | None:
    """The C parser's answer, as RequestParser asks it (None without CRLF CRLF)."""
    assert http11._parse_request is not None
    end = data.find(b"\r\n\r\n")
    if end <= 0:
        return None
    parser = RequestParser(**limits)  # its limits, defaults included
    return http11._parse_request(
        data,
        end,
        parser.max_request_line,
        parser.max_header_line,
        parser.max_headers,
        parser.max_headers_size,
    )


def assert_same_as_general(data: bytes, **limits: int) -> bool:
    """If the C parser takes ``data``, the general path returns the same request (it
    must not raise, either); return whether the C parser took it."""
    parsed = parse_in_c(data, **limits)
    if parsed is None:
        return False
    path, fields, keys = parsed
    request, leftover = parse_generally(data, **limits)
    assert (request.method, request.path) == ("GET", path)
    assert request.headers.raw_items() == fields
    assert request.headers._keys == keys
    assert all(key is sys.intern(key) for key in keys)
    # And the parser's own result with the C path on.
    fast = RequestParser(**limits)
    assert fast.feed(data) == request
    assert fast.leftover == leftover == data[data.find(b"\r\n\r\n") + 4 :]
    assert fast._request_parser is None  # llhttp was never needed
    return True


@needs_c_parser
@pytest.mark.parametrize(
    "data",
    [
        RFC_REQUEST,
        RFC_REQUEST + FRAME,
        CHROMIUM_REQUEST,
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ HTTP/1.1\r\n\r\n",
        b"GET /%zz HTTP/1.1\r\nX:\r\nY: \t \r\nZ:v\r\nW: a  b \t\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Latin: caf\xe9\r\nx-latin: \xff\r\n\r\n",
        b"GET / HTTP/1.1\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n",
        ODD["bare LF after the block"],
    ],
    ids=[
        "RFC 6455",
        "RFC 6455 and a frame",
        "Chromium",
        "no header",
        "every VCHAR in the target",
        "empty values and OWS",
        "obs-text",
        "every tchar",
        "bare LF after the block",
    ],
)
def test_c_parser_takes_the_usual_requests(data: bytes) -> None:
    assert assert_same_as_general(data)


@needs_c_parser
@pytest.mark.parametrize(
    "data",
    [
        # Bytes after a plain block are no part of it: that one is the C parser's.
        *(data for name, data in ODD.items() if name != "bare LF after the block"),
        b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://a/b?c#d HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET ! HTTP/1.1\r\nHost: a\r\n\r\n",
        upgrade().replace(b"GET", b"HEAD"),
        upgrade().replace(b"GET", b"get"),
        upgrade().replace(b"GET /chat", b"GET  /chat"),
        upgrade().replace(b"GET /chat", b"GET /chat "),
        upgrade().replace(b"Host:", b"Host :"),
        upgrade().replace(b"Host:", b"Ho(st:"),
        upgrade({b"X": [b"a\x7fb"]}),
        upgrade({b"X": [b"a\x1bb"]}),
        upgrade({b"Content-Length": [b"0"]}),
        upgrade({b"TRANSFER-ENCODING": [b"chunked"]}),
        b"GET / HTTP/1.1\r\n:v\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost\r\n\r\n",
    ],
)
def test_c_parser_leaves_the_rest_to_the_general_path(data: bytes) -> None:
    assert not assert_same_as_general(data)
    # Fed whole, the parser gives what it gives byte by byte (the general path).
    both_ways(RequestParser, data)


@needs_c_parser
@pytest.mark.parametrize("name", list(AT_LIMITS))
def test_c_parser_at_and_over_each_limit(name: str) -> None:
    data = block(REQUEST_LINE, UPGRADE_FIELDS)
    assert assert_same_as_general(data, **AT_LIMITS)
    over = {**AT_LIMITS, name: AT_LIMITS[name] - 1}
    assert parse_in_c(data, **over) is None
    # Over a limit, the general path reports it, whole as byte by byte.
    outcome, _ = both_ways(functools.partial(RequestParser, **over), data)
    assert outcome[0] == "error" and outcome[1] is not InvalidMessage


@needs_c_parser
def test_c_parser_arguments() -> None:
    assert http11._parse_request is not None
    with pytest.raises(ValueError):
        http11._parse_request(RFC_REQUEST, 3, 1, 1, 1, 1)
    with pytest.raises(ValueError):
        http11._parse_request(RFC_REQUEST, len(RFC_REQUEST), 1, 1, 1, 1)
    with pytest.raises(TypeError):
        http11._parse_request(bytearray(RFC_REQUEST), 0, 1, 1, 1, 1)  # type: ignore[arg-type]


field_names = st.one_of(
    st.sampled_from(
        [b"Host", b"Upgrade", b"Connection", b"Content-Length", b"Transfer-Encoding", b"X"]
    ),
    st.binary(min_size=0, max_size=6),
    st.text(alphabet="!#$%&'*+-.^_`|~aZ09(): ", max_size=6).map(str.encode),
)
field_values = st.one_of(
    st.binary(max_size=10),
    st.text(alphabet=" \tabc09,;=/\x7f\x00\r\n\xe9", max_size=10).map(
        lambda text: text.encode("latin-1")
    ),
)
request_lines = st.tuples(
    st.sampled_from([b"GET", b"GET ", b"HEAD", b"get", b""]),
    st.one_of(
        st.binary(max_size=8),
        st.binary(max_size=8).map(lambda target: b"/" + target),
        st.sampled_from([b"/", b"/chat?x=1", b"*", b"/a b", b"http://a/", b"!"]),
    ),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.1 ", b"http/1.1", b"HTTP/1.11"]),
).map(lambda parts: parts[0] + b" " + parts[1] + b" " + parts[2])
field_lines = st.tuples(
    field_names, st.sampled_from([b": ", b":", b" :", b":\t", b""]), field_values
).map(b"".join)


@needs_c_parser
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=request_lines,
    fields=st.lists(field_lines, max_size=5),
    eol=st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"]),
    tail=st.binary(max_size=8),
    small=st.booleans(),
)
def test_c_parser_accepts_only_what_the_general_path_parses_the_same(
    first: bytes, fields: list[bytes], eol: bytes, tail: bytes, small: bool
) -> None:
    data = eol.join([first, *fields]) + b"\r\n\r\n" + tail
    if data.find(b"\r\n\r\n") <= 0:
        return
    limits = dict(max_request_line=20, max_header_line=12, max_headers=3, max_headers_size=40)
    assert_same_as_general(data, **(limits if small else {}))
