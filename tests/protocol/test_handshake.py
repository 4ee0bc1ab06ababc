"""Tests of the opening handshake (RFC 6455 section 4): real bytes, no mocks."""

from __future__ import annotations

import base64
import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsharbor.exceptions import (
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
from wsharbor.protocol.datastructures import Headers, MultipleValuesError
from wsharbor.protocol.frames import Frame
from wsharbor.protocol.handshake import (
    DEFAULT,
    Accepted,
    ClientHandshake,
    ServerHandshake,
    accept_key,
    error_response,
    parse_extension_header,
    parse_subprotocol_header,
    serialize_extension_header,
    serialize_subprotocol_header,
)
from wsharbor.protocol.http11 import Request, RequestParser, Response, ResponseParser
from wsharbor.protocol.uri import WebSocketURI, parse_uri
from wsharbor.typing import ExtensionParameter

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


# ---------------------------------------------------------------------------
# Fake extension factories implementing the Protocols of extensions.py.
# ---------------------------------------------------------------------------


@dataclass
class FakeExtension:
    name: str
    params: list[ExtensionParameter] = field(default_factory=list)

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame

    def encode(self, frame: Frame) -> Frame:
        return frame


class FakeServerFactory:
    """Accepts offers unless a parameter is named ``reject``; echoes the params."""

    def __init__(self, name: str = "x-fake", tag: str = "") -> None:
        self.name = name
        self.tag = tag

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[object],
    ) -> tuple[list[ExtensionParameter], FakeExtension]:
        if any(name == "reject" for name, _ in params):
            raise NegotiationError("rejected")
        if self.tag == "reject-all":
            raise NegotiationError("rejects everything")
        return list(params), FakeExtension(self.name, list(params))


class FakeClientFactory:
    """Offers ``params``; rejects a response with a parameter named ``bad``."""

    def __init__(self, name: str = "x-fake", params: Sequence[ExtensionParameter] = ()) -> None:
        self.name = name
        self.params = list(params)

    def get_request_params(self) -> list[ExtensionParameter]:
        return list(self.params)

    def process_response_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[object],
    ) -> FakeExtension:
        if any(name == "bad" for name, _ in params):
            raise NegotiationError("bad parameter")
        return FakeExtension(self.name, list(params))


# ---------------------------------------------------------------------------
# Headers
# ---------------------------------------------------------------------------


class TestHeaders:
    def test_case_insensitive_and_append(self) -> None:
        headers = Headers([("Host", "a")])
        headers["X-Foo"] = "1"
        headers["x-foo"] = "2"
        assert headers["HOST"] == "a"
        assert headers.get_all("X-FOO") == ["1", "2"]
        assert headers.items() == [("Host", "a"), ("X-Foo", "1"), ("x-foo", "2")]
        assert headers.raw_items() == headers.items()
        assert list(headers) == ["Host", "X-Foo"]
        assert len(headers) == 2
        assert "host" in headers
        assert "missing" not in headers
        assert 42 not in headers

    def test_multiple_values(self) -> None:
        headers = Headers([("A", "1"), ("a", "2")])
        with pytest.raises(MultipleValuesError) as exc_info:
            headers["A"]
        assert isinstance(exc_info.value, KeyError)
        assert str(exc_info.value) == "several values for header A"
        with pytest.raises(MultipleValuesError):
            headers.get("a")
        assert str(MultipleValuesError()) == ""

    def test_missing(self) -> None:
        headers = Headers()
        with pytest.raises(KeyError):
            headers["A"]
        assert headers.get("A") is None
        assert headers.get("A", "d") == "d"
        assert headers.get_all("A") == []
        with pytest.raises(KeyError):
            del headers["A"]

    def test_delete_removes_all(self) -> None:
        headers = Headers([("A", "1"), ("B", "2"), ("a", "3")])
        del headers["A"]
        assert headers.items() == [("B", "2")]
        assert "a" not in headers

    def test_init_and_update(self) -> None:
        assert Headers({"A": "1"}).items() == [("A", "1")]
        assert Headers(A="1").items() == [("A", "1")]
        headers = Headers([("A", "1")])
        headers.update(Headers([("B", "2")]), C="3")
        headers.update({"D": "4"})
        headers.update(None)
        assert headers.items() == [("A", "1"), ("B", "2"), ("C", "3"), ("D", "4")]
        assert Headers(headers) == headers

    def test_copy_is_independent(self) -> None:
        headers = Headers([("A", "1")])
        copy = headers.copy()
        copy["B"] = "2"
        assert headers.items() == [("A", "1")]
        assert copy == Headers([("a", "1"), ("b", "2")])

    def test_eq_and_repr(self) -> None:
        assert Headers([("A", "1")]) == Headers([("a", "1")])
        assert Headers([("A", "1")]) != Headers([("A", "2")])
        assert Headers([("A", "1")]) != [("A", "1")]
        assert repr(Headers([("A", "1")])) == "Headers([('A', '1')])"

    def test_serialize(self) -> None:
        headers = Headers([("Host", "a"), ("X", "é")])
        assert headers.serialize() == b"Host: a\r\nX: \xe9\r\n"

    @pytest.mark.parametrize(
        "value", ["a\r\nSet-Cookie: x", "a\nb", "a\rb", "a\x00b", "emoji \U0001f600"]
    )
    def test_value_injection_rejected(self, value: str) -> None:
        headers = Headers()
        with pytest.raises(ValueError):
            headers["X"] = value
        assert headers.items() == []

    @pytest.mark.parametrize("name", ["", "A B", "A:B", "A\r\nB", "A\x00", "é"])
    def test_name_injection_rejected(self, name: str) -> None:
        with pytest.raises(ValueError):
            Headers([(name, "v")])

    def test_non_str_rejected(self) -> None:
        with pytest.raises(ValueError):
            Headers([("A", 1)])  # type: ignore[list-item]


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


def test_accept_key_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


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
            b"\r\nGET / HTTP/1.1\r\n\r\n",  # empty first line
            b"GET / HTTP/1.1\r\nHost: a\r\n\n",  # bare LF ends the headers
            b"G\x00T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",  # body
            b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
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
# Sec-WebSocket-Extensions and Sec-WebSocket-Protocol
# ---------------------------------------------------------------------------


class TestExtensionHeader:
    @pytest.mark.parametrize(
        ("value", "parsed"),
        [
            ("permessage-deflate", [("permessage-deflate", [])]),
            (
                "permessage-deflate; client_max_window_bits",
                [("permessage-deflate", [("client_max_window_bits", None)])],
            ),
            (
                "permessage-deflate; client_max_window_bits=10; server_no_context_takeover",
                [
                    (
                        "permessage-deflate",
                        [("client_max_window_bits", "10"), ("server_no_context_takeover", None)],
                    )
                ],
            ),
            ('a; p="10"', [("a", [("p", "10")])]),
            ('a; p="\\1\\0"', [("a", [("p", "10")])]),
            ("a ;p = 1 ,b", [("a", [("p", "1")]), ("b", [])]),
            (" , a,, b , ", [("a", []), ("b", [])]),
            ("a\t;\tp", [("a", [("p", None)])]),
            ("a, a; x", [("a", []), ("a", [("x", None)])]),
        ],
    )
    def test_parse(self, value: str, parsed: object) -> None:
        assert parse_extension_header(value) == parsed

    def test_several_lines_concatenated(self) -> None:
        assert parse_extension_header(["a; x=1", "b", "c"]) == [
            ("a", [("x", "1")]),
            ("b", []),
            ("c", []),
        ]

    @pytest.mark.parametrize(
        "value",
        [
            "",
            ",",
            " , ",
            "a;",
            "a; =1",
            "a; p=",
            "a; p==1",
            'a; p="1 2"',
            'a; p=""',
            'a; p="unterminated',
            'a; p="\x01"',
            "a b",
            "a; p=1 q",
            "a/b",
            ";",
            "a,;",
            "a; p=1/2",
            "é",
        ],
    )
    def test_parse_malformed(self, value: str) -> None:
        with pytest.raises(InvalidHeader) as exc_info:
            parse_extension_header(value)
        assert exc_info.value.status == 400
        assert exc_info.value.name == "Sec-WebSocket-Extensions"

    def test_serialize(self) -> None:
        value = serialize_extension_header(
            [("permessage-deflate", [("client_max_window_bits", "10"), ("x", None)]), ("b", [])]
        )
        assert value == "permessage-deflate; client_max_window_bits=10; x, b"
        assert parse_extension_header(value) == [
            ("permessage-deflate", [("client_max_window_bits", "10"), ("x", None)]),
            ("b", []),
        ]

    @pytest.mark.parametrize(
        "extensions",
        [[("a b", [])], [("a", [("p q", None)])], [("a", [("p", "1 2")])], [("a", [("p", "")])]],
    )
    def test_serialize_invalid(
        self, extensions: list[tuple[str, list[ExtensionParameter]]]
    ) -> None:
        with pytest.raises(ValueError):
            serialize_extension_header(extensions)


class TestSubprotocolHeader:
    def test_parse(self) -> None:
        assert parse_subprotocol_header("chat, superchat") == ["chat", "superchat"]
        assert parse_subprotocol_header(["chat", "v2.x"]) == ["chat", "v2.x"]

    @pytest.mark.parametrize("value", ["", "chat superchat", "a/b", "chat;x", '"chat"'])
    def test_parse_malformed(self, value: str) -> None:
        with pytest.raises(InvalidHeader) as exc_info:
            parse_subprotocol_header(value)
        assert exc_info.value.status == 400

    def test_serialize(self) -> None:
        assert serialize_subprotocol_header(["chat", "superchat"]) == "chat, superchat"
        with pytest.raises(ValueError):
            serialize_subprotocol_header(["a b"])


# ---------------------------------------------------------------------------
# ServerHandshake
# ---------------------------------------------------------------------------


def make_request(
    *, method: str = "GET", remove: Sequence[str] = (), **replace: str | list[str]
) -> Request:
    """A valid upgrade request; ``remove`` drops headers, ``replace`` sets them."""
    headers = Headers(
        [
            ("Host", "server.example.com"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", RFC_KEY),
            ("Sec-WebSocket-Version", "13"),
        ]
    )
    for name in remove:
        del headers[name]
    for key, values in replace.items():
        name = key.replace("_", "-")
        if name in headers:
            del headers[name]
        for value in [values] if isinstance(values, str) else values:
            headers[name] = value
    return Request("/chat", headers, method)


class TestServerHandshake:
    def test_rfc_example_through_bytes(self) -> None:
        request = RequestParser().feed(RFC_REQUEST)
        assert request is not None
        accepted = ServerHandshake(subprotocols=["chat"], server_header=None).accept(request)
        assert isinstance(accepted, Accepted)
        assert accepted.subprotocol == "chat"
        assert accepted.extensions == []
        assert accepted.response.serialize() == RFC_RESPONSE

    def test_default_server_header(self) -> None:
        from wsharbor import __version__

        accepted = ServerHandshake().accept(make_request())
        assert accepted.response.headers["Server"] == f"wsharbor/{__version__}"
        assert repr(DEFAULT) == "DEFAULT"

    def test_custom_server_header(self) -> None:
        accepted = ServerHandshake(server_header="edge").accept(make_request())
        assert accepted.response.headers["Server"] == "edge"
        assert accepted.response.status == 101
        assert accepted.response.headers["Upgrade"] == "websocket"
        assert accepted.response.headers["Connection"] == "Upgrade"
        assert accepted.response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT
        assert "Sec-WebSocket-Protocol" not in accepted.response.headers
        assert "Sec-WebSocket-Extensions" not in accepted.response.headers

    @pytest.mark.parametrize(
        "request_",
        [
            make_request(Upgrade="WebSocket"),
            make_request(Upgrade="h2c, websocket"),
            make_request(Connection="keep-alive, Upgrade"),
            make_request(Connection=["keep-alive", "upgrade"]),
            make_request(Connection="UPGRADE"),
        ],
    )
    def test_accepted_variants(self, request_: Request) -> None:
        assert ServerHandshake().accept(request_).response.status == 101

    def test_method_405_with_allow(self) -> None:
        handshake = ServerHandshake(server_header="edge")
        with pytest.raises(InvalidMethod) as exc_info:
            handshake.accept(make_request(method="POST"))
        exc = exc_info.value
        assert exc.status == 405
        assert str(exc) == "unsupported HTTP method: POST (expected GET)"
        response = handshake.reject(exc)
        assert response.status == 405
        assert response.reason_phrase == "Method Not Allowed"
        assert response.headers["Allow"] == "GET"
        assert response.headers["Server"] == "edge"
        assert response.headers["Connection"] == "close"
        assert response.body == (str(exc) + "\n").encode()
        assert response.headers["Content-Length"] == str(len(response.body))

    def test_method_checked_first(self) -> None:
        with pytest.raises(InvalidMethod):
            ServerHandshake().accept(make_request(method="PUT", remove=["Host", "Upgrade"]))

    def test_healthz_without_upgrade_is_rejected(self) -> None:
        request = RequestParser().feed(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
        assert request is not None
        with pytest.raises(InvalidUpgrade) as exc_info:
            ServerHandshake().accept(request)
        assert str(exc_info.value) == "missing Upgrade header"

    @pytest.mark.parametrize(
        ("request_", "exc_type", "message"),
        [
            (make_request(remove=["Host"]), InvalidHeader, "missing Host header"),
            (
                make_request(Host=["a", "b"]),
                InvalidHeader,
                "invalid Host header: a, b (more than one)",
            ),
            (make_request(Host=""), InvalidHeader, "empty Host header"),
            (make_request(remove=["Upgrade"]), InvalidUpgrade, "missing Upgrade header"),
            (
                make_request(Upgrade="h2c"),
                InvalidUpgrade,
                "invalid Upgrade header: h2c (expected websocket)",
            ),
            (make_request(remove=["Connection"]), InvalidUpgrade, "missing Connection header"),
            (
                make_request(Connection="keep-alive"),
                InvalidUpgrade,
                "invalid Connection header: keep-alive (expected Upgrade)",
            ),
            (
                make_request(remove=["Sec-WebSocket-Key"]),
                InvalidHeader,
                "missing Sec-WebSocket-Key header",
            ),
            (
                make_request(Sec_WebSocket_Key=[RFC_KEY, RFC_KEY]),
                InvalidHeader,
                f"invalid Sec-WebSocket-Key header: {RFC_KEY}, {RFC_KEY} (more than one)",
            ),
            (
                make_request(Sec_WebSocket_Key="not base64!"),
                InvalidHeader,
                "invalid Sec-WebSocket-Key header: not base64! (not base64)",
            ),
            (
                make_request(Sec_WebSocket_Key="é"),
                InvalidHeader,
                "invalid Sec-WebSocket-Key header: é (not base64)",
            ),
            (
                make_request(Sec_WebSocket_Key="dGhlIHNhbXBsZQ=="),
                InvalidHeader,
                "invalid Sec-WebSocket-Key header: dGhlIHNhbXBsZQ== "
                "(expected 16 bytes base64-encoded)",
            ),
        ],
    )
    def test_rejected_400(
        self, request_: Request, exc_type: type[InvalidHandshake], message: str
    ) -> None:
        handshake = ServerHandshake()
        with pytest.raises(InvalidHandshake) as exc_info:
            handshake.accept(request_)
        assert type(exc_info.value) is exc_type
        assert exc_info.value.status == 400
        assert str(exc_info.value) == message
        response = handshake.reject(exc_info.value)
        assert response.status == 400
        assert response.reason_phrase == "Bad Request"
        assert response.body == (message + "\n").encode()
        serialized = response.serialize()
        assert serialized.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert serialized.count(b"\r\n\r\n") == 1

    @pytest.mark.parametrize(
        ("request_", "message"),
        [
            (
                make_request(remove=["Sec-WebSocket-Version"]),
                "missing Sec-WebSocket-Version header",
            ),
            (
                make_request(Sec_WebSocket_Version="8"),
                "invalid Sec-WebSocket-Version header: 8 (expected 13)",
            ),
            (
                make_request(Sec_WebSocket_Version="13, 8"),
                "invalid Sec-WebSocket-Version header: 13, 8 (expected 13)",
            ),
            (
                make_request(Sec_WebSocket_Version=["13", "13"]),
                "invalid Sec-WebSocket-Version header: 13, 13 (expected 13)",
            ),
        ],
    )
    def test_version_426(self, request_: Request, message: str) -> None:
        handshake = ServerHandshake()
        with pytest.raises(InvalidVersion) as exc_info:
            handshake.accept(request_)
        assert exc_info.value.status == 426
        assert str(exc_info.value) == message
        response = handshake.reject(exc_info.value)
        assert response.status == 426
        assert response.reason_phrase == "Upgrade Required"
        assert response.headers["Sec-WebSocket-Version"] == "13"

    def test_origin_allowed(self) -> None:
        handshake = ServerHandshake(origins=["https://a.example", "https://b.example"])
        assert handshake.accept(make_request(Origin="https://b.example")).response.status == 101

    @pytest.mark.parametrize(
        "request_", [make_request(Origin="https://evil.example"), make_request()]
    )
    def test_origin_403(self, request_: Request) -> None:
        handshake = ServerHandshake(origins=["https://a.example"])
        with pytest.raises(InvalidOrigin) as exc_info:
            handshake.accept(request_)
        assert exc_info.value.status == 403
        assert "not allowed" in str(exc_info.value)
        response = handshake.reject(exc_info.value)
        assert response.status == 403
        assert response.reason_phrase == "Forbidden"

    def test_origin_none_allows_missing(self) -> None:
        handshake = ServerHandshake(origins=[None, "https://a.example"])
        assert handshake.accept(make_request()).response.status == 101
        with pytest.raises(InvalidOrigin):
            handshake.accept(make_request(Origin="https://evil.example"))

    def test_origin_not_checked_by_default(self) -> None:
        assert ServerHandshake().accept(make_request(Origin="x")).response.status == 101

    def test_origin_duplicate_400(self) -> None:
        handshake = ServerHandshake(origins=["a"])
        with pytest.raises(InvalidHeader) as exc_info:
            handshake.accept(make_request(Origin=["a", "a"]))
        assert not isinstance(exc_info.value, InvalidOrigin)
        assert exc_info.value.status == 400

    # Extensions.

    def test_extension_accepted(self) -> None:
        handshake = ServerHandshake(extensions=[FakeServerFactory()])
        accepted = handshake.accept(make_request(Sec_WebSocket_Extensions='x-fake; a="1"; b'))
        assert accepted.extensions == [FakeExtension("x-fake", [("a", "1"), ("b", None)])]
        assert accepted.response.headers["Sec-WebSocket-Extensions"] == "x-fake; a=1; b"

    def test_extension_declined_then_next_offer(self) -> None:
        handshake = ServerHandshake(extensions=[FakeServerFactory()])
        accepted = handshake.accept(
            make_request(Sec_WebSocket_Extensions=["x-fake; reject", "x-fake; a=2", "x-fake; a=3"])
        )
        assert accepted.extensions == [FakeExtension("x-fake", [("a", "2")])]
        assert accepted.response.headers["Sec-WebSocket-Extensions"] == "x-fake; a=2"

    def test_extension_all_declined(self) -> None:
        handshake = ServerHandshake(extensions=[FakeServerFactory()])
        accepted = handshake.accept(make_request(Sec_WebSocket_Extensions="x-fake; reject"))
        assert accepted.extensions == []
        assert "Sec-WebSocket-Extensions" not in accepted.response.headers

    def test_extension_unknown_ignored(self) -> None:
        handshake = ServerHandshake(extensions=[FakeServerFactory()])
        accepted = handshake.accept(make_request(Sec_WebSocket_Extensions="x-other, x-fake"))
        assert accepted.extensions == [FakeExtension("x-fake")]
        assert accepted.response.headers["Sec-WebSocket-Extensions"] == "x-fake"

    def test_extension_second_factory(self) -> None:
        handshake = ServerHandshake(
            extensions=[
                FakeServerFactory("x-fake", "reject-all"),
                FakeServerFactory("x-fake"),
                FakeServerFactory("x-two"),
            ]
        )
        accepted = handshake.accept(make_request(Sec_WebSocket_Extensions="x-two, x-fake"))
        assert [e.name for e in accepted.extensions] == ["x-two", "x-fake"]
        assert accepted.response.headers["Sec-WebSocket-Extensions"] == "x-two, x-fake"

    def test_extension_malformed_400(self) -> None:
        handshake = ServerHandshake(extensions=[FakeServerFactory()])
        with pytest.raises(InvalidHeader) as exc_info:
            handshake.accept(make_request(Sec_WebSocket_Extensions="x-fake; =1"))
        assert exc_info.value.status == 400

    def test_extension_header_ignored_without_factories(self) -> None:
        accepted = ServerHandshake().accept(make_request(Sec_WebSocket_Extensions="x-fake"))
        assert accepted.extensions == []

    # Subprotocols.

    @pytest.mark.parametrize(
        ("supported", "offered", "expected"),
        [
            (["chat", "superchat"], "superchat, chat", "chat"),  # server preference
            (["superchat", "chat"], "chat, superchat", "superchat"),
            (["chat"], ["superchat", "chat"], "chat"),  # several header lines
            (["chat"], None, None),  # client offered none
            ([], "chat", None),  # server supports none
            (None, "chat", None),
        ],
    )
    def test_subprotocol_selection(
        self, supported: list[str] | None, offered: str | list[str] | None, expected: str | None
    ) -> None:
        request = (
            make_request() if offered is None else make_request(Sec_WebSocket_Protocol=offered)
        )
        accepted = ServerHandshake(subprotocols=supported).accept(request)
        assert accepted.subprotocol == expected
        assert accepted.response.headers.get("Sec-WebSocket-Protocol") == expected

    def test_no_supported_subprotocol_400(self) -> None:
        handshake = ServerHandshake(subprotocols=["mqtt", "stomp"])
        with pytest.raises(NegotiationError) as exc_info:
            handshake.accept(make_request(Sec_WebSocket_Protocol="chat, superchat"))
        assert exc_info.value.status == 400
        assert str(exc_info.value) == (
            "no supported subprotocol (offered: chat, superchat; supported: mqtt, stomp)"
        )
        assert handshake.reject(exc_info.value).status == 400

    def test_select_subprotocol(self) -> None:
        calls: list[Sequence[str]] = []

        def select(offered: Sequence[str]) -> str | None:
            calls.append(offered)
            return offered[-1]

        handshake = ServerHandshake(subprotocols=["chat"], select_subprotocol=select)
        accepted = handshake.accept(make_request(Sec_WebSocket_Protocol="chat, superchat"))
        assert accepted.subprotocol == "superchat"
        assert calls == [["chat", "superchat"]]
        # Not called when the client offered nothing.
        assert handshake.accept(make_request()).subprotocol is None
        assert len(calls) == 1

    def test_select_subprotocol_none(self) -> None:
        handshake = ServerHandshake(select_subprotocol=lambda offered: None)
        accepted = handshake.accept(make_request(Sec_WebSocket_Protocol="chat"))
        assert accepted.subprotocol is None

    def test_select_subprotocol_not_offered(self) -> None:
        handshake = ServerHandshake(select_subprotocol=lambda offered: "other")
        with pytest.raises(NegotiationError):
            handshake.accept(make_request(Sec_WebSocket_Protocol="chat"))

    def test_subprotocol_malformed_400(self) -> None:
        with pytest.raises(InvalidHeader):
            ServerHandshake(subprotocols=["chat"]).accept(
                make_request(Sec_WebSocket_Protocol="chat superchat")
            )


@pytest.mark.parametrize(
    ("exc", "status", "reason"),
    [
        (InvalidMessage("malformed HTTP request: x"), 400, "Bad Request"),
        (HeadersTooLarge("too many headers: over 128"), 431, "Request Header Fields Too Large"),
        (InvalidHTTPVersion("unsupported HTTP version: HTTP/1.0"), 505, None),
    ],
)
def test_reject_parser_errors(exc: InvalidHandshake, status: int, reason: str | None) -> None:
    response = ServerHandshake(server_header=None).reject(exc)
    assert response.status == status
    if reason is not None:
        assert response.reason_phrase == reason
    assert response.body == (str(exc) + "\n").encode()
    assert "Server" not in response.headers


def test_error_response_is_one_line() -> None:
    response = error_response(400, "line one\r\nSet-Cookie: evil\nthree")
    assert response.body == b"line one Set-Cookie: evil three\n"
    assert "Set-Cookie" not in response.headers
    assert "Server" not in response.headers
    assert error_response(503, "x", server_header="s").headers["Server"] == "s"


# ---------------------------------------------------------------------------
# ClientHandshake
# ---------------------------------------------------------------------------


def server_answer(client: ClientHandshake, **kwargs: object) -> Response:
    """Run the client's request through bytes and a real server handshake."""
    request = RequestParser().feed(client.request.serialize())
    assert request is not None
    accepted = ServerHandshake(**kwargs).accept(request)  # type: ignore[arg-type]
    parser = ResponseParser()
    response = parser.feed(accepted.response.serialize() + FRAME)
    assert response is not None
    assert parser.leftover == FRAME
    return response


def response_101(key: str, *extra: tuple[str, str], remove: Sequence[str] = ()) -> Response:
    headers = Headers(
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key)),
        ]
    )
    for name in remove:
        del headers[name]
    headers.update(extra)
    return Response(101, "Switching Protocols", headers)


class TestClientHandshake:
    def test_request(self) -> None:
        from wsharbor import __version__

        client = ClientHandshake(host="example.com:8080", path="/chat?room=1")
        request = client.request
        assert request.method == "GET"
        assert request.path == "/chat?room=1"
        assert request.headers.items() == [
            ("Host", "example.com:8080"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", client.key),
            ("Sec-WebSocket-Version", "13"),
            ("User-Agent", f"wsharbor/{__version__}"),
        ]
        assert len(base64.b64decode(client.key, validate=True)) == 16
        assert ClientHandshake(host="a").key != client.key

    def test_request_options(self) -> None:
        client = ClientHandshake(
            host="a",
            origin="https://a",
            subprotocols=["chat", "superchat"],
            extensions=[FakeClientFactory(params=[("p", "1"), ("q", None)])],
            additional_headers={"Authorization": "Bearer x", "User-Agent": "mine"},
            user_agent_header="ignored",
        )
        headers = client.request.headers
        assert headers["Origin"] == "https://a"
        assert headers["Sec-WebSocket-Protocol"] == "chat, superchat"
        assert headers["Sec-WebSocket-Extensions"] == "x-fake; p=1; q"
        assert headers["Authorization"] == "Bearer x"
        assert headers.get_all("User-Agent") == ["mine"]

    def test_no_user_agent(self) -> None:
        client = ClientHandshake(host="a", user_agent_header=None, additional_headers=[("X", "1")])
        assert "User-Agent" not in client.request.headers
        assert client.request.headers["X"] == "1"

    def test_from_uri(self) -> None:
        client = ClientHandshake.from_uri("wss://user:p%40ss@[::1]/chat?x=1", origin="o")
        headers = client.request.headers
        assert headers["Host"] == "[::1]"
        assert client.request.path == "/chat?x=1"
        assert headers["Authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()
        assert headers["Origin"] == "o"
        uri = WebSocketURI(False, "a", 81, "/")
        assert ClientHandshake.from_uri(uri).request.headers["Host"] == "a:81"
        explicit = ClientHandshake.from_uri(
            "ws://u:p@a/", additional_headers={"Authorization": "Bearer t"}
        )
        assert explicit.request.headers.get_all("Authorization") == ["Bearer t"]

    def test_round_trip(self) -> None:
        client = ClientHandshake(
            host="a",
            subprotocols=["superchat", "chat"],
            extensions=[FakeClientFactory(params=[("p", "1")])],
        )
        response = server_answer(client, subprotocols=["chat"], extensions=[FakeServerFactory()])
        accepted = client.process_response(response)
        assert accepted.response is response
        assert accepted.subprotocol == "chat"
        assert accepted.extensions == [FakeExtension("x-fake", [("p", "1")])]

    def test_round_trip_plain(self) -> None:
        client = ClientHandshake(host="a")
        accepted = client.process_response(server_answer(client))
        assert accepted.subprotocol is None
        assert accepted.extensions == []

    def test_non_101(self) -> None:
        client = ClientHandshake(host="a")
        response = ResponseParser().feed(ServerHandshake().reject(InvalidOrigin("x")).serialize())
        assert response is not None
        with pytest.raises(InvalidStatus) as exc_info:
            client.process_response(response)
        assert exc_info.value.status == 403
        assert exc_info.value.response.body == b"invalid Origin header: x (not allowed)\n"

    @pytest.mark.parametrize(
        ("extra", "remove", "exc_type", "message"),
        [
            ((), ["Upgrade"], InvalidUpgrade, "missing Upgrade header"),
            ((("Upgrade", "h2c"),), ["Upgrade"], InvalidUpgrade, "invalid Upgrade header: h2c"),
            (
                (("Upgrade", "websocket, h2c"),),
                ["Upgrade"],
                InvalidUpgrade,
                "invalid Upgrade header: websocket, h2c",
            ),
            ((), ["Connection"], InvalidUpgrade, "missing Connection header"),
            (
                (("Connection", "close"),),
                ["Connection"],
                InvalidUpgrade,
                "invalid Connection header: close",
            ),
            ((), ["Sec-WebSocket-Accept"], InvalidHeader, "missing Sec-WebSocket-Accept header"),
            (
                (("Sec-WebSocket-Accept", RFC_ACCEPT),),
                ["Sec-WebSocket-Accept"],
                InvalidHeader,
                f"invalid Sec-WebSocket-Accept header: {RFC_ACCEPT} (doesn't match the key)",
            ),
            (
                (("Sec-WebSocket-Accept", "x"),),
                (),
                InvalidHeader,
                "more than one",
            ),
        ],
    )
    def test_invalid_101(
        self,
        extra: tuple[tuple[str, str], ...],
        remove: Sequence[str],
        exc_type: type[InvalidHandshake],
        message: str,
    ) -> None:
        client = ClientHandshake(host="a")
        with pytest.raises(InvalidHandshake) as exc_info:
            client.process_response(response_101(client.key, *extra, remove=remove))
        assert type(exc_info.value) is exc_type
        assert message in str(exc_info.value)

    def test_upgrade_case_insensitive(self) -> None:
        client = ClientHandshake(host="a")
        response = response_101(
            client.key,
            ("Upgrade", "WebSocket"),
            ("Connection", "keep-alive, upgrade"),
            remove=["Upgrade", "Connection"],
        )
        assert client.process_response(response).subprotocol is None

    @pytest.mark.parametrize(
        ("offered", "header", "message"),
        [
            ([], "x-fake", "server accepted extension x-fake which wasn't offered"),
            (["x-fake"], "x-other", "server accepted extension x-other which wasn't offered"),
            (["x-fake"], "x-fake; bad", "were rejected: bad parameter"),
        ],
    )
    def test_extension_negotiation_error(
        self, offered: list[str], header: str, message: str
    ) -> None:
        client = ClientHandshake(host="a", extensions=[FakeClientFactory(n) for n in offered])
        with pytest.raises(NegotiationError) as exc_info:
            client.process_response(response_101(client.key, ("Sec-WebSocket-Extensions", header)))
        assert message in str(exc_info.value)

    def test_extension_second_factory(self) -> None:
        class Picky(FakeClientFactory):
            def process_response_params(
                self, params: Sequence[ExtensionParameter], accepted_extensions: Sequence[object]
            ) -> FakeExtension:
                raise NegotiationError("picky")

        client = ClientHandshake(host="a", extensions=[Picky(), FakeClientFactory()])
        accepted = client.process_response(
            response_101(client.key, ("Sec-WebSocket-Extensions", "x-fake; p"))
        )
        assert accepted.extensions == [FakeExtension("x-fake", [("p", None)])]

    def test_extension_malformed(self) -> None:
        client = ClientHandshake(host="a", extensions=[FakeClientFactory()])
        with pytest.raises(InvalidHeader):
            client.process_response(
                response_101(client.key, ("Sec-WebSocket-Extensions", "x-fake;"))
            )

    @pytest.mark.parametrize(
        ("offered", "header", "message"),
        [
            ([], "chat", "server selected subprotocol chat which wasn't offered"),
            (["chat"], "superchat", "server selected subprotocol superchat which wasn't offered"),
            (["chat", "superchat"], "chat, superchat", "several subprotocols: chat, superchat"),
        ],
    )
    def test_subprotocol_negotiation_error(
        self, offered: list[str], header: str, message: str
    ) -> None:
        client = ClientHandshake(host="a", subprotocols=offered)
        with pytest.raises(NegotiationError) as exc_info:
            client.process_response(response_101(client.key, ("Sec-WebSocket-Protocol", header)))
        assert message in str(exc_info.value)

    def test_subprotocol_several_lines(self) -> None:
        client = ClientHandshake(host="a", subprotocols=["chat", "superchat"])
        with pytest.raises(NegotiationError):
            client.process_response(
                response_101(
                    client.key,
                    ("Sec-WebSocket-Protocol", "chat"),
                    ("Sec-WebSocket-Protocol", "chat"),
                )
            )


# ---------------------------------------------------------------------------
# parse_uri
# ---------------------------------------------------------------------------


class TestParseURI:
    @pytest.mark.parametrize(
        ("uri", "expected", "host_header"),
        [
            ("ws://localhost", WebSocketURI(False, "localhost", 80, "/"), "localhost"),
            ("ws://localhost:80/", WebSocketURI(False, "localhost", 80, "/"), "localhost"),
            ("wss://example.com", WebSocketURI(True, "example.com", 443, "/"), "example.com"),
            (
                "wss://example.com:8443/chat?room=1&x",
                WebSocketURI(True, "example.com", 8443, "/chat?room=1&x"),
                "example.com:8443",
            ),
            ("WS://EXAMPLE.com/A", WebSocketURI(False, "example.com", 80, "/A"), "example.com"),
            ("ws://[::1]:8080/", WebSocketURI(False, "::1", 8080, "/"), "[::1]:8080"),
            ("wss://[2001:db8::1]/", WebSocketURI(True, "2001:db8::1", 443, "/"), "[2001:db8::1]"),
            (
                "ws://127.0.0.1:1234/a%20b/%2F",
                WebSocketURI(False, "127.0.0.1", 1234, "/a%20b/%2F"),
                "127.0.0.1:1234",
            ),
            (
                "ws://a/é b?q=é",
                WebSocketURI(False, "a", 80, "/%C3%A9%20b?q=%C3%A9"),
                "a",
            ),
            (
                "ws://bücher.example/",
                WebSocketURI(False, "xn--bcher-kva.example", 80, "/"),
                "xn--bcher-kva.example",
            ),
            (
                "ws://user:pass@a/",
                WebSocketURI(False, "a", 80, "/", ("user", "pass")),
                "a",
            ),
        ],
    )
    def test_valid(self, uri: str, expected: WebSocketURI, host_header: str) -> None:
        parsed = parse_uri(uri)
        assert parsed == expected
        assert parsed.host_header == host_header

    @pytest.mark.parametrize(
        "uri",
        [
            "http://example.com/",
            "https://example.com/",
            "example.com",
            "ws://example.com/#frag",
            "ws://example.com/#",
            "ws:///path",
            "ws://:80/",
            "ws://example.com:99999/",
            "ws://example.com:port/",
            "ws://user@example.com/",
            "ws://[::1/",
            "ws://\udcff.example/",
        ],
    )
    def test_invalid(self, uri: str) -> None:
        with pytest.raises(InvalidURI) as exc_info:
            parse_uri(uri)
        assert exc_info.value.uri == uri


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


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


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


tokens = st.text(alphabet="abcxyz-_.!~09", min_size=1, max_size=8)


@given(
    extensions=st.lists(
        st.tuples(tokens, st.lists(st.tuples(tokens, st.none() | tokens), max_size=3)),
        min_size=1,
        max_size=4,
    )
)
def test_extension_header_round_trip(
    extensions: list[tuple[str, list[ExtensionParameter]]],
) -> None:
    assert parse_extension_header(serialize_extension_header(extensions)) == extensions


@given(value=st.text(max_size=40))
def test_extension_header_parser_only_invalid_header(value: str) -> None:
    try:
        parse_extension_header(value)
        parse_subprotocol_header(value)
    except InvalidHeader:
        pass


@given(items=st.lists(st.tuples(tokens, st.text(max_size=10)), max_size=6))
def test_headers_serialize_parse_round_trip(items: list[tuple[str, str]]) -> None:
    try:
        headers = Headers(items)
    except ValueError:
        return
    parser = RequestParser()
    try:
        request = parser.feed(Request("/", headers).serialize())
    except InvalidHandshake:
        return  # for example a control character llhttp refuses
    assert request is not None
    # llhttp strips surrounding whitespace from values.
    assert request.headers.items() == [(n, v.strip(" \t")) for n, v in items]
