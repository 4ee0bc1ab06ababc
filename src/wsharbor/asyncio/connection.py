"""A WebSocket connection driven by asyncio: the part shared by both sides.

Theory of operation
-------------------

:class:`Connection` is an :class:`asyncio.BufferedProtocol`. The event loop asks
it for a buffer (:meth:`get_buffer`), reads into it and calls
:meth:`buffer_updated`, which hands the bytes straight to the sans-I/O
:class:`~wsharbor.protocol.connection.WebSocketProtocol`, turns its events into
queued messages and writes what it has to send. No coroutine, task or future is
created per frame: a message that arrives while no coroutine waits in
:meth:`recv` goes to a deque, and :meth:`recv` takes it without suspending.

Every connection of a thread reads into the same scratch buffer: the loop calls
``get_buffer`` and ``buffer_updated`` back to back, and the bytes are copied into
the frame parser there. An idle connection therefore holds no read buffer, and
each read is bounded by ``read_limit``.

Flow control, both ways:

* reading pauses when ``max_queue`` messages or ``read_limit`` bytes wait for
  the application, and resumes when both fall to a quarter (the low
  watermark). At most one more read of ``read_limit`` bytes lands meanwhile, so
  what a peer can make us buffer is bounded by
  ``max_queue * max_size + read_limit``;
* the transport's write buffer high-water mark is ``write_limit``; above it
  :meth:`send` waits for the transport to drain to a quarter of it, and reading
  pauses meanwhile, whatever filled the buffer (pongs to a peer's pings, echoes
  to a peer that doesn't read): a peer can make us buffer at most one read's
  worth of answers above ``write_limit``.

Timeouts (opening handshake, keepalive ping and pong, closing handshake) are
deadlines in :class:`~wsharbor.asyncio.deadlines.DeadlineQueue` objects shared
by every connection with the same timeouts on a loop: one timer handle per queue,
not one per connection, and no task.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import logging
import operator
import os
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Hashable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, NoReturn, TypeAlias, cast, overload

from .. import defaults
from ..exceptions import ConcurrencyError, ConnectionClosedOK, InvalidState, WriteBufferFull
from ..protocol.connection import (
    BinaryMessage,
    Fragment,
    PongReceived,
    Side,
    State,
    TextMessage,
    WebSocketProtocol,
)
from ..protocol.frames import HEADER_MAX, CloseCode, Opcode
from ..protocol.http11 import Request, Response
from ..typing import Data, DataLike, LoggerLike
from .budget import ReadBudget
from .deadlines import DeadlineQueue
from .observer import ConnectionObserver
from .transport import SEND_EACH, SocketTransport, write_each
from .wakeup import DirectFuture

__all__ = [
    "Connection",
    "ConnectionOptions",
    "ConnectionTimers",
    "MaxQueue",
    "MaxSize",
    "WriteLimit",
    "broadcast",
    "fanout",
]

#: ``max_size``: the largest message in bytes, or websockets' ``(message, frame)``
#: limits; ``None``: no limit.
MaxSize: TypeAlias = int | tuple[int | None, int | None] | None
#: ``max_queue``: messages received and not read before reading pauses, or
#: websockets' ``(high, low)`` marks; ``None``: no limit.
MaxQueue: TypeAlias = int | tuple[int | None, int | None] | None
#: ``write_limit``: the write buffer's high-water mark in bytes, or ``(high, low)``.
WriteLimit: TypeAlias = int | tuple[int, int | None]

_utf8_decoder = codecs.getincrementaldecoder("utf-8")

# The members a per-message path compares with, as module globals: on Python 3.11
# ``State.OPEN`` is a descriptor call of about 90 ns, a global about 10.
_OPEN = State.OPEN
_CLOSED = State.CLOSED
_SERVER = Side.SERVER

#: Size of the per-thread scratch buffer that every connection reads into.
_SCRATCH_SIZE = 256 * 1024
#: The most one read into a frame's own payload buffer takes (see get_buffer).
_DIRECT_READ_MAX = 1 << 20
_scratch = threading.local()


def _scratch_buffer() -> memoryview:
    try:
        view: memoryview = _scratch.view
    except AttributeError:
        view = _scratch.view = memoryview(bytearray(_SCRATCH_SIZE))
    return view


#: Transport classes whose ``writelines`` joins its buffers into one ``bytes``
#: first (asyncio's default ``WriteTransport.writelines``, which the socket
#: transport of Python 3.11 inherits): True or False, learnt per class.
_joining_writelines: dict[type, bool] = {}


#: On a transport whose ``writelines`` joins, payloads from this size on are
#: written on their own (see :func:`_writelines`); smaller ones are joined.
_WRITE_APART_FROM = 128 * 1024

#: A batch of answers to a burst (see :meth:`Connection._flush`) is written
#: once it holds this many bytes (or ``write_limit``, if lower), not only when
#: the loop iteration ends: the peer gets the first answers, and sends more,
#: while the rest of the burst is worked through. Written only at the end, a
#: burst of 100 pipelined messages left the server idle for the peer's
#: turnaround after each burst (90-95% busy against 99% at 1-4 KiB); a write
#: of 4 KiB costs about 0.05 µs per 64-byte answer in it.
_BATCH_WRITE = 4096


def _writelines(transport: asyncio.WriteTransport, buffers: list[bytes]) -> None:
    """Write ``buffers`` in order with as few calls and copies as the transport allows.

    Where ``writelines`` is scatter/gather (uvloop, Python 3.12's socket
    transport, TLS), one call. Where it joins everything into one new ``bytes``
    (Python 3.11's socket transport), a payload of ``_WRITE_APART_FROM`` bytes
    or more (the protocol sends large ones apart from their header) is written
    on its own, as a memoryview: joining would copy it into fresh memory (page
    faults included: a third of the server's CPU for 1 MiB messages), and a
    memoryview spares the copy of what the socket doesn't take at once (3.11
    slices ``bytes`` before buffering the rest). Below that size, one more
    system call (the header in its own TCP segment) costs more than the copy.
    """
    kind = type(transport)
    joins = _joining_writelines.get(kind)
    if joins is None:
        joins = _joining_writelines[kind] = (
            getattr(kind, "writelines", None) is asyncio.WriteTransport.writelines
        )
    if not joins:
        transport.writelines(buffers)
        return
    start = 0
    for index, buffer in enumerate(buffers):
        if len(buffer) >= _WRITE_APART_FROM:
            if index > start:
                small = buffers[start:index]
                transport.write(small[0] if len(small) == 1 else b"".join(small))
            transport.write(memoryview(buffer))
            start = index + 1
    if start < len(buffers):
        rest = buffers[start:]
        transport.write(rest[0] if len(rest) == 1 else b"".join(rest))


class ConnectionOptions:
    """Settings shared by every connection of a server or client (one object, not
    one copy per connection: it keeps idle connections small)."""

    __slots__ = (
        "_timers",
        "batch_write",
        "budget",
        "close_timeout",
        "logger",
        "max_fragments",
        "max_frame_size",
        "max_queue",
        "max_queue_low",
        "max_size",
        "observer",
        "open_timeout",
        "ping_interval",
        "ping_timeout",
        "read_limit",
        "write_limit",
        "write_limit_low",
    )

    def __init__(
        self,
        *,
        max_size: MaxSize = defaults.MAX_SIZE,
        max_fragments: int | None = defaults.MAX_FRAGMENTS,
        max_queue: MaxQueue = defaults.MAX_QUEUE,
        read_limit: int = defaults.READ_LIMIT,
        write_limit: WriteLimit = defaults.WRITE_LIMIT,
        ping_interval: float | None = defaults.PING_INTERVAL,
        ping_timeout: float | None = defaults.PING_TIMEOUT,
        open_timeout: float | None = defaults.OPEN_TIMEOUT,
        close_timeout: float | None = defaults.CLOSE_TIMEOUT,
        logger: LoggerLike,
        observer: ConnectionObserver | None = None,
    ) -> None:
        # websockets' tuples: max_size=(message, frame), max_queue=(high, low),
        # write_limit=(high, low); an int gives the high-water mark and the low
        # one is a quarter of it.
        max_frame_size: int | None = None
        if isinstance(max_size, tuple):
            max_size, max_frame_size = max_size
        if max_size is not None and max_size <= 0:
            raise ValueError(f"max_size must be positive or None, got {max_size}")
        if max_frame_size is not None and max_frame_size <= 0:
            raise ValueError(
                f"max_size's frame size must be positive or None, got {max_frame_size}"
            )
        if max_fragments is not None and max_fragments <= 0:
            raise ValueError(f"max_fragments must be positive or None, got {max_fragments}")
        max_queue_low: int | None = None
        if isinstance(max_queue, tuple):
            max_queue, max_queue_low = max_queue
            if max_queue is None and max_queue_low is not None:
                max_queue = max_queue_low * 4
        if max_queue is not None and max_queue <= 0:
            raise ValueError(f"max_queue must be positive or None, got {max_queue}")
        if max_queue is not None and max_queue_low is None:
            max_queue_low = max_queue // 4
        if (
            max_queue_low is not None
            and max_queue is not None
            and not 0 <= max_queue_low <= max_queue
        ):
            raise ValueError(
                f"max_queue's low-water mark must be in [0, {max_queue}], got {max_queue_low}"
            )
        if read_limit < 1024:
            raise ValueError(f"read_limit must be at least 1024 bytes, got {read_limit}")
        write_limit_low: int | None = None
        if isinstance(write_limit, tuple):
            write_limit, write_limit_low = write_limit
        if write_limit < 0:
            raise ValueError(f"write_limit must be >= 0, got {write_limit}")
        if write_limit_low is None:
            write_limit_low = write_limit // 4
        if not 0 <= write_limit_low <= write_limit:
            raise ValueError(
                f"write_limit's low-water mark must be in [0, {write_limit}], got {write_limit_low}"
            )
        for name, value in (
            ("ping_interval", ping_interval),
            ("ping_timeout", ping_timeout),
            ("open_timeout", open_timeout),
            ("close_timeout", close_timeout),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        self.max_size = max_size
        #: The largest frame received (websockets' ``max_size=(message, frame)``).
        self.max_frame_size = max_frame_size
        self.max_fragments = max_fragments
        self.max_queue = max_queue
        #: Reading resumes when the queue is down to this many messages.
        self.max_queue_low = max_queue_low
        self.read_limit = min(read_limit, _SCRATCH_SIZE)
        self.write_limit = write_limit
        #: A batch of answers is written once it holds this many bytes.
        self.batch_write = min(write_limit, _BATCH_WRITE)
        #: ``send()`` resumes when the write buffer is down to this many bytes.
        self.write_limit_low = write_limit_low
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.logger = logger
        #: Sees every connection's events (see :mod:`.observer`); None: nobody.
        self.observer = observer
        #: The server-wide read budget (``serve(max_buffered=...)``); None: none.
        self.budget: ReadBudget | None = None
        self._timers: ConnectionTimers | None = None

    def timers(self, loop: asyncio.AbstractEventLoop) -> ConnectionTimers:
        """The deadline queues for connections with these options on ``loop``, the
        running loop of this thread."""
        timers = self._timers
        if timers is None or timers.loop is not loop:
            delays = (self.open_timeout, self.ping_interval, self.ping_timeout, self.close_timeout)
            timers = self._timers = _shared_timers(loop, delays)
        return timers


#: Per thread: the loop running there and its ConnectionTimers by timeouts.
_timers_local = threading.local()


def _shared_timers(
    loop: asyncio.AbstractEventLoop,
    delays: tuple[float | None, float | None, float | None, float | None],
) -> ConnectionTimers:
    """The :class:`ConnectionTimers` of every connection on ``loop`` with these
    timeouts: a server's connections share them, and so do the clients of an
    application (each ``connect()`` has its own options) that use the same settings.

    Kept per thread, for the loop running there: a thread that starts another loop
    starts afresh, so at most one finished loop's queues stay referenced per thread.
    """
    local = _timers_local
    registry: dict[tuple[float | None, ...], ConnectionTimers] | None = getattr(
        local, "registry", None
    )
    if registry is None or local.loop is not loop:
        registry = local.registry = {}
        local.loop = loop
    timers = registry.get(delays)
    if timers is None:
        timers = registry[delays] = ConnectionTimers(loop, *delays)
    return timers


class ConnectionTimers:
    """One :class:`DeadlineQueue` per timeout for the connections with the same
    timeouts on one event loop; ``None`` for a disabled timeout.

    - ``open``: ``open_timeout``, from the TCP connection to the end of the handshake;
    - ``ping``: ``ping_interval``, until the next keepalive ping;
    - ``pong``: ``ping_timeout``, from a keepalive ping to its pong;
    - ``close``: ``close_timeout``, from the start of the closing handshake to the
      end of the TCP connection.
    """

    __slots__ = ("close", "loop", "open", "ping", "pong")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        open_timeout: float | None,
        ping_interval: float | None,
        ping_timeout: float | None,
        close_timeout: float | None,
    ) -> None:
        self.loop = loop

        def queue(delay: float | None, method: str) -> DeadlineQueue[Connection] | None:
            if delay is None:
                return None
            return DeadlineQueue(loop, delay, operator.methodcaller(method))

        self.open = queue(open_timeout, "_open_timeout")
        self.ping = queue(ping_interval, "_send_keepalive")
        self.pong = None if self.ping is None else queue(ping_timeout, "_keepalive_timeout")
        self.close = queue(close_timeout, "_close_timeout")


class Connection(asyncio.BufferedProtocol):
    """A WebSocket connection; :class:`ServerConnection` and
    :class:`ClientConnection` add the opening handshake.

    Use it as an async iterator to receive messages until the connection closes
    normally::

        async for message in websocket:
            await websocket.send(message)
    """

    # __dict__ lets applications set attributes (``connection.username = ...``,
    # as websockets allows) and __weakref__ makes weak references possible: a
    # pointer each; the dictionary is only created by the first assignment.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_batch",
        "_batch_size",
        "_close_armed",
        "_closed_waiter",
        "_drain_waiters",
        "_fragmenting",
        "_id",
        "_keepalive_ping",
        "_lingering",
        "_lost",
        "_messages",
        "_pings",
        "_queued_bytes",
        "_reading_paused",
        "_receiving",
        "_recv_waiter",
        "_timers",
        "_write_paused",
        "latency",
        "loop",
        "options",
        "protocol",
        "request",
        "response",
        "subprotocol",
        "transport",
    )

    side: Side

    def __init__(
        self, options: ConnectionOptions, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        # ``loop``: the running loop, when the caller has it (a server accepting
        # a connection): asyncio.get_running_loop() costs a getpid() system call.
        self.loop = asyncio.get_running_loop() if loop is None else loop
        self.options = options
        self._timers = options.timers(self.loop)
        self.transport: asyncio.Transport | None = None
        #: The sans-I/O protocol, from the end of the opening handshake.
        self.protocol: WebSocketProtocol | None = None
        #: The opening handshake's request and response.
        self.request: Request | None = None
        self.response: Response | None = None
        #: The subprotocol negotiated in the handshake, if any.
        self.subprotocol: str | None = None
        #: Round-trip time of the last ping answered, in seconds.
        self.latency = 0.0
        self._id: uuid.UUID | None = None
        # Messages received and not read yet; fragments of the messages the
        # protocol streamed for recv_streaming().
        self._messages: collections.deque[Data | Fragment] | None = None
        self._queued_bytes = 0
        self._recv_waiter: DirectFuture[Data | Fragment] | None = None
        self._receiving = False  # recv_streaming() (or recv() of a streamed message) runs
        self._reading_paused = False
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] | None = None
        self._fragmenting: asyncio.Future[None] | None = None
        self._pings: dict[bytes, tuple[asyncio.Future[float], float]] | None = None
        self._keepalive_ping: tuple[bytes, float] | None = None
        self._close_armed = False
        self._closed_waiter: asyncio.Future[None] | None = None
        self._lost = False  # connection_lost() was called
        self._lingering = False  # our side of TCP is shut down; input is dropped
        # Writes coalesced until the end of this loop iteration, while the
        # application consumes a burst of queued messages; None otherwise.
        self._batch: list[bytes] | None = None
        self._batch_size = 0

    # Public attributes.

    @property
    def logger(self) -> LoggerLike:
        """The ``logger`` option, as a :class:`logging.LoggerAdapter` that adds
        ``websocket`` (this connection) to each record, as websockets does: a
        ``LoggerAdapter`` given as ``logger`` finds it in ``kwargs["extra"]``.
        Made when asked for, so it costs idle connections nothing."""
        return logging.LoggerAdapter(self.options.logger, {"websocket": self})

    @property
    def remote_address(self) -> Any:
        """The peer's address, as given by the socket (``(host, port)`` for TCP)."""
        return None if self.transport is None else self.transport.get_extra_info("peername")

    @property
    def local_address(self) -> Any:
        return None if self.transport is None else self.transport.get_extra_info("sockname")

    @property
    def state(self) -> State:
        """CONNECTING during the opening handshake, then OPEN, CLOSING, CLOSED.

        A connection whose handshake failed goes from CONNECTING to CLOSED when
        its TCP connection closes. Applications rarely need it: :meth:`recv`
        and :meth:`send` raise :exc:`~wsharbor.exceptions.ConnectionClosed` once
        the connection is closed.
        """
        if self.protocol is not None:
            return self.protocol.state
        return State.CLOSED if self._lost else State.CONNECTING

    @property
    def close_code(self) -> int | None:
        """The close code received, 1006 if none was, None while not closed."""
        if self.protocol is None:
            return CloseCode.ABNORMAL_CLOSURE if self._lost else None
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason received (``""`` if none), None while not closed."""
        if self.protocol is None:
            return "" if self._lost else None
        return self.protocol.close_reason

    @property
    def id(self) -> uuid.UUID:
        """A unique identifier of the connection, for logs; made on first use, so
        that connections that never ask for it don't pay for it."""
        connection_id = self._id
        if connection_id is None:
            connection_id = self._id = uuid.uuid4()
        return connection_id

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.remote_address} {self.state.name}>"

    def _log_info(self, message: str, *args: Any) -> None:
        """Log an event of this connection at INFO, with ``websocket`` in the record
        (a ``LoggerAdapter`` given as ``logger`` finds it in ``kwargs["extra"]``)."""
        logger = self.options.logger
        if logger.isEnabledFor(logging.INFO):
            logger.info(message, *args, extra={"websocket": self})

    # Receiving.

    @overload
    async def recv(self, decode: Literal[True]) -> str: ...

    @overload
    async def recv(self, decode: Literal[False]) -> bytes: ...

    @overload
    async def recv(self, decode: bool | None = None) -> Data: ...

    async def recv(self, decode: bool | None = None) -> Data:
        """Return the next message: ``str`` for text, ``bytes`` for binary.

        ``decode=False`` returns a text message as its UTF-8 ``bytes`` (for a
        JSON library that reads bytes, say); ``decode=True`` decodes a binary
        message as UTF-8 (invalid UTF-8 fails the connection with 1007).

        Raises :class:`~wsharbor.exceptions.ConnectionClosed` once the connection
        is closed and every message received before was returned, and
        :class:`~wsharbor.exceptions.ConcurrencyError` when another coroutine is
        already receiving. Cancelling it loses nothing: the next call returns
        the next message.
        """
        if self._receiving or self._recv_waiter is not None:
            raise ConcurrencyError(
                "cannot call recv while another coroutine is already running recv or recv_streaming"
            )
        messages = self._messages
        if messages:
            data = self._take(messages)
        else:
            # Written out here, not in a helper coroutine: an idle connection
            # waits here, and a second coroutine frame would cost it ~300 bytes.
            protocol = self._open_protocol()
            if protocol.state is _CLOSED:
                raise protocol.close_exc
            waiter: DirectFuture[Data | Fragment] = DirectFuture(loop=self.loop)
            self._recv_waiter = waiter
            try:
                data = await waiter
            except asyncio.CancelledError:
                self._keep_delivered(waiter)
                raise
            finally:
                self._recv_waiter = None
                # The ConnectionClosed raised here holds this frame in its
                # traceback; this frame must not hold the future that holds the
                # exception, or the connection lives on in a cycle until a full
                # collection.
                del waiter
        if type(data) is Fragment:
            data = await self._rest_of_message(data)
        # Not typing.cast: a function call per message.
        if decode is None:
            return data  # type: ignore[return-value]
        return await self._convert(data, decode)  # type: ignore[arg-type]

    async def _next_item(self) -> Data | Fragment:
        """The next queued message or fragment; waits for one if none is queued."""
        messages = self._messages
        if messages:
            data = messages.popleft()
            self._queued_bytes -= len(data)
            if self._reading_paused:
                self._maybe_resume_reading()
            budget = self.options.budget
            if budget is not None:
                budget.update(self, self.buffered_bytes)
            return data
        protocol = self._open_protocol()
        if protocol.state is State.CLOSED or self._lingering:
            raise protocol.close_exc
        waiter: DirectFuture[Data | Fragment] = DirectFuture(loop=self.loop)
        self._recv_waiter = waiter
        try:
            return await waiter
        except asyncio.CancelledError:
            self._keep_delivered(waiter)
            raise
        finally:
            self._recv_waiter = None
            del waiter  # no cycle through the exception's traceback (see recv)

    def _keep_delivered(self, waiter: asyncio.Future[Data | Fragment]) -> None:
        """A receiver was cancelled: if a message arrived just then, queue it again."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            # Count it too, since taking it from the queue subtracts its size.
            data = waiter.result()
            self._queue().appendleft(data)
            self._queued_bytes += len(data)

    async def _rest_of_message(self, first: Fragment) -> Data:
        """Join ``first`` and the fragments after it (a message that was streamed
        by the protocol for :meth:`recv_streaming`, then read with :meth:`recv`)."""
        taken = [first]
        self._receiving = True
        try:
            while not taken[-1].final:
                item = await self._next_item()
                assert type(item) is Fragment
                taken.append(item)
        except asyncio.CancelledError:
            # Put back what was taken: the next recv() gets the whole message.
            self._queue().extendleft(reversed(taken))
            self._queued_bytes += sum(map(len, taken))
            raise
        finally:
            self._receiving = False
        if isinstance(first.data, str):
            return "".join(cast(str, fragment.data) for fragment in taken)
        return b"".join(cast(bytes, fragment.data) for fragment in taken)

    async def _convert(self, data: Data, decode: bool) -> Data:
        if decode and isinstance(data, bytes):
            try:
                return data.decode()
            except UnicodeDecodeError as exc:
                await self._invalid_utf8(exc)
        if not decode and isinstance(data, str):
            return data.encode()
        return data

    async def _invalid_utf8(self, exc: UnicodeDecodeError) -> NoReturn:
        """``decode=True`` on a binary message that isn't UTF-8: fail the
        connection with 1007 (RFC 6455 section 8.1), as websockets does."""
        protocol = self._open_protocol()
        if protocol.state is State.OPEN:
            protocol.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
            self._flush()
        await self.wait_closed()
        close_exc = protocol.close_exc
        close_exc.__cause__ = exc
        raise close_exc

    @overload
    def recv_streaming(self, decode: Literal[True]) -> AsyncIterator[str]: ...

    @overload
    def recv_streaming(self, decode: Literal[False]) -> AsyncIterator[bytes]: ...

    @overload
    def recv_streaming(self, decode: bool | None = None) -> AsyncIterator[Data]: ...

    async def recv_streaming(self, decode: bool | None = None) -> AsyncIterator[Data]:
        """Receive the next message frame by frame: an async iterator of its fragments.

        ``decode`` is as in :meth:`recv`. Iterate to the end: until then,
        :meth:`recv` and :meth:`recv_streaming` raise
        :exc:`~wsharbor.exceptions.ConcurrencyError`. A message that was
        already received whole when this is called (it waited in the queue, or
        its first frames arrived before) comes as one fragment; the next ones
        come frame by frame, each bounded by ``max_size``.
        """
        if self._receiving or self._recv_waiter is not None:
            raise ConcurrencyError(
                "cannot call recv_streaming while another coroutine is already running recv "
                "or recv_streaming"
            )
        protocol = self._open_protocol()
        self._receiving = True
        try:
            if (
                not self._messages
                and protocol.state is State.OPEN
                and not protocol.receiving_message
            ):
                # Nothing queued: the protocol hands over the next message's
                # frames as they arrive (and goes back to whole messages after it).
                protocol.stream_fragments = True
            item = await self._next_item()
            if not isinstance(item, Fragment):
                yield item if decode is None else await self._convert(item, decode)
                return
            decoder: codecs.IncrementalDecoder | None = None
            while True:
                fragment = cast(Fragment, item)
                data = fragment.data
                if decode is True and isinstance(data, bytes):
                    if decoder is None:
                        decoder = _utf8_decoder()
                    try:
                        data = decoder.decode(data, fragment.final)
                    except UnicodeDecodeError as exc:
                        await self._invalid_utf8(exc)
                elif decode is False and isinstance(data, str):
                    data = data.encode()
                yield data
                if fragment.final:
                    return
                item = await self._next_item()
        finally:
            self._receiving = False

    def __aiter__(self) -> AsyncIterator[Data]:
        return self

    async def __anext__(self) -> Data:
        """The next message, as :meth:`recv` returns it; the iteration ends when
        the connection closes normally (:exc:`~wsharbor.exceptions.ConnectionClosedOK`)."""
        # The connection is its own iterator rather than an async generator: an
        # idle connection waits here, and a generator cost it ~400 bytes more
        # (its frame, its asend object, and asyncio's weak set of generators).
        # recv() is written out here again, rather than awaited: an idle
        # connection waits here, and recv()'s coroutine would cost it 264 bytes.
        if self._receiving or self._recv_waiter is not None:
            raise ConcurrencyError(
                "cannot call recv while another coroutine is already running recv or recv_streaming"
            )
        messages = self._messages
        try:
            if messages:
                data = self._take(messages)
            else:
                protocol = self._open_protocol()
                if protocol.state is _CLOSED:
                    raise protocol.close_exc
                waiter: DirectFuture[Data | Fragment] = DirectFuture(loop=self.loop)
                self._recv_waiter = waiter
                try:
                    data = await waiter
                except asyncio.CancelledError:
                    self._keep_delivered(waiter)
                    raise
                finally:
                    self._recv_waiter = None
                    del waiter  # no cycle through the exception's traceback (see recv)
            if type(data) is Fragment:
                data = await self._rest_of_message(data)
        except ConnectionClosedOK:
            raise StopAsyncIteration from None
        return data  # type: ignore[return-value]

    def _take(self, messages: collections.deque[Data | Fragment]) -> Data | Fragment:
        """The first queued message, for recv() and __anext__()."""
        data = messages.popleft()
        self._queued_bytes -= len(data)
        if self._reading_paused:
            self._maybe_resume_reading()
        budget = self.options.budget
        if budget is not None:
            budget.update(self, self.buffered_bytes)
        if self._batch is None:
            self._start_batch()
        return data

    def _queue(self) -> collections.deque[Data | Fragment]:
        if self._messages is None:
            self._messages = collections.deque()
        return self._messages

    def _deliver(self, data: Data | Fragment) -> DirectFuture[Data | Fragment] | None:
        """Give ``data`` to the coroutine waiting in :meth:`recv`, or queue it.

        Returns the waiter completed, if any: the caller wakes it
        (:meth:`DirectFuture.wake`) once every message of the read is queued,
        so that the receiver runs at once, in this callback, and takes the
        messages after the first one from the queue without waiting again.
        """
        observer = self.options.observer
        if observer is not None and (type(data) is not Fragment or data.final):
            observer.message_received(self)
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done() and not self._messages:
            self._recv_waiter = None
            waiter.complete(data)
            return waiter
        is_open = self.protocol is not None and self.protocol.state is _OPEN
        if not is_open and self._queue_full():
            # We sent a close frame: reading goes on so that the peer's close
            # frame arrives, and data past the limits is dropped, since the
            # application asked to close (RFC 6455 section 5.5.1).
            return None
        self._queue().append(data)
        self._queued_bytes += len(data)
        if is_open and not self._reading_paused and self._queue_full():
            self._pause_reading()
        return None

    def _queue_full(self) -> bool:
        """Whether ``max_queue`` messages or ``read_limit`` bytes wait for the application."""
        options = self.options
        return self._queued_bytes >= options.read_limit or (
            options.max_queue is not None
            and self._messages is not None
            and len(self._messages) >= options.max_queue
        )

    def _pause_reading(self) -> None:
        """The queue is full: pause reading (unless the write buffer already did)."""
        self._reading_paused = True
        assert self.transport is not None
        if not self._write_paused and not self._held_by_budget():
            self.transport.pause_reading()

    # The server-wide read budget (see .budget): a third reason to pause reading,
    # beside a full queue and a full write buffer; reading resumes when none holds.

    def _held_by_budget(self) -> bool:
        budget = self.options.budget
        return budget is not None and self in budget.paused

    def _budget_pause(self) -> bool:
        """Pause reading for the budget; False if this connection isn't reading data
        (closing: it must read the peer's close frame)."""
        protocol, transport = self.protocol, self.transport
        if protocol is None or protocol.state is not State.OPEN or transport is None:
            return False
        if not self._reading_paused and not self._write_paused:
            transport.pause_reading()
        return True

    def _budget_resume(self) -> None:
        transport = self.transport
        if (
            not self._reading_paused
            and not self._write_paused
            and transport is not None
            and not transport.is_closing()
        ):
            transport.resume_reading()

    def _maybe_resume_reading(self) -> None:
        """The application took a message: resume reading once the queue is down to
        its low watermark, unless the write buffer keeps reading paused."""
        options = self.options
        if self._queued_bytes <= options.read_limit // 4 and (
            options.max_queue_low is None or len(self._queue()) <= options.max_queue_low
        ):
            self._reading_paused = False
            if (
                not self._write_paused
                and not self._held_by_budget()
                and self.transport is not None
                and not self.transport.is_closing()
            ):
                self.transport.resume_reading()

    @property
    def buffered_bytes(self) -> int:
        """Bytes received and not consumed by the application yet."""
        parsed = 0 if self.protocol is None else self.protocol.buffered_input
        return self._queued_bytes + parsed

    # Sending.

    async def send(
        self,
        message: DataLike | Iterable[DataLike] | AsyncIterable[DataLike],
        *,
        text: bool | None = None,
    ) -> None:
        """Send a message.

        ``str`` is sent as text, ``bytes``-like as binary; ``text=True`` sends
        bytes (already UTF-8) as a text frame, ``text=False`` sends a ``str`` as a
        binary frame. An iterable or async iterable of ``str`` or of ``bytes``
        is sent as one fragmented message, one frame per item. Waits while the
        write buffer is over ``write_limit``. Raises
        :class:`~wsharbor.exceptions.ConnectionClosed` when the connection is
        closing or closed.
        """
        while self._fragmenting is not None:
            await asyncio.shield(self._fragmenting)
        protocol = self._open_protocol()
        if protocol.state is not _OPEN:
            raise protocol.close_exc
        if isinstance(message, str):
            if text is False:
                protocol.send_binary(message.encode())
            else:
                protocol.send_text(message)
        elif isinstance(message, bytes | bytearray | memoryview):
            if text is True:
                protocol.send_text(bytes(message))
            else:
                protocol.send_binary(message)
        elif isinstance(message, Mapping):
            raise TypeError("a dict is not a message: send str, bytes or an iterable of them")
        elif isinstance(message, Iterable | AsyncIterable):
            await self._send_fragments(
                cast("Iterable[DataLike] | AsyncIterable[DataLike]", message), text
            )
            return
        else:
            raise TypeError(f"can't send {type(message).__name__}: expected str or bytes")
        self._flush()
        observer = self.options.observer
        if observer is not None:
            observer.message_sent(self)
        if self._write_paused:
            await self._drain()

    async def _send_fragments(
        self, fragments: Iterable[DataLike] | AsyncIterable[DataLike], text: bool | None
    ) -> None:
        protocol = self._open_protocol()
        self._fragmenting = self.loop.create_future()
        started = False
        first_is_str: bool | None = None
        pending: Data | None = None
        try:
            async for fragment in _aiter(fragments):
                if not isinstance(fragment, str | bytes | bytearray | memoryview):
                    raise TypeError(f"can't send a fragment of type {type(fragment).__name__}")
                is_str = isinstance(fragment, str)
                if first_is_str is None:
                    first_is_str = is_str
                elif first_is_str != is_str:
                    raise TypeError("all fragments must be str, or all bytes-like")
                # Hold one fragment back so the last one goes out with FIN set.
                if pending is not None:
                    self._send_fragment(pending, started, fin=False, text=text)
                    started = True
                    self._flush()
                    if self._write_paused:
                        await self._drain()
                pending = fragment if isinstance(fragment, str) else bytes(fragment)
            if pending is None:
                return  # An empty iterable sends nothing.
            self._send_fragment(pending, started, fin=True, text=text)
            self._flush()
            observer = self.options.observer
            if observer is not None:
                observer.message_sent(self)
            if self._write_paused:
                await self._drain()
        except BaseException:
            if started and protocol.state is State.OPEN:
                # A message was left half-sent: the connection can't continue.
                protocol.fail(CloseCode.INTERNAL_ERROR, "error while sending a fragmented message")
                self._flush()
            raise
        finally:
            waiter, self._fragmenting = self._fragmenting, None
            waiter.set_result(None)

    def _send_fragment(self, data: Data, started: bool, *, fin: bool, text: bool | None) -> None:
        protocol = self._open_protocol()
        if protocol.state is not State.OPEN:
            raise protocol.close_exc
        if started:
            protocol.send_continuation(data, fin)
        elif text is True or (text is None and isinstance(data, str)):
            protocol.send_text(data, fin)
        else:
            protocol.send_binary(data.encode() if isinstance(data, str) else data, fin)

    def _write_preencoded(
        self, protocol: WebSocketProtocol, transport: asyncio.Transport, frame: bytes
    ) -> None:
        """Send a frame of :func:`broadcast` on this open connection.

        :meth:`_flush` after ``send_preencoded``, minus what can't apply: a data
        frame doesn't change the state of an open connection, so nothing is to
        close. Straight to the transport unless a batch or an observer needs
        :meth:`_flush`.
        """
        protocol.send_preencoded(frame)
        if self._batch is not None or self.options.observer is not None:
            self._flush()
            return
        data = protocol.data_to_send()
        if len(data) == 1:
            transport.write(data[0])
        else:
            _writelines(transport, data)

    def _flush(self) -> None:
        """Write what the protocol has to send; close the transport when it says so.

        Writes go to the transport at once, except while the application works
        through a burst of queued messages (see :meth:`recv`): then they are
        coalesced and written with one ``writelines`` call when the loop
        iteration ends, or as soon as the batch reaches 4 KiB (``write_limit``
        if lower). A lone request-response exchange pays no added latency; a
        pipelined burst pays a system call per 4 KiB of answers instead of one
        per message.
        """
        protocol = self.protocol
        transport = self.transport
        if protocol is None or transport is None:
            return
        data = protocol.data_to_send()
        if data:
            batch = self._batch
            if batch is None:
                observer = self.options.observer
                if observer is not None:
                    observer.data_sent(self, sum(map(len, data)))
                if len(data) == 1:
                    transport.write(data[0])
                else:
                    _writelines(transport, data)
            else:
                batch.extend(data)
                self._batch_size += sum(map(len, data))
                if self._batch_size >= self.options.batch_write:
                    self._write_batch()
        if protocol.close_transport:
            self._write_batch()
            if not transport.is_closing() and not self._lingering:
                if protocol.close_rcvd is None and transport.can_write_eof():
                    # We failed the connection: the peer, which didn't send its
                    # close frame, may still be sending (mid-message, say).
                    # Lingering close: our FIN after the close frame, and what
                    # the peer still sends is read and dropped until it closes
                    # too, at most close_timeout. Closing with input unread
                    # would make the kernel answer with a reset, which can
                    # destroy our close frame before the peer reads it. After a
                    # complete closing handshake the peer sends nothing more:
                    # TCP is closed at once (RFC 6455 section 7.1.1).
                    self._lingering = True
                    waiter = self._recv_waiter
                    if waiter is not None and not waiter.done():
                        # No message comes any more: don't make recv() wait
                        # for the peer to close TCP.
                        waiter.set_exception(protocol.close_exc)
                    transport.write_eof()
                    self._reading_paused = False
                    transport.resume_reading()
                else:
                    transport.close()  # TLS: close_notify
            self._arm_close_timer()
        elif protocol.state is not _OPEN:
            if self._reading_paused or self._write_paused or self._held_by_budget():
                # Read the peer's close frame even if the application doesn't
                # read, or the peer doesn't: no pong is sent after a close frame,
                # and the closing handshake is bounded by close_timeout.
                self._reading_paused = False
                if self.options.budget is not None:
                    self.options.budget.paused.discard(self)
                transport.resume_reading()
            self._arm_close_timer()

    def _start_batch(self) -> None:
        # The application works through a burst of queued messages: coalesce
        # what it sends until this loop iteration ends.
        self._batch = []
        self.loop.call_soon(self._end_batch)

    def _write_batch(self) -> None:
        batch = self._batch
        if batch:
            assert self.transport is not None
            observer = self.options.observer
            if observer is not None:
                observer.data_sent(self, self._batch_size)
            _writelines(self.transport, batch)
            self._batch = []
            self._batch_size = 0

    def _write_http(self, data: bytes) -> None:
        """Write part of the opening handshake (or an HTTP response)."""
        assert self.transport is not None
        observer = self.options.observer
        if observer is not None:
            observer.data_sent(self, len(data))
        self.transport.write(data)

    def _end_batch(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._write_batch()
        self._batch = None
        self._batch_size = 0

    async def _drain(self) -> None:
        if not self._write_paused:
            return
        protocol = self._open_protocol()
        if protocol.state is State.CLOSED:
            raise protocol.close_exc
        waiter: asyncio.Future[None] = self.loop.create_future()
        if self._drain_waiters is None:
            self._drain_waiters = []
        self._drain_waiters.append(waiter)
        try:
            await waiter
        finally:
            del waiter  # no cycle through the exception's traceback (see recv)

    def pause_writing(self) -> None:
        """The write buffer is over ``write_limit``: :meth:`send` waits, and reading
        pauses too, whatever filled the buffer. A peer that sends pings (or
        messages an echo answers) and never reads would otherwise make us queue
        pongs without bound (issue 13, item 2)."""
        self._write_paused = True
        protocol = self.protocol
        if (
            not self._reading_paused
            and protocol is not None
            and protocol.state is State.OPEN
            and self.transport is not None
        ):
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """The write buffer drained to a quarter of ``write_limit``."""
        self._write_paused = False
        transport = self.transport
        if (
            not self._reading_paused
            and not self._held_by_budget()
            and self.protocol is not None
            and transport is not None
            and not transport.is_closing()
        ):
            transport.resume_reading()
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    # Pings.

    async def ping(self, data: DataLike | None = None) -> asyncio.Future[float]:
        """Send a ping; return a future that gives the round-trip time in seconds.

        ``await (await ws.ping())`` waits for the pong. A pong also answers
        every earlier ping (RFC 6455 section 5.5.3).
        """
        protocol = self._open_protocol()
        if protocol.state is not State.OPEN:
            raise protocol.close_exc
        if self._pings is None:
            self._pings = {}
        if data is None:
            payload = os.urandom(4)
            while payload in self._pings:  # pragma: no cover - 1 in 4 billion
                payload = os.urandom(4)
        else:
            payload = data.encode() if isinstance(data, str) else bytes(data)
            if payload in self._pings:
                raise ConcurrencyError("already waiting for a pong with the same data")
        waiter: asyncio.Future[float] = self.loop.create_future()
        self._pings[payload] = (waiter, time.perf_counter())
        protocol.send_ping(payload)
        self._flush()
        return waiter

    async def pong(self, data: DataLike = b"") -> None:
        """Send an unsolicited pong (a unidirectional heartbeat); ``str`` is sent
        as UTF-8."""
        protocol = self._open_protocol()
        if protocol.state is not State.OPEN:
            raise protocol.close_exc
        protocol.send_pong(data.encode() if isinstance(data, str) else bytes(data))
        self._flush()

    def _pong_received(self, data: bytes) -> None:
        now = time.perf_counter()
        keepalive = self._keepalive_ping
        if keepalive is not None and keepalive[0] == data:
            self.latency = now - keepalive[1]
            self._keepalive_ping = None
            if self._timers.pong is not None:
                self._timers.pong.discard(self)
        pings = self._pings
        if not pings or data not in pings:
            return
        # Acknowledge this ping and every ping sent before it.
        for payload in list(pings):
            waiter, sent_at = pings.pop(payload)
            self.latency = now - sent_at
            if not waiter.done():
                waiter.set_result(self.latency)
            if payload == data:
                break

    def _start_keepalive(self) -> None:
        ping = self._timers.ping
        if ping is not None:
            ping.add(self)

    def _send_keepalive(self) -> None:
        """The ping deadline: send a keepalive ping and set the next deadline."""
        protocol = self.protocol
        timers = self._timers
        if protocol is None or protocol.state is not State.OPEN or timers.ping is None:
            return
        timers.ping.add(self)
        if self._keepalive_ping is not None and timers.pong is not None:
            # The last ping (ping_timeout >= ping_interval) is still unanswered:
            # its pong deadline decides.
            return
        payload = os.urandom(4)
        self._keepalive_ping = (payload, time.perf_counter())
        protocol.send_ping(payload)
        self._flush()
        if timers.pong is not None:
            timers.pong.add(self)

    def _keepalive_timeout(self) -> None:
        """The pong deadline: fail the connection if the keepalive ping is unanswered."""
        protocol = self.protocol
        if protocol is None or protocol.state is not State.OPEN:
            return
        if self._keepalive_ping is not None:
            self.logger.info("%r: no pong to keepalive ping; closing", self)
            protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._flush()

    # Closing.

    async def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Perform the closing handshake and wait for the TCP connection to close.

        Waits at most ``close_timeout`` for the peer, then aborts the connection.
        Calling it on a closed connection does nothing.
        """
        if self._start_closing(code, reason):
            await self.wait_closed()

    def _start_closing(self, code: int, reason: str) -> bool:
        """What :meth:`close` does before it waits: send the close frame (the
        close timer then bounds the closing handshake). False if there is nothing
        to wait for: no WebSocket connection yet, the TCP connection aborted."""
        protocol = self.protocol
        if protocol is None:
            if self.transport is not None:
                self.transport.abort()
            return False
        if protocol.state is State.OPEN:
            if self._fragmenting is not None:
                # A fragmented message is half-sent: fail instead (RFC 6455 5.4).
                protocol.fail(CloseCode.INTERNAL_ERROR, "close during a fragmented message")
            else:
                protocol.send_close(code, reason)
            self._flush()
        return True

    async def wait_closed(self) -> None:
        """Wait until the TCP connection is closed."""
        if self.transport is None or self._is_lost():
            return
        if self._closed_waiter is None:
            self._closed_waiter = self.loop.create_future()
        await asyncio.shield(self._closed_waiter)

    def add_close_callback(self, callback: Callable[[Connection], object]) -> None:
        """Call ``callback(connection)`` once the TCP connection is closed.

        The callback runs in the event loop soon after the connection is closed
        (at once on the next loop iteration if it is closed already). Exceptions
        it raises are logged by the event loop. Rooms and presence use it to
        forget a member whose connection ended (:mod:`wsharbor.pubsub`). No
        memory is used on connections that never register one.
        """
        if self._lost:
            self.loop.call_soon(callback, self)
            return
        if self._closed_waiter is None:
            self._closed_waiter = self.loop.create_future()
        self._closed_waiter.add_done_callback(lambda _: callback(self))

    def _is_lost(self) -> bool:
        return self._lost

    def _arm_close_timer(self) -> None:
        if self._close_armed:
            return
        self._close_armed = True
        if self._timers.close is not None:
            self._timers.close.add(self)

    def _close_timeout(self) -> None:
        if self.transport is not None and not self._is_lost():
            if self.protocol is not None and self.protocol.close_transport is False:
                self.logger.debug("%r: peer didn't close in time", self)
            self.transport.abort()

    def abort(self) -> None:
        """Close the TCP connection at once, without a closing handshake."""
        if self.transport is not None:
            self.transport.abort()

    # asyncio.BufferedProtocol callbacks.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports implement the
        # interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        write_limit = self.options.write_limit
        low = self.options.write_limit_low
        # Cheaper to read than to set: asyncio's defaults are already ours.
        if self.transport.get_write_buffer_limits() != (low, write_limit):
            self.transport.set_write_buffer_limits(high=write_limit, low=low)

    def get_buffer(self, sizehint: int) -> memoryview:
        options = self.options
        size = options.read_limit
        budget = options.budget
        if budget is not None:
            # Near the server-wide budget, reads shrink to the room left (at
            # least MIN_READ): a thousand connections readable at once can't
            # each land a whole read_limit past it.
            size = budget.read_size(self, size)
        protocol = self.protocol
        if protocol is not None:
            # The rest of a large frame's payload: read straight into it, with
            # room for the next frame's header after it (one read a message in
            # a stream of large ones, see buffer_updated). Not with a read
            # budget, whose reads are bounded to the byte.
            if budget is None:
                view = protocol.receive_buffer(_DIRECT_READ_MAX, HEADER_MAX)
            else:
                view = protocol.receive_buffer(size)
            if view is not None:
                return view
            size = protocol.read_size(size)
        try:
            scratch: memoryview = _scratch.view
        except AttributeError:
            scratch = _scratch_buffer()
        return scratch[:size]

    def buffer_updated(self, nbytes: int) -> None:
        observer = self.options.observer
        if observer is not None:
            observer.data_received(self, nbytes)
        protocol = self.protocol
        if protocol is None:
            self.handshake_data_received(bytes(_scratch_buffer()[:nbytes]))
            return
        if protocol.receiving_into:
            beyond = protocol.received_into(nbytes)
            if beyond:
                # The next frame's header came with the end of a payload. The
                # message goes to the application before the header is
                # parsed, which allocates the next payload's buffer: the other
                # way round, a stream of 1 MiB messages ran 20% slower (perf
                # showed page faults that the header-first order didn't have).
                self._process_events()
                protocol.receive_data(beyond)
        else:
            protocol.receive_data(_scratch.view[:nbytes])
        self._process_events()
        budget = self.options.budget
        if budget is not None:
            budget.update(self, self.buffered_bytes)

    def handshake_data_received(self, data: bytes) -> None:
        """Bytes received during the opening handshake (subclasses)."""
        raise NotImplementedError

    def _process_events(self) -> None:
        protocol = self.protocol
        assert protocol is not None
        woken: DirectFuture[Data | Fragment] | None = None
        for event in protocol.events_received():
            kind = type(event)
            if kind is TextMessage or kind is BinaryMessage:
                waiter = self._deliver(event.data)  # type: ignore[union-attr]
            elif kind is Fragment:
                # A message streamed for recv_streaming(): after its last
                # frame, messages are reassembled by the protocol again.
                if cast(Fragment, event).final:
                    protocol.stream_fragments = False
                waiter = self._deliver(cast(Fragment, event))
            else:
                if kind is PongReceived:
                    self._pong_received(cast(PongReceived, event).data)
                continue
            if waiter is not None:
                woken = waiter
        if self._messages and self._batch is None:
            self._start_batch()  # a burst arrived: answers to it go out together
        self._flush()
        if woken is not None:
            # The receiver runs now, not in the next loop iteration: it gets
            # the first message, takes the others from the queue, and what it
            # sends meanwhile goes out at once, or with the burst's batch.
            woken.wake()
            if self._batch:
                self._write_batch()
        if protocol.failure is not None and self.options.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%r: failed: %s", self, protocol.failure)

    def eof_received(self) -> bool | None:
        # Let the transport close; connection_lost follows.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._batch = None
        budget = self.options.budget
        if budget is not None and self.protocol is not None:
            budget.forget(self)  # it joined when it opened
        protocol = self.protocol
        if protocol is not None:
            protocol.receive_eof()
        for queue in (self._timers.ping, self._timers.pong, self._timers.close):
            if queue is not None:
                queue.discard(self)
        closed_exc: Exception = (
            protocol.close_exc if protocol is not None else ConnectionError("connection lost")
        )
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            # Woken at the end, once every other effect of the close is done:
            # the receiver runs in this callback, not in the next iteration.
            waiter.fail(closed_exc)
        else:
            waiter = None
        try:
            for drain in self._drain_waiters or ():
                if not drain.done():
                    drain.set_exception(closed_exc)
            self._drain_waiters = None
            for ping_waiter, _ in (self._pings or {}).values():
                if not ping_waiter.done():
                    ping_waiter.set_exception(closed_exc)
            self._pings = None
            if self._closed_waiter is not None and not self._closed_waiter.done():
                self._closed_waiter.set_result(None)
            self._connection_closed()
            observer = self.options.observer
            if observer is not None:
                observer.connection_closed(self)
        finally:
            # Even if an observer raised: the receiver mustn't wait forever.
            if waiter is not None:
                waiter.wake()

    def _connection_closed(self) -> None:
        """Hook for subclasses: the TCP connection is closed."""

    def _open_protocol(self) -> WebSocketProtocol:
        if self.protocol is None:
            raise InvalidState("the opening handshake isn't complete")
        return self.protocol

    # Context manager: close on exit.

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close with 1000, or with 1011 (internal error) when leaving on an exception."""
        if exc_type is None:
            await self.close()
        else:
            await self.close(CloseCode.INTERNAL_ERROR)


async def _aiter(
    items: Iterable[DataLike] | AsyncIterable[DataLike],
) -> AsyncIterator[DataLike]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


# Why a connection didn't get a broadcast message: one of these, or the
# exception raised while writing it.
_NOT_OPEN = "not open"
_FRAGMENTING = "sending a fragmented message"
_BUFFER_FULL = "write buffer over write_limit"

_Skip: TypeAlias = tuple["Connection", str | Exception]


def _broadcast_frames(
    connections: Iterable[Connection],
    message: DataLike,
    text: bool | None,
) -> list[_Skip]:
    """Write ``message`` to every connection that can take it now; return the others.

    The code of both :func:`fanout` and :func:`broadcast`: they differ only in
    what they tell about the connections skipped, each returned with why.
    """
    if isinstance(message, str):
        payload = message.encode()
        opcode = Opcode.BINARY if text is False else Opcode.TEXT
    elif isinstance(message, bytes | bytearray | memoryview):
        payload = bytes(message)
        opcode = Opcode.TEXT if text is True else Opcode.BINARY
    else:
        raise TypeError(f"can't broadcast {type(message).__name__}: expected str or bytes")
    # Encoded frames by WebSocketProtocol.preencode_key(): () for connections
    # without extensions, a settings tuple for compression without context.
    frames: dict[Hashable, bytes] = {}
    skipped: list[_Skip] = []
    # Frames for the connections on wsharbor's own transport, written after
    # the loop by write_each(): one C call makes all their send() system calls.
    direct: list[Connection] = []
    direct_transports: list[SocketTransport] = []
    direct_frames: list[bytes] = []
    # This loop body runs once per connection and message: with 10,000
    # connections its Python costs about as much as the send() system call
    # under it, so it reads each attribute once and leaves the writing to
    # write_each() or straight to the transport (see _write_preencoded).
    for connection in connections:
        protocol = connection.protocol
        transport = connection.transport
        if protocol is None or transport is None or protocol.state is not _OPEN:
            skipped.append((connection, _NOT_OPEN))
            continue
        if connection._fragmenting is not None:
            skipped.append((connection, _FRAGMENTING))
            continue
        options = connection.options
        if transport.get_write_buffer_size() > options.write_limit:
            skipped.append((connection, _BUFFER_FULL))
            continue
        try:
            if not protocol.extensions and protocol.side is _SERVER:
                key: Hashable | None = ()
            else:
                key = protocol.preencode_key()
            if key is None:
                # A compression context (or a client's mask) is per connection.
                if opcode is Opcode.TEXT:
                    protocol.send_text(payload)
                else:
                    protocol.send_binary(payload)
                connection._flush()
            else:
                frame = frames.get(key)
                if frame is None:
                    frame = frames[key] = protocol.preencode(opcode, payload)
                if (
                    SEND_EACH
                    and type(transport) is SocketTransport
                    and connection._batch is None
                    and options.observer is None
                ):
                    protocol.send_preencoded(frame)
                    data = protocol.data_to_send()
                    direct.append(connection)
                    direct_transports.append(transport)
                    direct_frames.append(frame if len(data) == 1 else b"".join(data))
                    continue
                connection._write_preencoded(protocol, transport, frame)
        except Exception as exc:
            skipped.append((connection, exc))
            continue
        observer = options.observer
        if observer is not None:
            observer.message_sent(connection)
    if direct:
        for index, error in write_each(direct_transports, direct_frames):
            skipped.append((direct[index], error))
    return skipped


def fanout(
    connections: Iterable[Connection],
    message: DataLike,
    *,
    text: bool | None = None,
) -> list[Connection]:
    """Send ``message`` to every open connection without waiting; return those skipped.

    :func:`broadcast` without its reporting: the same code writes the message,
    and the connections that didn't get it are returned, in the order of
    ``connections`` (an empty list when every connection got it; those whose
    transport refused the write, after the others). A connection
    is skipped when it is not open, when it is in the middle of sending a
    fragmented message, when its write buffer is already over ``write_limit``
    (so that one slow reader can't grow the server's memory), or when writing
    to it failed. Nothing is logged.

    Callers that track slow readers (:mod:`wsharbor.pubsub` counts consecutive
    skips per member and closes one that keeps falling behind) use this.

    Not thread-safe: call it from the event loop's thread (see
    :class:`~wsharbor.asyncio.runner.ServerThread` for other threads).
    """
    return [connection for connection, _ in _broadcast_frames(connections, message, text)]


def broadcast(
    connections: Iterable[Connection],
    message: DataLike,
    *,
    text: bool | None = None,
    raise_exceptions: bool = False,
) -> None:
    """Send ``message`` to every open connection without waiting, as websockets does.

    A ``str`` is sent as a text frame, a bytes-like object as a binary frame;
    ``text=True`` sends UTF-8 bytes as text (no need to decode JSON a library
    produced as bytes), ``text=False`` sends a ``str`` as binary.

    The message is encoded once and the same bytes are written to every
    connection that has no extension in effect; it is compressed once for the
    connections that compress without context takeover with the same settings
    (the server's default), and by each connection that keeps a compression
    context. Connections that aren't open are skipped silently (their closing
    handshake is in progress). These are skipped too and don't get the message:

    - a connection sending a fragmented message (a frame can't go in between);
    - a connection whose write buffer is already over ``write_limit``: a peer
      that reads slower than the server broadcasts. websockets writes to it
      anyway, so its buffer grows until the connection times out; wsharbor
      drops the message for that connection instead, so that one slow reader
      can't grow the server's memory;
    - a connection where writing failed.

    By default those are logged at WARNING (``skipped broadcast: ...``, one
    record per connection, but one record per call for the slow readers, which
    can be many) and the call returns ``None``. With ``raise_exceptions=True``
    they are raised together, after every other connection got the message,
    in an :exc:`ExceptionGroup` of :exc:`~wsharbor.exceptions.ConcurrencyError`
    (fragmented message), :exc:`~wsharbor.exceptions.WriteBufferFull` (slow
    reader) and :exc:`RuntimeError` (write failure, the cause chained). All
    three are ``RuntimeError``.

    :func:`fanout` does the same and returns the skipped connections.

    Raises :exc:`TypeError` when ``message`` is not ``str`` or bytes-like.
    Not thread-safe: call it from the event loop's thread (see
    :class:`~wsharbor.asyncio.runner.ServerThread` for other threads).
    """
    skipped = _broadcast_frames(connections, message, text)
    if not skipped:
        return
    errors: list[Exception] = []
    slow: list[Connection] = []
    for connection, why in skipped:
        if why is _NOT_OPEN:
            continue
        if why is _BUFFER_FULL:
            if raise_exceptions:
                errors.append(WriteBufferFull(connection, connection.options.write_limit))
            else:
                slow.append(connection)
        elif why is _FRAGMENTING:
            if raise_exceptions:
                errors.append(ConcurrencyError(_FRAGMENTING))
            else:
                connection.logger.warning("skipped broadcast: %s", _FRAGMENTING)
        else:
            assert isinstance(why, Exception)
            if raise_exceptions:
                error = RuntimeError("failed to write message")
                error.__cause__ = why
                errors.append(error)
            else:
                connection.logger.warning(
                    "skipped broadcast: failed to write message: %s",
                    traceback.format_exception_only(why)[0].strip(),
                )
    if slow:
        # One record per call: with many slow readers, one per connection
        # would cost more than the broadcast itself.
        slow[0].logger.warning(
            "skipped broadcast: %d connection%s with a write buffer over write_limit",
            len(slow),
            "" if len(slow) == 1 else "s",
        )
    if errors:
        raise ExceptionGroup("skipped broadcast", errors)
