"""A future whose waiting task can be resumed at once, without a loop iteration.

A task that awaits an asyncio future registers its wakeup with
``add_done_callback``; ``set_result()`` schedules it with ``call_soon``, so the
task runs in the *next* iteration of the event loop: one more pass of the loop
and one more ``epoll_wait`` system call between a message arriving and the
coroutine waiting for it running. With one message in flight, that is the
difference between a server that answers in the callback that read the request
and one that answers in the next iteration (issue 12, item 3).

:class:`DirectFuture` keeps the callbacks registered on it while it is pending.
:meth:`~DirectFuture.complete` sets its result without scheduling them, and
:meth:`~DirectFuture.wake` then runs them right away, each in its context: the
waiting task takes one step *now*, inside the protocol callback that received
the message. That is only done where asyncio would do the same for any task:
when no task is running (a protocol callback, not a coroutine), so the task can
be entered. Otherwise, and for every other way of completing it
(``set_result``, ``set_exception``, ``cancel``), the callbacks are scheduled as
asyncio schedules them. Cancellation, timeouts, ``asyncio.current_task()`` and
context variables behave as for any future: the task itself runs the step.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["DirectFuture"]

T = TypeVar("T")

_Callback = Callable[[Any], object]


class DirectFuture(asyncio.Future[T], Generic[T]):
    """An :class:`asyncio.Future` that can resume the task awaiting it at once
    (see the module docstring)."""

    # One callback (the awaiting task's wakeup) is the rule: kept in two slots,
    # further ones in a list, so that a connection waiting in recv() costs no
    # more than with a plain future's first callback plus two pointers.
    __slots__ = ("_callback", "_context", "_more")

    def __init__(self, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._callback: _Callback | None = None
        self._context: contextvars.Context | None = None
        self._more: list[tuple[_Callback, contextvars.Context]] | None = None

    def add_done_callback(
        self, fn: _Callback, /, *, context: contextvars.Context | None = None
    ) -> None:
        if self.done():
            super().add_done_callback(fn, context=context)  # scheduled, as asyncio does
            return
        if context is None:
            context = contextvars.copy_context()
        if self._callback is None:
            self._callback = fn
            self._context = context
        elif self._more is None:
            self._more = [(fn, context)]
        else:
            self._more.append((fn, context))

    def remove_done_callback(self, fn: _Callback, /) -> int:
        removed = super().remove_done_callback(fn)
        if self._callback is not None and self._callback == fn:
            self._callback = self._context = None
            removed += 1
        if self._more:
            kept = [(callback, context) for callback, context in self._more if callback != fn]
            removed += len(self._more) - len(kept)
            self._more = kept
        if self._callback is None and self._more:
            self._callback, self._context = self._more.pop(0)
        return removed

    def set_result(self, result: T, /) -> None:
        super().set_result(result)
        self._schedule()

    def set_exception(self, exception: type | BaseException, /) -> None:
        super().set_exception(exception)
        self._schedule()

    def cancel(self, msg: Any | None = None) -> bool:
        if not super().cancel(msg=msg):
            return False
        self._schedule()
        return True

    def complete(self, result: T) -> None:
        """Set the result; the callbacks wait for :meth:`wake`."""
        super().set_result(result)

    def fail(self, exception: BaseException) -> None:
        """Set the exception; the callbacks wait for :meth:`wake`."""
        super().set_exception(exception)

    def wake(self) -> None:
        """Run the callbacks of a future completed with :meth:`complete` or
        :meth:`fail`: at once when no task is running, else in the next loop
        iteration."""
        callback, context = self._callback, self._context
        if callback is None or context is None:
            return
        loop = self.get_loop()
        if self._more or asyncio.current_task(loop) is not None:
            # Inside a task, another task can't be stepped: schedule, as asyncio does.
            self._schedule()
            return
        self._callback = self._context = None
        try:
            context.run(callback, self)
        except RuntimeError:
            # The context is entered somewhere up the stack (the callback
            # didn't run), or the task can't be entered: as asyncio would, run
            # the callback from the loop, where it can't be either.
            loop.call_soon(callback, self, context=context)

    def _schedule(self) -> None:
        callback, context = self._callback, self._context
        if callback is None:
            return
        loop = self.get_loop()
        self._callback = self._context = None
        loop.call_soon(callback, self, context=context)
        more, self._more = self._more, None
        for callback, context in more or ():
            loop.call_soon(callback, self, context=context)
