"""Tests of wsharbor.protocol.frames: RFC 6455 section 5 framing, masking, close payloads.

Parsers are fed their input whole, one byte at a time, and with trailing bytes (h11 style).
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsharbor.exceptions import PayloadTooBig, ProtocolError
from wsharbor.protocol import frames
from wsharbor.protocol.frames import (
    CTRL_OPCODES,
    DATA_OPCODES,
    DIRECT_READ_MIN,
    HEADER_MAX,
    SEND_JOIN_BELOW,
    SPEEDUPS,
    Close,
    CloseCode,
    Frame,
    FrameParser,
    Opcode,
    apply_mask,
    apply_mask_inplace,
    apply_mask_inplace_python,
    apply_mask_python,
    serialize_data_frame,
    serialize_data_frame_parts,
    serialize_frame,
    serialize_frame_parts,
)

# Helpers.


def parse_all(parser: FrameParser) -> list[Frame]:
    """Every complete frame the parser holds."""
    out = []
    while (frame := parser.parse()) is not None:
        out.append(frame)
    return out


def feed_whole(data: bytes, *, mask: bool, max_size: int | None = None) -> list[Frame]:
    parser = FrameParser(mask=mask, max_size=max_size)
    parser.feed(data)
    out = parse_all(parser)
    assert parser.buffered == 0
    return out


def feed_bytewise(data: bytes, *, mask: bool) -> list[Frame]:
    parser = FrameParser(mask=mask)
    out = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        out.extend(parse_all(parser))
    assert parser.buffered == 0
    return out


def fixed_mask(monkeypatch: pytest.MonkeyPatch, key: bytes) -> None:
    """Make serialize_frame() use ``key`` as its masking key."""
    monkeypatch.setattr(frames.os, "urandom", lambda n: key)


def raw_header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = False,
    length_class: int | None = None,
) -> bytes:
    """A frame header with any values, valid or not; ``length_class`` forces 7/16/64 bits."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if length_class is None:
        length_class = 7 if length < 126 else 16 if length < 65536 else 64
    if length_class == 7:
        return struct.pack("!BB", b0, mask_bit | length)
    if length_class == 16:
        return struct.pack("!BBH", b0, mask_bit | 126, length)
    return struct.pack("!BBQ", b0, mask_bit | 127, length)


# RFC 6455 section 5.7: examples.

HELLO_MASK = bytes.fromhex("37fa213d")
PAYLOAD_256 = bytes(range(256))
PAYLOAD_64K = bytes(range(256)) * 256

RFC_EXAMPLES = [
    pytest.param(
        bytes.fromhex("810548656c6c6f"),
        False,
        [Frame(Opcode.TEXT, b"Hello")],
        id="single-frame-unmasked-text",
    ),
    pytest.param(
        bytes.fromhex("818537fa213d7f9f4d5158"),
        True,
        [Frame(Opcode.TEXT, b"Hello")],
        id="single-frame-masked-text",
    ),
    pytest.param(
        bytes.fromhex("010348656c") + bytes.fromhex("80026c6f"),
        False,
        [Frame(Opcode.TEXT, b"Hel", fin=False), Frame(Opcode.CONT, b"lo")],
        id="fragmented-unmasked-text",
    ),
    pytest.param(
        bytes.fromhex("890548656c6c6f"),
        False,
        [Frame(Opcode.PING, b"Hello")],
        id="unmasked-ping",
    ),
    pytest.param(
        bytes.fromhex("8a8537fa213d7f9f4d5158"),
        True,
        [Frame(Opcode.PONG, b"Hello")],
        id="masked-pong",
    ),
    pytest.param(
        bytes.fromhex("827E0100") + PAYLOAD_256,
        False,
        [Frame(Opcode.BINARY, PAYLOAD_256)],
        id="256-bytes-binary-16-bit-length",
    ),
    pytest.param(
        bytes.fromhex("827F0000000000010000") + PAYLOAD_64K,
        False,
        [Frame(Opcode.BINARY, PAYLOAD_64K)],
        id="64KiB-binary-64-bit-length",
    ),
]


@pytest.mark.parametrize(("data", "mask", "expected"), RFC_EXAMPLES)
def test_rfc_example_whole(data: bytes, mask: bool, expected: list[Frame]) -> None:
    assert feed_whole(data, mask=mask) == expected


@pytest.mark.parametrize(("data", "mask", "expected"), RFC_EXAMPLES)
def test_rfc_example_one_byte_at_a_time(data: bytes, mask: bool, expected: list[Frame]) -> None:
    assert feed_bytewise(data, mask=mask) == expected


@pytest.mark.parametrize(("data", "mask", "expected"), RFC_EXAMPLES)
def test_rfc_example_with_trailing_bytes(data: bytes, mask: bool, expected: list[Frame]) -> None:
    # The start of the next frame: a header whose payload has not arrived yet.
    trailing = b"\x81\x85\x00\x01\x02" if mask else b"\x81\x05Hel"
    parser = FrameParser(mask=mask)
    parser.feed(data + trailing)
    assert parse_all(parser) == expected
    assert parser.buffered == len(trailing)
    assert parser.parse() is None  # still incomplete, and idempotent
    assert parser.take_buffer() == trailing
    assert parser.buffered == 0
    assert parser.take_buffer() == b""


@pytest.mark.parametrize(("data", "mask", "expected"), RFC_EXAMPLES)
def test_rfc_example_serialize(
    monkeypatch: pytest.MonkeyPatch, data: bytes, mask: bool, expected: list[Frame]
) -> None:
    # The examples' masked frames use the key 37 fa 21 3d.
    fixed_mask(monkeypatch, HELLO_MASK)
    assert b"".join(serialize_frame(frame, mask=mask) for frame in expected) == data


def test_trailing_bytes_are_kept_after_the_buffer_is_compacted() -> None:
    big = serialize_frame(Frame(Opcode.BINARY, b"x" * 70_000), mask=False)
    small = serialize_frame(Frame(Opcode.TEXT, b"tail"), mask=False)
    parser = FrameParser(mask=False)
    parser.feed(big + small[:3])
    assert parser.parse() == Frame(Opcode.BINARY, b"x" * 70_000)
    assert parser.buffered == 3
    assert parser.parse() is None
    parser.feed(small[3:])
    assert parser.parse() == Frame(Opcode.TEXT, b"tail")
    assert parser.buffered == 0


def test_feed_accepts_bytearray_and_memoryview() -> None:
    data = bytes.fromhex("818537fa213d7f9f4d5158")
    parser = FrameParser(mask=True)
    parser.feed(bytearray(data[:4]))
    parser.feed(memoryview(data)[4:])
    assert parser.parse() == Frame(Opcode.TEXT, b"Hello")


@pytest.mark.parametrize(
    ("partial", "mask"),
    [
        (b"", False),
        (b"\x81", False),
        (b"\x82\x7e\x01", False),  # 16-bit length incomplete
        (b"\x82\x7f\x00\x00\x00\x00\x00\x00\x01", False),  # 64-bit length incomplete
        (b"\x81\x85\x37\xfa\x21", True),  # masking key incomplete
        (b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f", True),  # payload incomplete
    ],
)
def test_incomplete_frame_returns_none(partial: bytes, mask: bool) -> None:
    parser = FrameParser(mask=mask)
    parser.feed(partial)
    assert parser.parse() is None
    assert parser.buffered == len(partial)


# Serialization round trips.

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536]


def _roundtrip_cases() -> list[object]:
    cases = []
    for opcode in Opcode:
        for length in LENGTHS:
            if opcode in CTRL_OPCODES and length > 125:
                continue
            cases.append(pytest.param(opcode, length, id=f"{opcode.name}-{length}"))
    return cases


def _header_size(length: int, mask: bool) -> int:
    return (2 if length < 126 else 4 if length < 65536 else 10) + (4 if mask else 0)


@pytest.mark.parametrize("mask", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize(("opcode", "length"), _roundtrip_cases())
def test_serialize_roundtrip(opcode: Opcode, length: int, mask: bool) -> None:
    payload = os.urandom(length) if opcode is not Opcode.CLOSE else b""
    fin = True if opcode in CTRL_OPCODES else length % 2 == 0
    frame = Frame(opcode, payload, fin=fin)
    wire = serialize_frame(frame, mask=mask)
    assert len(wire) == _header_size(len(payload), mask) + len(payload)
    assert bool(wire[1] & 0x80) is mask
    if mask and payload:
        # The payload region holds the payload XORed with the frame's own mask key.
        key, masked = wire[-len(payload) - 4 : -len(payload)], wire[-len(payload) :]
        assert apply_mask_python(masked, key) == payload
    assert feed_whole(wire, mask=mask) == [frame]


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("rsv", range(8))
def test_serialize_roundtrip_reserved_bits(rsv: int, mask: bool) -> None:
    frame = Frame(Opcode.BINARY, b"rsv", rsv1=bool(rsv & 4), rsv2=bool(rsv & 2), rsv3=bool(rsv & 1))
    wire = serialize_frame(frame, mask=mask)
    assert (wire[0] >> 4) & 0x7 == rsv
    assert feed_whole(wire, mask=mask) == [frame]


@pytest.mark.parametrize("fin", [True, False])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.CONT])
@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
def test_serialize_data_frame_is_serialize_frame_without_the_frame(
    opcode: Opcode, length: int, fin: bool
) -> None:
    payload = os.urandom(length)
    # Unmasked: the same bytes.
    assert serialize_data_frame(opcode, payload, fin=fin, mask=False) == serialize_frame(
        Frame(opcode, payload, fin), mask=False
    )
    # Masked (fresh random key): same length, and it parses back to the same frame.
    wire = serialize_data_frame(opcode, payload, fin=fin, mask=True)
    assert len(wire) == _header_size(length, True) + length
    assert feed_whole(wire, mask=True) == [Frame(opcode, payload, fin)]


def test_serialize_uses_minimal_length_encoding() -> None:
    assert serialize_frame(Frame(Opcode.BINARY, b"a" * 125), mask=False)[1] == 125
    assert serialize_frame(Frame(Opcode.BINARY, b"a" * 126), mask=False)[1:4] == b"\x7e\x00\x7e"
    wire = serialize_frame(Frame(Opcode.BINARY, b"a" * 65536), mask=False)
    assert wire[1:10] == b"\x7f" + (65536).to_bytes(8, "big")


def test_serialize_masks_with_a_fresh_key_each_time() -> None:
    frame = Frame(Opcode.TEXT, b"Hello")
    keys = {serialize_frame(frame, mask=True)[2:6] for _ in range(16)}
    assert len(keys) > 1


def test_parser_accepts_non_minimal_length_encoding() -> None:
    # RFC 6455 section 5.2 asks senders for the minimal encoding; a receiver may
    # accept others. Length 5 in a 16-bit and a 64-bit field:
    for length_class in (16, 64):
        wire = raw_header(Opcode.TEXT, 5, length_class=length_class) + b"Hello"
        assert feed_whole(wire, mask=False) == [Frame(Opcode.TEXT, b"Hello")]


# Parser errors (RFC 6455 section 5).


@pytest.mark.parametrize("mask", [False, True])
def test_64_bit_length_with_msb_set(mask: bool) -> None:
    parser = FrameParser(mask=mask)
    parser.feed(raw_header(Opcode.BINARY, 1 << 63, masked=mask, length_class=64))
    with pytest.raises(ProtocolError, match="most significant bit"):
        parser.parse()


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_reserved_opcode(opcode: int, mask: bool) -> None:
    parser = FrameParser(mask=mask)
    parser.feed(raw_header(opcode, 0, masked=mask) + (b"\0\0\0\0" if mask else b""))
    with pytest.raises(ProtocolError, match="reserved opcode"):
        parser.parse()


def test_reserved_opcode_detected_from_the_first_two_bytes() -> None:
    parser = FrameParser(mask=False)
    parser.feed(b"\x83\x7f")  # 64-bit length not received yet
    with pytest.raises(ProtocolError):
        parser.parse()


def test_masked_frame_to_client() -> None:
    parser = FrameParser(mask=False)
    parser.feed(bytes.fromhex("818537fa213d7f9f4d5158"))
    with pytest.raises(ProtocolError, match="server frame masked"):
        parser.parse()


def test_unmasked_frame_to_server() -> None:
    parser = FrameParser(mask=True)
    parser.feed(bytes.fromhex("810548656c6c6f"))
    with pytest.raises(ProtocolError, match="client frame not masked"):
        parser.parse()


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("opcode", sorted(CTRL_OPCODES))
@pytest.mark.parametrize("length", [126, 65535, 65536])
def test_control_frame_too_long(opcode: Opcode, length: int, mask: bool) -> None:
    parser = FrameParser(mask=mask)
    # Header only: the error comes before the payload.
    parser.feed(raw_header(opcode, length, masked=mask))
    with pytest.raises(ProtocolError, match="control frame too long"):
        parser.parse()


@pytest.mark.parametrize("opcode", sorted(CTRL_OPCODES))
def test_control_frame_of_125_bytes_is_valid(opcode: Opcode) -> None:
    data = (b"\x03\xe8" + b"a" * 123) if opcode is Opcode.CLOSE else b"p" * 125
    wire = raw_header(opcode, 125) + data
    assert feed_whole(wire, mask=False) == [Frame(opcode, data)]


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("opcode", sorted(CTRL_OPCODES))
def test_fragmented_control_frame(opcode: Opcode, mask: bool) -> None:
    parser = FrameParser(mask=mask)
    parser.feed(raw_header(opcode, 0, fin=False, masked=mask))
    with pytest.raises(ProtocolError, match="fragmented control frame"):
        parser.parse()


@pytest.mark.parametrize("opcode", sorted(CTRL_OPCODES))
def test_serialize_rejects_invalid_control_frames(opcode: Opcode) -> None:
    with pytest.raises(ProtocolError, match="too long"):
        serialize_frame(Frame(opcode, b"a" * 126), mask=False)
    with pytest.raises(ProtocolError, match="fragmented"):
        serialize_frame(Frame(opcode, b"", fin=False), mask=True)


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("length", [11, 126, 65536, 2**40])
def test_max_size_raised_from_the_header_alone(length: int, mask: bool) -> None:
    parser = FrameParser(mask=mask, max_size=10)
    # No masking key, no payload: only the header was received.
    parser.feed(raw_header(Opcode.BINARY, length, masked=mask))
    with pytest.raises(PayloadTooBig, match=f"frame of {length} bytes exceeds limit of 10"):
        parser.parse()


@pytest.mark.parametrize("mask", [False, True])
def test_max_size_allows_a_frame_of_exactly_max_size(mask: bool) -> None:
    frame = Frame(Opcode.BINARY, b"0123456789")
    assert feed_whole(serialize_frame(frame, mask=mask), mask=mask, max_size=10) == [frame]


def test_max_size_none_means_no_limit() -> None:
    frame = Frame(Opcode.BINARY, PAYLOAD_64K)
    assert feed_whole(serialize_frame(frame, mask=False), mask=False, max_size=None) == [frame]


def test_reserved_bits_are_reported_not_rejected() -> None:
    # The connection checks them against the negotiated extensions.
    assert feed_whole(b"\xf1\x00", mask=False) == [
        Frame(Opcode.TEXT, b"", rsv1=True, rsv2=True, rsv3=True)
    ]


# Close payloads (RFC 6455 sections 5.5.1 and 7.4).


def expected_valid_on_the_wire(code: int) -> bool:
    """RFC 6455 section 7.4, written independently of the implementation."""
    if code in (1000, 1001, 1002, 1003):
        return True
    if 1007 <= code <= 1014:  # 1012-1014 are registered with IANA
        return True
    return 3000 <= code <= 4999


def test_close_code_classification_0_to_5000() -> None:
    valid = []
    for code in range(5001):
        payload = struct.pack("!H", code) + b"bye"
        if expected_valid_on_the_wire(code):
            valid.append(code)
            assert Close.parse(payload) == Close(code, "bye")
            Close(code, "bye").check()
            assert Close(code, "bye").serialize() == payload
        else:
            with pytest.raises(ProtocolError, match=f"invalid close code {code}"):
                Close.parse(payload)
            with pytest.raises(ProtocolError, match=f"invalid close code {code}"):
                Close(code, "bye").check()
            if code != 1005:  # 1005 stands for "no code": see below
                with pytest.raises(ProtocolError, match=f"invalid close code {code}"):
                    Close(code).serialize()
    assert len(valid) == 4 + 8 + 2000


@pytest.mark.parametrize("code", [1004, 1005, 1006, 1015, 0, 999, 1016, 2999, 5000, 65535])
def test_invalid_close_codes_named_by_the_rfc(code: int) -> None:
    with pytest.raises(ProtocolError):
        Close.parse(struct.pack("!H", code))


def test_close_parse_empty_payload_is_1005() -> None:
    assert Close.parse(b"") == Close(CloseCode.NO_STATUS_RCVD, "")
    assert Close.parse(memoryview(b"")) == Close(1005, "")


def test_close_parse_one_byte_payload() -> None:
    with pytest.raises(ProtocolError, match="1 byte"):
        Close.parse(b"\x03")


def test_close_parse_code_without_reason() -> None:
    assert Close.parse(b"\x03\xe8") == Close(1000, "")


def test_close_parse_utf8_reason() -> None:
    assert Close.parse(b"\x03\xe9" + "κόσμε".encode()) == Close(1001, "κόσμε")


@pytest.mark.parametrize(
    "reason", [b"\xff", b"\xce\xba\xe1", b"\xed\xa0\x80", b"\xc0\xaf", b"ok\xf4\x90\x80\x80"]
)
def test_close_parse_invalid_utf8_reason(reason: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        Close.parse(b"\x03\xe8" + reason)


def test_close_serialize_1005_is_empty() -> None:
    assert Close(1005).serialize() == b""
    assert Close(CloseCode.NO_STATUS_RCVD, "").serialize() == b""


def test_close_serialize_1005_with_reason() -> None:
    with pytest.raises(ProtocolError, match="without code"):
        Close(1005, "why").serialize()


@pytest.mark.parametrize(
    ("reason", "ok"),
    [
        ("a" * 123, True),
        ("a" * 124, False),
        ("é" * 61 + "a", True),  # 123 bytes
        ("é" * 62, False),  # 124 bytes although 62 characters
        ("😀" * 30 + "abc", True),  # 123 bytes
        ("😀" * 31, False),
    ],
)
def test_close_reason_length(reason: str, ok: bool) -> None:
    close = Close(1000, reason)
    if ok:
        close.check()
        wire = close.serialize()
        assert len(wire) == 125
        assert Close.parse(wire) == close
    else:
        with pytest.raises(ProtocolError, match="123 bytes"):
            close.check()
        with pytest.raises(ProtocolError, match="123 bytes"):
            close.serialize()


@pytest.mark.parametrize(
    ("close", "text"),
    [
        (Close(1000), "1000 (OK)"),
        (Close(1001, "bye"), "1001 (going away) bye"),
        (Close(1005), "1005 (no status received [internal])"),
        (Close(1006), "1006 (connection closed abnormally [internal])"),
        (Close(1011, "oops"), "1011 (internal error) oops"),
        (Close(1015), "1015 (TLS handshake failure [internal])"),
        (Close(3000), "3000 (registered)"),
        (Close(3999, "x"), "3999 (registered) x"),
        (Close(4000), "4000 (private use)"),
        (Close(4999), "4999 (private use)"),
        (Close(1004), "1004 (unknown)"),
        (Close(2000), "2000 (unknown)"),
        (Close(5000), "5000 (unknown)"),
    ],
)
def test_close_str(close: Close, text: str) -> None:
    assert str(close) == text


def test_close_code_enum_values() -> None:
    assert [int(c) for c in CloseCode] == [*range(1000, 1004), *range(1005, 1016)]


# Frames.


@pytest.mark.parametrize(
    ("frame", "text"),
    [
        (Frame(Opcode.TEXT, b"Hello"), "TEXT [F] 5 bytes"),
        (Frame(Opcode.CONT, b"", fin=False), "CONT [-] 0 bytes"),
        (Frame(Opcode.BINARY, b"ab", rsv1=True), "BINARY [F1] 2 bytes"),
        (Frame(Opcode.PING, b"", rsv2=True, rsv3=True), "PING [F23] 0 bytes"),
        (Frame(Opcode.PONG, b"x", fin=False, rsv1=True, rsv3=True), "PONG [13] 1 bytes"),
        (Frame(Opcode.CLOSE, b"\x03\xe8"), "CLOSE [F] 2 bytes"),
    ],
)
def test_frame_str(frame: Frame, text: str) -> None:
    assert str(frame) == text


def test_frame_check_accepts_valid_frames() -> None:
    Frame(Opcode.TEXT, b"a" * 1000, fin=False).check()
    Frame(Opcode.PING, b"a" * 125).check()


def test_opcode_sets() -> None:
    assert set(DATA_OPCODES) == {Opcode.CONT, Opcode.TEXT, Opcode.BINARY}
    assert set(CTRL_OPCODES) == {Opcode.CLOSE, Opcode.PING, Opcode.PONG}


# Masking (RFC 6455 section 5.3).


def reference_mask(data: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


MASK_LENGTHS = [*range(71), 127, 128, 1000, 4095, 4096, 4097, 65536 + 3]


@pytest.mark.parametrize("length", MASK_LENGTHS)
def test_apply_mask_c_and_python_agree(length: int) -> None:
    data = os.urandom(length)
    mask = os.urandom(4)
    expected = reference_mask(data, mask)
    assert apply_mask_python(data, mask) == expected
    assert apply_mask(data, mask) == expected
    assert apply_mask(expected, mask) == data  # masking is an involution


@pytest.mark.parametrize("offset", range(8))
@pytest.mark.parametrize("length", [0, 1, 3, 7, 8, 15, 16, 17, 33, 100])
def test_apply_mask_unaligned_memoryview_slices(offset: int, length: int) -> None:
    buf = bytearray(os.urandom(offset + length + 8))
    mask = b"\x01\x02\xfe\xff"
    view = memoryview(buf)[offset : offset + length]
    expected = reference_mask(bytes(view), mask)
    assert apply_mask(view, mask) == expected
    assert apply_mask_python(view, mask) == expected


@pytest.mark.parametrize("func", [apply_mask, apply_mask_python])
def test_apply_mask_bytearray_input_returns_bytes(func: object) -> None:
    data = bytearray(b"Hello")
    result = func(data, HELLO_MASK)  # type: ignore[operator]
    assert type(result) is bytes
    assert result == bytes.fromhex("7f9f4d5158")
    assert data == bytearray(b"Hello")  # input untouched


@pytest.mark.parametrize("func", [apply_mask, apply_mask_python])
@pytest.mark.parametrize("mask", [b"", b"\x01", b"\x01\x02\x03", b"\x01\x02\x03\x04\x05"])
def test_apply_mask_wrong_mask_length(func: object, mask: bytes) -> None:
    with pytest.raises(ValueError, match="4 bytes"):
        func(b"data", mask)  # type: ignore[operator]


def test_c_accelerator_directly() -> None:
    speedups = pytest.importorskip("wsharbor.protocol._speedups")
    assert speedups.apply_mask(data=b"Hello", mask=HELLO_MASK) == bytes.fromhex("7f9f4d5158")
    with pytest.raises(ValueError, match="4 bytes"):
        speedups.apply_mask(b"data", b"\x00" * 8)
    with pytest.raises(TypeError):
        speedups.apply_mask("text", HELLO_MASK)


def test_speedups_flag_matches_apply_mask() -> None:
    assert SPEEDUPS is (apply_mask is not apply_mask_python)


@pytest.mark.skipif(
    os.environ.get("WSHARBOR_REQUIRE_SPEEDUPS") != "1",
    reason="WSHARBOR_REQUIRE_SPEEDUPS=1 is not set (the Makefile sets it)",
)
def test_speedups_required() -> None:
    assert SPEEDUPS is True, "the C accelerator wsharbor.protocol._speedups was not built"


def test_no_speedups_env_loads_the_fallback() -> None:
    code = textwrap.dedent(
        """
        from wsharbor.protocol import frames
        assert frames.SPEEDUPS is False, frames.SPEEDUPS
        assert frames.apply_mask is frames.apply_mask_python
        parser = frames.FrameParser(mask=True)
        parser.feed(bytes.fromhex("818537fa213d7f9f4d5158"))
        assert parser.parse() == frames.Frame(frames.Opcode.TEXT, b"Hello")
        wire = frames.serialize_frame(frames.Frame(frames.Opcode.BINARY, b"x" * 300), mask=True)
        parser.feed(wire)
        assert parser.parse().data == b"x" * 300
        print("ok")
        """
    )
    env = {**os.environ, "WSHARBOR_NO_SPEEDUPS": "1"}
    env.pop("WSHARBOR_REQUIRE_SPEEDUPS", None)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# Masking in place.


@pytest.mark.parametrize("func", [apply_mask_inplace, apply_mask_inplace_python])
@pytest.mark.parametrize("offset", range(9))
@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 15, 16, 17, 31, 100, 20_000])
def test_apply_mask_inplace_from_any_payload_offset(func: object, offset: int, length: int) -> None:
    """Unmasking a payload piece by piece, each piece at its offset, gives the
    payload unmasked whole."""
    payload = os.urandom(offset + length)
    mask = os.urandom(4)
    expected = reference_mask(payload, mask)
    buf = bytearray(payload)
    func(memoryview(buf)[:offset], mask, 0)  # type: ignore[operator]
    func(memoryview(buf)[offset:], mask, offset)  # type: ignore[operator]
    assert bytes(buf) == expected


@pytest.mark.parametrize("func", [apply_mask_inplace, apply_mask_inplace_python])
def test_apply_mask_inplace_bytearray_and_errors(func: object) -> None:
    data = bytearray(b"Hello")
    assert func(data, HELLO_MASK, 0) is None  # type: ignore[operator]
    assert data == bytes.fromhex("7f9f4d5158")
    with pytest.raises(ValueError, match="4 bytes"):
        func(data, b"\x01\x02\x03", 0)  # type: ignore[operator]
    with pytest.raises(ValueError, match="offset"):
        func(data, HELLO_MASK, -1)  # type: ignore[operator]
    with pytest.raises(TypeError):
        func(b"read-only", HELLO_MASK, 0)  # type: ignore[operator]


def test_payload_buffer() -> None:
    speedups = pytest.importorskip("wsharbor.protocol._speedups")
    mask = os.urandom(4)
    payload = os.urandom(100)
    wire = reference_mask(payload, mask)
    buf = speedups.PayloadBuffer(100)
    assert buf.size == 100
    buf.write(0, wire[:7], mask)  # copied and unmasked in one pass
    view = memoryview(buf)
    assert not view.readonly
    view[7:50] = wire[7:50]  # a read straight into it
    apply_mask_inplace(view[7:50], mask, 7)
    buf.write(50, payload[50:])  # no mask: copied as it is
    data = buf.finish()
    assert type(data) is bytes
    assert data == payload
    with pytest.raises(BufferError):
        memoryview(buf)
    with pytest.raises(ValueError, match="finished"):
        buf.finish()
    with pytest.raises(ValueError, match="finished"):
        buf.write(0, b"x")


def test_payload_buffer_spare_bytes() -> None:
    """``spare`` bytes after the payload can be read into and are dropped by
    finish(), without moving the payload (a view made before still reads it)."""
    speedups = pytest.importorskip("wsharbor.protocol._speedups")
    buf = speedups.PayloadBuffer(10, 4)
    assert buf.size == 10
    view = memoryview(buf)
    assert len(view) == 14
    view[:] = b"0123456789abcd"
    with pytest.raises(ValueError, match="past the end"):
        buf.write(8, b"xyz")  # write() stays within the payload
    data = buf.finish()
    assert data == b"0123456789"
    assert len(data) == 10
    assert hash(data) == hash(b"0123456789")
    assert bytes(view[:10]) == data  # the same memory
    with pytest.raises(ValueError, match="spare"):
        speedups.PayloadBuffer(10, 65)
    with pytest.raises(ValueError, match="spare"):
        speedups.PayloadBuffer(10, -1)


def test_payload_buffer_bounds() -> None:
    speedups = pytest.importorskip("wsharbor.protocol._speedups")
    buf = speedups.PayloadBuffer(4)
    with pytest.raises(ValueError, match="past the end"):
        buf.write(2, b"xyz")
    with pytest.raises(ValueError, match="past the end"):
        buf.write(-1, b"x")
    with pytest.raises(ValueError, match="4 bytes"):
        buf.write(0, b"x", b"12")
    with pytest.raises(ValueError, match="positive"):
        speedups.PayloadBuffer(0)
    with pytest.raises(MemoryError):
        speedups.PayloadBuffer(2**62)


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")  # pragma: no cover


@pytest.mark.skipif(not SPEEDUPS, reason="the pure-Python payload grows as bytes arrive")
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux only")
def test_a_header_alone_costs_no_resident_memory() -> None:
    """The payload buffer of a frame is allocated from its header, not initialised:
    a peer announcing large frames and sending nothing more makes no memory
    resident (the pure-Python fallback grows its buffer as the payload arrives)."""
    size = 64 * 2**20
    parsers = [FrameParser(mask=True) for _ in range(8)]
    before = _rss_kib()
    for parser in parsers:
        parser.feed(raw_header(Opcode.BINARY, size, masked=True) + b"mask" + b"x" * 100)
        assert parser.parse() is None
        assert parser.pending is not None
    grown = _rss_kib() - before
    assert grown < 8 * size // 1024 // 16, f"{grown} KiB resident for 8 headers of 64 MiB"


# Frames whose payload arrives in pieces.

MASK_KEY = b"\x12\x34\x56\x78"


def test_pending_frame_assembled_from_pieces_of_any_size() -> None:
    payload = os.urandom(50_000)
    wire = serialize_frame(Frame(Opcode.BINARY, payload), mask=True)
    parser = FrameParser(mask=True)
    pos = 0
    for size in [1, 3, 5, 4, 7, 100, 4093, 10_000, 1]:
        parser.feed(wire[pos : pos + size])
        pos += size
        assert parser.parse() is None
        assert parser.buffered == pos
    pending = parser.pending
    assert pending is not None
    assert (pending.opcode, pending.length, pending.fin) == (Opcode.BINARY, 50_000, True)
    assert pending.received == pos - len(pending.header) == pending.received
    assert len(pending.header) == 2 + 2 + 4
    # What was received so far, unmasked, and nothing twice.
    taken = bytes(pending.take())
    assert taken == payload[: pending.received]
    assert bytes(pending.take()) == b""
    parser.feed(wire[pos:] + wire)  # the rest, and the next frame whole
    assert parser.parse() == Frame(Opcode.BINARY, payload)
    assert parser.taken == len(taken)  # taken from it while it was pending
    assert parser.parse() == Frame(Opcode.BINARY, payload)
    assert parser.taken == 0  # this one arrived whole
    assert parser.parse() is None
    assert parser.pending is None
    assert parser.buffered == 0


@pytest.mark.parametrize("mask", [True, False])
def test_take_buffer_gives_a_pending_frame_back_as_received(mask: bool) -> None:
    wire = serialize_frame(Frame(Opcode.TEXT, b"x" * 300, fin=False), mask=mask)
    parser = FrameParser(mask=mask)
    parser.feed(wire[:100])
    assert parser.parse() is None
    assert parser.pending is not None
    assert parser.buffered == 100
    assert parser.take_buffer() == wire[:100]
    assert parser.pending is None
    assert parser.buffered == 0


def test_header_checks_come_before_the_pending_payload() -> None:
    parser = FrameParser(mask=True, max_size=1000)
    parser.feed(raw_header(Opcode.BINARY, 1001, masked=True) + MASK_KEY)
    with pytest.raises(PayloadTooBig):
        parser.parse()
    parser = FrameParser(mask=True)
    parser.feed(raw_header(Opcode.PING, 126, masked=True) + MASK_KEY + b"x")
    with pytest.raises(ProtocolError, match="control frame too long"):
        parser.parse()


def test_no_pending_frame_before_the_masking_key_is_complete() -> None:
    parser = FrameParser(mask=True)
    parser.feed(raw_header(Opcode.BINARY, 1000, masked=True) + MASK_KEY[:3])
    assert parser.parse() is None
    assert parser.pending is None
    parser.feed(MASK_KEY[3:] + reference_mask(b"a" * 10, MASK_KEY))
    assert parser.parse() is None
    pending = parser.pending
    assert pending is not None
    assert bytes(pending.take()) == b"a" * 10


@pytest.mark.parametrize("mask", [True, False])
def test_receive_buffer_reads_a_large_payload_in_place(mask: bool) -> None:
    payload = os.urandom(3 * DIRECT_READ_MIN + 5)
    wire = serialize_frame(Frame(Opcode.BINARY, payload), mask=mask)
    parser = FrameParser(mask=mask)
    assert parser.receive_buffer(1 << 20) is None  # between frames
    parser.feed(wire[:1000])
    assert parser.parse() is None
    pos = 1000
    while True:
        view = parser.receive_buffer(DIRECT_READ_MIN)
        if not SPEEDUPS:
            assert view is None  # the fallback has no buffer to lend
            assert not parser.lent
            break
        if view is None:
            # Less than DIRECT_READ_MIN left: read elsewhere, and feed.
            assert len(wire) - pos < DIRECT_READ_MIN
            break
        assert parser.lent
        assert len(view) == min(DIRECT_READ_MIN, len(wire) - pos)
        size = len(view) - 3  # a short read
        view[:size] = wire[pos : pos + size]
        parser.received_into(size)
        assert not parser.lent
        pos += size
        assert parser.parse() is None
        assert parser.buffered == pos
    parser.feed(wire[pos:])
    frame = parser.parse()
    assert frame == Frame(Opcode.BINARY, payload)
    assert parser.buffered == 0


@pytest.mark.parametrize("mask", [True, False])
def test_reads_of_large_frames_stop_at_the_next_header(mask: bool) -> None:
    """read_size() as an I/O layer uses it: after a large frame, the next read
    asks for a header at most, so the payload after it is lent in place and
    nothing is fed (copied) but headers and the short end of a payload."""
    small = serialize_frame(Frame(Opcode.TEXT, b"small"), mask=mask)
    payloads = [os.urandom(3 * DIRECT_READ_MIN + n) for n in (5, 0, 77)]
    wire = b"".join(serialize_frame(Frame(Opcode.BINARY, p), mask=mask) for p in payloads)
    wire = small + wire + small
    parser = FrameParser(mask=mask)
    read_limit = 65536
    assert parser.read_size(read_limit) == read_limit  # nothing seen yet
    pos, fed, frames = 0, 0, []
    while pos < len(wire):
        view = parser.receive_buffer(1 << 20)
        if view is not None:
            size = min(len(view), len(wire) - pos)
            view[:size] = wire[pos : pos + size]
            parser.received_into(size)
        else:
            size = min(parser.read_size(read_limit), len(wire) - pos)
            parser.feed(wire[pos : pos + size])
            fed += size
        pos += size
        while (frame := parser.parse()) is not None:
            frames.append(frame)
    assert [f.data for f in frames] == [b"small", *payloads, b"small"]
    if SPEEDUPS:
        # The first large frame's beginning came with the small frame before
        # it; after it, only headers and the second small frame were fed.
        assert fed < read_limit + 3 * 14 + len(small)
        assert parser.read_size(read_limit) == read_limit  # once after the small frame
    else:
        # Without the accelerator nothing is lent: the last small frame came
        # with the end of the large payload, and the read after them is the
        # one header-sized read that follows a large frame.
        assert parser.read_size(read_limit) == 14
        assert parser.read_size(read_limit) == read_limit


@pytest.mark.parametrize("mask", [True, False])
def test_receive_buffer_ahead_returns_what_follows_the_payload(mask: bool) -> None:
    """With ``ahead``, the view that ends a payload goes on past it: the bytes
    read there (the next frame's header) are returned, to feed next; the
    payload is complete without them."""
    first = os.urandom(3 * DIRECT_READ_MIN)
    second = b"the next frame"
    wire = serialize_frame(Frame(Opcode.BINARY, first), mask=mask)
    wire += serialize_frame(Frame(Opcode.TEXT, second), mask=mask)
    parser = FrameParser(mask=mask)
    parser.feed(wire[:100])
    assert parser.parse() is None
    view = parser.receive_buffer(1 << 20, ahead=HEADER_MAX)
    if not SPEEDUPS:
        assert view is None
        return
    assert view is not None
    end = len(wire) - len(serialize_frame(Frame(Opcode.TEXT, second), mask=mask))
    assert len(view) == end - 100 + HEADER_MAX
    size = min(len(view), len(wire) - 100)
    view[:size] = wire[100 : 100 + size]
    beyond = parser.received_into(size)
    assert beyond == wire[end : 100 + size]
    assert len(beyond) == HEADER_MAX
    assert parser.parse() == Frame(Opcode.BINARY, first)
    parser.feed(beyond + wire[100 + size :])
    assert parser.parse() == Frame(Opcode.TEXT, second)
    # A view that doesn't reach the payload's end has nothing after it; a
    # short read into one that does returns nothing either.
    parser.feed(wire[:100])
    assert parser.parse() is None
    view = parser.receive_buffer(DIRECT_READ_MIN, ahead=HEADER_MAX)
    assert view is not None and len(view) == DIRECT_READ_MIN
    view[:] = wire[100 : 100 + DIRECT_READ_MIN]
    assert parser.received_into(DIRECT_READ_MIN) == b""
    view = parser.receive_buffer(1 << 20, ahead=HEADER_MAX)
    assert view is not None
    rest = end - 100 - DIRECT_READ_MIN
    view[:rest] = wire[100 + DIRECT_READ_MIN : end]
    assert parser.received_into(rest) == b""
    assert parser.parse() == Frame(Opcode.BINARY, first)


def test_received_into_checks_its_count() -> None:
    parser = FrameParser(mask=False)
    with pytest.raises(ValueError, match="no buffer"):
        parser.received_into(1)
    if not SPEEDUPS:
        return
    parser.feed(raw_header(Opcode.BINARY, 2 * DIRECT_READ_MIN) + b"ab")
    assert parser.parse() is None
    view = parser.receive_buffer(100)
    assert view is not None
    assert len(view) == 100
    with pytest.raises(ValueError, match="101 bytes received into a buffer of 100"):
        parser.received_into(101)
    parser.received_into(100)
    with pytest.raises(ValueError, match="into a buffer of 0"):
        parser.received_into(1)  # nothing lent any more


def test_fed_bytes_may_be_reused_once_parse_returned_none() -> None:
    """feed() parses the bytes where they are when nothing is buffered; what is
    left when parse() returns None is copied, so the caller may reuse its buffer."""
    small = serialize_frame(Frame(Opcode.TEXT, b"hello"), mask=True)
    large = serialize_frame(Frame(Opcode.BINARY, b"z" * 5000), mask=True)
    scratch = bytearray(small + small + large[:3])  # ends inside a header
    parser = FrameParser(mask=True)
    parser.feed(memoryview(scratch))
    assert parse_all(parser) == [Frame(Opcode.TEXT, b"hello")] * 2
    scratch[:] = b"\xff" * len(scratch)  # the I/O layer reads into it again
    scratch[:] = large[3:2000]
    parser.feed(memoryview(scratch))  # ends inside the payload
    assert parser.parse() is None
    scratch[:] = b"\xff" * len(scratch)
    parser.feed(large[2000:] + small[:1])
    assert parse_all(parser) == [Frame(Opcode.BINARY, b"z" * 5000)]
    parser.feed(small[1:])
    assert parse_all(parser) == [Frame(Opcode.TEXT, b"hello")]
    assert parser.buffered == 0


def test_feed_twice_before_parse_keeps_both() -> None:
    wire = serialize_frame(Frame(Opcode.TEXT, b"one"), mask=True) + serialize_frame(
        Frame(Opcode.TEXT, b"two"), mask=True
    )
    parser = FrameParser(mask=True)
    scratch = bytearray(wire[:5])
    parser.feed(scratch)
    parser.feed(wire[5:])
    scratch[:] = b"\x00" * 5
    assert parse_all(parser) == [Frame(Opcode.TEXT, b"one"), Frame(Opcode.TEXT, b"two")]


def test_parse_raw_is_parse_without_the_frame() -> None:
    frames_in = [
        Frame(Opcode.TEXT, b"hi", fin=False, rsv1=True),
        Frame(Opcode.CONT, b"!", rsv3=True),
        Frame(Opcode.PING, b""),
        Frame(Opcode.BINARY, b"x" * 70_000),
    ]
    wire = b"".join(serialize_frame(frame, mask=True) for frame in frames_in)
    parser, raw_parser = FrameParser(mask=True), FrameParser(mask=True)
    parser.feed(wire)
    raws = []
    for start in range(0, len(wire), 1000):  # the large one becomes pending
        raw_parser.feed(wire[start : start + 1000])
        while (raw := raw_parser.parse_raw()) is not None:
            raws.append(raw)
    assert [
        (b0 & 0x0F, bool(b0 & 0x80), bool(b0 & 0x40), bool(b0 & 0x20), bool(b0 & 0x10), data)
        for b0, data in raws
    ] == [
        (frame.opcode, frame.fin, frame.rsv1, frame.rsv2, frame.rsv3, frame.data)
        for frame in parse_all(parser)
    ]


# Sending large payloads without joining them to their header.


@pytest.mark.parametrize("length", [0, 125, SEND_JOIN_BELOW - 1, SEND_JOIN_BELOW, 70_000])
@pytest.mark.parametrize("mask", [True, False])
def test_serialize_parts(monkeypatch: pytest.MonkeyPatch, length: int, mask: bool) -> None:
    data = random.Random(length).randbytes(length)
    fixed_mask(monkeypatch, HELLO_MASK)
    frame = Frame(Opcode.BINARY, data, fin=False, rsv1=True)
    parts = serialize_frame_parts(frame, mask=mask)
    assert b"".join(parts) == serialize_frame(frame, mask=mask)
    data_parts = serialize_data_frame_parts(Opcode.BINARY, data, fin=False, mask=mask)
    assert b"".join(data_parts) == serialize_data_frame(Opcode.BINARY, data, fin=False, mask=mask)
    if length < SEND_JOIN_BELOW:
        assert len(parts) == len(data_parts) == 1
    else:
        assert len(parts) == len(data_parts) == 2
        if mask:
            # The client masks a copy: the caller's data is left as it was.
            assert parts[1] == data_parts[1] == reference_mask(data, HELLO_MASK)
        else:
            assert parts[1] is data_parts[1] is data  # the payload itself, not a copy


def test_serialize_parts_checks_control_frames() -> None:
    with pytest.raises(ProtocolError):
        serialize_frame_parts(Frame(Opcode.PING, b"x" * SEND_JOIN_BELOW), mask=False)


# Property-based tests.


@st.composite
def valid_frames(draw: st.DrawFn) -> Frame:
    opcode = draw(st.sampled_from(list(Opcode)))
    if opcode in CTRL_OPCODES:
        data = draw(st.binary(max_size=125))
        fin = True
    else:
        size = draw(st.one_of(st.integers(0, 300), st.sampled_from([125, 126, 65535, 65536])))
        data = draw(st.binary(min_size=size, max_size=size)) if size <= 300 else b"z" * size
        fin = draw(st.booleans())
    rsv1, rsv2, rsv3 = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    return Frame(opcode, data, fin, rsv1, rsv2, rsv3)


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        chunks.append(data[pos : pos + size])
        pos += size
        i += 1
    return chunks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frame_list=st.lists(valid_frames(), max_size=8),
    mask=st.booleans(),
    sizes=st.lists(st.integers(1, 70_000), min_size=1, max_size=10),
    direct=st.booleans(),
)
def test_property_serialized_frames_parse_back(
    frame_list: list[Frame], mask: bool, sizes: list[int], direct: bool
) -> None:
    """Whatever the cuts, and whether pending payloads are read in place (as an
    I/O layer does through receive_buffer) or fed from a reused buffer."""
    wire = b"".join(serialize_frame(frame, mask=mask) for frame in frame_list)
    parser = FrameParser(mask=mask)
    parsed = []
    pos = 0
    scratch = bytearray(max(sizes))
    i = 0
    while pos < len(wire):
        size = sizes[i % len(sizes)]
        i += 1
        view = parser.receive_buffer(size) if direct else None
        if view is not None:
            chunk = wire[pos : pos + len(view)]
            view[: len(chunk)] = chunk
            parser.received_into(len(chunk))
        else:
            chunk = wire[pos : pos + size]
            scratch[: len(chunk)] = chunk
            parser.feed(memoryview(scratch)[: len(chunk)])
        pos += len(chunk)
        parsed.extend(parse_all(parser))
        scratch[:] = b"\xee" * len(scratch)  # reused by the next read
    assert parsed == frame_list
    assert parser.buffered == 0


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=400),
    mask=st.booleans(),
    max_size=st.one_of(st.none(), st.integers(0, 200)),
    sizes=st.lists(st.integers(1, 64), min_size=1, max_size=5),
)
def test_property_arbitrary_bytes(
    data: bytes, mask: bool, max_size: int | None, sizes: list[int]
) -> None:
    parser = FrameParser(mask=mask, max_size=max_size)
    try:
        for chunk in split(data, sizes):
            parser.feed(chunk)
            while (frame := parser.parse()) is not None:
                assert isinstance(frame, Frame)
                if frame.opcode in DATA_OPCODES:  # control frames: 125 bytes, whatever max_size
                    assert max_size is None or len(frame.data) <= max_size
                if frame.opcode in CTRL_OPCODES:
                    assert frame.fin and len(frame.data) <= 125
    except (ProtocolError, PayloadTooBig):
        pass


# The C header parser against its pure-Python reference.


def outcome(
    parse: object, buf: bytes | bytearray | memoryview, pos: int, mask: bool, max_size: int | None
) -> object:
    """What a parse_frame function returns for these arguments, or the class
    and message of what it raises."""
    try:
        return parse(buf, pos, mask, max_size)  # type: ignore[operator]
    except (ProtocolError, PayloadTooBig) as exc:
        return type(exc), str(exc)


def header_cases() -> list[bytes]:
    """Frames of every opcode, every first-byte flag, masked or not, with each
    length encoding at its edges, an MSB-set 64-bit length, and their payloads."""
    cases = []
    for b0 in (0x00, 0x01, 0x02, 0x03, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0F, 0x81, 0x82, 0x88,
               0x89, 0x8A, 0xC1, 0xF2, 0x71):  # fmt: skip
        for masked in (False, True):
            for length, ext in (
                (0, b""),
                (5, b""),
                (125, b""),
                (126, struct.pack("!H", 126)),
                (300, struct.pack("!H", 300)),
                (70_000, struct.pack("!Q", 70_000)),
                (1 << 63, struct.pack("!Q", 1 << 63)),
            ):
                code = 126 if len(ext) == 2 else 127 if ext else length
                head = bytes((b0, code | (0x80 if masked else 0))) + ext
                key = b"\x01\x02\x03\x04" if masked else b""
                payload = bytes(range(256)) * (min(length, 70_000) // 256 + 1)
                cases.append(head + key + payload[: min(length, 70_000)])
    return cases


@pytest.mark.skipif(not SPEEDUPS, reason="the C accelerator isn't built")
@pytest.mark.parametrize("max_size", [None, 0, 100, 65_536, 2**70, -1])
@pytest.mark.parametrize("mask", [True, False])
def test_c_parse_frame_matches_the_python_reference(mask: bool, max_size: int | None) -> None:
    """Every frame of header_cases(), whole and cut at every length of its
    header and a few of its payload, at offset 0 and after other bytes, in
    bytes, bytearray and memoryview: the same result or the same error."""
    from wsharbor.protocol import _speedups

    checked = 0
    for wire in header_cases():
        header_end = min(len(wire), 14)
        cuts = sorted({*range(header_end + 1), header_end + 1, len(wire) - 1, len(wire)})
        for cut in cuts:
            if cut < 0 or cut > len(wire):
                continue
            for prefix in (b"", b"junk"):
                data = prefix + wire[:cut]
                for buf in (data, bytearray(data), memoryview(data)):
                    expected = outcome(frames.parse_frame_python, buf, len(prefix), mask, max_size)
                    got = outcome(_speedups.parse_frame, buf, len(prefix), mask, max_size)
                    assert got == expected, (wire[:16].hex(), cut, prefix, mask, max_size)
                    checked += 1
    assert checked > 10_000


@pytest.mark.skipif(not SPEEDUPS, reason="the C accelerator isn't built")
@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=64),
    pos=st.integers(min_value=0, max_value=64),
    mask=st.booleans(),
    max_size=st.one_of(st.none(), st.integers(min_value=-2, max_value=2**64)),
)
def test_c_parse_frame_matches_on_any_bytes(
    data: bytes, pos: int, mask: bool, max_size: int | None
) -> None:
    from wsharbor.protocol import _speedups

    pos = min(pos, len(data))
    assert outcome(_speedups.parse_frame, data, pos, mask, max_size) == outcome(
        frames.parse_frame_python, data, pos, mask, max_size
    )


@pytest.mark.skipif(not SPEEDUPS, reason="the C accelerator isn't built")
def test_c_parse_frame_rejects_bad_arguments() -> None:
    from wsharbor.protocol import _speedups

    with pytest.raises(TypeError):
        _speedups.parse_frame(b"\x81\x00", 0, False)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        _speedups.parse_frame(b"\x81\x00", 0, False, "10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pos"):
        _speedups.parse_frame(b"\x81\x00", 3, False, None)
    with pytest.raises(TypeError):
        _speedups.parse_frame("text", 0, False, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _speedups.set_exceptions(ValueError, "not a class")  # type: ignore[arg-type]
