"""Streaming UTF-8 validation of text payloads (RFC 6455 section 8.1).

RFC 6455 section 8.1: when an endpoint is to interpret a byte stream as UTF-8
and finds that it is not a valid UTF-8 stream, it must fail the connection
(1007). :class:`~wsharbor.protocol.connection.WebSocketProtocol` feeds a
validator each piece of a text message as it arrives, frame after frame and
within a frame, so that a peer sending a large text message with a bad byte
early is refused at once, not after the whole message (Autobahn 6.4.x).

A validator keeps its state across :meth:`~Utf8ValidatorPython.feed` calls (a
sequence may be split anywhere) and produces no text: the message is decoded
once, when complete. ``Utf8Validator`` is the C accelerator's
(``_speedups.Utf8Validator``, a byte-level state machine with an ASCII fast
path) when it was built, else :class:`Utf8ValidatorPython`, the standard
library's incremental decoder with its output dropped.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Protocol

from .frames import SPEEDUPS

__all__ = ["Utf8Validator", "Utf8ValidatorLike", "Utf8ValidatorPython"]

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


class Utf8ValidatorLike(Protocol):
    """What a streaming UTF-8 validator does."""

    def feed(self, data: bytes | bytearray | memoryview, final: bool = False) -> None:
        """Validate the next bytes; raise :exc:`UnicodeDecodeError` when they make
        the text invalid, or, with ``final``, when it ends inside a sequence."""


class Utf8ValidatorPython:
    """The pure-Python validator: :func:`codecs.getincrementaldecoder` ``("utf-8")``,
    output dropped."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        self._decoder = _utf8_decoder()

    def feed(self, data: bytes | bytearray | memoryview, final: bool = False) -> None:
        """Validate the next bytes (see :class:`Utf8ValidatorLike`)."""
        self._decoder.decode(data, final)


Utf8Validator: Callable[[], Utf8ValidatorLike]
if SPEEDUPS:
    from ._speedups import Utf8Validator as _Utf8ValidatorC

    Utf8Validator = _Utf8ValidatorC
else:  # pragma: no cover - depends on the build
    Utf8Validator = Utf8ValidatorPython
