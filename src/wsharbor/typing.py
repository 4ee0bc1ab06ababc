"""Types shared by every layer of wsharbor."""

from __future__ import annotations

import http
import logging
from typing import Any, TypeAlias

__all__ = [
    "BytesLike",
    "Data",
    "DataLike",
    "ExtensionName",
    "ExtensionParameter",
    "LoggerLike",
    "Origin",
    "StatusLike",
    "Subprotocol",
]

#: A WebSocket message: ``str`` for a text frame, ``bytes`` for a binary frame.
Data: TypeAlias = str | bytes

#: Bytes-like objects, sent as binary messages.
BytesLike: TypeAlias = bytes | bytearray | memoryview

#: A message to send: ``str`` or bytes-like.
DataLike: TypeAlias = str | bytes | bytearray | memoryview

#: An HTTP status: an :class:`http.HTTPStatus` or an ``int``.
StatusLike: TypeAlias = http.HTTPStatus | int

#: A logger or a logger adapter.
LoggerLike: TypeAlias = "logging.Logger | logging.LoggerAdapter[Any]"

#: The value of an Origin header.
Origin: TypeAlias = str

#: A subprotocol name, as in the Sec-WebSocket-Protocol header.
Subprotocol: TypeAlias = str

#: An extension name, as in the Sec-WebSocket-Extensions header.
ExtensionName: TypeAlias = str

#: One extension parameter: name and optional value.
ExtensionParameter: TypeAlias = tuple[str, str | None]
