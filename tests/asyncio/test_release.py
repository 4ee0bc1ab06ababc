"""Closed connections are freed by reference counting, not by the cycle collector.

A server that waits for a full collection to free what a closed connection held
(issue 13, item 7: 1,000 refused deflate bombs left 320 MiB behind) keeps its
peak memory long after the peak. Each scenario here runs with the cycle
collector off and checks that no connection object is left once the
connections are closed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import wsharbor
from wsharbor.asyncio.connection import Connection
from wsharbor.protocol.frames import Frame, Opcode, serialize_frame

from .conftest import HOST, TIMEOUT, RawClient, port_of, uri_of, wait


def alive() -> list[Connection]:
    return [o for o in gc.get_objects() if isinstance(o, Connection)]


@pytest.fixture
async def no_gc() -> AsyncIterator[None]:
    gc.collect()
    before = alive()
    assert before == [], before
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


#: pytest keeps log records, and the record of "connection handler failed" keeps
#: the exception and its frames: the servers here log to nowhere instead, as a
#: server with ordinary logging handlers does once the line is written. (Built
#: directly, not with getLogger(), so that pytest doesn't attach its handlers.)
QUIET = logging.Logger("tests.release")
QUIET.propagate = False
QUIET.addHandler(logging.NullHandler())


async def gone(timeout: float = 5.0) -> None:
    """Wait until no connection object is left (callbacks that follow
    connection_lost() run a few loop iterations later)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while alive():
        assert loop.time() < deadline, f"still alive: {alive()}"
        await asyncio.sleep(0.01)


async def echo(ws: wsharbor.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def fails(ws: wsharbor.ServerConnection) -> None:
    await ws.recv()
    raise RuntimeError("handler bug")


def bomb(size: int) -> bytes:
    """A client frame: ``size`` zero bytes, compressed (RSV1), masked."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(b"\0" * size) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return serialize_frame(Frame(Opcode.BINARY, data[:-4], True, True), mask=True)


async def recv_closes(ws: wsharbor.ClientConnection) -> tuple[type[Exception], int | None]:
    """What ``recv()`` raised and the close code, once the connection is closed.

    The exception is not kept (``pytest.raises(...) as caught`` would keep it, and
    with it this frame, in a cycle of the test's own making)."""
    try:
        # Not wait_for(): on Python 3.11 it wraps recv() in a task, which keeps
        # the exception, whose traceback keeps wait_for's frame, which keeps the task.
        async with asyncio.timeout(TIMEOUT):
            await ws.recv()
    except wsharbor.ConnectionClosed as exc:
        kind = type(exc)
    else:
        raise AssertionError("recv() returned a message")
    await wait(ws.wait_closed())
    return kind, ws.close_code


async def client_closes(port: int) -> None:
    async with wsharbor.connect(f"ws://{HOST}:{port}/") as ws:
        await ws.send("hello")
        assert await wait(ws.recv()) == "hello"


async def client_sends_a_bomb(port: int) -> None:
    ws = await wsharbor.connect(f"ws://{HOST}:{port}/")
    assert ws.transport is not None
    ws.transport.write(bomb(2**22))
    assert await recv_closes(ws) == (wsharbor.ConnectionClosedError, 1009)


async def handler_raises(port: int) -> None:
    ws = await wsharbor.connect(f"ws://{HOST}:{port}/")
    await ws.send("boom")
    assert await recv_closes(ws) == (wsharbor.ConnectionClosedError, 1011)


async def protocol_error(port: int) -> None:
    client = await RawClient.connect(port)
    client.send_frame(Opcode.TEXT, b"unmasked", mask=False)
    assert (await client.expect_close()).code == 1002
    await client.close_transport()


async def peer_vanishes(port: int) -> None:
    ws = await wsharbor.connect(f"ws://{HOST}:{port}/")
    assert ws.transport is not None
    ws.transport.abort()
    await wait(ws.wait_closed())


Scenario = Callable[[int], Awaitable[None]]


@pytest.mark.parametrize(
    ("handler", "scenario"),
    [
        (echo, client_closes),
        (echo, client_sends_a_bomb),
        (fails, handler_raises),
        (echo, protocol_error),
        (echo, peer_vanishes),
    ],
    ids=["normal", "deflate-bomb", "handler-raises", "protocol-error", "peer-vanishes"],
)
async def test_closed_connections_are_freed_without_the_cycle_collector(
    no_gc: None, handler: Any, scenario: Scenario
) -> None:
    async with wsharbor.serve(handler, HOST, 0, max_size=2**16, logger=QUIET) as server:
        for _ in range(3):
            await scenario(port_of(server))
        # The server side sees the end of each connection a little later.
        await gone()


async def test_shutdown_frees_connections_without_the_cycle_collector(no_gc: None) -> None:
    server = await wsharbor.serve(echo, HOST, 0, logger=QUIET)
    clients = [await wsharbor.connect(uri_of(server)) for _ in range(3)]
    server.close()
    await wait(server.wait_closed())
    for ws in clients:
        assert await recv_closes(ws) == (wsharbor.ConnectionClosedOK, 1001)
    del clients, ws
    await gone()
