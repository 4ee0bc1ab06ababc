"""Tests of :class:`Headers` (protocol/datastructures.py).

Lookups answer 0 or 1 value through list methods and several through a scan: each
case is tested. Added fields are checked against header and response injection.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsharbor.exceptions import (
    InvalidHandshake,
)
from wsharbor.protocol.datastructures import Headers, MultipleValuesError, check_field
from wsharbor.protocol.http11 import Request, RequestParser

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


def test_has_any() -> None:
    headers = Headers([("Host", "a"), ("Content-Length", "0"), ("X", "1")])
    assert headers.has_any({"content-length", "transfer-encoding"})
    assert headers.has_any(frozenset({"x"}))
    assert not headers.has_any({"transfer-encoding", "upgrade"})
    assert not headers.has_any(set())
    # Names are given lowercase: no lowercasing on this path.
    assert not headers.has_any({"Content-Length"})
    parsed = RequestParser().feed(b"GET / HTTP/1.1\r\nX-ONE: 1\r\n\r\n")
    assert parsed is not None
    assert parsed.headers.has_any({"x-one"})


# ---------------------------------------------------------------------------
# check_field: what headers[name] = value checks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"), [("Server", "edge/1"), ("X", ""), ("X", "é \t~"), ("a-b_c.d!", "v")]
)
def test_check_field_accepts(name: str, value: str) -> None:
    check_field(name, value)
    headers = Headers()
    headers[name] = value
    assert headers.get_all(name) == [value]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("A B", "v", "invalid header name: 'A B'"),
        ("", "v", "invalid header name: ''"),
        (1, "v", "invalid header name: 1"),
        ("X", "a\r\nSet-Cookie: x", "invalid header value for X: 'a\\r\\nSet-Cookie: x'"),
        ("X", "a\x00", "invalid header value for X: 'a\\x00'"),
        ("X", b"v", "invalid header value for X: b'v'"),
        ("X", "\U0001f600", "header value for X is not ISO-8859-1: '\U0001f600'"),
    ],
)
def test_check_field_refuses(name: str, value: str, message: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        check_field(name, value)
    assert str(exc_info.value) == message
    headers = Headers()
    with pytest.raises(ValueError) as same:
        headers[name] = value
    assert str(same.value) == message
    assert headers.items() == []


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

tokens = st.text(alphabet="abcxyz-_.!~09", min_size=1, max_size=8)


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


# ---------------------------------------------------------------------------
# compact(): packed headers behave as unpacked ones
# ---------------------------------------------------------------------------

HANDSHAKE = (
    b"GET /chat HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nX-Many: 1\r\nx-many: 2\r\nX-Empty: \r\n"
    b"X-Text: a: b ,\xe9 c\r\n\r\n"
)


def parsed_headers() -> Headers:
    request = RequestParser().feed(HANDSHAKE)
    assert request is not None
    return request.headers


def packed(headers: Headers) -> Headers:
    copy = headers.copy()
    copy.compact()
    assert copy.packed
    return copy


class TestCompact:
    def test_every_reading_method_answers_the_same(self) -> None:
        plain = parsed_headers()
        headers = packed(plain)
        assert headers.items() == plain.items()
        assert headers.raw_items() == plain.raw_items()
        assert headers.items()[-1] == ("X-Text", "a: b ,é c")
        assert headers.items()[-2] == ("X-Empty", "")
        assert list(headers) == list(plain)
        assert len(headers) == len(plain) == 8
        assert repr(headers) == repr(plain)
        assert headers.serialize() == plain.serialize()
        assert headers == plain and plain == headers
        assert headers != Headers([("Host", "example.com:8080")])
        for name in ("host", "SEC-WEBSOCKET-KEY", "x-empty", "X-Text", "missing", "X-Many"):
            assert (name in headers) is (name in plain)
            assert headers.get_all(name) == plain.get_all(name)
            assert headers._get_all(name.lower()) == plain._get_all(name.lower())
        assert headers["Sec-WebSocket-Key"] == "dGhlIHNhbXBsZSBub25jZQ=="
        assert headers.get("x-empty", "d") == ""
        assert headers.get("missing", "d") == "d"
        assert headers.get_all("x-many") == ["1", "2"]
        with pytest.raises(MultipleValuesError):
            headers["X-Many"]
        with pytest.raises(MultipleValuesError):
            headers.get("x-many")
        with pytest.raises(KeyError):
            headers["missing"]
        assert 42 not in headers
        assert headers.has_any({"upgrade", "nothing"})
        assert not headers.has_any({"content-length"})
        # Reading kept nothing: still packed.
        assert headers.packed

    def test_changes_unpack(self) -> None:
        headers = packed(parsed_headers())
        headers["X-New"] = "v"
        assert not headers.packed
        assert headers.items() == [*parsed_headers().items(), ("X-New", "v")]
        assert headers.get_all("x-new") == ["v"]

        headers = packed(parsed_headers())
        del headers["x-many"]
        assert not headers.packed
        assert "X-Many" not in headers
        assert len(headers) == 7

        headers = packed(parsed_headers())
        with pytest.raises(KeyError):
            del headers["missing"]
        assert headers.items() == parsed_headers().items()

        headers = packed(parsed_headers())
        headers.update({"A": "1"}, B="2")
        assert headers.items()[-2:] == [("A", "1"), ("B", "2")]

        headers = packed(parsed_headers())
        with pytest.raises(ValueError):
            headers["X"] = "a\r\nb"
        assert headers.items() == parsed_headers().items()

    def test_copies_are_independent_and_unpacked(self) -> None:
        headers = packed(parsed_headers())
        copy = headers.copy()
        assert not copy.packed
        copy["B"] = "2"
        assert headers.items() == parsed_headers().items()
        items = headers.items()
        items.append(("C", "3"))
        assert "C" not in headers
        assert Headers(headers) == headers
        other = Headers()
        other.update(headers)
        assert other == headers

    def test_compact_twice_and_empty(self) -> None:
        headers = packed(parsed_headers())
        headers.compact()
        assert headers.packed
        assert headers.items() == parsed_headers().items()
        empty = Headers()
        empty.compact()
        assert empty.packed
        assert empty.items() == []
        assert len(empty) == 0
        assert "A" not in empty
        assert empty.serialize() == b""
        empty["A"] = "1"
        assert not empty.packed
        assert empty["a"] == "1"

    def test_response_headers(self) -> None:
        headers = Headers._trusted(
            [("Upgrade", "websocket"), ("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")],
            ["upgrade", "sec-websocket-accept"],
        )
        serialized = headers.serialize()
        headers.compact()
        assert headers.packed
        assert headers.serialize() == serialized
        assert headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

    def test_saves_memory(self) -> None:
        import tracemalloc

        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            many = [parsed_headers() for _ in range(200)]
            unpacked = tracemalloc.get_traced_memory()[0] - before
            for headers in many:
                headers.compact()
            compacted = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        # Header names are shared between requests (http11's name cache), so the
        # fields' own cost is mostly the values and the list: about a third saved.
        assert compacted < unpacked * 3 / 4


@given(items=st.lists(st.tuples(tokens, st.text(max_size=10)), max_size=6))
def test_compact_round_trip(items: list[tuple[str, str]]) -> None:
    try:
        headers = Headers(items)
    except ValueError:
        return
    compacted = packed(headers)
    assert compacted.items() == items
    assert compacted == headers
    for name, _ in items:
        assert compacted.get_all(name) == headers.get_all(name)
