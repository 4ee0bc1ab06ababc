"""Tests of the header-value grammar (protocol/headers.py): extensions, subprotocols,
token lists.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsharbor.exceptions import (
    InvalidHeader,
)
from wsharbor.protocol.headers import (
    has_token,
    is_token,
    lowercase_items,
    parse_extension_header,
    parse_subprotocol_header,
    serialize_extension_header,
    serialize_subprotocol_header,
)
from wsharbor.typing import ExtensionParameter

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
# Tokens and token lists (Upgrade, Connection)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("websocket", True),
        ("permessage-deflate", True),
        ("!#$%&'*+-.^_`|~09aZ", True),
        ("", False),
        ("a b", False),
        ("a,b", False),
        ("a/b", False),
        ('"a"', False),
        ("é", False),
        ("a\n", False),
    ],
)
def test_is_token(value: str, expected: bool) -> None:
    assert is_token(value) is expected


@pytest.mark.parametrize(
    ("values", "items"),
    [
        ([], []),
        ([""], []),
        (["WebSocket"], ["websocket"]),
        (["keep-alive, Upgrade"], ["keep-alive", "upgrade"]),
        ([" , a ,, \tB\t,"], ["a", "b"]),
        (["h2c", "WebSocket"], ["h2c", "websocket"]),
        (["not a token, x/y"], ["not a token", "x/y"]),
    ],
)
def test_lowercase_items(values: list[str], items: list[str]) -> None:
    assert lowercase_items(values) == items


@pytest.mark.parametrize(
    ("values", "token", "expected"),
    [
        (["Upgrade"], "upgrade", True),
        (["UPGRADE"], "upgrade", True),
        (["keep-alive, Upgrade"], "upgrade", True),
        (["keep-alive", "upgrade"], "upgrade", True),
        (["keep-alive"], "upgrade", False),
        (["upgrades"], "upgrade", False),
        (["up grade"], "upgrade", False),
        ([], "upgrade", False),
        ([""], "upgrade", False),
    ],
)
def test_has_token(values: list[str], token: str, expected: bool) -> None:
    assert has_token(values, token) is expected


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

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


@given(values=st.lists(st.text(alphabet="aUpgrde-, \t;=x", max_size=20), max_size=3))
def test_has_token_agrees_with_the_list(values: list[str]) -> None:
    # The shortcut for one field holding only the token answers as the general path.
    for token in ("upgrade", "websocket", "x"):
        assert has_token(values, token) is (token in lowercase_items(values))
    for item in lowercase_items(values):
        assert item and item == item.strip(" \t").lower()
        assert "," not in item
