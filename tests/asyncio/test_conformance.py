"""Autobahn-testsuite-style conformance tests, on real sockets.

A fuzzing client written with raw asyncio streams (frames built by hand, so that
it can send what the RFC forbids) talks to real ``wsharbor.serve`` echo servers
on 127.0.0.1, one per module; a fuzzing server talks to ``wsharbor.connect``.
Case ids follow the sections of the Autobahn testsuite:

1 framing (text and binary echo), 2 pings and pongs, 3 reserved bits,
4 reserved opcodes, 5 fragmentation, 6 UTF-8, 7 closing handshake,
9 (limited) large messages, 12/13 permessage-deflate.

Every case checks the exact close code the server sends (or the echo) and that
the server then closes the TCP connection (RFC 6455 section 7.1.1: the server
closes it first) within a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

import wsharbor
from wsharbor.protocol.deflate import SERVER_DEFAULTS
from wsharbor.protocol.headers import parse_extension_header

pytestmark = pytest.mark.asyncio(loop_scope="module")

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEADLINE = 5.0
MiB = 1 << 20

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CONTROL = (CLOSE, PING, PONG)


# ---------------------------------------------------------------------------
# The fuzzing client
# ---------------------------------------------------------------------------


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
) -> bytes:
    """Serialize a frame by hand: anything goes, including what RFC 6455 forbids."""
    head = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    mask_bit = 0x80 if mask else 0
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", head, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", head, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", head, mask_bit | 127, length)
    if not mask:
        return header + payload
    key = os.urandom(4)
    if length:
        key_int = int.from_bytes(key * (length // 4 + 1), "little") & ((1 << (8 * length)) - 1)
        payload = (int.from_bytes(payload, "little") ^ key_int).to_bytes(length, "little")
    return header + key + payload


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclass(frozen=True)
class RawFrame:
    fin: bool
    rsv: int
    opcode: int
    payload: bytes


class FuzzingClient:
    """A WebSocket client over raw asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.response_headers: dict[str, str] = {}

    @classmethod
    async def connect(cls, port: int, extensions: str | None = None) -> FuzzingClient:
        async with asyncio.timeout(DEADLINE):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = cls(reader, writer)
        await client.handshake(port, extensions)
        return client

    async def handshake(self, port: int, extensions: str | None) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET / HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(DEADLINE):
            head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1.1 101 "), status_line
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                assert name not in headers, f"duplicate header {name}"
                headers[name] = value.strip()
        expected = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        assert headers["sec-websocket-accept"] == expected
        self.response_headers = headers

    def write(self, data: bytes, *, chop: int | None = None) -> None:
        if chop is None:
            self.writer.write(data)
            return
        # Each write goes out in its own send() call while the buffer is empty
        # (TCP_NODELAY is set), so the server sees the bytes trickle in.
        for i in range(0, len(data), chop):
            self.writer.write(data[i : i + chop])

    def send(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv: int = 0,
        chop: int | None = None,
    ) -> None:
        self.write(build_frame(opcode, payload, fin=fin, rsv=rsv), chop=chop)

    async def drain(self) -> None:
        async with asyncio.timeout(DEADLINE):
            await self.writer.drain()

    async def recv_frame(self, timeout: float = DEADLINE) -> RawFrame:
        async with asyncio.timeout(timeout):
            b0, b1 = await self.reader.readexactly(2)
            assert not b1 & 0x80, "server frames must not be masked (RFC 6455 section 5.1)"
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            payload = await self.reader.readexactly(length)
        return RawFrame(bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0xF, payload)

    async def recv_message(self) -> tuple[int, bytes]:
        """Reassemble one data message (no extension): (opcode, payload)."""
        frame = await self.recv_frame()
        assert frame.opcode in (TEXT, BINARY), frame
        assert frame.rsv == 0, frame
        opcode, chunks = frame.opcode, [frame.payload]
        while not frame.fin:
            frame = await self.recv_frame()
            assert frame.opcode == CONT and frame.rsv == 0, frame
            chunks.append(frame.payload)
        return opcode, b"".join(chunks)

    async def expect(self, opcode: int, payload: bytes) -> None:
        if opcode in CONTROL:
            frame = await self.recv_frame()
            assert (frame.opcode, frame.payload) == (opcode, payload), frame
            assert frame.fin and frame.rsv == 0
        else:
            got = await self.recv_message()
            assert got == (opcode, payload), (got[0], len(got[1]))

    async def expect_close(self, code: int | None) -> RawFrame:
        """Expect a close frame with ``code`` (None: empty payload), then EOF."""
        frame = await self.recv_frame()
        assert frame.opcode == CLOSE, frame
        assert frame.fin and frame.rsv == 0
        if code is None:
            assert frame.payload == b""
        else:
            assert len(frame.payload) >= 2, frame
            assert struct.unpack("!H", frame.payload[:2])[0] == code, frame
            frame.payload[2:].decode()  # the reason is valid UTF-8
        await self.expect_eof()
        return frame

    async def expect_eof(self) -> None:
        """The server closes the TCP connection, without sending anything more."""
        try:
            async with asyncio.timeout(DEADLINE):
                rest = await self.reader.read()
        except ConnectionResetError:
            rest = b""  # our own data arrived after the server closed: it answers RST
        assert rest == b"", f"unexpected bytes after close: {rest[:40]!r}"

    def close(self) -> None:
        self.writer.close()


# ---------------------------------------------------------------------------
# Servers, one per module
# ---------------------------------------------------------------------------


async def echo(ws: wsharbor.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


EAGER = wsharbor.DeflateSettings(window_bits=15, memory_level=8, peer_window_bits=None, threshold=0)
FRUGAL = wsharbor.DeflateSettings(
    window_bits=9,
    memory_level=1,
    context_takeover=False,
    peer_window_bits=9,
    peer_context_takeover=False,
    threshold=0,
)
SERVER_SETTINGS: dict[str, Any] = {"default": "deflate", "eager": EAGER, "frugal": FRUGAL}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def servers() -> AsyncIterator[dict[str, int]]:
    ports: dict[str, int] = {}
    started = []
    for name, compression in SERVER_SETTINGS.items():
        server = await wsharbor.serve(
            echo,
            "127.0.0.1",
            0,
            compression=compression,
            max_size=16 * MiB,
            ping_interval=None,
            close_timeout=2,
        )
        started.append(server)
        ports[name] = server.sockets[0].getsockname()[1]
    yield ports
    for server in started:
        server.close()
    async with asyncio.timeout(10):
        for server in started:
            await server.wait_closed()


@pytest.fixture
def port(servers: dict[str, int]) -> int:
    return servers["default"]


@pytest_asyncio.fixture(loop_scope="module")
async def client(port: int) -> AsyncIterator[FuzzingClient]:
    client = await FuzzingClient.connect(port)
    yield client
    client.close()


# ---------------------------------------------------------------------------
# 1. Framing: text and binary echo
# ---------------------------------------------------------------------------

LENGTHS = [0, 125, 126, 127, 128, 65535, 65536]


@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("length", LENGTHS)
async def test_1_echo(client: FuzzingClient, length: int, opcode: int, chop: int | None) -> None:
    payload = b"*" * length if opcode == TEXT else bytes(i & 0xFF for i in range(length))
    client.send(opcode, payload, chop=chop)
    await client.expect(opcode, payload)
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_1_many_messages_in_one_write(client: FuzzingClient) -> None:
    messages = [(TEXT if i % 2 else BINARY, b"m%d" % i) for i in range(100)]
    client.write(b"".join(build_frame(op, data) for op, data in messages))
    for op, data in messages:
        await client.expect(op, data)
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


# ---------------------------------------------------------------------------
# 2. Pings and pongs
# ---------------------------------------------------------------------------

PING_PAYLOADS = {
    "empty": b"",
    "text": b"Hello, world!",
    "binary": bytes([0x00, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0x00, 0xFF]),
    "125": b"\xfe" * 125,
}


@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
@pytest.mark.parametrize("payload", PING_PAYLOADS.values(), ids=PING_PAYLOADS.keys())
async def test_2_ping_answered_with_identical_pong(
    client: FuzzingClient, payload: bytes, chop: int | None
) -> None:
    client.send(PING, payload, chop=chop)
    await client.expect(PONG, payload)
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_2_5_ping_126_bytes_fails(client: FuzzingClient) -> None:
    client.send(PING, b"\xfe" * 126)
    await client.expect_close(1002)


async def test_2_6_ping_125_bytes_chopped_in_larger_writes(client: FuzzingClient) -> None:
    client.send(PING, b"\xfe" * 125, chop=25)
    await client.expect(PONG, b"\xfe" * 125)
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_2_7_unsolicited_pong_without_payload_ignored(client: FuzzingClient) -> None:
    client.send(PONG)
    client.send(TEXT, b"after pong")
    await client.expect(TEXT, b"after pong")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_2_8_unsolicited_pong_with_payload_ignored(client: FuzzingClient) -> None:
    client.send(PONG, b"unsolicited pong payload")
    client.send(PING, b"ping payload")
    await client.expect(PONG, b"ping payload")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_2_9_unsolicited_pong_then_ping(client: FuzzingClient) -> None:
    client.send(PONG, b"unsolicited pong payload")
    client.send(PING, b"ping payload")
    await client.expect(PONG, b"ping payload")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
async def test_2_10_ten_pings_ten_pongs(client: FuzzingClient, chop: int | None) -> None:
    for i in range(10):
        client.send(PING, b"payload-%d" % i, chop=chop)
    for i in range(10):
        await client.expect(PONG, b"payload-%d" % i)
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


# ---------------------------------------------------------------------------
# 3. Reserved bits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rsv", range(1, 8))
@pytest.mark.parametrize(
    "opcode", [TEXT, BINARY, PING, CLOSE], ids=["text", "binary", "ping", "close"]
)
async def test_3_reserved_bits_fail(client: FuzzingClient, rsv: int, opcode: int) -> None:
    payload = close_payload(1000) if opcode == CLOSE else b"small"
    client.send(opcode, payload, rsv=rsv)
    await client.expect_close(1002)


@pytest.mark.parametrize("rsv", [1, 2, 4])
async def test_3_reserved_bits_after_valid_echo(client: FuzzingClient, rsv: int) -> None:
    # 3.2: a valid echo, then a frame with reserved bits, then a ping that
    # must not be answered. We wait for the echo before sending the bad frame:
    # when both arrive in one read, the server fails the connection before the
    # handler had a chance to echo (Autobahn's NON-STRICT outcome, allowed).
    client.send(TEXT, b"Hello, world!")
    await client.expect(TEXT, b"Hello, world!")
    client.send(TEXT, b"Hello, world!", rsv=rsv)
    client.send(PING)
    await client.expect_close(1002)


async def test_3_reserved_bits_chopped(client: FuzzingClient) -> None:
    # 3.3: the frames trickle in byte by byte.
    client.send(TEXT, b"Hello, world!", chop=1)
    await client.expect(TEXT, b"Hello, world!")
    client.send(TEXT, b"Hello, world!", rsv=3, chop=1)
    client.send(PING, chop=1)
    await client.expect_close(1002)


@pytest.mark.parametrize(
    ("opcode", "payload"),
    [(TEXT, b"unmasked"), (BINARY, b""), (PING, b"p"), (CLOSE, close_payload(1000))],
    ids=["text", "binary-empty", "ping", "close"],
)
async def test_unmasked_client_frame_fails(
    client: FuzzingClient, opcode: int, payload: bytes
) -> None:
    # RFC 6455 section 5.1: a server MUST close the connection upon receiving
    # an unmasked frame.
    client.write(build_frame(opcode, payload, mask=False))
    await client.expect_close(1002)


async def test_64_bit_length_with_msb_set_fails(client: FuzzingClient) -> None:
    client.write(struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 63) + os.urandom(4))
    await client.expect_close(1002)


async def test_non_minimal_length_encoding_accepted(client: FuzzingClient) -> None:
    # A 16-bit length for a 5-byte payload: not minimal, but unambiguous.
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(b"hello"))
    client.write(struct.pack("!BBH", 0x81, 0x80 | 126, 5) + key + masked)
    await client.expect(TEXT, b"hello")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


# ---------------------------------------------------------------------------
# 4. Reserved opcodes
# ---------------------------------------------------------------------------

RESERVED_OPCODES = [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF]


@pytest.mark.parametrize("payload", [b"", b"reserved opcode payload"], ids=["empty", "payload"])
@pytest.mark.parametrize("opcode", RESERVED_OPCODES, ids=[f"{op:#x}" for op in RESERVED_OPCODES])
async def test_4_reserved_opcode_fails(client: FuzzingClient, opcode: int, payload: bytes) -> None:
    client.send(opcode, payload)
    await client.expect_close(1002)


@pytest.mark.parametrize("opcode", RESERVED_OPCODES, ids=[f"{op:#x}" for op in RESERVED_OPCODES])
async def test_4_reserved_opcode_after_valid_echo(client: FuzzingClient, opcode: int) -> None:
    client.send(TEXT, b"Hello, world!")
    await client.expect(TEXT, b"Hello, world!")
    client.send(opcode, b"payload")
    client.send(PING)
    await client.expect_close(1002)


# ---------------------------------------------------------------------------
# 5. Fragmentation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("opcode", [PING, PONG], ids=["ping", "pong"])
async def test_5_1_fragmented_control_frame_fails(client: FuzzingClient, opcode: int) -> None:
    client.send(opcode, b"fragment1", fin=False)
    client.send(CONT, b"fragment2")
    await client.expect_close(1002)


@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
async def test_5_3_two_fragments(client: FuzzingClient, opcode: int, chop: int | None) -> None:
    client.send(opcode, b"fragment1", fin=False, chop=chop)
    client.send(CONT, b"fragment2", chop=chop)
    await client.expect(opcode, b"fragment1fragment2")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
async def test_5_6_ping_between_fragments(client: FuzzingClient, chop: int | None) -> None:
    client.send(TEXT, b"fragment1", fin=False, chop=chop)
    client.send(PING, b"pongme!", chop=chop)
    client.send(CONT, b"fragment2", chop=chop)
    await client.expect(PONG, b"pongme!")
    await client.expect(TEXT, b"fragment1fragment2")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_5_pong_between_fragments_ignored(client: FuzzingClient) -> None:
    client.send(BINARY, b"fragment1", fin=False)
    client.send(PONG, b"unsolicited")
    client.send(CONT, b"fragment2")
    await client.expect(BINARY, b"fragment1fragment2")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_5_pings_between_fragments_awaited_one_by_one(client: FuzzingClient) -> None:
    # 5.19 / 5.20: pongs arrive while the message is still incomplete.
    client.send(TEXT, b"fragment1", fin=False)
    client.send(CONT, b"fragment2", fin=False)
    client.send(PING, b"pongme 1!")
    await client.expect(PONG, b"pongme 1!")
    client.send(CONT, b"fragment3", fin=False)
    client.send(PING, b"pongme 2!")
    await client.expect(PONG, b"pongme 2!")
    client.send(CONT, b"fragment4")
    await client.expect(TEXT, b"fragment1fragment2fragment3fragment4")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
async def test_5_9_continuation_without_start_fails(
    client: FuzzingClient, fin: bool, chop: int | None
) -> None:
    client.send(CONT, b"non-continuation payload", fin=fin, chop=chop)
    client.send(TEXT, b"Hello, world!", chop=chop)
    await client.expect_close(1002)


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
async def test_5_15_continuation_after_complete_message_fails(
    client: FuzzingClient, fin: bool
) -> None:
    # 5.15 - 5.17: a message completes, then a stray continuation frame.
    client.send(TEXT, b"fragment1", fin=False)
    client.send(CONT, b"fragment2")
    await client.expect(TEXT, b"fragment1fragment2")
    client.send(CONT, b"fragment3", fin=fin)
    client.send(CONT, b"fragment4")
    await client.expect_close(1002)


@pytest.mark.parametrize("second", [TEXT, BINARY], ids=["text", "binary"])
async def test_5_18_new_message_while_fragmenting_fails(client: FuzzingClient, second: int) -> None:
    client.send(TEXT, b"fragment1", fin=False)
    client.send(second, b"fragment2")
    await client.expect_close(1002)


@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
async def test_5_text_in_one_byte_fragments(client: FuzzingClient, chop: int | None) -> None:
    # Multi-byte characters are split across fragments.
    text = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞".encode()
    client.send(TEXT, text[:1], fin=False, chop=chop)
    for i in range(1, len(text)):
        client.send(CONT, text[i : i + 1], fin=i == len(text) - 1, chop=chop)
    await client.expect(TEXT, text)
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_5_empty_fragments(client: FuzzingClient) -> None:
    # 6.1.2 / 6.1.3: empty fragments, empty text message.
    client.send(TEXT, b"", fin=False)
    client.send(CONT, b"", fin=False)
    client.send(CONT, b"")
    client.send(TEXT, b"", fin=False)
    client.send(CONT, b"middle", fin=False)
    client.send(CONT, b"")
    await client.expect(TEXT, b"")
    await client.expect(TEXT, b"middle")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_5_fragmented_close_fails(client: FuzzingClient) -> None:
    client.send(CLOSE, close_payload(1000), fin=False)
    await client.expect_close(1002)


# ---------------------------------------------------------------------------
# 6. UTF-8
# ---------------------------------------------------------------------------

VALID_UTF8 = {
    "ascii": b"Hello, world!",
    "kosme": "κόσμε".encode(),
    "u+0000": b"\x00",
    "u+0080": b"\xc2\x80",
    "u+0800": b"\xe0\xa0\x80",
    "u+10000": b"\xf0\x90\x80\x80",
    "u+007f": b"\x7f",
    "u+07ff": b"\xdf\xbf",
    "u+ffff": b"\xef\xbf\xbf",
    "u+d7ff": b"\xed\x9f\xbf",
    "u+e000": b"\xee\x80\x80",
    "u+fffd": b"\xef\xbf\xbd",
    "u+10ffff": b"\xf4\x8f\xbf\xbf",
    "u+fffe": b"\xef\xbf\xbe",
    "bom": b"\xef\xbb\xbfBOM",
    "mixed": "Hello-µ@ßöäüàá-UTF-8!! 𝄞 ✓ 中文".encode(),
}

INVALID_UTF8 = {
    # 6.3 / 6.6: the test file of Markus Kuhn, as in Autobahn 6.x.
    "kosme-bad": "κόσμε".encode() + b"\xed\xa0\x80edited",
    "continuation-80": b"\x80",
    "continuation-bf": b"\xbf",
    "continuation-80bf": b"\x80\xbf",
    "continuation-seq": bytes(range(0x80, 0xC0)),
    "lonely-start-c0": b"\xc0 ",
    "lonely-start-e0": b"\xe0 ",
    "lonely-start-f0": b"\xf0 ",
    "truncated-2": b"\xc2",
    "truncated-3": b"\xe0\xa0",
    "truncated-4": b"\xf0\x90\x80",
    "truncated-after-valid": "κόσμε".encode() + b"\xce",
    "fe": b"\xfe",
    "ff": b"\xff",
    "fefeffff": b"\xfe\xfe\xff\xff",
    "overlong-slash-2": b"\xc0\xaf",
    "overlong-slash-3": b"\xe0\x80\xaf",
    "overlong-slash-4": b"\xf0\x80\x80\xaf",
    "overlong-nul-2": b"\xc0\x80",
    "overlong-max-2": b"\xc1\xbf",
    "overlong-max-3": b"\xe0\x9f\xbf",
    "overlong-max-4": b"\xf0\x8f\xbf\xbf",
    "five-bytes": b"\xf8\x88\x80\x80\x80",
    "six-bytes": b"\xfc\x84\x80\x80\x80\x80",
    "surrogate-d800": b"\xed\xa0\x80",
    "surrogate-dfff": b"\xed\xbf\xbf",
    "surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "f5": b"\xf5\x80\x80\x80",
}

MODES = ["whole", "chopped", "fragmented"]


def send_text(client: FuzzingClient, payload: bytes, mode: str) -> None:
    if mode == "whole":
        client.send(TEXT, payload)
    elif mode == "chopped":
        client.send(TEXT, payload, chop=1)
    else:  # one byte per frame
        for i in range(max(len(payload), 1)):
            client.send(TEXT if i == 0 else CONT, payload[i : i + 1], fin=i >= len(payload) - 1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("payload", VALID_UTF8.values(), ids=VALID_UTF8.keys())
async def test_6_valid_utf8_echoed(client: FuzzingClient, payload: bytes, mode: str) -> None:
    send_text(client, payload, mode)
    await client.expect(TEXT, payload)
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("payload", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
async def test_6_invalid_utf8_fails(client: FuzzingClient, payload: bytes, mode: str) -> None:
    send_text(client, payload, mode)
    await client.expect_close(1007)


@pytest.mark.parametrize("chop", [None, 1], ids=["whole", "chopped"])
@pytest.mark.parametrize(
    "bad",
    [b"\xf4\x90\x80\x80", b"\xed\xa0\x80", b"\xc0\xaf", b"\xff"],
    ids=["above-10ffff", "surrogate", "overlong", "ff"],
)
async def test_6_4_fail_fast_on_invalid_fragment(
    client: FuzzingClient, bad: bytes, chop: int | None
) -> None:
    # 6.4.1 / 6.4.2: a fragmented text message whose second fragment is invalid
    # gets 1007 before the final fragment is sent.
    client.send(TEXT, "κόσμε".encode(), fin=False, chop=chop)
    client.send(CONT, bad + b"edited", fin=False, chop=chop)
    await client.expect_close(1007)


async def test_6_4_fail_fast_on_invalid_first_fragment(client: FuzzingClient) -> None:
    client.send(TEXT, b"\xf4\x90\x80\x80 invalid from the start", fin=False)
    await client.expect_close(1007)


async def test_6_4_3_fail_fast_inside_a_frame(client: FuzzingClient) -> None:
    # 6.4.3: a text frame sent in three chops, the second one holding the
    # invalid sequence: 1007 arrives before the third chop is sent (the text is
    # validated as it arrives, not when the frame completes: issue 13, item 7).
    kosme = "κόσμε".encode()
    frame = build_frame(TEXT, kosme + b"\xf4\x90\x80\x80edited")
    header = 2 + 4
    client.write(frame[: header + len(kosme)])
    await client.drain()
    client.write(frame[header + len(kosme) : header + len(kosme) + 4])
    await client.expect_close(1007)  # the rest of the frame is never sent


async def test_6_4_4_fail_fast_at_the_invalid_octet(client: FuzzingClient) -> None:
    # 6.4.4: as 6.4.3, with only the octet that makes the text invalid in the
    # second chop (\xf4 starts a valid sequence, \x90 after it can't).
    kosme = "κόσμε".encode()
    frame = build_frame(TEXT, kosme + b"\xf4\x90\x80\x80edited")
    cut = 2 + 4 + len(kosme) + 1
    client.write(frame[:cut])
    await client.drain()
    client.write(frame[cut : cut + 1])
    await client.expect_close(1007)


async def test_6_fail_fast_in_a_large_frame(client: FuzzingClient) -> None:
    # A 4 MiB text frame with a bad byte in its first KiB: refused after the
    # first 64 KiB, without the server waiting for (or buffering) the rest.
    payload = b"a" * 1000 + b"\xc0\xaf" + b"b" * (4 * MiB - 1002)
    frame = build_frame(TEXT, payload)
    client.write(frame[: 64 * 1024])
    await client.expect_close(1007)


async def test_6_split_sequence_across_fragments_valid(client: FuzzingClient) -> None:
    snowman = "☃".encode()
    client.send(TEXT, b"a" + snowman[:1], fin=False)
    client.send(CONT, snowman[1:2], fin=False)
    client.send(CONT, snowman[2:] + b"z")
    await client.expect(TEXT, b"a" + snowman + b"z")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_6_sequence_truncated_at_message_end_fails(client: FuzzingClient) -> None:
    snowman = "☃".encode()
    client.send(TEXT, b"a" + snowman[:1], fin=False)
    client.send(CONT, snowman[1:2])
    await client.expect_close(1007)


# ---------------------------------------------------------------------------
# 7. Closing handshake
# ---------------------------------------------------------------------------


async def test_7_1_1_echo_then_close(client: FuzzingClient) -> None:
    client.send(TEXT, b"Hello World!")
    await client.expect(TEXT, b"Hello World!")
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


@pytest.mark.parametrize(
    "after",
    [
        (CLOSE, close_payload(1000)),
        (PING, b"no pong please"),
        (TEXT, b"ignored text"),
        (BINARY, b"ignored binary"),
        (0x3, b"even a reserved opcode"),
    ],
    ids=["close", "ping", "text", "binary", "reserved"],
)
async def test_7_1_frames_after_close_ignored(
    client: FuzzingClient, after: tuple[int, bytes]
) -> None:
    # 7.1.2 - 7.1.4: nothing is processed after a close frame.
    client.write(build_frame(CLOSE, close_payload(1000)) + build_frame(*after))
    await client.expect_close(1000)


async def test_7_1_5_close_in_the_middle_of_a_fragmented_message(client: FuzzingClient) -> None:
    client.send(TEXT, b"fragment1", fin=False)
    client.send(CLOSE, close_payload(1000))
    client.send(CONT, b"fragment2")
    await client.expect_close(1000)


async def test_7_1_6_large_message_then_close(client: FuzzingClient) -> None:
    # Autobahn marks this case INFORMATIONAL: when the close frame is
    # processed before the handler echoed the message, the echo is dropped
    # (no data frame may follow a close frame). Either way, no pong.
    payload = b"BAsd7&jh23" * 26214  # ~256 KiB
    client.send(TEXT, payload)
    client.send(CLOSE, close_payload(1000))
    client.send(PING)
    frame = await client.recv_frame()
    if frame.opcode == TEXT:
        assert frame.fin and frame.payload == payload
    else:
        assert frame.opcode == CLOSE and frame.payload == close_payload(1000), frame
        await client.expect_eof()
        return
    await client.expect_close(1000)


async def test_7_3_1_close_without_payload(client: FuzzingClient) -> None:
    client.send(CLOSE)
    # RFC 6455 section 5.5.1: the server echoes the code it received, here none.
    frame = await client.recv_frame()
    assert frame.opcode == CLOSE
    assert frame.payload in (b"", close_payload(1000)), frame
    await client.expect_eof()


async def test_7_3_2_close_with_one_byte_payload_fails(client: FuzzingClient) -> None:
    client.send(CLOSE, b"\x03")
    await client.expect_close(1002)


@pytest.mark.parametrize("reason_length", [0, 1, 50, 122, 123])
async def test_7_3_close_reason_lengths(client: FuzzingClient, reason_length: int) -> None:
    client.send(CLOSE, close_payload(1000, b"*" * reason_length))
    await client.expect_close(1000)


async def test_7_3_6_close_payload_of_126_bytes_fails(client: FuzzingClient) -> None:
    # 2-byte code + 124-byte reason: a control frame over 125 bytes.
    client.send(CLOSE, close_payload(1000, b"*" * 124))
    await client.expect_close(1002)


@pytest.mark.parametrize(
    "reason",
    [b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64", b"\xff", b"ok\xc0\xaf"],
    ids=["surrogate", "ff", "overlong"],
)
async def test_7_5_1_invalid_utf8_close_reason_fails(client: FuzzingClient, reason: bytes) -> None:
    client.send(CLOSE, close_payload(1000, reason))
    await client.expect_close(1007)


VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011]
VALID_CLOSE_CODES += [1012, 1013, 1014, 3000, 3999, 4000, 4999]


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
async def test_7_7_valid_close_code_echoed(client: FuzzingClient, code: int) -> None:
    client.send(CLOSE, close_payload(code, b"reason"))
    await client.expect_close(code)


INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999]
INVALID_CLOSE_CODES += [5000, 5061, 65535]


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
async def test_7_9_invalid_close_code_fails(client: FuzzingClient, code: int) -> None:
    client.send(CLOSE, close_payload(code))
    await client.expect_close(1002)


# ---------------------------------------------------------------------------
# 9. Large messages (limited)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("frame_size", [None, 65536], ids=["one-frame", "64k-frames"])
@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
async def test_9_four_mib_echoed(
    client: FuzzingClient, opcode: int, frame_size: int | None
) -> None:
    payload = (b"*" if opcode == TEXT else b"\xfe") * (4 * MiB)
    if frame_size is None:
        client.send(opcode, payload)
    else:
        chunks = [payload[i : i + frame_size] for i in range(0, len(payload), frame_size)]
        for i, chunk in enumerate(chunks):
            client.send(opcode if i == 0 else CONT, chunk, fin=i == len(chunks) - 1)
    got = await client.recv_message()
    assert got[0] == opcode
    assert hashlib.sha256(got[1]).digest() == hashlib.sha256(payload).digest()
    client.send(CLOSE, close_payload(1000))
    await client.expect_close(1000)


async def test_9_message_over_max_size_fails(port: int) -> None:
    client = await FuzzingClient.connect(port)
    try:
        # The header announces 16 MiB + 1: refused before the payload arrives.
        client.write(struct.pack("!BBQ", 0x82, 0x80 | 127, 16 * MiB + 1) + os.urandom(4))
        await client.expect_close(1009)
    finally:
        client.close()


# ---------------------------------------------------------------------------
# 12 / 13. permessage-deflate
# ---------------------------------------------------------------------------

OFFERS = [
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    *(f"permessage-deflate; client_max_window_bits={n}" for n in range(9, 16)),
    *(f"permessage-deflate; server_max_window_bits={n}" for n in range(9, 16)),
    "permessage-deflate; client_no_context_takeover",
    "permessage-deflate; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits; server_max_window_bits=10;"
    " client_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; server_max_window_bits=8, permessage-deflate",
    "permessage-deflate; unknown_param, permessage-deflate; client_max_window_bits=11",
    "permessage-deflate; server_max_window_bits=16, permessage-deflate; server_max_window_bits=9",
    'permessage-deflate; client_max_window_bits="10"',
    "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
]

DECLINED_OFFERS = [
    "permessage-deflate; unknown_param",
    "permessage-deflate; server_max_window_bits=8",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=09",
    "permessage-deflate; client_no_context_takeover=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "x-webkit-deflate-frame",
]


@dataclass(frozen=True)
class Negotiated:
    server_bits: int
    client_bits: int
    server_no_context_takeover: bool
    client_no_context_takeover: bool


def check_answer(offers_header: str, answer_header: str) -> Negotiated:
    """Check the server's answer against RFC 7692 and the offer it accepted."""
    answer = parse_extension_header(answer_header)
    assert len(answer) == 1, answer
    name, params = answer[0]
    assert name == "permessage-deflate"
    answered = dict(params)
    assert len(answered) == len(params), f"duplicate parameter in {answer_header}"
    assert set(answered) <= {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if flag in answered:
            assert answered[flag] is None, f"{flag} has no value (RFC 7692 section 7.1.1)"
    for bits in ("server_max_window_bits", "client_max_window_bits"):
        if bits in answered:
            value = answered[bits]
            assert value is not None and value.isdigit() and not value.startswith("0")
            assert 8 <= int(value) <= 15
    # Which offer was accepted? The answer must be a valid answer to one of them.
    candidates = []
    for offer_name, offer_params in parse_extension_header(offers_header):
        if offer_name != "permessage-deflate":
            continue
        offered = dict(offer_params)
        try:
            candidates.append(_answer_matches(offered, answered))
        except AssertionError:
            continue
    assert candidates, f"answer {answer_header!r} fits no offer of {offers_header!r}"
    return candidates[0]


def _answer_matches(offered: dict[str, str | None], answered: dict[str, str | None]) -> Negotiated:
    # 7.1.1.1: server_no_context_takeover offered must be in the answer.
    if "server_no_context_takeover" in offered:
        assert "server_no_context_takeover" in answered
    # 7.1.2.1: server_max_window_bits answered <= offered.
    if "server_max_window_bits" in offered:
        assert "server_max_window_bits" in answered
        offered_value = offered["server_max_window_bits"]
        assert offered_value is not None
        assert int(answered["server_max_window_bits"] or 0) <= int(offered_value)
    # 7.1.2.2: client_max_window_bits only if offered; no larger than the hint.
    if "client_max_window_bits" in answered:
        assert "client_max_window_bits" in offered
        hint = offered["client_max_window_bits"]
        if hint is not None:
            assert int(answered["client_max_window_bits"] or 0) <= int(hint.strip('"'))
    server_bits = int(answered.get("server_max_window_bits") or 15)
    client_bits = int(answered.get("client_max_window_bits") or 15)
    return Negotiated(
        server_bits=server_bits,
        client_bits=client_bits,
        server_no_context_takeover="server_no_context_takeover" in answered,
        client_no_context_takeover="client_no_context_takeover" in answered,
    )


class DeflateClient:
    """Compress what the fuzzing client sends and decompress what it receives,
    within the negotiated windows."""

    def __init__(self, negotiated: Negotiated) -> None:
        self.negotiated = negotiated
        self.compressor: Any = None
        self.decompressor: Any = None
        #: Sizes of the messages received compressed (RSV1 set).
        self.compressed_sizes: list[int] = []

    def compress(self, data: bytes) -> bytes:
        if self.compressor is None:
            # zlib can't compress with a window of 8; ours never offers 8.
            bits = self.negotiated.client_bits
            self.compressor = zlib.compressobj(6, zlib.DEFLATED, -bits, 8)
        compressed = self.compressor.compress(data) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        assert compressed.endswith(b"\x00\x00\xff\xff")
        if self.negotiated.client_no_context_takeover:
            self.compressor = None
        return compressed[:-4]

    def decompress(self, data: bytes) -> bytes:
        if self.decompressor is None:
            # The server's window must be no larger than negotiated: a
            # back-reference farther away fails with "invalid distance too far".
            self.decompressor = zlib.decompressobj(-self.negotiated.server_bits)
        result = self.decompressor.decompress(data + b"\x00\x00\xff\xff")
        assert not self.decompressor.unconsumed_tail
        if self.negotiated.server_no_context_takeover:
            self.decompressor = None
        return result

    async def recv_message(self, client: FuzzingClient) -> tuple[int, bytes]:
        frame = await client.recv_frame()
        assert frame.opcode in (TEXT, BINARY), frame
        assert frame.rsv in (0, 4), frame  # RSV1 only, on the first frame
        compressed = frame.rsv == 4
        opcode, chunks = frame.opcode, [frame.payload]
        while not frame.fin:
            frame = await client.recv_frame()
            assert frame.opcode == CONT and frame.rsv == 0, frame
            chunks.append(frame.payload)
        data = b"".join(chunks)
        if not compressed:
            return opcode, data
        message = self.decompress(data)
        self.compressed_sizes.append(len(message))
        return opcode, message


def compressible(size: int, seed: int) -> bytes:
    # Repetitive (back-references of every distance) yet not trivial.
    rng = random.Random(seed)
    words = [
        bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(64)
    ]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


async def deflate_round_trips(
    client: FuzzingClient, negotiated: Negotiated, server_threshold: int
) -> None:
    codec = DeflateClient(negotiated)
    sizes = [0, 16, 64, 127, 128, 256, 1024, 4096, 16384, 65536, 131072]
    for i, size in enumerate(sizes):
        payload = compressible(size, i)
        opcode = TEXT if i % 2 else BINARY
        if i % 3 == 0:
            # Uncompressed message (RSV1 clear) in the middle of compressed ones.
            client.send(opcode, payload)
        elif i % 3 == 1:
            client.send(opcode, codec.compress(payload), rsv=4)
        else:
            # Fragmented compressed message: RSV1 on the first frame only.
            compressed = codec.compress(payload)
            half = len(compressed) // 2
            client.send(opcode, compressed[:half], fin=False, rsv=4)
            client.send(PING, b"between")
            client.send(CONT, compressed[half:])
            await client.expect(PONG, b"between")
        got = await codec.recv_message(client)
        assert got == (opcode, payload), (size, got[0], len(got[1]))
    # The same payload again, twice: with context takeover, back-references
    # into the previous message.
    payload = compressible(8192, 99)
    for _ in range(2):
        client.send(TEXT, codec.compress(payload), rsv=4)
        assert await codec.recv_message(client) == (TEXT, payload)
    # A random block repeated at a distance of 300 bytes to 20 KB: a server
    # compressing with a larger window than negotiated refers back farther
    # than our decompressor's window, which zlib reports as an error.
    rng = random.Random(7)
    for distance in (300, 600, 1500, 3000, 6000, 12000, 20000):
        block = rng.randbytes(distance)
        client.send(BINARY, codec.compress(block + block), rsv=4)
        assert await codec.recv_message(client) == (BINARY, block + block)
    # Replies are compressed from the server's threshold on.
    compressed = codec.compressed_sizes
    assert compressed and min(compressed) >= server_threshold, compressed
    assert len(compressed) >= len([s for s in sizes if s >= max(server_threshold, 1)]) + 9


@pytest.mark.parametrize("server", list(SERVER_SETTINGS))
@pytest.mark.parametrize("offer", OFFERS)
async def test_12_13_deflate_negotiation_and_echo(
    servers: dict[str, int], server: str, offer: str
) -> None:
    client = await FuzzingClient.connect(servers[server], offer)
    try:
        answer = client.response_headers.get("sec-websocket-extensions")
        assert answer is not None, f"offer {offer!r} declined"
        negotiated = check_answer(offer, answer)
        if SERVER_SETTINGS[server] is FRUGAL:
            # The server asked for no context takeover and small windows.
            assert negotiated.server_no_context_takeover
            assert negotiated.server_bits == 9
        settings = SERVER_SETTINGS[server]
        threshold = SERVER_DEFAULTS.threshold if settings == "deflate" else settings.threshold
        await deflate_round_trips(client, negotiated, threshold)
        client.send(CLOSE, close_payload(1000))
        await client.expect_close(1000)
    finally:
        client.close()


@pytest.mark.parametrize("offer", DECLINED_OFFERS)
async def test_12_invalid_offer_declined(servers: dict[str, int], offer: str) -> None:
    # RFC 7692 section 5.1: decline an offer it can't accept; the connection
    # goes on without compression.
    client = await FuzzingClient.connect(servers["default"], offer)
    try:
        assert "sec-websocket-extensions" not in client.response_headers
        client.send(TEXT, b"x" * 300)
        await client.expect(TEXT, b"x" * 300)
        client.send(CLOSE, close_payload(1000))
        await client.expect_close(1000)
    finally:
        client.close()


async def deflate_client(servers: dict[str, int], offer: str = "permessage-deflate") -> Any:
    client = await FuzzingClient.connect(servers["eager"], offer)
    answer = client.response_headers["sec-websocket-extensions"]
    return client, DeflateClient(check_answer(offer, answer))


async def test_12_rsv1_on_continuation_fails(servers: dict[str, int]) -> None:
    client, codec = await deflate_client(servers)
    try:
        compressed = codec.compress(b"hello hello hello")
        client.send(TEXT, compressed[:3], fin=False, rsv=4)
        client.send(CONT, compressed[3:], rsv=4)
        await client.expect_close(1002)
    finally:
        client.close()


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE], ids=["ping", "pong", "close"])
async def test_12_rsv1_on_control_frame_fails(servers: dict[str, int], opcode: int) -> None:
    client, _ = await deflate_client(servers)
    try:
        client.send(opcode, close_payload(1000) if opcode == CLOSE else b"", rsv=4)
        await client.expect_close(1002)
    finally:
        client.close()


@pytest.mark.parametrize("rsv", [2, 1, 6], ids=["rsv2", "rsv3", "rsv1+rsv2"])
async def test_12_other_reserved_bits_still_fail(servers: dict[str, int], rsv: int) -> None:
    client, codec = await deflate_client(servers)
    try:
        client.send(TEXT, codec.compress(b"hello"), rsv=rsv)
        await client.expect_close(1002)
    finally:
        client.close()


async def test_12_corrupt_deflate_stream_fails(servers: dict[str, int]) -> None:
    client, _ = await deflate_client(servers)
    try:
        client.send(BINARY, b"\xff\xff\xff\xff garbage", rsv=4)
        await client.expect_close(1002)
    finally:
        client.close()


async def test_12_compressed_invalid_utf8_fails(servers: dict[str, int]) -> None:
    client, codec = await deflate_client(servers)
    try:
        client.send(TEXT, codec.compress(b"valid then \xed\xa0\x80 invalid"), rsv=4)
        await client.expect_close(1007)
    finally:
        client.close()


async def test_12_zip_bomb_over_max_size_fails(servers: dict[str, int]) -> None:
    client, codec = await deflate_client(servers)
    try:
        client.send(BINARY, codec.compress(b"\x00" * (16 * MiB + 1)), rsv=4)
        await client.expect_close(1009)
    finally:
        client.close()


async def test_12_compressed_window_8_from_client(servers: dict[str, int]) -> None:
    # RFC 7692 7.1.2.2: a client may compress with 8 bits; the server decodes it.
    offer = "permessage-deflate; client_max_window_bits=8"
    client = await FuzzingClient.connect(servers["default"], offer)
    try:
        negotiated = check_answer(offer, client.response_headers["sec-websocket-extensions"])
        assert negotiated.client_bits == 8
        # zlib compresses with 9 when asked for 8: use a payload without
        # back-references longer than 256 bytes so it is a valid 8-bit stream.
        payload = bytes(range(256)) * 2
        raw = zlib.compressobj(6, zlib.DEFLATED, -9, 8)
        compressed = raw.compress(payload[:200]) + raw.flush(zlib.Z_SYNC_FLUSH)
        client.send(BINARY, compressed[:-4], rsv=4)
        got = await DeflateClient(negotiated).recv_message(client)
        assert got == (BINARY, payload[:200])
        client.send(CLOSE, close_payload(1000))
        await client.expect_close(1000)
    finally:
        client.close()


# ---------------------------------------------------------------------------
# A fuzzing server against wsharbor.connect
# ---------------------------------------------------------------------------

Scenario = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_client_frame(reader: asyncio.StreamReader) -> RawFrame:
    async with asyncio.timeout(DEADLINE):
        b0, b1 = await reader.readexactly(2)
        assert b1 & 0x80, "client frames must be masked (RFC 6455 section 5.1)"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        key = await reader.readexactly(4)
        data = await reader.readexactly(length)
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return RawFrame(bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0xF, payload)


class FuzzingServer:
    """Answers one handshake with 101, then writes ``frames`` and records what
    the client sends until its close frame."""

    def __init__(self, frames: bytes) -> None:
        self.frames = frames
        self.received: list[RawFrame] = []
        self.eof = asyncio.get_running_loop().create_future()
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            key = next(
                line.split(b":", 1)[1].strip().decode()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
            )
            writer.write(self.frames)
            while True:
                try:
                    frame = await read_client_frame(reader)
                except asyncio.IncompleteReadError:
                    break
                self.received.append(frame)
                if frame.opcode == CLOSE:
                    # The closing handshake is complete (or the client failed
                    # the connection): the server closes TCP (RFC 6455 7.1.1).
                    break
            if not self.eof.done():
                self.eof.set_result(None)
        except Exception as exc:
            if not self.eof.done():
                self.eof.set_exception(exc)
        finally:
            writer.close()


def srv_frame(opcode: int, payload: bytes = b"", **kwargs: Any) -> bytes:
    return build_frame(opcode, payload, mask=False, **kwargs)


CLIENT_FAILURES = {
    "masked-frame": (build_frame(TEXT, b"masked"), 1002),
    "rsv1-without-extension": (srv_frame(TEXT, b"x", rsv=4), 1002),
    "reserved-opcode": (srv_frame(0x3, b"x"), 1002),
    "reserved-control-opcode": (srv_frame(0xB), 1002),
    "ping-126-bytes": (srv_frame(PING, b"x" * 126), 1002),
    "fragmented-ping": (srv_frame(PING, b"x", fin=False), 1002),
    "continuation-without-start": (srv_frame(CONT, b"x"), 1002),
    "text-while-fragmenting": (srv_frame(TEXT, b"a", fin=False) + srv_frame(TEXT, b"b"), 1002),
    "invalid-utf8": (srv_frame(TEXT, b"\xed\xa0\x80"), 1007),
    "invalid-utf8-first-fragment": (srv_frame(TEXT, b"\xff", fin=False), 1007),
    "too-big": (srv_frame(BINARY, b"x" * 2048), 1009),
    "close-1-byte": (srv_frame(CLOSE, b"\x03"), 1002),
    "close-code-1005": (srv_frame(CLOSE, close_payload(1005)), 1002),
    "close-code-5000": (srv_frame(CLOSE, close_payload(5000)), 1002),
    "close-reason-invalid-utf8": (srv_frame(CLOSE, close_payload(1000, b"\xff")), 1007),
}


@pytest.mark.parametrize(("frames", "code"), CLIENT_FAILURES.values(), ids=CLIENT_FAILURES.keys())
async def test_client_fails_on_bad_server_frames(frames: bytes, code: int) -> None:
    async with FuzzingServer(frames) as uri:
        ws = await wsharbor.connect(uri, compression=None, max_size=1024, close_timeout=2)
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            async with asyncio.timeout(DEADLINE):
                await ws.recv()
        assert info.value.sent is not None and info.value.sent.code == code
        # The client closes the TCP connection after failing it.
        async with asyncio.timeout(DEADLINE):
            await ws.wait_closed()
        assert ws.close_code is not None


@pytest.mark.parametrize(("frames", "code"), CLIENT_FAILURES.values(), ids=CLIENT_FAILURES.keys())
async def test_client_sends_close_code_on_the_wire(frames: bytes, code: int) -> None:
    fuzzer = FuzzingServer(frames)
    async with fuzzer as uri:
        ws = await wsharbor.connect(uri, compression=None, max_size=1024, close_timeout=2)
        async with asyncio.timeout(DEADLINE):
            await fuzzer.eof
            await ws.wait_closed()
    closes = [f for f in fuzzer.received if f.opcode == CLOSE]
    assert len(closes) == 1, fuzzer.received
    assert struct.unpack("!H", closes[0].payload[:2])[0] == code


async def test_client_answers_pings_and_ignores_pongs() -> None:
    frames = (
        srv_frame(PING, b"ping 1")
        + srv_frame(PONG, b"unsolicited")
        + srv_frame(TEXT, "κόσ".encode(), fin=False)
        + srv_frame(PING, b"ping 2")
        + srv_frame(CONT, "με".encode())
        + srv_frame(CLOSE, close_payload(1000, b"bye"))
    )
    fuzzer = FuzzingServer(frames)
    async with fuzzer as uri:
        ws = await wsharbor.connect(uri, compression=None, close_timeout=2)
        async with asyncio.timeout(DEADLINE):
            assert await ws.recv() == "κόσμε"
            with pytest.raises(wsharbor.ConnectionClosedOK):
                await ws.recv()
            await fuzzer.eof
    assert [(f.opcode, f.payload) for f in fuzzer.received] == [
        (PONG, b"ping 1"),
        (PONG, b"ping 2"),
        (CLOSE, close_payload(1000)),
    ]
    assert ws.close_code == 1000 and ws.close_reason == "bye"


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
async def test_client_echoes_valid_close_codes(code: int) -> None:
    fuzzer = FuzzingServer(srv_frame(CLOSE, close_payload(code, b"r")))
    async with fuzzer as uri:
        ws = await wsharbor.connect(uri, compression=None, close_timeout=2)
        async with asyncio.timeout(DEADLINE):
            await fuzzer.eof
            await ws.wait_closed()
    assert [(f.opcode, f.payload[:2]) for f in fuzzer.received] == [(CLOSE, close_payload(code))]
    assert ws.close_code == code
