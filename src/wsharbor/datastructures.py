"""``wsharbor.datastructures``: where websockets users import :class:`Headers` from.

A re-export of :mod:`wsharbor.protocol.datastructures`, so that
``from websockets.datastructures import Headers`` ports by renaming the package.
"""

from __future__ import annotations

from .protocol.datastructures import Headers, HeadersLike, MultipleValuesError

__all__ = ["Headers", "HeadersLike", "MultipleValuesError"]
