"""Per-connection timeouts that share one timer: :class:`DeadlineQueue`.

Every connection of a server has the same ``open_timeout``, ``ping_interval``,
``ping_timeout`` and ``close_timeout``. For one delay, deadlines therefore come
due in the order they were set, so a queue in insertion order is also a queue in
deadline order, and one :class:`asyncio.TimerHandle`, armed for the head, serves
every connection. Setting and cancelling a deadline is an ``OrderedDict``
insertion or deletion instead of a timer handle pushed on the event loop's heap
and cancelled later: it is cheaper on the handshake path and smaller for an idle
connection (an entry of about 100 bytes instead of a timer handle and its heap slot).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["DeadlineQueue"]

_K = TypeVar("_K", bound=Hashable)

# asyncio runs a timer as soon as its deadline is within the clock's resolution;
# a deadline that close counts as due, so the timer is never re-armed for "now".
_RESOLUTION = time.get_clock_info("monotonic").resolution


class DeadlineQueue(Generic[_K]):
    """Deadlines that all share one ``delay``; ``callback(key)`` runs at each.

    :meth:`add` (re)sets the deadline of ``key`` to ``delay`` seconds from now,
    :meth:`discard` cancels it. A callback that raises is reported to the event
    loop's exception handler; the other deadlines still run.
    """

    __slots__ = ("_callback", "_delay", "_entries", "_handle", "_loop", "_running")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delay: float,
        callback: Callable[[_K], object],
    ) -> None:
        self._loop = loop
        self._delay = delay
        self._callback = callback
        self._entries: collections.OrderedDict[_K, float] = collections.OrderedDict()
        # Armed for the head's deadline, or earlier (when the head was discarded):
        # firing early only re-arms it.
        self._handle: asyncio.TimerHandle | None = None
        self._running = False

    @property
    def delay(self) -> float:
        return self._delay

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def add(self, key: _K) -> None:
        """Set the deadline of ``key`` to ``delay`` from now (replacing an earlier one)."""
        entries = self._entries
        deadline = self._loop.time() + self._delay
        if key in entries:
            entries.move_to_end(key)
        entries[key] = deadline
        if self._handle is None and not self._running:
            self._handle = self._loop.call_at(deadline, self._run)

    def discard(self, key: _K) -> None:
        """Cancel the deadline of ``key``, if it has one.

        The timer stays armed even when the queue empties: it fires once, finds
        nothing due and stops. That is cheaper than cancelling it and arming a new
        one when connections come and go one at a time.
        """
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Cancel every deadline."""
        self._entries.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _run(self) -> None:
        self._handle = None
        self._running = True  # callbacks may add(): arm the timer once, at the end
        entries = self._entries
        try:
            now = self._loop.time() + _RESOLUTION
            while entries:
                key, deadline = next(iter(entries.items()))
                if deadline > now:
                    break
                del entries[key]
                try:
                    self._callback(key)
                except Exception as exc:
                    self._loop.call_exception_handler(
                        {"message": "deadline callback failed", "exception": exc, "key": key}
                    )
        finally:
            self._running = False
            if entries:
                self._handle = self._loop.call_at(next(iter(entries.values())), self._run)
