"""``wsharbor.frames``: where websockets users import :class:`CloseCode` from.

A re-export of the public names of :mod:`wsharbor.protocol.frames`.
"""

from __future__ import annotations

from .protocol.frames import Close, CloseCode, Frame, Opcode

__all__ = ["Close", "CloseCode", "Frame", "Opcode"]
