"""``wsharbor.http11``: where websockets users import :class:`Request` and
:class:`Response` from.

A re-export of :mod:`wsharbor.protocol.http11` (``Response.status_code`` is
there, as websockets names it), plus the default ``Server`` and ``User-Agent``
header values under websockets' names.
"""

from __future__ import annotations

from typing import Final

from .protocol.http11 import Request, Response
from .version import __version__

__all__ = ["SERVER", "USER_AGENT", "Request", "Response"]

#: The ``Server`` header of responses by default.
SERVER: Final = f"wsharbor/{__version__}"
#: The ``User-Agent`` header of requests by default.
USER_AGENT: Final = f"wsharbor/{__version__}"
