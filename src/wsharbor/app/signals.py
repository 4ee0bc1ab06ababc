"""Signal handlers installed for a while, and the previous ones restored after.

One context manager for the single process, the workers and the supervisor (as
uvicorn's ``capture_signals``): it saves the current handlers, installs ours,
and on exit puts the saved ones back, whatever happened inside.

- :func:`capture_signals` with a ``loop``: the handler runs in the event loop
  (``loop.add_signal_handler``), with the signal number as argument.
- Without a loop: a plain ``signal.signal`` handler, called between bytecodes
  of the main thread with ``(signum, frame)`` as Python calls it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the supervisor runs no event loop: don't import asyncio for it
    import asyncio

__all__ = ["capture_signals"]


@contextlib.contextmanager
def capture_signals(
    signals: Iterable[int],
    handler: Callable[[int], object],
    loop: asyncio.AbstractEventLoop | None = None,
) -> Iterator[None]:
    """Route ``signals`` to ``handler(signum)`` inside the block; restore the
    previous handlers on exit."""
    signals = tuple(signals)
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in signals}

    def plain(signum: int, frame: FrameType | None) -> None:
        handler(signum)

    try:
        for sig in signals:
            if loop is not None:
                loop.add_signal_handler(sig, handler, sig)
            else:
                signal.signal(sig, plain)
        yield
    finally:
        for sig in signals:
            if loop is not None:
                loop.remove_signal_handler(sig)
            with contextlib.suppress(OSError, ValueError, TypeError):
                # None: a handler installed from C; nothing to restore.
                if previous[sig] is not None:
                    signal.signal(sig, previous[sig])
