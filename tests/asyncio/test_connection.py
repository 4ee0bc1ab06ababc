"""The asyncio connection: receiving, sending, pings, closing, limits, keepalive.

A raw client (see conftest) checks what is really on the wire: frames,
fragmentation, close codes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

import wsharbor
from wsharbor import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ServerConnection,
)
from wsharbor.asyncio.wakeup import DirectFuture
from wsharbor.protocol.frames import Opcode

from .conftest import HOST, TIMEOUT, RawClient, port_of, uri_of, wait

Handler = Callable[[ServerConnection], Awaitable[None]]


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


class Recorder:
    """Runs a handler body and keeps what it returned or raised, for the test to check."""

    def __init__(self) -> None:
        self.result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.connection: asyncio.Future[ServerConnection] = (
            asyncio.get_running_loop().create_future()
        )

    def wrap(self, body: Callable[[ServerConnection], Awaitable[Any]]) -> Handler:
        async def handler(ws: ServerConnection) -> None:
            self.connection.set_result(ws)
            try:
                value = await body(ws)
            except BaseException as exc:
                self.result.set_exception(exc)
                raise
            else:
                self.result.set_result(value)

        return handler


# Receiving.


async def test_recv_and_async_for() -> None:
    async def body(ws: ServerConnection) -> list[Any]:
        first = await ws.recv()
        rest = [message async for message in ws]
        return [first, *rest]

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        async with wsharbor.connect(uri_of(server)) as ws:
            for message in ("one", b"two", "three", b""):
                await ws.send(message)
        # async for ends quietly when the client closes normally.
        assert await wait(rec.result) == ["one", b"two", "three", b""]


async def test_async_for_breaks_resumes_and_raises_on_abnormal_close() -> None:
    """The connection is its own async iterator: a loop left with break can be
    started again where it stopped, recv() in between takes the next message, a
    cancelled step loses nothing, and an abnormal close raises out of the loop."""
    rec = Recorder()
    step_cancelled = asyncio.Event()

    async def body(ws: ServerConnection) -> list[Any]:
        assert aiter(ws) is ws
        got: list[Any] = []
        async for message in ws:
            got.append(message)
            break
        got.append(await ws.recv())
        # A step of the loop cancelled while waiting: the next message isn't lost.
        step = asyncio.ensure_future(anext(ws))
        await asyncio.sleep(0)
        step.cancel()
        with pytest.raises(asyncio.CancelledError):
            await step
        step_cancelled.set()
        with pytest.raises(ConnectionClosedError) as exc_info:
            async for message in ws:
                got.append(message)
        assert exc_info.value.rcvd is not None and exc_info.value.rcvd.code == 1011
        return got

    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        client.send_text("a")
        client.send_text("b")
        await wait(step_cancelled.wait())
        client.send_text("c")
        client.send_text("d")
        client.send_close(1011)
        assert (await client.expect_close()).code == 1011
        assert await wait(rec.result) == ["a", "b", "c", "d"]
        await client.close_transport()


async def test_recv_after_close_raises_once_queue_is_drained() -> None:
    rec = Recorder()
    release = asyncio.Event()

    async def body(ws: ServerConnection) -> list[Any]:
        await release.wait()
        received = [await ws.recv(), await ws.recv()]
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()
        return received

    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        client.send_text("a")
        client.send_text("b")
        client.send_close(1000)
        assert (await client.expect_close()).code == 1000
        assert await client.read_to_eof() == b""
        release.set()
        # Messages received before the close are still delivered.
        assert await wait(rec.result) == ["a", "b"]


# Sending.


async def fragments_async() -> AsyncIterator[bytes]:
    for chunk in (b"\x01", b"\x02\x03", b"\x04"):
        await asyncio.sleep(0)
        yield chunk


async def test_send_types_and_fragments_on_the_wire() -> None:
    async def body(ws: ServerConnection) -> None:
        await ws.send("text")
        await ws.send(b"bytes")
        await ws.send(bytearray(b"bytearray"))
        await ws.send(memoryview(b"xmemoryviewx")[1:-1])
        await ws.send(["frag", "ment", "ed"])
        await ws.send(fragments_async())
        await ws.send(iter([b"single"]))
        await ws.send([])  # an empty iterable sends nothing
        await ws.send("end")

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        frames = []
        while True:
            frame = await client.recv_data_frame()
            frames.append((frame.opcode, frame.data, frame.fin))
            if frame.data == b"end":
                break
        assert frames == [
            (Opcode.TEXT, b"text", True),
            (Opcode.BINARY, b"bytes", True),
            (Opcode.BINARY, b"bytearray", True),
            (Opcode.BINARY, b"memoryview", True),
            # A list of fragments really is several frames of one message.
            (Opcode.TEXT, b"frag", False),
            (Opcode.CONT, b"ment", False),
            (Opcode.CONT, b"ed", True),
            (Opcode.BINARY, b"\x01", False),
            (Opcode.CONT, b"\x02\x03", False),
            (Opcode.CONT, b"\x04", True),
            (Opcode.BINARY, b"single", True),
            (Opcode.TEXT, b"end", True),
        ]
        await wait(rec.result)
        await client.close_transport()


async def test_fragments_reassembled_by_our_client() -> None:
    async def body(ws: ServerConnection) -> None:
        await ws.send(["héllo ", "wörld"])
        await ws.send(fragments_async())

    rec = Recorder()
    async with (
        wsharbor.serve(rec.wrap(body), HOST, 0) as server,
        wsharbor.connect(uri_of(server)) as ws,
    ):
        assert await wait(ws.recv()) == "héllo wörld"
        assert await wait(ws.recv()) == b"\x01\x02\x03\x04"
        await wait(rec.result)


async def test_send_mixed_fragments_and_dict_raise_type_error() -> None:
    async def body(ws: ServerConnection) -> None:
        with pytest.raises(TypeError):
            await ws.send({"not": "a message"})
        with pytest.raises(TypeError):
            await ws.send(["text", b"bytes"])  # detected before anything is sent
        with pytest.raises(TypeError):
            await ws.send(12345)  # type: ignore[arg-type]
        await ws.send("still usable")
        with pytest.raises(TypeError):
            await ws.send(["a", "b", b"c"])  # two frames already sent: connection fails

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        assert await client.recv_message() == "still usable"
        first = await client.recv_data_frame()
        assert (first.opcode, first.data, first.fin) == (Opcode.TEXT, b"a", False)
        close = await client.expect_close()
        assert close.code == 1011
        await wait(rec.result)
        await client.close_transport()


# Pings.


async def test_ping_future_gives_latency_both_sides() -> None:
    async def body(ws: ServerConnection) -> float:
        pong_waiter = await ws.ping()
        latency = await wait(pong_waiter)
        assert ws.latency == latency
        await ws.send("done")
        await ws.wait_closed()
        return latency

    rec = Recorder()
    async with (
        wsharbor.serve(rec.wrap(body), HOST, 0) as server,
        wsharbor.connect(uri_of(server)) as ws,
    ):
        assert ws.latency == 0.0
        waiter = await ws.ping(b"payload")
        assert isinstance(waiter, asyncio.Future)
        latency = await wait(waiter)
        assert isinstance(latency, float)
        assert latency > 0
        assert ws.latency == latency
        # A ping with the same data as one still waiting is refused.
        pending = await ws.ping("dup")
        with pytest.raises(ConcurrencyError):
            await ws.ping("dup")
        await wait(pending)
        assert await wait(ws.recv()) == "done"
        await ws.close()
        server_latency = await wait(rec.result)
        assert isinstance(server_latency, float) and server_latency > 0


async def test_ping_to_raw_client_carries_payload() -> None:
    async def body(ws: ServerConnection) -> float:
        return await wait(await ws.ping(b"abc"))

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        frame = await client.recv_frame()
        assert frame is not None and (frame.opcode, frame.data) == (Opcode.PING, b"abc")
        assert await wait(rec.result) > 0  # the raw client answered (auto_pong)
        await client.close_transport()


# Closing.


async def test_server_close_code_and_reason_seen_by_peer() -> None:
    async def body(ws: ServerConnection) -> tuple[int | None, str | None, int | None]:
        before = ws.close_code
        await ws.close(4000, "bye now")
        return before, ws.close_reason, ws.close_code

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        close = await client.expect_close()
        assert (close.code, close.reason) == (4000, "bye now")
        client.send_close(4000, "ack")
        # The server closes TCP after the closing handshake (RFC 6455 7.1.1).
        assert await client.read_to_eof() == b""
        before, reason, code = await wait(rec.result)
        assert before is None
        assert (code, reason) == (4000, "ack")


async def test_client_close_code_and_reason_seen_by_handler() -> None:
    async def body(ws: ServerConnection) -> tuple[ConnectionClosed, int | None, str | None]:
        with pytest.raises(ConnectionClosed) as excinfo:
            await ws.recv()
        await ws.wait_closed()
        return excinfo.value, ws.close_code, ws.close_reason

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        ws = await wsharbor.connect(uri_of(server))
        assert ws.close_code is None and ws.close_reason is None
        await wait(ws.close(4001, "client done"))
        assert ws.close_code == 4001  # the server echoed the code
        exc, code, reason = await wait(rec.result)
        assert (exc.code, exc.reason) == (4001, "client done")
        assert (code, reason) == (4001, "client done")
        # Closing again does nothing; using the closed connection raises.
        await wait(ws.close())
        with pytest.raises(ConnectionClosed):
            await ws.send("late")
        with pytest.raises(ConnectionClosed):
            await ws.recv()


async def test_wait_closed_returns_when_peer_closes() -> None:
    rec = Recorder()

    async def body(ws: ServerConnection) -> str:
        await ws.wait_closed()
        return ws.state.name

    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        ws = await wsharbor.connect(uri_of(server))
        server_ws = await wait(rec.connection)
        assert not rec.result.done()
        await ws.close()
        assert await wait(rec.result) == "CLOSED"
        await wait(server_ws.wait_closed())  # returns at once once closed


async def test_close_callbacks_run_once_closed_and_at_once_after() -> None:
    rec = Recorder()

    async def body(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        ws = await wsharbor.connect(uri_of(server))
        server_ws = await wait(rec.connection)
        seen: list[tuple[str, object]] = []
        done = asyncio.get_running_loop().create_future()

        def record(name: str) -> Callable[[Any], None]:
            def callback(connection: Any) -> None:
                seen.append((name, connection))
                if len(seen) == 3:
                    done.set_result(None)

            return callback

        server_ws.add_close_callback(record("first"))
        server_ws.add_close_callback(record("second"))
        await asyncio.sleep(0)
        assert seen == []  # not before the connection closes
        await ws.close()
        await wait(server_ws.wait_closed())
        server_ws.add_close_callback(record("late"))  # already closed: called soon
        await wait(done)
        assert seen == [("first", server_ws), ("second", server_ws), ("late", server_ws)]


@pytest.mark.parametrize(
    ("code", "exc_type"),
    [
        (1000, ConnectionClosedOK),
        (1001, ConnectionClosedOK),
        (1011, ConnectionClosedError),
        (4000, ConnectionClosedError),
        (None, ConnectionClosedError),  # TCP dropped without a close frame: 1006
    ],
)
async def test_connection_closed_ok_vs_error(
    code: int | None, exc_type: type[ConnectionClosed]
) -> None:
    async def body(ws: ServerConnection) -> BaseException:
        try:
            await ws.recv()
        except ConnectionClosed as exc:
            return exc
        raise AssertionError("recv() returned")

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        if code is None:
            client.transport.abort()
        else:
            client.send_close(code)
            assert (await client.expect_close()).code == code
        exc = await wait(rec.result)
        assert type(exc) is exc_type
        assert exc.code == (1006 if code is None else code)
        await client.close_transport()


async def test_async_for_raises_connection_closed_error() -> None:
    async def body(ws: ServerConnection) -> None:
        async for _ in ws:
            pass

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        client.send_close(1011, "client crashed")
        with pytest.raises(ConnectionClosedError):
            await wait(rec.result)
        await client.close_transport()


async def test_remote_address() -> None:
    rec = Recorder()

    async def body(ws: ServerConnection) -> Any:
        address = ws.remote_address
        await ws.wait_closed()
        return address

    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        async with wsharbor.connect(uri_of(server)) as ws:
            assert ws.remote_address == (HOST, port_of(server))
            client_address = ws.local_address
        assert await wait(rec.result) == client_address


async def test_server_transport_extras() -> None:
    # The server's plain transport (.transport) makes sockname and socket when
    # asked; peername comes from accept() and stays after the connection closed.
    rec = Recorder()

    async def body(ws: ServerConnection) -> Any:
        transport = ws.transport
        assert transport is not None
        seen = {
            "sockname": transport.get_extra_info("sockname"),
            "socket_fileno": transport.get_extra_info("socket").fileno(),
            "local_address": ws.local_address,
            "unknown": transport.get_extra_info("nothing", "default"),
        }
        await ws.wait_closed()
        seen["peername_after"] = ws.remote_address
        return seen

    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        port = port_of(server)
        async with wsharbor.connect(uri_of(server)) as ws:
            client_address = ws.local_address
        seen = await wait(rec.result)
    assert seen["sockname"] == seen["local_address"] == (HOST, port)
    assert seen["socket_fileno"] >= 0
    assert seen["unknown"] == "default"
    assert seen["peername_after"] == client_address


# Subprotocols.


async def test_subprotocols_negotiated_by_server_preference() -> None:
    rec = Recorder()

    async def body(ws: ServerConnection) -> str | None:
        return ws.subprotocol

    async with (
        wsharbor.serve(rec.wrap(body), HOST, 0, subprotocols=["chat", "superchat"]) as server,
        wsharbor.connect(uri_of(server), subprotocols=["superchat", "chat"]) as ws,
    ):
        assert ws.subprotocol == "chat"
        assert await wait(rec.result) == "chat"


async def test_select_subprotocol_gets_connection_and_offers() -> None:
    calls: list[tuple[type, list[str]]] = []

    def select(connection: ServerConnection, subprotocols: Sequence[str]) -> str | None:
        calls.append((type(connection), list(subprotocols)))
        return subprotocols[-1] if subprotocols else None

    async def body(ws: ServerConnection) -> None:
        await ws.send(ws.subprotocol or "none")

    async with wsharbor.serve(body, HOST, 0, select_subprotocol=select) as server:
        async with wsharbor.connect(uri_of(server), subprotocols=["v1", "v2", "v3"]) as ws:
            assert ws.subprotocol == "v3"
            assert await wait(ws.recv()) == "v3"
        async with wsharbor.connect(uri_of(server)) as ws:
            assert ws.subprotocol is None
            assert await wait(ws.recv()) == "none"
    assert calls[0] == (ServerConnection, ["v1", "v2", "v3"])


# Concurrency.


async def test_concurrent_recv_raises_concurrency_error() -> None:
    async def body(ws: ServerConnection) -> tuple[Any, Any]:
        first = asyncio.ensure_future(ws.recv())
        second = asyncio.ensure_future(ws.recv())  # runs after first started waiting
        with pytest.raises(ConcurrencyError):
            await second
        await ws.send("ready")
        return await first, await ws.recv()

    rec = Recorder()
    async with (
        wsharbor.serve(rec.wrap(body), HOST, 0) as server,
        wsharbor.connect(uri_of(server)) as ws,
    ):
        assert await wait(ws.recv()) == "ready"
        await ws.send("m1")
        await ws.send("m2")
        assert await wait(rec.result) == ("m1", "m2")


async def test_recv_cancelled_as_message_arrives_keeps_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The message lands in recv()'s waiter and the task is cancelled in the same
    loop iteration: the next recv() must still return it, with the byte count right.

    A waiter is woken at once when the message arrives in a protocol callback
    (DirectFuture.wake), which leaves no room for the race; it is woken in the
    next iteration, as any future, when a task is running then. The second way
    is forced here."""
    monkeypatch.setattr(DirectFuture, "wake", DirectFuture._schedule)
    victims: list[asyncio.Task[Any]] = []
    original = ServerConnection.buffer_updated

    def buffer_updated(self: ServerConnection, nbytes: int) -> None:
        original(self, nbytes)
        while victims:
            victims.pop().cancel()

    monkeypatch.setattr(ServerConnection, "buffer_updated", buffer_updated)

    async def body(ws: ServerConnection) -> tuple[Any, int, Any]:
        task = asyncio.ensure_future(ws.recv())
        await asyncio.sleep(0)  # let it start waiting
        victims.append(task)
        await ws.send("waiting")
        with pytest.raises(asyncio.CancelledError):
            await task
        kept = await wait(ws.recv())
        following = await wait(ws.recv())
        return kept, ws.buffered_bytes, following

    rec = Recorder()
    async with (
        wsharbor.serve(rec.wrap(body), HOST, 0) as server,
        wsharbor.connect(uri_of(server)) as ws,
    ):
        assert await wait(ws.recv()) == "waiting"
        await ws.send("precious")
        await ws.send("next")
        kept, buffered, following = await wait(rec.result)
    assert kept == "precious"
    assert following == "next"
    # Nothing is left: the re-queued message didn't corrupt the byte count
    # that drives flow control (it went negative before the fix).
    assert buffered == 0


# Limits and errors.


async def test_max_size_closes_with_1009() -> None:
    results: asyncio.Queue[Any] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        try:
            results.put_nowait(await ws.recv())
        except ConnectionClosed as exc:
            results.put_nowait(exc)

    async with wsharbor.serve(handler, HOST, 0, max_size=1024) as server:
        client = await RawClient.connect(port_of(server))
        client.send_binary(b"x" * 1025)
        close = await client.expect_close()
        assert close.code == 1009
        assert await client.read_to_eof() == b""
        exc = await wait(results.get())
        assert isinstance(exc, ConnectionClosedError)
        assert exc.sent is not None and exc.sent.code == 1009

        # Fragments adding up to more than max_size: also 1009.
        client = await RawClient.connect(port_of(server))
        client.send_text("a" * 600, fin=False)
        client.send_frame(Opcode.CONT, b"b" * 600)
        assert (await client.expect_close()).code == 1009
        assert isinstance(await wait(results.get()), ConnectionClosedError)
        await client.close_transport()

        # Exactly max_size is fine, compressed or not.
        for compression in (None, "deflate"):
            async with wsharbor.connect(uri_of(server), compression=compression) as ws:
                await ws.send(b"y" * 1024)
                assert await wait(results.get()) == b"y" * 1024


async def test_invalid_utf8_closes_with_1007() -> None:
    async with wsharbor.serve(echo, HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        client.send_text(b"valid then \xff\xfe")
        close = await client.expect_close()
        assert close.code == 1007
        assert await client.read_to_eof() == b""


async def test_close_timeout_aborts_peer_that_never_answers() -> None:
    rec = Recorder()

    async def body(ws: ServerConnection) -> int | None:
        await ws.close(1000, "going")
        return ws.close_code

    async with wsharbor.serve(rec.wrap(body), HOST, 0, close_timeout=0.3) as server:
        client = await RawClient.connect(port_of(server))
        assert (await client.expect_close()).code == 1000
        # Never answer: the server aborts the connection after close_timeout.
        assert await client.read_to_eof(TIMEOUT) == b""
        assert await wait(rec.result) == 1006
        await client.close_transport()


async def test_keepalive_closes_unresponsive_peer_with_1011() -> None:
    rec = Recorder()

    async def body(ws: ServerConnection) -> Any:
        return await ws.recv()

    async with wsharbor.serve(
        rec.wrap(body), HOST, 0, ping_interval=0.2, ping_timeout=0.2
    ) as server:
        client = await RawClient.connect(port_of(server))
        client.auto_pong = False
        close = await client.expect_close(TIMEOUT)
        assert (close.code, close.reason) == (1011, "keepalive ping timeout")
        assert client.pings_received, "the server never pinged"
        with pytest.raises(ConnectionClosedError):
            await wait(rec.result)
        await client.close_transport()


async def test_keepalive_keeps_responsive_peer_open() -> None:
    async with wsharbor.serve(echo, HOST, 0, ping_interval=0.2, ping_timeout=0.2) as server:
        client = await RawClient.connect(port_of(server))
        # Answer several keepalive pings (auto_pong), across several intervals.
        while len(client.pings_received) < 4:
            frame = await client.recv_frame(TIMEOUT)
            assert frame is not None, "connection closed"
            assert frame.opcode is Opcode.PING, frame
        client.send_text("still open")
        assert await client.recv_message() == "still open"
        client.send_close(1000)
        assert (await client.expect_close()).code == 1000
        await client.close_transport()


async def test_keepalive_without_ping_timeout_pings_every_interval_unanswered() -> None:
    async with wsharbor.serve(echo, HOST, 0, ping_interval=0.05, ping_timeout=None) as server:
        client = await RawClient.connect(port_of(server))
        client.auto_pong = False
        # No pong ever, no ping_timeout: the server goes on pinging, never closes.
        while len(client.pings_received) < 3:
            frame = await client.recv_frame(TIMEOUT)
            assert frame is not None and frame.opcode is Opcode.PING, frame
        assert len(set(client.pings_received)) == 3  # a fresh payload each time
        client.send_close(1000)
        assert (await client.expect_close()).code == 1000
        await client.close_transport()


async def test_keepalive_timeout_longer_than_interval_sends_one_ping_then_1011() -> None:
    async with wsharbor.serve(echo, HOST, 0, ping_interval=0.05, ping_timeout=0.3) as server:
        client = await RawClient.connect(port_of(server))
        client.auto_pong = False
        close = await client.expect_close(TIMEOUT)
        assert (close.code, close.reason) == (1011, "keepalive ping timeout")
        # Intervals passed while the ping waited for its pong: no second ping.
        assert len(client.pings_received) == 1
        await client.close_transport()


async def test_handler_raising_logs_traceback_closes_1011_prints_nothing(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    async def handler(ws: ServerConnection) -> None:
        raise KeyError("boom")

    caplog.set_level(logging.INFO)
    async with (
        wsharbor.serve(handler, HOST, 0) as server,
        wsharbor.connect(uri_of(server)) as ws,
    ):
        with pytest.raises(ConnectionClosedError) as excinfo:
            await wait(ws.recv())
        assert excinfo.value.code == 1011
    records = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(records) == 1
    assert records[0].name == "wsharbor.server"
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], KeyError)
    assert "Traceback" in caplog.text and "KeyError: 'boom'" in caplog.text
    assert capsys.readouterr() == ("", "")


async def test_close_while_reading_is_paused_completes_the_handshake() -> None:
    rec = Recorder()
    queued = asyncio.Event()

    async def body(ws: ServerConnection) -> tuple[int | None, int]:
        await queued.wait()  # never reads: the queue is full, reading paused
        await ws.close()
        return ws.close_code, ws.buffered_bytes

    async with wsharbor.serve(
        rec.wrap(body), HOST, 0, max_queue=1, close_timeout=1.0, compression=None
    ) as server:
        client = await RawClient.connect(port_of(server))
        ws = await wait(rec.connection)
        for _ in range(3):
            client.send_binary(b"x" * 100)
        await wait(client.writer.drain())
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while ws.buffered_bytes < 100:  # until the server queued a message (no event for it)
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0)
        queued.set()
        assert (await client.expect_close()).code == 1000
        client.send_close(1000)  # answered at once
        code, _ = await wait(rec.result)
        await client.close_transport()
    assert code == 1000  # a clean closing handshake, not 1006 after close_timeout
