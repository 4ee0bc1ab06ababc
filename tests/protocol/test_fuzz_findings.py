"""Regression tests for what the fuzz harnesses (fuzz/, ``make fuzz``) found.

Each test holds the minimized input of one finding. A finding not fixed yet is
``xfail(strict=True)`` with the reason: it starts passing, and so fails, when the
bug is fixed, and the mark is then removed.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsharbor.exceptions import HeadersTooLarge, InvalidHandshake, InvalidURI
from wsharbor.protocol.handshake import ClientHandshake
from wsharbor.protocol.http11 import RequestParser, ResponseParser
from wsharbor.protocol.uri import parse_uri

from .samples import chunked


def parse(chunks: list[bytes], **limits: int) -> tuple[type[Exception] | str, str]:
    """Feed ``chunks`` in turn; the error raised, as ``(class, message)``."""
    parser = RequestParser(**limits)
    try:
        for chunk in chunks:
            if parser.feed(chunk) is not None:
                return "request", ""
    except InvalidHandshake as exc:
        return type(exc), str(exc)
    return "incomplete", ""


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# fuzz_http: over two size limits at once, the limit the 431 named depended on where
# the input was cut. Complete lines were checked line length, header count, header
# size; a partial line was checked at each feed() in that order too, but byte by
# byte the limit crossed at the earliest byte won (the count at the first byte of
# the line, the section size possibly before the line's own limit). Same class and
# status either way; the message differed. Fixed: both checks name the limit the
# line's bytes broke first (_HTTPParser._first_broken).
LIMIT_CASES = {
    "header count, then line length": (
        b"GET / HTTP/1.1\r\nA: b\r\nXXXXXXXXXXXX: y\r\n\r\n",
        {"max_headers": 1, "max_header_line": 8},
    ),
    "header section size, then line length": (
        b"GET / HTTP/1.1\r\nA: " + b"b" * 40 + b"\r\n\r\n",
        {"max_headers_size": 20, "max_header_line": 30},
    ),
}


@pytest.mark.parametrize(("data", "limits"), LIMIT_CASES.values(), ids=list(LIMIT_CASES))
def test_limit_errors_same_class_whatever_the_cut(data: bytes, limits: dict[str, int]) -> None:
    # HeadersTooLarge or one of its websockets-named children (HeaderLineTooLong...).
    whole = parse([data], **limits)
    assert issubclass(whole[0], HeadersTooLarge)
    assert issubclass(parse(bytewise(data), **limits)[0], HeadersTooLarge)


@pytest.mark.parametrize(("data", "limits"), LIMIT_CASES.values(), ids=list(LIMIT_CASES))
def test_limit_errors_same_message_whatever_the_cut(data: bytes, limits: dict[str, int]) -> None:
    assert parse([data], **limits) == parse(bytewise(data), **limits)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.lists(
        st.tuples(st.integers(1, 12), st.integers(0, 30)).map(
            lambda sizes: b"X" * sizes[0] + b": " + b"v" * sizes[1]
        ),
        max_size=6,
    ),
    limits=st.fixed_dictionaries(
        {
            "max_header_line": st.integers(4, 40),
            "max_headers": st.integers(0, 6),
            "max_headers_size": st.integers(10, 120),
        }
    ),
    cuts=st.lists(st.integers(0, 300), max_size=6),
)
def test_limit_errors_same_whatever_the_cuts(
    fields: list[bytes], limits: dict[str, int], cuts: list[int]
) -> None:
    # Header lines of any lengths against any limits, cut anywhere: the same
    # request or the same error as whole and byte by byte. (Valid lines only: a
    # request that also breaks the grammar may report either, as documented.)
    data = b"\r\n".join([b"GET / HTTP/1.1", *fields]) + b"\r\n\r\n"
    whole = parse([data], **limits)
    assert parse(chunked(data, cuts), **limits) == whole
    assert parse(bytewise(data), **limits) == whole


# fuzz_uri: parse_uri accepted a control character in the host, and the client
# handshake then raised ValueError (invalid Host header) instead of InvalidURI.
@pytest.mark.parametrize(
    "uri",
    ["ws://a\x00b/", "ws://a\x7fb/", "ws://a\x01/", "ws://a b/", "wss://h\u00e9\x00.example/"],
)
def test_uri_control_character_in_host(uri: str) -> None:
    with pytest.raises(InvalidURI) as exc_info:
        parse_uri(uri)
    assert str(exc_info.value.uri) == uri


@pytest.mark.parametrize("uri", ["ws://a/\x00", "ws://a/?\x7f", "ws://u:\x00@a/"])
def test_uri_control_characters_elsewhere_make_a_request(uri: str) -> None:
    # Quoted in the path and the query, base64-encoded in the credentials.
    request = ClientHandshake.from_uri(parse_uri(uri)).request
    parsed = RequestParser().feed(request.serialize())
    assert parsed is not None and parsed.headers["Host"] == "a"


# fuzz_http: a response's body, given whole with the bytes after it, took the body of
# the message that followed (llhttp parses on, calling on_body again): whole gave
# b"abcxy", byte by byte b"abc".
NEXT_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nxy"
HEAD = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\n\r\n"
BODY_THEN_MORE = HEAD + b"abc" + NEXT_RESPONSE


@pytest.mark.parametrize(
    "chunks",
    [
        [BODY_THEN_MORE],
        bytewise(BODY_THEN_MORE),
        [HEAD, BODY_THEN_MORE[len(HEAD) :]],
        [HEAD + b"a", BODY_THEN_MORE[len(HEAD) + 1 :]],
    ],
    ids=["whole", "bytewise", "headers-then-rest", "body-split"],
)
def test_response_body_ends_with_the_message(chunks: list[bytes]) -> None:
    parser = ResponseParser()
    for chunk in chunks:
        response = parser.feed(chunk)
        if response is not None:
            break
    assert response is not None
    assert (response.status, response.body, parser.leftover) == (400, b"abc", b"")
