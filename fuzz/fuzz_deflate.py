"""Fuzz the permessage-deflate decoder, ``PerMessageDeflate.decode``.

Input: ``flags seed group data...``

- ``flags`` bit 0: the mode, 0: ``data`` is the compressed payload, 1: ``data``
  is the uncompressed text, compressed by a peer's encoder first; bits 1-3: the
  peer's window bits (8 + value; 9 at least in mode 1); bit 4: the peer's
  ``no_context_takeover``; bits 5-7: the ``max_size`` of each ``decode()`` call,
  ``MAX_SIZES[flags >> 5]``.
- ``seed``: how ``data`` is cut into frames (``_common.split``).
- ``group``: ``(group & 7) + 1`` frames make a message (the last one is final).

Checks:

- ``decode()`` raises only ``ProtocolError`` or ``PayloadTooBig``, and never
  returns more than ``max_size`` bytes;
- mode 0: differential against ``zlib.decompressobj`` with the same window, fed
  the same frames (and ``00 00 ff ff`` after each final one), as long as the
  stream has no final DEFLATE block (where the decoder starts a new stream on
  purpose, RFC 7692 section 7.2.3.4): same output, or ``PayloadTooBig`` when it
  is over ``max_size``; an error of zlib is an error of the decoder;
- mode 1: each frame decodes to the bytes that were compressed into it (each
  frame ends with a sync flush), ``PayloadTooBig`` exactly when they are more
  than ``max_size``; and ``zlib.decompressobj(-15)`` decodes the same stream to
  the same messages.
"""

from __future__ import annotations

import zlib

from _common import deflate, exceptions, frames, run, split

MAX_SIZES = (None, 0, 1, 5, 100, 1000, 65536, 2**20)
TAIL = b"\x00\x00\xff\xff"
ERRORS = (exceptions.ProtocolError, exceptions.PayloadTooBig)

Opcode = frames.Opcode


def message_frames(parts: list[bytes], group: int, rsv1: bool) -> list[frames.Frame]:
    """Frames of messages of ``(group & 7) + 1`` parts each."""
    per_message = (group & 7) + 1
    out = []
    for i, part in enumerate(parts):
        first = i % per_message == 0
        fin = (i + 1) % per_message == 0 or i == len(parts) - 1
        opcode = Opcode.BINARY if first else Opcode.CONT
        out.append(frames.Frame(opcode, part, fin, rsv1 and first))
    return out


def check_arbitrary(flags: int, seed: int, group: int, data: bytes) -> None:
    window = 8 + ((flags >> 1) & 7)
    no_context_takeover = bool(flags & 16)
    max_size = MAX_SIZES[flags >> 5]
    decoder = deflate.PerMessageDeflate(no_context_takeover, False, window, 15)
    reference = zlib.decompressobj(-max(9, window))
    diverged = False  # the stream had a final block: no reference any more
    for frame in message_frames(split(data, seed) or [b""], group, True):
        try:
            out: bytes | None = decoder.decode(frame, max_size=max_size).data
            error: Exception | None = None
        except ERRORS as exc:
            out, error = None, exc
        if out is not None and max_size is not None:
            assert len(out) <= max_size, (len(out), max_size)
        if not diverged:
            try:
                expected: bytes | None = reference.decompress(
                    frame.data + TAIL if frame.fin else frame.data
                )
            except zlib.error:
                expected = None
            if expected is None:
                assert error is not None
            elif reference.eof:
                diverged = True
                if out is not None:
                    assert out.startswith(expected), (out, expected)
            elif max_size is not None and len(expected) > max_size:
                assert isinstance(error, exceptions.PayloadTooBig), (error, len(expected))
            else:
                assert error is None and out == expected, (error, out, expected)
        if error is not None:
            return
        if frame.fin and no_context_takeover and not diverged:
            reference = zlib.decompressobj(-max(9, window))


def check_valid(flags: int, seed: int, group: int, data: bytes) -> None:
    window = max(9, 8 + ((flags >> 1) & 7))
    no_context_takeover = bool(flags & 16)
    max_size = MAX_SIZES[flags >> 5]
    encoder = deflate.PerMessageDeflate(False, no_context_takeover, 15, window, threshold=0)
    decoder = deflate.PerMessageDeflate(no_context_takeover, False, window, 15)
    plain = message_frames(split(data, seed) or [b""], group, False)
    sent = [encoder.encode(frame) for frame in plain]

    # The reference: zlib on the same stream, without limit (section 7.2.2).
    reference = zlib.decompressobj(-15)
    for original, frame in zip(plain, sent, strict=True):
        out = reference.decompress(frame.data + TAIL if frame.fin else frame.data)
        assert out == original.data, (out, original.data)
        if frame.fin and no_context_takeover:
            reference = zlib.decompressobj(-15)

    for original, frame in zip(plain, sent, strict=True):
        too_big = max_size is not None and len(original.data) > max_size
        try:
            decoded = decoder.decode(frame, max_size=max_size)
        except exceptions.PayloadTooBig:
            assert too_big
            return
        assert not too_big, (len(original.data), max_size)
        assert decoded.data == original.data, (decoded.data, original.data)
        assert (decoded.opcode, decoded.fin, decoded.rsv1) == (original.opcode, original.fin, False)


def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    flags, seed, group, body = data[0], data[1], data[2], data[3:]
    if flags & 1:
        check_valid(flags, seed, group, body)
    else:
        check_arbitrary(flags, seed, group, body)


if __name__ == "__main__":
    run(test_one_input)
