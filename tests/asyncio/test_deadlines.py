"""DeadlineQueue: many deadlines of one delay behind one timer handle, on a real loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import wsharbor
from wsharbor.asyncio.connection import ConnectionOptions
from wsharbor.asyncio.deadlines import DeadlineQueue

from .conftest import HOST, TIMEOUT, uri_of

DELAY = 0.02


class Recorder:
    """Records (key, loop time) for each callback; a future per expected count."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.fired: list[tuple[str, float]] = []
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self, key: str) -> None:
        self.fired.append((key, self.loop.time()))
        for count, waiter in self.waiters:
            if len(self.fired) >= count and not waiter.done():
                waiter.set_result(None)

    async def wait_for(self, count: int) -> None:
        waiter: asyncio.Future[None] = self.loop.create_future()
        self.waiters.append((count, waiter))
        if len(self.fired) >= count:
            waiter.set_result(None)
        await asyncio.wait_for(waiter, TIMEOUT)

    def keys(self) -> list[str]:
        return [key for key, _ in self.fired]


async def test_deadlines_fire_in_order_not_before_their_time() -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder(loop)
    queue: DeadlineQueue[str] = DeadlineQueue(loop, DELAY, recorder)
    added = {}
    for key in "abc":
        added[key] = loop.time()
        queue.add(key)
        assert key in queue
        # Apart in time; on a busy machine the sleep may outlast DELAY, so
        # earlier keys may fire meanwhile: the checks below hold either way.
        await asyncio.sleep(0.005)
    await recorder.wait_for(3)
    assert recorder.keys() == ["a", "b", "c"]
    for key, fired_at in recorder.fired:
        assert fired_at >= added[key] + DELAY - 0.002  # within the clock's resolution
    assert len(queue) == 0
    assert queue._handle is None  # nothing left: no timer armed


async def test_discard_cancels_and_add_pushes_back() -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder(loop)
    queue: DeadlineQueue[str] = DeadlineQueue(loop, DELAY, recorder)
    queue.add("gone")
    queue.add("moved")
    queue.add("kept")
    queue.discard("gone")
    queue.discard("never added")  # no error
    await asyncio.sleep(DELAY / 2)
    queue.add("moved")  # its deadline is now DELAY from here, after "kept"
    await recorder.wait_for(2)
    assert recorder.keys() == ["kept", "moved"]
    await asyncio.sleep(DELAY * 2)
    assert recorder.keys() == ["kept", "moved"]


async def test_an_emptied_queue_fires_once_then_stays_disarmed() -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder(loop)
    queue: DeadlineQueue[str] = DeadlineQueue(loop, DELAY, recorder)
    queue.add("a")
    handle = queue._handle
    assert handle is not None
    queue.discard("a")
    assert queue._handle is handle  # left armed: cheaper than cancel + re-arm
    await asyncio.sleep(DELAY * 2)
    assert recorder.fired == [] and queue._handle is None  # fired, found nothing
    queue.add("b")
    queue.clear()
    assert queue._handle is None and len(queue) == 0
    await asyncio.sleep(DELAY * 2)
    assert recorder.fired == []


async def test_an_entry_added_after_the_queue_emptied_fires_on_time() -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder(loop)
    queue: DeadlineQueue[str] = DeadlineQueue(loop, DELAY, recorder)
    queue.add("early")
    queue.discard("early")
    await asyncio.sleep(DELAY / 2)
    added = loop.time()
    queue.add("late")  # the timer armed for "early" fires first and re-arms
    await recorder.wait_for(1)
    assert recorder.keys() == ["late"]
    assert recorder.fired[0][1] >= added + DELAY - 0.002


async def test_a_callback_may_add_again_and_one_timer_stays_armed() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    done: asyncio.Future[None] = loop.create_future()

    def again(key: str) -> None:
        fired.append(key)
        if len(fired) < 3:
            queue.add(key)  # like a keepalive setting its next ping
        elif not done.done():
            done.set_result(None)

    queue: DeadlineQueue[str] = DeadlineQueue(loop, DELAY, again)
    queue.add("ping")
    await asyncio.wait_for(done, TIMEOUT)
    assert fired == ["ping", "ping", "ping"]
    # One handle at most: the loop's scheduled timers hold no orphans of ours.
    ours = [h for h in loop._scheduled if not h.cancelled() and h._callback == queue._run]  # type: ignore[attr-defined]
    assert len(ours) == 0


async def test_a_failing_callback_is_reported_and_the_others_still_run() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    recorder = Recorder(loop)

    def callback(key: str) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        recorder(key)

    queue: DeadlineQueue[str] = DeadlineQueue(loop, DELAY, callback)
    try:
        queue.add("bad")
        queue.add("good")
        await recorder.wait_for(1)
    finally:
        loop.set_exception_handler(None)
    assert recorder.keys() == ["good"]
    assert len(reported) == 1
    assert isinstance(reported[0]["exception"], RuntimeError)
    assert reported[0]["key"] == "bad"


@pytest.mark.parametrize("count", [1, 1000])
async def test_many_entries_one_timer(count: int) -> None:
    loop = asyncio.get_running_loop()
    recorder = Recorder(loop)
    queue: DeadlineQueue[str] = DeadlineQueue(loop, DELAY, recorder)
    before = len(loop._scheduled)  # type: ignore[attr-defined]
    for i in range(count):
        queue.add(str(i))
    assert len(loop._scheduled) == before + 1  # type: ignore[attr-defined]
    discarded = set(range(0, count, 2)) if count > 1 else set()
    for i in discarded:
        queue.discard(str(i))
    expected = [str(i) for i in range(count) if i not in discarded]
    await recorder.wait_for(len(expected))
    assert recorder.keys() == expected


async def test_connections_with_the_same_timeouts_share_their_queues() -> None:
    async def hold(ws: Any) -> None:
        await ws.wait_closed()

    async with wsharbor.serve(hold, HOST, 0, ping_interval=5.0) as server:
        uri = uri_of(server)
        async with (
            wsharbor.connect(uri, ping_interval=5.0) as a,
            wsharbor.connect(uri, ping_interval=5.0) as b,
            wsharbor.connect(uri, ping_interval=7.0) as c,
        ):
            # Each connect() has its own options, yet a and b share one queue per
            # timeout (one timer), and so do the server's connections.
            assert a._timers is b._timers
            assert a._timers is not c._timers
            assert a._timers.ping is not None and a in a._timers.ping and b in a._timers.ping
            server_side = list(server.connections)
            assert len(server_side) == 3
            assert len({id(conn._timers) for conn in server_side}) == 1
        # Closed connections leave the queues.
        assert a not in a._timers.ping and b not in a._timers.ping


def test_a_new_loop_in_the_same_thread_gets_new_queues() -> None:
    options = ConnectionOptions(logger=logging.getLogger("test"))

    async def check() -> None:
        # The same options object, used again on a later loop of this thread.
        loop = asyncio.get_running_loop()
        timers = options.timers(loop)
        assert timers.loop is loop
        assert ConnectionOptions(logger=logging.getLogger("test")).timers(loop) is timers

    asyncio.run(check())
    asyncio.run(check())
