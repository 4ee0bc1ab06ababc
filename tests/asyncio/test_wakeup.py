"""Tests of wsharbor.asyncio.wakeup: a future that resumes its task at once.

A :class:`DirectFuture` completed with ``complete()`` and woken with ``wake()``
from a loop callback runs the awaiting task's step inside ``wake()``; from a task,
and through every other way of completing it, it behaves as an asyncio future
(the task runs in the next iteration). The server side is checked on real
sockets: with one message in flight, the handler runs inside the callback that
read the message.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

import pytest

import wsharbor
from wsharbor import ServerConnection
from wsharbor.asyncio.wakeup import DirectFuture

from .conftest import HOST, port_of, uri_of, wait

pytestmark = pytest.mark.timeout(30)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


async def started(awaitable: Any) -> asyncio.Task[Any]:
    """A task awaiting ``awaitable``, run until it waits."""

    async def waiting() -> Any:
        return await awaitable

    task = asyncio.ensure_future(waiting())
    await asyncio.sleep(0)
    return task


async def test_wake_from_a_callback_runs_the_task_at_once() -> None:
    loop = asyncio.get_running_loop()
    future: DirectFuture[str] = DirectFuture(loop=loop)
    seen: list[Any] = []

    async def receiver() -> str:
        request_id.set("task's own")
        value = await future
        seen.append((value, asyncio.current_task() is task, request_id.get()))
        return value

    task = asyncio.ensure_future(receiver())
    await asyncio.sleep(0)
    done = loop.create_future()

    def callback() -> None:  # a protocol callback: no task is running
        future.complete("hello")
        assert seen == []
        future.wake()
        # The task took its step inside wake(), in its own context.
        assert seen == [("hello", True, "task's own")]
        assert task.done()
        done.set_result(None)

    loop.call_soon(callback)
    await wait(done)
    assert task.result() == "hello"
    assert request_id.get() == "-"  # the task's context didn't leak here


async def test_fail_and_wake_from_a_callback_raises_in_the_task_at_once() -> None:
    loop = asyncio.get_running_loop()
    future: DirectFuture[str] = DirectFuture(loop=loop)
    task = await started(future)
    done = loop.create_future()

    def callback() -> None:  # a protocol callback: no task is running
        future.fail(ConnectionResetError("gone"))
        assert not task.done()
        future.wake()
        assert task.done()  # the task took its step inside wake()
        done.set_result(None)

    loop.call_soon(callback)
    await wait(done)
    with pytest.raises(ConnectionResetError, match="gone"):
        task.result()


async def test_fail_and_wake_from_a_task_waits_for_the_next_iteration() -> None:
    future: DirectFuture[int] = DirectFuture(loop=asyncio.get_running_loop())
    task = await started(future)
    future.fail(ValueError("later"))
    future.wake()
    assert not task.done()
    with pytest.raises(ValueError, match="later"):
        await wait(task)


async def test_wake_from_a_task_waits_for_the_next_iteration() -> None:
    loop = asyncio.get_running_loop()
    future: DirectFuture[int] = DirectFuture(loop=loop)
    task = await started(future)
    future.complete(7)
    future.wake()
    assert not task.done()  # another task is running: it can't be stepped now
    assert await wait(task) == 7


@pytest.mark.parametrize("how", ["set_result", "set_exception", "cancel"])
async def test_other_completions_schedule_like_a_future(how: str) -> None:
    loop = asyncio.get_running_loop()
    future: DirectFuture[int] = DirectFuture(loop=loop)
    task = await started(future)
    if how == "set_result":
        future.set_result(1)
    elif how == "set_exception":
        future.set_exception(ValueError("nope"))
    else:
        assert future.cancel("bye")
    assert not task.done()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert task.done()
    if how == "set_result":
        assert task.result() == 1
    elif how == "set_exception":
        with pytest.raises(ValueError, match="nope"):
            task.result()
    else:
        assert task.cancelled()
    future.wake()  # nothing left to run


async def test_cancelling_the_task_cancels_the_future() -> None:
    future: DirectFuture[int] = DirectFuture(loop=asyncio.get_running_loop())
    task = await started(future)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert future.cancelled()


async def test_cancelled_between_complete_and_wake() -> None:
    """The task is cancelled after its future got a result, before it ran: it gets
    CancelledError, and the result stays on the future (recv() puts it back)."""
    loop = asyncio.get_running_loop()
    future: DirectFuture[str] = DirectFuture(loop=loop)
    task = await started(future)
    done = loop.create_future()

    def callback() -> None:
        future.complete("kept")
        task.cancel()
        future.wake()
        done.set_result(None)

    loop.call_soon(callback)
    await wait(done)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert future.result() == "kept"


async def test_timeout_around_a_direct_future() -> None:
    future: DirectFuture[int] = DirectFuture(loop=asyncio.get_running_loop())
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await future
    assert future.cancelled()


async def test_callbacks_added_removed_and_on_a_done_future() -> None:
    loop = asyncio.get_running_loop()
    future: DirectFuture[int] = DirectFuture(loop=loop)
    calls: list[str] = []

    def first(_: object) -> None:
        calls.append("first")

    def second(_: object) -> None:
        calls.append("second")

    future.add_done_callback(first)
    future.add_done_callback(second)
    future.add_done_callback(first)
    assert future.remove_done_callback(first) == 2
    future.complete(1)
    future.wake()  # not a lone task's wakeup: scheduled
    assert calls == []
    await asyncio.sleep(0)
    assert calls == ["second"]
    future.add_done_callback(first)  # done: scheduled, as asyncio does
    assert calls == ["second"]
    await asyncio.sleep(0)
    assert calls == ["second", "first"]


async def test_two_tasks_awaiting_one_future() -> None:
    loop = asyncio.get_running_loop()
    future: DirectFuture[str] = DirectFuture(loop=loop)
    tasks = [await started(future), await started(future)]
    done = loop.create_future()
    loop.call_soon(lambda: (future.complete("both"), future.wake(), done.set_result(None)))
    await wait(done)
    assert await wait(asyncio.gather(*tasks)) == ["both", "both"]


# On real sockets.


async def test_handler_answers_inside_the_callback_that_read_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One message in flight: the handler waiting in recv() runs in the callback
    that read the message, and its answer is written there, not one loop
    iteration later."""
    handled: list[Any] = []
    inside: list[tuple[int, int]] = []
    original = ServerConnection.buffer_updated

    def buffer_updated(self: ServerConnection, nbytes: int) -> None:
        before = len(handled)
        original(self, nbytes)
        if self.protocol is not None:
            inside.append((before, len(handled)))

    monkeypatch.setattr(ServerConnection, "buffer_updated", buffer_updated)

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            handled.append(message)
            await ws.send(message)

    async with (
        wsharbor.serve(echo, HOST, 0, compression=None) as server,
        wsharbor.connect(uri_of(server), compression=None) as client,
    ):
        for index in range(20):
            await client.send(f"message {index}")
            assert await wait(client.recv()) == f"message {index}"
        assert port_of(server)
    assert handled == [f"message {index}" for index in range(20)]
    # Each read of one message ran the handler once, inside the callback.
    assert [after - before for before, after in inside if after != before] == [1] * 20


async def test_a_burst_is_answered_in_order_in_one_step() -> None:
    """Many messages in one read: the handler wakes once, takes the first, then
    the others from the queue; every answer arrives, in order."""
    count = 200
    steps: list[int] = []

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            steps.append(len(message))
            await ws.send(message)

    async with (
        wsharbor.serve(echo, HOST, 0, compression=None) as server,
        wsharbor.connect(uri_of(server), compression=None) as client,
    ):
        assert client.transport is not None
        client.transport.pause_reading()
        for index in range(count):
            await client.send(index.to_bytes(2, "big"))
        client.transport.resume_reading()
        for index in range(count):
            assert await wait(client.recv()) == index.to_bytes(2, "big")
    assert len(steps) == count


async def test_handler_in_recv_ends_inside_connection_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The client closes while the handler waits in recv(): the handler gets
    ConnectionClosedOK and runs to its end inside connection_lost(), after the
    server forgot the connection, not one loop iteration later."""
    finished: list[str] = []
    inside: list[bool] = []
    all_lost = asyncio.Event()
    original = ServerConnection.connection_lost

    def connection_lost(self: ServerConnection, exc: Exception | None) -> None:
        before = len(finished)
        original(self, exc)
        inside.append(len(finished) > before)
        if len(inside) == 3:
            all_lost.set()

    monkeypatch.setattr(ServerConnection, "connection_lost", connection_lost)

    async def handler(ws: ServerConnection) -> None:
        try:
            await ws.recv()
        except wsharbor.ConnectionClosedOK:
            # Everything connection_lost() does was done before this step.
            assert ws not in ws.server._connections
            await ws.wait_closed()  # returns at once: TCP is closed
            finished.append(f"closed {ws.close_code}")

    async with wsharbor.serve(handler, HOST, 0, compression=None) as server:
        for _ in range(3):
            async with wsharbor.connect(uri_of(server), compression=None):
                pass  # the handler waits in recv() until this closes
        await wait(all_lost.wait())
    assert finished == ["closed 1000"] * 3
    assert inside == [True] * 3


async def test_handler_in_recv_ends_even_if_the_observer_raises_on_close() -> None:
    """An observer raising in connection_closed() doesn't leave the handler
    waiting in recv() forever: it is woken all the same."""
    ended = asyncio.Event()
    loop = asyncio.get_running_loop()
    errors: list[Any] = []
    loop.set_exception_handler(lambda _, context: errors.append(context.get("exception")))

    class Raising(wsharbor.ConnectionObserver):
        def connection_closed(self, connection: Any) -> None:
            raise RuntimeError("observer bug")

    async def handler(ws: ServerConnection) -> None:
        try:
            await ws.recv()
        except wsharbor.ConnectionClosedOK:
            ended.set()

    try:
        async with wsharbor.serve(handler, HOST, 0, compression=None, observer=Raising()) as server:
            async with wsharbor.connect(uri_of(server), compression=None):
                pass
            await wait(ended.wait())
    finally:
        loop.set_exception_handler(None)
    assert any(isinstance(error, RuntimeError) for error in errors)
