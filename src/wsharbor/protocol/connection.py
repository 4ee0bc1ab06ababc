"""The RFC 6455 connection state machine, for both sides, without I/O.

Theory of operation
-------------------

A :class:`WebSocketProtocol` starts once the opening handshake succeeded (see
:mod:`.handshake`), in state ``OPEN``. The I/O layer drives it with four calls
and reads three outputs::

    receive_data(bytes) ─┐                     ┌─► events_received()  messages, pings, close
    receive_eof()       ─┤  WebSocketProtocol  ├─► data_to_send()     bytes to write, in order
    send_*(...)         ─┤                     ├─► close_transport    time to close TCP
    fail(code, reason)  ─┘                     └─► state, close_exc   how it ended

The states, as a table (RFC 6455 section 7)::

    state    event                           next     output
    -------  ------------------------------  -------  ---------------------------------------
    OPEN     data frame / ping / pong        OPEN     event (ping is answered by a pong)
    OPEN     close frame received            CLOSING  close frame echoed; event
    OPEN     send_close()                    CLOSING  close frame
    OPEN     protocol violation / fail()     CLOSING  close frame with the code; input dropped
    CLOSING  close frame received            CLOSING  event; the handshake is complete
    any      receive_eof()                   CLOSED   ``close_exc`` tells how it ended

When the closing handshake is complete, or the connection failed, the server
closes the TCP connection first (RFC 6455 section 7.1.1): ``close_transport``
becomes true on the server side. The client waits for the server to do so, for
at most ``close_timeout`` (the I/O layer's job), then closes it itself.

``receive_data()`` never raises. A failure becomes a close frame with the right
code (1002 protocol error, 1007 invalid UTF-8, 1009 message too big, 1011
internal error) and the exception is kept in ``failure`` for the I/O layer to
chain as ``__cause__``.
"""

from __future__ import annotations

import codecs
import enum
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from .. import defaults
from ..exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidState,
    PayloadTooBig,
    ProtocolError,
    TooManyFragments,
)
from ..typing import LoggerLike
from .deflate import PerMessageDeflate
from .extensions import Extension
from .frames import (
    SEND_JOIN_BELOW,
    Close,
    CloseCode,
    Frame,
    FrameParser,
    Opcode,
    PendingFrame,
    serialize_data_frame,
    serialize_data_frame_parts,
    serialize_frame,
    serialize_frame_parts,
)
from .utf8 import Utf8Validator, Utf8ValidatorLike

__all__ = [
    "OK_CLOSE_CODES",
    "BinaryMessage",
    "CloseReceived",
    "Event",
    "Fragment",
    "PingReceived",
    "PongReceived",
    "Side",
    "State",
    "TextMessage",
    "WebSocketProtocol",
]


class Side(enum.Enum):
    """Which end of the connection this is."""

    SERVER = "server"
    CLIENT = "client"


class State(enum.IntEnum):
    """State of a WebSocket connection (RFC 6455 section 4.1 and 7).

    :class:`WebSocketProtocol` starts in ``OPEN``: it exists from the end of the
    opening handshake. ``CONNECTING`` is what connections report before that
    (during the opening handshake), as websockets does.
    """

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


# The enum members this module's code uses, as module globals: on Python 3.11
# reading a member from its class (``State.OPEN``) is a descriptor call of about
# 90 ns, a global costs about 10 (Python 3.12: about 30), and the per-message
# paths compare with several.
_OPEN = State.OPEN
_CLOSING = State.CLOSING
_CLOSED = State.CLOSED
_CONT = Opcode.CONT
_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CLOSE = Opcode.CLOSE
_PING = Opcode.PING
_PONG = Opcode.PONG
_SERVER = Side.SERVER
_CLIENT = Side.CLIENT

#: Close codes for which the connection is considered closed normally.
OK_CLOSE_CODES = frozenset({CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, 1005})


# Events: small frozen dataclasses, as in wsproto.


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A complete text message."""

    data: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    """A complete binary message."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Fragment:
    """Part of a message, when the protocol streams fragments.

    ``data`` is ``str`` for a text message (decoded incrementally: a UTF-8
    sequence split across frames is held back until complete) and ``bytes`` for
    a binary message. ``final`` is true on the last fragment of the message.
    """

    data: str | bytes
    final: bool

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class PingReceived:
    """A ping frame; the protocol already queued the pong."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    """A pong frame."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """A close frame; ``code`` is 1005 when it carried no code."""

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Fragment | PingReceived | PongReceived | CloseReceived

_utf8_decoder = codecs.getincrementaldecoder("utf-8")

# The events of whole messages, built without their dataclass __init__ (a frozen
# dataclass sets each field through object.__setattr__: 2.5 times the cost):
# object.__new__, then the slot's own setter, which the frozen __setattr__
# doesn't guard. Equal to the instances __init__ makes.
_new_event = object.__new__
_set_text_data = cast(Any, TextMessage).__dict__["data"].__set__
_set_binary_data = cast(Any, BinaryMessage).__dict__["data"].__set__


def _without_tracebacks(exc: Exception) -> Exception:
    """``exc`` with the tracebacks of it and of its causes and contexts removed."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        link.__traceback__ = None
        chain.append(link)
        link = link.__cause__ or link.__context__
    return exc


#: Opcode by value, for frames whose opcode the parser already checked (an
#: enum call costs about a microsecond).
_OPCODES = {opcode.value: opcode for opcode in Opcode}


class WebSocketProtocol:
    """Sans-I/O WebSocket connection, after the opening handshake.

    :param side: :attr:`Side.SERVER` or :attr:`Side.CLIENT`.
    :param extensions: negotiated extensions, in the order of the handshake.
    :param max_size: maximum size of an incoming message in bytes (after
        decompression); ``None`` for no limit. It bounds every frame's declared
        length too, before its payload is buffered (see :meth:`_frame_limit`).
    :param max_fragments: maximum number of frames of an incoming message;
        ``None`` for no limit. A message over it fails with 1009.
    :param max_frame_size: maximum size of one incoming frame (after
        decompression), below ``max_size`` for long messages in short frames
        (websockets' ``max_size=(message, frame)``); ``None`` for no limit.
    :param stream_fragments: emit :class:`Fragment` events as frames arrive
        instead of reassembling whole messages. The attribute may be changed
        between messages (see :attr:`receiving_message`): the asyncio layer
        streams one message that way for ``recv_streaming()``.
    """

    __slots__ = (
        "_discard_input",
        "_events",
        "_mask",
        "_output",
        "_parser",
        "_recv_buffer",
        "_recv_decoder",
        "_recv_fragments",
        "_recv_opcode",
        "_recv_size",
        "_recv_validator",
        "_send_opcode",
        "close_rcvd",
        "close_rcvd_then_sent",
        "close_sent",
        "close_transport",
        "debug",
        "extensions",
        "failure",
        "logger",
        "max_fragments",
        "max_frame_size",
        "max_size",
        "receiving_into",
        "side",
        "state",
        "stream_fragments",
    )

    def __init__(
        self,
        side: Side,
        *,
        extensions: Sequence[Extension] = (),
        max_size: int | None = defaults.MAX_SIZE,
        max_fragments: int | None = defaults.MAX_FRAGMENTS,
        stream_fragments: bool = False,
        max_frame_size: int | None = None,
        logger: LoggerLike | None = None,
    ) -> None:
        self.side = side
        # A tuple: the empty one is shared by every connection without extensions.
        self.extensions = tuple(extensions)
        self.max_size = max_size
        self.max_frame_size = max_frame_size
        self.max_fragments = max_fragments
        self.stream_fragments = stream_fragments
        if logger is None:
            logger = logging.getLogger(f"wsharbor.{side.value}")
        self.logger = logger
        self.debug = logger.isEnabledFor(logging.DEBUG)

        self.state = _OPEN
        self._mask = side is _CLIENT
        self._parser = FrameParser(mask=side is _SERVER, max_size=self._parser_limit(max_size))
        # Made when the first event or bytes to send come, given away by
        # events_received() and data_to_send(): an idle connection holds no
        # list (112 bytes).
        self._events: list[Event] | None = None
        self._output: list[bytes] | None = None

        # Message being received, when fragmented: its opcode, size and number
        # of frames so far, its payload (created for the first fragmented
        # message only, to keep idle connections small; a fragment costs its
        # bytes and nothing more), for text the UTF-8 validator (also for a
        # text frame whose payload arrives in pieces) and, for a text message
        # streamed as fragments, the decoder that makes their text.
        self._recv_opcode: Opcode | None = None
        self._recv_size = 0
        self._recv_fragments = 0
        self._recv_buffer: bytearray | None = None
        self._recv_validator: Utf8ValidatorLike | None = None
        self._recv_decoder: codecs.IncrementalDecoder | None = None

        # Message being sent, when fragmented.
        self._send_opcode: Opcode | None = None

        # Closing handshake.
        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.close_rcvd_then_sent: bool | None = None
        #: The exception that made the protocol fail the connection, if any.
        self.failure: Exception | None = None
        #: True when the I/O layer should close the TCP connection.
        self.close_transport = False
        self._discard_input = False
        #: True while the view from the last :meth:`receive_buffer` call is lent:
        #: the next bytes received are in it, for :meth:`received_into`.
        self.receiving_into = False

    # Public API: outputs.

    def events_received(self) -> list[Event]:
        """Return the events received since the last call, and forget them."""
        events = self._events
        if events is None:
            return []
        self._events = None
        return events

    def data_to_send(self) -> list[bytes]:
        """Return the bytes to write since the last call, and forget them.

        The buffers are to be written in order; a frame with a large payload is
        two of them, its header and its payload (see
        :data:`~wsharbor.protocol.frames.SEND_JOIN_BELOW`), for a transport's
        ``writelines``."""
        output = self._output
        if output is None:
            return []
        self._output = None
        return output

    @property
    def close_code(self) -> int | None:
        """Close code received, 1006 if the connection closed without one, or None."""
        if self.state is not _CLOSED:
            return None
        return CloseCode.ABNORMAL_CLOSURE if self.close_rcvd is None else self.close_rcvd.code

    @property
    def close_reason(self) -> str | None:
        """Close reason received, ``""`` if none, or None while not closed."""
        if self.state is not _CLOSED:
            return None
        return "" if self.close_rcvd is None else self.close_rcvd.reason

    @property
    def close_exc(self) -> ConnectionClosed:
        """The exception to raise when the application uses a closed connection."""
        rcvd, sent = self.close_rcvd, self.close_sent
        exc_type: type[ConnectionClosed] = ConnectionClosedError
        if (
            rcvd is not None
            and sent is not None
            and rcvd.code in OK_CLOSE_CODES
            and sent.code in OK_CLOSE_CODES
        ):
            exc_type = ConnectionClosedOK
        exc = exc_type(rcvd, sent, self.close_rcvd_then_sent)
        exc.__cause__ = self.failure
        return exc

    @property
    def receiving_message(self) -> bool:
        """Whether a fragmented message is partly received (its first frame came,
        its last one didn't): :attr:`stream_fragments` may change only between
        messages, when this is false."""
        return self._recv_opcode is not None

    @property
    def buffered_input(self) -> int:
        """Bytes received and not parsed yet, plus the message being reassembled."""
        return self._parser.buffered + self._recv_size

    # Public API: inputs.

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Process bytes received from the network. Never raises."""
        if self._discard_input or self.state is _CLOSED:
            return
        self._parser.feed(data)
        self._parse()

    def receive_buffer(self, size: int, ahead: int = 0) -> memoryview | None:
        """Where the next bytes from the network may be read straight into.

        Once a frame's header said how large its payload is, the payload is
        assembled in a buffer of that size (after the ``max_size`` check). While
        a large part of it is still to come, this returns a writable view of the
        next at most ``size`` bytes of that buffer: an I/O layer reads the socket
        into it and calls :meth:`received_into`, and the payload is never
        copied. ``None`` otherwise (a small frame, between frames, after a
        failure, or without the C accelerator): read into a buffer of your own
        and call :meth:`receive_data`.

        With ``ahead`` (at most :data:`~wsharbor.protocol.frames.HEADER_MAX`),
        a view that reaches the end of the payload goes on for that many bytes:
        one read may then bring the rest of the payload and the next frame's
        header, which :meth:`received_into` returns.
        """
        view = None if self._discard_input else self._parser.receive_buffer(size, ahead)
        self.receiving_into = view is not None
        return view

    def read_size(self, size: int) -> int:
        """How many bytes, at most ``size``, to read next into a buffer of your
        own when :meth:`receive_buffer` returned None: fewer after large
        frames, so that the next large payload can be read straight into its
        buffer (see :meth:`FrameParser.read_size`)."""
        return self._parser.read_size(size)

    def received_into(self, nbytes: int) -> bytes:
        """Process ``nbytes`` read into the view :meth:`receive_buffer` returned,
        before any other input. Never raises.

        Returns the bytes that landed past the payload's end (only with
        ``ahead``; usually empty). They are the next input: pass them to
        :meth:`receive_data`. An I/O layer may first hand the events to the
        application, as the message they complete is then freed before the
        next frame's header allocates the next payload's buffer.
        """
        self.receiving_into = False
        if self._discard_input:
            return b""
        try:
            beyond = self._parser.received_into(nbytes)
        except ValueError as exc:  # the I/O layer misused the view: a bug
            self.logger.error("unexpected error while receiving", exc_info=True)
            self._fail(CloseCode.INTERNAL_ERROR, "internal error", exc)
            return b""
        self._parse()
        return beyond

    def _emit(self, event: Event) -> None:
        events = self._events
        if events is None:
            self._events = [event]
        else:
            events.append(event)

    def _parse(self) -> None:
        extensions = self.extensions
        if not extensions:
            self._parse_frames()
            return
        # Extensions that keep state for the length of one read (the deflate
        # decompressor of a burst, see PerMessageDeflate.hold).
        held: list[Any] = [ext for ext in extensions if hasattr(ext, "hold")]
        for ext in held:
            ext.hold()
        try:
            self._parse_frames()
        finally:
            for ext in held:
                ext.release()

    def _parse_frames(self) -> None:
        parser = self._parser
        events = self._events
        if events is None:
            events = self._events = []
        try:
            while not self._discard_input:
                raw = parser.parse_raw()
                if raw is None:
                    pending = parser.pending
                    if pending is not None:
                        self._receive_pending(pending)
                    break
                b0, data = raw
                if self._recv_opcode is None and not self.stream_fragments and not self.debug:
                    # Fast path: a whole message in one frame (FIN, text or
                    # binary, no RSV2/3), with no extension or with
                    # permessage-deflate alone (RSV1: compressed): what
                    # _receive_frame does, without building a Frame.
                    whole = False
                    if (b0 == 0x82 or b0 == 0x81) and not self.extensions:
                        if self.max_size is not None and len(data) > self.max_size:
                            raise PayloadTooBig(self._too_big(len(data)))
                        whole = True
                    elif b0 == 0xC2 or b0 == 0xC1:
                        deflate = self._only_deflate()
                        if deflate is not None:
                            data = deflate.decode_message(data, max_size=self._inflated_limit(0))
                            whole = True
                    if whole:
                        if b0 & 0x0F == 0x02:
                            event: Event = _new_event(BinaryMessage)
                            _set_binary_data(event, data)
                        else:
                            # If the frame arrived in pieces, they were
                            # validated as they came; decoding validates it
                            # whole.
                            self._recv_validator = None
                            event = _new_event(TextMessage)
                            _set_text_data(event, data.decode())
                        events.append(event)
                        continue
                frame = Frame(
                    _OPCODES[b0 & 0x0F],
                    data,
                    bool(b0 & 0x80),
                    bool(b0 & 0x40),
                    bool(b0 & 0x20),
                    bool(b0 & 0x10),
                )
                if self.debug:
                    self.logger.debug("< %s", frame)
                self._receive_frame(frame)
        except ProtocolError as exc:
            self._fail(CloseCode.PROTOCOL_ERROR, str(exc), exc)
        except PayloadTooBig as exc:
            self._fail(CloseCode.MESSAGE_TOO_BIG, str(exc), exc)
        except UnicodeDecodeError as exc:
            self._fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}", exc)
        except Exception as exc:  # an extension or a bug: never leak out
            self.logger.error("unexpected error while parsing", exc_info=True)
            self._fail(CloseCode.INTERNAL_ERROR, "internal error", exc)

    def receive_eof(self) -> None:
        """Process the end of the TCP stream (or the connection being lost)."""
        if self.state is _CLOSED:
            return
        self.state = _CLOSED
        self._discard_input = True
        self._parser.discard()
        self._recv_buffer = None
        if self.debug:
            self.logger.debug("= connection is CLOSED")

    # Public API: sending.

    def send_text(self, data: str | bytes, fin: bool = True) -> None:
        """Send a text frame; ``bytes`` must be UTF-8 already.

        With ``fin=False``, the message continues with :meth:`send_continuation`.
        """
        if isinstance(data, str):
            data = data.encode()
        self._send_data_frame(_TEXT, data, fin)

    def send_binary(self, data: bytes | bytearray | memoryview, fin: bool = True) -> None:
        """Send a binary frame; see :meth:`send_text` for ``fin``."""
        self._send_data_frame(_BINARY, data if type(data) is bytes else bytes(data), fin)

    def send_continuation(self, data: str | bytes, fin: bool) -> None:
        """Send the next fragment of a message started with ``fin=False``."""
        if self._send_opcode is None:
            raise InvalidState("no fragmented message in progress")
        if isinstance(data, str):
            data = data.encode()
        self._send_data_frame(_CONT, data, fin)

    def preencode_key(self) -> Hashable | None:
        """What a whole message sent on this connection is encoded with, or None.

        Two connections with equal keys write the same bytes for the same
        message sent in one frame, so :func:`wsharbor.broadcast` encodes it
        once for all of them (:meth:`preencode`, :meth:`send_preencoded`): a
        server connection without extensions (key ``()``), or whose only
        extension encodes a message without state kept from earlier ones
        (permessage-deflate without context takeover on our side: its
        ``shared_encoding``). None for a client (frames are masked) or a
        connection with a context (each encodes for itself).
        """
        if self.side is not _SERVER:
            return None
        extensions = self.extensions
        if not extensions:
            return ()
        if len(extensions) == 1:
            key: Hashable | None = getattr(extensions[0], "shared_encoding", None)
            return key
        return None

    def preencode(self, opcode: Opcode, data: bytes) -> bytes:
        """Serialize a whole message as this connection would send it, without sending it.

        Only for a connection whose :meth:`preencode_key` isn't None; the
        bytes go to :meth:`send_preencoded` of every connection with the same key.
        """
        if self.preencode_key() is None:
            raise InvalidState("this connection encodes each message itself")
        if opcode is not _TEXT and opcode is not _BINARY:
            raise ValueError(f"can't pre-encode a {opcode.name} frame")
        frame = Frame(opcode, data)
        for extension in self.extensions:
            frame = extension.encode(frame)
        return serialize_frame(frame, mask=False)

    def send_preencoded(self, data: bytes) -> None:
        """Write a frame made by :meth:`preencode` (server side only).

        :func:`wsharbor.broadcast` encodes a message once and writes the same
        bytes to every connection with the same :meth:`preencode_key`.
        """
        if self.side is not _SERVER or (self.extensions and self.preencode_key() is None):
            raise InvalidState(
                "pre-encoded frames need a server connection without extensions "
                "or without compression context"
            )
        if self.state is not _OPEN or self._send_opcode is not None:
            self._check_can_send_data()  # raises
        output = self._output
        if output is None:
            self._output = [data]
        else:
            output.append(data)

    def send_ping(self, data: bytes = b"") -> None:
        """Send a ping frame (payload of at most 125 bytes)."""
        self._check_open("send a ping")
        self._send_frame(Frame(_PING, bytes(data)))

    def send_pong(self, data: bytes = b"") -> None:
        """Send a pong frame (payload of at most 125 bytes)."""
        self._check_open("send a pong")
        self._send_frame(Frame(_PONG, bytes(data)))

    def send_close(self, code: int | None = None, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 section 7.1.2).

        ``code=None`` sends a close frame without payload.
        """
        self._check_open("close")
        if code is None:
            if reason:
                raise ProtocolError("a close frame without code can't have a reason")
            close = Close(CloseCode.NO_STATUS_RCVD, "")
        else:
            close = Close(code, reason)
            close.check()
        self._send_close(close)

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the WebSocket connection (RFC 6455 section 7.1.7).

        Sends a close frame with ``code`` if none was sent yet, drops any further
        input and asks the I/O layer to close the TCP connection. ``code=1006``
        (abnormal closure) closes without sending a close frame.
        """
        if code != CloseCode.ABNORMAL_CLOSURE:
            try:
                Close(code).check()  # a long reason is truncated, not refused
            except ProtocolError as exc:
                raise ValueError(str(exc)) from None
        self._fail(code, reason, None)

    # Receiving frames.

    def _receive_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if self.extensions:
            frame = self._decode(frame)
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            raise ProtocolError(
                "reserved bits set without a negotiated extension (RFC 6455 section 5.2)"
            )

        if (
            self.max_frame_size is not None
            and opcode in (_TEXT, _BINARY, _CONT)
            and len(frame.data) > self.max_frame_size
        ):
            # Reached only with an extension (else the parser refused the
            # header): a frame smaller on the wire than once decoded.
            raise PayloadTooBig(
                f"frame of {len(frame.data)} bytes exceeds limit of {self.max_frame_size} bytes"
            )
        if opcode is _TEXT or opcode is _BINARY:
            if self._recv_opcode is not None:
                raise ProtocolError(
                    "expected a continuation frame; a message is in progress (RFC 6455 section 5.4)"
                )
            data = frame.data
            if frame.fin and not self.stream_fragments:
                # Fast path: a whole message in one frame.
                if self.max_size is not None and len(data) > self.max_size:
                    raise PayloadTooBig(self._too_big(len(data)))
                if opcode is _TEXT:
                    # If the frame arrived in pieces, their validation made it
                    # fail early if it could; decoding validates it whole.
                    self._recv_validator = None
                    self._emit(TextMessage(data.decode()))
                else:
                    self._emit(BinaryMessage(data))
                return
            self._recv_opcode = opcode
            self._recv_size = 0
            self._recv_fragments = 0
            if opcode is _TEXT:
                if self._recv_validator is None:
                    self._recv_validator = Utf8Validator()
                if self.stream_fragments:
                    self._recv_decoder = _utf8_decoder()
            self._receive_fragment(data, frame.fin)

        elif opcode is _CONT:
            if self._recv_opcode is None:
                raise ProtocolError(
                    "continuation frame without a message in progress (RFC 6455 section 5.4)"
                )
            self._receive_fragment(frame.data, frame.fin)

        elif opcode is _PING:
            # RFC 6455 section 5.5.2: answer with a pong carrying the same data,
            # unless a close frame was already sent.
            if self.close_sent is None:
                self._send_frame(Frame(_PONG, frame.data))
            self._emit(PingReceived(frame.data))

        elif opcode is _PONG:
            self._emit(PongReceived(frame.data))

        else:  # Opcode.CLOSE
            self._receive_close(frame)

    def _only_deflate(self) -> PerMessageDeflate | None:
        """The negotiated permessage-deflate when it is the only extension (the
        protocol's fast paths then skip building frames), else None."""
        extensions = self.extensions
        if len(extensions) == 1 and type(extensions[0]) is PerMessageDeflate:
            return extensions[0]
        return None

    def _inflated_limit(self, so_far: int) -> int | None:
        """How large a data frame may decode to, when ``so_far`` bytes of its
        message were received: what is left of ``max_size``, at most
        ``max_frame_size``."""
        limit = None if self.max_size is None else self.max_size - so_far
        frame_limit = self.max_frame_size
        if frame_limit is not None:
            limit = frame_limit if limit is None else min(limit, frame_limit)
        return limit

    def _decode(self, frame: Frame) -> Frame:
        remaining: int | None = None
        if frame.opcode not in (_PING, _PONG, _CLOSE):
            remaining = self._inflated_limit(self._recv_size if frame.opcode is _CONT else 0)
        for extension in reversed(self.extensions):
            frame = extension.decode(frame, max_size=remaining)
        return frame

    def _receive_fragment(self, data: bytes, fin: bool) -> None:
        self._recv_size += len(data)
        self._recv_fragments += 1
        max_size = self.max_size
        if max_size is not None:
            if self._recv_size > max_size:
                raise PayloadTooBig(self._too_big(self._recv_size))
            # The next frame of this message can't be larger than what is left.
            left = max_size if fin else max_size - self._recv_size
            self._parser.max_size = self._parser_limit(left)
        if self.max_fragments is not None and self._recv_fragments > self.max_fragments:
            # Empty or tiny fragments add little toward max_size but cost a
            # frame's work each: bound them too.
            raise TooManyFragments(f"message of more than {self.max_fragments} fragments")
        validator = self._recv_validator
        if validator is not None and (self.stream_fragments or not fin):
            # Validate UTF-8 as each fragment arrives (RFC 6455 section 8.1:
            # fail as soon as the payload is known to be invalid, even
            # mid-message). What was taken from the frame while it was
            # pending was validated already. The last fragment of a
            # reassembled message is validated by decoding the whole.
            taken = self._parser.taken
            validator.feed(memoryview(data)[taken:] if taken else data, fin)
        if self.stream_fragments:
            decoder = self._recv_decoder
            part: str | bytes = data if decoder is None else decoder.decode(data, fin)
            self._emit(Fragment(part, fin))
        else:
            buffer = self._recv_buffer
            if buffer is None:
                buffer = self._recv_buffer = bytearray()
            buffer += data
            if fin:
                if self._recv_opcode is _TEXT:
                    self._emit(TextMessage(buffer.decode()))
                else:
                    self._emit(BinaryMessage(bytes(buffer)))
                buffer.clear()
        if fin:
            self._recv_opcode = None
            self._recv_validator = None
            self._recv_decoder = None
            self._recv_size = 0

    def _receive_pending(self, pending: PendingFrame) -> None:
        """A frame's header was parsed and its payload is arriving: check what can
        be checked already, in the order :meth:`_receive_frame` checks it, so that
        a bad frame fails before it completes, the same way."""
        if self.extensions:
            # Reserved bits and payloads are the extensions' to interpret first
            # (a compressed payload can't be validated before it is inflated).
            return
        opcode = pending.opcode
        if opcode is not _TEXT and opcode is not _BINARY and opcode is not _CONT:
            return  # a control frame: at most 125 bytes, checked when complete
        if pending.rsv1 or pending.rsv2 or pending.rsv3:
            raise ProtocolError(
                "reserved bits set without a negotiated extension (RFC 6455 section 5.2)"
            )
        if opcode is _CONT:
            if self._recv_opcode is None:
                raise ProtocolError(
                    "continuation frame without a message in progress (RFC 6455 section 5.4)"
                )
        elif self._recv_opcode is not None:
            raise ProtocolError(
                "expected a continuation frame; a message is in progress (RFC 6455 section 5.4)"
            )
        validator = self._recv_validator
        if opcode is _TEXT and validator is None:
            validator = self._recv_validator = Utf8Validator()
        if validator is not None and pending.received > pending.taken:
            # RFC 6455 section 8.1: invalid UTF-8 fails the connection as soon
            # as it arrives, even in the middle of a frame (Autobahn 6.4.3).
            validator.feed(pending.take())

    def _receive_close(self, frame: Frame) -> None:
        # Raises ProtocolError (bad code, 1 byte) or UnicodeDecodeError (reason).
        close = Close.parse(frame.data)
        self.close_rcvd = close
        if self.close_sent is None:
            self.close_rcvd_then_sent = True
            # RFC 6455 section 5.5.1: echo the status code received.
            # An empty close payload (1005) is answered with an empty one.
            self._send_close(Close(close.code, ""))
        self._emit(CloseReceived(close.code, close.reason))
        # No more frames are expected after a close frame (section 5.5.1).
        self._discard_input = True
        self._parser.discard()
        if self.side is _SERVER:
            self.close_transport = True

    # Sending frames.

    def _check_open(self, action: str) -> None:
        if self.state is not _OPEN:
            raise InvalidState(f"can't {action}: connection is {self.state.name}")

    def _check_can_send_data(self) -> None:
        self._check_open("send a message")
        if self._send_opcode is not None:
            raise InvalidState("a fragmented message is in progress; send its continuation")

    def _send_data_frame(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        if opcode is _CONT:
            self._check_open("send a message")
        else:
            self._check_can_send_data()
        if self._output is None:
            self._output = []
        rsv1 = False
        if self.extensions or self.debug:
            deflate = None if self.debug else self._only_deflate()
            if deflate is None:
                self._send_frame(Frame(opcode, data, fin))
                self._send_opcode = None if fin else (self._send_opcode or opcode)
                return
            # permessage-deflate alone, no frame to log: what _send_frame
            # does, without building frames.
            data, rsv1 = deflate.encode_data(opcode, data, fin)
        if len(data) < SEND_JOIN_BELOW:
            self._output.append(
                serialize_data_frame(opcode, data, fin=fin, mask=self._mask, rsv1=rsv1)
            )
        else:
            # A large payload goes out as it is, after its header: not copied
            # into one buffer with it (masking on the client side copies it).
            self._output += serialize_data_frame_parts(
                opcode, data, fin=fin, mask=self._mask, rsv1=rsv1
            )
        self._send_opcode = None if fin else (self._send_opcode or opcode)

    def _send_frame(self, frame: Frame) -> None:
        for extension in self.extensions:
            frame = extension.encode(frame)
        if self.debug:
            self.logger.debug("> %s", frame)
        if self._output is None:
            self._output = []
        if len(frame.data) < SEND_JOIN_BELOW:
            self._output.append(serialize_frame(frame, mask=self._mask))
        else:
            self._output += serialize_frame_parts(frame, mask=self._mask)

    def _send_close(self, close: Close) -> None:
        self._send_frame(Frame(_CLOSE, close.serialize()))
        self.close_sent = close
        if self.close_rcvd_then_sent is None:
            self.close_rcvd_then_sent = self.close_rcvd is not None
        self.state = _CLOSING

    def _fail(self, code: int, reason: str, exc: Exception | None) -> None:
        if self.debug:
            self.logger.debug("! failing connection with code %d", code)
        if exc is not None and self.failure is None:
            # Kept without its traceback: the traceback's frames hold this
            # protocol (and, for a refused deflate bomb, the inflated chunks),
            # which would keep both alive in a cycle until a full collection.
            self.failure = _without_tracebacks(exc)
        if self.state is _OPEN and code != CloseCode.ABNORMAL_CLOSURE:
            if len(reason.encode()) > 123:
                reason = reason.encode()[:120].decode(errors="ignore") + "..."
            self._send_close(Close(code, reason))
        elif self.state is _OPEN:
            self.state = _CLOSING  # closing without a close frame
        # Section 7.1.7: after failing, don't process data from the peer,
        # including a close frame answering ours; close the TCP connection.
        self._discard_input = True
        self._parser.discard()
        self._recv_buffer = None
        self.close_transport = True

    def _parser_limit(self, left: int | None) -> int | None:
        """The frame parser's limit when ``left`` bytes of the message may still
        arrive (``None``: no message limit), with ``max_frame_size`` applied."""
        frame = self.max_frame_size
        if frame is not None and (left is None or frame < left):
            left = frame
        return None if left is None else self._frame_limit(left)

    def _frame_limit(self, left: int) -> int:
        """The largest frame payload accepted when ``left`` bytes of the message
        may still arrive.

        Without extensions, ``left`` itself. An extension may make a payload
        larger on the wire than once decoded: permessage-deflate's worst case
        is about 1/8 more (fixed Huffman codes spend 9 bits on some literals)
        plus a few bytes of block headers, so a compressed frame may be up to
        ``left + left // 8 + 64`` bytes; its decoded size is checked against
        ``left`` as it is decompressed. Either way a frame's declared length is
        checked before its payload is buffered (issue 13: with an extension, a
        header announcing 2**62 bytes used to be buffered until memory ran out).
        """
        if self.extensions:
            return left + (left >> 3) + 64
        return left

    def _too_big(self, size: int) -> str:
        return f"message of {size} bytes exceeds limit of {self.max_size} bytes"
