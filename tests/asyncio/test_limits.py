"""Limits that hold whatever the extension and whatever fills the buffers (issue 13).

Each test is an attack from the client side on real sockets, with the server's
default settings unless the test says otherwise: the bound is measured on the
server (bytes buffered), and the close code is checked on the wire.
"""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

import wsharbor
from wsharbor import ServerConnection, defaults
from wsharbor.protocol.connection import State
from wsharbor.protocol.frames import Opcode

from .conftest import HOST, TIMEOUT, RawClient, port_of, small_buffer_listener, wait

pytestmark = pytest.mark.timeout(60)

#: A write that doesn't complete within this is considered blocked. Only used to
#: decide *when* to measure: the bounds checked hold at all times.
STALL = 0.5


async def hold(ws: ServerConnection) -> None:
    """A handler that never reads."""
    await ws.wait_closed()


@pytest.mark.parametrize("rsv1", [True, False], ids=["compressed", "uncompressed"])
async def test_huge_declared_length_with_deflate_gets_1009_at_once(rsv1: bool) -> None:
    """Item 1: with permessage-deflate negotiated (the default), a header announcing
    2**62 bytes was never checked: one connection took 512 MiB in 0.6 s."""
    connection: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        connection.set_result(ws)
        await ws.wait_closed()

    async with wsharbor.serve(handler, HOST, 0) as server:
        client = await wsharbor.connect(f"ws://{HOST}:{port_of(server)}/")
        assert client.protocol is not None and client.protocol.extensions  # deflate
        ws = await wait(connection)
        assert client.transport is not None
        first = 0x82 | (0x40 if rsv1 else 0)
        client.transport.write(struct.pack("!BBQ", first, 0x80 | 127, 2**62) + b"\x00" * 4)
        # Then keep sending: nothing of it may be kept.
        junk = b"\xaa" * 2**16
        for _ in range(64):
            if client.transport.is_closing():
                break
            client.transport.write(junk)
            await asyncio.sleep(0)
            assert ws.buffered_bytes <= defaults.READ_LIMIT
        with pytest.raises(wsharbor.ConnectionClosedError):
            await wait(client.recv())
        assert client.close_code == 1009
        assert ws.buffered_bytes == 0
        await wait(ws.wait_closed())


async def test_ping_flood_from_a_client_that_never_reads_is_bounded() -> None:
    """Item 2: 125-byte pings from a client that never reads made the server queue
    pongs without bound (+790 MiB in 20 s). Reading pauses while the write buffer
    is over write_limit, so the client is blocked instead."""
    write_limit, read_limit = 16384, 4096
    connection: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    largest = 0

    async def handler(ws: ServerConnection) -> None:
        connection.set_result(ws)
        await ws.wait_closed()

    async with wsharbor.serve(
        handler,
        sock=small_buffer_listener(),
        write_limit=write_limit,
        read_limit=read_limit,
    ) as server:
        client = await RawClient.connect(port_of(server), rcvbuf=4096, sndbuf=4096, limit=4096)
        ws = await wait(connection)
        assert ws.transport is not None
        ping = b"p" * 125
        sent = 0
        blocked = False
        while sent < 100_000:
            client.send_frame(Opcode.PING, ping)
            sent += 1
            largest = max(largest, ws.transport.get_write_buffer_size())
            try:
                await asyncio.wait_for(client.writer.drain(), STALL)
            except TimeoutError:
                blocked = True
                break
        largest = max(largest, ws.transport.get_write_buffer_size())
        print(f"\nping flood: client blocked after {sent} pings; server write buffer max {largest}")
        assert blocked, "the server answered every ping without pushing back"
        # At most one read's worth of pongs lands above the high-water mark.
        assert largest <= write_limit + read_limit + 1024
        assert ws.buffered_bytes <= read_limit + 1024

        # The client reads again: every pong arrives, in order, nothing lost,
        # and the connection still works.
        pongs = 0
        while pongs < sent:
            frame = await client.recv_frame()
            assert frame is not None and frame.opcode is Opcode.PONG and frame.data == ping
            pongs += 1
        client.send_close()
        assert (await client.expect_close()).code == 1000
        await client.close_transport()


async def test_echo_to_a_flooding_client_that_never_reads_pauses_reading() -> None:
    """Item 2, the echo form: reading pauses on the write buffer, not only on the
    queue, so a handler that answers each message can't be made to buffer more
    than write_limit plus one read of answers."""
    write_limit, read_limit, size = 16384, 4096, 512
    sizes: list[int] = []
    connection: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def echo(ws: ServerConnection) -> None:
        connection.set_result(ws)
        async for message in ws:
            await ws.send(message)
            assert ws.transport is not None
            sizes.append(ws.transport.get_write_buffer_size())

    async with wsharbor.serve(
        echo,
        sock=small_buffer_listener(),
        write_limit=write_limit,
        read_limit=read_limit,
        compression=None,
    ) as server:
        client = await RawClient.connect(port_of(server), rcvbuf=4096, sndbuf=4096, limit=4096)
        await wait(connection)
        count = 0
        while count < 100_000:
            client.send_binary(count.to_bytes(4, "big") * (size // 4))
            count += 1
            try:
                await asyncio.wait_for(client.writer.drain(), STALL)
            except TimeoutError:
                break
        else:
            raise AssertionError("the echo server never pushed back")
        assert max(sizes) <= write_limit + read_limit + size
        for index in range(count):
            assert await client.recv_message(TIMEOUT) == index.to_bytes(4, "big") * (size // 4)
        client.send_close()
        assert (await client.expect_close()).code == 1000
        await client.close_transport()


async def test_endless_empty_fragments_get_1009() -> None:
    """Item 3: 20 M empty continuation frames were accepted (+153 MiB, the
    connection still open, a core at 100%)."""
    connection: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        connection.set_result(ws)
        await ws.wait_closed()

    async with wsharbor.serve(handler, HOST, 0, max_fragments=1000) as server:
        client = await RawClient.connect(port_of(server))
        ws = await wait(connection)
        client.send_text("start", fin=False)
        batch = b"".join(
            [
                # An empty masked CONT frame: 0x00 0x80 and a zero mask key.
                b"\x00\x80\x00\x00\x00\x00"
            ]
            * 500
        )
        for _ in range(2000):  # up to 1 M frames; the server closes after 1,000
            client.writer.write(batch)
            try:
                await asyncio.wait_for(client.writer.drain(), TIMEOUT)
            except ConnectionError:
                break
            if ws.state is not State.OPEN:
                break
            assert ws.buffered_bytes <= 5 + defaults.READ_LIMIT
        close = await client.expect_close()
        assert close.code == 1009
        assert close.reason == "message of more than 1000 fragments"
        await client.close_transport()
        await wait(ws.wait_closed())


@pytest.mark.parametrize("compression", [None, "deflate"])
async def test_1009_is_read_whole_while_the_client_still_sends(compression: str | None) -> None:
    """A connection failed mid-message closes lingering: the client reads the close
    frame and then the end of the stream, never a reset (the 431 of item 8, on
    the WebSocket side), while what it still sends is dropped."""
    async with wsharbor.serve(hold, HOST, 0, max_size=2**16, compression=compression) as server:
        for _ in range(10):
            client = await RawClient.connect(port_of(server))
            # A frame over max_size: refused from its header while its payload
            # is still on its way, and the client goes on sending after it.
            client.send_binary(b"x" * (2**16 + 1))
            for _ in range(10):
                client.send_binary(b"y" * 4096)
            close = await client.expect_close()
            assert close.code == 1009
            assert await client.read_to_eof() == b""  # a reset raises
            await client.close_transport()


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")  # pragma: no cover


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux only")
async def test_headers_announcing_max_size_cost_what_is_sent_not_what_is_announced() -> None:
    """A large frame's payload is received into a buffer of its final size, made
    from its header: that buffer must not be resident memory before the payload
    arrives, or a header of 10 bytes would make the server hold max_size. 200
    connections each announce a frame of max_size (1 MiB) and send 1 KiB of it."""
    count, sent = 200, 1024
    connections: list[ServerConnection] = []
    all_in = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        connections.append(ws)
        if len(connections) == count:
            all_in.set_result(None)
        await ws.wait_closed()

    async with wsharbor.serve(handler, HOST, 0, compression=None) as server:
        clients = [await RawClient.connect(port_of(server)) for _ in range(count)]
        await wait(all_in)
        header = struct.pack("!BBQ", 0x82, 0x80 | 127, defaults.MAX_SIZE) + b"mask"
        before = _rss_kib()
        for client in clients:
            client.writer.write(header + b"\x00" * sent)
        for client in clients:
            await wait(client.writer.drain())
        async with asyncio.timeout(TIMEOUT):
            while sum(ws.buffered_bytes for ws in connections) < count * sent:
                await asyncio.sleep(0.01)  # polling the server's count, bounded
        grown = _rss_kib() - before
        print(f"\n{count} headers of {defaults.MAX_SIZE} bytes: RSS +{grown} KiB")
        assert grown < count * defaults.MAX_SIZE // 1024 // 8, grown
        for client in clients:
            client.writer.transport.abort()
