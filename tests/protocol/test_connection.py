"""Tests of wsharbor.protocol.connection: the sans-I/O RFC 6455 state machine.

Two ways of driving it:

- a client and a server ``WebSocketProtocol`` wired together (``data_to_send()``
  of one into ``receive_data()`` of the other);
- raw bytes built with ``serialize_frame`` (or :func:`raw_frame` for frames
  ``serialize_frame`` refuses to build) fed to one side, and the frames it
  writes parsed back, so every failure checks the close code on the wire.

The Autobahn testsuite (sections 1-7, and the limits of section 9) is the
checklist: each group has a parametrized test below, named after its section.
"""

from __future__ import annotations

import logging
import random
import struct
import tracemalloc
from dataclasses import FrozenInstanceError, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsharbor import defaults
from wsharbor.exceptions import (
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
)
from wsharbor.protocol import frames
from wsharbor.protocol.connection import (
    OK_CLOSE_CODES,
    BinaryMessage,
    CloseReceived,
    Event,
    Fragment,
    PingReceived,
    PongReceived,
    Side,
    State,
    TextMessage,
    WebSocketProtocol,
)
from wsharbor.protocol.deflate import PerMessageDeflate
from wsharbor.protocol.frames import HEADER_MAX, Close, Frame, FrameParser, Opcode, serialize_frame

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
CLOSE, PING, PONG = Opcode.CLOSE, Opcode.PING, Opcode.PONG

# "κόσμε" and the invalid sequences of Autobahn section 6.
KOSME = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"  # "κόσμε" as in Autobahn
INVALID_UTF8_EDITED = KOSME + b"\xed\xa0\x80" + b"edited"  # a surrogate, case 6.3.1


# Helpers.


def make(side: Side = Side.SERVER, **kwargs: object) -> WebSocketProtocol:
    return WebSocketProtocol(side, **kwargs)  # type: ignore[arg-type]


def make_pair(**kwargs: object) -> tuple[WebSocketProtocol, WebSocketProtocol]:
    return make(Side.CLIENT, **kwargs), make(Side.SERVER, **kwargs)


def transfer(src: WebSocketProtocol, dst: WebSocketProtocol) -> None:
    for chunk in src.data_to_send():
        dst.receive_data(chunk)


def frame_bytes(
    opcode: Opcode,
    data: bytes = b"",
    fin: bool = True,
    *,
    to: Side = Side.SERVER,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
) -> bytes:
    """A valid frame as the peer of ``to`` writes it (masked when sent to a server)."""
    frame = Frame(opcode, data, fin, rsv1, rsv2, rsv3)
    return serialize_frame(frame, mask=to is Side.SERVER)


def raw_frame(
    opcode: int,
    data: bytes = b"",
    fin: bool = True,
    *,
    to: Side = Side.SERVER,
    rsv: int = 0,
    masked: bool | None = None,
) -> bytes:
    """Any frame, including the invalid ones serialize_frame() refuses to build."""
    if masked is None:
        masked = to is Side.SERVER
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    length = len(data)
    if length < 126:
        header = struct.pack("!BB", b0, mask_bit | length)
    elif length < 65536:
        header = struct.pack("!BBH", b0, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", b0, mask_bit | 127, length)
    if masked:
        key = b"\x12\x34\x56\x78"
        return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))
    return header + data


def close_bytes(code: int | None, reason: bytes = b"", *, to: Side = Side.SERVER) -> bytes:
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return raw_frame(CLOSE, payload, to=to)


def written_frames(proto: WebSocketProtocol) -> list[Frame]:
    """Parse what ``proto`` wrote since the last call."""
    parser = FrameParser(mask=proto.side is Side.CLIENT)
    parser.feed(b"".join(proto.data_to_send()))
    frames = []
    while (frame := parser.parse()) is not None:
        frames.append(frame)
    assert parser.buffered == 0
    return frames


def written_close(proto: WebSocketProtocol) -> Close | None:
    """The close frame ``proto`` wrote since the last call, which must be its last frame."""
    frames = written_frames(proto)
    closes = [frame for frame in frames if frame.opcode is CLOSE]
    if not closes:
        return None
    assert len(closes) == 1
    assert frames[-1].opcode is CLOSE, "nothing may be written after a close frame"
    return Close.parse(closes[0].data)


def feed(proto: WebSocketProtocol, *chunks: bytes, chop: int | None = None) -> list[Event]:
    """Feed chunks (each cut into pieces of ``chop`` bytes if given); return the events."""
    for chunk in chunks:
        if chop is None:
            proto.receive_data(chunk)
        else:
            for i in range(0, len(chunk), chop):
                proto.receive_data(chunk[i : i + chop])
    return proto.events_received()


def assert_failed(
    proto: WebSocketProtocol, code: int, exc_type: type[BaseException] | None = None
) -> Close:
    """``proto`` failed the connection and wrote a close frame with ``code``."""
    close = written_close(proto)
    assert close is not None, "no close frame was written"
    assert close.code == code, close
    assert proto.state is State.CLOSING
    assert proto.close_transport is True
    if exc_type is not None:
        assert isinstance(proto.failure, exc_type), proto.failure
    return close


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class RSV1Extension:
    """A fake extension that uses RSV1 (as permessage-deflate does) and records calls."""

    name = "x-rsv1"

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.decoded: list[tuple[Frame, int | None]] = []

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if self.fail:
            raise RuntimeError("extension bug")
        self.decoded.append((frame, max_size))
        return replace(frame, rsv1=False)

    def encode(self, frame: Frame) -> Frame:
        return replace(frame, rsv1=frame.opcode in (TEXT, BINARY))


# Messages.


@pytest.mark.parametrize(
    ("send", "event"),
    [
        (lambda p: p.send_text("Hello"), TextMessage("Hello")),
        (lambda p: p.send_text("κόσμε 😀"), TextMessage("κόσμε 😀")),
        (lambda p: p.send_text(b"utf-8 already"), TextMessage("utf-8 already")),
        (lambda p: p.send_text(""), TextMessage("")),
        (lambda p: p.send_binary(b"\x00\xff"), BinaryMessage(b"\x00\xff")),
        (lambda p: p.send_binary(bytearray(b"ba")), BinaryMessage(b"ba")),
        (lambda p: p.send_binary(memoryview(b"mv")), BinaryMessage(b"mv")),
        (lambda p: p.send_binary(b""), BinaryMessage(b"")),
        (lambda p: p.send_binary(b"x" * 70_000), BinaryMessage(b"x" * 70_000)),
    ],
)
@pytest.mark.parametrize("direction", ["client-to-server", "server-to-client"])
def test_messages(send: object, event: Event, direction: str) -> None:
    client, server = make_pair()
    src, dst = (client, server) if direction == "client-to-server" else (server, client)
    send(src)  # type: ignore[operator]
    transfer(src, dst)
    assert dst.events_received() == [event]
    assert dst.events_received() == []
    assert dst.data_to_send() == []
    assert dst.buffered_input == 0


@pytest.mark.parametrize("side", [Side.SERVER, Side.CLIENT])
def test_send_writes_the_same_frames_with_debug_logging(side: Side) -> None:
    # Without extensions and debug logging, data frames are encoded without a
    # Frame object; with debug logging, through Frame and serialize_frame.
    quiet_logger = logging.getLogger("wsharbor.test.quiet")
    quiet_logger.setLevel(logging.INFO)
    loud_logger = logging.getLogger("wsharbor.test.loud")
    loud_logger.setLevel(logging.DEBUG)
    quiet = make(side, logger=quiet_logger)
    loud = make(side, logger=loud_logger)
    assert not quiet.debug and loud.debug
    for proto in (quiet, loud):
        proto.send_text("café")
        proto.send_binary(b"\x00" * 200, fin=False)
        proto.send_continuation(b"end", fin=True)
    if side is Side.SERVER:
        assert quiet.data_to_send() == loud.data_to_send()
    else:  # masked with random keys: compare what the frames carry
        assert written_frames(quiet) == written_frames(loud)


def test_client_masks_and_server_does_not() -> None:
    client, server = make_pair()
    client.send_text("Hello")
    server.send_text("Hello")
    assert client.data_to_send()[0][1] & 0x80
    assert server.data_to_send() == [b"\x81\x05Hello"]


def test_fragmented_message_sent_and_reassembled() -> None:
    client, server = make_pair()
    client.send_text("Hel", fin=False)
    client.send_continuation("lo ", fin=False)
    client.send_continuation(b"world", fin=True)
    frames = written_frames(client)
    assert [(f.opcode, f.fin) for f in frames] == [(TEXT, False), (CONT, False), (CONT, True)]
    client.send_binary(b"ab", fin=False)
    client.send_continuation(b"cd", fin=True)
    transfer(client, server)
    assert server.events_received() == [BinaryMessage(b"abcd")]


def test_fragmented_message_received_with_interleaved_ping() -> None:
    server = make()
    events = feed(
        server,
        frame_bytes(TEXT, b"Hel", fin=False),
        frame_bytes(PING, b"are you there?"),
        frame_bytes(CONT, b"l", fin=False),
        frame_bytes(CONT, b"o"),
    )
    assert events == [PingReceived(b"are you there?"), TextMessage("Hello")]
    assert written_frames(server) == [Frame(PONG, b"are you there?")]


def test_stream_fragments_decodes_text_incrementally() -> None:
    server = make(stream_fragments=True)
    emoji = "😀".encode()  # 4 bytes: f0 9f 98 80
    assert feed(server, frame_bytes(TEXT, b"a" + emoji[:2], fin=False)) == [Fragment("a", False)]
    assert server.buffered_input == 3
    assert feed(server, frame_bytes(CONT, emoji[2:] + b"b")) == [Fragment("😀b", True)]
    assert server.buffered_input == 0


def test_stream_fragments_binary_and_single_frame() -> None:
    server = make(stream_fragments=True)
    assert feed(
        server,
        frame_bytes(BINARY, b"\xf0\x9f", fin=False),
        frame_bytes(CONT, b"\x98\x80"),
        frame_bytes(TEXT, b"whole"),
        frame_bytes(BINARY, b""),
    ) == [
        Fragment(b"\xf0\x9f", False),
        Fragment(b"\x98\x80", True),
        Fragment("whole", True),
        Fragment(b"", True),
    ]


def test_stream_fragments_char_split_across_three_frames() -> None:
    server = make(stream_fragments=True)
    emoji = "😀".encode()
    assert feed(
        server,
        frame_bytes(TEXT, emoji[:1], fin=False),
        frame_bytes(CONT, emoji[1:3], fin=False),
        frame_bytes(CONT, emoji[3:]),
    ) == [Fragment("", False), Fragment("", False), Fragment("😀", True)]


def test_stream_fragments_incomplete_char_at_the_end() -> None:
    server = make(stream_fragments=True)
    feed(server, frame_bytes(TEXT, b"a\xf0\x9f", fin=False))
    assert feed(server, frame_bytes(CONT, b"\x98")) == []
    assert_failed(server, 1007, UnicodeDecodeError)


# Pings and pongs.


@pytest.mark.parametrize("payload", [b"", b"Hello", b"\x00\xff" * 10, b"p" * 125])
@pytest.mark.parametrize("side", list(Side))
def test_automatic_pong_with_the_same_payload(side: Side, payload: bytes) -> None:
    proto = make(side)
    assert feed(proto, frame_bytes(PING, payload, to=side)) == [PingReceived(payload)]
    assert written_frames(proto) == [Frame(PONG, payload)]


def test_pong_received_is_not_answered() -> None:
    server = make()
    assert feed(server, frame_bytes(PONG, b"unsolicited")) == [PongReceived(b"unsolicited")]
    assert server.data_to_send() == []


def test_send_ping_and_pong() -> None:
    client, server = make_pair()
    client.send_ping(b"1")
    client.send_pong(b"2")
    client.send_ping()
    transfer(client, server)
    assert server.events_received() == [PingReceived(b"1"), PongReceived(b"2"), PingReceived(b"")]
    transfer(server, client)
    assert client.events_received() == [PongReceived(b"1"), PongReceived(b"")]


def test_send_ping_too_long() -> None:
    client = make(Side.CLIENT)
    with pytest.raises(ProtocolError, match="too long"):
        client.send_ping(b"p" * 126)


# Closing handshake (RFC 6455 section 7).


@pytest.mark.parametrize(
    ("code", "reason", "exc_type"),
    [
        (1000, "bye", ConnectionClosedOK),
        (1001, "", ConnectionClosedOK),
        (1002, "", ConnectionClosedError),
        (1003, "text only", ConnectionClosedError),
        (1008, "", ConnectionClosedError),
        (1011, "oops", ConnectionClosedError),
        (1014, "", ConnectionClosedError),
        (3000, "", ConnectionClosedError),
        (4999, "private", ConnectionClosedError),
    ],
)
@pytest.mark.parametrize("initiator", list(Side))
def test_close_handshake(
    initiator: Side, code: int, reason: str, exc_type: type[Exception]
) -> None:
    client, server = make_pair()
    first, second = (client, server) if initiator is Side.CLIENT else (server, client)

    first.send_close(code, reason)
    assert first.state is State.CLOSING
    assert first.close_sent == Close(code, reason)
    transfer(first, second)

    # The receiver echoes the code (without the reason) and moves to CLOSING.
    assert second.events_received() == [CloseReceived(code, reason)]
    assert second.state is State.CLOSING
    assert second.close_rcvd == Close(code, reason)
    assert second.close_sent == Close(code, "")
    assert second.close_rcvd_then_sent is True
    transfer(second, first)
    assert first.events_received() == [CloseReceived(code, "")]
    assert first.close_rcvd_then_sent is False

    # The server closes the TCP connection; the client waits for it.
    assert server.close_transport is True
    assert client.close_transport is False
    assert client.failure is None and server.failure is None

    for proto in (client, server):
        assert proto.close_code is None  # not closed yet
        proto.receive_eof()
        assert proto.state is State.CLOSED
        exc = proto.close_exc
        assert type(exc) is exc_type
        assert exc.__cause__ is None
    assert second.close_code == code and second.close_reason == reason
    assert first.close_code == code and first.close_reason == ""
    assert str(first.close_exc) == f"sent {Close(code, reason)}; then received {Close(code)}"
    assert str(second.close_exc) == f"received {Close(code, reason)}; then sent {Close(code)}"


@pytest.mark.parametrize("initiator", list(Side))
def test_close_without_code_is_answered_with_an_empty_close(initiator: Side) -> None:
    client, server = make_pair()
    first, second = (client, server) if initiator is Side.CLIENT else (server, client)
    first.send_close(None)
    data = first.data_to_send()
    assert len(data) == 1
    for chunk in data:
        second.receive_data(chunk)
    assert second.events_received() == [CloseReceived(1005, "")]
    reply = second.data_to_send()
    assert [Frame(CLOSE, b"")] == _parse(reply, second.side)
    for chunk in reply:
        first.receive_data(chunk)
    assert first.events_received() == [CloseReceived(1005, "")]
    for proto in (client, server):
        proto.receive_eof()
        assert proto.close_code == 1005
    # Like websockets: a close without a code (what browsers send on close())
    # counts as a normal closure, so 1005 is in OK_CLOSE_CODES.
    assert 1005 in OK_CLOSE_CODES
    assert type(client.close_exc) is ConnectionClosedOK
    assert type(server.close_exc) is ConnectionClosedOK


def _parse(chunks: list[bytes], side: Side) -> list[Frame]:
    parser = FrameParser(mask=side is Side.CLIENT)
    parser.feed(b"".join(chunks))
    out = []
    while (frame := parser.parse()) is not None:
        out.append(frame)
    return out


@pytest.mark.parametrize(("sent", "rcvd"), [(1000, 1011), (1011, 1000), (1001, 4000)])
def test_close_exc_is_error_unless_both_codes_are_ok(sent: int, rcvd: int) -> None:
    server = make()
    server.send_close(sent)
    feed(server, close_bytes(rcvd))
    server.receive_eof()
    exc = server.close_exc
    assert type(exc) is ConnectionClosedError
    assert exc.sent == Close(sent) and exc.rcvd == Close(rcvd)
    assert exc.code == rcvd


@pytest.mark.parametrize("side", list(Side))
def test_eof_without_close_is_1006(side: Side) -> None:
    proto = make(side)
    assert proto.close_code is None and proto.close_reason is None
    proto.receive_eof()
    assert proto.state is State.CLOSED
    assert proto.close_code == 1006
    assert proto.close_reason == ""
    exc = proto.close_exc
    assert type(exc) is ConnectionClosedError
    assert exc.rcvd is None and exc.sent is None and exc.code == 1006
    # Idempotent, and nothing is processed after EOF.
    proto.receive_eof()
    proto.receive_data(frame_bytes(TEXT, b"late", to=side))
    assert proto.events_received() == []
    assert proto.data_to_send() == []


def test_eof_after_close_sent_without_answer() -> None:
    client = make(Side.CLIENT)
    client.send_close(1000)
    client.receive_eof()
    assert client.close_code == 1006
    exc = client.close_exc
    assert type(exc) is ConnectionClosedError
    assert exc.sent == Close(1000) and exc.rcvd is None


def test_eof_drops_a_partial_message_and_buffered_bytes() -> None:
    server = make()
    feed(server, frame_bytes(TEXT, b"Hel", fin=False), frame_bytes(TEXT, b"lo")[:3])
    assert server.buffered_input == 3 + 3
    server.receive_eof()
    assert server.buffered_input == 3  # the bytes of the message in progress are counted
    assert server.events_received() == []


def test_frames_after_a_close_frame_are_ignored() -> None:
    # RFC 6455 section 5.5.1 / 1.4: after receiving a close frame, further data is discarded.
    server = make()
    events = feed(
        server,
        close_bytes(1000)
        + frame_bytes(TEXT, b"ignored")
        + frame_bytes(PING, b"ignored")
        + close_bytes(1001)
        + b"\xff garbage",
    )
    assert events == [CloseReceived(1000, "")]
    assert written_frames(server) == [Frame(CLOSE, b"\x03\xe8")]
    assert server.buffered_input == 0
    assert server.failure is None
    feed(server, frame_bytes(TEXT, b"later"))
    assert server.events_received() == []
    assert server.data_to_send() == []


def test_client_keeps_waiting_for_the_server_to_close_tcp() -> None:
    client = make(Side.CLIENT)
    assert feed(client, close_bytes(1000, to=Side.CLIENT)) == [CloseReceived(1000, "")]
    assert written_close(client) == Close(1000)
    assert client.close_transport is False
    assert client.state is State.CLOSING


def test_ping_after_close_sent_is_not_answered() -> None:
    server = make()
    server.send_close(1000)
    server.data_to_send()
    assert feed(server, frame_bytes(PING, b"x")) == [PingReceived(b"x")]
    assert server.data_to_send() == []


def test_data_after_close_sent_is_delivered() -> None:
    # The peer may send data before it sees our close frame: nothing it sent
    # before its own close frame is lost (RFC 6455 section 1.4 only discards
    # data after a close frame is *received*).
    server = make()
    server.send_close(1001)
    server.data_to_send()
    events = feed(server, frame_bytes(TEXT, b"late"), frame_bytes(BINARY, b"late"))
    assert events == [TextMessage("late"), BinaryMessage(b"late")]
    assert feed(server, close_bytes(1001)) == [CloseReceived(1001, "")]
    assert server.data_to_send() == []  # no second close frame
    server.receive_eof()
    assert type(server.close_exc) is ConnectionClosedOK


def test_fragmented_message_started_after_close_sent_does_not_fail() -> None:
    # The peer may start a fragmented message before it sees our close frame. Its
    # continuation frames are valid and must not be taken for a protocol error,
    # or the closing handshake would not complete.
    server = make()
    server.send_close(1000)
    server.data_to_send()
    events = feed(
        server,
        frame_bytes(TEXT, b"Hel", fin=False),
        frame_bytes(PING, b"p"),
        frame_bytes(CONT, b"l", fin=False),
        frame_bytes(CONT, b"o"),
        frame_bytes(BINARY, b"next"),
        close_bytes(1000),
    )
    assert events == [
        PingReceived(b"p"),
        TextMessage("Hello"),
        BinaryMessage(b"next"),
        CloseReceived(1000, ""),
    ]
    assert server.failure is None
    assert server.data_to_send() == []  # no pong after our close frame
    server.receive_eof()
    assert type(server.close_exc) is ConnectionClosedOK


def test_fragmented_message_in_progress_when_close_sent() -> None:
    server = make()
    feed(server, frame_bytes(TEXT, b"Hel", fin=False))
    server.send_close(1000)
    server.data_to_send()
    events = feed(server, frame_bytes(CONT, b"lo"), frame_bytes(TEXT, b"next"), close_bytes(1000))
    assert events == [TextMessage("Hello"), TextMessage("next"), CloseReceived(1000, "")]
    assert server.failure is None
    assert server.buffered_input == 0


def test_expected_continuation_still_checked_after_close_sent() -> None:
    server = make()
    server.send_close(1000)
    server.data_to_send()
    feed(server, frame_bytes(TEXT, b"a", fin=False), frame_bytes(TEXT, b"b"))
    assert isinstance(server.failure, ProtocolError)
    assert server.data_to_send() == []  # a close frame was already sent
    assert server.close_transport is True


# Local misuse: InvalidState.


def _closing() -> WebSocketProtocol:
    server = make()
    server.send_close(1000)
    return server


@pytest.mark.parametrize(
    "action",
    [
        lambda p: p.send_text("x"),
        lambda p: p.send_binary(b"x"),
        lambda p: p.send_ping(b"x"),
        lambda p: p.send_pong(b"x"),
        lambda p: p.send_close(1000),
        lambda p: p.send_close(None),
        lambda p: p.send_preencoded(b"\x81\x01x"),
    ],
    ids=["text", "binary", "ping", "pong", "close", "close-none", "preencoded"],
)
@pytest.mark.parametrize("how", ["closing", "closed", "close-received"])
def test_sending_when_not_open_raises_invalid_state(action: object, how: str) -> None:
    server = make()
    if how == "closing":
        server.send_close(1000)
    elif how == "closed":
        server.receive_eof()
    else:
        feed(server, close_bytes(1000))
    server.data_to_send()
    with pytest.raises(InvalidState, match=r"connection is (CLOSING|CLOSED)"):
        action(server)  # type: ignore[operator]
    assert server.data_to_send() == []


def test_send_continuation_after_close_raises_invalid_state() -> None:
    client = make(Side.CLIENT)
    client.send_text("a", fin=False)
    client.send_close(1000)
    with pytest.raises(InvalidState, match="CLOSING"):
        client.send_continuation("b", fin=True)


@pytest.mark.parametrize("side", list(Side))
def test_send_continuation_without_fragmented_message(side: Side) -> None:
    proto = make(side)
    with pytest.raises(InvalidState, match="no fragmented message"):
        proto.send_continuation("x", fin=True)
    proto.send_text("whole")
    with pytest.raises(InvalidState, match="no fragmented message"):
        proto.send_continuation(b"x", fin=False)
    proto.send_binary(b"a", fin=False)
    proto.send_continuation(b"b", fin=True)
    with pytest.raises(InvalidState, match="no fragmented message"):
        proto.send_continuation(b"c", fin=True)


@pytest.mark.parametrize(
    "interleave",
    [
        lambda p: p.send_text("new"),
        lambda p: p.send_binary(b"new"),
        lambda p: p.send_text("", False),
    ],
    ids=["text", "binary", "fragmented-text"],
)
def test_new_message_while_sending_a_fragmented_one(interleave: object) -> None:
    client, server = make_pair()
    client.send_binary(b"part1", fin=False)
    with pytest.raises(InvalidState, match="fragmented message is in progress"):
        interleave(client)  # type: ignore[operator]
    # Control frames may be interleaved (RFC 6455 section 5.4).
    client.send_ping(b"p")
    client.send_continuation(b"part2", fin=True)
    transfer(client, server)
    assert server.events_received() == [PingReceived(b"p"), BinaryMessage(b"part1part2")]


def test_send_preencoded() -> None:
    client, server = make_pair()
    wire = serialize_frame(Frame(TEXT, b"broadcast"), mask=False)
    server.send_preencoded(wire)
    assert server.data_to_send() == [wire]
    server.send_preencoded(wire)
    transfer(server, client)
    assert client.events_received() == [TextMessage("broadcast")]


def test_send_preencoded_rules() -> None:
    wire = serialize_frame(Frame(TEXT, b"x"), mask=False)
    with pytest.raises(InvalidState, match="server connection without extensions"):
        make(Side.CLIENT).send_preencoded(wire)
    with pytest.raises(InvalidState, match="server connection without extensions"):
        make(Side.SERVER, extensions=[RSV1Extension()]).send_preencoded(wire)
    server = make()
    server.send_text("a", fin=False)
    with pytest.raises(InvalidState, match="fragmented message is in progress"):
        server.send_preencoded(wire)
    server.send_continuation("b", fin=True)
    server.send_preencoded(wire)
    server.send_close(1000)
    with pytest.raises(InvalidState, match="CLOSING"):
        server.send_preencoded(wire)


def test_send_close_none_sends_an_empty_close() -> None:
    client = make(Side.CLIENT)
    client.send_close(None)
    assert written_frames(client) == [Frame(CLOSE, b"")]
    assert client.close_sent == Close(1005, "")


def test_send_close_default_is_empty() -> None:
    server = make()
    server.send_close()
    assert server.data_to_send() == [b"\x88\x00"]


@pytest.mark.parametrize(
    ("code", "reason", "match"),
    [
        (None, "reason", "without code"),
        (1005, "", "invalid close code 1005"),
        (1006, "", "invalid close code 1006"),
        (999, "", "invalid close code"),
        (5000, "", "invalid close code"),
        (1000, "r" * 124, "123 bytes"),
    ],
)
def test_send_close_invalid(code: int | None, reason: str, match: str) -> None:
    server = make()
    with pytest.raises(ProtocolError, match=match):
        server.send_close(code, reason)
    assert server.state is State.OPEN
    assert server.data_to_send() == []


def test_send_close_reason_of_123_bytes() -> None:
    server = make()
    server.send_close(1000, "r" * 123)
    assert written_close(server) == Close(1000, "r" * 123)


# fail() (RFC 6455 section 7.1.7).


@pytest.mark.parametrize("side", list(Side))
def test_fail(side: Side) -> None:
    proto = make(side)
    proto.fail(1011, "boom")
    assert_failed(proto, 1011)
    assert proto.failure is None
    assert proto.close_transport is True  # on the client side too
    feed(proto, frame_bytes(TEXT, b"ignored", to=side), close_bytes(1000, to=side))
    assert proto.events_received() == []
    assert proto.data_to_send() == []
    proto.fail(1002)  # a second failure sends nothing more
    assert proto.data_to_send() == []
    proto.receive_eof()
    exc = proto.close_exc
    assert type(exc) is ConnectionClosedError
    assert exc.sent == Close(1011, "boom") and exc.rcvd is None


def test_fail_after_close_sent_does_not_send_another_close() -> None:
    server = make()
    server.send_close(1000)
    server.data_to_send()
    server.fail(1011)
    assert server.data_to_send() == []
    assert server.close_transport is True


def test_fail_truncates_a_long_reason() -> None:
    server = make()
    server.fail(1008, "é" * 100)
    close = assert_failed(server, 1008)
    assert len(close.reason.encode()) <= 123
    assert close.reason == "é" * 60 + "..."


def test_failure_kept_as_cause_of_close_exc() -> None:
    server = make()
    feed(server, raw_frame(0x3))
    original = server.failure
    assert isinstance(original, ProtocolError)
    feed(server, raw_frame(0x4), b"\xff" * 10)
    assert server.failure is original
    server.receive_eof()
    assert server.close_exc.__cause__ is original


# Failures: the exact close code on the wire.


FAILURES_1002 = [
    pytest.param([raw_frame(TEXT, b"x", rsv=4)], id="rsv1-without-extension"),
    pytest.param([raw_frame(TEXT, b"x", rsv=2)], id="rsv2"),
    pytest.param([raw_frame(BINARY, b"x", rsv=1)], id="rsv3"),
    pytest.param([raw_frame(PING, b"x", rsv=6)], id="rsv-on-ping"),
    pytest.param([raw_frame(CONT, b"x")], id="unexpected-continuation"),
    pytest.param([raw_frame(CONT, b"x", fin=False)], id="unexpected-continuation-not-fin"),
    pytest.param(
        [raw_frame(TEXT, b"a", fin=False), raw_frame(TEXT, b"b")], id="expected-continuation"
    ),
    pytest.param(
        [raw_frame(TEXT, b"a", fin=False), raw_frame(BINARY, b"b", fin=False)],
        id="expected-continuation-binary",
    ),
    *(pytest.param([raw_frame(op)], id=f"reserved-opcode-{op:#x}") for op in (3, 7, 0xB, 0xF)),
    pytest.param([raw_frame(TEXT, b"x", masked=False)], id="unmasked-client-frame"),
    pytest.param([close_bytes(1006)], id="bad-close-code-1006"),
    pytest.param([close_bytes(999)], id="bad-close-code-999"),
    pytest.param([raw_frame(CLOSE, b"\x03")], id="1-byte-close-payload"),
    pytest.param([raw_frame(PING, b"x", fin=False)], id="fragmented-ping"),
    pytest.param([raw_frame(CLOSE, b"\x03\xe8", fin=False)], id="fragmented-close"),
    pytest.param([raw_frame(PONG, b"x" * 126)], id="oversized-pong"),
    pytest.param([raw_frame(CLOSE, b"\x03\xe8" + b"r" * 124)], id="oversized-close"),
    pytest.param([b"\x82\xff\x80" + b"\x00" * 11], id="64-bit-length-msb-set"),
]


@pytest.mark.parametrize("chunks", FAILURES_1002)
def test_protocol_error_is_1002(chunks: list[bytes]) -> None:
    server = make()
    events = feed(server, *chunks)
    assert not any(isinstance(e, (TextMessage, BinaryMessage)) for e in events)
    assert_failed(server, 1002, ProtocolError)


def test_masked_frame_to_client_is_1002() -> None:
    client = make(Side.CLIENT)
    feed(client, raw_frame(TEXT, b"x", to=Side.CLIENT, masked=True))
    assert_failed(client, 1002, ProtocolError)


def test_invalid_close_code_received_while_closing() -> None:
    server = make()
    server.send_close(1000)
    server.data_to_send()
    feed(server, close_bytes(1004))
    assert isinstance(server.failure, ProtocolError)
    assert server.close_rcvd is None
    assert server.data_to_send() == []


@pytest.mark.parametrize("side", list(Side))
def test_failure_stops_processing_the_rest_of_the_chunk(side: Side) -> None:
    proto = make(side)
    events = feed(
        proto,
        frame_bytes(TEXT, b"before", to=side)
        + raw_frame(TEXT, b"x", rsv=4, to=side)
        + frame_bytes(PING, b"after", to=side)
        + frame_bytes(TEXT, b"after", to=side),
    )
    assert events == [TextMessage("before")]
    assert_failed(proto, 1002, ProtocolError)  # and no pong
    assert proto.buffered_input == 0
    assert feed(proto, frame_bytes(TEXT, b"later", to=side)) == []
    assert proto.data_to_send() == []


def test_invalid_utf8_single_frame_is_1007() -> None:
    server = make()
    assert feed(server, frame_bytes(TEXT, INVALID_UTF8_EDITED)) == []
    close = assert_failed(server, 1007, UnicodeDecodeError)
    assert "position 11" in close.reason


def test_invalid_utf8_in_fragmented_message_fails_at_the_first_bad_fragment() -> None:
    server = make()
    assert feed(server, frame_bytes(TEXT, KOSME, fin=False)) == []
    assert server.data_to_send() == []
    # The bad fragment is not the final one: the close must follow it at once.
    assert feed(server, frame_bytes(CONT, b"\xf4\x90\x80\x80", fin=False)) == []
    assert_failed(server, 1007, UnicodeDecodeError)
    assert feed(server, frame_bytes(CONT, b"edited")) == []
    assert server.data_to_send() == []


def test_invalid_utf8_in_close_reason_is_1007() -> None:
    server = make()
    assert (
        feed(server, close_bytes(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed")) == []
    )
    assert_failed(server, 1007, UnicodeDecodeError)
    assert server.close_rcvd is None


def test_too_big_single_frame_is_1009_from_the_header() -> None:
    server = make(max_size=10)
    header = raw_frame(BINARY, b"x" * 11)[:2]
    feed(server, header)  # the payload has not arrived
    close = assert_failed(server, 1009, PayloadTooBig)
    assert "11 bytes" in close.reason


def test_frame_of_exactly_max_size() -> None:
    server = make(max_size=10)
    assert feed(server, frame_bytes(TEXT, b"x" * 10)) == [TextMessage("x" * 10)]


@pytest.mark.parametrize("stream", [False, True])
def test_too_big_fragmented_message_is_1009(stream: bool) -> None:
    server = make(max_size=10, stream_fragments=stream)
    feed(server, frame_bytes(BINARY, b"x" * 6, fin=False))
    assert server.buffered_input == 6
    assert server.data_to_send() == []
    feed(server, frame_bytes(CONT, b"x" * 4, fin=False))  # exactly 10 so far: fine
    assert server.data_to_send() == []
    # 11: over. The fragment is refused from its header, before its payload.
    feed(server, frame_bytes(CONT, b"x", fin=False)[:2])
    close = assert_failed(server, 1009, PayloadTooBig)
    assert "exceeds limit of 0 bytes" in close.reason


def test_max_size_restored_after_a_fragmented_message() -> None:
    server = make(max_size=10)
    events = feed(
        server,
        frame_bytes(TEXT, b"x" * 9, fin=False),
        frame_bytes(PING, b"ping payload"),  # control frames aren't bound by what is left
        frame_bytes(CONT, b"y"),
        frame_bytes(BINARY, b"z" * 10),
        frame_bytes(BINARY, b"z" * 5, fin=False),
        frame_bytes(CONT, b"z" * 5),
    )
    assert events == [
        PingReceived(b"ping payload"),
        TextMessage("x" * 9 + "y"),
        BinaryMessage(b"z" * 10),
        BinaryMessage(b"z" * 10),
    ]
    assert server.failure is None


def test_too_big_fragmented_message_with_an_extension_is_1009() -> None:
    # With an extension, frames may be a little larger on the wire than decoded
    # (see _frame_limit): the message total decides.
    server = make(extensions=[RSV1Extension()], max_size=10)
    feed(server, frame_bytes(BINARY, b"x" * 6, fin=False, rsv1=True))
    assert server.data_to_send() == []
    feed(server, frame_bytes(CONT, b"x" * 5, fin=False))
    close = assert_failed(server, 1009, PayloadTooBig)
    assert close.reason == "message of 11 bytes exceeds limit of 10 bytes"


def test_max_size_none() -> None:
    server = make(max_size=None)
    assert feed(server, frame_bytes(BINARY, b"x" * 2**17, fin=False), frame_bytes(CONT, b"y")) == [
        BinaryMessage(b"x" * 2**17 + b"y")
    ]


def test_control_frames_are_not_limited_by_max_size() -> None:
    server = make(max_size=1)
    assert feed(server, frame_bytes(PING, b"ping")) == [PingReceived(b"ping")]
    assert feed(server, close_bytes(1000, b"bye")) == [CloseReceived(1000, "bye")]


def deflate() -> PerMessageDeflate:
    return PerMessageDeflate(False, False, 15, 15)


def compressed_frame(payload: bytes, *, fin: bool = True, opcode: Opcode = BINARY) -> bytes:
    """A client's compressed data frame, as permessage-deflate writes it."""
    encoded = deflate().encode(Frame(opcode, payload, fin))
    assert encoded.rsv1
    return serialize_frame(encoded, mask=True)


def fast_and_general_path_loggers() -> tuple[logging.Logger, logging.Logger]:
    """A logger at INFO (the protocol takes its fast paths) and one at DEBUG
    (it takes the general path, which logs each frame)."""
    quiet = logging.getLogger("test.fast")
    quiet.setLevel(logging.INFO)
    verbose = logging.getLogger("test.slow")
    verbose.setLevel(logging.DEBUG)
    return quiet, verbose


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (compressed_frame("héllo ".encode() * 50, opcode=Opcode.TEXT), TextMessage("héllo " * 50)),
        (compressed_frame(b"\x00\x01" * 300), BinaryMessage(b"\x00\x01" * 300)),
        (compressed_frame(b"ok" * 100 + b"\xff", opcode=Opcode.TEXT), 1007),
        (compressed_frame(b"a" * 5000), 1009),  # max_size 4096 below
        (serialize_frame(Frame(BINARY, b"\xff" * 40, rsv1=True), mask=True), 1002),
    ],
    ids=["text", "binary", "invalid-utf8", "too-big", "corrupt"],
)
def test_compressed_one_frame_message_fast_path_is_the_slow_path(
    wire: bytes, expected: Event | int
) -> None:
    """A whole compressed message in one frame takes the protocol's fast path,
    or the general one when a debug logger is on: same message, same failure."""
    quiet, verbose = fast_and_general_path_loggers()
    outcomes = []
    for logger in (quiet, verbose):
        server = make(extensions=[deflate()], max_size=4096, logger=logger)
        assert server.debug is (logger is verbose)
        events = feed(server, wire)
        if isinstance(expected, int):
            assert events == []
            outcomes.append(assert_failed(server, expected))
        else:
            assert events == [expected]
            outcomes.append(events)
    assert outcomes[0] == outcomes[1]


def test_compressed_send_fast_path_is_the_slow_path() -> None:
    """Sending with permessage-deflate alone skips building frames unless a
    debug logger is on: the same bytes either way, for short (uncompressed),
    compressed, large and fragmented messages, and the same errors."""
    quiet, verbose = fast_and_general_path_loggers()
    wires = []
    for logger in (quiet, verbose):
        client = make(Side.CLIENT, extensions=[deflate()], logger=logger)
        assert client.debug is (logger is verbose)
        client.send_text(b"hi")  # under the threshold: not compressed
        client.send_text("héllo " * 40)
        client.send_binary(random.Random(7).randbytes(40_000))  # header and payload apart
        client.send_text(b"part one, ", fin=False)
        client.send_continuation(b"part two", fin=True)
        with pytest.raises(InvalidState):
            client.send_continuation(b"no message in progress", fin=True)
        wires.append(b"".join(client.data_to_send()))
    frames = []
    for wire in wires:  # masked with random keys: compare the frames
        parser = FrameParser(mask=True)
        parser.feed(wire)
        frames.append(list(iter(parser.parse, None)))
    assert len(frames[0]) == 5
    assert frames[0] == frames[1]
    # And a server reads them back.
    server = make(extensions=[deflate()])
    server.receive_data(wires[0])
    assert server.events_received()[:2] == [TextMessage("hi"), TextMessage("héllo " * 40)]


@pytest.mark.parametrize("rsv", [0, 4], ids=["plain", "rsv1"])
def test_huge_declared_length_with_deflate_is_1009_from_the_header(rsv: int) -> None:
    """Issue 13, item 1: with permessage-deflate negotiated, a header announcing
    2**62 bytes was accepted and its payload buffered without bound."""
    server = make(extensions=[deflate()], max_size=2**20)
    header = struct.pack("!BBQ", 0x82 | (rsv << 4), 0x80 | 127, 2**62) + b"\x00" * 4
    feed(server, header, b"x" * 65536)
    close = assert_failed(server, 1009, PayloadTooBig)
    assert str(2**62) in close.reason
    assert server.buffered_input == 0


def test_frame_limit_with_deflate_allows_deflate_expansion_only() -> None:
    max_size = 2**16
    limit = max_size + max_size // 8 + 64
    # One byte over what permessage-deflate could need for max_size: refused
    # from the header, before the payload arrives.
    server = make(extensions=[deflate()], max_size=max_size)
    feed(server, raw_frame(BINARY, b"x" * (limit + 1), rsv=4)[:14])
    assert_failed(server, 1009, PayloadTooBig)
    # Incompressible data of exactly max_size compresses to a little more than
    # max_size: accepted, and delivered whole.
    payload = random.Random(13).randbytes(max_size)
    frame = compressed_frame(payload)
    assert max_size < len(frame) - 14 <= limit
    server = make(extensions=[deflate()], max_size=max_size)
    assert feed(server, frame) == [BinaryMessage(payload)]
    # An uncompressed frame over max_size is still refused, once decoded.
    server = make(extensions=[deflate()], max_size=max_size)
    feed(server, frame_bytes(BINARY, b"x" * (max_size + 1)))
    assert_failed(server, 1009, PayloadTooBig)


def test_continuation_frames_with_deflate_are_bounded_by_what_is_left() -> None:
    server = make(extensions=[deflate()], max_size=1000)
    feed(server, frame_bytes(BINARY, b"x" * 900, fin=False))
    assert server.data_to_send() == []
    left = 100
    feed(server, raw_frame(CONT, b"y" * (left + left // 8 + 65), fin=False)[:8])
    assert_failed(server, 1009, PayloadTooBig)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("extensions", [False, True], ids=["plain", "deflate"])
def test_too_many_fragments_is_1009(stream: bool, extensions: bool) -> None:
    """Issue 13, item 3: empty continuation frames add nothing toward max_size."""
    server = make(
        max_fragments=100,
        stream_fragments=stream,
        extensions=[deflate()] if extensions else [],
    )
    events = feed(
        server, frame_bytes(TEXT, b"a", fin=False), *[frame_bytes(CONT, b"", fin=False)] * 98
    )
    events += feed(server, frame_bytes(CONT, b"z"))  # exactly 100 frames: fine
    if stream:
        assert "".join(e.data for e in events if isinstance(e, Fragment)) == "az"  # type: ignore[misc]
    else:
        assert events == [TextMessage("az")]
    assert server.failure is None
    feed(server, frame_bytes(BINARY, b"", fin=False), *[frame_bytes(CONT, b"", fin=False)] * 100)
    close = assert_failed(server, 1009, PayloadTooBig)
    assert close.reason == "message of more than 100 fragments"


def test_max_fragments_none_and_default() -> None:
    assert make().max_fragments == defaults.MAX_FRAGMENTS
    server = make(max_fragments=None)
    frames = [frame_bytes(CONT, b"", fin=False)] * (defaults.MAX_FRAGMENTS + 10)
    events = feed(server, frame_bytes(BINARY, b"a", fin=False), *frames, frame_bytes(CONT, b"b"))
    assert events == [BinaryMessage(b"ab")]


def test_small_fragments_cost_their_bytes() -> None:
    """Issue 13, item 3: 2-byte fragments cost about 32 times their size when each
    was kept as an object; they go into one buffer instead."""
    server = make(max_size=None, max_fragments=None)
    count = 20_000
    fragments = b"".join([frame_bytes(CONT, b"ab", fin=False)] * count)
    tracemalloc.start()
    try:
        feed(server, frame_bytes(BINARY, b"", fin=False))
        before = tracemalloc.get_traced_memory()[0]
        feed(server, fragments)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert server.buffered_input == 2 * count
    assert held < 4 * 2 * count, held  # a bytearray's slack, not 32x
    assert feed(server, frame_bytes(CONT, b"")) == [BinaryMessage(b"ab" * count)]


@pytest.mark.parametrize("end", ["eof", "failure"])
def test_discarded_input_is_not_copied(end: str) -> None:
    """Issue 13, item 4: on EOF, failure and close, the unparsed buffer was copied
    twice just to be dropped (512 MiB: 2.2 s and 1.5 GiB)."""
    server = make(max_size=None)
    size = 16 * 2**20
    feed(server, raw_frame(BINARY, b"x" * (size + 1))[:-1])  # one byte short
    tracemalloc.start()
    try:
        if end == "eof":
            server.receive_eof()
        else:
            server.fail(1008)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert server.buffered_input == 0
    assert peak < size // 16, peak


def test_input_after_a_close_frame_is_dropped_without_copies() -> None:
    server = make(max_size=None)
    size = 16 * 2**20
    data = close_bytes(1000) + raw_frame(BINARY, b"x" * (size + 1))[:-1]
    tracemalloc.start()
    try:
        server.receive_data(data)  # the parser's own copy of data, then nothing
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert server.events_received() == [CloseReceived(1000, "")]
    assert server.buffered_input == 0
    assert peak < size * 1.5, peak


def test_long_failure_reason_is_truncated_on_the_wire() -> None:
    server = make()
    # A reserved opcode error has a short reason; force a long one via fail().
    server.fail(1002, "x" * 500)
    close = assert_failed(server, 1002)
    assert close.reason == "x" * 120 + "..."


# Fail fast inside a frame: a text payload is validated as it arrives (Autobahn
# 6.4.3 and 6.4.4; issue 13, item 7), and what a header says is checked before
# its payload is complete.


@pytest.mark.parametrize("stream", [False, True])
def test_autobahn_6_4_3_invalid_utf8_refused_before_the_frame_ends(stream: bool) -> None:
    """6.4.3: a text frame sent in three chops, the second one invalid: 1007 comes
    right after the second chop, the third is never needed."""
    server = make(stream_fragments=stream)
    payload = KOSME + b"\xf4\x90\x80\x80" + b"edited"
    wire = raw_frame(TEXT, payload)
    header = 2 + 4
    assert feed(server, wire[: header + len(KOSME)]) == []
    assert server.data_to_send() == []
    assert feed(server, wire[header + len(KOSME) : header + len(KOSME) + 4]) == []
    close = assert_failed(server, 1007, UnicodeDecodeError)
    assert "invalid" in close.reason
    assert feed(server, wire[header + len(KOSME) + 4 :]) == []  # the rest: dropped
    assert server.data_to_send() == []


def test_autobahn_6_4_4_refused_at_the_invalid_byte() -> None:
    """6.4.4: the second chop is only the octet that makes the payload invalid."""
    server = make()
    payload = KOSME + b"\xf4\x90\x80\x80" + b"edited"
    wire = raw_frame(TEXT, payload)
    header = 2 + 4
    cut = header + len(KOSME) + 1  # \xf4 alone is a valid start
    assert feed(server, wire[:cut]) == []
    assert server.data_to_send() == []
    assert feed(server, wire[cut : cut + 1]) == []  # \x90: above U+10FFFF
    assert_failed(server, 1007, UnicodeDecodeError)


def test_large_text_frame_with_a_bad_byte_early_fails_without_the_rest() -> None:
    """A 1 MiB text frame whose first KiB is invalid: refused after that KiB, with
    a megabyte never buffered."""
    server = make()
    payload = b"a" * 1000 + b"\xff" + b"b" * (2**20 - 1001)
    wire = raw_frame(TEXT, payload)
    feed(server, wire[:2000])
    assert_failed(server, 1007, UnicodeDecodeError)
    assert server.buffered_input == 0


def test_invalid_utf8_inside_a_continuation_frame_fails_at_once() -> None:
    """6.4.1/6.4.2 with the second fragment itself cut: 1007 inside it."""
    server = make()
    feed(server, raw_frame(TEXT, KOSME, fin=False))
    wire = raw_frame(CONT, b"ok\xed\xa0\x80" + b"x" * 200, fin=False)
    assert feed(server, wire[: 2 + 2 + 4 + 6]) == []  # header, then "ok", U+D800, "x"
    assert_failed(server, 1007, UnicodeDecodeError)


@pytest.mark.parametrize("chop", [1, 2, 3, 7])
@pytest.mark.parametrize("stream", [False, True])
def test_valid_text_in_pieces_split_anywhere(chop: int, stream: bool) -> None:
    """Sequences cut between pieces of a frame and between frames stay valid."""
    server = make(stream_fragments=stream)
    text = "κόσμε 😀 ☃ " * 20
    data = text.encode()
    third = len(data) // 3 + 1  # cuts inside sequences
    chunks = [
        raw_frame(TEXT, data[:third], fin=False),
        raw_frame(CONT, data[third : 2 * third], fin=False),
        raw_frame(CONT, data[2 * third :]),
    ]
    events = feed(server, *chunks, chop=chop)
    if stream:
        assert all(isinstance(event, Fragment) for event in events)
        assert "".join(str(event.data) for event in events) == text  # type: ignore[union-attr]
    else:
        assert events == [TextMessage(text)]
    assert server.data_to_send() == []
    assert server.failure is None
    # And a single frame in pieces.
    assert feed(server, raw_frame(TEXT, data), chop=chop) == (
        [Fragment(text, True)] if stream else [TextMessage(text)]
    )


def test_sequence_cut_at_the_end_of_a_message_in_pieces_fails() -> None:
    server = make()
    wire = raw_frame(TEXT, b"abc\xe2\x98")
    assert feed(server, wire, chop=1) == []
    assert_failed(server, 1007, UnicodeDecodeError)


def test_binary_payload_in_pieces_is_not_validated() -> None:
    server = make()
    assert feed(server, raw_frame(BINARY, b"\xff" * 1000), chop=100) == [
        BinaryMessage(b"\xff" * 1000)
    ]
    feed(server, raw_frame(BINARY, b"\xff", fin=False))
    assert feed(server, raw_frame(CONT, b"\xfe" * 300), chop=50) == [
        BinaryMessage(b"\xff" + b"\xfe" * 300)
    ]


def test_compressed_text_in_pieces_is_validated_once_inflated() -> None:
    """A compressed payload can't be validated before it is inflated: no 1007 for
    its bytes, and its text arrives whole."""
    server = make(extensions=[deflate()])
    rng = random.Random(2)
    text = "".join(rng.choice("κόσμε😀☃abc ") for _ in range(3000))
    encoded = deflate().encode(Frame(TEXT, text.encode()))
    wire = serialize_frame(encoded, mask=True)
    with pytest.raises(UnicodeDecodeError):
        encoded.data.decode()  # as it is on the wire, the payload isn't UTF-8
    assert feed(server, wire, chop=500) == [TextMessage(text)]
    assert server.failure is None


@pytest.mark.parametrize(
    ("first", "second", "match"),
    [
        (raw_frame(TEXT, b"a", fin=False), raw_frame(BINARY, b"b" * 300), "continuation"),
        (b"", raw_frame(CONT, b"c" * 300), "without a message"),
        (b"", raw_frame(BINARY, b"d" * 300, rsv=4), "reserved bits"),
    ],
    ids=["new-message-while-fragmenting", "continuation-without-message", "rsv1"],
)
def test_header_errors_fail_before_the_payload_completes(
    first: bytes, second: bytes, match: str
) -> None:
    server = make()
    feed(server, first)
    assert feed(server, second[:20]) == []  # header and the start of the payload
    close = assert_failed(server, 1002, ProtocolError)
    assert match in close.reason


def test_receive_buffer_reads_a_large_payload_in_place() -> None:
    """The I/O layer's path: bytes read straight into the payload's own buffer."""
    server = make(max_size=None)
    payload = random.Random(1).randbytes(300_000)
    wire = raw_frame(BINARY, payload)
    assert server.receive_buffer(1 << 20) is None  # nothing pending
    server.receive_data(wire[:1000])
    pos = 1000
    while (view := server.receive_buffer(65536)) is not None:
        assert server.receiving_into
        size = min(len(view), len(wire) - pos)
        view[:size] = wire[pos : pos + size]
        server.received_into(size)
        assert not server.receiving_into
        pos += size
        if pos == len(wire):
            break
        assert server.buffered_input == pos
    assert pos > 1000 if frames.SPEEDUPS else pos == 1000
    if pos < len(wire):
        server.receive_data(wire[pos:])
    assert server.events_received() == [BinaryMessage(payload)]
    assert server.buffered_input == 0


def test_received_into_returns_the_bytes_after_the_payload() -> None:
    """With ``ahead``, a read that ends a payload may bring the next frame's
    header: received_into() completes the message and returns those bytes,
    unparsed, for the I/O layer to feed after handing the message over."""
    server = make(max_size=None)
    payload = random.Random(2).randbytes(100_000)
    wire = raw_frame(BINARY, payload) + raw_frame(TEXT, b"after" * 10)
    server.receive_data(wire[:1000])
    view = server.receive_buffer(1 << 20, HEADER_MAX)
    if view is None:
        assert not frames.SPEEDUPS
        return
    view[:] = wire[1000 : 1000 + len(view)]
    beyond = server.received_into(len(view))
    assert len(beyond) == HEADER_MAX
    assert server.events_received() == [BinaryMessage(payload)]
    assert server.buffered_input == 0
    server.receive_data(beyond + wire[1000 + len(view) :])
    assert server.events_received() == [TextMessage("after" * 10)]


def test_receive_buffer_validates_text_read_in_place() -> None:
    server = make()
    payload = b"a" * 50_000 + b"\xc0" + b"a" * 50_000
    wire = raw_frame(TEXT, payload)
    server.receive_data(wire[:100])
    view = server.receive_buffer(60_000)
    if view is None:
        assert not frames.SPEEDUPS
        return
    view[:] = wire[100 : 100 + len(view)]
    server.received_into(len(view))
    assert_failed(server, 1007, UnicodeDecodeError)
    assert server.receive_buffer(60_000) is None  # failed: nothing more is read
    server.received_into(10)  # ignored after a failure
    assert server.data_to_send() == []


def test_received_into_misuse_is_an_internal_error() -> None:
    server = make()
    server.received_into(10)  # nothing was lent
    assert_failed(server, 1011, ValueError)


@pytest.mark.parametrize("side", list(Side))
def test_large_payload_sent_after_its_header_without_a_copy(side: Side) -> None:
    proto = make(side)
    payload = bytes(frames.SEND_JOIN_BELOW)
    proto.send_binary(payload)
    output = proto.data_to_send()
    assert len(output) == 2
    if side is Side.SERVER:
        assert output[1] is payload
    else:
        assert output[1] != payload  # masked: a copy
    peer = make(Side.CLIENT if side is Side.SERVER else Side.SERVER)
    assert feed(peer, *output) == [BinaryMessage(payload)]
    proto.send_text("x" * 100)
    assert len(proto.data_to_send()) == 1


@pytest.mark.parametrize(
    ("wire", "event"),
    [
        (frame_bytes(TEXT, "κόσμε".encode()), TextMessage("κόσμε")),
        (frame_bytes(BINARY, b"\x00\xff"), BinaryMessage(b"\x00\xff")),
    ],
)
def test_fast_path_events_are_the_dataclasses(wire: bytes, event: Event) -> None:
    """Whole messages take a path that builds their events without __init__: they
    are the same frozen, equal, hashable objects."""
    (received,) = feed(make(), wire)
    assert type(received) is type(event)
    assert received == event
    assert hash(received) == hash(event)
    assert repr(received) == repr(event)
    with pytest.raises(FrozenInstanceError):
        received.data = b"changed"  # type: ignore[misc]


# Buffers.


def test_buffered_input() -> None:
    server = make()
    assert server.buffered_input == 0
    wire = frame_bytes(TEXT, b"Hello")
    feed(server, wire[:4])
    assert server.buffered_input == 4
    assert feed(server, wire[4:]) == [TextMessage("Hello")]
    assert server.buffered_input == 0
    feed(server, frame_bytes(BINARY, b"abc", fin=False), frame_bytes(CONT, b"de", fin=False))
    assert server.buffered_input == 5
    feed(server, frame_bytes(CONT, b""))
    assert server.buffered_input == 0


def test_events_and_data_are_returned_once() -> None:
    server = make()
    feed(server, frame_bytes(PING, b"x"))
    assert server.data_to_send() != []
    assert server.data_to_send() == []
    assert server.events_received() == []


# Debug logging and extensions.


def test_debug_logging() -> None:
    logger = logging.getLogger("wsharbor.test.debug")
    logger.setLevel(logging.DEBUG)
    handler = ListHandler()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        server = make(logger=logger)
        assert server.debug is True
        feed(server, frame_bytes(TEXT, b"hi"))
        server.send_text("yo")
        feed(server, raw_frame(0x3))
        server.receive_eof()
    finally:
        logger.removeHandler(handler)
    messages = [record.getMessage() for record in handler.records]
    assert "< TEXT [F] 2 bytes" in messages
    assert "> TEXT [F] 2 bytes" in messages
    assert "! failing connection with code 1002" in messages
    assert "= connection is CLOSED" in messages


def test_default_logger_and_no_debug() -> None:
    server = make()
    assert server.logger.name == "wsharbor.server"
    assert make(Side.CLIENT).logger.name == "wsharbor.client"


def test_extension_allows_reserved_bit_and_gets_max_size() -> None:
    client_ext, server_ext = RSV1Extension(), RSV1Extension()
    client = make(Side.CLIENT, extensions=[client_ext], max_size=100)
    server = make(Side.SERVER, extensions=[server_ext], max_size=100)
    client.send_text("ab", fin=False)
    client.send_continuation("cd", fin=True)
    client.send_ping(b"p")
    client.send_binary(b"whole")
    frames = written_frames(client)
    assert [f.rsv1 for f in frames] == [True, False, False, True]
    client.send_text("ab", fin=False)
    client.send_continuation("cd", fin=True)
    client.send_ping(b"p")
    client.send_binary(b"whole")
    transfer(client, server)
    assert server.events_received() == [
        TextMessage("abcd"),
        PingReceived(b"p"),
        BinaryMessage(b"whole"),
    ]
    # The extension is told how much the message may still grow.
    assert [size for _, size in server_ext.decoded] == [100, 98, None, 100]


def test_extension_frame_bigger_than_max_size_after_decoding() -> None:
    # With an extension, the parser can't bound frames (they may be compressed):
    # the limit applies to the decoded payload.
    server = make(extensions=[RSV1Extension()], max_size=4)
    feed(server, frame_bytes(TEXT, b"12345", rsv1=True))
    assert_failed(server, 1009, PayloadTooBig)


def test_unexpected_exception_is_1011() -> None:
    server = make(extensions=[RSV1Extension(fail=True)])
    feed(server, frame_bytes(TEXT, b"x"))
    close = assert_failed(server, 1011, RuntimeError)
    assert close.reason == "internal error"


# The Autobahn testsuite, sections 1-7 (and 9: limits), as a checklist.
#
# Each case is (frames the peer sends, chunk size or None, events expected,
# frames expected back, close code of a failure or None).


def _frames(*specs: tuple[int, bytes] | tuple[int, bytes, bool]) -> list[bytes]:
    out = []
    for spec in specs:
        opcode, data, *rest = spec
        out.append(raw_frame(opcode, data, fin=rest[0] if rest else True))
    return out


def run_case(
    chunks: list[bytes], chop: int | None, max_size: int | None = 2**20
) -> tuple[list[Event], list[Frame], WebSocketProtocol]:
    server = make(max_size=max_size)
    events = feed(server, *chunks, chop=chop)
    return events, written_frames(server), server


CHOPS = [None, 1, 997]


@pytest.mark.parametrize("chop", CHOPS)
@pytest.mark.parametrize("opcode", [TEXT, BINARY])
@pytest.mark.parametrize("length", [0, 125, 126, 127, 128, 65535, 65536])
def test_autobahn_1_framing(length: int, opcode: Opcode, chop: int | None) -> None:
    """1.1.x (text) and 1.2.x (binary): payload lengths around each boundary, chopped."""
    if chop == 1 and length > 200:
        chop = 101  # keep it fast; 1-byte chops are covered by the short cases
    payload = b"*" * length
    events, written, server = run_case([raw_frame(opcode, payload)], chop)
    expected = TextMessage("*" * length) if opcode is TEXT else BinaryMessage(payload)
    assert events == [expected]
    assert written == []
    assert server.failure is None


AUTOBAHN_2 = [
    ("2.1 empty ping", _frames((PING, b"")), [PingReceived(b"")], [Frame(PONG, b"")]),
    ("2.2 text ping", _frames((PING, b"Hello, world!")), None, None),
    ("2.3 binary ping", _frames((PING, b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff")), None, None),
    ("2.4 125-byte ping", _frames((PING, b"\xfe" * 125)), None, None),
    ("2.7 unsolicited empty pong", _frames((PONG, b"")), [PongReceived(b"")], []),
    ("2.8 unsolicited pong", _frames((PONG, b"unsolicited")), [PongReceived(b"unsolicited")], []),
    (
        "2.9 pong then ping",
        _frames((PONG, b"unsolicited"), (PING, b"ping")),
        [PongReceived(b"unsolicited"), PingReceived(b"ping")],
        [Frame(PONG, b"ping")],
    ),
    (
        "2.10 ten pings",
        _frames(*((PING, f"payload-{i}".encode()) for i in range(10))),
        [PingReceived(f"payload-{i}".encode()) for i in range(10)],
        [Frame(PONG, f"payload-{i}".encode()) for i in range(10)],
    ),
]


@pytest.mark.parametrize("chop", CHOPS)
@pytest.mark.parametrize(
    ("chunks", "events", "written"), [pytest.param(*c[1:], id=c[0]) for c in AUTOBAHN_2]
)
def test_autobahn_2_pings_pongs(
    chunks: list[bytes], events: list[Event] | None, written: list[Frame] | None, chop: int | None
) -> None:
    if events is None:  # a ping answered by a pong with the same payload
        parser = FrameParser(mask=True)
        parser.feed(chunks[0])
        payload = parser.parse().data  # type: ignore[union-attr]
        events, written = [PingReceived(payload)], [Frame(PONG, payload)]
    got_events, got_written, server = run_case(chunks, chop)
    assert got_events == events
    assert got_written == written
    assert server.failure is None


@pytest.mark.parametrize("chop", CHOPS)
@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(_frames((PING, b"\xfe" * 126)), id="2.5 126-byte ping"),
        pytest.param([raw_frame(PING, b"", fin=False)], id="fragmented ping"),
    ],
)
def test_autobahn_2_invalid_pings(chunks: list[bytes], chop: int | None) -> None:
    events, written, _ = run_case(chunks, chop)
    assert events == []
    assert [f.opcode for f in written] == [CLOSE]
    assert Close.parse(written[0].data).code == 1002


@pytest.mark.parametrize("chop", CHOPS)
@pytest.mark.parametrize(
    ("opcode", "rsv"),
    [
        pytest.param(TEXT, 4, id="3.1 text rsv1"),
        pytest.param(TEXT, 2, id="3.2 text rsv2"),
        pytest.param(TEXT, 6, id="3.3 text rsv1+rsv2"),
        pytest.param(TEXT, 1, id="3.4 text rsv3"),
        pytest.param(BINARY, 5, id="3.5 binary rsv1+rsv3"),
        pytest.param(PING, 3, id="3.6 ping rsv2+rsv3"),
        pytest.param(CLOSE, 7, id="3.7 close rsv1+rsv2+rsv3"),
    ],
)
def test_autobahn_3_reserved_bits(opcode: Opcode, rsv: int, chop: int | None) -> None:
    """3.x: a valid text message, the frame with reserved bits, then a ping: 1002,
    the text is delivered and the ping is neither reported nor answered."""
    payload = b"\x03\xe8" if opcode is CLOSE else b"Hello, world!"
    chunks = [
        raw_frame(TEXT, b"small"),
        raw_frame(opcode, payload, rsv=rsv),
        raw_frame(PING, b""),
    ]
    events, written, _ = run_case(chunks, chop)
    assert events == [TextMessage("small")]
    assert [f.opcode for f in written] == [CLOSE]
    assert Close.parse(written[0].data).code == 1002


@pytest.mark.parametrize("chop", CHOPS)
@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
@pytest.mark.parametrize("payload", [b"", b"reserved opcode payload"])
def test_autobahn_4_reserved_opcodes(opcode: int, payload: bytes, chop: int | None) -> None:
    """4.1.x (non-control) and 4.2.x (control): 1002 after the preceding message."""
    chunks = [raw_frame(TEXT, b"small"), raw_frame(opcode, payload), raw_frame(PING, b"")]
    events, written, _ = run_case(chunks, chop)
    assert events == [TextMessage("small")]
    assert [f.opcode for f in written] == [CLOSE]
    assert Close.parse(written[0].data).code == 1002


AUTOBAHN_5_VALID = [
    pytest.param(
        _frames((TEXT, b"fragment1", False), (CONT, b"fragment2")),
        [TextMessage("fragment1fragment2")],
        [],
        id="5.3-5.5 text in 2 fragments",
    ),
    pytest.param(
        _frames((TEXT, b"fragment1", False), (PING, b"ping payload"), (CONT, b"fragment2")),
        [PingReceived(b"ping payload"), TextMessage("fragment1fragment2")],
        [Frame(PONG, b"ping payload")],
        id="5.6-5.8 ping between fragments",
    ),
    pytest.param(
        _frames(
            (TEXT, b"fragment1", False),
            (CONT, b"fragment2", False),
            (PING, b"pongme 1!"),
            (CONT, b"fragment3", False),
            (PING, b"pongme 2!"),
            (CONT, b"fragment4", False),
            (CONT, b"fragment5"),
        ),
        [
            PingReceived(b"pongme 1!"),
            PingReceived(b"pongme 2!"),
            TextMessage("fragment1fragment2fragment3fragment4fragment5"),
        ],
        [Frame(PONG, b"pongme 1!"), Frame(PONG, b"pongme 2!")],
        id="5.19-5.20 pings between 5 fragments",
    ),
    pytest.param(
        _frames((BINARY, b"\x00", False), (CONT, b"", False), (CONT, b"\xff")),
        [BinaryMessage(b"\x00\xff")],
        [],
        id="binary with empty fragment",
    ),
    pytest.param(
        _frames((TEXT, b"a", False), (PONG, b"x"), (CONT, b"b"), (TEXT, b"c")),
        [PongReceived(b"x"), TextMessage("ab"), TextMessage("c")],
        [],
        id="pong between fragments then a new message",
    ),
]


@pytest.mark.parametrize("chop", CHOPS)
@pytest.mark.parametrize(("chunks", "events", "written"), AUTOBAHN_5_VALID)
def test_autobahn_5_fragmentation(
    chunks: list[bytes], events: list[Event], written: list[Frame], chop: int | None
) -> None:
    got_events, got_written, server = run_case(chunks, chop)
    assert got_events == events
    assert got_written == written
    assert server.failure is None


AUTOBAHN_5_INVALID = [
    pytest.param(
        [raw_frame(PING, b"fragment1", fin=False), raw_frame(CONT, b"fragment2")],
        [],
        id="5.1 fragmented ping",
    ),
    pytest.param(
        [raw_frame(PONG, b"fragment1", fin=False), raw_frame(CONT, b"fragment2")],
        [],
        id="5.2 fragmented pong",
    ),
    pytest.param(
        _frames((CONT, b"non-continuation payload"), (TEXT, b"Hello, world!")),
        [],
        id="5.9-5.11 continuation fin=1 without message",
    ),
    pytest.param(
        _frames((CONT, b"non-continuation payload", False), (TEXT, b"Hello, world!")),
        [],
        id="5.12-5.14 continuation fin=0 without message",
    ),
    pytest.param(
        _frames(
            (TEXT, b"fragment1", False),
            (CONT, b"fragment2"),
            (CONT, b"fragment3", False),
            (TEXT, b"fragment4"),
        ),
        [TextMessage("fragment1fragment2")],
        id="5.15 continuation after the final fragment",
    ),
    pytest.param(
        _frames(
            (CONT, b"fragment1", False),
            (TEXT, b"fragment2", False),
            (CONT, b"fragment3"),
        )
        * 2,
        [],
        id="5.16 message starting with a continuation",
    ),
    pytest.param(
        _frames((CONT, b"fragment1"), (TEXT, b"fragment2", False), (CONT, b"fragment3")) * 2,
        [],
        id="5.17 message starting with a final continuation",
    ),
    pytest.param(
        _frames((TEXT, b"fragment1", False), (TEXT, b"fragment2")),
        [],
        id="5.18 text instead of continuation",
    ),
]


@pytest.mark.parametrize("chop", CHOPS)
@pytest.mark.parametrize(("chunks", "events"), AUTOBAHN_5_INVALID)
def test_autobahn_5_invalid_fragmentation(
    chunks: list[bytes], events: list[Event], chop: int | None
) -> None:
    got_events, written, server = run_case(chunks, chop)
    assert got_events == events
    assert [f.opcode for f in written] == [CLOSE]
    assert Close.parse(written[0].data).code == 1002
    assert isinstance(server.failure, ProtocolError)


# Section 6: UTF-8 handling. Valid and invalid sequences, each sent in one
# frame and in one frame per byte.

VALID_UTF8 = [
    pytest.param(b"", id="6.1 empty"),
    pytest.param("Hello-µ@ßöäüàá-UTF-8!!".encode(), id="6.2 hello"),
    pytest.param(KOSME, id="6.5.1 kosme"),
    pytest.param(b"\x00", id="6.7.1 first 1-byte"),
    pytest.param(b"\xc2\x80", id="6.7.2 first 2-byte"),
    pytest.param(b"\xe0\xa0\x80", id="6.7.3 first 3-byte"),
    pytest.param(b"\xf0\x90\x80\x80", id="6.7.4 first 4-byte"),
    pytest.param(b"\x7f", id="6.9.1 last 1-byte"),
    pytest.param(b"\xdf\xbf", id="6.9.2 last 2-byte"),
    pytest.param(b"\xef\xbf\xbf", id="6.9.3 last 3-byte (U+FFFF)"),
    pytest.param(b"\xf4\x8f\xbf\xbf", id="6.9.4 U+10FFFF"),
    pytest.param(b"\xed\x9f\xbf", id="6.11.1 U+D7FF"),
    pytest.param(b"\xee\x80\x80", id="6.11.2 U+E000"),
    pytest.param(b"\xef\xbf\xbd", id="6.11.3 U+FFFD"),
    pytest.param(b"\xef\xbf\xbe", id="6.23 noncharacter U+FFFE"),
    pytest.param(b"\xf0\x9f\xbf\xbe", id="6.23 noncharacter U+1FFFE"),
    pytest.param("😀 𝄞 κόσμε".encode(), id="mixed"),
]

INVALID_UTF8 = [
    pytest.param(INVALID_UTF8_EDITED, id="6.3 surrogate in kosme"),
    pytest.param(b"\xf4\x90\x80\x80", id="6.8.1 above U+10FFFF"),
    pytest.param(b"\xf8\x88\x80\x80\x80", id="6.8.2 5-byte sequence"),
    pytest.param(b"\xfc\x84\x80\x80\x80\x80", id="6.8.3 6-byte sequence"),
    pytest.param(b"\x80", id="6.10.1 lone continuation"),
    pytest.param(b"\xbf", id="6.10.2 lone continuation bf"),
    pytest.param(b"\x80\xbf\x80\xbf", id="6.10.3 continuations"),
    pytest.param(b"\xc0 ", id="6.12 lonely start c0"),
    pytest.param(b"\xdf", id="6.14.1 last byte missing 2-byte"),
    pytest.param(b"\xef\xbf", id="6.14.2 last byte missing 3-byte"),
    pytest.param(b"\xf4\x8f\xbf", id="6.14.3 last byte missing 4-byte"),
    pytest.param(b"\xc0\xaf", id="6.16.1 overlong / 2-byte"),
    pytest.param(b"\xe0\x80\xaf", id="6.16.2 overlong / 3-byte"),
    pytest.param(b"\xf0\x80\x80\xaf", id="6.16.3 overlong / 4-byte"),
    pytest.param(b"\xc1\xbf", id="6.17.1 max overlong 2-byte"),
    pytest.param(b"\xe0\x9f\xbf", id="6.17.2 max overlong 3-byte"),
    pytest.param(b"\xf0\x8f\xbf\xbf", id="6.17.3 max overlong 4-byte"),
    pytest.param(b"\xed\xa0\x80", id="6.19.1 U+D800"),
    pytest.param(b"\xed\xbf\xbf", id="6.19.7 U+DFFF"),
    pytest.param(b"\xed\xa0\x80\xed\xb0\x80", id="6.20.1 surrogate pair"),
    pytest.param(b"\xfe", id="6.21 fe"),
    pytest.param(b"\xff", id="6.21 ff"),
    pytest.param(b"\xfe\xfe\xff\xff", id="6.21 fe fe ff ff"),
]


def _per_byte(data: bytes, opcode: int = TEXT) -> list[bytes]:
    if len(data) <= 1:
        return [raw_frame(opcode, data)]
    frames = [raw_frame(opcode, data[:1], fin=False)]
    frames += [raw_frame(CONT, data[i : i + 1], fin=False) for i in range(1, len(data) - 1)]
    frames.append(raw_frame(CONT, data[-1:]))
    return frames


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "one-frame-per-byte"])
@pytest.mark.parametrize("data", VALID_UTF8)
def test_autobahn_6_valid_utf8(data: bytes, fragmented: bool) -> None:
    chunks = _per_byte(data) if fragmented else [raw_frame(TEXT, data)]
    events, written, _ = run_case(chunks, None)
    assert events == [TextMessage(data.decode())]
    assert written == []
    # As a close reason too (7.5.x): valid UTF-8 is echoed as a normal close.
    events, written, _ = run_case([close_bytes(1000, data)], None)
    assert events == [CloseReceived(1000, data.decode())]


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "one-frame-per-byte"])
@pytest.mark.parametrize("data", INVALID_UTF8)
def test_autobahn_6_invalid_utf8(data: bytes, fragmented: bool) -> None:
    chunks = _per_byte(data) if fragmented else [raw_frame(TEXT, data)]
    events, written, _ = run_case(chunks, None)
    assert events == []
    assert [f.opcode for f in written] == [CLOSE]
    assert Close.parse(written[0].data).code == 1007
    # In a close reason (7.5.1).
    events, written, _ = run_case([close_bytes(1000, data)], None)
    assert events == []
    assert Close.parse(written[0].data).code == 1007


@pytest.mark.parametrize("data", INVALID_UTF8)
def test_invalid_utf8_in_binary_is_fine(data: bytes) -> None:
    events, written, _ = run_case(_per_byte(data, BINARY), None)
    assert events == [BinaryMessage(data)]
    assert written == []


def _fail_fast_cases() -> list[object]:
    """6.4.x: the connection fails as soon as the payload is known to be invalid."""
    edited = b"edited"
    return [
        pytest.param([KOSME, b"\xf4\x90\x80\x80", edited], 1, id="6.4.1 bad fragment"),
        pytest.param([KOSME + b"\xf4", b"\x90\x80\x80", edited], 1, id="6.4.2 split sequence"),
        pytest.param([KOSME, b"\xf4\x90\x80\x80" + edited], 1, id="6.4.3 bad final fragment"),
        pytest.param(
            [KOSME[i : i + 1] for i in range(len(KOSME))] + [b"\xf4", b"\x90", b"\x80", b"\x80"],
            len(KOSME) + 1,
            id="6.4.4 one byte per fragment",
        ),
        pytest.param([b"\xc0", b"\xaf", b"x"], 0, id="invalid start byte first"),
        pytest.param([b"ok", b"\xed\xa0\x80", b"x"], 1, id="surrogate fragment"),
    ]


@pytest.mark.parametrize(("fragments", "bad_index"), _fail_fast_cases())
def test_autobahn_6_4_fail_fast(fragments: list[bytes], bad_index: int) -> None:
    server = make()
    last = len(fragments) - 1
    for i, fragment in enumerate(fragments):
        opcode = TEXT if i == 0 else CONT
        events = feed(server, raw_frame(opcode, fragment, fin=i == last))
        assert events == []
        if i < bad_index:
            assert server.data_to_send() == [], f"failed too early, at fragment {i}"
        elif i == bad_index:
            assert_failed(server, 1007, UnicodeDecodeError)
        else:
            assert server.data_to_send() == []


@pytest.mark.parametrize("chop", CHOPS)
def test_autobahn_6_4_fail_fast_in_a_single_frame_arriving_in_pieces(chop: int | None) -> None:
    # A non-fragmented frame is validated when complete; the result is 1007 either way.
    events, written, _ = run_case([raw_frame(TEXT, KOSME + b"\xf4\x90\x80\x80edited")], chop)
    assert events == []
    assert Close.parse(written[0].data).code == 1007


AUTOBAHN_7_VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011]
AUTOBAHN_7_VALID_CODES += [1012, 1013, 1014, 3000, 3999, 4000, 4999]
AUTOBAHN_7_INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999]
AUTOBAHN_7_INVALID_CODES += [5000, 65535]


@pytest.mark.parametrize("code", AUTOBAHN_7_VALID_CODES)
def test_autobahn_7_7_valid_close_codes_are_echoed(code: int) -> None:
    events, written, server = run_case([close_bytes(code, b"reason")], None)
    assert events == [CloseReceived(code, "reason")]
    assert written == [Frame(CLOSE, struct.pack("!H", code))]
    assert server.failure is None
    assert server.close_transport is True


@pytest.mark.parametrize("code", AUTOBAHN_7_INVALID_CODES)
def test_autobahn_7_9_invalid_close_codes(code: int) -> None:
    events, written, server = run_case([close_bytes(code)], None)
    assert events == []
    assert [Close.parse(f.data).code for f in written] == [1002]
    assert server.close_rcvd is None


AUTOBAHN_7_SEQUENCES = [
    pytest.param(
        [*_frames((TEXT, b"Hello World!")), close_bytes(1000)],
        [TextMessage("Hello World!"), CloseReceived(1000, "")],
        id="7.1.1 text then close",
    ),
    pytest.param(
        [close_bytes(1000), close_bytes(1000)], [CloseReceived(1000, "")], id="7.1.2 two closes"
    ),
    pytest.param(
        [close_bytes(1000), *_frames((PING, b"Hello World!"))],
        [CloseReceived(1000, "")],
        id="7.1.3 ping after close",
    ),
    pytest.param(
        [close_bytes(1000), *_frames((TEXT, b"Hello World!"))],
        [CloseReceived(1000, "")],
        id="7.1.4 text after close",
    ),
    pytest.param(
        [*_frames((TEXT, b"fragment1", False)), close_bytes(1000), *_frames((CONT, b"fragment2"))],
        [CloseReceived(1000, "")],
        id="7.1.5 close between fragments",
    ),
    pytest.param(
        [*_frames((TEXT, b"x" * 262144)), close_bytes(1000), *_frames((PING, b""))],
        [TextMessage("x" * 262144), CloseReceived(1000, "")],
        id="7.1.6 large message, close, ping",
    ),
    pytest.param([close_bytes(None)], [CloseReceived(1005, "")], id="7.3.1 empty close"),
    pytest.param([close_bytes(1000)], [CloseReceived(1000, "")], id="7.3.3 code only"),
    pytest.param([close_bytes(1000, b"Ok")], [CloseReceived(1000, "Ok")], id="7.3.4 reason"),
    pytest.param(
        [close_bytes(1000, b"*" * 123)], [CloseReceived(1000, "*" * 123)], id="7.3.5 max reason"
    ),
]


@pytest.mark.parametrize("chop", CHOPS)
@pytest.mark.parametrize(("chunks", "events"), AUTOBAHN_7_SEQUENCES)
def test_autobahn_7_close_handling(
    chunks: list[bytes], events: list[Event], chop: int | None
) -> None:
    got_events, written, server = run_case(chunks, chop)
    assert got_events == events
    closes = [f for f in written if f.opcode is CLOSE]
    assert len(closes) == 1 and written[-1] is closes[0]
    code = events[-1].code  # type: ignore[union-attr]
    assert Close.parse(closes[0].data) == Close(code, "")
    assert server.failure is None
    assert server.close_transport is True


@pytest.mark.parametrize("chop", CHOPS)
@pytest.mark.parametrize(
    ("chunks", "code"),
    [
        pytest.param([raw_frame(CLOSE, b"\x03")], 1002, id="7.3.2 1-byte close"),
        pytest.param([close_bytes(1000, b"*" * 124)], 1002, id="7.3.6 reason too long"),
        pytest.param([close_bytes(1000, b"\xce\xba\xe1\xbd\xed")], 1007, id="7.5.1 bad reason"),
    ],
)
def test_autobahn_7_invalid_close_frames(chunks: list[bytes], code: int, chop: int | None) -> None:
    events, written, _ = run_case(chunks, chop)
    assert events == []
    assert [Close.parse(f.data).code for f in written] == [code]


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
@pytest.mark.parametrize("fragment_size", [None, 1000, 2**16])
@pytest.mark.parametrize(
    ("size", "max_size", "ok"), [(2**16, 2**16, True), (2**16 + 1, 2**16, False)]
)
def test_autobahn_9_limits(
    opcode: Opcode, fragment_size: int | None, size: int, max_size: int, ok: bool
) -> None:
    """9.x: large messages, whole or in fragments, around max_size."""
    payload = b"a" * size
    if fragment_size is None:
        chunks = [raw_frame(opcode, payload)]
    else:
        pieces = [payload[i : i + fragment_size] for i in range(0, size, fragment_size)]
        chunks = [
            raw_frame(opcode if i == 0 else CONT, piece, fin=i == len(pieces) - 1)
            for i, piece in enumerate(pieces)
        ]
    events, written, server = run_case(chunks, None, max_size=max_size)
    if ok:
        assert len(events) == 1 and len(events[0].data) == size  # type: ignore[union-attr]
        assert written == []
    else:
        assert events == []
        assert [Close.parse(f.data).code for f in written] == [1009]
        assert isinstance(server.failure, PayloadTooBig)


# Property-based tests: receive_data() never raises.


@st.composite
def peer_bytes(draw: st.DrawFn, to: Side) -> bytes:
    """A stream of frames, mostly well-formed, with random flaws and garbage."""
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            parts.append(draw(st.binary(max_size=20)))
            continue
        opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10] * 3 + list(range(16))))
        if opcode == 8 and draw(st.booleans()):
            code = draw(st.sampled_from([1000, 1001, 1002, 1005, 1006, 3000, 4999, 5000, 0]))
            reason = draw(st.one_of(st.binary(max_size=5), st.just("é".encode())))
            data = struct.pack("!H", code) + reason
        elif opcode == 1 or (opcode == 0 and draw(st.booleans())):
            data = draw(st.text(max_size=10)).encode()
            if draw(st.integers(0, 4)) == 0:
                cut = draw(st.integers(0, len(data)))
                data = data[:cut] + draw(st.binary(min_size=1, max_size=3)) + data[cut:]
        else:
            data = draw(st.binary(max_size=130))
        fin = draw(st.integers(0, 3)) != 0
        rsv = draw(st.sampled_from([0] * 8 + list(range(8))))
        masked = to is Side.SERVER if draw(st.integers(0, 9)) else to is not Side.SERVER
        parts.append(raw_frame(opcode, data, fin=fin, rsv=rsv, masked=masked, to=to))
    return b"".join(parts)


@settings(max_examples=300, deadline=None)
@given(
    side=st.sampled_from(list(Side)),
    data=st.data(),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4),
    max_size=st.sampled_from([None, 50, 2**20]),
    stream=st.booleans(),
)
def test_property_receive_data_never_raises(
    side: Side, data: st.DataObject, sizes: list[int], max_size: int | None, stream: bool
) -> None:
    stream_bytes = data.draw(peer_bytes(side))
    proto = make(side, max_size=max_size, stream_fragments=stream)
    pos, i = 0, 0
    while pos < len(stream_bytes):
        size = sizes[i % len(sizes)]
        proto.receive_data(stream_bytes[pos : pos + size])  # must not raise
        pos += size
        i += 1
    for event in proto.events_received():
        assert isinstance(
            event,
            (TextMessage, BinaryMessage, Fragment, PingReceived, PongReceived, CloseReceived),
        )
    close = written_close(proto)
    if proto.failure is not None:
        assert isinstance(proto.failure, (ProtocolError, PayloadTooBig, UnicodeDecodeError))
        assert close is not None and close.code in (1002, 1007, 1009)
        assert proto.close_transport is True
    elif close is not None:
        # Not a failure: the echo of the close frame received.
        assert proto.close_rcvd is not None
        assert close.code == proto.close_rcvd.code
    proto.receive_eof()
    assert proto.state is State.CLOSED
    assert proto.close_exc is not None


@st.composite
def messages(draw: st.DrawFn) -> list[tuple[str | bytes, int]]:
    """Messages, each with the number of fragments it is sent in."""
    out: list[tuple[str | bytes, int]] = []
    for _ in range(draw(st.integers(0, 5))):
        data: str | bytes = draw(st.one_of(st.text(max_size=50), st.binary(max_size=50)))
        out.append((data, draw(st.integers(1, 4))))
    return out


def _send(proto: WebSocketProtocol, data: str | bytes, n: int) -> None:
    encoded = data.encode() if isinstance(data, str) else data
    step = max(1, -(-len(encoded) // n))
    pieces = [encoded[i : i + step] for i in range(0, len(encoded), step)] or [b""]
    for i, piece in enumerate(pieces):
        fin = i == len(pieces) - 1
        if i > 0:
            proto.send_continuation(piece, fin=fin)
        elif isinstance(data, str):
            proto.send_text(piece, fin=fin)
        else:
            proto.send_binary(piece, fin=fin)


@settings(max_examples=100, deadline=None)
@given(msgs=messages(), to_server=st.booleans(), ping=st.booleans())
def test_property_pair_roundtrip(
    msgs: list[tuple[str | bytes, int]], to_server: bool, ping: bool
) -> None:
    client, server = make_pair()
    src, dst = (client, server) if to_server else (server, client)
    for data, n in msgs:
        _send(src, data, n)
        if ping:
            src.send_ping(b"between")
    transfer(src, dst)
    events = [e for e in dst.events_received() if not isinstance(e, PingReceived)]
    expected = [TextMessage(d) if isinstance(d, str) else BinaryMessage(d) for d, _ in msgs]
    assert events == expected
    assert dst.failure is None


def test_fail_1006_closes_without_a_close_frame() -> None:
    from wsharbor.protocol.connection import Side, State, WebSocketProtocol

    protocol = WebSocketProtocol(Side.SERVER)
    protocol.fail(1006)
    assert protocol.data_to_send() == []
    assert protocol.close_transport
    assert protocol.state is State.CLOSING
    assert protocol.close_sent is None


@pytest.mark.parametrize("code", [999, 1004, 1005, 1015, 2000, 5000])
def test_fail_with_a_code_not_allowed_on_the_wire_is_local_misuse(code: int) -> None:
    from wsharbor.protocol.connection import Side, WebSocketProtocol

    protocol = WebSocketProtocol(Side.SERVER)
    with pytest.raises(ValueError, match="invalid close code"):
        protocol.fail(code)
    assert protocol.data_to_send() == []
