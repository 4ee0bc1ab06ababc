"""Fuzz the sans-I/O connection, ``wsharbor.protocol.connection.WebSocketProtocol``.

Input: ``flags seed ext data...``

- ``flags`` bit 0: a negotiated ``PerMessageDeflate``; bit 1: ``stream_fragments``;
  bit 2: the client side (the server side otherwise, which expects masked
  frames); bits 3-5: ``max_size = MAX_SIZES[(flags >> 3) & 7]``.
- ``seed``: how ``data`` is cut into ``receive_data()`` calls (``_common.split``);
  the chunked run reads like an I/O layer: each chunk goes through
  ``receive_buffer()``/``received_into()`` when the protocol lends a buffer, else
  through a scratch buffer that is overwritten after each ``receive_data()``.
- ``ext``: the deflate parameters, bits 0-2: the peer's window bits (8 + value);
  bit 3: the peer's ``no_context_takeover``.

Checks:

- ``receive_data()`` and ``receive_eof()`` never raise;
- when the protocol fails the connection, the close code sent is 1002, 1007 or
  1009, matching the exception kept in ``failure`` (ProtocolError, invalid
  UTF-8, PayloadTooBig); a 1011 (internal error) is a finding;
- otherwise a close frame sent echoes the code received (RFC 6455 section 5.5.1);
- feeding ``data`` whole and in chunks gives the same events, the same frames
  sent and the same failure (for invalid UTF-8: the same reason, not the same
  position, since a text frame arriving in pieces fails in the piece where the
  text becomes invalid, and its close reason says where in that piece);
- no message (or sum of fragments) delivered exceeds ``max_size``;
- the bytes sent are valid frames: pongs carrying the data of each ping received
  before the close, then at most one close frame.
"""

from __future__ import annotations

from _common import connection, deflate, exceptions, frames, run, split

MAX_SIZES = (None, 0, 1, 16, 125, 1000, 65536, 2**20)
FAIL_CODES = {
    exceptions.ProtocolError: 1002,
    UnicodeDecodeError: 1007,
    exceptions.PayloadTooBig: 1009,
}


def make_protocol(flags: int, ext: int) -> connection.WebSocketProtocol:
    extensions = []
    if flags & 1:
        extensions.append(
            deflate.PerMessageDeflate(
                remote_no_context_takeover=bool(ext & 8),
                local_no_context_takeover=False,
                remote_max_window_bits=8 + (ext & 7),
                local_max_window_bits=15,
            )
        )
    return connection.WebSocketProtocol(
        connection.Side.CLIENT if flags & 4 else connection.Side.SERVER,
        extensions=extensions,
        max_size=MAX_SIZES[(flags >> 3) & 7],
        stream_fragments=bool(flags & 2),
    )


Outcome = tuple[list[connection.Event], list[frames.Frame], tuple[type, str] | None, int | None]


def drive(flags: int, ext: int, chunks: list[bytes], *, io: bool = False) -> Outcome:
    protocol = make_protocol(flags, ext)
    events: list[connection.Event] = []
    output: list[bytes] = []
    scratch = bytearray(max(map(len, chunks), default=0))
    for chunk in chunks:
        view = protocol.receive_buffer(len(chunk)) if io else None
        if view is not None:
            size = min(len(view), len(chunk))
            view[:size] = chunk[:size]
            protocol.received_into(size)
            rest = chunk[size:]
            if rest:
                protocol.receive_data(rest)
        elif io:
            scratch[: len(chunk)] = chunk
            protocol.receive_data(memoryview(scratch)[: len(chunk)])
            scratch[:] = b"\xa5" * len(scratch)  # the next read overwrites it
        else:
            protocol.receive_data(chunk)
        events += protocol.events_received()
        output += protocol.data_to_send()
    protocol.receive_eof()
    events += protocol.events_received()
    output += protocol.data_to_send()
    assert protocol.state is connection.State.CLOSED

    failure = protocol.failure
    sent = protocol.close_sent
    if failure is not None:
        assert sent is not None, failure
        if sent.code == 1011:
            raise AssertionError(f"1011 internal error: {failure!r}") from failure
        assert sent.code == FAIL_CODES[type(failure)], (sent, failure)
    elif sent is not None:
        rcvd = protocol.close_rcvd
        assert rcvd is not None and sent.code == rcvd.code, (sent, rcvd)

    max_size = protocol.max_size
    if max_size is not None:
        size = 0
        for event in events:
            if isinstance(event, connection.TextMessage | connection.BinaryMessage):
                data = event.data
                assert len(data.encode() if isinstance(data, str) else data) <= max_size
            elif isinstance(event, connection.Fragment):
                data = event.data
                size += len(data.encode() if isinstance(data, str) else data)
                assert size <= max_size, (size, max_size)
                if event.final:
                    size = 0

    # What the protocol wrote, read by the peer.
    peer = frames.FrameParser(mask=protocol.side is connection.Side.CLIENT)
    peer.feed(b"".join(output))
    written = []
    while (frame := peer.parse()) is not None:
        written.append(frame)
    assert peer.buffered == 0
    pings = [event.data for event in events if isinstance(event, connection.PingReceived)]
    pongs = [frame.data for frame in written if frame.opcode is frames.Opcode.PONG]
    closes = [frame for frame in written if frame.opcode is frames.Opcode.CLOSE]
    # The protocol never sends a close frame first here, so every ping is answered.
    assert pongs == pings, (pongs, pings)
    assert len(closes) == (sent is not None and sent.code != 1006)
    assert len(closes) == 0 or written[-1] is closes[0]
    if closes:
        assert sent is not None and frames.Close.parse(closes[0].data).code == sent.code
    error: tuple[type, str] | None = None
    if isinstance(failure, UnicodeDecodeError):
        # Where the text became invalid depends on how it was cut.
        error = (type(failure), failure.reason)
        written = [frame for frame in written if frame.opcode is not frames.Opcode.CLOSE]
    elif failure is not None:
        error = (type(failure), str(failure))
    return events, written, error, None if sent is None else sent.code


def test_one_input(data: bytes) -> None:
    if len(data) < 3:
        return
    flags, seed, ext, body = data[0], data[1], data[2], data[3:]
    whole = drive(flags, ext, [body])
    chunked = drive(flags, ext, split(body, seed), io=True)
    assert whole == chunked, (whole, chunked)


if __name__ == "__main__":
    run(test_one_input)
