"""A server-wide budget for the bytes every connection buffers together.

Each connection is bounded on its own: ``max_queue * max_size + read_limit``
received bytes waiting for the application (see ``docs/asyncio.md``). With the
defaults that is 32 MiB per connection, so a thousand clients flooding a
handler that reads slowly could make a server hold tens of gigabytes, every one
of them within its own limit. ``serve(max_buffered=N)`` adds a bound for all of
them together.

Theory of operation
-------------------

A :class:`ReadBudget` is shared by every connection of a server. A connection
tells it how many bytes it holds (received, not yet read by the application:
its ``buffered_bytes``) each time that changes, after a read and after the
application takes a message. Connections that hold nothing are not in its
table, so idle connections cost nothing.

The budget keeps two ``MIN_READ`` (1 KiB) per open connection in reserve for
the small reads described below, and at least a quarter of ``max_buffered``;
what is left is ``usable``. Once the total passes half of it, reading pauses on
the connections holding the most: those holding more than their share, the
other half divided by the number of open connections. Each connection can then
add at most its share, so all of them together stay under ``usable``. A
connection whose handler keeps up holds a message for a moment only, well
under its share, and keeps its round trip; the flooders stop being read and
their clients are pushed back by TCP. When the total falls to three eighths of
``usable``, every connection the budget paused reads again.

Pausing stops growth; only the application reading makes the total fall. Near
``high``, reads shrink to the room left (at least ``MIN_READ``, 1 KiB), so that
a thousand connections readable in the same event loop iteration can't each
land a whole ``read_limit`` (64 KiB) past the budget.

Shares are computed from the connections open at the time: connections that
opened early, while a flood began, may have taken shares larger than today's,
and the reserve be spent. The bound holds anyway: no read is larger than the
room left under ``max_buffered``, and when less than ``MIN_READ`` is left every
open connection is paused until the total falls to three eighths of
``usable`` (a connection opening then waits). The total counts messages as the
application gets them: with compression, one read of a paused-at-the-limit
connection may still inflate into messages of up to ``max_size`` each, so the
bound is ``max_buffered`` plus what one read inflates to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["MIN_READ", "ReadBudget"]

#: The smallest read near the budget (a read must have room for something).
MIN_READ = 1024


class ReadBudget:
    """The bytes buffered by all the connections of a server, and their bound."""

    __slots__ = ("held", "high", "members", "over", "paused", "spent", "total")

    def __init__(self, high: int) -> None:
        if high <= 0:
            raise ValueError(f"max_buffered must be positive or None, got {high}")
        #: ``max_buffered``: the total stays under it.
        self.high = high
        #: Bytes held by each connection holding anything.
        self.held: dict[Connection, int] = {}
        self.total = 0
        #: Open connections, holding anything or not.
        self.members: set[Connection] = set()
        #: Connections whose reading the budget paused.
        self.paused: set[Connection] = set()
        self.over = False
        #: Less than MIN_READ left under ``high``: every connection is paused.
        self.spent = False

    @property
    def usable(self) -> int:
        """``max_buffered`` less the reserve for small reads: two ``MIN_READ`` per
        open connection, and at least a quarter of it (see the module docstring)."""
        reserve = max(2 * MIN_READ * len(self.members), self.high // 4)
        return max(0, self.high - reserve)

    def join(self, connection: Connection) -> None:
        """``connection`` is open (it may hold bytes from now on)."""
        self.members.add(connection)
        if self.high - self.total < MIN_READ:
            self._pause(connection)  # spent: it waits with the others

    def update(self, connection: Connection, held: int) -> None:
        """``connection`` now holds ``held`` bytes."""
        before = self.held.pop(connection, 0)
        if held:
            self.held[connection] = held
        self.total += held - before
        usable = self.usable
        if self.high - self.total < MIN_READ:
            if not self.spent:
                # Spent, whatever the shares were (see the module docstring):
                # everyone waits (join() pauses those opening meanwhile).
                self.spent = self.over = True
                for member in self.members:
                    if member not in self.paused:
                        self._pause(member)
            elif connection not in self.paused:
                self._pause(connection)  # one that opened while it was falling
        elif self.total > usable // 2:
            if not self.over:
                self.over = True
                self._pause_the_most()
            elif connection not in self.paused and (
                held > self.share() or (self.total > usable and held >= MIN_READ)
            ):
                # Over its share; or the budget is spent (shares taken while few
                # connections were open were larger) and it holds more than a
                # small read: then only connections holding almost nothing read.
                self._pause(connection)
        elif self.over and self.total <= usable * 3 // 8:
            self.over = self.spent = False
            paused, self.paused = self.paused, set()
            for one in paused:
                one._budget_resume()

    def share(self) -> int:
        """What a connection may hold while throttling: an equal part of the half
        of the usable budget above the point where throttling starts."""
        usable = self.usable
        return (usable - usable // 2) // max(1, len(self.members))

    def read_size(self, connection: Connection, read_limit: int) -> int:
        """How much ``connection`` may read now: ``read_limit``, or less near the
        budget: while throttling, no more than what is left of its share; never
        more than the room left; at least ``MIN_READ``, unless less is left under
        ``max_buffered`` (then every open connection is paused: only one that
        isn't reading data, in its handshake or closing, reads at most that)."""
        room = self.usable - self.total
        if self.over:
            room = min(room, self.share() - self.held.get(connection, 0))
        if room >= read_limit:
            return read_limit
        return max(1, min(max(MIN_READ, room), self.high - self.total))

    def forget(self, connection: Connection) -> None:
        """``connection`` is closed: what it held counts no more."""
        self.members.discard(connection)
        self.paused.discard(connection)
        self.update(connection, 0)

    def _pause_the_most(self) -> None:
        share = self.share()
        for connection, held in self.held.items():
            if held > share and connection not in self.paused:
                self._pause(connection)

    def _pause(self, connection: Connection) -> None:
        if connection._budget_pause():
            self.paused.add(connection)
