"""Run a coroutine eagerly: in the caller's frame until it first has to wait.

The opening handshake is one coroutine that reads top to bottom
(:meth:`ServerConnection.handshake <wsharbor.asyncio.server.ServerConnection.handshake>`),
but most handshakes never wait for anything: ``process_request`` and
``process_response`` are usually plain functions or absent. A task per handshake
would cost a task, a loop iteration and a context switch for nothing, in the
hot path of a reconnect storm. :func:`start_eagerly` runs the coroutine at once,
inside the ``data_received`` callback; only a coroutine that awaits something not
ready yet continues in a task, from where it stopped.

Python 3.12's ``asyncio.eager_task_factory`` does the same for every task of a
loop; this does it for one coroutine, on Python 3.11 too, without changing the
loop's task factory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["start_eagerly"]


def start_eagerly(
    coro: Coroutine[Any, Any, None],
    loop: asyncio.AbstractEventLoop,
    tasks: set[asyncio.Task[None]],
) -> asyncio.Task[None] | None:
    """Run ``coro`` until it completes or waits; return the task it continues in, if any.

    A task is added to ``tasks`` and removes itself from it when done, so that
    its owner can cancel what is still running. Exceptions raised by ``coro``
    before it first waits propagate to the caller.
    """
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    task = loop.create_task(_resume(coro, waiting_on))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


async def _resume(coro: Coroutine[Any, Any, None], waiting_on: Any) -> None:
    """Wait for what ``coro`` was waiting on, then let it go on in this task."""
    if waiting_on is not None:
        # An asyncio future (Future.__await__ yields it); a bare yield, as in
        # asyncio.sleep(0), yields None and just wants the next iteration.
        try:
            await asyncio.wait((waiting_on,))
        except BaseException:
            coro.close()  # cancelled while waiting: the handshake ends here
            raise
    # The future is done: resuming the coroutine gives it the future's result
    # or exception, where its own ``await`` stopped.
    await _Resumed(coro)


class _Resumed:
    """``await _Resumed(coro)``: go on with a coroutine that already started.

    ``await coro`` would do, but type checkers and linters take a started
    coroutine for a mistake; this says it on purpose.
    """

    __slots__ = ("coro",)

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro = coro

    def __await__(self) -> Generator[Any, None, None]:
        return self.coro.__await__()
