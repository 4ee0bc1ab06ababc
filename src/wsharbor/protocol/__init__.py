"""The sans-I/O WebSocket protocol core: bytes in, events out; calls in, bytes out.

Nothing in this package does I/O or imports ``asyncio``, ``socket``,
``threading`` or ``signal``: ``tests/test_layers.py`` enforces it.

``wsharbor.protocol.State`` and ``wsharbor.protocol.Side`` are here, where
websockets users import them from (``websockets.protocol.State``); they are
loaded on first use, so that importing one module of the core doesn't import
the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import Side, State

__all__ = ["Side", "State"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(importlib.import_module(".connection", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
