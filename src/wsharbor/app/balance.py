"""Connections spread evenly across workers: a shared scoreboard and accept throttling.

Why
---

Workers share one listening socket, and the kernel hands each new connection to
whichever worker's ``accept()`` gets there first: the one back in ``epoll_wait``
first, which is often the same one. With 200 clients arriving one after another,
the busiest of two workers held 52% to 78% of them in four runs (20 of 20 in
another). WebSocket connections last hours, so an uneven accept makes an
overloaded worker for hours.

How
---

The supervisor creates a :class:`Scoreboard`: a page of shared memory (a
``memfd``), one 32-bit slot per worker, holding its number of open connections
(-1 for a slot no worker counts in: free, starting, or retiring). Each worker
gets the board's file descriptor and its slot when it starts.

A worker's :class:`Balancer` updates its slot as connections come and go, and
stops accepting (:meth:`Server.pause_accepting
<wsharbor.asyncio.server.Server.pause_accepting>`) while it holds more than
``SLACK`` connections above the least loaded worker: the kernel then gives new
connections to the others. It is told of each accept synchronously, inside the
server's accept loop (the ``connection_accepted`` observer event), so it stops
before the next ``accept()``, even in a burst. A paused worker looks again every
``RECHECK`` seconds and accepts again once it is no longer ahead, or, as a
safety valve, when connections wait in the listening socket's backlog at two
looks in a row (the less loaded workers are not keeping up: serving them late
would be worse than serving them unevenly).

The socket itself is untouched: one socket, held by the supervisor, so a rolling
restart still refuses nothing and loses nothing queued. A new worker starts at
0 and takes the new connections until it catches up.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the supervisor imports this module without asyncio
    import asyncio

    from ..asyncio.server import Server

__all__ = ["RECHECK", "SLACK", "SLOTS", "Balancer", "Scoreboard", "backlog_length"]

#: Workers the board has room for (one page of 32-bit slots, the first one a header).
SLOTS = 1023
#: A worker accepts while it holds at most this many connections above the least loaded.
SLACK = 1
#: Seconds between looks of a paused worker at the board.
RECHECK = 0.05

_FREE = -1
_SIZE = 4 * (SLOTS + 1)


class Scoreboard:
    """Open connections per worker, in shared memory.

    Slot 0 is a header: the number of slots in use (the highest claimed slot + 1),
    so that readers scan only those. Worker slots are 1 to ``SLOTS``.
    """

    def __init__(self, fd: int, *, owner: bool) -> None:
        self.fd = fd
        self._owner = owner
        self._map = mmap.mmap(fd, _SIZE)
        self._view = memoryview(self._map).cast("i")
        self._claimed: set[int] = set()

    @classmethod
    def create(cls) -> Scoreboard:
        """A new board (the supervisor), every slot free."""
        fd = os.memfd_create("wsharbor-scoreboard", os.MFD_CLOEXEC)
        os.ftruncate(fd, _SIZE)
        board = cls(fd, owner=True)
        struct.pack_into(f"{SLOTS + 1}i", board._map, 0, 0, *([_FREE] * SLOTS))
        return board

    @classmethod
    def attach(cls, fd: int) -> Scoreboard:
        """The board a worker inherited as ``fd``."""
        return cls(fd, owner=False)

    def close(self) -> None:
        self._view.release()
        self._map.close()
        if self._owner:
            with contextlib.suppress(OSError):
                os.close(self.fd)

    # The supervisor.

    def claim(self) -> int:
        """A free slot for a new worker (it counts once it is serving)."""
        slot = next(s for s in range(1, SLOTS + 1) if s not in self._claimed)
        self._claimed.add(slot)
        self._view[slot] = _FREE
        self._view[0] = max(self._claimed) + 1
        return slot

    def release(self, slot: int) -> None:
        """A worker exited: its connections count no more."""
        self._claimed.discard(slot)
        self._view[slot] = _FREE
        self._view[0] = max(self._claimed, default=0) + 1

    # Workers.

    def set(self, slot: int, count: int) -> None:
        self._view[slot] = count

    def least_other(self, slot: int) -> int | None:
        """The fewest connections held by another counting worker, or None."""
        view = self._view
        counts = [view[s] for s in range(1, min(view[0], SLOTS + 1)) if s != slot]
        counted = [count for count in counts if count >= 0]
        return min(counted) if counted else None

    def counts(self) -> dict[int, int]:
        """Every counting slot and its count (for tests and logs)."""
        view = self._view
        return {s: view[s] for s in range(1, min(view[0], SLOTS + 1)) if view[s] >= 0}


def backlog_length(sock: socket.socket) -> int | None:
    """Connections waiting in a listening TCP socket's accept queue, or None if
    the system doesn't say (Linux reports it as ``tcpi_unacked`` of TCP_INFO)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    except OSError:
        return None
    # struct tcp_info: 8 bytes of u8 fields, then u32 rto, ato, snd_mss,
    # rcv_mss, unacked: byte 24.
    (unacked,) = struct.unpack_from("I", info, 24)
    return int(unacked)


class Balancer:
    """A worker's side of the scoreboard: counts its connections and throttles accepts."""

    def __init__(
        self,
        board: Scoreboard,
        slot: int,
        sock: socket.socket,
        *,
        slack: int = SLACK,
        recheck: float = RECHECK,
        backlog: Callable[[socket.socket], int | None] = backlog_length,
    ) -> None:
        self.board = board
        self.slot = slot
        self.sock = sock
        self.slack = slack
        self.recheck = recheck
        self._backlog = backlog
        self.count = 0
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = 0  # looks in a row that saw connections waiting
        self._relieving = False  # accepting although ahead: connections wait
        self._counting = False

    def start(self, server: Server) -> None:
        """The worker serves: count in the board from now on."""
        self._server = server
        self._loop = server.get_loop()
        self._counting = True
        self.board.set(self.slot, self.count)

    def leave(self) -> None:
        """The worker stops accepting for good (it retires or stops)."""
        self._counting = False
        self.board.set(self.slot, _FREE)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def accepted(self) -> None:
        self.count += 1
        if not self._counting:
            return
        self.board.set(self.slot, self.count)
        if not self._relieving and self._ahead():
            assert self._server is not None
            self._server.pause_accepting()
            self._schedule()

    def closed(self) -> None:
        self.count -= 1
        if self._counting:
            self.board.set(self.slot, self.count)

    def _ahead(self) -> bool:
        least = self.board.least_other(self.slot)
        return least is not None and self.count > least + self.slack

    def _schedule(self) -> None:
        if self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(self.recheck, self._look)

    def _look(self) -> None:
        """A paused (or relieving) worker looks at the board and the backlog again."""
        self._timer = None
        server = self._server
        if not self._counting or server is None:
            return
        if not self._ahead():
            self._relieving = False
            self._waiting = 0
            server.resume_accepting()
            return
        waiting = self._backlog(self.sock)
        if self._relieving:
            if not waiting:
                # The backlog is empty again: back to throttling.
                self._relieving = False
                server.pause_accepting()
            self._schedule()
            return
        self._waiting = self._waiting + 1 if waiting else 0
        if self._waiting >= 2:
            # The others don't keep up: take connections although ahead, until
            # the backlog is empty.
            self._waiting = 0
            self._relieving = True
            server.resume_accepting()
        self._schedule()
