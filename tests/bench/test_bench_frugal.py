"""Frugal compression on real connections (issue 4, item 4).

(a) no zlib compressor before the first compressed send, no decompressor before
the first compressed frame arrives, checked on the connection's extension;
(b) a message under the threshold goes out with RSV1 clear, checked on the raw
frame; (c) without context takeover, zlib state is freed after each message.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

import wsharbor
from wsharbor.protocol.deflate import (
    CLIENT_DEFAULTS,
    SERVER_CONTEXT_TAKEOVER,
    SERVER_DEFAULTS,
    DeflateSettings,
    PerMessageDeflate,
)
from wsharbor.protocol.frames import Frame, Opcode, serialize_frame

TIMEOUT = 5.0
HOST = "127.0.0.1"
LONG = '{"type":"chat","text":"' + "hello world " * 20 + '"}'


def codec(connection: Any) -> PerMessageDeflate:
    assert connection.protocol is not None
    (extension,) = connection.protocol.extensions
    assert isinstance(extension, PerMessageDeflate)
    return extension


class Pair:
    def __init__(self) -> None:
        self.server_side: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.client: Any = None

    async def handler(self, websocket: Any) -> None:
        self.server_side.set_result(websocket)
        async for message in websocket:
            await websocket.send(message)

    async def echo(self, message: str | bytes) -> None:
        await asyncio.wait_for(self.client.send(message), TIMEOUT)
        assert await asyncio.wait_for(self.client.recv(), TIMEOUT) == message


async def open_pair(
    server_compression: Any = "deflate", client_compression: Any = "deflate"
) -> AsyncIterator[tuple[Pair, PerMessageDeflate, PerMessageDeflate]]:
    pair = Pair()
    async with wsharbor.serve(pair.handler, HOST, 0, compression=server_compression) as server:
        port = server.sockets[0].getsockname()[1]
        async with wsharbor.connect(
            f"ws://{HOST}:{port}/", compression=client_compression
        ) as client:
            pair.client = client
            server_side = await asyncio.wait_for(pair.server_side, TIMEOUT)
            yield pair, codec(client), codec(server_side)


async def test_defaults_threshold_is_small() -> None:
    # Chosen with the benchmark (docs/memory.md): above "hello", below any JSON
    # document; without context takeover (the server's default) a message
    # compressed on its own shrinks from about 64 bytes.
    assert SERVER_DEFAULTS.threshold == 64
    assert 5 < SERVER_CONTEXT_TAKEOVER.threshold <= 32
    assert 5 < CLIENT_DEFAULTS.threshold <= 32


async def test_default_settings_hold_nothing_after_compressed_messages() -> None:
    # The server's defaults: no context takeover either way, so after compressed
    # messages both ways no side holds a compressor or a decompressor.
    async for pair, client, server in open_pair():
        assert client.local_no_context_takeover and server.local_no_context_takeover
        for message in (LONG, LONG.encode(), LONG):
            await pair.echo(message)
            assert client._encoder is None and client._decoder is None
            assert server._encoder is None and server._decoder is None


async def test_lazy_allocation_on_real_connections() -> None:
    async for pair, client, server in open_pair(server_compression=SERVER_CONTEXT_TAKEOVER):
        # After the handshake: nothing allocated on either side.
        assert client._encoder is None and client._decoder is None
        assert server._encoder is None and server._decoder is None
        # "hello" as text and binary is under the threshold: still nothing.
        await pair.echo("hello")
        await pair.echo(b"hello")
        assert client._encoder is None and client._decoder is None
        assert server._encoder is None and server._decoder is None
        # A long message: the client compresses it, the server decompresses it,
        # then compresses its echo, which the client decompresses.
        await pair.client.send(LONG)
        assert client._encoder is not None
        assert await asyncio.wait_for(pair.client.recv(), TIMEOUT) == LONG
        assert server._decoder is not None and server._encoder is not None
        assert client._decoder is not None


async def test_lazy_decompressor_only_when_a_compressed_frame_arrives() -> None:
    # The server never compresses (huge threshold): the client never needs a decompressor.
    never = DeflateSettings(window_bits=12, memory_level=4, peer_window_bits=12, threshold=10**9)
    async for pair, client, server in open_pair(server_compression=never):
        await pair.echo(LONG)
        assert client._encoder is not None and server._decoder is not None
        assert server._encoder is None and client._decoder is None


async def test_no_context_takeover_frees_state_after_each_message() -> None:
    settings = DeflateSettings(
        window_bits=12,
        memory_level=4,
        peer_window_bits=12,
        context_takeover=False,
        peer_context_takeover=False,
    )
    async for pair, client, server in open_pair(settings, settings):
        assert client.local_no_context_takeover and client.remote_no_context_takeover
        assert server.local_no_context_takeover and server.remote_no_context_takeover
        for _ in range(3):
            await pair.echo(LONG)
            # The message went through all four zlib objects, which are freed.
            assert client._encoder is None and client._decoder is None
            assert server._encoder is None and server._decoder is None
        # And a fragmented message: freed once its last frame is through.
        await pair.client.send([LONG[:100], LONG[100:]])
        assert await asyncio.wait_for(pair.client.recv(), TIMEOUT) == LONG
        assert client._encoder is None and client._decoder is None
        assert server._encoder is None and server._decoder is None


# (b) The threshold, on the wire: a raw client reads the server's frames.


async def raw_connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"permessage-deflate" in head.lower(), head
    return reader, writer


async def read_frame_header(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Return the first byte (FIN, RSV1-3, opcode) and the payload of a server frame."""
    first, second = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    assert not second & 0x80, "a server frame is never masked"
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    return first, await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


@pytest.mark.parametrize("threshold", [16, 64])
async def test_message_below_threshold_goes_out_with_rsv1_clear(threshold: int) -> None:
    settings = DeflateSettings(window_bits=12, memory_level=4, threshold=threshold)

    async def handler(websocket: Any) -> None:
        async for message in websocket:
            await websocket.send(message)

    async with wsharbor.serve(handler, HOST, 0, compression=settings) as server:
        reader, writer = await raw_connect(server.sockets[0].getsockname()[1])
        try:
            for size in (1, threshold - 1, threshold, threshold + 100):
                payload = b"x" * size
                # Our raw frames go uncompressed (RSV1 clear), which RFC 7692 allows.
                writer.write(serialize_frame(Frame(Opcode.TEXT, payload), mask=True))
                first, data = await read_frame_header(reader)
                rsv1 = bool(first & 0x40)
                assert first & 0x8F == 0x81  # FIN, TEXT
                assert rsv1 is (size >= threshold), (size, hex(first))
                if not rsv1:
                    assert data == payload
                else:
                    assert len(data) < size
        finally:
            writer.close()
