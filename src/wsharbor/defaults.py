"""The connection defaults of every layer, in one place.

The sans-I/O protocol, the asyncio and sync servers and clients, and the
application server's command line (``wsharbor run``) all read these names; none
writes a default of its own. Compression defaults live beside their type, in
:data:`wsharbor.protocol.deflate.SERVER_DEFAULTS` and ``CLIENT_DEFAULTS``.

The values and why (see ``docs/asyncio.md``, "Options"):

- ``MAX_SIZE``: the largest message received, 1 MiB, as websockets.
- ``MAX_FRAGMENTS``: frames in one message, 4,096: a message of ``MAX_SIZE``
  in 256-byte fragments. Browsers send whole messages and streaming clients a
  frame per chunk, far fewer than that; empty or tiny fragments add nothing
  toward ``MAX_SIZE`` but cost a frame's work each, so they are bounded too.
  A message over it fails with 1009.
- ``MAX_BUFFERED``: bytes received and not read yet by all the connections of a
  server together, beyond which reading pauses on those holding the most (see
  :mod:`wsharbor.asyncio.budget`). Off by default: each connection is bounded on
  its own, and the right figure is the memory a server may spend on input
  buffers (``docs/asyncio.md``, "Buffers and backpressure").
- ``MAX_QUEUE``: messages received and not read yet before reading pauses:
  16, as websockets. Reading also pauses at ``READ_LIMIT`` bytes, which binds
  first for most traffic: measured, a flood holds the same (60 to 100 KiB, a
  message more when it is larger) with 16 or 32 (``python -m
  benchmarks.limits``), and 64-byte echo throughput doesn't change.
- ``READ_LIMIT``: bytes received and not read yet before reading pauses; also
  the most one read from the socket takes.
- ``WRITE_LIMIT``: the write buffer's high-water mark; above it ``send()`` waits
  and reading pauses, until the buffer drains to a quarter of it: 32 KiB, as
  websockets. It is what a peer that doesn't read makes a connection hold
  (above the kernel's buffers): measured, 32 KiB instead of 64 KiB with 64
  KiB, with no change in 64 KiB echo throughput.
- ``OPEN_TIMEOUT``, ``PING_INTERVAL``, ``PING_TIMEOUT``, ``CLOSE_TIMEOUT``:
  seconds, as websockets.
- ``BACKOFF_*``: the delays between reconnection attempts of the threaded
  client's ``reconnect()``, as websockets: a random first delay up to
  ``BACKOFF_INITIAL_DELAY`` (RFC 6455 section 7.2.3), then from
  ``BACKOFF_MIN_DELAY`` growing by ``BACKOFF_FACTOR`` up to ``BACKOFF_MAX_DELAY``.
- ``MAX_REDIRECTS``: redirects a client follows during the opening handshake.
"""

from __future__ import annotations

__all__ = [
    "BACKOFF_FACTOR",
    "BACKOFF_INITIAL_DELAY",
    "BACKOFF_MAX_DELAY",
    "BACKOFF_MIN_DELAY",
    "CLOSE_TIMEOUT",
    "MAX_BUFFERED",
    "MAX_FRAGMENTS",
    "MAX_QUEUE",
    "MAX_REDIRECTS",
    "MAX_SIZE",
    "OPEN_TIMEOUT",
    "PING_INTERVAL",
    "PING_TIMEOUT",
    "READ_LIMIT",
    "WRITE_LIMIT",
]

MAX_SIZE: int = 2**20
MAX_FRAGMENTS: int = 4096
MAX_BUFFERED: int | None = None
MAX_QUEUE: int = 16
READ_LIMIT: int = 2**16
WRITE_LIMIT: int = 2**15
OPEN_TIMEOUT: float = 10.0
PING_INTERVAL: float = 20.0
PING_TIMEOUT: float = 20.0
CLOSE_TIMEOUT: float = 10.0
BACKOFF_INITIAL_DELAY: float = 5.0
BACKOFF_MIN_DELAY: float = 3.1
BACKOFF_MAX_DELAY: float = 90.0
BACKOFF_FACTOR: float = 1.618
MAX_REDIRECTS: int = 10
