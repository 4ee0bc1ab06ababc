"""The threaded WebSocket API, for programs without an event loop.

The same API as websockets' ``websockets.sync``: :func:`wsharbor.sync.client.connect`
opens a connection, :func:`wsharbor.sync.server.serve` runs a server with a
thread per connection. Both drive the same sans-I/O core as the asyncio layer
(:mod:`wsharbor.protocol`).
"""

from __future__ import annotations

__all__: list[str] = []
