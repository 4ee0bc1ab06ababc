"""The transport of accepted plain TCP connections (wsharbor.asyncio.transport),
over real sockets: what is written arrives whole and in order, however much the
socket takes at once, and the extras are asyncio's."""

from __future__ import annotations

import asyncio
import socket

import pytest

import wsharbor
from wsharbor import ServerConnection
from wsharbor.asyncio.transport import SEND_EACH
from wsharbor.protocol.connection import Side, WebSocketProtocol
from wsharbor.protocol.frames import SPEEDUPS

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


class Recorder(asyncio.BufferedProtocol):
    """A buffered protocol that records what happens to it."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.data = bytearray()
        self.buffer = bytearray(4096)
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.events.append("made")

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.data += self.buffer[:nbytes]

    def eof_received(self) -> bool:
        self.events.append("eof")
        return True  # half-closed: we may still write

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")
        self.lost.set_result(exc)


async def test_socket_transport_over_a_socket_pair() -> None:
    """SocketTransport alone, as asyncio's transport behaves: connection_made
    before reading, scatter/gather writes, flow control with water marks, a
    buffer that exists only while something waits, half-close on EOF, and
    connection_lost after close() once the buffer has drained."""
    from wsharbor.asyncio.transport import SocketTransport, make_transport

    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    protocol = Recorder()
    transport = make_transport(loop, ours, protocol, ("peer", 1))
    assert isinstance(transport, SocketTransport)
    assert make_transport(loop, socket.socket(), asyncio.Protocol(), None) is None
    assert transport.get_extra_info("peername") == ("peer", 1)
    await asyncio.sleep(0)
    assert protocol.events == ["made"]
    try:
        # Reading.
        await loop.sock_sendall(theirs, b"hello")
        for _ in range(100):
            if protocol.data:
                break
            await asyncio.sleep(0.01)
        assert bytes(protocol.data) == b"hello"

        # Writing lists of buffers of every kind, in order.
        transport.writelines([b"ab", memoryview(b"cd"), bytearray(b"ef")])
        assert await loop.sock_recv(theirs, 16) == b"abcdef"
        assert transport.get_write_buffer_size() == 0

        # More than the socket takes: buffered, then flow control.
        transport.set_write_buffer_limits(high=1024)
        assert transport.get_write_buffer_limits() == (256, 1024)
        big = bytes(range(256)) * 8192  # 2 MiB
        transport.writelines([b"head", big])
        transport.write(b"tail")
        assert transport.get_write_buffer_size() > 1024
        assert protocol.events == ["made", "pause"]
        expected = b"head" + big + b"tail"
        received = bytearray()
        while len(received) < len(expected):
            received += await loop.sock_recv(theirs, 1 << 16)
        assert received == expected
        await asyncio.sleep(0)
        assert protocol.events == ["made", "pause", "resume"]
        assert transport.get_write_buffer_size() == 0

        # EOF from the peer: half-closed, writing still works.
        theirs.shutdown(socket.SHUT_WR)
        for _ in range(100):
            if "eof" in protocol.events:
                break
            await asyncio.sleep(0.01)
        assert protocol.events[-1] == "eof"
        transport.write(b"after eof")
        assert await loop.sock_recv(theirs, 16) == b"after eof"

        # write_eof, then close: connection_lost once, the socket closed.
        transport.write_eof()
        with pytest.raises(RuntimeError):
            transport.write(b"x")
        assert await loop.sock_recv(theirs, 16) == b""
        transport.close()
        assert transport.is_closing()
        assert await wait(protocol.lost) is None
        assert protocol.events[-1] == "lost"
        assert transport.get_extra_info("sockname") is None
        assert ours.fileno() == -1
    finally:
        transport.abort()
        theirs.close()


async def accepted_tcp_transport() -> tuple[asyncio.Transport, Recorder, socket.socket]:
    """A SocketTransport over an accepted TCP connection on 127.0.0.1, once
    connection_made() ran: the transport, its Recorder, the client's socket."""
    from wsharbor.asyncio.transport import make_transport

    listener = socket.create_server((HOST, 0))
    client = socket.create_connection(listener.getsockname())
    ours, address = listener.accept()
    listener.close()
    protocol = Recorder()
    transport = make_transport(asyncio.get_running_loop(), ours, protocol, address)
    assert transport is not None
    await asyncio.sleep(0)
    return transport, protocol, client


def reset(client: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a reset."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()


async def test_socket_transport_reports_a_reset() -> None:
    """The peer resets the connection: connection_lost gets the OSError."""
    _, protocol, client = await accepted_tcp_transport()
    reset(client)
    exc = await wait(protocol.lost)
    assert isinstance(exc, ConnectionResetError)


@pytest.mark.parametrize("own_listener", [False, True])
async def test_accepted_sockets_have_tcp_nodelay(own_listener: bool) -> None:
    """Every accepted connection sends small frames at once (TCP_NODELAY), on a
    listener the server made and on one passed with ``sock=`` (asyncio's
    transport left Nagle on for a socket whose ``proto`` is 0, as ours are)."""
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        assert ws.transport is not None
        sock = ws.transport.get_extra_info("socket")
        seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        await ws.wait_closed()

    if own_listener:
        listener = socket.socket()
        listener.bind((HOST, 0))
        listener.listen()
        server_cm = wsharbor.serve(handler, sock=listener)
    else:
        server_cm = wsharbor.serve(handler, HOST, 0)
    async with server_cm as server:
        client = await RawClient.connect(port_of(server))
        assert await wait(seen) != 0
        client.send_close()
        await client.expect_close()
        await client.close_transport()


async def test_abort_from_resume_writing_loses_the_connection_once() -> None:
    """A protocol that aborts in resume_writing() (called while the buffer
    drains) gets connection_lost() once."""
    from wsharbor.asyncio.transport import make_transport

    class Aborting(Recorder):
        def resume_writing(self) -> None:
            super().resume_writing()
            transport.abort()

    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    protocol = Aborting()
    transport = make_transport(loop, ours, protocol, None)
    assert transport is not None
    try:
        await asyncio.sleep(0)
        transport.set_write_buffer_limits(high=1024)
        transport.write(bytes(4 << 20))  # more than the socket takes
        assert protocol.events[-1] == "pause"
        while not protocol.lost.done():
            try:
                await asyncio.wait_for(loop.sock_recv(theirs, 1 << 16), 0.5)
            except TimeoutError:
                break
        await wait(protocol.lost)
        for _ in range(3):
            await asyncio.sleep(0)
        assert protocol.events.count("lost") == 1
        assert protocol.events[-2:] == ["resume", "lost"]
    finally:
        transport.abort()
        theirs.close()


@pytest.mark.uvloop_too
async def test_large_messages_back_to_back_are_read_with_the_next_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client sends large frames back to back, with small ones between: the
    rest of each large payload and the next frame's header come in one read
    (received_into() returns the bytes past the payload), on the loop's own
    transport (uvloop) as on wsharbor's, and every message is echoed intact,
    in order."""
    ahead = 0
    original = WebSocketProtocol.received_into

    def counting(self: WebSocketProtocol, nbytes: int) -> bytes:
        nonlocal ahead
        beyond = original(self, nbytes)
        if self.side is Side.SERVER and beyond:
            ahead += 1
        return beyond

    monkeypatch.setattr(WebSocketProtocol, "received_into", counting)
    sizes = [200_000, 65_536, 5, 100_000, 70_000, 1, 300_000, 40_000, 65_536]
    messages = [payload(i, size) for i, size in enumerate(sizes)]

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    async with wsharbor.serve(echo, HOST, 0, compression=None, max_size=None) as server:
        client = await RawClient.connect(port_of(server))
        for data in messages:
            client.send_binary(data)
        text = "the end, in a text frame that is large too " * 2000
        client.send_text(text)
        for index, data in enumerate(messages):
            assert await client.recv_message(TIMEOUT) == data, f"message {index} differs"
        assert await client.recv_message(TIMEOUT) == text
        client.send_close()
        assert (await client.expect_close()).code == 1000
        await client.close_transport()
    # Without the C accelerator nothing is read straight into a payload.
    assert ahead > 0 if SPEEDUPS else ahead == 0


async def read_exactly(sock: socket.socket, size: int) -> bytes:
    loop = asyncio.get_running_loop()
    received = bytearray()
    while len(received) < size:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), TIMEOUT)
        assert chunk, f"EOF after {len(received)} of {size} bytes"
        received += chunk
    return bytes(received)


async def test_write_each_writes_each_frame_in_order() -> None:
    """broadcast()'s writes (write_each): frames to several transports, one of
    them twice and one with a buffer already waiting, arrive whole and in
    order; a transport already lost counts the write and raises nothing; one
    after write_eof() reports the RuntimeError with its index."""
    from wsharbor.asyncio.transport import make_transport, write_each

    loop = asyncio.get_running_loop()
    pairs = [socket.socketpair() for _ in range(5)]
    transports = []
    for ours, theirs in pairs:
        theirs.setblocking(False)
        transport = make_transport(loop, ours, Recorder(), None)
        assert transport is not None
        transports.append(transport)
    await asyncio.sleep(0)
    t0, t1, t2, lost, ended = transports
    try:
        big = bytes(range(256)) * 8192  # 2 MiB: more than a socket pair takes
        t1.write(big)
        assert t1.get_write_buffer_size() > 0
        lost.abort()
        ended.write_eof()
        errors = write_each(
            [t0, t1, t2, lost, t0, ended],
            [b"a0", b"b0", b"c0", b"gone", b"a1", b"late"],
        )
        assert len(errors) == 1
        index, exc = errors[0]
        assert index == 5 and isinstance(exc, RuntimeError)
        assert await read_exactly(pairs[0][1], 4) == b"a0a1"
        assert await read_exactly(pairs[1][1], len(big) + 2) == big + b"b0"
        assert await read_exactly(pairs[2][1], 2) == b"c0"
        assert write_each([], []) == []
    finally:
        for transport in transports:
            transport.abort()
        for _, theirs in pairs:
            theirs.close()


async def test_write_each_buffers_what_the_socket_did_not_take() -> None:
    """A frame larger than the socket takes: the rest is buffered, and a frame
    after it for the same transport in the same call goes behind it."""
    from wsharbor.asyncio.transport import make_transport, write_each

    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setblocking(False)
    transport = make_transport(loop, ours, Recorder(), None)
    assert transport is not None
    await asyncio.sleep(0)
    try:
        first = payload(1, 1 << 20)
        assert write_each([transport, transport], [first, b"second"]) == []
        assert transport.get_write_buffer_size() > 0
        assert await read_exactly(theirs, len(first) + 6) == first + b"second"
        await asyncio.sleep(0)
        assert transport.get_write_buffer_size() == 0
    finally:
        transport.abort()
        theirs.close()


async def test_write_each_reports_a_reset_to_the_protocol() -> None:
    """send() fails in write_each (the peer reset the connection while
    reading was paused, so only the write can find out): the transport closes
    and connection_lost gets the OSError; the frame after it for the same
    transport is counted as a write to a lost connection."""
    from wsharbor.asyncio.transport import SocketTransport, write_each

    transport, protocol, client = await accepted_tcp_transport()
    assert isinstance(transport, SocketTransport)
    transport.pause_reading()
    reset(client)
    await asyncio.sleep(0.05)
    assert write_each([transport, transport], [b"first", b"second"]) == []
    exc = await wait(protocol.lost)
    assert isinstance(exc, ConnectionResetError | BrokenPipeError)
    assert protocol.events.count("lost") == 1


@pytest.mark.skipif(not SEND_EACH, reason="the C accelerator isn't built or is disabled")
def test_send_each_checks_its_arguments() -> None:
    """The C call itself: clear errors for bad arguments; a negative
    descriptor isn't tried; a failed send() reports -errno."""
    import errno
    import os

    from wsharbor.asyncio._sendeach import send_each

    with pytest.raises(TypeError):
        send_each((1,), [b"x"])  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        send_each([1, 2], [b"x"])
    with pytest.raises(TypeError):
        send_each([1], [bytearray(b"x")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        send_each([1])  # type: ignore[call-arg]
    ours, theirs = socket.socketpair()
    pipe_in, pipe_out = os.pipe()
    try:
        assert send_each([-1, ours.fileno(), pipe_in], [b"a", b"bc", b"d"]) == [
            (0, 0),
            (2, -errno.ENOTSOCK),
        ]
        assert theirs.recv(16) == b"bc"
    finally:
        ours.close()
        theirs.close()
        os.close(pipe_in)
        os.close(pipe_out)
