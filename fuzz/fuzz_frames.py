"""Fuzz the frame parser, ``wsharbor.protocol.frames.FrameParser``.

Input: ``flags seed data...``

- ``flags`` bit 0: ``mask`` (True: the server side, frames must be masked);
  bit 1: set ``max_size``, to ``MAX_SIZES[(flags >> 2) % len(MAX_SIZES)]``.
- ``seed``: how ``data`` is cut into chunks (see ``_common.split``); the chunked
  run reads like an I/O layer: into the buffer ``receive_buffer()`` lends when it
  lends one (a pending payload read in place), else into a scratch buffer that is
  overwritten once ``parse()`` returned ``None``.

Checks:

- parsing raises only ``ProtocolError`` or ``PayloadTooBig``;
- feeding ``data`` whole and in chunks gives the same frames, the same error
  (type and message) and the same bytes left buffered;
- every frame returned obeys RFC 6455: a control frame is final and at most 125
  bytes, a data frame is within ``max_size``;
- a frame serialized again (``serialize_frame``) parses back to itself;
- the C and the Python masking functions agree, in place too, from any offset.
"""

from __future__ import annotations

from _common import exceptions, frames, run, split

MAX_SIZES = (0, 1, 2, 125, 126, 127, 128, 1000, 65535, 65536, 2**20, 2**62, 2**63 - 1, 2**64)

Outcome = tuple[list[frames.Frame], tuple[type[Exception], str] | None, int]


def parse_chunks(
    chunks: list[bytes], mask: bool, max_size: int | None, *, io: bool = False
) -> Outcome:
    parser = frames.FrameParser(mask=mask, max_size=max_size)
    out: list[frames.Frame] = []
    scratch = bytearray(max(map(len, chunks), default=0))
    try:
        for chunk in chunks:
            view = parser.receive_buffer(len(chunk)) if io else None
            if view is not None:
                size = min(len(view), len(chunk))
                view[:size] = chunk[:size]
                parser.received_into(size)
                if size < len(chunk):
                    parser.feed(chunk[size:])
            elif io:
                scratch[: len(chunk)] = chunk
                parser.feed(memoryview(scratch)[: len(chunk)])
            else:
                parser.feed(chunk)
            while (frame := parser.parse()) is not None:
                out.append(frame)
            scratch[:] = b"\xa5" * len(scratch)  # the next read overwrites it
    except (exceptions.ProtocolError, exceptions.PayloadTooBig) as exc:
        return out, (type(exc), str(exc)), parser.buffered
    return out, None, parser.buffered


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, seed, body = data[0], data[1], data[2:]
    mask = bool(flags & 1)
    max_size = MAX_SIZES[(flags >> 2) % len(MAX_SIZES)] if flags & 2 else None

    whole = parse_chunks([body], mask, max_size)
    chunked = parse_chunks(split(body, seed), mask, max_size, io=True)
    assert whole[0] == chunked[0], (whole[0], chunked[0])
    assert whole[1] == chunked[1], (whole[1], chunked[1])
    if whole[1] is None:
        assert whole[2] == chunked[2], (whole[2], chunked[2])

    for frame in whole[0]:
        if frame.opcode in frames.CTRL_OPCODES:
            assert frame.fin and len(frame.data) <= 125, frame
        elif max_size is not None:
            assert len(frame.data) <= max_size, (frame, max_size)
        again = frames.FrameParser(mask=mask, max_size=max_size)
        again.feed(frames.serialize_frame(frame, mask=mask))
        assert again.parse() == frame
        assert again.buffered == 0

    if len(body) >= 4:
        key = body[:4]
        assert frames.apply_mask(body, key) == frames.apply_mask_python(body, key)
        view = memoryview(body)[1:]
        assert frames.apply_mask(view, key) == frames.apply_mask_python(view, key)
        offset = seed % 8
        in_place, in_place_python = bytearray(view), bytearray(view)
        frames.apply_mask_inplace(in_place, key, offset)
        frames.apply_mask_inplace_python(in_place_python, key, offset)
        assert in_place == in_place_python
        rotated = key[offset % 4 :] + key[: offset % 4]
        assert bytes(in_place) == frames.apply_mask(view, rotated)


if __name__ == "__main__":
    run(test_one_input)
