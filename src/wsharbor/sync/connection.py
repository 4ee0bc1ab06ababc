"""A WebSocket connection driven by threads: the part shared by both sides.

Theory of operation
-------------------

A :class:`Connection` owns a connected socket and, once the opening handshake
succeeded, the sans-I/O :class:`~wsharbor.protocol.connection.WebSocketProtocol`.
Three kinds of threads use it:

* **the reader thread**, started when the connection opens, reads from the
  socket, feeds the protocol, writes what the protocol answers by itself (pongs,
  the echo of a close frame) and puts data frames into the
  :class:`~wsharbor.sync.messages.Assembler`. When the assembler holds more than
  ``max_queue`` frames it stops reading: the kernel buffers fill and TCP flow
  control pushes back on the peer. It ends at the end of the TCP stream, then
  closes the socket;
* **application threads** call :meth:`recv` (one at a time), :meth:`send`,
  :meth:`ping`, :meth:`close`, ... Everything that touches the protocol or
  writes to the socket holds one mutex, so frames never interleave;
* **the keepalive thread**, when ``ping_interval`` is set, sends a ping every
  ``ping_interval`` seconds and fails the connection with 1011 when no pong
  comes within ``ping_timeout``.

Closing (RFC 6455 section 7): :meth:`close` sends a close frame, then waits for
the reader thread to see the end of the TCP stream, for at most
``close_timeout``. The server closes TCP first (section 7.1.1): when the protocol
says the closing handshake is complete (or the connection failed), the writer
half-closes the socket (FIN) and the reader waits for the peer's FIN. After
``close_timeout`` the socket is closed anyway. Any method used on a closed
connection raises :exc:`~wsharbor.exceptions.ConnectionClosedOK` or
:exc:`~wsharbor.exceptions.ConnectionClosedError`, chained to what broke the
connection.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import selectors
import socket
import ssl
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias, TypeVar, overload

from .. import defaults
from ..exceptions import (
    ConcurrencyError,
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidState,
    ProtocolError,
)
from ..protocol.connection import (
    Fragment,
    PongReceived,
    Side,
    State,
    WebSocketProtocol,
)
from ..protocol.extensions import Extension
from ..protocol.frames import CloseCode
from ..protocol.http11 import Request, Response
from ..typing import Data, LoggerLike, Subprotocol
from .messages import Assembler
from .utils import Deadline

__all__ = ["Connection", "MaxQueue", "MaxSize", "broadcast", "read_http", "validate_options"]

#: ``max_size``: the largest message, or ``(message, frame)`` limits; None: no limit.
MaxSize: TypeAlias = int | tuple[int | None, int | None] | None
#: ``max_queue``: the high-water mark in frames, or ``(high, low)``; None: no flow control.
MaxQueue: TypeAlias = int | tuple[int | None, int | None] | None

_M = TypeVar("_M")

_BytesLike = (bytes, bytearray, memoryview)


def _split_max_size(max_size: MaxSize) -> tuple[int | None, int | None]:
    if isinstance(max_size, tuple):
        message, frame = max_size
    else:
        message, frame = max_size, None
    for name, value in (("max_size", message), ("max_size (frame)", frame)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive or None, got {value}")
    return message, frame


def _split_max_queue(max_queue: MaxQueue) -> tuple[int | None, int | None]:
    if isinstance(max_queue, tuple):
        return max_queue
    if max_queue is not None and max_queue <= 0:
        raise ValueError(f"max_queue must be positive or None, got {max_queue}")
    return max_queue, None


def validate_options(
    *,
    ping_interval: float | None,
    ping_timeout: float | None,
    close_timeout: float | None,
    max_size: MaxSize,
    max_queue: MaxQueue,
    max_fragments: int | None = defaults.MAX_FRAGMENTS,
    read_limit: int = defaults.READ_LIMIT,
) -> None:
    """Raise :exc:`ValueError` for a bad timeout or limit, before anything connects."""
    for name, value in (
        ("ping_interval", ping_interval),
        ("ping_timeout", ping_timeout),
        ("close_timeout", close_timeout),
    ):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive or None, got {value}")
    _split_max_size(max_size)
    if max_fragments is not None and max_fragments <= 0:
        raise ValueError(f"max_fragments must be positive or None, got {max_fragments}")
    Assembler(*_split_max_queue(max_queue), max_bytes=read_limit)


def _as_payload(data: Data | bytearray | memoryview) -> bytes:
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, _BytesLike):
        return bytes(data)
    raise TypeError(f"data must be str or bytes-like, not {type(data).__name__}")


def read_http(sock: socket.socket, feed: Callable[[bytes], _M | None], deadline: Deadline) -> _M:
    """Read from ``sock`` into ``feed`` (an HTTP parser) until it returns a message.

    Raises :exc:`EOFError` if the peer closes first, :exc:`TimeoutError` when
    ``deadline`` passes, and what ``feed`` raises.
    """
    while True:
        sock.settimeout(deadline.timeout())
        data = sock.recv(defaults.READ_LIMIT)
        if not data:
            raise EOFError("connection closed during the opening handshake")
        message = feed(data)
        if message is not None:
            return message


class Connection:
    """A WebSocket connection in a thread-based program; both sides share it.

    Use :class:`~wsharbor.sync.client.ClientConnection` (from
    :func:`~wsharbor.sync.client.connect`) or
    :class:`~wsharbor.sync.server.ServerConnection` (given to the handler of
    :func:`~wsharbor.sync.server.serve`). Iterate on it to receive messages
    until the connection closes normally::

        for message in websocket:
            websocket.send(message)

    ``ping_interval``, ``ping_timeout``, ``close_timeout``, ``max_size``,
    ``max_fragments``, ``max_queue`` and ``read_limit`` are those of
    ``connect()`` and ``serve()``.
    """

    side: Side

    #: The most bytes one read from the socket takes (``read_limit``).
    recv_bufsize: int = defaults.READ_LIMIT

    def __init__(
        self,
        sock: socket.socket,
        *,
        ping_interval: float | None = defaults.PING_INTERVAL,
        ping_timeout: float | None = defaults.PING_TIMEOUT,
        close_timeout: float | None = defaults.CLOSE_TIMEOUT,
        max_size: MaxSize = defaults.MAX_SIZE,
        max_fragments: int | None = defaults.MAX_FRAGMENTS,
        max_queue: MaxQueue = defaults.MAX_QUEUE,
        read_limit: int = defaults.READ_LIMIT,
        logger: LoggerLike | None = None,
    ) -> None:
        validate_options(
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
            close_timeout=close_timeout,
            max_size=max_size,
            max_queue=max_queue,
            max_fragments=max_fragments,
            read_limit=read_limit,
        )
        self.socket = sock
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.max_size, self.max_fragment_size = _split_max_size(max_size)
        self.max_fragments = max_fragments
        self.recv_bufsize = read_limit
        high, low = _split_max_queue(max_queue)

        #: Unique identifier of the connection, for logs.
        self.id: uuid.UUID = uuid.uuid4()
        if logger is None:
            logger = logging.getLogger(f"wsharbor.{self.side.value}")
        #: The logger of this connection: the ``logger`` option, with
        #: ``extra={"websocket": connection}`` on every record.
        self.logger: LoggerLike = logging.LoggerAdapter(logger, {"websocket": self})
        self.debug = self.logger.isEnabledFor(logging.DEBUG)

        #: The sans-I/O protocol, once the opening handshake succeeded.
        self.protocol: WebSocketProtocol | None = None
        #: The opening handshake's request and response.
        self.request: Request | None = None
        self.response: Response | None = None
        #: The subprotocol negotiated in the opening handshake, if any.
        self.subprotocol: Subprotocol | None = None
        #: Round-trip time of the last ping answered, in seconds (0.0 until then).
        self.latency: float = 0.0

        # Held while using the protocol and writing to the socket.
        self._mutex = threading.Lock()
        self._messages = Assembler(high, low, max_bytes=read_limit)
        # Set when the closing handshake starts: bounds every wait after it.
        self._close_deadline: Deadline | None = None
        self._eof_sent = False
        self._sending_fragments = False
        # Pings waiting for their pong, oldest first: event, time sent, ack_on_close.
        self._pings: dict[bytes, tuple[threading.Event, float, bool]] = {}
        # Why the reader thread stopped, to chain to ConnectionClosed.
        self._recv_exc: BaseException | None = None
        self._recv_thread: threading.Thread | None = None
        self._keepalive_thread: threading.Thread | None = None
        self._local_address = _address(sock.getsockname)
        self._remote_address = _address(sock.getpeername)

    # Public attributes.

    @property
    def local_address(self) -> Any:
        """The local address of the socket, ``(host, port)`` for IPv4."""
        return self._local_address

    @property
    def remote_address(self) -> Any:
        """The peer's address, ``(host, port)`` for IPv4."""
        return self._remote_address

    @property
    def state(self) -> State:
        """CONNECTING during the opening handshake, then OPEN, CLOSING, CLOSED.

        Applications rarely need it: :meth:`recv` and :meth:`send` raise
        :exc:`~wsharbor.exceptions.ConnectionClosed` once the connection is closed.
        """
        if self.protocol is not None:
            return self.protocol.state
        return State.CLOSED if self.socket.fileno() == -1 else State.CONNECTING

    @property
    def close_code(self) -> int | None:
        """The close code received, 1006 if none was; None until the connection is closed."""
        return None if self.protocol is None else self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason received; None until the connection is closed."""
        return None if self.protocol is None else self.protocol.close_reason

    def __repr__(self) -> str:
        state = "CONNECTING" if self.protocol is None else self.protocol.state.name
        return f"<{type(self).__name__} {self.remote_address} {state}>"

    # Context manager and iteration.

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(CloseCode.INTERNAL_ERROR)

    def __iter__(self) -> Iterator[Data]:
        """Receive messages until the connection closes.

        The loop ends when the connection closes normally (1000, 1001 or no
        code); otherwise :exc:`~wsharbor.exceptions.ConnectionClosedError` is
        raised.
        """
        try:
            while True:
                yield self.recv()
        except ConnectionClosedOK:
            return

    # Receiving.

    @overload
    def recv(self, timeout: float | None, decode: Literal[True]) -> str: ...

    @overload
    def recv(self, timeout: float | None, decode: Literal[False]) -> bytes: ...

    @overload
    def recv(self, timeout: float | None = None, *, decode: Literal[True]) -> str: ...

    @overload
    def recv(self, timeout: float | None = None, *, decode: Literal[False]) -> bytes: ...

    @overload
    def recv(self, timeout: float | None = None, decode: bool | None = None) -> Data: ...

    def recv(self, timeout: float | None = None, decode: bool | None = None) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        A fragmented message is returned whole. ``timeout`` bounds the wait in
        seconds: then :exc:`TimeoutError` is raised and nothing is lost; ``0``
        returns a message already received or raises at once. ``decode=False``
        returns text messages as UTF-8 ``bytes``; ``decode=True`` decodes binary
        messages as UTF-8 (failing the connection with 1007 if they aren't).

        Raises :exc:`~wsharbor.exceptions.ConnectionClosed` once the connection
        is closed and every message received before was returned, and
        :exc:`~wsharbor.exceptions.ConcurrencyError` if another thread is
        already receiving.
        """
        self._open_protocol()
        try:
            return self._messages.get(timeout, decode)
        except EOFError:
            pass
        except ConcurrencyError:
            raise ConcurrencyError(
                "cannot call recv while another thread is already running recv or recv_streaming"
            ) from None
        except UnicodeDecodeError as exc:
            self._fail_invalid_utf8(exc)
        raise self._closed_exc()

    @overload
    def recv_streaming(self, decode: Literal[True]) -> Iterator[str]: ...

    @overload
    def recv_streaming(self, decode: Literal[False]) -> Iterator[bytes]: ...

    @overload
    def recv_streaming(self, decode: bool | None = None) -> Iterator[Data]: ...

    def recv_streaming(self, decode: bool | None = None) -> Iterator[Data]:
        """Receive the next message frame by frame: yield each fragment as it arrives.

        For large messages sent in fragments, without holding them whole. The
        iterator must be consumed to the end, else later :meth:`recv` calls
        raise :exc:`~wsharbor.exceptions.ConcurrencyError`. ``decode`` and the
        exceptions are as in :meth:`recv`.
        """
        self._open_protocol()
        try:
            yield from self._messages.get_iter(decode)
            return
        except EOFError:
            pass
        except ConcurrencyError:
            raise ConcurrencyError(
                "cannot call recv_streaming while another thread "
                "is already running recv or recv_streaming"
            ) from None
        except UnicodeDecodeError as exc:
            self._fail_invalid_utf8(exc)
        raise self._closed_exc()

    def _fail_invalid_utf8(self, exc: UnicodeDecodeError) -> None:
        # decode=True on a binary message that isn't UTF-8 (RFC 6455 section 7.4.1: 1007).
        with contextlib.suppress(ConnectionClosed), self._send_context() as protocol:
            protocol.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")

    # Sending.

    def send(
        self,
        message: Data | bytearray | memoryview | Iterable[Data | bytearray | memoryview],
        text: bool | None = None,
    ) -> None:
        """Send a message.

        ``str`` is sent as a text frame, bytes-like as a binary frame;
        ``text=True`` sends UTF-8 bytes as text, ``text=False`` sends ``str`` as
        binary. An iterable of ``str`` or of bytes-like sends one fragmented
        message, a frame per item (RFC 6455 section 5.4). A dict is refused (a
        common mistake).

        Raises :exc:`~wsharbor.exceptions.ConnectionClosed` when the connection
        is closed, :exc:`~wsharbor.exceptions.ConcurrencyError` while another
        thread sends a fragmented message, :exc:`TypeError` for another type.
        """
        if isinstance(message, str):
            with self._send_context() as protocol:
                self._check_not_fragmenting()
                if text is False:
                    protocol.send_binary(message.encode())
                else:
                    protocol.send_text(message)
        elif isinstance(message, _BytesLike):
            with self._send_context() as protocol:
                self._check_not_fragmenting()
                if text is True:
                    protocol.send_text(bytes(message))
                else:
                    protocol.send_binary(message)
        elif isinstance(message, Mapping):
            raise TypeError("data is a dict-like object: send str, bytes or an iterable of them")
        elif isinstance(message, Iterable):
            self._send_fragments(iter(message), text)
        else:
            raise TypeError(
                f"data must be str, bytes-like or an iterable of them, not {type(message).__name__}"
            )

    def _check_not_fragmenting(self) -> None:
        if self._sending_fragments:
            raise ConcurrencyError("cannot call send while another thread is already running send")

    def _send_fragments(
        self, chunks: Iterator[Data | bytearray | memoryview], text: bool | None
    ) -> None:
        try:
            pending = next(chunks)
        except StopIteration:
            return  # an empty iterable sends nothing
        is_str = isinstance(pending, str)
        if not is_str and not isinstance(pending, _BytesLike):
            raise TypeError("iterable must contain bytes or str")
        as_text = is_str if text is None else text
        with self._send_context():
            self._check_not_fragmenting()
            self._sending_fragments = True
        started = False
        try:
            # Hold one fragment back, so that the last one goes out with FIN set.
            for chunk in chunks:
                if isinstance(chunk, str) != is_str or not isinstance(chunk, (str, *_BytesLike)):
                    raise TypeError("iterable must contain uniform types: all str or all bytes")
                self._send_fragment(pending, started, as_text, fin=False)
                started = True
                pending = chunk
            self._send_fragment(pending, started, as_text, fin=True)
        except Exception:
            if started:
                # Half a message went out: the connection can't go on (section 5.4).
                with contextlib.suppress(ConnectionClosed), self._send_context() as protocol:
                    protocol.fail(CloseCode.INTERNAL_ERROR, "error in fragmented message")
            raise
        finally:
            self._sending_fragments = False

    def _send_fragment(
        self, data: Data | bytearray | memoryview, started: bool, as_text: bool, *, fin: bool
    ) -> None:
        payload = data if isinstance(data, str) else bytes(data)
        with self._send_context() as protocol:
            if started:
                protocol.send_continuation(payload, fin)
            elif as_text:
                protocol.send_text(payload, fin)
            else:
                protocol.send_binary(_as_payload(payload), fin)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Perform the closing handshake and wait until the TCP connection is closed.

        Waits at most ``close_timeout`` for the peer, then closes the socket.
        Doesn't do anything on a closed connection.
        """
        if self.protocol is None:
            self._close_socket()
            return
        with contextlib.suppress(ConnectionClosed), self._send_context() as protocol:
            if self._sending_fragments:
                protocol.fail(CloseCode.INTERNAL_ERROR, "close during fragmented message")
            else:
                protocol.send_close(code, reason)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Wait until the closing handshake is over and the TCP connection closed.

        Returns whether it is closed: False when ``timeout`` seconds passed first.
        """
        thread = self._recv_thread
        if thread is None:
            return self.socket.fileno() == -1
        thread.join(timeout)
        return not thread.is_alive()

    def ping(
        self, data: Data | bytearray | memoryview | None = None, *, ack_on_close: bool = False
    ) -> threading.Event:
        """Send a ping; return an event set when its pong arrives.

        ``data`` defaults to 4 random bytes; ``str`` is sent as UTF-8. A pong
        also acknowledges every earlier ping (RFC 6455 section 5.5.3). With
        ``ack_on_close``, the event is also set when the connection closes (then
        check :attr:`state` to know which happened).

        Raises :exc:`~wsharbor.exceptions.ConcurrencyError` if a ping with the
        same data is waiting for its pong.
        """
        payload = None if data is None else _as_payload(data)
        with self._send_context() as protocol:
            if payload is not None and payload in self._pings:
                raise ConcurrencyError("already waiting for a pong with the same data")
            while payload is None or payload in self._pings:
                payload = os.urandom(4)
            pong_received = threading.Event()
            self._pings[payload] = (pong_received, time.monotonic(), ack_on_close)
            protocol.send_ping(payload)
        return pong_received

    def pong(self, data: Data | bytearray | memoryview = b"") -> None:
        """Send an unsolicited pong (a one-way heartbeat); ``str`` is sent as UTF-8."""
        payload = _as_payload(data)
        with self._send_context() as protocol:
            protocol.send_pong(payload)

    # The opening of the connection, for subclasses.

    def _open(self, extensions: Sequence[Extension], leftover: bytes) -> None:
        """The opening handshake succeeded: start the protocol and the reader thread.

        ``leftover`` holds the bytes received after the handshake (first frames).
        """
        # The handshake's request and response are kept as long as the
        # connection: packed, as the asyncio layer keeps them (Headers.compact;
        # reading them works as before, the first change unpacks them).
        for message in (self.request, self.response):
            if message is not None:
                message.headers.compact()
        # The protocol checks each frame's declared length against what is
        # left of max_size (and against the frame limit) from its header,
        # before buffering its payload: a peer announcing 2**62 bytes gets
        # 1009 at once.
        self.protocol = WebSocketProtocol(
            self.side,
            extensions=extensions,
            max_size=self.max_size,
            max_frame_size=self.max_fragment_size,
            max_fragments=self.max_fragments,
            stream_fragments=True,
            logger=self.logger,
        )
        self._recv_thread = threading.Thread(
            target=self._recv_events,
            args=(leftover,),
            name=f"wsharbor-recv-{self.id.hex[:8]}",
            # A connection opened in a thread may be used by a daemon thread:
            # its reader mustn't keep the interpreter alive.
            daemon=True,
        )
        self._recv_thread.start()

    def _open_protocol(self) -> WebSocketProtocol:
        if self.protocol is None:
            raise InvalidState("the opening handshake isn't complete")
        return self.protocol

    def _start_keepalive(self) -> None:
        """Start the keepalive thread, unless ``ping_interval`` is None."""
        if self.ping_interval is not None and self._keepalive_thread is None:
            self._keepalive_thread = threading.Thread(
                target=self._keepalive,
                name=f"wsharbor-keepalive-{self.id.hex[:8]}",
                daemon=True,
            )
            self._keepalive_thread.start()

    # The reader thread.

    def _recv_events(self, leftover: bytes) -> None:
        protocol = self.protocol
        assert protocol is not None
        data = leftover
        try:
            while True:
                if data:
                    with self._mutex:
                        protocol.receive_data(data)
                        events = protocol.events_received()
                        try:
                            self._send_data()
                        except Exception as exc:
                            if self.debug:
                                self.logger.debug("! error while sending data", exc_info=True)
                            self._set_recv_exc(exc)
                            break
                        if protocol.state is not State.OPEN:  # a close frame was sent or received
                            self._closing()
                    self._process_events(protocol, events)
                # Backpressure: don't read while the application is behind.
                self._messages.wait_for_room()
                try:
                    if self._close_deadline is not None:
                        self._wait_readable(self._close_deadline)
                    data = self.socket.recv(self.recv_bufsize)
                except Exception as exc:
                    if self.debug:
                        self.logger.debug("! error while receiving data", exc_info=True)
                    with self._mutex:
                        self._set_recv_exc(exc)
                    break
                if not data:  # the peer closed the TCP connection
                    break
        except Exception as exc:  # a bug: never leave the connection hanging
            self.logger.error("unexpected internal error", exc_info=True)
            with self._mutex:
                self._set_recv_exc(exc)
        finally:
            self._close_socket()

    def _wait_readable(self, deadline: Deadline) -> None:
        """Wait until the socket is readable, or raise TimeoutError at ``deadline``.

        The socket stays in blocking mode for the whole life of the connection:
        changing its timeout while another thread sends or receives breaks both
        (the other call sees the new mode half-way; with TLS, CPython's ``_ssl``
        then reports a timeout, python/cpython#77271). The close deadline is a
        wait for readability instead.
        """
        left = deadline.timeout(raise_if_elapsed=False)
        if left is not None and left <= 0:
            raise TimeoutError("timed out while closing connection")
        sock = self.socket
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes are waiting already
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            if not selector.select(left):
                raise TimeoutError("timed out while closing connection")

    def _process_events(self, protocol: WebSocketProtocol, events: list[Any]) -> None:
        for event in events:
            kind = type(event)
            if kind is Fragment:
                self._messages.put(event.data, event.final)
            elif kind is PongReceived:
                self._acknowledge_pings(event.data)

    def _acknowledge_pings(self, data: bytes) -> None:
        with self._mutex:
            if data not in self._pings:
                return  # an unsolicited pong
            now = time.monotonic()
            # A pong answers its ping and every ping sent before it.
            for payload in list(self._pings):
                pong_received, sent_at, _ = self._pings.pop(payload)
                pong_received.set()
                if payload == data:
                    self.latency = now - sent_at
                    break

    def _keepalive(self) -> None:
        assert self.ping_interval is not None and self._recv_thread is not None
        try:
            while True:
                # A slow network stretches the period: ping_interval counts from
                # the pong, minus the time the ping took.
                self._recv_thread.join(self.ping_interval - self.latency)
                if not self._recv_thread.is_alive():
                    return
                try:
                    pong_received = self.ping(ack_on_close=True)
                except ConnectionClosed:
                    return
                if self.debug:
                    self.logger.debug("% sent keepalive ping")
                if self.ping_timeout is None:
                    continue
                if pong_received.wait(self.ping_timeout):
                    if self.debug:
                        self.logger.debug("% received keepalive pong")
                    continue
                self.logger.info(
                    "no pong to keepalive ping within %s s; closing", self.ping_timeout
                )
                with contextlib.suppress(ConnectionClosed), self._send_context() as protocol:
                    protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                return
        except Exception:
            self.logger.error("keepalive ping failed", exc_info=True)

    # Writing, closing.

    @contextlib.contextmanager
    def _send_context(self) -> Iterator[WebSocketProtocol]:
        """Hold the mutex around a use of the protocol, then write what it produced.

        The body runs only while the connection is OPEN. When the body starts the
        closing handshake, or the connection isn't open, wait (at most until the
        close deadline) for the reader thread to see the end of the TCP
        connection; when the connection isn't open, or writing fails, then raise
        :exc:`~wsharbor.exceptions.ConnectionClosed`.
        """
        protocol = self._open_protocol()
        wait_for_close = False
        raise_close_exc = False
        original_exc: BaseException | None = None
        with self._mutex:
            if protocol.state is State.OPEN:
                try:
                    yield protocol
                except (ProtocolError, ConcurrencyError, InvalidState, TypeError, ValueError):
                    raise  # local misuse: the protocol didn't change
                except Exception as exc:
                    self.logger.error("unexpected internal error", exc_info=True)
                    raise_close_exc = True
                    original_exc = exc
                else:
                    if protocol.state is not State.OPEN:  # a close frame was sent or received
                        wait_for_close = True
                        self._closing()
                    try:
                        self._send_data()
                    except Exception as exc:
                        if self.debug:
                            self.logger.debug("! error while sending data", exc_info=True)
                        wait_for_close = False
                        raise_close_exc = True
                        original_exc = exc
            else:
                wait_for_close = True
                raise_close_exc = True
                self._closing()

        # Wait outside the mutex: the reader thread needs it to finish.
        if wait_for_close:
            assert self._close_deadline is not None and self._recv_thread is not None
            self._recv_thread.join(self._close_deadline.timeout(raise_if_elapsed=False))
            if self._recv_thread.is_alive():
                original_exc = TimeoutError("timed out while closing connection")
                raise_close_exc = True
                with self._mutex:
                    self._set_recv_exc(original_exc)
        if raise_close_exc:
            self._close_socket()
            closed_exc = self._closed_exc()
            if original_exc is not None and closed_exc.__cause__ is None:
                closed_exc.__cause__ = original_exc
            raise closed_exc

    def _closing(self) -> None:
        """The closing handshake started (the mutex is held): start the close deadline."""
        if self._close_deadline is None:
            self._close_deadline = Deadline(self.close_timeout)
            # Read on, so that the peer's close frame arrives.
            self._messages.stop_flow_control()

    def _send_data(self) -> None:
        """Write what the protocol has to send (the mutex is held)."""
        protocol = self.protocol
        assert protocol is not None
        chunks = protocol.data_to_send()
        if chunks:
            deadline = self._close_deadline
            if deadline is not None:
                left = deadline.timeout(raise_if_elapsed=False)
                if left is not None and left <= 0:
                    raise TimeoutError("timed out while closing connection")
            # Blocking (see _wait_readable); a thread waiting for the close
            # deadline closes the socket, which ends a blocked sendall().
            self.socket.sendall(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if protocol.close_transport and not self._eof_sent:
            # RFC 6455 section 7.1.1: the server closes the TCP connection first;
            # so does either side after failing the connection (section 7.1.7).
            self._eof_sent = True
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_WR)

    def _set_recv_exc(self, exc: BaseException) -> None:
        if self._recv_exc is None:
            self._recv_exc = exc

    def _close_socket(self) -> None:
        """Close the socket; end the stream of messages; release waiting pings.

        Idempotent; the reader thread ends soon after, if it runs.
        """
        # shutdown() wakes up a recv() blocked in another thread (Linux).
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.socket.close()
        with self._mutex:
            if self.protocol is not None:
                self.protocol.receive_eof()
            self._messages.close()
            for pong_received, _, ack_on_close in self._pings.values():
                if ack_on_close:
                    pong_received.set()
            self._pings.clear()

    def _closed_exc(self) -> ConnectionClosed:
        """The exception telling how the connection closed, once it has."""
        thread = self._recv_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        protocol = self._open_protocol()
        exc = protocol.close_exc
        if exc.__cause__ is None and self._recv_exc is not None:
            exc.__cause__ = self._recv_exc
        return exc


def broadcast(
    connections: Iterable[Connection],
    message: Data | bytearray | memoryview,
    *,
    raise_exceptions: bool = False,
    text: bool | None = None,
    **kwargs: Any,
) -> None:
    """Send ``message`` to several connections, each from a thread of a pool.

    ``str`` is sent as text, bytes-like as binary; ``text`` forces one or the
    other. Connections that aren't open are skipped; so are connections
    sending a fragmented message, and failures to write, which are logged as
    warnings, or raised together in an :exc:`ExceptionGroup` with
    ``raise_exceptions``. ``kwargs`` go to
    :class:`concurrent.futures.ThreadPoolExecutor` (``max_workers``): a stuck
    connection holds one worker.
    """
    if isinstance(message, str):
        payload, as_text = message.encode(), text is not False
    elif isinstance(message, _BytesLike):
        payload, as_text = bytes(message), text is True
    else:
        raise TypeError("data must be str or bytes")
    errors: list[Exception] = []

    def send(connection: Connection) -> None:
        protocol = connection.protocol
        if protocol is None:
            return
        with connection._mutex:
            if protocol.state is not State.OPEN:
                return
            if connection._sending_fragments:
                if raise_exceptions:
                    errors.append(ConcurrencyError("sending a fragmented message"))
                else:
                    connection.logger.warning("skipped broadcast: sending a fragmented message")
                return
            try:
                if as_text:
                    protocol.send_text(payload)
                else:
                    protocol.send_binary(payload)
                connection._send_data()
            except Exception as exc:
                if raise_exceptions:
                    error = RuntimeError("failed to write message")
                    error.__cause__ = exc
                    errors.append(error)
                else:
                    connection.logger.warning(
                        "skipped broadcast: failed to write message: %s",
                        traceback.format_exception_only(exc)[0].strip(),
                    )

    with concurrent.futures.ThreadPoolExecutor(**kwargs) as executor:
        executor.map(send, connections)
    if errors:
        raise ExceptionGroup("skipped broadcast", errors)


def _address(getter: Callable[[], Any]) -> Any:
    try:
        return getter()
    except OSError:
        return None
