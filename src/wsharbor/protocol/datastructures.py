"""HTTP headers as the handshake reads and writes them: :class:`Headers`.

Sans-I/O: a data structure, no parsing of bytes (that is :mod:`.http11`).

Theory of operation
-------------------

A :class:`Headers` holds the fields in order as ``(name, value)`` pairs, and beside
them their names lowercased and interned (``sys.intern``). Every lookup is a scan of
that second list, in C (``list.count``, ``list.index``): a handshake has a dozen
fields at most, and a dict index would cost more memory per open connection than
the scan costs time (see the comment on ``__slots__``).

Fields a caller adds are checked (:func:`check_field`): a name must be a token, a
value must hold no CR, LF or NUL and be ISO-8859-1, so that no value can inject a
header or a response. Three constructors skip the checks, for the places of this
package that already know the fields valid: ``Headers._from_parser`` (fields llhttp
validated, :mod:`.http11`), ``Headers._trusted`` (fields and their lowercase names
the parsers of :mod:`.http11` made) and ``Headers._packed`` (the 101 response
:mod:`.handshake` builds, packed from the start: see below). :mod:`.handshake`
reads fields by interned lowercase names with ``Headers._get_all``, without
lowercasing them again. These four are private to the ``wsharbor.protocol``
package.

A server keeps the opening handshake's request and response for the whole life of
the connection (``connection.request``, ``connection.response``), and their fields
as pairs cost about 1.3 KiB per connection: a list, a tuple and two strings a field,
and the list of names. :meth:`Headers.compact` stores them instead as the text
``Name: value\r\n...`` in one string (``_list`` holds the string, ``_keys`` is
``None``). That is exact: a name is a token and a value holds no CR or LF, so each
line splits back at its first ``": "``. Reading packed headers parses that text into
temporary lists and keeps nothing; the first change (``headers[name] = value``,
``del``, :meth:`update`) unpacks them for good. Nothing else sees the difference.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import cast

from .headers import is_token

__all__ = ["Headers", "HeadersLike", "MultipleValuesError", "check_field"]

# RFC 7230 section 3.2: field-value holds no CR or LF (obs-fold is not generated),
# and llhttp refuses NUL.
_FORBIDDEN_IN_VALUE_RE = re.compile(r"[\r\n\x00]")


def check_field(name: str, value: str) -> None:
    """Raise :exc:`ValueError` unless ``name: value`` is a field safe to send.

    What ``headers[name] = value`` checks: the name is a token (RFC 7230 section
    3.2.6); the value holds no CR, LF or NUL and is encodable in ISO-8859-1, so that
    it cannot inject a header or a response (response splitting).
    """
    if not isinstance(name, str) or not is_token(name):
        raise ValueError(f"invalid header name: {name!r}")
    if not isinstance(value, str) or _FORBIDDEN_IN_VALUE_RE.search(value):
        raise ValueError(f"invalid header value for {name}: {value!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header value for {name} is not ISO-8859-1: {value!r}") from None


class MultipleValuesError(KeyError):
    """A header that must appear once has several values."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the argument.
        return str(self.args[0]) if self.args else ""


#: What :class:`Headers` and ``additional_headers`` accept: pairs or a mapping.
HeadersLike = Iterable[tuple[str, str]] | Mapping[str, str]


class Headers:
    """HTTP headers: a case-insensitive, order-preserving multi-dict of ``str`` to ``str``.

    ``headers[name] = value`` *appends* a field (as in websockets); ``del headers[name]``
    removes every field of that name. ``headers[name]`` and :meth:`get` return the
    single value and raise :exc:`MultipleValuesError` when there are several: read
    list-valued headers with :meth:`get_all`.

    Names must be tokens (RFC 7230 section 3.2.6); values must not contain CR, LF or
    NUL and must be encodable in ISO-8859-1, so that a value cannot inject a header
    or a response (response splitting). Both raise :exc:`ValueError`.
    """

    # The fields, and beside them their lowercase names, interned: lookups scan
    # ``_keys`` comparing shared string objects. A request has a dozen fields at
    # most and a server keeps one per open connection: a dict index would cost
    # about 1.5 KiB per connection, the interned names 8 bytes per field.
    # Packed (compact()): ``_list`` is the fields' text and ``_keys`` is None; the
    # methods that read ``_list`` as a list check ``_keys`` first.
    __slots__ = ("_keys", "_list")

    _list: list[tuple[str, str]]
    _keys: list[str] | None

    def __init__(self, items: Headers | HeadersLike | None = None, **kwargs: str) -> None:
        self._list = []
        self._keys = []
        self.update(items, **kwargs)

    @classmethod
    def _from_parser(cls, fields: list[tuple[str, str]]) -> Headers:
        """Headers from fields an HTTP parser already validated (no checks again).

        ``fields`` is taken over, not copied.
        """
        headers = cls.__new__(cls)
        headers._list = fields
        headers._keys = [sys.intern(name.lower()) for name, _ in fields]
        return headers

    @classmethod
    def _trusted(cls, fields: list[tuple[str, str]], keys: list[str]) -> Headers:
        """Headers from fields this library built and knows valid, with their interned
        lowercase names (no checks): the HTTP parsers'. Both lists are taken over.
        """
        headers = cls.__new__(cls)
        headers._list = fields
        headers._keys = keys
        return headers

    @classmethod
    def _packed(cls, text: str) -> Headers:
        """Headers packed from the start: ``text`` as :meth:`compact` makes it, from
        fields this library built and knows valid (no checks): the 101 response.
        """
        headers = cls.__new__(cls)
        headers._list = cast(list[tuple[str, str]], text)
        headers._keys = None
        return headers

    # Packing.

    def compact(self) -> None:
        """Store the fields in one string until they change, to save memory.

        For headers kept long after they were read, as a server keeps each
        connection's opening handshake: packed, a dozen fields cost about a
        fifth of their memory as pairs. Every method works the same on packed
        headers: reading parses the string (and keeps nothing), the first
        change unpacks them for good. Calling it again does nothing.
        """
        keys = self._keys
        if keys is None:
            return
        text = "\r\n".join(map(": ".join, self._list)) + "\r\n" if keys else ""
        # One line a field, or a value held a line break after all (no caller
        # can add one): then stay unpacked rather than unpack wrong.
        if text.count("\n") == len(keys):
            self._list = cast(list[tuple[str, str]], text)  # the packed form
            self._keys = None

    @property
    def packed(self) -> bool:
        """Whether :meth:`compact` packed the fields (and nothing changed them since)."""
        return self._keys is None

    def _fields(self) -> list[tuple[str, str]]:
        """The fields in order: the list itself, or a new list parsed from the
        packed text (then changing it changes nothing)."""
        if self._keys is None:
            return _unpack(cast(str, self._list))
        return self._list

    def _lookup(self) -> tuple[list[str], list[tuple[str, str]]]:
        """The lowercase names and the fields, parsed if packed (for reading)."""
        keys = self._keys
        if keys is None:
            fields = _unpack(cast(str, self._list))
            return [name.lower() for name, _ in fields], fields
        return keys, self._list

    def _unpacked_keys(self) -> list[str]:
        """``_keys``, after unpacking for good (before a change)."""
        keys = self._keys
        if keys is None:
            self._list = _unpack(cast(str, self._list))
            keys = self._keys = [sys.intern(name.lower()) for name, _ in self._list]
        return keys

    def _value(self, name: str) -> str | None:
        """The single value of ``name``, ``None`` if absent; raise if there are several."""
        key = name.lower()
        keys = self._keys
        if keys is None:
            keys, fields = self._lookup()
        else:
            fields = self._list
        count = keys.count(key)
        if count == 1:
            return fields[keys.index(key)][1]
        if count == 0:
            return None
        raise MultipleValuesError(f"several values for header {name}")

    # Mapping-like interface.

    def __getitem__(self, name: str) -> str:
        value = self._value(name)
        if value is None:
            raise KeyError(name)
        return value

    def __setitem__(self, name: str, value: str) -> None:
        check_field(name, value)
        keys = self._unpacked_keys()
        self._list.append((name, value))
        keys.append(sys.intern(name.lower()))

    def __delitem__(self, name: str) -> None:
        key = name.lower()
        keys = self._unpacked_keys()
        kept = [(k, field) for k, field in zip(keys, self._list, strict=True) if k != key]
        if len(kept) == len(self._list):
            raise KeyError(name)
        self._keys = [k for k, _ in kept]
        self._list = [field for _, field in kept]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        keys = self._keys
        if keys is None:
            keys = self._lookup()[0]
        return name.lower() in keys

    def has_any(self, names: AbstractSet[str]) -> bool:
        """Whether a field is named one of ``names``, which must be lowercase.

        One scan of the fields for several names, as a parser checks for the fields
        that announce a request body.
        """
        keys = self._keys
        if keys is None:
            keys = self._lookup()[0]
        return not names.isdisjoint(keys)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        keys, fields = self._lookup()
        for key, (name, _) in zip(keys, fields, strict=True):
            if key not in seen:
                seen.add(key)
                yield name

    def __len__(self) -> int:
        """Number of distinct header names."""
        return len(set(self._lookup()[0]))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        mine, theirs = self._fields(), other._fields()
        return [(n.lower(), v) for n, v in mine] == [(n.lower(), v) for n, v in theirs]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fields()!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        """The single value of ``name``, or ``default`` if absent.

        Raises :exc:`MultipleValuesError` if there are several: an ambiguous header
        is never silently replaced by ``default``.
        """
        value = self._value(name)
        return default if value is None else value

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; an empty list if absent."""
        return self._get_all(name.lower())

    def _get_all(self, key: str) -> list[str]:
        """:meth:`get_all` for a lowercase name (interned: found faster)."""
        keys = self._keys
        if keys is None:
            keys, fields = self._lookup()
        else:
            fields = self._list
        # A header is most often absent or once: list.count and list.index run in C.
        count = keys.count(key)
        if count == 0:
            return []
        if count == 1:
            return [fields[keys.index(key)][1]]
        return [field[1] for k, field in zip(keys, fields, strict=True) if k == key]

    def items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` field in order."""
        if self._keys is None:
            return self._fields()
        return list(self._list)

    raw_items = items

    def update(self, items: Headers | HeadersLike | None = None, **kwargs: str) -> None:
        """Append fields from ``items`` (headers, a mapping or pairs) and ``kwargs``."""
        pairs: Iterable[tuple[str, str]]
        if items is None:
            pairs = ()
        elif isinstance(items, Headers):
            pairs = items.raw_items()
        elif isinstance(items, Mapping):
            pairs = items.items()
        else:
            pairs = items
        for name, value in pairs:
            self[name] = value
        for name, value in kwargs.items():
            self[name] = value

    def copy(self) -> Headers:
        """A copy, independent of this object (unpacked)."""
        return Headers(self._fields())

    def serialize(self) -> bytes:
        """The fields as ``Name: value\\r\\n`` lines (without the blank line)."""
        if self._keys is None:
            return cast(str, self._list).encode("latin-1")
        return "".join([f"{name}: {value}\r\n" for name, value in self._list]).encode("latin-1")


def _unpack(text: str) -> list[tuple[str, str]]:
    """The fields of the text :meth:`Headers.compact` packed: ``Name: value\\r\\n``
    lines, each split at its first ``": "`` (a name is a token: no colon, no space)."""
    lines = text.split("\r\n")
    lines.pop()  # after the last line end
    fields: list[tuple[str, str]] = []
    for line in lines:
        name, _, value = line.partition(": ")
        fields.append((name, value))
    return fields
