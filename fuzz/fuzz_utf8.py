"""Fuzz the UTF-8 validation of text messages in ``WebSocketProtocol``.

The protocol validates a text message fragment by fragment with an incremental
decoder (RFC 6455 section 8.1); this harness checks its verdict against
``bytes.decode("utf-8")`` on the whole payload.

Input: ``flags seed payload...``

- ``flags`` bit 0: ``stream_fragments``; bit 1: put ``payload[:123]`` in the
  reason of a close frame instead of a text message; bit 2: the message is
  compressed (a negotiated ``PerMessageDeflate``); bit 3: end the message with an
  empty final continuation frame.
- ``seed``: how ``payload`` is cut into fragments (``_common.split``).

The serialized frames are fed cut where ``seed`` says too (a frame arriving in
pieces is validated piece by piece), so the verdict may come in the middle of a
frame.

Checks: the message is delivered (whole, or as fragments that join to it) iff the
payload is valid UTF-8, and then equals the decoded payload; otherwise the
protocol closes with 1007 and what it delivered is a prefix of the valid part.
The streaming validator (``utf8.Utf8Validator``, the C one when built) fed the
payload in the same pieces agrees with ``bytes.decode``, and never fails later
than the standard library's incremental decoder.
"""

from __future__ import annotations

from _common import connection, deflate, frames, run, split, utf8

Opcode = frames.Opcode


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, seed, payload = data[0], data[1], data[2:]
    stream = bool(flags & 1)
    close_mode = bool(flags & 2)
    compress = bool(flags & 4) and not close_mode

    try:
        expected: str | None = payload.decode("utf-8")
        valid_prefix = expected
    except UnicodeDecodeError as exc:
        expected = None
        valid_prefix = payload[: exc.start].decode("utf-8")

    if close_mode:
        payload = payload[:123]
        try:
            expected = payload.decode("utf-8")
        except UnicodeDecodeError:
            expected = None
        to_send = [frames.Frame(Opcode.CLOSE, b"\x03\xe8" + payload)]
    else:
        parts = split(payload, seed) or [b""]
        if flags & 8:
            parts.append(b"")
        to_send = [
            frames.Frame(Opcode.TEXT if i == 0 else Opcode.CONT, part, i == len(parts) - 1)
            for i, part in enumerate(parts)
        ]

    extensions = []
    if compress:
        encoder = deflate.PerMessageDeflate(False, False, 15, 15)
        to_send = [encoder.encode(frame) for frame in to_send]
        extensions.append(deflate.PerMessageDeflate(False, False, 15, 15))

    protocol = connection.WebSocketProtocol(
        connection.Side.SERVER, extensions=extensions, max_size=None, stream_fragments=stream
    )
    wire = b"".join(frames.serialize_frame(frame, mask=True) for frame in to_send)
    for chunk in split(wire, seed ^ 0x55):
        protocol.receive_data(chunk)
    events = protocol.events_received()

    check_validator(payload, split(payload, seed))

    if expected is None:
        sent = protocol.close_sent
        assert sent is not None and sent.code == 1007, (sent, protocol.failure)
        assert isinstance(protocol.failure, UnicodeDecodeError), protocol.failure
        assert not any(
            isinstance(event, connection.TextMessage | connection.CloseReceived) for event in events
        ), events
        if stream and not close_mode:
            assert all(isinstance(e, connection.Fragment) and not e.final for e in events)
            delivered = "".join(str(event.data) for event in events)
            assert valid_prefix.startswith(delivered), (delivered, valid_prefix)
        return

    assert protocol.failure is None, protocol.failure
    if close_mode:
        assert events == [connection.CloseReceived(1000, expected)], events
    elif stream:
        assert all(isinstance(event, connection.Fragment) for event in events), events
        assert [event.final for event in events] == [False] * (len(events) - 1) + [True]
        assert "".join(str(event.data) for event in events) == expected
    else:
        assert events == [connection.TextMessage(expected)], events


def first_failure(validator: utf8.Utf8ValidatorLike, pieces: list[bytes]) -> int | None:
    """Index of the piece where ``validator`` raises (len(pieces): at the end)."""
    for index, piece in enumerate(pieces):
        try:
            validator.feed(piece)
        except UnicodeDecodeError:
            return index
    try:
        validator.feed(b"", True)
    except UnicodeDecodeError:
        return len(pieces)
    return None


def check_validator(payload: bytes, pieces: list[bytes]) -> None:
    reference = first_failure(utf8.Utf8ValidatorPython(), pieces)
    got = first_failure(utf8.Utf8Validator(), pieces)
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        assert reference is not None and got is not None, (reference, got)
        assert got <= reference, (got, reference)
    else:
        assert reference is None and got is None, (reference, got)


if __name__ == "__main__":
    run(test_one_input)
