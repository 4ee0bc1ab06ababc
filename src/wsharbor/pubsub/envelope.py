"""The bytes a publication travels in between processes.

One line of ASCII fields separated by ``|``, then the payload as is::

    W1|<kind>|<offset>|<epoch>|<published_at_us>|<message id>|<payload>

``kind`` is ``t`` (text, the payload is UTF-8) or ``b`` (binary); ``offset`` and
``epoch`` are the room's position (``0`` and empty for a direct message);
``published_at_us`` is the publisher's clock in microseconds (for the lag
histogram); the message id (``<node id>.<counter>``) identifies the publication,
so that a process can tell the publication it saw at an offset from another one
written at the same offset after a broker failover rolled back its state. The
Redis publish script builds the same bytes (``redis_broker.PUBLISH``), since the
offset and epoch are only known inside Redis.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["VERSION", "Envelope", "decode", "encode"]

VERSION = b"W1"


class Envelope(NamedTuple):
    """A publication as received from the broker (or read from the history)."""

    text: bool
    offset: int
    epoch: str
    published_at: float
    message_id: str
    payload: bytes


def encode(
    text: bool, offset: int, epoch: str, published_at: float, message_id: str, payload: bytes
) -> bytes:
    """The envelope's bytes (what memory:// and direct messages send)."""
    head = (
        f"{'t' if text else 'b'}|{offset}|{epoch}|{round(published_at * 1e6)}|{message_id}|"
    ).encode()
    return b"".join((VERSION, b"|", head, payload))


def decode(data: bytes) -> Envelope:
    """Parse an envelope; raise ValueError if ``data`` is not one."""
    parts = data.split(b"|", 6)
    if len(parts) != 7 or parts[0] != VERSION or parts[1] not in (b"t", b"b"):
        raise ValueError("not a wsharbor envelope")
    return Envelope(
        parts[1] == b"t",
        int(parts[2]),
        parts[3].decode("ascii"),
        int(parts[4]) / 1e6,
        parts[5].decode("ascii"),
        parts[6],
    )
