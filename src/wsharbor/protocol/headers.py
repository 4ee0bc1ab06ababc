"""The grammar of header values the WebSocket handshake reads and writes.

Sans-I/O and stateless: ``str`` in, ``str`` or lists out.

- Tokens and quoted strings (RFC 7230 section 3.2.6), which :class:`.datastructures.Headers`
  also uses to check field names.
- ``Sec-WebSocket-Extensions`` (RFC 6455 section 9.1) and ``Sec-WebSocket-Protocol``
  (RFC 6455 section 4.3 and 11.3.4): parse and serialize.
- Comma-separated lists compared to a known token, for ``Upgrade`` and ``Connection``
  (RFC 7230 section 6.1 and 6.7).

A header received several times is parsed as the concatenation of its values with
``", "`` (RFC 7230 section 3.2.2). Parsers raise
:exc:`~wsharbor.exceptions.InvalidHeader` (400) and nothing else; serializers raise
:exc:`ValueError` for a value that would not parse back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TypeVar

from ..exceptions import InvalidHeaderFormat
from ..typing import ExtensionName, ExtensionParameter, Subprotocol

__all__ = [
    "ExtensionHeader",
    "has_token",
    "is_token",
    "lowercase_items",
    "parse_extension_header",
    "parse_subprotocol_header",
    "serialize_extension_header",
    "serialize_subprotocol_header",
]

#: A parsed Sec-WebSocket-Extensions value: ``[(name, [(param, value or None)])]``.
ExtensionHeader = list[tuple[ExtensionName, list[ExtensionParameter]]]

# RFC 7230 section 3.2.6: token = 1*tchar.
_TOKEN_RE = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
# RFC 7230 section 3.2.6: quoted-string, with obs-text.
_QUOTED_STRING_RE = re.compile(
    r'"(?:[\x09\x20\x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\x09\x20-\x7e\x80-\xff])*"'
)
_UNQUOTE_RE = re.compile(r"\\([\x09\x20-\x7e\x80-\xff])")

_T = TypeVar("_T")


def is_token(value: str) -> bool:
    """Whether ``value`` is a token (RFC 7230 section 3.2.6): ``1*tchar``."""
    return _TOKEN_RE.fullmatch(value) is not None


# ---------------------------------------------------------------------------
# Building blocks: OWS, token, 1#element
# ---------------------------------------------------------------------------


def _ows(header: str, pos: int) -> int:
    # OWS = *( SP / HTAB )
    while pos < len(header) and header[pos] in " \t":
        pos += 1
    return pos


def _token(header: str, pos: int, name: str) -> tuple[str, int]:
    match = _TOKEN_RE.match(header, pos)
    if match is None:
        raise InvalidHeaderFormat(name, header, f"expected token at {pos}")
    return match.group(), match.end()


def _list(
    parse_item: Callable[[str, int, str], tuple[_T, int]], header: str, name: str
) -> list[_T]:
    """``1#element`` of RFC 7230 section 7: empty elements are ignored, one is needed."""
    items: list[_T] = []
    pos = _ows(header, 0)
    while True:
        # Skip empty elements: "," OWS.
        while pos < len(header) and header[pos] == ",":
            pos = _ows(header, pos + 1)
        if pos == len(header):
            break
        item, pos = parse_item(header, pos, name)
        items.append(item)
        pos = _ows(header, pos)
        if pos == len(header):
            break
        if header[pos] != ",":
            raise InvalidHeaderFormat(name, header, f"expected comma at {pos}")
    if not items:
        raise InvalidHeaderFormat(name, header, "no value")
    return items


# ---------------------------------------------------------------------------
# Sec-WebSocket-Extensions
# ---------------------------------------------------------------------------


def _extension(
    header: str, pos: int, name: str
) -> tuple[tuple[ExtensionName, list[ExtensionParameter]], int]:
    # extension = extension-token *( ";" extension-param )
    extension_name, pos = _token(header, pos, name)
    params: list[ExtensionParameter] = []
    while True:
        pos = _ows(header, pos)
        if pos == len(header) or header[pos] != ";":
            return (extension_name, params), pos
        pos = _ows(header, pos + 1)
        # extension-param = token [ "=" (token | quoted-string) ]
        param_name, pos = _token(header, pos, name)
        value: str | None = None
        after = _ows(header, pos)
        if after < len(header) and header[after] == "=":
            pos = _ows(header, after + 1)
            if pos < len(header) and header[pos] == '"':
                match = _QUOTED_STRING_RE.match(header, pos)
                if match is None:
                    raise InvalidHeaderFormat(name, header, f"invalid quoted string at {pos}")
                value = _UNQUOTE_RE.sub(r"\1", match.group()[1:-1])
                # RFC 6455 section 9.1 and RFC 7692 section 7: after unescaping, the
                # value of a quoted-string must be a token.
                if not is_token(value):
                    raise InvalidHeaderFormat(name, header, f"quoted value isn't a token at {pos}")
                pos = match.end()
            else:
                value, pos = _token(header, pos, name)
        params.append((param_name, value))


def parse_extension_header(value: str | Sequence[str]) -> ExtensionHeader:
    """Parse Sec-WebSocket-Extensions (RFC 6455 section 9.1)::

        Sec-WebSocket-Extensions = extension-list
        extension-list = 1#extension
        extension = extension-token *( ";" extension-param )
        extension-param = token [ "=" (token | quoted-string) ]

    A sequence of values (several header lines) is parsed as their concatenation
    with ``", "`` (RFC 7230 section 3.2.2). Quoted parameter values are unescaped
    and must then be tokens. Raises
    :exc:`~wsharbor.exceptions.InvalidHeader` (400) when malformed.
    """
    header = value if isinstance(value, str) else ", ".join(value)
    return _list(_extension, header, "Sec-WebSocket-Extensions")


def serialize_extension_header(
    extensions: Sequence[tuple[ExtensionName, Sequence[ExtensionParameter]]],
) -> str:
    """Build a Sec-WebSocket-Extensions value (RFC 6455 section 9.1).

    Raises :exc:`ValueError` if a name or a value is not a token.
    """
    parts = []
    for name, params in extensions:
        items = [name]
        for param_name, param_value in params:
            items.append(param_name if param_value is None else f"{param_name}={param_value}")
        for item in items:
            for token in item.split("=", 1):
                if not is_token(token):
                    raise ValueError(f"not a token in extension {name!r}: {token!r}")
        parts.append("; ".join(items))
    return ", ".join(parts)


# ---------------------------------------------------------------------------
# Sec-WebSocket-Protocol
# ---------------------------------------------------------------------------


def parse_subprotocol_header(value: str | Sequence[str]) -> list[Subprotocol]:
    """Parse Sec-WebSocket-Protocol (RFC 6455 section 4.3 and 11.3.4)::

        Sec-WebSocket-Protocol-Client = 1#token

    A sequence of values (several header lines) is parsed as their concatenation.
    Raises :exc:`~wsharbor.exceptions.InvalidHeader` (400) when malformed.
    """
    header = value if isinstance(value, str) else ", ".join(value)
    return _list(_token, header, "Sec-WebSocket-Protocol")


def serialize_subprotocol_header(subprotocols: Sequence[Subprotocol]) -> str:
    """Build a Sec-WebSocket-Protocol value. Raises :exc:`ValueError` for a non-token."""
    for subprotocol in subprotocols:
        if not is_token(subprotocol):
            raise ValueError(f"subprotocol is not a token: {subprotocol!r}")
    return ", ".join(subprotocols)


# ---------------------------------------------------------------------------
# Upgrade and Connection: is a known token listed?
# ---------------------------------------------------------------------------


def lowercase_items(values: list[str]) -> list[str]:
    """The comma-separated items of the ``values`` of a header, lowercased, OWS
    stripped, empty ones ignored (RFC 7230 section 7).

    Items are not checked to be tokens: the result is for comparing with known ones.
    """
    return [
        item.strip(" \t").lower()
        for value in values
        for item in value.split(",")
        if item.strip(" \t")
    ]


def has_token(values: list[str], token: str) -> bool:
    """Whether the ``values`` of a header list ``token`` (given lowercase), in any case."""
    # The usual case first: one field holding only the token.
    return (len(values) == 1 and values[0].lower() == token) or token in lowercase_items(values)
