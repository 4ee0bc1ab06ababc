"""Frames of RFC 6455 section 5: parse, serialize, mask, close payloads.

Theory of operation
-------------------

A frame on the wire (RFC 6455 section 5.2)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
    |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
    |N|V|V|V|       |S|             |   (if payload len==126/127)   |
    | |1|2|3|       |K|             |                               |
    +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
    |     Extended payload length continued, if payload len == 127  |
    + - - - - - - - - - - - - - - - +-------------------------------+
    |                               |Masking-key, if MASK set to 1  |
    +-------------------------------+-------------------------------+
    | Masking-key (continued)       |          Payload Data         |
    +-------------------------------- - - - - - - - - - - - - - - - +

:class:`FrameParser` keeps one ``bytearray`` and a read offset. ``feed()``
appends; ``parse()`` returns the next complete frame or ``None`` when more bytes
are needed. It never copies the buffer to look at a header and never creates a
coroutine or generator per frame, so a batch of frames read in one
``data_received`` call is parsed in one tight loop.

A frame whose header is complete but whose payload is not becomes a
:class:`PendingFrame`: its payload is assembled in a buffer of its final size,
allocated once the header said how big it is (after the ``max_size`` check),
and unmasked in place as it arrives. Bytes fed later go straight to it, and an
I/O layer can have the socket read the rest of a large payload into it
(:meth:`FrameParser.receive_buffer` and :meth:`FrameParser.received_into`): a
large payload is then never copied in user space, since the finished buffer *is*
the frame's ``bytes``. ``FrameParser._buf`` only ever holds complete frames and
at most one partial header, a read's worth. The protocol looks at the pending
frame to check its header and validate the UTF-8 of text payloads as each piece
arrives (RFC 6455 section 8.1: fail fast).

Masking and the reading of a frame's header use the C accelerator
(``_speedups.apply_mask``, ``apply_mask_inplace`` and ``parse_frame``, which
checks a header and unmasks a whole payload in one call) when it was built, and
a pure-Python fallback otherwise (:func:`parse_frame_python` is the reference
for ``parse_frame``).
``SPEEDUPS`` tells which one is in use. With the accelerator, a payload buffer
is a ``bytes`` object filled in place (``_speedups.PayloadBuffer``, not
initialised, so that a header announcing a large frame costs no resident memory
by itself); without it, a ``bytearray`` that grows as the payload arrives, copied
to ``bytes`` at the end, and no direct reads.
"""

from __future__ import annotations

import enum
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..exceptions import PayloadTooBig, ProtocolError

__all__ = [
    "CTRL_OPCODES",
    "DATA_OPCODES",
    "DIRECT_READ_MIN",
    "HEADER_MAX",
    "SEND_JOIN_BELOW",
    "SPEEDUPS",
    "Close",
    "CloseCode",
    "Frame",
    "FrameParser",
    "Opcode",
    "PendingFrame",
    "apply_mask",
    "apply_mask_inplace",
    "apply_mask_inplace_python",
    "apply_mask_python",
    "parse_frame_python",
    "serialize_data_frame",
    "serialize_data_frame_parts",
    "serialize_frame",
    "serialize_frame_parts",
]


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 section 5.2 and 11.8)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONT, Opcode.TEXT, Opcode.BINARY})
CTRL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})
_OPCODES = {int(op): op for op in Opcode}


class CloseCode(enum.IntEnum):
    """Close codes (RFC 6455 section 7.4.1 and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    # 1004 is reserved.
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


_CLOSE_CODE_NAMES = {
    1000: "OK",
    1001: "going away",
    1002: "protocol error",
    1003: "unsupported data",
    1005: "no status received [internal]",
    1006: "connection closed abnormally [internal]",
    1007: "invalid frame payload data",
    1008: "policy violation",
    1009: "message too big",
    1010: "mandatory extension",
    1011: "internal error",
    1012: "service restart",
    1013: "try again later",
    1014: "bad gateway",
    1015: "TLS handshake failure [internal]",
}

# RFC 6455 section 7.4: 1004, 1005, 1006 and 1015 MUST NOT be set in a close
# frame; 0-999 are not used; 1016-2999 are reserved for future RFCs; 3000-3999
# are registered with IANA and 4000-4999 are for private use.
_WIRE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


def _valid_wire_close_code(code: int) -> bool:
    return code in _WIRE_CLOSE_CODES or 3000 <= code < 5000


@dataclass(frozen=True, slots=True)
class Close:
    """The payload of a close frame: a code and a reason.

    ``Close(1005, "")`` stands for an empty close payload (RFC 6455 section
    7.1.5): it is never written on the wire with a code.
    """

    code: int
    reason: str = ""

    def __str__(self) -> str:
        name = _CLOSE_CODE_NAMES.get(self.code)
        if name is None:
            if 3000 <= self.code < 4000:
                name = "registered"
            elif 4000 <= self.code < 5000:
                name = "private use"
            else:
                name = "unknown"
        text = f"{self.code} ({name})"
        return f"{text} {self.reason}" if self.reason else text

    @classmethod
    def parse(cls, data: bytes) -> Close:
        """Parse a close frame's payload.

        Raises :class:`ProtocolError` for a one-byte payload or a code that must
        not be on the wire, and :class:`UnicodeDecodeError` for a reason that is
        not UTF-8 (a connection answers that with 1007).
        """
        if len(data) >= 2:
            (code,) = struct.unpack_from("!H", data)
            if not _valid_wire_close_code(code):
                raise ProtocolError(f"invalid close code {code} (RFC 6455 section 7.4)")
            return cls(code, bytes(data[2:]).decode())
        if len(data) == 0:
            return cls(CloseCode.NO_STATUS_RCVD, "")
        raise ProtocolError("close frame payload of 1 byte (RFC 6455 section 5.5.1)")

    def serialize(self) -> bytes:
        """Serialize to a close frame's payload; ``Close(1005)`` gives ``b""``."""
        if self.code == CloseCode.NO_STATUS_RCVD:
            if self.reason:
                raise ProtocolError("a close frame without code can't have a reason")
            return b""
        self.check()
        return struct.pack("!H", self.code) + self.reason.encode()

    def check(self) -> None:
        """Raise :class:`ProtocolError` if this can't be sent in a close frame."""
        if not _valid_wire_close_code(self.code):
            raise ProtocolError(f"invalid close code {self.code} (RFC 6455 section 7.4)")
        if 2 + len(self.reason.encode()) > 125:
            raise ProtocolError("close reason over 123 bytes (RFC 6455 section 5.5)")


@dataclass(slots=True)
class Frame:
    """A WebSocket frame, unmasked.

    A plain record, not frozen (unlike the events of
    :mod:`wsharbor.protocol.connection`): the parser builds one per frame received,
    and a frozen dataclass costs four times as much to build (about 0.5 µs against
    0.12 µs on CPython 3.11, six fields set through ``object.__setattr__``).
    """

    opcode: Opcode
    data: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False

    def __str__(self) -> str:
        length = len(self.data)
        flags = "".join(
            flag
            for flag, on in (("F", self.fin), ("1", self.rsv1), ("2", self.rsv2), ("3", self.rsv3))
            if on
        )
        return f"{self.opcode.name} [{flags or '-'}] {length} bytes"

    def check(self) -> None:
        """Check the rules of RFC 6455 section 5.5 for control frames."""
        if self.opcode in CTRL_OPCODES:
            if len(self.data) > 125:
                raise ProtocolError("control frame too long (RFC 6455 section 5.5)")
            if not self.fin:
                raise ProtocolError("fragmented control frame (RFC 6455 section 5.5)")


# Masking.


def apply_mask_python(
    data: bytes | bytearray | memoryview, mask: bytes | bytearray | memoryview
) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated (RFC 6455 section 5.3)."""
    if len(mask) != 4:
        raise ValueError("mask must contain 4 bytes")
    length = len(data)
    if length == 0:
        return b""
    data_int = int.from_bytes(data, "little")
    mask_int = int.from_bytes(bytes(mask) * (length // 4 + 1), "little") & ((1 << (8 * length)) - 1)
    return (data_int ^ mask_int).to_bytes(length, "little")


def apply_mask_inplace_python(
    data: bytearray | memoryview, mask: bytes | bytearray, offset: int = 0
) -> None:
    """XOR the writable buffer ``data`` in place with the 4-byte ``mask``
    repeated, ``data[0]`` being byte ``offset`` of the payload (so the mask
    phase is ``offset % 4``): unmasking a payload piece by piece as it arrives."""
    if len(mask) != 4:
        raise ValueError("mask must contain 4 bytes")
    if offset < 0:
        raise ValueError("offset must be >= 0")
    phase = offset & 3
    if phase:
        mask = mask[phase:] + mask[:phase]
    if len(data):
        data[:] = apply_mask_python(data, mask)


apply_mask: Callable[[bytes | bytearray | memoryview, bytes | bytearray | memoryview], bytes]
apply_mask_inplace: Callable[[bytearray | memoryview, bytes | bytearray, int], None]
SPEEDUPS: bool
try:
    if os.environ.get("WSHARBOR_NO_SPEEDUPS") == "1":
        raise ImportError("disabled by WSHARBOR_NO_SPEEDUPS")
    from ._speedups import PayloadBuffer as _PayloadBuffer
    from ._speedups import apply_mask as _apply_mask_c
    from ._speedups import apply_mask_inplace as _apply_mask_inplace_c
    from ._speedups import parse_frame as _parse_frame_c
    from ._speedups import set_exceptions as _set_exceptions
except ImportError:  # pragma: no cover - depends on the build
    apply_mask = apply_mask_python
    apply_mask_inplace = apply_mask_inplace_python
    SPEEDUPS = False
else:
    apply_mask = _apply_mask_c
    apply_mask_inplace = _apply_mask_inplace_c
    _set_exceptions(ProtocolError, PayloadTooBig)
    SPEEDUPS = True


# Serializing.

_pack_b = struct.Struct("!B").pack
_pack_bb = struct.Struct("!BB").pack
_pack_bbh = struct.Struct("!BBH").pack
_pack_bbq = struct.Struct("!BBQ").pack


def serialize_frame(frame: Frame, *, mask: bool) -> bytes:
    """Serialize a frame; ``mask=True`` on the client side (RFC 6455 section 5.3)."""
    frame.check()
    first = (
        (0x80 if frame.fin else 0)
        | (0x40 if frame.rsv1 else 0)
        | (0x20 if frame.rsv2 else 0)
        | (0x10 if frame.rsv3 else 0)
        | frame.opcode
    )
    return _encode(first, frame.data, mask)


def serialize_data_frame(
    opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool, rsv1: bool = False
) -> bytes:
    """``serialize_frame(Frame(opcode, data, fin, rsv1), mask=mask)`` for a data
    frame, without building the :class:`Frame`: the send path of a message when
    no extension but permessage-deflate (which sets ``rsv1``) is in effect."""
    return _encode((0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode, data, mask)


#: Payloads from this size on are sent as a header and the payload itself, two
#: buffers for the transport's ``writelines`` (scatter/gather where the transport
#: has it), instead of one ``bytes`` joined here: joining copies the payload,
#: which costs more than a second buffer from about this size.
SEND_JOIN_BELOW = 16384


def serialize_frame_parts(frame: Frame, *, mask: bool) -> tuple[bytes, ...]:
    """:func:`serialize_frame` as the buffers to write in order: one for a
    payload under :data:`SEND_JOIN_BELOW` bytes, else the header and the payload
    (unmasked: the frame's data itself; masked, on the client side: a masked
    copy, since the caller's data must not change)."""
    if len(frame.data) < SEND_JOIN_BELOW:
        return (serialize_frame(frame, mask=mask),)
    frame.check()
    first = (
        (0x80 if frame.fin else 0)
        | (0x40 if frame.rsv1 else 0)
        | (0x20 if frame.rsv2 else 0)
        | (0x10 if frame.rsv3 else 0)
        | frame.opcode
    )
    return _encode_parts(first, frame.data, mask)


def serialize_data_frame_parts(
    opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool, rsv1: bool = False
) -> tuple[bytes, ...]:
    """:func:`serialize_data_frame` as the buffers to write in order (see
    :func:`serialize_frame_parts`)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if len(data) < SEND_JOIN_BELOW:
        return (_encode(first, data, mask),)
    return _encode_parts(first, data, mask)


def _encode(first: int, data: bytes, mask: bool) -> bytes:
    length = len(data)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = _pack_bb(first, mask_bit | length)
    elif length < 65536:
        header = _pack_bbh(first, mask_bit | 126, length)
    else:
        header = _pack_bbq(first, mask_bit | 127, length)
    if mask:
        mask_key = os.urandom(4)
        return b"".join((header, mask_key, apply_mask(data, mask_key)))
    return header + data


def _encode_parts(first: int, data: bytes, mask: bool) -> tuple[bytes, bytes]:
    length = len(data)
    if mask:
        header = (
            _pack_bbh(first, 0xFE, length) if length < 65536 else _pack_bbq(first, 0xFF, length)
        )
        mask_key = os.urandom(4)
        return header + mask_key, apply_mask(data, mask_key)
    header = _pack_bbh(first, 126, length) if length < 65536 else _pack_bbq(first, 127, length)
    return header, data


# Parsing.

#: Masked payloads up to this size are unmasked from a slice of the buffer (a copy,
#: cheaper than a memoryview for small frames: 0.18 against 0.41 µs for 64 bytes);
#: larger ones from a memoryview, without the copy.
_SLICE_BELOW = 2048

#: A pending payload lends its buffer to the socket (:meth:`FrameParser.receive_buffer`)
#: when at least this many of its bytes are still to come. Below, a read into
#: the I/O layer's own buffer, which may also hold the next frames, and a copy
#: cost less than one more read.
DIRECT_READ_MIN = 16384

#: After a frame whose payload was read straight into its buffer, the next read
#: at a frame boundary asks for at most a header (:meth:`FrameParser.read_size`):
#: if that frame is large too, its payload is then read straight into its own
#: buffer, not copied from the I/O layer's. 14 bytes: 2, 8 of length, 4 of mask.
#: A payload's buffer has this many bytes more, so that one read may bring the
#: rest of a payload and the next header (:meth:`PendingFrame.receive_buffer`).
HEADER_MAX = 14


class PendingFrame:
    """A frame whose header was parsed and whose payload is still arriving.

    Its payload is assembled in a buffer of its final size, unmasked as each
    piece arrives. The protocol reads the header fields (``opcode``, ``fin``,
    ``rsv1``, ``rsv2``, ``rsv3``, ``length``) to check them before the payload is
    complete, and takes the bytes received so far (:meth:`take`) to validate
    them: a text frame with invalid UTF-8 early on fails at once, not when its
    last byte arrives.
    """

    __slots__ = (
        "_mask",
        "_payload",
        "_view",
        "fin",
        "header",
        "length",
        "lent",
        "opcode",
        "received",
        "rsv1",
        "rsv2",
        "rsv3",
        "taken",
    )

    def __init__(
        self,
        header: bytes,
        opcode: Opcode,
        length: int,
        mask: bytes | None,
        fin: bool = True,
        rsv1: bool = False,
        rsv2: bool = False,
        rsv3: bool = False,
    ) -> None:
        #: The frame's header as received (masking key included).
        self.header = header
        self.opcode = opcode
        self.length = length
        self.fin = fin
        self.rsv1 = rsv1
        self.rsv2 = rsv2
        self.rsv3 = rsv3
        #: Payload bytes received so far.
        self.received = 0
        #: Payload bytes returned by :meth:`take` so far.
        self.taken = 0
        #: Size of the view last returned by :meth:`receive_buffer`, until
        #: :meth:`received_into` says how much of it was filled.
        self.lent = 0
        self._mask = mask
        self._payload: Any
        self._view: memoryview | None
        if SPEEDUPS:
            try:
                # HEADER_MAX bytes more: see receive_buffer()'s ``ahead``.
                self._payload = _PayloadBuffer(length, HEADER_MAX)
            except (MemoryError, OverflowError):
                raise PayloadTooBig(
                    f"frame of {length} bytes: not enough memory to receive it"
                ) from None
            self._view = memoryview(self._payload)
        else:
            # Grows as the payload arrives: a bytearray of the full size would
            # be zero-filled, resident memory for a header alone.
            self._payload = bytearray()
            self._view = None

    def fill(self, data: bytes | bytearray | memoryview) -> int:
        """Append the start of ``data`` to the payload, up to its end; return how
        many bytes were taken."""
        start = self.received
        size = self.length - start
        if len(data) > size:
            data = memoryview(data)[:size]
        else:
            size = len(data)
        payload = self._payload
        if self._view is not None:
            payload.write(start, data, self._mask)  # copied and unmasked in one pass
        else:
            payload += data
            if self._mask is not None:
                with memoryview(payload) as view:
                    apply_mask_inplace(view[start:], self._mask, start)
        self.received = start + size
        return size

    def receive_buffer(self, size: int, ahead: int = 0) -> memoryview | None:
        """A writable view of the next at most ``size`` payload bytes, for the
        socket to read into; ``None`` without the C accelerator.

        When the view reaches the end of the payload, it goes on for at most
        ``ahead`` bytes (:data:`HEADER_MAX` at most) past it: a read may bring
        the rest of the payload and the start of what follows (the next
        frame's header) together. :meth:`received_into` returns those bytes.
        """
        view = self._view
        if view is None:
            return None
        start = self.received
        end = min(self.length, start + size)
        if end == self.length and ahead > 0:
            end += min(ahead, HEADER_MAX)
        self.lent = end - start
        return view[start:end]

    def received_into(self, nbytes: int) -> bytes:
        """``nbytes`` were read into the view from :meth:`receive_buffer`;
        return those that landed past the end of the payload (usually none)."""
        if not 0 < nbytes <= self.lent:
            raise ValueError(f"{nbytes} bytes received into a buffer of {self.lent}")
        self.lent = 0
        start = self.received
        end = start + nbytes
        beyond = b""
        if end > self.length:
            assert self._view is not None
            beyond = bytes(self._view[self.length : end])  # before finish() drops them
            end = self.length
        if self._mask is not None:
            assert self._view is not None
            apply_mask_inplace(self._view[start:end], self._mask, start)
        self.received = end
        return beyond

    def take(self) -> bytes | memoryview:
        """The payload bytes received since the last call, unmasked."""
        start = self.taken
        end = self.taken = self.received
        if self._view is not None:
            return self._view[start:end]
        return bytes(self._payload[start:end])

    def wire_bytes(self) -> bytes:
        """The bytes of this frame received so far, as they were on the wire."""
        if self._view is not None:
            received = self._view[: self.received]
        else:
            received = memoryview(self._payload)[: self.received]
        with received:
            if self._mask is None:
                return self.header + received
            return self.header + apply_mask(received, self._mask)

    def finish(self) -> bytes:
        """The complete payload (call once every byte of it was received)."""
        if self.received != self.length:
            raise ValueError("the payload is incomplete")
        # With the accelerator: the bytes filled in place, no copy.
        data: bytes = self._payload.finish() if self._view is not None else bytes(self._payload)
        return data


def parse_frame_python(
    buf: bytes | bytearray | memoryview, pos: int, mask: bool, max_size: int | None
) -> tuple[int, bytes | None, int, int] | None:
    """The frame that starts at ``pos`` in ``buf``, its header checked.

    ``None`` while the header is incomplete; else ``(b0, data, header_size,
    length)``: the first header byte, the payload unmasked (``None`` while it
    is incomplete), the header's size (masking key included) and the payload's
    length. Raises :class:`ProtocolError` for a header RFC 6455 forbids and
    :class:`PayloadTooBig` for a data frame over ``max_size``.

    The reference for ``_speedups.parse_frame``, the C version
    :meth:`FrameParser.parse_raw` uses when it was built: the same results
    and the same errors (tests compare them).
    """
    available = len(buf) - pos
    if available < 2:
        return None
    b0 = buf[pos]
    b1 = buf[pos + 1]
    opcode_value = b0 & 0x0F
    if opcode_value not in _OPCODES:
        raise ProtocolError(f"reserved opcode {opcode_value:#x} (RFC 6455 section 5.2)")
    masked = bool(b1 & 0x80)
    if masked != mask:
        if mask:
            raise ProtocolError("client frame not masked (RFC 6455 section 5.1)")
        raise ProtocolError("server frame masked (RFC 6455 section 5.1)")
    length = b1 & 0x7F
    header_size = 2
    if length == 126:
        if available < 4:
            return None
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        header_size = 4
    elif length == 127:
        if available < 10:
            return None
        (length,) = struct.unpack_from("!Q", buf, pos + 2)
        if length >> 63:
            raise ProtocolError(
                "64-bit payload length with most significant bit set (RFC 6455 section 5.2)"
            )
        header_size = 10
    # max_size applies to data frames; control frames are bounded to 125 bytes.
    if opcode_value >= 0x8:
        if length > 125:
            raise ProtocolError("control frame too long (RFC 6455 section 5.5)")
        if not b0 & 0x80:
            raise ProtocolError("fragmented control frame (RFC 6455 section 5.5)")
    elif max_size is not None and length > max_size:
        raise PayloadTooBig(f"frame of {length} bytes exceeds limit of {max_size} bytes")
    if masked:
        header_size += 4
    if available < header_size:
        return None
    if length > available - header_size:
        return b0, None, header_size, length  # the payload is incomplete
    start = pos + header_size
    end = start + length
    if not masked:
        return b0, bytes(buf[start:end]), header_size, length
    if length <= _SLICE_BELOW:
        return b0, apply_mask(buf[start:end], buf[start - 4 : start]), header_size, length
    with memoryview(buf) as view:
        return b0, apply_mask(view[start:end], buf[start - 4 : start]), header_size, length


_parse_frame = _parse_frame_c if SPEEDUPS else parse_frame_python


class FrameParser:
    """Incremental frame parser.

    ``mask`` is ``True`` on the server side: frames from a client must be masked,
    frames from a server must not (RFC 6455 section 5.1). ``max_size`` bounds the
    payload of a single frame (``None`` for no limit); a larger frame raises
    :class:`PayloadTooBig` as soon as its header is read, before its payload is
    buffered.

    When nothing is buffered, :meth:`feed` keeps a reference to ``data`` and
    :meth:`parse` reads the frames straight from it: what is left of it when
    :meth:`parse` returns ``None`` is copied then (at most a partial header, or
    the start of a payload into its :class:`PendingFrame`). So call :meth:`parse`
    until it returns ``None`` (or :meth:`discard`) before reusing the memory of
    ``data``, as :meth:`WebSocketProtocol.receive_data
    <wsharbor.protocol.connection.WebSocketProtocol.receive_data>` does.

    A frame whose payload is incomplete is :attr:`pending` until it completes;
    ``taken`` tells, for the frame :meth:`parse` returned last, how many of its
    payload bytes were taken from it while it was pending (``0`` for a frame that
    arrived whole).
    """

    __slots__ = ("_after_large", "_buf", "_input", "_pending", "_pos", "mask", "max_size", "taken")

    def __init__(self, *, mask: bool, max_size: int | None = None) -> None:
        self._buf = bytearray()
        # Bytes fed while nothing was buffered, parsed where they are; _pos is
        # the read offset in them when they are set, else in _buf.
        self._input: bytes | bytearray | memoryview | None = None
        self._pos = 0
        self._pending: PendingFrame | None = None
        # The last frame was large (see read_size).
        self._after_large = False
        self.mask = mask
        self.max_size = max_size
        self.taken = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the network (see the class for when ``data``
        may be reused)."""
        pending = self._pending
        if pending is not None and pending.received < pending.length:
            size = pending.fill(data)
            if size == len(data):
                return
            data = memoryview(data)[size:]
        if self._input is not None:
            self._keep_input()  # fed again before parse() returned None
        elif self._pos == len(self._buf):
            if self._pos:
                self._buf.clear()
                self._pos = 0
            self._input = data
            return
        self._buf += data

    def _keep_input(self) -> None:
        """Copy what is left of the borrowed input to the parser's own buffer."""
        data = self._input
        assert data is not None
        if self._pos < len(data):
            with memoryview(data) as view:
                self._buf += view[self._pos :]
        self._input = None
        self._pos = 0

    @property
    def pending(self) -> PendingFrame | None:
        """The frame whose header was parsed and whose payload is still arriving."""
        pending = self._pending
        if pending is not None and pending.received < pending.length:
            return pending
        return None

    def read_size(self, size: int) -> int:
        """How many bytes, at most ``size``, to read next into the I/O layer's
        own buffer (when :meth:`receive_buffer` has none to lend).

        Reads stop at frame boundaries after large frames, so that a stream of
        large frames is read header, payload, header, payload, each payload
        straight into its buffer: the rest of a pending payload (too short to
        be lent) and at most the next frame's header; after a large frame, at
        most a header. Otherwise ``size``.
        """
        pending = self._pending
        if pending is not None:
            rest = pending.length - pending.received
            if rest > 0:
                self._after_large = True
                return min(size, rest + HEADER_MAX)
            return size
        if self._after_large:
            self._after_large = False  # once: a small frame next reads normally
            if self._input is None and self._pos == len(self._buf):
                return min(size, HEADER_MAX)
        return size

    def receive_buffer(self, size: int, ahead: int = 0) -> memoryview | None:
        """Where the socket may read the next bytes straight into: the rest of a
        pending payload (at most ``size`` bytes, and at most ``ahead`` bytes
        past its end, see :meth:`PendingFrame.receive_buffer`) when at least
        :data:`DIRECT_READ_MIN` bytes of it are to come (and the C accelerator
        is built), else ``None``. Report the bytes read with
        :meth:`received_into` before anything else is fed."""
        pending = self._pending
        if pending is None or pending.length - pending.received < DIRECT_READ_MIN:
            return None
        self._after_large = True
        return pending.receive_buffer(size, ahead)

    @property
    def lent(self) -> bool:
        """Whether a view from :meth:`receive_buffer` waits for :meth:`received_into`."""
        pending = self._pending
        return pending is not None and pending.lent > 0

    def received_into(self, nbytes: int) -> bytes:
        """``nbytes`` were read into the view from :meth:`receive_buffer`;
        return those past the end of the payload, to :meth:`feed` next."""
        pending = self._pending
        if pending is None:
            raise ValueError("no buffer was lent")
        return pending.received_into(nbytes)

    @property
    def buffered(self) -> int:
        """How many received bytes wait to be parsed (a pending frame included)."""
        data = self._buf if self._input is None else self._input
        buffered = len(data) - self._pos
        pending = self._pending
        if pending is not None:
            buffered += len(pending.header) + pending.received
        return buffered

    def take_buffer(self) -> bytes:
        """Remove and return the bytes not parsed yet, as they were received."""
        with memoryview(self._buf if self._input is None else self._input) as view:
            data = bytes(view[self._pos :])  # one copy, not a slice and a copy
        pending = self._pending
        if pending is not None and pending.received < pending.length:
            data = pending.wire_bytes() + data
        self.discard()
        return data

    def discard(self) -> None:
        """Forget the bytes not parsed yet (without copying them)."""
        self._buf.clear()
        self._input = None
        self._pos = 0
        self._pending = None

    def parse(self) -> Frame | None:
        """Return the next complete frame, or ``None`` if more bytes are needed.

        Raises :class:`ProtocolError` for a frame that breaks RFC 6455 (unknown
        opcode, wrong masking, a 64-bit length with its most significant bit
        set, a long or fragmented control frame) and :class:`PayloadTooBig`.
        Reserved bits are reported in the frame; the caller checks them against
        the negotiated extensions.
        """
        raw = self.parse_raw()
        if raw is None:
            return None
        b0, data = raw
        return Frame(
            _OPCODES[b0 & 0x0F],
            data,
            bool(b0 & 0x80),
            bool(b0 & 0x40),
            bool(b0 & 0x20),
            bool(b0 & 0x10),
        )

    def parse_raw(self) -> tuple[int, bytes] | None:
        """:meth:`parse` without building the :class:`Frame`: the frame's first
        header byte (FIN, RSV1-3 and a valid opcode) and its payload. The
        protocol's path for whole data messages, where building a ``Frame``
        would be a third of the parsing."""
        pending = self._pending
        if pending is not None:
            if pending.received < pending.length:
                return None
            self._pending = None
            self.taken = pending.taken
            return pending.header[0], pending.finish()
        self.taken = 0
        borrowed = self._input
        buf = self._buf if borrowed is None else borrowed
        pos = self._pos
        parsed = _parse_frame(buf, pos, self.mask, self.max_size)
        if parsed is None:
            if borrowed is not None:
                self._keep_input()
            return None
        b0, data, header_size, length = parsed
        if data is None:
            # The payload is incomplete: assemble it in place from here on.
            start = pos + header_size
            pending = PendingFrame(
                bytes(buf[pos:start]),
                _OPCODES[b0 & 0x0F],
                length,
                bytes(buf[start - 4 : start]) if self.mask else None,
                bool(b0 & 0x80),
                bool(b0 & 0x40),
                bool(b0 & 0x20),
                bool(b0 & 0x10),
            )
            if start < len(buf):
                with memoryview(buf) as view:
                    pending.fill(view[start:])
            if borrowed is None:
                self._buf.clear()
            else:
                self._input = None
            self._pos = 0
            self._pending = pending
            return None
        end = pos + header_size + length
        if end == len(buf):
            if borrowed is None:
                self._buf.clear()
            else:
                self._input = None
            self._pos = 0
        elif borrowed is not None:
            self._pos = end
        elif end > 65536 and end > len(buf) // 2:
            # Compact when the consumed prefix dominates the buffer.
            del self._buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return b0, data
