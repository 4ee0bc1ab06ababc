"""The plain TCP transport of accepted connections on asyncio's selector loop.

A transport of our own instead of asyncio's ``_SelectorSocketTransport`` (what
``loop.connect_accepted_socket()`` makes), built on the loop's public
``add_reader()``/``add_writer()``, for what a server holds per idle
connection and does per handshake:

- an object with ``__slots__`` and no extra-info dict: about 200 bytes where
  asyncio's transport, its ``__dict__``, its extras (``peername``,
  ``sockname``, the socket's wrapper) and its entry in the loop's weak table of
  transports take about 1.2 KiB. ``sockname`` and ``socket`` are made when
  asked for, while the socket is open; the peer's address comes from
  ``accept()``, not from a ``getpeername()`` system call;
- it is made at once, in the accept callback, rather than by a coroutine in a
  task of its own awaiting a future, and ``connection_made()`` and the start
  of reading take one loop callback, not three; ``TCP_NODELAY`` is inherited
  from the listening socket when it has it (Linux), not set again on every
  accepted socket;
- the write buffer exists only while something waits to be written: an
  idle connection holds no ``bytearray``, and one that had a burst to send
  gives the buffer's memory back when it has drained;
- ``writelines()`` hands its buffers to one ``sendmsg()`` (scatter/gather):
  a frame's header and its payload go out without being joined (Python
  3.11's transport joins them into one new ``bytes``);
- a read that fills the protocol's buffer is followed at once by another, up
  to four per readiness event, instead of a trip through the loop: a large
  message is read header first, then straight into its payload's buffer.

Its behaviour is asyncio's: the ``asyncio.BufferedProtocol`` callbacks, write
flow control with high and low water marks (``pause_writing()`` /
``resume_writing()``), ``write_eof()``, ``close()`` after the buffer drains,
``abort()``, and the same handling of errors (an ``OSError`` closes the
transport quietly, anything else goes to the loop's exception handler too).
It only serves ``asyncio.BufferedProtocol`` protocols (wsharbor's connections);
:func:`make_transport` returns None on a loop without selector readers (uvloop,
whose compiled transports are small already), and the caller then uses
``connect_accepted_socket()``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from asyncio import trsock
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["SEND_EACH", "SocketTransport", "inherits_nodelay", "make_transport", "write_each"]

logger = logging.getLogger("asyncio")

#: Buffers handed to one ``sendmsg()`` at most (more are joined first).
_IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16
#: Reads at most per readiness event (see _read_ready).
_READS_PER_EVENT = 4
#: After this many writes to a lost connection, asyncio logs a warning.
_LOG_LOST_WRITES = 5
_NO_EXTRA: Mapping[str, Any] = MappingProxyType({})
#: Default water marks of the write buffer, asyncio's.
_HIGH = 64 * 1024

try:
    if os.environ.get("WSHARBOR_NO_SPEEDUPS") == "1":
        raise ImportError("disabled by WSHARBOR_NO_SPEEDUPS")
    from wsharbor.asyncio._sendeach import send_each as _send_each
except ImportError:
    _send_each = None  # type: ignore[assignment]
#: Whether :func:`write_each` writes with one C call (else it calls each ``write()``).
SEND_EACH = _send_each is not None

try:
    _SelectorLoop: Any = asyncio.selector_events.BaseSelectorEventLoop
except AttributeError:  # pragma: no cover - another Python
    _SelectorLoop = None


class SocketTransport(asyncio.Transport):
    """An accepted TCP socket's transport for a ``BufferedProtocol`` (see the module)."""

    __slots__ = (
        "_buffer",
        "_closing",
        "_conn_lost",
        "_eof",
        "_fd",
        "_high",
        "_loop",
        "_low",
        "_paused",
        "_peername",
        "_protocol",
        "_protocol_paused",
        "_sock",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: asyncio.BufferedProtocol,
        peername: Any,
    ) -> None:
        # Not BaseTransport.__init__(), which gives each transport a dict of
        # extras: get_extra_info() is ours.
        self._extra = _NO_EXTRA
        self._loop: asyncio.AbstractEventLoop | None = loop
        self._sock: socket.socket | None = sock
        self._fd = sock.fileno()
        self._protocol: asyncio.BufferedProtocol | None = protocol
        self._peername = peername
        #: What waits to be written; None when nothing does.
        self._buffer: bytearray | None = None
        self._conn_lost = 0
        self._closing = False
        self._eof = False
        self._paused = False
        self._protocol_paused = False
        self._high = _HIGH
        self._low = _HIGH // 4
        loop.call_soon(self._start)

    def __repr__(self) -> str:
        state = "closed" if self._sock is None else "closing" if self._closing else "open"
        return f"<SocketTransport fd={self._fd} {state}>"

    def _start(self) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        try:
            protocol.connection_made(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.connection_made() call failed.")
            return
        if not self._closing and not self._paused:
            assert self._loop is not None
            self._loop.add_reader(self._fd, self._read_ready)

    # Extra information.

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        sock = self._sock
        if sock is None:  # closed
            return default
        if name == "sockname":
            try:
                return sock.getsockname()
            except OSError:
                return default
        if name == "socket":
            return trsock.TransportSocket(sock)
        return default

    # Protocol.

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        assert self._protocol is not None
        return self._protocol

    # Reading.

    def is_reading(self) -> bool:
        return not self._paused and not self._closing

    def pause_reading(self) -> None:
        if self._closing or self._paused:
            return
        self._paused = True
        assert self._loop is not None
        self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._closing or not self._paused:
            return
        self._paused = False
        assert self._loop is not None
        self._loop.add_reader(self._fd, self._read_ready)

    def _read_ready(self) -> None:
        # A read that fills the buffer is followed by another at once, up to
        # _READS_PER_EVENT: what remains is likely there already, and a loop
        # iteration (a poll) costs more than a read that finds nothing. A
        # large payload is read in pieces this way (header, then payload
        # straight into its buffer), without waiting for the loop between.
        for _ in range(_READS_PER_EVENT):
            if self._conn_lost or self._paused or self._closing:
                return
            protocol = self._protocol
            sock = self._sock
            assert protocol is not None and sock is not None
            try:
                buffer = protocol.get_buffer(-1)
                size = len(buffer)  # type: ignore[arg-type]
                if not size:
                    raise RuntimeError("get_buffer() returned an empty buffer")
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                return
            try:
                nbytes = sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal read error on socket transport")
                return
            if not nbytes:
                self._eof_received()
                return
            try:
                protocol.buffer_updated(nbytes)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return
            if nbytes < size:
                return  # the socket had no more

    def _eof_received(self) -> None:
        assert self._protocol is not None and self._loop is not None
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if keep_open:
            # Half-closed: the protocol may still write, nothing more comes.
            self._loop.remove_reader(self._fd)
        else:
            self.close()

    # Writing.

    def get_write_buffer_size(self) -> int:
        buffer = self._buffer
        return 0 if buffer is None else len(buffer)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = _HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high = high
        self._low = low
        self._maybe_pause_protocol()

    def _writable(self, data_present: bool) -> bool:
        """Whether a write may go ahead; counts writes to a lost connection."""
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if not data_present:
            return False
        if self._conn_lost:
            if self._conn_lost >= _LOG_LOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return False
        return True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"data argument must be a bytes-like object, not {type(data).__name__!r}"
            )
        if (self._eof or self._conn_lost or not data) and not self._writable(bool(data)):
            return
        buffer = self._buffer
        if buffer is not None:
            buffer.extend(data)
            self._maybe_pause_protocol()
            return
        assert self._sock is not None
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal write error on socket transport")
            return
        if sent < len(data):
            self._keep((memoryview(data)[sent:],))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        buffers = list_of_data if isinstance(list_of_data, list) else list(list_of_data)
        if not self._writable(any(buffers)):
            return
        buffer = self._buffer
        if buffer is not None:
            for data in buffers:
                buffer.extend(data)
            self._maybe_pause_protocol()
            return
        if len(buffers) > _IOV_MAX:
            buffers = [b"".join(buffers)]
        assert self._sock is not None
        try:
            sent = self._sock.sendmsg(buffers)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal write error on socket transport")
            return
        index = 0
        for data in buffers:
            size = len(data)
            if sent < size:
                break
            sent -= size
            index += 1
        else:
            return  # all sent
        rest: list[bytes | bytearray | memoryview] = [memoryview(buffers[index])[sent:]]
        rest += buffers[index + 1 :]
        self._keep(rest)

    def _keep(self, rest: Iterable[bytes | bytearray | memoryview]) -> None:
        """Buffer what the socket didn't take; write it when it is writable."""
        buffer = self._buffer = bytearray()
        for data in rest:
            buffer.extend(data)
        assert self._loop is not None
        self._loop.add_writer(self._fd, self._write_ready)
        self._maybe_pause_protocol()

    def _write_ready(self) -> None:
        buffer = self._buffer
        if self._conn_lost or buffer is None:
            return
        assert self._sock is not None and self._loop is not None
        try:
            sent = self._sock.send(buffer)
        except (BlockingIOError, InterruptedError):
            return
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.remove_writer(self._fd)
            self._buffer = None
            self._fatal_error(exc, "Fatal write error on socket transport")
            return
        if sent:
            del buffer[:sent]
        self._maybe_resume_protocol()  # may write more (to the buffer), or abort
        if buffer or self._conn_lost:
            return
        self._buffer = None  # its memory goes back
        self._loop.remove_writer(self._fd)
        if self._closing:
            self._call_soon_connection_lost(None)
        elif self._eof:
            self._sock.shutdown(socket.SHUT_WR)

    def _maybe_pause_protocol(self) -> None:
        if self._protocol_paused or self.get_write_buffer_size() <= self._high:
            return
        self._protocol_paused = True
        try:
            assert self._protocol is not None
            self._protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report(exc, "protocol.pause_writing() failed")

    def _maybe_resume_protocol(self) -> None:
        if not self._protocol_paused or self.get_write_buffer_size() > self._low:
            return
        self._protocol_paused = False
        try:
            assert self._protocol is not None
            self._protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._report(exc, "protocol.resume_writing() failed")

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        if self._closing or self._eof:
            return
        self._eof = True
        if self._buffer is None:
            assert self._sock is not None
            self._sock.shutdown(socket.SHUT_WR)

    # Closing.

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        assert self._loop is not None
        self._loop.remove_reader(self._fd)
        if self._buffer is None:
            self._call_soon_connection_lost(None)

    def abort(self) -> None:
        self._force_close(None)

    def _force_close(self, exc: BaseException | None) -> None:
        if self._conn_lost:
            return
        loop = self._loop
        assert loop is not None
        if self._buffer is not None:
            self._buffer = None
            loop.remove_writer(self._fd)
        if not self._closing:
            self._closing = True
            loop.remove_reader(self._fd)
        self._call_soon_connection_lost(exc)

    def _call_soon_connection_lost(self, exc: BaseException | None) -> None:
        self._conn_lost += 1
        assert self._loop is not None
        self._loop.call_soon(self._connection_lost, exc)

    def _connection_lost(self, exc: BaseException | None) -> None:
        try:
            if self._protocol is not None:
                self._protocol.connection_lost(exc)  # type: ignore[arg-type]
        finally:
            if self._sock is not None:
                self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None

    def _fatal_error(self, exc: BaseException, message: str) -> None:
        if isinstance(exc, OSError):
            if self._loop is not None and self._loop.get_debug():
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._report(exc, message)
        self._force_close(exc)

    def _report(self, exc: BaseException, message: str) -> None:
        assert self._loop is not None
        self._loop.call_exception_handler(
            {"message": message, "exception": exc, "transport": self, "protocol": self._protocol}
        )


def write_each(
    transports: list[SocketTransport], frames: list[bytes]
) -> list[tuple[int, Exception]]:
    """Write ``frames[i]`` to ``transports[i]`` for each ``i``, as each ``write()`` would.

    :func:`wsharbor.broadcast`'s writes: the sockets of transports with
    nothing buffered are written with one call to the C accelerator, which
    makes the ``send()`` system calls without a Python call each. What a
    socket didn't take, and the frames of transports that buffer or are
    closed, then go through ``write()``, in order, which buffers or reports
    them as it always does. Returns the exceptions ``write()`` raised, with
    their index.
    """
    errors: list[tuple[int, Exception]] = []
    if _send_each is None:
        pending: Iterable[tuple[int, int]] = ((index, 0) for index in range(len(frames)))
    else:
        fds = [
            t._fd
            if t._buffer is None and t._sock is not None and not (t._conn_lost or t._eof)
            else -1
            for t in transports
        ]
        pending = _send_each(fds, frames)
    for index, sent in pending:
        transport = transports[index]
        frame = frames[index]
        try:
            if sent >= 0:
                transport.write(memoryview(frame)[sent:] if sent else frame)
            else:
                transport._fatal_error(
                    OSError(-sent, os.strerror(-sent)), "Fatal write error on socket transport"
                )
        except Exception as exc:
            errors.append((index, exc))
    return errors


def make_transport(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    protocol: asyncio.BaseProtocol,
    peername: Any,
    *,
    nodelay: bool = True,
) -> asyncio.Transport | None:
    """The transport of an accepted plain TCP socket, or None if this loop has
    no selector readers or the protocol isn't buffered (then use
    ``loop.connect_accepted_socket()``).

    ``nodelay=False`` when the socket has ``TCP_NODELAY`` already (inherited
    from the listening socket). As with ``connect_accepted_socket()``,
    ``protocol.connection_made()`` is called in a later loop iteration, then
    reading starts. Raises OSError if the socket is already unusable.
    """
    if (
        _SelectorLoop is None
        or not isinstance(loop, _SelectorLoop)
        or not isinstance(protocol, asyncio.BufferedProtocol)
    ):
        return None
    sock.setblocking(False)
    if nodelay and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return SocketTransport(loop, sock, protocol, peername)


def inherits_nodelay(listener: socket.socket) -> bool:
    """Set ``TCP_NODELAY`` on a listening socket; whether the sockets it
    accepts start with it set.

    Linux copies the listening socket's ``TCP_NODELAY`` to the sockets it
    accepts: one system call per listener instead of one per connection.
    Elsewhere False (set it on each). True for a socket that isn't TCP
    (nothing to set).
    """
    if listener.family not in (socket.AF_INET, socket.AF_INET6):
        return True
    if os.uname().sysname != "Linux":
        return False
    try:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        return False
    return True
