"""The transport of accepted plain TCP connections (wsharbor.asyncio.transport),
over real sockets: what is written arrives whole and in order, however much the
socket takes at once, and the extras are asyncio's."""

from __future__ import annotations

import asyncio
import socket

import pytest

import wsharbor
from wsharbor import ServerConnection

from .conftest import HOST, TIMEOUT, RawClient, port_of, small_buffer_listener, wait

pytestmark = pytest.mark.timeout(60)


def payload(index: int, size: int) -> bytes:
    return bytes((index * 7 + i) % 253 for i in range(size))


async def test_writes_larger_than_the_socket_takes_arrive_whole_and_in_order() -> None:
    """Messages of 64 bytes to 1 MiB sent back to back to a client that reads
    late, through 4 KiB kernel buffers: each large one is written header and
    payload together (sendmsg on Python 3.11), the socket takes part of it, the
    rest is buffered, and what is sent meanwhile queues behind it."""
    sizes = [64, 70_000, 10, 1 << 20, 200, 65_536, 3, 300_000]
    messages = [payload(i, size) for i, size in enumerate(sizes)]
    sent = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        for data in messages:
            await ws.send(data)
        sent.set_result(ws.transport.get_write_buffer_size() if ws.transport else 0)
        await ws.wait_closed()

    async with wsharbor.serve(
        handler, sock=small_buffer_listener(), compression=None, max_size=None
    ) as server:
        client = await RawClient.connect(port_of(server), rcvbuf=4096)
        await asyncio.sleep(0.2)  # the server's buffers fill while nobody reads
        for index, data in enumerate(messages):
            assert await client.recv_message(TIMEOUT) == data, f"message {index} differs"
        await wait(sent)
        client.send_close()
        assert (await client.expect_close()).code == 1000
        await client.close_transport()


async def test_extras_are_asyncios() -> None:
    seen: asyncio.Future[tuple[object, ...]] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        transport = ws.transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        seen.set_result(
            (
                transport.get_extra_info("peername"),
                transport.get_extra_info("sockname"),
                sock.getsockname() if sock is not None else None,
                transport.get_extra_info("no such extra", "default"),
            )
        )
        await ws.wait_closed()

    async with wsharbor.serve(handler, HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        peername, sockname, from_socket, other = await wait(seen)
        assert peername == client.writer.get_extra_info("sockname")
        assert sockname == (HOST, port_of(server))
        assert from_socket == sockname
        assert other == "default"
        client.send_close()
        await client.expect_close()
        await client.close_transport()


def test_writelines_does_not_join_on_the_selector_loop() -> None:
    """On asyncio's selector loop the accepted connection's transport writes
    a list of buffers without joining them first (Python 3.11: ours; 3.12+:
    asyncio's own)."""
    from wsharbor.asyncio.transport import make_transport

    loop = asyncio.new_event_loop()
    left, right = socket.socketpair()
    try:
        transport = make_transport(loop, left, asyncio.Protocol(), None)
        assert transport is not None
        assert type(transport).writelines is not asyncio.WriteTransport.writelines
        transport.writelines([b"ab", memoryview(b"cd"), bytearray(b"ef")])
        right.settimeout(TIMEOUT)
        assert right.recv(16) == b"abcdef"
        transport.close()
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        right.close()
        loop.close()
