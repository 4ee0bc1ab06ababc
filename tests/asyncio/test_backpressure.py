"""Backpressure bounds, proven on real sockets (issue 3, item 4).

Kernel socket buffers are shrunk (server listener and raw clients) so that
backpressure shows up after kilobytes, not megabytes. Each test measures the
bound it claims at the moment the peer stalls, and while data flows, then
releases the stall and checks that no data was lost or reordered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import wsharbor
from wsharbor import ServerConnection
from wsharbor.protocol.connection import WebSocketProtocol

from .conftest import (
    HOST,
    TIMEOUT,
    RawClient,
    port_of,
    small_buffer_listener,
    wait,
)

pytestmark = pytest.mark.timeout(60)

#: A write that doesn't complete within this is considered blocked. Only used to
#: decide *when* to measure: every bound checked below holds at all times.
STALL = 0.5

#: Largest frame header a server writes (no mask): 2 + 8 bytes.
HEADER = 10


def message(index: int, size: int) -> bytes:
    """A message whose content depends on its index, to detect loss and reordering."""
    head = index.to_bytes(4, "big")
    return head + bytes((index + i) % 251 for i in range(size - 4))


def record_write_buffer(transport: Any, on_size: Callable[[int], None]) -> None:
    """Call ``on_size`` with the transport's write buffer size after every write.

    The transport's class is swapped for a subclass that records (the
    transport has ``__slots__``: its methods can't be replaced per instance).
    """
    base = type(transport)

    class Recording(base):  # type: ignore[misc, valid-type]
        __slots__ = ()

        def write(self, data: Any) -> None:
            super().write(data)
            on_size(self.get_write_buffer_size())

        def writelines(self, data: Any) -> None:
            super().writelines(data)
            on_size(self.get_write_buffer_size())

    transport.__class__ = Recording


async def test_flooding_client_is_bounded_by_max_queue_max_size_read_limit() -> None:
    max_size, max_queue, read_limit = 4096, 4, 8192
    bound = max_queue * max_size + read_limit
    size, count = 4000, 400  # 1.6 MB: 65 times the bound
    messages = [message(i, size) for i in range(count)]

    connection: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    received: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        connection.set_result(ws)
        await release.wait()  # never reads until released
        received.set_result([await ws.recv() for _ in range(count)])

    async with wsharbor.serve(
        handler,
        sock=small_buffer_listener(),
        max_size=max_size,
        max_queue=max_queue,
        read_limit=read_limit,
        compression=None,
    ) as server:
        client = await RawClient.connect(port_of(server), sndbuf=4096)
        ws = await wait(connection)
        max_buffered = 0
        stalled_at: int | None = None
        for index, data in enumerate(messages):
            client.send_binary(data)
            try:
                await asyncio.wait_for(client.writer.drain(), STALL)
            except TimeoutError:
                stalled_at = index
                break
            finally:
                max_buffered = max(max_buffered, ws.buffered_bytes)
        assert stalled_at is not None, "the client was never slowed down"
        # The client's own buffer holds a backlog (its drain() waits until it
        # falls to its low-water mark of 16 KiB): the server stopped reading.
        client_backlog = client.transport.get_write_buffer_size()
        assert client_backlog > 2**14
        at_stall = ws.buffered_bytes
        max_buffered = max(max_buffered, at_stall)
        print(
            f"\nflood: stalled after {stalled_at + 1} messages "
            f"({(stalled_at + 1) * size} bytes sent, client backlog {client_backlog}); "
            f"server buffered {at_stall} at the stall, max {max_buffered}, bound {bound}"
        )
        assert at_stall <= bound
        assert max_buffered <= bound
        assert at_stall > 0  # it did take what the bound allows, not nothing

        # Release the handler: everything arrives, intact and in order.
        release.set()
        for data in messages[stalled_at + 1 :]:
            client.send_binary(data)
            max_buffered = max(max_buffered, ws.buffered_bytes)
            await wait(client.writer.drain())
        got = await wait(received, 4 * TIMEOUT)
        assert len(got) == count
        assert got == messages
        assert max_buffered <= bound
        assert ws.buffered_bytes == 0
        client.send_close()
        assert (await client.expect_close()).code == 1000
        await client.close_transport()


async def test_send_waits_for_a_client_that_never_reads() -> None:
    write_limit, size, count = 16384, 4096, 512  # 2 MiB to a client that doesn't read
    bound = write_limit + size + HEADER
    messages = [message(i, size) for i in range(count)]
    sizes: list[int] = []
    progress: asyncio.Queue[int] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        record_write_buffer(ws.transport, sizes.append)
        for index, data in enumerate(messages):
            await ws.send(data)
            progress.put_nowait(index)
        await ws.wait_closed()

    async with wsharbor.serve(
        handler,
        sock=small_buffer_listener(),
        write_limit=write_limit,
        compression=None,
    ) as server:
        client = await RawClient.connect(port_of(server), rcvbuf=4096, limit=4096)
        # Wait until a send() doesn't complete: the handler is blocked in send().
        completed = 0
        while True:
            try:
                await asyncio.wait_for(progress.get(), STALL)
            except TimeoutError:
                break
            completed += 1
            assert completed < count, "every send completed: send() never waited"
        assert completed > 0  # sends complete at first, while buffers have room
        (ws,) = server.connections
        assert ws.transport is not None
        at_stall = ws.transport.get_write_buffer_size()
        print(
            f"\nslow reader: send() blocked after {completed} of {count} messages; "
            f"server write buffer {at_stall} at the stall, max {max(sizes)}, bound {bound}"
        )
        # send() waits until the buffer drains to the low-water mark, a quarter
        # of write_limit: it is above it, and can't drain while nobody reads.
        assert at_stall > write_limit // 4
        assert max(sizes) > write_limit  # it did go over write_limit, then waited
        assert max(sizes) <= bound

        # The client starts reading: every send completes, all data arrives.
        for index in range(count):
            data = await client.recv_message(TIMEOUT)
            assert data == messages[index], f"message {index} differs"
        assert max(sizes) <= bound
        client.send_close()
        assert (await client.expect_close()).code == 1000
        await client.close_transport()


async def test_echo_to_a_client_that_never_reads_stays_bounded() -> None:
    """An echo handler answering a burst of queued messages (the coalesced-write
    path of recv()): outgoing memory is bounded too, by the transport's write
    buffer plus the batch, and the flood's incoming side by max_queue/read_limit."""
    write_limit, read_limit, max_queue, size, count = 16384, 16384, 8, 8192, 256
    # The batch is flushed once it reaches 4 KiB (at most 4 KiB + one
    # message, well under write_limit + one message), on top of a transport
    # buffer not over write_limit.
    out_bound = 2 * (write_limit + size + HEADER)
    in_bound = max_queue * size + read_limit
    messages = [message(i, size) for i in range(count)]
    sizes: list[int] = []
    connection: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        connection.set_result(ws)
        record_write_buffer(ws.transport, sizes.append)
        async for data in ws:
            await ws.send(data)

    async with wsharbor.serve(
        handler,
        sock=small_buffer_listener(),
        write_limit=write_limit,
        read_limit=read_limit,
        max_queue=max_queue,
        max_size=size,
        compression=None,
    ) as server:
        client = await RawClient.connect(port_of(server), rcvbuf=4096, sndbuf=4096, limit=4096)
        ws = await wait(connection)
        stalled_at = None
        for index, data in enumerate(messages):
            client.send_binary(data)
            try:
                await asyncio.wait_for(client.writer.drain(), STALL)
            except TimeoutError:
                stalled_at = index
                break
        assert stalled_at is not None, "the echo server never pushed back"
        assert ws.transport is not None
        outgoing = ws.transport.get_write_buffer_size()
        print(
            f"\necho to a non-reader: client stalled after {stalled_at + 1} messages; "
            f"server write buffer {outgoing} (max {max(sizes)}, bound {out_bound}), "
            f"buffered input {ws.buffered_bytes}"
        )
        assert max(sizes) <= out_bound
        assert ws.buffered_bytes <= in_bound

        # Read everything back while sending the rest: nothing lost.
        async def send_rest() -> None:
            for data in messages[stalled_at + 1 :]:
                client.send_binary(data)
                await client.writer.drain()

        sender = asyncio.ensure_future(send_rest())
        for index in range(count):
            assert await client.recv_message(TIMEOUT) == messages[index]
        await wait(sender)
        assert max(sizes) <= out_bound
        client.send_close()
        assert (await client.expect_close()).code == 1000
        await client.close_transport()


async def test_broadcast_skips_slow_reader_and_counts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write_limit, size, count = 16384, 8192, 120
    bound = write_limit + size + HEADER
    messages = [message(i, size) for i in range(count)]

    # Messages encoded by broadcast() for the connections without extensions
    # (the plain and the slow one): once per message for both.
    encoded = 0
    original_preencode = WebSocketProtocol.preencode

    def counting_preencode(self: WebSocketProtocol, opcode: Any, data: bytes) -> bytes:
        nonlocal encoded
        if not self.extensions:
            encoded += 1
        return original_preencode(self, opcode, data)

    monkeypatch.setattr(WebSocketProtocol, "preencode", counting_preencode)

    by_path: dict[str, ServerConnection] = {}
    all_in = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        by_path[ws.path] = ws
        if len(by_path) == 3:
            all_in.set()
        await ws.wait_closed()  # never reads

    async with wsharbor.serve(
        handler, sock=small_buffer_listener(), write_limit=write_limit
    ) as server:
        uri = f"ws://{HOST}:{port_of(server)}"
        deflate = await wsharbor.connect(uri + "/deflate", compression="deflate")
        plain = await wsharbor.connect(uri + "/plain", compression=None)
        slow = await RawClient.connect(port_of(server), "/slow", rcvbuf=4096, limit=4096)
        await wait(all_in.wait())
        assert deflate.protocol is not None and deflate.protocol.extensions
        assert plain.protocol is not None and not plain.protocol.extensions
        slow_transport = by_path["/slow"].transport
        assert slow_transport is not None

        got: dict[str, list[Any]] = {"deflate": [], "plain": []}
        arrived = asyncio.Condition()

        async def collect(name: str, ws: wsharbor.ClientConnection) -> None:
            async for data in ws:
                got[name].append(data)
                async with arrived:
                    arrived.notify_all()

        readers = [
            asyncio.ensure_future(collect("deflate", deflate)),
            asyncio.ensure_future(collect("plain", plain)),
        ]
        skipped_per_broadcast = []
        slow_sizes = []
        for index, data in enumerate(messages):
            expected_skip = int(slow_transport.get_write_buffer_size() > write_limit)
            if index % 2:
                # fanout() is broadcast() returning the skipped connections.
                skipped_list = wsharbor.fanout(server.connections, data)
                assert skipped_list == [by_path["/slow"]] * expected_skip, f"fanout {index}"
                skipped = len(skipped_list)
            else:
                # broadcast() reports the slow reader only when asked to.
                skipped = 0
                try:
                    wsharbor.broadcast(server.connections, data, raise_exceptions=True)
                except* wsharbor.WriteBufferFull as group:
                    assert [exc.connection for exc in group.exceptions] == [by_path["/slow"]]
                    skipped = len(group.exceptions)
            assert skipped == expected_skip, f"broadcast {index}"
            skipped_per_broadcast.append(skipped)
            slow_sizes.append(slow_transport.get_write_buffer_size())
            # Wait until both fast readers have this message (they keep up).
            async with arrived:
                await wait(
                    arrived.wait_for(
                        lambda n=index + 1: len(got["deflate"]) >= n and len(got["plain"]) >= n
                    )
                )
        total_skipped = sum(skipped_per_broadcast)
        print(
            f"\nbroadcast: {count} messages of {size} bytes; slow reader skipped "
            f"{total_skipped} times; its server write buffer max {max(slow_sizes)}, "
            f"bound {bound}; frames encoded by broadcast {encoded}"
        )
        assert total_skipped > count // 2, "the slow reader was not skipped"
        assert skipped_per_broadcast[-1] == 1
        assert max(slow_sizes) <= bound
        # Fast readers got every message, in order, compressed or not.
        assert got["deflate"] == messages
        assert got["plain"] == messages
        # The uncompressed path encodes once per broadcast, whatever the audience.
        assert encoded == count

        # A text broadcast reaches both fast readers; then the slow one catches up:
        # what it got is a gap-free prefix of what was not skipped, intact.
        wsharbor.broadcast([by_path["/deflate"], by_path["/plain"]], "end", raise_exceptions=True)
        async with arrived:
            await wait(
                arrived.wait_for(lambda: got["deflate"][-1:] == got["plain"][-1:] == ["end"])
            )
        delivered = [i for i, s in enumerate(skipped_per_broadcast) if not s]
        for index in delivered:
            assert await slow.recv_message(TIMEOUT) == messages[index]

        await deflate.close()
        await plain.close()
        await wait(asyncio.gather(*readers))
        slow.send_close()
        assert (await slow.expect_close()).code == 1000
        await slow.close_transport()


async def test_broadcast_rejects_non_messages_and_skips_closed() -> None:
    closed = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()
        closed.set()

    async with wsharbor.serve(handler, HOST, 0) as server:
        ws = await wsharbor.connect(f"ws://{HOST}:{port_of(server)}/")
        (server_ws,) = server.connections
        with pytest.raises(TypeError):
            wsharbor.broadcast([server_ws], {"a": 1})  # type: ignore[arg-type]
        await ws.close()
        await wait(closed.wait())
        # A closed connection is skipped silently, as in websockets.
        assert wsharbor.broadcast([server_ws], "late", raise_exceptions=True) is None
        assert wsharbor.fanout([server_ws], b"late") == [server_ws]
        with pytest.raises(TypeError):
            wsharbor.fanout([server_ws], 1)  # type: ignore[arg-type]


async def test_answers_to_a_burst_go_out_in_writes_of_about_4_kib() -> None:
    """A pipelined burst is answered in writes of about 4 KiB: not one write per
    message (a system call each), and not one write at the end of the burst
    (the peer would wait for the whole burst before sending more)."""
    count, size = 400, 64
    writes: list[int] = []

    class Writes(wsharbor.ConnectionObserver):
        def data_sent(self, connection: Any, nbytes: int) -> None:
            writes.append(nbytes)

    async def handler(ws: ServerConnection) -> None:
        async for data in ws:
            await ws.send(data)

    async with wsharbor.serve(
        handler, HOST, 0, observer=Writes(), compression=None, max_queue=None
    ) as server:
        client = await RawClient.connect(port_of(server))
        writes.clear()  # the 101 response
        messages = [message(i, size) for i in range(count)]
        for data in messages:
            client.send_binary(data, fin=True)
        for data in messages:
            assert await client.recv_message(TIMEOUT) == data
        frame = size + 2
        print(f"\n{count} answers of {frame} bytes in {len(writes)} writes: {writes}")
        assert sum(writes) == count * frame
        assert max(writes) < 4096 + frame
        # The messages arrive in reads of up to read_limit: most answers share
        # a write with others.
        assert len(writes) < count // 10
        client.send_close()
        assert (await client.expect_close()).code == 1000
        await client.close_transport()
