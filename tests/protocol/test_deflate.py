"""Tests for permessage-deflate (RFC 7692): codec, negotiation, limits, memory."""

from __future__ import annotations

import dataclasses
import itertools
import random
import tracemalloc
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsharbor.exceptions import InvalidState, NegotiationError, PayloadTooBig, ProtocolError
from wsharbor.protocol import deflate
from wsharbor.protocol.deflate import (
    BACKENDS,
    CLIENT_DEFAULTS,
    SERVER_CONTEXT_TAKEOVER,
    SERVER_DEFAULTS,
    ClientPerMessageDeflateFactory,
    DeflateSettings,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
    enable_client_deflate,
    enable_server_deflate,
)
from wsharbor.protocol.frames import Frame, Opcode

H = bytes.fromhex
MiB = 1 << 20


def pmd(
    remote_nct: bool = False,
    local_nct: bool = False,
    remote_bits: int = 15,
    local_bits: int = 15,
    **kwargs: int,
) -> PerMessageDeflate:
    return PerMessageDeflate(remote_nct, local_nct, remote_bits, local_bits, **kwargs)


def compressed(data: bytes, *, fin: bool = True, opcode: Opcode = Opcode.TEXT) -> Frame:
    return Frame(opcode, data, fin=fin, rsv1=opcode is not Opcode.CONT)


def negotiate(
    client: DeflateSettings, server: DeflateSettings
) -> tuple[PerMessageDeflate, PerMessageDeflate]:
    """Run the real negotiation: client offer, server answer, client check."""
    client_factory = ClientPerMessageDeflateFactory(client)
    server_factory = ServerPerMessageDeflateFactory(server)
    answer, server_ext = server_factory.process_request_params(
        client_factory.get_request_params(), []
    )
    client_ext = client_factory.process_response_params(answer, [])
    return client_ext, server_ext


def send(sender: PerMessageDeflate, receiver: PerMessageDeflate, frames: list[Frame]) -> bytes:
    """Encode frames with sender, decode them with receiver, return the payload."""
    out = []
    for frame in frames:
        encoded = sender.encode(frame)
        decoded = receiver.decode(encoded, max_size=None)
        assert not decoded.rsv1
        assert decoded.opcode is frame.opcode
        assert decoded.fin is frame.fin
        out.append(decoded.data)
    return b"".join(out)


# Settings.


def test_settings_defaults() -> None:
    assert SERVER_DEFAULTS.window_bits == 15
    assert SERVER_DEFAULTS.memory_level == 8
    assert SERVER_DEFAULTS.peer_window_bits == 12
    assert not SERVER_DEFAULTS.context_takeover and not SERVER_DEFAULTS.peer_context_takeover
    assert SERVER_DEFAULTS.threshold == 64
    assert SERVER_DEFAULTS.level == 2
    assert SERVER_CONTEXT_TAKEOVER.window_bits == 12
    assert SERVER_CONTEXT_TAKEOVER.memory_level == 4
    assert SERVER_CONTEXT_TAKEOVER.peer_window_bits == 12
    assert SERVER_CONTEXT_TAKEOVER.context_takeover
    assert SERVER_CONTEXT_TAKEOVER.peer_context_takeover
    assert CLIENT_DEFAULTS.window_bits == 15
    assert CLIENT_DEFAULTS.peer_window_bits is None
    settings_ = DeflateSettings(window_bits=11, memory_level=4)
    assert settings_.threshold == 16
    assert settings_.level == 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings_.window_bits = 12  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"window_bits": 8}, ValueError, "window_bits must be between 9 and 15, got 8"),
        ({"window_bits": 16}, ValueError, "window_bits must be between 9 and 15, got 16"),
        ({"window_bits": "12"}, TypeError, "window_bits must be an int, got str"),
        ({"window_bits": True}, TypeError, "window_bits must be an int, got bool"),
        ({"memory_level": 0}, ValueError, "memory_level must be between 1 and 9, got 0"),
        ({"memory_level": 10}, ValueError, "memory_level must be between 1 and 9, got 10"),
        ({"context_takeover": 1}, TypeError, "context_takeover must be a bool, got int"),
        ({"peer_window_bits": 8}, ValueError, "peer_window_bits must be between 9 and 15"),
        ({"peer_window_bits": 16}, ValueError, "peer_window_bits must be between 9 and 15"),
        ({"peer_context_takeover": None}, TypeError, "peer_context_takeover must be a bool"),
        ({"threshold": -1}, ValueError, "threshold must be at least 0, got -1"),
        ({"threshold": 1.5}, TypeError, "threshold must be an int, got float"),
        ({"level": -2}, ValueError, "level must be between -1 and 9, got -2"),
        ({"level": 10}, ValueError, "level must be between -1 and 9, got 10"),
    ],
)
def test_settings_invalid(kwargs: dict[str, object], exc: type[Exception], message: str) -> None:
    args: dict[str, object] = {"window_bits": 12, "memory_level": 5, **kwargs}
    with pytest.raises(exc, match=message):
        DeflateSettings(**args)  # type: ignore[arg-type]


def test_settings_valid_bounds() -> None:
    DeflateSettings(window_bits=9, memory_level=1, peer_window_bits=9, threshold=0, level=-1)
    DeflateSettings(window_bits=15, memory_level=9, peer_window_bits=15, level=9)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((False, False, 15, 8), {}, "local_max_window_bits must be between 9 and 15, got 8"),
        ((False, False, 7, 15), {}, "remote_max_window_bits must be between 8 and 15, got 7"),
        ((False, False, 16, 15), {}, "remote_max_window_bits must be between 8 and 15"),
        ((False, False, 15, 15), {"memory_level": 0}, "memory_level"),
        ((False, False, 15, 15), {"level": 11}, "level"),
        ((False, False, 15, 15), {"threshold": -5}, "threshold"),
    ],
)
def test_codec_invalid(
    args: tuple[bool, bool, int, int], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PerMessageDeflate(*args, **kwargs)


def test_codec_invalid_types() -> None:
    with pytest.raises(TypeError, match="remote_no_context_takeover must be a bool"):
        PerMessageDeflate(0, False, 15, 15)  # type: ignore[arg-type]


def test_codec_repr() -> None:
    assert repr(pmd(local_bits=12, memory_level=5)) == (
        "PerMessageDeflate(remote_no_context_takeover=False, local_no_context_takeover=False, "
        "remote_max_window_bits=15, local_max_window_bits=12, memory_level=5, level=6, "
        "threshold=0)"
    )


# RFC 7692 section 7.2.3: examples, as literal byte vectors.


def test_rfc_7_2_3_1_one_block() -> None:
    ext = pmd()
    frame = ext.decode(compressed(H("f248cdc9c90700")))
    assert frame == Frame(Opcode.TEXT, b"Hello")
    assert pmd().encode(Frame(Opcode.TEXT, b"Hello")) == compressed(H("f248cdc9c90700"))


def test_rfc_7_2_3_1_fragmented() -> None:
    ext = pmd()
    first = ext.decode(compressed(H("f248cd"), fin=False))
    second = ext.decode(compressed(H("c9c90700"), opcode=Opcode.CONT))
    assert (first.opcode, first.fin, first.rsv1) == (Opcode.TEXT, False, False)
    assert (second.opcode, second.fin, second.rsv1) == (Opcode.CONT, True, False)
    # zlib outputs what the bits received so far decode to: "He" then "llo".
    assert first.data + second.data == b"Hello"


def test_rfc_7_2_3_2_sharing_window() -> None:
    decoder = pmd()
    assert decoder.decode(compressed(H("f248cdc9c90700"))).data == b"Hello"
    assert decoder.decode(compressed(H("f200110000"))).data == b"Hello"
    encoder = pmd()
    assert encoder.encode(Frame(Opcode.TEXT, b"Hello")).data == H("f248cdc9c90700")
    assert encoder.encode(Frame(Opcode.TEXT, b"Hello")).data == H("f200110000")


def test_rfc_7_2_3_2_no_context_takeover() -> None:
    encoder = pmd(local_nct=True)
    assert encoder.encode(Frame(Opcode.TEXT, b"Hello")).data == H("f248cdc9c90700")
    assert encoder.encode(Frame(Opcode.TEXT, b"Hello")).data == H("f248cdc9c90700")
    # Without the previous message's window, a back-reference can't resolve.
    decoder = pmd(remote_nct=True)
    decoder.decode(compressed(H("f248cdc9c90700")))
    with pytest.raises(ProtocolError, match="invalid compressed data"):
        decoder.decode(compressed(H("f200110000")))


def test_rfc_7_2_3_3_no_compression() -> None:
    assert pmd().decode(compressed(H("0005 00faff 48656c6c6f 00"))).data == b"Hello"


def test_rfc_7_2_3_4_bfinal() -> None:
    ext = pmd()
    assert ext.decode(compressed(H("f348cdc9c907 0000"))).data == b"Hello"
    # The next message still decodes, including a back-reference into the
    # previous message (context takeover across a BFINAL block).
    assert ext.decode(compressed(H("f200110000"))).data == b"Hello"
    assert ext.decode(compressed(H("f248cdc9c90700"))).data == b"Hello"


def test_bfinal_without_padding_octet() -> None:
    # A stream ended with BFINAL and nothing after it: accepted too.
    ext = pmd()
    assert ext.decode(compressed(H("f348cdc9c90700"))).data == b"Hello"
    assert ext.decode(compressed(H("f248cdc9c90700"))).data == b"Hello"


def test_bfinal_on_non_final_fragment() -> None:
    ext = pmd()
    assert ext.decode(compressed(H("f348cdc9c90700"), fin=False)).data == b"Hello"
    assert ext.decode(compressed(H("f248cdc9c90700"), opcode=Opcode.CONT)).data == b"Hello"


def test_bfinal_then_another_stream_in_one_frame() -> None:
    # A new stream may follow a final block, primed with the window so far.
    ext = pmd()
    payload = H("f348cdc9c90700") + H("f200110000")
    assert ext.decode(compressed(payload)).data == b"HelloHello"
    assert ext.decode(compressed(H("f200110000"))).data == b"Hello"


def test_several_bfinal_blocks_in_one_frame() -> None:
    # Bounded work per frame: one restart of the decompressor, not one per block.
    with pytest.raises(ProtocolError, match="several DEFLATE blocks with BFINAL set in one frame"):
        pmd().decode(compressed(H("0300") * 50_000))
    payload = H("f348cdc9c90700") * 2 + H("00")
    with pytest.raises(ProtocolError, match="several DEFLATE blocks with BFINAL"):
        pmd().decode(compressed(payload))


def test_bfinal_in_each_fragment() -> None:
    ext = pmd()
    first = ext.decode(compressed(H("f348cdc9c90700"), fin=False))
    second = ext.decode(compressed(H("f200110000 0000ffff 0300"), fin=False, opcode=Opcode.CONT))
    third = ext.decode(compressed(H("f348cdc9c90700 00"), opcode=Opcode.CONT))
    assert (first.data, second.data, third.data) == (b"Hello", b"Hello", b"Hello")


def test_rfc_7_2_3_5_two_blocks() -> None:
    assert pmd().decode(compressed(H("f24805000000ffff cac9c90700"))).data == b"Hello"


def test_rfc_7_2_3_6_empty_message() -> None:
    frame = pmd().encode(Frame(Opcode.BINARY, b""))
    assert frame == Frame(Opcode.BINARY, b"\x00", rsv1=True)
    assert pmd().decode(frame) == Frame(Opcode.BINARY, b"")


def test_empty_fragments() -> None:
    sender, receiver = pmd(), pmd()
    frames = [
        Frame(Opcode.TEXT, b"", fin=False),
        Frame(Opcode.CONT, b"", fin=False),
        Frame(Opcode.CONT, b""),
    ]
    assert send(sender, receiver, frames) == b""


def test_incompressible_message() -> None:
    data = random.Random(7692).randbytes(512)
    sender, receiver = pmd(), pmd()
    frame = sender.encode(Frame(Opcode.BINARY, data))
    assert len(frame.data) > len(data)  # larger than the original, still valid
    assert receiver.decode(frame).data == data


# Framing rules (RFC 7692 section 6).


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frames_unchanged(opcode: Opcode) -> None:
    ext = pmd()
    frame = Frame(opcode, b"\x03\xe8" if opcode is Opcode.CLOSE else b"ping")
    assert ext.encode(frame) is frame
    assert ext.decode(frame) is frame
    assert ext._encoder is None and ext._decoder is None


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_rsv1_on_control_frame(opcode: Opcode) -> None:
    with pytest.raises(ProtocolError, match="RSV1 set on control frame"):
        pmd().decode(Frame(opcode, b"", rsv1=True))


def test_rsv1_on_continuation_frame() -> None:
    ext = pmd()
    ext.decode(compressed(H("f248cd"), fin=False))
    with pytest.raises(ProtocolError, match="RSV1 set on continuation frame"):
        ext.decode(Frame(Opcode.CONT, H("c9c90700"), rsv1=True))
    with pytest.raises(ProtocolError, match="RSV1 set on continuation frame"):
        pmd().decode(Frame(Opcode.CONT, b"", rsv1=True))


def test_control_frame_between_fragments() -> None:
    ext = pmd()
    assert ext.decode(compressed(H("f248cd"), fin=False)).data == b"He"
    ping = Frame(Opcode.PING, b"x")
    assert ext.decode(ping) is ping
    assert ext.decode(compressed(H("c9c90700"), opcode=Opcode.CONT)).data == b"llo"


def test_new_message_during_compressed_message() -> None:
    ext = pmd()
    ext.decode(compressed(H("f248cd"), fin=False))
    with pytest.raises(ProtocolError, match="expected a continuation frame"):
        ext.decode(compressed(H("f248cdc9c90700")))


def test_uncompressed_messages_pass_through() -> None:
    ext = pmd()
    frames = [
        Frame(Opcode.TEXT, b"plain"),
        Frame(Opcode.BINARY, b"ab", fin=False),
        Frame(Opcode.CONT, b"cd"),
    ]
    for frame in frames:
        assert ext.decode(frame) is frame
    assert ext._decoder is None


def test_uncompressed_message_between_compressed_ones() -> None:
    # Uncompressed messages don't touch the LZ77 window (RFC 7692 section 6.2).
    ext = pmd()
    assert ext.decode(compressed(H("f248cdc9c90700"))).data == b"Hello"
    assert ext.decode(Frame(Opcode.TEXT, b"World")).data == b"World"
    assert ext.decode(compressed(H("f200110000"))).data == b"Hello"


def test_rsv2_rsv3_preserved() -> None:
    sender, receiver = pmd(), pmd()
    frame = sender.encode(Frame(Opcode.TEXT, b"Hello", rsv2=True, rsv3=True))
    assert frame.rsv1 and frame.rsv2 and frame.rsv3
    assert receiver.decode(frame) == Frame(Opcode.TEXT, b"Hello", rsv2=True, rsv3=True)


@pytest.mark.parametrize(
    "payload",
    [H("ff"), H("07"), H("f248cdc9c90700ffffffff"), H("0005 00 0000 48656c6c6f")],
)
def test_corrupt_stream(payload: bytes) -> None:
    with pytest.raises(ProtocolError, match=r"invalid compressed data \(RFC 7692"):
        pmd().decode(compressed(payload))


def test_corrupt_stream_resets_message_state() -> None:
    ext = pmd(remote_nct=True)
    with pytest.raises(ProtocolError):
        ext.decode(compressed(H("ff")))
    assert not ext._decoding


# Encoding.


def test_encode_fragmented_message() -> None:
    sender, receiver = pmd(), pmd()
    frames = [
        Frame(Opcode.TEXT, b"Hello, ", fin=False),
        Frame(Opcode.CONT, b"World", fin=False),
        Frame(Opcode.CONT, b"!"),
    ]
    encoded = [sender.encode(frame) for frame in frames]
    assert [frame.rsv1 for frame in encoded] == [True, False, False]
    # Non-final fragments keep their sync flush marker (RFC 7692 section 7.2.3.5).
    assert encoded[0].data.endswith(b"\x00\x00\xff\xff")
    assert not encoded[2].data.endswith(b"\x00\x00\xff\xff")
    assert b"".join(receiver.decode(frame).data for frame in encoded) == b"Hello, World!"


def test_encode_misuse() -> None:
    ext = pmd()
    with pytest.raises(InvalidState, match="continuation frame sent without a message"):
        ext.encode(Frame(Opcode.CONT, b"x"))
    ext.encode(Frame(Opcode.TEXT, b"x", fin=False))
    with pytest.raises(InvalidState, match="new message sent before the previous one ended"):
        ext.encode(Frame(Opcode.TEXT, b"x"))


def test_encode_control_frame_between_fragments() -> None:
    ext = pmd()
    ext.encode(Frame(Opcode.TEXT, b"x", fin=False))
    ping = Frame(Opcode.PING, b"")
    assert ext.encode(ping) is ping
    assert not ext.encode(Frame(Opcode.CONT, b"y")).rsv1


# Threshold.


def test_threshold() -> None:
    sender, receiver = pmd(threshold=10), pmd()
    short = Frame(Opcode.TEXT, b"123456789")
    assert sender.encode(short) is short
    assert sender._encoder is None  # nothing was compressed yet
    exact = sender.encode(Frame(Opcode.TEXT, b"1234567890"))
    assert exact.rsv1
    assert receiver.decode(exact).data == b"1234567890"


def test_threshold_fragmented_message_always_compressed() -> None:
    sender, receiver = pmd(threshold=1000), pmd()
    first = sender.encode(Frame(Opcode.BINARY, b"ab", fin=False))
    last = sender.encode(Frame(Opcode.CONT, b"cd"))
    assert first.rsv1 and not last.rsv1
    assert receiver.decode(first).data + receiver.decode(last).data == b"abcd"


def test_threshold_decision_applies_to_continuation_frames() -> None:
    # A message sent uncompressed stays uncompressed over its fragments, and the
    # next message still works with the compressor's context.
    sender, receiver = pmd(threshold=5), pmd()
    assert send(sender, receiver, [Frame(Opcode.TEXT, b"abc")]) == b"abc"
    big = b"Hello" * 20
    assert send(sender, receiver, [Frame(Opcode.TEXT, big)]) == big
    assert send(sender, receiver, [Frame(Opcode.TEXT, b"ab")]) == b"ab"
    assert send(sender, receiver, [Frame(Opcode.TEXT, big)]) == big


def test_threshold_zero_compresses_everything() -> None:
    assert pmd(threshold=0).encode(Frame(Opcode.TEXT, b"")).rsv1


# Memory: lazy allocation, freed state.


def test_lazy_allocation() -> None:
    client, server = negotiate(CLIENT_DEFAULTS, SERVER_CONTEXT_TAKEOVER)
    for ext in (client, server):
        assert ext._encoder is None
        assert ext._decoder is None
    # A short message isn't compressed: still nothing allocated on either side.
    frame = client.encode(Frame(Opcode.TEXT, b"hi"))
    assert not frame.rsv1
    server.decode(frame)
    assert client._encoder is None and server._decoder is None
    # The first compressed message allocates the compressor, then the decompressor.
    frame = client.encode(Frame(Opcode.TEXT, b"x" * 1000))
    assert client._encoder is not None and client._decoder is None
    assert server._decoder is None
    server.decode(frame)
    assert server._decoder is not None and server._encoder is None


def test_default_settings_keep_no_state_between_messages() -> None:
    # The defaults: no context takeover either way, so after compressed messages
    # each way neither side's codec holds a compressor or a decompressor.
    client, server = negotiate(CLIENT_DEFAULTS, SERVER_DEFAULTS)
    message = b'{"type":"chat.message","room":"general","text":"hello, hello, hello"}'
    for _ in range(3):
        frame = client.encode(Frame(Opcode.TEXT, message))
        assert frame.rsv1
        assert server.decode(frame).data == message
        frame = server.encode(Frame(Opcode.TEXT, message))
        assert frame.rsv1
        assert client.decode(frame).data == message
        for ext in (client, server):
            assert ext._encoder is None and ext._decoder is None


def test_local_no_context_takeover_frees_compressor() -> None:
    sender, receiver = pmd(local_nct=True), pmd(remote_nct=True)
    frames = [Frame(Opcode.TEXT, b"Hello " * 20, fin=False), Frame(Opcode.CONT, b"World")]
    first = sender.encode(frames[0])
    assert sender._encoder is not None  # kept until the end of the message
    last = sender.encode(frames[1])
    assert sender._encoder is None
    assert receiver.decode(first).data + receiver.decode(last).data == b"Hello " * 20 + b"World"
    assert receiver._decoder is None


def test_no_context_takeover_messages_decode_independently() -> None:
    sender = pmd(local_nct=True)
    messages = [b"Hello, World! " * 10, b"Hello, World! " * 11, b"Goodbye"]
    encoded = [sender.encode(Frame(Opcode.BINARY, message)) for message in messages]
    # Each message decodes alone, by a fresh decoder, in any order.
    for message, frame in reversed(list(zip(messages, encoded, strict=True))):
        assert pmd(remote_nct=True).decode(frame).data == message
    receiver = pmd(remote_nct=True)
    for message, frame in zip(messages, encoded, strict=True):
        assert receiver.decode(frame).data == message
        assert receiver._decoder is None


def test_held_decompressor_serves_a_burst_then_is_freed() -> None:
    """Between hold() and release() (the protocol holds for one read), messages
    without context takeover share one decompressor; release() frees it."""
    sender = pmd(local_nct=True)
    messages = [b"Hello, World! " * 10, b"Goodbye " * 300, b"Hello, World! " * 11]
    encoded = [sender.encode(Frame(Opcode.TEXT, message)) for message in messages]
    receiver = pmd(remote_nct=True)
    receiver.hold()
    assert receiver.decode(encoded[0]).data == messages[0]
    decoder = receiver._decoder
    assert decoder is not None
    for message, frame in zip(messages[1:], encoded[1:], strict=True):
        assert receiver.decode(frame).data == message
        assert receiver._decoder is decoder
    receiver.release()
    assert receiver._decoder is None
    # Released in the middle of a fragmented message: kept until its end.
    first, last = (
        sender.encode(Frame(Opcode.TEXT, b"part " * 50, fin=False)),
        sender.encode(Frame(Opcode.CONT, b"end", fin=True)),
    )
    receiver.hold()
    assert receiver.decode(first).data == b"part " * 50
    receiver.release()
    assert receiver._decoder is not None
    assert receiver.decode(last).data == b"end"
    assert receiver._decoder is None


def test_protocol_holds_the_decompressor_for_one_read() -> None:
    """A burst of compressed messages in one read: all decoded, no decompressor
    kept after; and the same messages one read each decode the same."""
    from wsharbor.protocol.connection import Side, WebSocketProtocol
    from wsharbor.protocol.frames import serialize_frame

    client, _ = negotiate(CLIENT_DEFAULTS, SERVER_DEFAULTS)
    _, server_ext = negotiate(CLIENT_DEFAULTS, SERVER_DEFAULTS)
    messages = [(b'{"n":%d,"text":"' % i) + b"hello " * (10 + i) + b'"}' for i in range(20)]
    wire = b"".join(
        serialize_frame(client.encode(Frame(Opcode.TEXT, m)), mask=True) for m in messages
    )
    for chunks in ([wire], [wire[i : i + 7] for i in range(0, len(wire), 7)]):
        protocol = WebSocketProtocol(Side.SERVER, extensions=[server_ext])
        received = []
        for chunk in chunks:
            protocol.receive_data(chunk)
            assert server_ext._decoder is None
            received += [event.data for event in protocol.events_received()]
        assert received == [m.decode() for m in messages]


def test_context_takeover_keeps_state() -> None:
    sender, receiver = pmd(), pmd()
    message = b"Hello, World! " * 10
    first = sender.encode(Frame(Opcode.BINARY, message))
    second = sender.encode(Frame(Opcode.BINARY, message))
    assert len(second.data) < len(first.data)  # refers to the previous message
    receiver.decode(first)
    assert receiver.decode(second).data == message
    assert sender._encoder is not None and receiver._decoder is not None


# Limits: decompression is bounded by max_size.


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """100 MiB of zeros, compressed (about 100 KB), without the sync marker."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MiB)
    parts = [encoder.compress(chunk) for _ in range(100)]
    parts.append(encoder.flush(zlib.Z_SYNC_FLUSH))
    data = b"".join(parts)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


@pytest.mark.timeout(10)
def test_zip_bomb_bounded(bomb: bytes) -> None:
    assert len(bomb) < 200_000
    ext = pmd()
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooBig, match="exceeds limit of 1048576 bytes"):
            ext.decode(compressed(bomb, opcode=Opcode.BINARY), max_size=MiB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Never more than about max_size of output plus the payload copy.
    assert peak < 4 * MiB


@pytest.mark.timeout(10)
def test_zip_bomb_fragmented(bomb: bytes) -> None:
    # The connection passes the budget left for the message to each frame.
    ext = pmd()
    half = len(bomb) // 100
    frame = ext.decode(compressed(bomb[:half], fin=False, opcode=Opcode.BINARY), max_size=MiB)
    remaining = MiB - len(frame.data)
    assert remaining >= 0
    with pytest.raises(PayloadTooBig):
        ext.decode(Frame(Opcode.CONT, bomb[half:]), max_size=remaining)


def test_max_size_boundary() -> None:
    data = b"a" * 1000
    frame = pmd().encode(Frame(Opcode.BINARY, data))
    assert pmd().decode(frame, max_size=1000).data == data
    assert pmd().decode(frame, max_size=None).data == data
    with pytest.raises(PayloadTooBig):
        pmd().decode(frame, max_size=999)
    with pytest.raises(PayloadTooBig):
        pmd().decode(frame, max_size=0)
    assert pmd().decode(compressed(b"\x00"), max_size=0).data == b""


def test_max_size_with_bfinal() -> None:
    # The budget is shared by the streams of a frame.
    payload = H("f348cdc9c90700") + H("f200110000")
    assert pmd().decode(compressed(payload), max_size=10).data == b"HelloHello"
    with pytest.raises(PayloadTooBig):
        pmd().decode(compressed(payload), max_size=9)


# Negotiation: server side.

S = DeflateSettings(window_bits=12, memory_level=5, peer_window_bits=12)
S15 = DeflateSettings(window_bits=15, memory_level=8)


@pytest.mark.parametrize(
    ("settings_", "offer", "answer", "expected"),
    [
        # (remote_nct, local_nct, remote_bits, local_bits) of the server's codec.
        (S15, [], [], (False, False, 15, 15)),
        (S, [], [("server_max_window_bits", "12")], (False, False, 15, 12)),
        (
            S,
            [("client_max_window_bits", None)],
            [("server_max_window_bits", "12"), ("client_max_window_bits", "12")],
            (False, False, 12, 12),
        ),
        (S15, [("client_max_window_bits", None)], [], (False, False, 15, 15)),
        (
            S,
            [("client_max_window_bits", "10")],
            [("server_max_window_bits", "12"), ("client_max_window_bits", "10")],
            (False, False, 10, 12),
        ),
        (
            S,
            [("client_max_window_bits", "14")],
            [("server_max_window_bits", "12"), ("client_max_window_bits", "12")],
            (False, False, 12, 12),
        ),
        (
            S15,
            [("client_max_window_bits", "8")],
            [("client_max_window_bits", "8")],
            (False, False, 8, 15),
        ),
        (
            S,
            [("server_max_window_bits", "10")],
            [("server_max_window_bits", "10")],
            (False, False, 15, 10),
        ),
        (
            S,
            [("server_max_window_bits", "15")],
            [("server_max_window_bits", "12")],
            (False, False, 15, 12),
        ),
        (
            S15,
            [("server_max_window_bits", "15")],
            [("server_max_window_bits", "15")],
            (False, False, 15, 15),
        ),
        (
            S15,
            [("server_no_context_takeover", None)],
            [("server_no_context_takeover", None)],
            (False, True, 15, 15),
        ),
        (
            S15,
            [("client_no_context_takeover", None)],
            [("client_no_context_takeover", None)],
            (True, False, 15, 15),
        ),
        (
            dataclasses.replace(S15, context_takeover=False, peer_context_takeover=False),
            [],
            [("server_no_context_takeover", None), ("client_no_context_takeover", None)],
            (True, True, 15, 15),
        ),
        (
            S,
            [
                ("server_no_context_takeover", None),
                ("client_no_context_takeover", None),
                ("server_max_window_bits", "9"),
                ("client_max_window_bits", "9"),
            ],
            [
                ("server_no_context_takeover", None),
                ("client_no_context_takeover", None),
                ("server_max_window_bits", "9"),
                ("client_max_window_bits", "9"),
            ],
            (True, True, 9, 9),
        ),
    ],
)
def test_server_accepts(
    settings_: DeflateSettings,
    offer: list[tuple[str, str | None]],
    answer: list[tuple[str, str | None]],
    expected: tuple[bool, bool, int, int],
) -> None:
    params, ext = ServerPerMessageDeflateFactory(settings_).process_request_params(offer, [])
    assert params == answer
    assert (
        ext.remote_no_context_takeover,
        ext.local_no_context_takeover,
        ext.remote_max_window_bits,
        ext.local_max_window_bits,
    ) == expected
    assert (ext.memory_level, ext.level, ext.threshold) == (
        settings_.memory_level,
        settings_.level,
        settings_.threshold,
    )


@pytest.mark.parametrize(
    ("offer", "message"),
    [
        ([("foo", None)], "unknown permessage-deflate parameter: foo"),
        ([("Server_No_Context_Takeover", None)], "unknown"),
        ([("server_no_context_takeover", "1")], "no value allowed"),
        ([("client_no_context_takeover", "")], "no value allowed"),
        (
            [("server_no_context_takeover", None), ("server_no_context_takeover", None)],
            "duplicate permessage-deflate parameter: server_no_context_takeover",
        ),
        (
            [("client_no_context_takeover", None), ("client_no_context_takeover", None)],
            "duplicate",
        ),
        ([("server_max_window_bits", "10"), ("server_max_window_bits", "10")], "duplicate"),
        ([("client_max_window_bits", None), ("client_max_window_bits", "10")], "duplicate"),
        ([("server_max_window_bits", None)], "server_max_window_bits requires a value"),
        ([("server_max_window_bits", "7")], "must be an integer from 8 to 15"),
        ([("server_max_window_bits", "16")], "must be an integer from 8 to 15"),
        ([("server_max_window_bits", "010")], "must be an integer from 8 to 15"),
        ([("server_max_window_bits", "+10")], "must be an integer from 8 to 15"),
        ([("server_max_window_bits", " 10")], "must be an integer from 8 to 15"),
        ([("server_max_window_bits", "10\n")], "must be an integer from 8 to 15"),
        ([("server_max_window_bits", "\u0661\u0660")], "must be an integer from 8 to 15"),
        ([("client_max_window_bits", "abc")], "must be an integer from 8 to 15"),
        ([("client_max_window_bits", "")], "must be an integer from 8 to 15"),
        ([("server_max_window_bits", "8")], "server_max_window_bits=8 isn't supported"),
    ],
)
def test_server_declines(offer: list[tuple[str, str | None]], message: str) -> None:
    factory = ServerPerMessageDeflateFactory(S)
    with pytest.raises(NegotiationError, match=message):
        factory.process_request_params(offer, [])


def test_server_declines_second_negotiation() -> None:
    factory = ServerPerMessageDeflateFactory(S)
    _, ext = factory.process_request_params([], [])
    with pytest.raises(NegotiationError, match="negotiated twice"):
        factory.process_request_params([], [ext])


def test_server_several_offers_each_call_independent() -> None:
    # The handshake module calls the factory once per offer, first match wins.
    factory = ServerPerMessageDeflateFactory(S)
    offers: list[list[tuple[str, str | None]]] = [
        [("server_max_window_bits", "8")],
        [("client_max_window_bits", None), ("mystery", None)],
        [("client_max_window_bits", None)],
    ]
    results: list[list[tuple[str, str | None]] | None] = []
    for offer in offers:
        try:
            results.append(factory.process_request_params(offer, [])[0])
        except NegotiationError:
            results.append(None)
    assert results == [
        None,
        None,
        [("server_max_window_bits", "12"), ("client_max_window_bits", "12")],
    ]


# Negotiation: client side.

C = DeflateSettings(window_bits=15, memory_level=5)
C12 = DeflateSettings(
    window_bits=12,
    memory_level=5,
    peer_window_bits=10,
    context_takeover=False,
    peer_context_takeover=False,
)


def test_client_offers() -> None:
    assert ClientPerMessageDeflateFactory(C).get_request_params() == [
        ("client_max_window_bits", None)
    ]
    assert ClientPerMessageDeflateFactory(C12).get_request_params() == [
        ("server_no_context_takeover", None),
        ("client_no_context_takeover", None),
        ("server_max_window_bits", "10"),
        ("client_max_window_bits", "12"),
    ]
    assert ClientPerMessageDeflateFactory().settings is CLIENT_DEFAULTS
    assert ServerPerMessageDeflateFactory().settings is SERVER_DEFAULTS


@pytest.mark.parametrize(
    ("settings_", "answer", "expected"),
    [
        # (remote_nct, local_nct, remote_bits, local_bits) of the client's codec.
        (C, [], (False, False, 15, 15)),
        (C, [("server_no_context_takeover", None)], (True, False, 15, 15)),
        (C, [("client_no_context_takeover", None)], (False, True, 15, 15)),
        (C, [("server_max_window_bits", "12")], (False, False, 12, 15)),
        (C, [("server_max_window_bits", "8")], (False, False, 8, 15)),
        (C, [("client_max_window_bits", "12")], (False, False, 15, 12)),
        (C, [("client_max_window_bits", "15")], (False, False, 15, 15)),
        (
            C,
            [("server_max_window_bits", "12"), ("client_max_window_bits", "12")],
            (False, False, 12, 12),
        ),
        (
            C12,
            [("server_no_context_takeover", None), ("server_max_window_bits", "10")],
            (True, True, 10, 12),
        ),
        (
            C12,
            [
                ("server_no_context_takeover", None),
                ("client_no_context_takeover", None),
                ("server_max_window_bits", "9"),
                ("client_max_window_bits", "9"),
            ],
            (True, True, 9, 9),
        ),
    ],
)
def test_client_accepts(
    settings_: DeflateSettings,
    answer: list[tuple[str, str | None]],
    expected: tuple[bool, bool, int, int],
) -> None:
    ext = ClientPerMessageDeflateFactory(settings_).process_response_params(answer, [])
    assert (
        ext.remote_no_context_takeover,
        ext.local_no_context_takeover,
        ext.remote_max_window_bits,
        ext.local_max_window_bits,
    ) == expected


@pytest.mark.parametrize(
    ("settings_", "answer", "message"),
    [
        (C, [("foo", "bar")], "unknown permessage-deflate parameter: foo"),
        (C, [("server_no_context_takeover", "x")], "no value allowed"),
        (C, [("client_max_window_bits", None)], "client_max_window_bits requires a value"),
        (C, [("server_max_window_bits", None)], "server_max_window_bits requires a value"),
        (C, [("server_max_window_bits", "16")], "must be an integer from 8 to 15"),
        (C, [("client_max_window_bits", "09")], "must be an integer from 8 to 15"),
        (
            C,
            [("client_max_window_bits", "12"), ("client_max_window_bits", "12")],
            "duplicate",
        ),
        (C, [("client_max_window_bits", "8")], "client_max_window_bits=8 isn't supported"),
        (
            C12,
            [("server_no_context_takeover", None), ("server_max_window_bits", "11")],
            "server_max_window_bits=11 is larger than the 10 asked for",
        ),
        (
            C12,
            [("server_no_context_takeover", None)],
            "server didn't accept server_max_window_bits",
        ),
        (
            C12,
            [("server_max_window_bits", "10")],
            "server didn't accept server_no_context_takeover",
        ),
        (
            C12,
            [
                ("server_no_context_takeover", None),
                ("server_max_window_bits", "10"),
                ("client_max_window_bits", "13"),
            ],
            "client_max_window_bits=13 is larger than the 12 offered",
        ),
    ],
)
def test_client_fails(
    settings_: DeflateSettings, answer: list[tuple[str, str | None]], message: str
) -> None:
    with pytest.raises(NegotiationError, match=message):
        ClientPerMessageDeflateFactory(settings_).process_response_params(answer, [])


def test_client_fails_second_negotiation() -> None:
    factory = ClientPerMessageDeflateFactory(C)
    ext = factory.process_response_params([], [])
    with pytest.raises(NegotiationError, match="negotiated twice"):
        factory.process_response_params([], [ext])


def test_factories_reject_bad_settings() -> None:
    with pytest.raises(TypeError, match="settings must be a DeflateSettings, got dict"):
        ClientPerMessageDeflateFactory({"window_bits": 12})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="settings must be a DeflateSettings, got str"):
        ServerPerMessageDeflateFactory("deflate")  # type: ignore[arg-type]


def test_factory_reprs() -> None:
    assert repr(ClientPerMessageDeflateFactory(C)).startswith(
        "ClientPerMessageDeflateFactory(DeflateSettings(window_bits=15"
    )
    assert repr(ServerPerMessageDeflateFactory(S)).startswith(
        "ServerPerMessageDeflateFactory(DeflateSettings(window_bits=12"
    )


def test_default_negotiation() -> None:
    client, server = negotiate(CLIENT_DEFAULTS, SERVER_DEFAULTS)
    assert (client.local_max_window_bits, client.remote_max_window_bits) == (12, 15)
    assert (server.local_max_window_bits, server.remote_max_window_bits) == (15, 12)
    assert (client.memory_level, server.memory_level) == (5, 8)
    # RFC 7692 section 7.1.1: the server's answer turns context takeover off both ways.
    assert client.local_no_context_takeover and client.remote_no_context_takeover
    assert server.local_no_context_takeover and server.remote_no_context_takeover
    client, server = negotiate(CLIENT_DEFAULTS, SERVER_CONTEXT_TAKEOVER)
    assert (client.local_max_window_bits, client.remote_max_window_bits) == (12, 12)
    assert (server.local_max_window_bits, server.remote_max_window_bits) == (12, 12)
    assert not client.local_no_context_takeover and not server.local_no_context_takeover


# enable_*_deflate.


def test_enable_deflate() -> None:
    assert enable_client_deflate(None) == []
    assert enable_server_deflate(None) == []
    [client] = enable_client_deflate("deflate")
    [server] = enable_server_deflate("deflate")
    assert isinstance(client, ClientPerMessageDeflateFactory)
    assert isinstance(server, ServerPerMessageDeflateFactory)
    assert client.settings is CLIENT_DEFAULTS
    assert server.settings is SERVER_DEFAULTS
    [custom] = enable_server_deflate(S15)
    assert isinstance(custom, ServerPerMessageDeflateFactory)
    assert custom.settings is S15
    [custom_client] = enable_client_deflate(S15)
    assert isinstance(custom_client, ClientPerMessageDeflateFactory)
    assert custom_client.settings is S15


@pytest.mark.parametrize("enable", [enable_client_deflate, enable_server_deflate])
def test_enable_deflate_invalid(enable: object) -> None:
    assert callable(enable)
    with pytest.raises(ValueError, match="unsupported compression: 'gzip'"):
        enable("gzip")
    with pytest.raises(TypeError, match="compression must be 'deflate', None or a DeflateSettings"):
        enable(True)
    with pytest.raises(TypeError, match="got dict"):
        enable({"window_bits": 12})


# Interoperability with a third-party implementation (websockets).


def test_interop_websockets_client_our_server() -> None:
    from websockets.extensions import permessage_deflate as wpmd
    from websockets.frames import Frame as WFrame
    from websockets.frames import Opcode as WOpcode

    their_factory = wpmd.ClientPerMessageDeflateFactory(compress_settings={"memLevel": 5})
    answer, ours = ServerPerMessageDeflateFactory(S).process_request_params(
        list(their_factory.get_request_params()), []
    )
    theirs = their_factory.process_response_params(answer, [])
    for message in [b"Hello", b"Hello" * 100, bytes(range(256)), b"Hello" * 100]:
        wframe = theirs.encode(WFrame(WOpcode.BINARY, message))
        frame = ours.decode(
            Frame(Opcode.BINARY, bytes(wframe.data), rsv1=wframe.rsv1), max_size=MiB
        )
        assert frame.data == message
        ours_out = ours.encode(Frame(Opcode.BINARY, message))
        back = theirs.decode(WFrame(WOpcode.BINARY, ours_out.data, rsv1=ours_out.rsv1))
        assert back.data == message


def test_interop_our_client_websockets_server() -> None:
    from websockets.extensions import permessage_deflate as wpmd
    from websockets.frames import Frame as WFrame
    from websockets.frames import Opcode as WOpcode

    their_factory = wpmd.ServerPerMessageDeflateFactory(
        server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
    )
    ours_factory = ClientPerMessageDeflateFactory(CLIENT_DEFAULTS)
    answer, theirs = their_factory.process_request_params(ours_factory.get_request_params(), [])
    ours = ours_factory.process_response_params(list(answer), [])
    assert (ours.local_max_window_bits, ours.remote_max_window_bits) == (12, 12)
    for message in [b"Hello" * 100, b"x" * 5000, b"Hello" * 100]:
        ours_out = ours.encode(Frame(Opcode.TEXT, message))
        back = theirs.decode(WFrame(WOpcode.TEXT, ours_out.data, rsv1=ours_out.rsv1))
        assert back.data == message
        wframe = theirs.encode(WFrame(WOpcode.TEXT, message))
        frame = ours.decode(Frame(Opcode.TEXT, bytes(wframe.data), rsv1=wframe.rsv1), max_size=MiB)
        assert frame.data == message


# Property-based tests.

window_bits = st.integers(9, 15)
deflate_settings = st.builds(
    DeflateSettings,
    window_bits=window_bits,
    memory_level=st.integers(1, 9),
    context_takeover=st.booleans(),
    peer_window_bits=st.none() | window_bits,
    peer_context_takeover=st.booleans(),
    threshold=st.integers(0, 64),
    level=st.integers(-1, 9),
)
# Messages that compress well and badly: repetitive text and random bytes.
payloads = st.one_of(
    st.binary(max_size=3000),
    st.builds(lambda s, n: s * n, st.binary(min_size=1, max_size=20), st.integers(1, 300)),
)
# A message and where to cut it into fragments.
messages = st.tuples(
    st.sampled_from([Opcode.TEXT, Opcode.BINARY]),
    payloads,
    st.lists(st.integers(0, 3000), max_size=4),
)


def fragment(opcode: Opcode, data: bytes, cuts: list[int]) -> list[Frame]:
    points = sorted({min(cut, len(data)) for cut in cuts})
    bounds = [0, *points, len(data)]
    pieces = [data[start:end] for start, end in itertools.pairwise(bounds)]
    return [
        Frame(opcode if i == 0 else Opcode.CONT, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    client_settings=deflate_settings,
    server_settings=deflate_settings,
    to_server=st.lists(messages, max_size=6),
    to_client=st.lists(messages, max_size=6),
)
def test_round_trip_after_negotiation(
    client_settings: DeflateSettings,
    server_settings: DeflateSettings,
    to_server: list[tuple[Opcode, bytes, list[int]]],
    to_client: list[tuple[Opcode, bytes, list[int]]],
) -> None:
    client, server = negotiate(client_settings, server_settings)
    # What was negotiated respects both sides' settings.
    assert client.local_max_window_bits <= client_settings.window_bits
    assert server.local_max_window_bits <= server_settings.window_bits
    assert client.local_max_window_bits == server.remote_max_window_bits
    assert server.local_max_window_bits == client.remote_max_window_bits
    assert client.local_no_context_takeover >= server.remote_no_context_takeover
    assert server.local_no_context_takeover == client.remote_no_context_takeover
    if client_settings.peer_window_bits is not None:
        assert client.remote_max_window_bits <= client_settings.peer_window_bits
    if server_settings.peer_window_bits is not None:
        assert server.remote_max_window_bits <= server_settings.peer_window_bits
    for opcode, data, cuts in to_server:
        assert send(client, server, fragment(opcode, data, cuts)) == data
    for opcode, data, cuts in to_client:
        assert send(server, client, fragment(opcode, data, cuts)) == data


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=200), min_size=1, max_size=3),
    remote_bits=st.integers(8, 15),
    max_size=st.none() | st.integers(0, 2000),
)
def test_decode_arbitrary_bytes(
    payloads: list[bytes], remote_bits: int, max_size: int | None
) -> None:
    ext = pmd(remote_bits=remote_bits)
    for i, payload in enumerate(payloads):
        frame = Frame(
            Opcode.BINARY if i == 0 else Opcode.CONT,
            payload,
            fin=i == len(payloads) - 1,
            rsv1=i == 0,
        )
        try:
            decoded = ext.decode(frame, max_size=max_size)
        except (ProtocolError, PayloadTooBig):
            return
        assert not decoded.rsv1
        assert max_size is None or len(decoded.data) <= max_size


# zlib implementations and shared compressors.


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    previous = deflate.set_backend(request.param)
    yield request.param
    deflate.set_backend(previous)


def test_shared_backend(backend: str) -> None:
    # isal compresses at levels 1 and 2 only; the next implementation at the others.
    fallback = BACKENDS[1] if backend == "isal" else backend
    for level in range(-1, 10):
        expected = backend if level in (1, 2) else fallback
        assert deflate.shared_backend(level) == expected
        codec = pmd(local_nct=True, level=level)
        assert codec.shared_encoding is not None
        assert codec.shared_encoding[0] is deflate._MODULES[expected]


def test_backends() -> None:
    assert BACKENDS[-1] == "zlib"
    assert deflate.backend() in BACKENDS
    with pytest.raises(ValueError, match="unknown or missing deflate backend: 'brotli'"):
        deflate.set_backend("brotli")
    previous = deflate.set_backend("zlib")
    try:
        assert deflate.backend() == "zlib"
        assert pmd()._zlib is zlib
    finally:
        deflate.set_backend(previous)
    assert deflate.backend() == previous


MESSAGES = [
    b'{"type":"chat.message","room":"general","seq":%d,"text":"%s"}' % (i, b"lunch " * (i % 40))
    for i in range(60)
] + [b"", b"x", random.Random(3).randbytes(5000), b"abc" * 20000]


@pytest.mark.parametrize("level", [1, 2, 6])
def test_shared_compressor_same_bytes_as_a_new_one(backend: str, level: int) -> None:
    # Without context takeover a message is compressed by a compressor shared by
    # every connection and reset after each message: the bytes must be those a
    # new compressor writes, whichever connection used it before.
    module = deflate._MODULES[backend]
    if backend == "isal" and level > 2:
        # isal compresses at levels 1 and 2 only: the next implementation.
        module = deflate._MODULES[BACKENDS[1]]
    senders = [pmd(local_nct=True, local_bits=bits, level=level) for bits in (15, 15, 12, 9)]
    assert all(sender.shared_encoding[0] is module for sender in senders)  # type: ignore[index]
    for i, message in enumerate(MESSAGES):
        sender = senders[i % len(senders)]
        bits = sender.local_max_window_bits
        fresh = module.compressobj(level, module.DEFLATED, -bits, 8)
        # A full flush: zlib's writes the bytes of a sync flush, isal's others.
        expected = (fresh.compress(message) + fresh.flush(module.Z_FULL_FLUSH))[:-4]
        frame = sender.encode(Frame(Opcode.BINARY, message))
        assert frame.data == expected
        assert sender._encoder is None
        # Any peer decompresses it on its own, with the standard library.
        assert zlib.decompressobj(-bits).decompress(frame.data + b"\x00\x00\xff\xff") == message


def test_shared_compressor_fragmented_messages_interleaved(backend: str) -> None:
    # Two connections send fragmented messages at the same time: each holds its
    # compressor until its last frame, so their streams don't mix.
    first, second = pmd(local_nct=True), pmd(local_nct=True)
    receivers = [pmd(remote_nct=True), pmd(remote_nct=True)]
    parts = [[b"Hello " * 30, b"World " * 30, b"!"], [b"Goodbye " * 30, b"Moon " * 30, b"?"]]
    out: list[list[bytes]] = [[], []]
    for i in range(3):
        for n, sender in enumerate((first, second)):
            opcode = Opcode.TEXT if i == 0 else Opcode.CONT
            frame = sender.encode(Frame(opcode, parts[n][i], fin=i == 2))
            out[n].append(receivers[n].decode(frame).data)
        if i < 2:
            assert first._encoder is not None and first._encoder is not second._encoder
    assert b"".join(out[0]) == b"".join(parts[0])
    assert b"".join(out[1]) == b"".join(parts[1])
    assert first._encoder is None and second._encoder is None


def test_backends_decode_each_other(backend: str) -> None:
    # Whatever compressed it (the fast implementation or the standard library),
    # a message decodes to the same bytes with the other.
    for local_nct in (False, True):
        sender = pmd(local_nct=local_nct, local_bits=12)
        frames = [sender.encode(Frame(Opcode.BINARY, m)) for m in MESSAGES]
        for other in BACKENDS:
            previous = deflate.set_backend(other)
            try:
                receiver = pmd(remote_nct=local_nct, remote_bits=12)
                for message, frame in zip(MESSAGES, frames, strict=True):
                    assert receiver.decode(frame).data == message
            finally:
                deflate.set_backend(previous)


def test_backend_bombs_refused(backend: str) -> None:
    # max_size bounds decompression with either implementation, one frame or many.
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = (bomb.compress(b"\x00" * (8 << 20)) + bomb.flush(zlib.Z_SYNC_FLUSH))[:-4]
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooBig):
            pmd(remote_nct=True).decode(compressed(data), max_size=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_backend_corrupt_stream(backend: str) -> None:
    with pytest.raises(ProtocolError, match="invalid compressed data"):
        pmd(remote_nct=True).decode(compressed(b"\xff\xff\xff\xff"))


def test_server_extension_factories() -> None:
    from wsharbor.protocol.deflate import server_extension_factories

    custom = ServerPerMessageDeflateFactory(SERVER_DEFAULTS)
    # A custom permessage-deflate factory is kept, and not doubled.
    assert server_extension_factories([custom], "deflate") == [custom]
    [added] = server_extension_factories(None, "deflate")
    assert added.name == "permessage-deflate"
    assert server_extension_factories(None, None) == []
    # A bad compression argument is an error even beside a custom factory.
    with pytest.raises(ValueError, match="unsupported compression"):
        server_extension_factories([custom], "bogus")
