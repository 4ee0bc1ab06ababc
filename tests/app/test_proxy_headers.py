"""wsharbor.app.proxy_headers: X-Forwarded-For and RFC 7239 Forwarded,
believed only from trusted peers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsharbor.app.proxy_headers import (
    ProxyHeaders,
    TrustedHosts,
    parse_forwarded,
    parse_trusted,
    parse_x_forwarded_for,
)
from wsharbor.protocol.datastructures import Headers

PROXY = ("127.0.0.1", 50000)
STRANGER = ("203.0.113.9", 40000)


def headers(*pairs: tuple[str, str]) -> Headers:
    return Headers(list(pairs))


def test_parse_trusted_accepts_addresses_networks_and_star() -> None:
    assert parse_trusted("127.0.0.1") == ("127.0.0.1",)
    assert parse_trusted(" 10.0.0.0/8, ::1 ,192.168.1.7") == ("10.0.0.0/8", "::1", "192.168.1.7")
    assert parse_trusted("*") == ("*",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must not be empty"),
        (" , ", "must not be empty"),
        ("localhost", "'localhost' is not an IP address or network"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network"),
        ("127.0.0.1,nope", "'nope' is not an IP address"),
    ],
)
def test_parse_trusted_rejects_what_is_not_an_address(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_trusted(text)


def test_trusted_hosts() -> None:
    trusted = TrustedHosts(["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
    assert "127.0.0.1" in trusted
    assert "10.1.2.3" in trusted
    assert "2001:db8::5" in trusted
    assert "::ffff:127.0.0.1" in trusted  # IPv4-mapped, as a dual-stack socket reports it
    assert "127.0.0.2" not in trusted
    assert "11.0.0.1" not in trusted
    assert "unknown" not in trusted
    assert None not in trusted
    assert "anything" in TrustedHosts(["*"])


def test_parse_x_forwarded_for() -> None:
    assert parse_x_forwarded_for(["203.0.113.7, 10.0.0.1", "127.0.0.1"]) == [
        ("203.0.113.7", 0),
        ("10.0.0.1", 0),
        ("127.0.0.1", 0),
    ]
    # Ports, and IPv6 with and without brackets, as some load balancers write them.
    assert parse_x_forwarded_for(["198.51.100.4:5123, [2001:db8::1]:443, 2001:db8::2"]) == [
        ("198.51.100.4", 5123),
        ("2001:db8::1", 443),
        ("2001:db8::2", 0),
    ]
    assert parse_x_forwarded_for(["", " , "]) == []


def test_parse_forwarded_rfc7239_examples() -> None:
    # RFC 7239 section 4 and section 7.4's examples.
    assert parse_forwarded(['for="_gazonk"']) == [{"for": "_gazonk"}]
    assert parse_forwarded(['For="[2001:db8:cafe::17]:4711"']) == [
        {"for": "[2001:db8:cafe::17]:4711"}
    ]
    assert parse_forwarded(["for=192.0.2.60;proto=http;by=203.0.113.43"]) == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}
    ]
    assert parse_forwarded(["for=192.0.2.43, for=198.51.100.17"]) == [
        {"for": "192.0.2.43"},
        {"for": "198.51.100.17"},
    ]
    # Separators inside quoted-strings, escapes, a malformed pair skipped.
    assert parse_forwarded(['for="a,b;c\\"d";junk;proto=https', "for=x"]) == [
        {"for": 'a,b;c"d', "proto": "https"},
        {"for": "x"},
    ]


def test_client_from_x_forwarded_for_of_a_trusted_peer() -> None:
    proxy = ProxyHeaders(["127.0.0.1"])
    assert proxy.client(PROXY, headers(("X-Forwarded-For", "203.0.113.7"))) == ("203.0.113.7", 0)
    # Read from the right: the first untrusted hop is the client; what the
    # client wrote itself on the left is ignored.
    spoofed = headers(("X-Forwarded-For", "1.1.1.1, 203.0.113.7, 127.0.0.1"))
    assert proxy.client(PROXY, spoofed) == ("203.0.113.7", 0)
    # All trusted: the leftmost.
    assert proxy.client(PROXY, headers(("X-Forwarded-For", "127.0.0.1"))) == ("127.0.0.1", 0)
    # No header, or "unknown": no client known.
    assert proxy.client(PROXY, headers()) is None
    assert proxy.client(PROXY, headers(("X-Forwarded-For", "unknown"))) is None


def test_untrusted_peers_headers_are_ignored() -> None:
    proxy = ProxyHeaders(["127.0.0.1", "10.0.0.0/8"])
    forged = headers(
        ("X-Forwarded-For", "198.51.100.1"),
    )
    assert proxy.client(STRANGER, forged) is None
    assert proxy.client(("10.9.8.7", 1), forged) == ("198.51.100.1", 0)
    # A Unix socket peer is trusted only with '*'.
    assert proxy.client("", forged) is None
    assert ProxyHeaders(["*"]).client("", forged) == ("198.51.100.1", 0)


def test_star_trusts_everyone_and_takes_the_leftmost() -> None:
    proxy = ProxyHeaders(["*"])
    assert proxy.client(STRANGER, headers(("X-Forwarded-For", "1.1.1.1, 2.2.2.2"))) == (
        "1.1.1.1",
        0,
    )


def test_only_the_chosen_header_is_read() -> None:
    both = headers(
        ("X-Forwarded-For", "198.51.100.1"),
        ("Forwarded", 'for="[2001:db8::7]:4711";proto=https'),
    )
    assert ProxyHeaders(["127.0.0.1"], "x-forwarded").client(PROXY, both) == ("198.51.100.1", 0)
    forwarded = ProxyHeaders(["127.0.0.1"], "forwarded")
    assert forwarded.client(PROXY, both) == ("2001:db8::7", 4711)
    assert forwarded.client(PROXY, headers(("X-Forwarded-For", "198.51.100.1"))) is None


def test_forwarded_chain_and_obfuscated_nodes() -> None:
    proxy = ProxyHeaders(["127.0.0.1", "10.0.0.0/8"], "forwarded")
    chain = headers(("Forwarded", "for=192.0.2.43, for=198.51.100.17;by=10.0.0.1, for=10.0.0.1"))
    assert proxy.client(PROXY, chain) == ("198.51.100.17", 0)
    assert proxy.client(PROXY, headers(("Forwarded", 'for="_hidden"'))) == ("_hidden", 0)
    assert proxy.client(PROXY, headers(("Forwarded", "for=unknown"))) is None
    assert proxy.client(PROXY, headers(("Forwarded", "proto=https"))) is None


def test_unknown_header_kind() -> None:
    with pytest.raises(ValueError, match="unknown proxy header"):
        ProxyHeaders(["*"], "x-real-ip")


# Header values are whatever a client or a proxy sent: any text, no crash.
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@given(header_text, header_text)
def test_any_header_value_gives_a_client_or_none(xff: str, forwarded: str) -> None:
    values = headers(("X-Forwarded-For", xff), ("Forwarded", forwarded))
    for kind in ("x-forwarded", "forwarded"):
        for trusted in (["127.0.0.1"], ["*"]):
            client = ProxyHeaders(trusted, kind).client(PROXY, values)
            assert client is None or (
                isinstance(client[0], str) and client[0] and isinstance(client[1], int)
            )


@given(header_text)
def test_any_allow_list_parses_or_raises_value_error(text: str) -> None:
    try:
        items = parse_trusted(text)
    except ValueError:
        return
    TrustedHosts(items)  # what parse_trusted accepts, TrustedHosts takes
