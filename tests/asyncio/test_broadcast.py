"""``broadcast()`` with websockets' semantics (issue 10, item 4), and ``fanout()``.

The scenarios websockets defines (``text=``, a fragmented message in progress,
closed connections, ``raise_exceptions``) run once with websockets' own
``serve``/``connect``/``broadcast`` and once with ours, through the same code,
and must give the same results. Then what is ours alone: a connection whose
write buffer is over ``write_limit`` is skipped, logged once per call, and
reported as :exc:`~wsharbor.exceptions.WriteBufferFull` when asked.
Real connections on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import wsharbor

from .conftest import HOST, TIMEOUT, RawClient, port_of, small_buffer_listener, wait

pytestmark = pytest.mark.timeout(30)

LIBRARIES = ["websockets", "wsharbor"]


def modules(library: str) -> tuple[ModuleType, ModuleType]:
    """``<library>.asyncio.server`` and ``<library>.asyncio.client``."""
    return (
        importlib.import_module(f"{library}.asyncio.server"),
        importlib.import_module(f"{library}.asyncio.client"),
    )


class Harness:
    """A server of either library whose handler registers connections by path,
    sends a fragmented message on ``/fragmenting`` (paused after its first
    frame until :attr:`release` is set), and otherwise waits for the close."""

    def __init__(self) -> None:
        self.by_path: dict[str, Any] = {}
        self.arrived = asyncio.Condition()
        self.fragment_sent = asyncio.Event()
        self.release = asyncio.Event()

    async def handler(self, ws: Any) -> None:
        async with self.arrived:
            self.by_path[ws.request.path] = ws
            self.arrived.notify_all()
        if ws.request.path == "/fragmenting":

            async def chunks() -> Any:
                yield "first, "
                self.fragment_sent.set()
                await self.release.wait()
                yield "last"

            await ws.send(chunks())
        await ws.wait_closed()

    async def wait_for(self, count: int) -> None:
        async with self.arrived:
            await wait(self.arrived.wait_for(lambda: len(self.by_path) >= count))


@pytest.mark.parametrize("library", LIBRARIES)
async def test_text_option_as_websockets(library: str) -> None:
    server_module, client_module = modules(library)
    harness = Harness()
    async with server_module.serve(harness.handler, HOST, 0) as server:
        uri = f"ws://{HOST}:{server.sockets[0].getsockname()[1]}"
        async with (
            client_module.connect(uri + "/deflate", compression="deflate") as deflate,
            client_module.connect(uri + "/plain", compression=None) as plain,
        ):
            await harness.wait_for(2)
            targets = list(harness.by_path.values())
            sent = [
                ("héllo", None),
                ("str as binary", False),
                (b"bytes", None),
                (b"bytes as text", True),
                (bytearray(b"bytearray"), None),
                (memoryview(b"memoryview as text"), True),
            ]
            for message, text in sent:
                assert server_module.broadcast(targets, message, text=text) is None
            for client in (deflate, plain):
                got = [await wait(client.recv()) for _ in sent]
                assert got == [
                    "héllo",
                    b"str as binary",
                    b"bytes",
                    "bytes as text",
                    b"bytearray",
                    "memoryview as text",
                ]
            with pytest.raises(TypeError):
                server_module.broadcast(targets, {"not": "a message"})


@pytest.mark.parametrize("raise_exceptions", [False, True])
@pytest.mark.parametrize("library", LIBRARIES)
async def test_fragmented_message_in_progress_as_websockets(
    library: str, raise_exceptions: bool, caplog: pytest.LogCaptureFixture
) -> None:
    server_module, client_module = modules(library)
    harness = Harness()
    caplog.set_level(logging.WARNING, logger=f"{library}.server")
    async with server_module.serve(harness.handler, HOST, 0) as server:
        uri = f"ws://{HOST}:{server.sockets[0].getsockname()[1]}"
        async with (
            client_module.connect(uri + "/fragmenting") as fragmenting,
            client_module.connect(uri + "/plain") as plain,
        ):
            await harness.wait_for(2)
            await wait(harness.fragment_sent.wait())
            targets = [harness.by_path["/fragmenting"], harness.by_path["/plain"]]
            if raise_exceptions:
                with pytest.raises(ExceptionGroup) as info:
                    server_module.broadcast(targets, "news", raise_exceptions=True)
                assert info.value.message == "skipped broadcast"
                (error,) = info.value.exceptions
                assert type(error).__name__ == "ConcurrencyError"
                assert isinstance(error, RuntimeError)
                assert str(error) == "sending a fragmented message"
            else:
                assert server_module.broadcast(targets, "news") is None
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            expected = (
                [] if raise_exceptions else ["skipped broadcast: sending a fragmented message"]
            )
            assert warnings == expected
            # The other connection got it; the fragmented message arrives whole.
            assert await wait(plain.recv()) == "news"
            harness.release.set()
            assert await wait(fragmenting.recv()) == "first, last"
            # Then the fragmenting connection takes broadcasts again.
            server_module.broadcast(targets, "again", raise_exceptions=True)
            assert await wait(fragmenting.recv()) == "again"
            assert await wait(plain.recv()) == "again"


@pytest.mark.parametrize("library", LIBRARIES)
async def test_closed_connections_are_skipped_silently_as_websockets(
    library: str, caplog: pytest.LogCaptureFixture
) -> None:
    server_module, client_module = modules(library)
    harness = Harness()
    caplog.set_level(logging.WARNING, logger=f"{library}.server")
    async with server_module.serve(harness.handler, HOST, 0) as server:
        uri = f"ws://{HOST}:{server.sockets[0].getsockname()[1]}"
        async with client_module.connect(uri + "/gone") as gone:
            await harness.wait_for(1)
        await wait(harness.by_path["/gone"].wait_closed())
        assert gone.close_code == 1000
        assert server_module.broadcast(harness.by_path.values(), "x", raise_exceptions=True) is None
        assert server_module.broadcast(harness.by_path.values(), "x") is None
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# Ours alone: the slow reader.


async def until(predicate: Callable[[], bool]) -> None:
    """Yield to the event loop until ``predicate()`` holds, within ``TIMEOUT``."""
    async with asyncio.timeout(TIMEOUT):
        while not predicate():
            await asyncio.sleep(0)


async def test_slow_reader_is_skipped_logged_once_per_call_or_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_limit = 8192
    harness = Harness()
    caplog.set_level(logging.WARNING, logger="wsharbor.server")
    async with wsharbor.serve(
        harness.handler, sock=small_buffer_listener(), write_limit=write_limit, compression=None
    ) as server:
        uri = f"ws://{HOST}:{port_of(server)}"
        slow_clients = [
            await RawClient.connect(port_of(server), f"/slow{i}", rcvbuf=4096, limit=4096)
            for i in range(2)
        ]
        async with wsharbor.connect(uri + "/plain") as plain:
            await harness.wait_for(3)
            slow = [harness.by_path["/slow0"], harness.by_path["/slow1"]]
            # A large send() to a peer that doesn't read: it waits for the
            # buffer to drain, which it never does; the buffer stays far over
            # write_limit whatever the kernel and the client take in.
            stuck = [asyncio.ensure_future(c.send(b"x" * 2**18)) for c in slow]
            await until(lambda: all(c.transport.get_write_buffer_size() > 2**17 for c in slow))
            targets = [slow[0], harness.by_path["/plain"], slow[1]]
            buffered = [c.transport.get_write_buffer_size() for c in slow]
            assert min(buffered) > write_limit

            # Default: no exception, one WARNING for the call, naming the count.
            assert wsharbor.broadcast(targets, "one") is None
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert [r.getMessage() for r in warnings] == [
                "skipped broadcast: 2 connections with a write buffer over write_limit"
            ]
            assert await wait(plain.recv()) == "one"

            # raise_exceptions=True: one WriteBufferFull per slow reader, in order,
            # after the others got the message; nothing logged.
            caplog.clear()
            with pytest.raises(ExceptionGroup) as info:
                wsharbor.broadcast(targets, "two", raise_exceptions=True)
            errors = info.value.exceptions
            assert [type(e) for e in errors] == [wsharbor.WriteBufferFull] * 2
            assert [e.connection for e in errors] == slow  # type: ignore[attr-defined]
            assert all(isinstance(e, RuntimeError) for e in errors)
            assert "write_limit (8192 bytes)" in str(errors[0])
            assert caplog.records == []
            assert await wait(plain.recv()) == "two"

            # The skipped messages were not buffered: memory stays bounded.
            after = [c.transport.get_write_buffer_size() for c in slow]
            assert all(a <= b for a, b in zip(after, buffered, strict=True))

            # fanout() says the same, without logging or raising.
            assert wsharbor.fanout(targets, "three") == slow
            assert caplog.records == []
            assert await wait(plain.recv()) == "three"
        for client in slow_clients:
            client.transport.abort()
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)


async def test_broadcast_is_fanout_with_reporting() -> None:
    """``broadcast`` and ``fanout`` share one implementation: what ``fanout``
    skips is exactly what ``broadcast`` reports or ignores."""
    harness = Harness()
    async with wsharbor.serve(harness.handler, HOST, 0) as server:
        uri = f"ws://{HOST}:{port_of(server)}"
        async with (
            wsharbor.connect(uri + "/fragmenting") as fragmenting,
            wsharbor.connect(uri + "/gone") as gone,
        ):
            await harness.wait_for(2)
            await wait(harness.fragment_sent.wait())
            await gone.close()
            await wait(harness.by_path["/gone"].wait_closed())
            targets = [harness.by_path["/gone"], harness.by_path["/fragmenting"]]
            assert wsharbor.fanout(targets, "x") == targets
            with pytest.raises(ExceptionGroup) as info:
                wsharbor.broadcast(targets, "x", raise_exceptions=True)
            # The closed one is skipped silently; the fragmenting one is reported.
            assert [type(e) for e in info.value.exceptions] == [wsharbor.ConcurrencyError]
            harness.release.set()
            assert await wait(fragmenting.recv(), TIMEOUT) == "first, last"


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_broadcast_keeps_order_with_answers_to_a_burst(compression: str | None) -> None:
    """A handler working through a burst of queued messages sends its answers in
    batches: a broadcast from that handler goes into the same batch, after the
    answer sent before it, not straight to the socket ahead of it (with and
    without a frame encoded once for every connection)."""
    count = 200

    async def handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(f"answer {message}")
            wsharbor.broadcast([ws], f"broadcast {message}")

    async with wsharbor.serve(handler, HOST, 0, compression=compression) as server:
        uri = f"ws://{HOST}:{port_of(server)}"
        async with wsharbor.connect(uri, compression=compression) as client:
            for n in range(count):  # sent back to back: the server reads bursts
                await client.send(str(n))
            received = [await wait(client.recv(), TIMEOUT) for _ in range(2 * count)]
    expected = [f"{kind} {n}" for n in range(count) for kind in ("answer", "broadcast")]
    assert received == expected


@pytest.mark.uvloop_too
async def test_broadcast_larger_than_the_sockets_take_arrives_whole_and_in_order() -> None:
    """Messages larger than the kernel buffers, broadcast to readers that read
    late, one of them listed twice: what a socket doesn't take is buffered
    (by the transport, after broadcast()'s single C call on asyncio), a copy
    for the same connection in the same call goes behind it, and the next
    broadcast queues behind both."""
    harness = Harness()
    messages = [bytes([n]) * 100_000 for n in range(3)]
    async with wsharbor.serve(
        harness.handler, sock=small_buffer_listener(), write_limit=2**20, compression=None
    ) as server:
        twice = await RawClient.connect(port_of(server), "/twice", rcvbuf=4096)
        once = await RawClient.connect(port_of(server), "/once", rcvbuf=4096)
        await harness.wait_for(2)
        targets = [harness.by_path["/twice"], harness.by_path["/once"], harness.by_path["/twice"]]
        for message in messages:
            assert wsharbor.fanout(targets, message) == []
        assert harness.by_path["/twice"].transport.get_write_buffer_size() > 0
        for message in messages:
            for _ in range(2):
                assert await twice.recv_message(TIMEOUT) == message
            assert await once.recv_message(TIMEOUT) == message
        for client in (twice, once):
            client.transport.abort()
