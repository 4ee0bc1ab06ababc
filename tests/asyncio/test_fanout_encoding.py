"""broadcast()/fanout() encode a message once per kind of connection (issue 12, item 5).

Connections without extensions share one serialized frame; connections that
compress without context takeover with the same settings share one compressed
frame; connections that keep a compression context compress for themselves.
Checked on the bytes: what fanout writes equals what sending to each connection
one by one writes, for mixed connections, on real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import os
import zlib
from typing import Any

import pytest
import websockets.asyncio.client

import wsharbor
from wsharbor.exceptions import InvalidState
from wsharbor.protocol.connection import Side, WebSocketProtocol
from wsharbor.protocol.deflate import (
    SERVER_CONTEXT_TAKEOVER,
    SERVER_DEFAULTS,
    PerMessageDeflate,
)
from wsharbor.protocol.frames import Frame, Opcode, serialize_frame

TIMEOUT = 5.0
HOST = "127.0.0.1"
MESSAGE = '{"type":"chat.message","room":"general","text":"' + "deploy the fix " * 8 + '"}'


def codec(nct: bool, bits: int = 15, level: int = 8, threshold: int = 64) -> PerMessageDeflate:
    return PerMessageDeflate(nct, nct, 12, bits, memory_level=level, threshold=threshold)


def server(*extensions: PerMessageDeflate) -> WebSocketProtocol:
    return WebSocketProtocol(Side.SERVER, extensions=extensions)


# The protocol layer: keys and pre-encoded frames.


def test_preencode_keys() -> None:
    assert server().preencode_key() == ()
    assert WebSocketProtocol(Side.CLIENT).preencode_key() is None
    assert server(codec(nct=False)).preencode_key() is None
    assert server(codec(nct=True)).preencode_key() == server(codec(nct=True)).preencode_key()
    keys = {
        server(codec(nct=True)).preencode_key(),
        server(codec(nct=True, bits=12)).preencode_key(),
        server(codec(nct=True, level=4)).preencode_key(),
        server(codec(nct=True, threshold=0)).preencode_key(),
    }
    assert len(keys) == 4 and None not in keys
    # In the middle of a fragmented message, the codec isn't shareable.
    fragmenting = server(codec(nct=True))
    fragmenting.send_text(b"x" * 100, fin=False)
    assert fragmenting.preencode_key() is None


@pytest.mark.parametrize("message", [b"", b"short", MESSAGE.encode(), os.urandom(3000)])
def test_preencoded_frame_is_what_each_connection_sends(message: bytes) -> None:
    # Mixed connections: the frame encoded once for a key equals what each
    # connection with that key writes when it sends the message itself.
    kinds = [
        lambda: server(),
        lambda: server(codec(nct=True)),
        lambda: server(codec(nct=True, bits=12, level=4)),
    ]
    for make in kinds:
        shared = make().preencode(Opcode.TEXT, message)
        for _ in range(3):
            alone = make()
            alone.send_text(message)
            assert alone.data_to_send() == [shared]
            target = make()
            target.send_preencoded(shared)
            assert target.data_to_send() == [shared]


def test_preencode_refused_where_a_context_is_kept() -> None:
    with pytest.raises(InvalidState, match="encodes each message itself"):
        server(codec(nct=False)).preencode(Opcode.TEXT, b"hello")
    with pytest.raises(InvalidState, match="pre-encoded frames need"):
        server(codec(nct=False)).send_preencoded(b"\x81\x00")
    with pytest.raises(InvalidState, match="pre-encoded frames need"):
        WebSocketProtocol(Side.CLIENT).send_preencoded(b"\x81\x00")
    with pytest.raises(ValueError, match="can't pre-encode a PING frame"):
        server().preencode(Opcode.PING, b"")


# Real connections: raw clients read the bytes fanout writes.


async def raw_client(port: int, offer: str | None) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), TIMEOUT)
    key = base64.b64encode(os.urandom(16)).decode()
    extensions = f"Sec-WebSocket-Extensions: {offer}\r\n" if offer else ""
    writer.write(
        (
            f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extensions}\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101 "), head
    return reader, writer


async def read_raw_frame(reader: asyncio.StreamReader) -> bytes:
    """One whole server frame, header included, as it came on the wire."""
    head = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    length = head[1] & 0x7F
    extra = b""
    if length == 126:
        extra = await reader.readexactly(2)
        length = int.from_bytes(extra, "big")
    elif length == 127:
        extra = await reader.readexactly(8)
        length = int.from_bytes(extra, "big")
    return head + extra + await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


async def test_fanout_to_mixed_connections_same_bytes_as_one_by_one() -> None:
    opened: list[Any] = []
    both = asyncio.Event()

    async def handler(websocket: Any) -> None:
        opened.append(websocket)
        if len(opened) == 8:
            both.set()
        await websocket.wait_closed()

    async with (
        wsharbor.serve(handler, HOST, 0, compression=SERVER_DEFAULTS) as frugal,
        wsharbor.serve(handler, HOST, 0, compression=SERVER_CONTEXT_TAKEOVER) as ratio,
    ):
        ports = [s.sockets[0].getsockname()[1] for s in (frugal, ratio)]
        offer = "permessage-deflate; client_max_window_bits"
        raw = [
            await raw_client(ports[0], offer),  # no context takeover
            await raw_client(ports[0], offer),
            await raw_client(ports[0], None),  # no compression
            await raw_client(ports[1], offer),  # context takeover
            await raw_client(ports[1], offer),
        ]
        # And real clients: wsharbor's and websockets', compressed and not.
        url = [f"ws://{HOST}:{port}/" for port in ports]
        async with (
            wsharbor.connect(url[0]) as ours,
            wsharbor.connect(url[1], compression=None) as plain,
            websockets.asyncio.client.connect(url[0]) as theirs,
        ):
            await asyncio.wait_for(both.wait(), TIMEOUT)
            # Twice: the second message of a context-takeover connection refers
            # to the first, so it differs from the first's bytes.
            for _ in range(2):
                assert wsharbor.fanout(opened, MESSAGE) == []
                frames = [await read_raw_frame(reader) for reader, _ in raw]
                for client in (ours, plain, theirs):
                    assert await asyncio.wait_for(client.recv(), TIMEOUT) == MESSAGE
                # The two no-context-takeover connections got the same bytes,
                # those a new compressor writes (window 15, memory level 8).
                compressor = zlib.compressobj(6, zlib.DEFLATED, -15, 8)
                payload = compressor.compress(MESSAGE.encode()) + compressor.flush(
                    zlib.Z_SYNC_FLUSH
                )
                if wsharbor.protocol.deflate.backend() == "zlib":
                    assert frames[0][2:] == payload[:-4]
                assert frames[0] == frames[1]
                assert frames[0][0] == 0xC1  # FIN, RSV1, TEXT
                decompressed = zlib.decompressobj(-15).decompress(
                    frames[0][2:] + b"\x00\x00\xff\xff"
                )
                assert decompressed == MESSAGE.encode()
                # The uncompressed connection: the plain frame.
                plain_frame = Frame(Opcode.TEXT, MESSAGE.encode())
                assert frames[2] == serialize_frame(plain_frame, mask=False)
                # Context takeover: each connection compressed it itself.
                assert frames[3][0] == frames[4][0] == 0xC1
        for _, writer in raw:
            writer.close()


async def test_fanout_shared_frame_with_codec_encode() -> None:
    # What fanout writes to a no-context-takeover connection decodes with the
    # codec the client negotiated, message after message.
    received: list[Any] = []
    ready = asyncio.Event()

    async def handler(websocket: Any) -> None:
        received.append(websocket)
        ready.set()
        await websocket.wait_closed()

    async with wsharbor.serve(handler, HOST, 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        async with wsharbor.connect(f"ws://{HOST}:{port}/") as client:
            await asyncio.wait_for(ready.wait(), TIMEOUT)
            for i in range(5):
                message = MESSAGE + str(i) * i
                wsharbor.broadcast(received, message)
                assert await asyncio.wait_for(client.recv(), TIMEOUT) == message
            (extension,) = received[0].protocol.extensions
            assert isinstance(extension, PerMessageDeflate)
            assert extension.local_no_context_takeover
            assert extension._encoder is None


def test_frame_helper() -> None:
    # serialize of the shared frame == Frame encode + serialize of one connection.
    one = codec(nct=True)
    frame = one.encode(Frame(Opcode.BINARY, MESSAGE.encode()))
    assert frame.rsv1
    assert server(codec(nct=True)).preencode(Opcode.BINARY, MESSAGE.encode())[2:] == frame.data
