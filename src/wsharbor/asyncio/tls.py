"""TLS for connections with a small per-connection footprint: :class:`TLSTransport`.

Why not the event loop's TLS
----------------------------

``loop.create_connection(ssl=...)`` and ``connect_accepted_socket(ssl=...)``
put asyncio's ``SSLProtocol`` between the socket and the application. It gives
every connection a 256 KiB read buffer (a ``bytearray``, so every page of it is
touched and resident): an idle wss connection costs about 280 KiB, 45 times an
idle ws connection (``docs/memory.md``, "TLS"). Its memory BIOs also keep the
size of the largest read and the largest write they ever held: a connection
that sent one 1 MiB message holds 1.3 MiB more until it closes.

Theory of operation
-------------------

:class:`TLSTransport` is both the protocol of a plain TCP transport (the
event loop's, on asyncio and on uvloop alike) and the transport of the
application's protocol (a :class:`~wsharbor.asyncio.connection.Connection`):
one object per connection, with slots, between the two.

- **Reading.** The TCP transport reads ciphertext into a scratch buffer that
  every TLS connection of the thread shares (:meth:`get_buffer`), at most
  :data:`READ_SIZE` bytes at a time. :meth:`buffer_updated` hands it to
  OpenSSL through the incoming ``ssl.MemoryBIO`` in slices of
  :data:`RECORD_SIZE` bytes, about a TLS record, and decrypts each slice
  straight into the application's buffer (its ``get_buffer()``, for a
  :class:`~wsharbor.asyncio.connection.Connection` the scratch buffer its
  thread shares too). Feeding slices keeps the BIO's allocation, which OpenSSL
  never shrinks, near one record.
- **Writing.** :meth:`write` encrypts at once, in slices of
  :data:`RECORD_SIZE` bytes, emptying the outgoing BIO after each, and hands
  the ciphertext to the TCP transport; small buffers given together to
  :meth:`writelines` share records. Nothing waits here in plaintext.
- **Flow control** is the TCP transport's: pausing reading pauses the socket
  (ciphertext already read stays, at most one read); the write buffer limits,
  ``pause_writing()`` and ``resume_writing()`` are the TCP transport's, on
  ciphertext.
- **Handshake.** The application's ``connection_made()`` comes once the TLS
  handshake is complete, as with asyncio; ``waiter`` (a future) gets its
  outcome. ``handshake_timeout`` bounds it with a deadline in a
  :class:`~wsharbor.asyncio.deadlines.DeadlineQueue` shared by every
  connection with the same timeout on the loop (no timer per connection).
  A failed handshake sends OpenSSL's alert and closes; the application
  never sees the connection.
- **Closing.** TLS has no half-close of its own, so :meth:`can_write_eof` is
  false and :meth:`close` sends ``close_notify``, then shuts down our side of
  TCP, and reads (and drops) what the peer still sends until it closes too or
  sends its ``close_notify``, at most ``shutdown_timeout``: closing with input
  unread would make the kernel answer with a reset, which can destroy what we
  sent last before the peer reads it. :meth:`abort` closes at once. A
  ``close_notify`` or the end of the TCP stream from the peer is
  ``eof_received()`` for the application; a TLS error closes the connection,
  and the application's ``connection_lost()`` gets the exception.

Memory: an idle connection holds this object, a ``ssl.SSLObject`` with its two
BIOs, and OpenSSL's own state (about 17 KiB with ``SSL_MODE_RELEASE_BUFFERS``,
which CPython sets: its record buffers are freed while idle).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import ssl
import threading
from collections.abc import Iterable
from typing import Any, Literal, TypeAlias, cast

from .. import defaults
from .deadlines import DeadlineQueue

__all__ = ["READ_SIZE", "RECORD_SIZE", "TLS_TRANSPORTS", "TLSTransport", "TLSTransportName"]

logger = logging.getLogger("wsharbor.tls")

#: The most ciphertext one read from the socket takes (``read_limit``'s default).
READ_SIZE = defaults.READ_LIMIT
#: Plaintext encrypted, and ciphertext given to OpenSSL, per step: one TLS
#: record's worth (RFC 8446 section 5.1: 2^14 bytes of plaintext at most).
RECORD_SIZE = 16 * 1024

#: The ``tls_transport`` option of :func:`~wsharbor.asyncio.server.serve` and
#: :func:`~wsharbor.asyncio.client.connect`: ``"wsharbor"`` (the default) is this
#: module's :class:`TLSTransport`; ``"loop"`` is the event loop's own TLS
#: (asyncio's ``SSLProtocol``, or uvloop's), the way back if ever needed.
TLSTransportName: TypeAlias = Literal["wsharbor", "loop"]
TLS_TRANSPORTS: tuple[TLSTransportName, ...] = ("wsharbor", "loop")

_scratch = threading.local()


def _cipher_buffer() -> memoryview:
    """The ciphertext read buffer of this thread, shared by its TLS connections."""
    try:
        view: memoryview = _scratch.view
    except AttributeError:
        view = _scratch.view = memoryview(bytearray(READ_SIZE))
    return view


_deadlines = threading.local()


def _deadline_queue(
    loop: asyncio.AbstractEventLoop, delay: float, method: str
) -> DeadlineQueue[TLSTransport]:
    """The queue of ``method`` deadlines ``delay`` seconds away on ``loop``, shared
    by every TLS connection of this thread (see :func:`~.connection._shared_timers`)."""
    local = _deadlines
    registry: dict[tuple[float, str], DeadlineQueue[TLSTransport]] | None = getattr(
        local, "registry", None
    )
    if registry is None or local.loop is not loop:
        registry = local.registry = {}
        local.loop = loop
    queue = registry.get((delay, method))
    if queue is None:
        queue = registry[delay, method] = DeadlineQueue(loop, delay, operator.methodcaller(method))
    return queue


# States.
_HANDSHAKE = 0  # TLS handshake in progress: the application doesn't know yet
_OPEN = 1  # application data flows both ways
_CLOSING = 2  # close_notify sent: what the peer still sends is dropped
_CLOSED = 3  # the TCP transport is closed or closing for good

# What the ssl module raises when OpenSSL needs more input.
_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class TLSTransport(asyncio.BufferedProtocol, asyncio.Transport):
    """A TLS connection over a TCP transport, with a small per-connection footprint.

    It is the TCP transport's protocol and the transport of ``protocol``,
    whose ``connection_made()`` it calls once the TLS handshake is complete
    (see the module docstring). Make one per connection and give it to the
    event loop as the protocol::

        waiter = loop.create_future()
        tls = TLSTransport(connection, context, server_side=True, waiter=waiter)
        await loop.connect_accepted_socket(lambda: tls, sock)
        await waiter  # the handshake's outcome: ssl.SSLError, TimeoutError, ...

    ``server_hostname`` is the client's name for the server (SNI and
    certificate checks), as in :meth:`ssl.SSLContext.wrap_bio`.
    ``handshake_timeout`` bounds the handshake (None: no bound);
    ``shutdown_timeout`` bounds the wait for the peer after :meth:`close`
    (None: no bound; a :class:`~wsharbor.asyncio.connection.Connection`
    bounds it with its ``close_timeout`` anyway).
    """

    __slots__ = (
        "_early",
        "_eof",
        "_handshake_deadlines",
        "_incoming",
        "_is_buffered",
        "_loop",
        "_outgoing",
        "_pending",
        "_protocol",
        "_protocol_connected",
        "_reading_paused",
        "_resuming",
        "_shutdown_deadlines",
        "_sslobj",
        "_state",
        "_transport",
        "_waiter",
        "_writing_paused",
    )

    def __init__(
        self,
        protocol: asyncio.BaseProtocol,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        waiter: asyncio.Future[None] | None = None,
        handshake_timeout: float | None = None,
        shutdown_timeout: float | None = None,
    ) -> None:
        # No call to Transport.__init__: get_extra_info() computes what it gives,
        # rather than keeping a dictionary per connection.
        self._loop = asyncio.get_running_loop()
        self._protocol = protocol
        self._is_buffered = isinstance(protocol, asyncio.BufferedProtocol)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(
            self._incoming,
            self._outgoing,
            server_side=server_side,
            server_hostname=None if server_side else (server_hostname or None),
        )
        self._waiter = waiter
        self._transport: asyncio.Transport | None = None
        self._state = _HANDSHAKE
        self._protocol_connected = False
        self._reading_paused = False  # by the application
        self._writing_paused = False  # by the TCP transport
        self._resuming = False  # a call to _resume() is scheduled
        self._eof = False  # the TCP stream ended, or close_notify arrived
        # Ciphertext read while the application paused reading, not yet given
        # to OpenSSL (the rest of one read, since the read buffer is shared).
        self._pending: bytes | None = None
        # Plaintext written before the handshake completed (a protocol that
        # writes before connection_made(); Connection doesn't).
        self._early: list[bytes] | None = None
        self._handshake_deadlines = (
            None
            if handshake_timeout is None
            else _deadline_queue(self._loop, handshake_timeout, "_handshake_timed_out")
        )
        self._shutdown_deadlines = (
            None
            if shutdown_timeout is None
            else _deadline_queue(self._loop, shutdown_timeout, "_shutdown_timed_out")
        )

    def __repr__(self) -> str:
        state = ("handshake", "open", "closing", "closed")[self._state]
        return f"<TLSTransport {state} {self.get_extra_info('peername')}>"

    # The TCP transport's protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports implement the
        # interface without subclassing asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        if self._handshake_deadlines is not None:
            self._handshake_deadlines.add(self)
        self._do_handshake()  # a client sends its ClientHello

    def get_buffer(self, sizehint: int) -> memoryview:
        return _cipher_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        data = _cipher_buffer()[:nbytes]
        pending = self._pending
        if pending is not None:
            # Reading resumed and the loop read more before _resume() ran (uvloop
            # may): what was kept goes to OpenSSL first.
            self._pending = None
            self._receive(memoryview(pending + data))
        else:
            self._receive(data)

    def eof_received(self) -> bool | None:
        self._eof = True
        state = self._state
        if state == _HANDSHAKE:
            self._handshake_failed(
                ConnectionResetError("connection closed during the TLS handshake")
            )
            return None
        if state == _OPEN:
            if self._reading_paused and self._has_input():
                # What the application hasn't read yet comes first, then the
                # end of the stream (_resume).
                return True
            self._end_of_stream()
        return None  # the TCP transport closes; connection_lost() follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        self._pending = None
        self._early = None
        if self._handshake_deadlines is not None:
            self._handshake_deadlines.discard(self)
        if self._shutdown_deadlines is not None:
            self._shutdown_deadlines.discard(self)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_exception(
                    exc or ConnectionResetError("connection closed during the TLS handshake")
                )
        if self._protocol_connected:
            self._protocol_connected = False
            self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._protocol_connected:
            self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._protocol_connected:
            self._protocol.resume_writing()

    # Reading.

    def _receive(self, data: memoryview) -> None:
        """Give ``data`` (ciphertext in the shared buffer) to OpenSSL a record's
        worth at a time, and act on each slice; keep the rest if reading pauses."""
        incoming = self._incoming
        size = len(data)
        offset = 0
        while offset < size:
            state = self._state
            if state == _OPEN and self._reading_paused:
                # The shared buffer is overwritten by the next read of any
                # connection: keep the rest of this one.
                self._pending = bytes(data[offset:])
                return
            if state == _CLOSED:
                return
            incoming.write(data[offset : offset + RECORD_SIZE])
            offset += RECORD_SIZE
            if state == _HANDSHAKE:
                self._do_handshake()
                if self._state == _OPEN:
                    self._decrypt()
            elif state == _OPEN:
                self._decrypt()
            else:
                self._drain_closing()

    def _has_input(self) -> bool:
        """Whether input waits for the application: ciphertext kept or in the
        incoming BIO, or plaintext OpenSSL decrypted and didn't hand over."""
        return bool(self._pending or self._incoming.pending or self._sslobj.pending())

    def _decrypt(self) -> None:
        """Decrypt what OpenSSL has into the application's buffer until it runs
        out, the application pauses reading, or the peer sends close_notify."""
        sslobj = self._sslobj
        protocol = self._protocol
        while not self._reading_paused and self._state == _OPEN:
            count = -1  # no close_notify
            try:
                if self._is_buffered:
                    buffered = cast(asyncio.BufferedProtocol, protocol)
                    buffer = cast(
                        memoryview, buffered.get_buffer(self._incoming.pending or RECORD_SIZE)
                    )
                    wanted = len(buffer)
                    if not wanted:
                        raise RuntimeError("get_buffer() returned an empty buffer")
                    filled = 0
                    try:
                        # Fill the buffer: several records, one call to the protocol.
                        while filled < wanted:
                            # With a buffer, read() returns a count (typeshed: bytes).
                            count = cast(int, sslobj.read(wanted - filled, buffer[filled:]))
                            if count == 0:
                                break
                            filled += count
                    finally:
                        if filled:
                            buffered.buffer_updated(filled)
                else:
                    data = sslobj.read(RECORD_SIZE)
                    count = len(data)
                    if data:
                        cast(asyncio.Protocol, protocol).data_received(data)
            except _WANT:
                break
            except ssl.SSLError as exc:
                self._fatal_error(exc)
                return
            if count == 0:
                # close_notify (RFC 8446 section 6.1): the peer sends no more.
                self._eof = True
                self._end_of_stream()
                return
        if self._outgoing.pending:
            self._flush()  # post-handshake messages (a KeyUpdate's answer)

    def _end_of_stream(self) -> None:
        """The peer sent all it will: tell the application, then close."""
        if self._protocol_connected:
            try:
                # TLS can't stay half-open: we close, whatever this returns.
                cast(asyncio.Protocol, self._protocol).eof_received()
            finally:
                self.close()

    def _resume(self) -> None:
        """Reading resumed: first what was read while it was paused."""
        self._resuming = False
        if self._reading_paused or self._state != _OPEN:
            return
        pending, self._pending = self._pending, None
        if pending:
            self._receive(memoryview(pending))
        else:
            self._decrypt()
        if self._eof and self._state == _OPEN and not self._reading_paused:
            self._end_of_stream()

    # The handshake.

    def _do_handshake(self) -> None:
        try:
            self._sslobj.do_handshake()
        except _WANT:
            self._flush()
            return
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self._flush()  # OpenSSL's alert tells the peer why
            self._handshake_failed(exc)
            return
        # The last flight (a client's Finished, a server's session tickets) goes
        # out with what the application writes first, or at the end of
        # _decrypt(): one send instead of two.
        self._state = _OPEN
        if self._handshake_deadlines is not None:
            self._handshake_deadlines.discard(self)
        waiter = self._waiter
        self._waiter = None
        self._protocol_connected = True
        self._protocol.connection_made(self)
        if self._writing_paused:
            self._protocol.pause_writing()
        early, self._early = self._early, None
        if early and self._state == _OPEN:
            self.writelines(early)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._outgoing.pending and not self._incoming.pending:
            self._flush()  # nothing more to decrypt now: don't wait

    def _handshake_failed(self, exc: BaseException) -> None:
        if self._handshake_deadlines is not None:
            self._handshake_deadlines.discard(self)
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        elif waiter is None:
            logger.debug("%r: TLS handshake failed: %s", self, exc)
        self._close_transport()

    def _handshake_timed_out(self) -> None:
        if self._state == _HANDSHAKE:
            self._handshake_failed(TimeoutError("TLS handshake timed out"))
            if self._transport is not None:
                self._transport.abort()

    # Writing.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` and write it to the TCP transport."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data: expecting a bytes-like instance, got {type(data).__name__}")
        if not data:
            return
        if self._state != _OPEN:
            if self._state == _HANDSHAKE:
                self._buffer_early(bytes(data))
            return  # closing: dropped, as asyncio's transports do
        self._encrypt(data)
        self._flush()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Encrypt the buffers and write them: small ones share TLS records."""
        if self._state != _OPEN:
            if self._state == _HANDSHAKE:
                for data in list_of_data:
                    self._buffer_early(bytes(data))
            return
        small: list[bytes | bytearray | memoryview] = []
        size = 0
        for data in list_of_data:
            length = len(data)
            if length >= RECORD_SIZE:
                if small:
                    self._encrypt(b"".join(small))
                    small.clear()
                    size = 0
                self._encrypt(data)
            elif length:
                small.append(data)
                size += length
                if size >= RECORD_SIZE:
                    self._encrypt(b"".join(small))
                    small.clear()
                    size = 0
        if small:
            self._encrypt(small[0] if len(small) == 1 else b"".join(small))
        self._flush()

    def _buffer_early(self, data: bytes) -> None:
        if self._early is None:
            self._early = []
        self._early.append(data)

    def _encrypt(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt ``data`` into the outgoing BIO, a record at a time; the
        ciphertext goes to the TCP transport at the next :meth:`_flush`."""
        sslobj = self._sslobj
        try:
            if len(data) <= RECORD_SIZE:
                sslobj.write(data)
                return
            view = memoryview(data)
            outgoing = self._outgoing
            transport = self._transport
            assert transport is not None
            chunks: list[bytes] = []
            for offset in range(0, len(view), RECORD_SIZE):
                sslobj.write(view[offset : offset + RECORD_SIZE])
                # Empty the BIO after each record: it keeps its largest size.
                chunks.append(outgoing.read())
            transport.writelines(chunks)
        except ssl.SSLError as exc:
            self._fatal_error(exc)

    def _flush(self) -> None:
        """Write what the outgoing BIO holds to the TCP transport."""
        transport = self._transport
        if transport is not None and self._outgoing.pending and not transport.is_closing():
            transport.write(self._outgoing.read())

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close: close() sends close_notify")

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        transport = self._transport
        return 0 if transport is None else transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        transport = self._transport
        if transport is None:
            return (0, 0)
        return transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        assert self._transport is not None
        self._transport.set_write_buffer_limits(high, low)

    # Reading, from the application.

    def is_reading(self) -> bool:
        return not self._reading_paused and self._state == _OPEN

    def pause_reading(self) -> None:
        if self._reading_paused:
            return
        self._reading_paused = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading_paused:
            return
        self._reading_paused = False
        transport = self._transport
        if self._state != _OPEN or transport is None:
            return
        if not transport.is_closing():
            transport.resume_reading()
        if (self._has_input() or self._eof) and not self._resuming:
            # Later, not from inside the application's call.
            self._resuming = True
            self._loop.call_soon(self._resume)

    # Closing.

    def is_closing(self) -> bool:
        transport = self._transport
        return self._state >= _CLOSING or (transport is not None and transport.is_closing())

    def close(self) -> None:
        """Send close_notify, then close TCP once the peer is done (see the module
        docstring); buffered data is sent first."""
        state = self._state
        if state >= _CLOSING:
            return
        if state == _HANDSHAKE:
            self._handshake_failed(ConnectionAbortedError("closed during the TLS handshake"))
            return
        self._state = _CLOSING
        self._pending = None
        try:
            self._sslobj.unwrap()  # close_notify (RFC 8446 section 6.1)
        except (*_WANT, ssl.SSLError):
            pass
        self._flush()
        transport = self._transport
        assert transport is not None
        if self._eof or not transport.can_write_eof():
            self._close_transport()
            return
        transport.write_eof()
        if self._reading_paused:
            transport.resume_reading()
        if self._shutdown_deadlines is not None:
            self._shutdown_deadlines.add(self)

    def _drain_closing(self) -> None:
        """Closing: drop what the peer still sends; close at its close_notify."""
        sslobj = self._sslobj
        try:
            while sslobj.read(RECORD_SIZE):
                pass
        except _WANT:
            return
        except ssl.SSLError:
            pass
        self._close_transport()

    def _shutdown_timed_out(self) -> None:
        if self._state == _CLOSING and self._transport is not None:
            self._transport.abort()

    def _close_transport(self) -> None:
        """Close TCP once what is buffered is sent (a TLS alert, close_notify)."""
        self._state = _CLOSED
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.close()

    def _fatal_error(self, exc: ssl.SSLError) -> None:
        """A TLS error after the handshake (a bad record, say): send OpenSSL's
        alert if it can go at once, close, and tell the application why."""
        logger.debug("%r: TLS error: %s", self, exc)
        self._flush()
        self._state = _CLOSED
        transport = self._transport
        if transport is None:
            return
        if self._protocol_connected:
            # connection_lost() gets the exception instead of None.
            self._protocol_connected = False
            self._loop.call_soon(self._protocol.connection_lost, exc)
        if transport.get_write_buffer_size():
            transport.abort()
        else:
            transport.close()

    def abort(self) -> None:
        """Close the TCP connection at once; buffered data is lost."""
        if self._state == _HANDSHAKE:
            self._handshake_failed(ConnectionAbortedError("aborted during the TLS handshake"))
        self._state = _CLOSED
        if self._transport is not None:
            self._transport.abort()

    # The rest of asyncio.Transport.

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``ssl_object``, ``sslcontext``, ``peercert``, ``cipher`` and
        ``compression`` as asyncio's TLS transport gives them; anything else
        (``peername``, ``sockname``, ``socket``) is the TCP transport's."""
        sslobj = self._sslobj
        if name == "ssl_object":
            return sslobj if self._state != _HANDSHAKE else default
        if name == "sslcontext":
            return sslobj.context
        if name == "peercert":
            return sslobj.getpeercert() if self._state != _HANDSHAKE else default
        if name == "cipher":
            return sslobj.cipher()
        if name == "compression":
            return sslobj.compression()
        transport = self._transport
        return default if transport is None else transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol
        self._is_buffered = isinstance(protocol, asyncio.BufferedProtocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def get_read_buffer_size(self) -> int:
        """Ciphertext received and not decrypted yet."""
        return len(self._pending or b"") + self._incoming.pending
