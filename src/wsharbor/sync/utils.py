"""Small helpers of the threaded API: one time budget spread over several steps."""

from __future__ import annotations

import time

__all__ = ["Deadline"]


class Deadline:
    """A point in time, for a timeout that covers several blocking steps.

    ``connect()`` spends one ``open_timeout`` on the TCP connection, the TLS
    handshake and the WebSocket handshake; each step asks :meth:`timeout` how
    much is left. ``Deadline(None)`` never expires.
    """

    __slots__ = ("deadline",)

    def __init__(self, timeout: float | None) -> None:
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def timeout(self, *, raise_if_elapsed: bool = True) -> float | None:
        """Seconds left, or None without a limit.

        Raises :exc:`TimeoutError` once the deadline has passed, unless
        ``raise_if_elapsed`` is false: then the result may be zero or negative.
        """
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if raise_if_elapsed and left <= 0:
            raise TimeoutError("timed out")
        return left
