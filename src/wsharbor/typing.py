"""Types shared by every layer of wsharbor."""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

__all__ = [
    "Data",
    "ExtensionName",
    "ExtensionParameter",
    "LoggerLike",
    "Origin",
    "Subprotocol",
]

#: A WebSocket message: ``str`` for a text frame, ``bytes`` for a binary frame.
Data: TypeAlias = str | bytes

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
