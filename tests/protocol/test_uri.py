"""Tests of WebSocket URIs (protocol/uri.py, RFC 6455 section 3)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsharbor.exceptions import (
    InvalidURI,
)
from wsharbor.protocol.uri import WebSocketURI, parse_uri

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

# Text that looks like a WebSocket URI often enough to go past the scheme.
uri_like = st.one_of(
    st.text(max_size=40),
    st.builds(
        "".join,
        st.lists(
            st.one_of(
                st.sampled_from(
                    ["ws://", "wss://", "WS://", "http://", "[::1]", ":", "@", "/", "?", "#"]
                ),
                st.sampled_from(["%", "%41", "80", "99999", "bücher", "a", ".", "[", "]", " "]),
                st.text(max_size=4),
            ),
            max_size=10,
        ),
    ),
)


@given(uri=uri_like)
def test_parse_uri_only_invalid_uri(uri: str) -> None:
    try:
        parsed = parse_uri(uri)
    except InvalidURI as exc:
        assert exc.uri == uri
        return
    assert 0 <= parsed.port <= 65535
    assert parsed.path.startswith("/")
    assert parsed.path.isascii()
    # What the client sends (Host header and resource name) parses back the same.
    scheme = "wss" if parsed.secure else "ws"
    again = parse_uri(f"{scheme}://{parsed.host_header}{parsed.path}")
    assert again == WebSocketURI(parsed.secure, parsed.host, parsed.port, parsed.path)
