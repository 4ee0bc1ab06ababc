"""Proxies without I/O: URL parsing, the environment, the CONNECT request and answer."""

from __future__ import annotations

import pytest

from wsharbor.exceptions import InvalidMessage, InvalidProxy, InvalidProxyStatus
from wsharbor.protocol.proxy import ConnectParser, Proxy, connect_request, get_proxy, parse_proxy
from wsharbor.protocol.uri import parse_uri


def test_parse_proxy() -> None:
    assert parse_proxy("http://proxy") == Proxy("http", "proxy", 80)
    assert parse_proxy("https://proxy/") == Proxy("https", "proxy", 443)
    assert parse_proxy("socks5h://u%40x:p%3Aw@proxy:1080") == Proxy(
        "socks5h", "proxy", 1080, "u@x", "p:w"
    )
    assert parse_proxy("http://bücher.example:3128").host == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://proxy", "scheme ftp isn't supported"),
        ("http://", "hostname isn't provided"),
        ("http://proxy/path", "path is meaningless"),
        ("http://proxy/?q=1", "query is meaningless"),
        ("http://proxy/#f", "fragment is meaningless"),
        ("http://user@proxy", "username provided without password"),
        ("http://proxy:99999", "invalid port"),
    ],
)
def test_invalid_proxies(url: str, message: str) -> None:
    with pytest.raises(InvalidProxy, match=message):
        parse_proxy(url)


def test_get_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "socks_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    uri, secure = parse_uri("ws://example.com/"), parse_uri("wss://example.com/")
    assert get_proxy(uri) is None
    monkeypatch.setenv("http_proxy", "http://plain:3128")
    assert get_proxy(uri) == "http://plain:3128"
    assert get_proxy(secure) is None  # http_proxy is for ws:// only
    monkeypatch.setenv("https_proxy", "http://tls:3128")
    assert get_proxy(uri) == get_proxy(secure) == "http://tls:3128"
    monkeypatch.setenv("socks_proxy", "http://socks:1080")
    assert get_proxy(uri) == "socks5h://socks:1080"
    monkeypatch.setenv("wss_proxy", "http://websocket:3128")
    assert get_proxy(secure) == "http://websocket:3128"
    monkeypatch.setenv("no_proxy", "example.com")
    assert get_proxy(uri) is None


def test_connect_request() -> None:
    request = connect_request(
        Proxy("http", "proxy", 3128, "user", "pass"), parse_uri("wss://[::1]/chat"), "agent/1"
    )
    assert request == (
        b"CONNECT [::1]:443 HTTP/1.1\r\n"
        b"Host: [::1]:443\r\n"
        b"User-Agent: agent/1\r\n"
        b"Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
        b"\r\n"
    )


def feed_bytewise(data: bytes) -> object:
    parser = ConnectParser()
    result = None
    for i in range(len(data)):
        result = parser.feed(data[i : i + 1])
        if result is not None:
            assert i == len(data) - 1
    return result


@pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/1.1"])
def test_connect_answer_whole_and_byte_by_byte(version: bytes) -> None:
    answer = version + b" 200 Connection established\r\nVia: proxy\r\n\r\n"
    for result in (ConnectParser().feed(answer), feed_bytewise(answer)):
        assert result is not None and result.status == 200  # type: ignore[attr-defined]


def test_connect_refused_and_malformed() -> None:
    with pytest.raises(InvalidProxyStatus) as info:
        ConnectParser().feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n")
    assert info.value.response.status == 403
    assert info.value.response.body == b"no\n"
    with pytest.raises(InvalidMessage):
        ConnectParser().feed(b"SSH-2.0-OpenSSH\r\n\r\n")
