"""The plain TCP transport of accepted connections on asyncio's selector loop.

asyncio's socket transport, made without ``loop.connect_accepted_socket()``
and with less kept per connection:

- it is made at once, in the accept callback, rather than by a coroutine in
  a task of its own awaiting a future (about 15 µs and three loop callbacks
  less per handshake);
- the peer's address comes from ``accept()``, not from a ``getpeername()``
  system call;
- the ``sockname`` and ``socket`` extras (a tuple and a wrapper object, about
  200 bytes per idle connection) are made when asked for, not for every
  connection: while the socket is open they are what asyncio's transport
  would give; once it is closed, None;
- on Python 3.11, whose socket transport inherits a ``writelines`` that joins
  its buffers into one new ``bytes`` before writing, ``writelines`` hands them
  to one ``sendmsg()`` (scatter/gather) when nothing is buffered, as Python
  3.12's transport does: a frame's header and its 64 KiB payload go out
  without a copy of the payload, and what the socket doesn't take is buffered
  as asyncio's ``write()`` buffers it.

Everything else is asyncio's own ``_SelectorSocketTransport``, a private class
of the standard library, present with the same constructor from Python 3.8 to
3.13: :func:`make_transport` returns None on any other loop (uvloop's
transports are compiled and already lazy) or when the class isn't there, and
the caller then uses ``connect_accepted_socket()``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterable
from typing import Any

__all__ = ["make_transport"]

try:
    from asyncio import selector_events, trsock

    _Base: Any = getattr(selector_events, "_SelectorSocketTransport")  # noqa: B009 (private)
    _SelectorLoop: Any = selector_events.BaseSelectorEventLoop
except (ImportError, AttributeError):  # pragma: no cover - another Python
    _Base = None
    _SelectorLoop = None


if _Base is not None:

    class _LazyExtraTransport(_Base):  # type: ignore[misc]
        """``_SelectorSocketTransport`` whose ``sockname`` and ``socket`` extras
        are made on demand."""

        def __init__(
            self,
            loop: asyncio.AbstractEventLoop,
            sock: socket.socket,
            protocol: asyncio.BaseProtocol,
            peername: Any,
        ) -> None:
            super().__init__(loop, sock, protocol, None, {"peername": peername}, None)
            extra = self._extra
            del extra["sockname"], extra["socket"]

        def get_extra_info(self, name: str, default: Any = None) -> Any:
            extra = self._extra
            if name in extra:
                return extra[name]
            sock = self._sock
            if sock is None:  # closed
                return default
            if name == "sockname":
                try:
                    extra[name] = sock.getsockname()
                except OSError:
                    return default
            elif name == "socket":
                extra[name] = trsock.TransportSocket(sock)
            else:
                return default
            return extra[name]

    if _Base.writelines is asyncio.WriteTransport.writelines and hasattr(socket.socket, "sendmsg"):
        # Python 3.11: the inherited writelines joins (see the module's doc).
        _IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 16

        class _Transport(_LazyExtraTransport):
            """The lazy-extra transport whose ``writelines`` is one ``sendmsg()``."""

            def writelines(self, list_of_data: Iterable[Any]) -> None:
                buffers = list_of_data if isinstance(list_of_data, list) else list(list_of_data)
                if (
                    self._buffer
                    or self._eof
                    or self._conn_lost
                    or self._empty_waiter is not None
                    or len(buffers) > _IOV_MAX
                ):
                    # Something is buffered already (its order must be kept),
                    # or asyncio's own checks apply: join and write.
                    super().writelines(buffers)
                    return
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
                # What the socket didn't take: buffered, and written when the
                # socket is writable again, as asyncio's write() does.
                self._loop._add_writer(self._sock_fd, self._write_ready)
                buffer = self._buffer
                buffer.extend(memoryview(buffers[index])[sent:])
                for data in buffers[index + 1 :]:
                    buffer.extend(data)
                self._maybe_pause_protocol()

        _transport_class: Any = _Transport
    else:
        _transport_class = _LazyExtraTransport


def make_transport(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    protocol: asyncio.BaseProtocol,
    peername: Any,
) -> asyncio.Transport | None:
    """The transport of an accepted plain TCP socket, or None if this loop has
    no selector transport (then use ``loop.connect_accepted_socket()``).

    As with ``connect_accepted_socket()``, ``protocol.connection_made()`` is
    called in a later loop iteration, then reading starts.
    """
    if _Base is None or not isinstance(loop, _SelectorLoop):
        return None
    sock.setblocking(False)
    transport: asyncio.Transport = _transport_class(loop, sock, protocol, peername)
    return transport
