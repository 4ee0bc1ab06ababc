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
  would give; once it is closed, None.

Everything else is asyncio's own ``_SelectorSocketTransport``, a private class
of the standard library, present with the same constructor from Python 3.8 to
3.13: :func:`make_transport` returns None on any other loop (uvloop's
transports are compiled and already lazy) or when the class isn't there, and
the caller then uses ``connect_accepted_socket()``.
"""

from __future__ import annotations

import asyncio
import socket
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
    transport: asyncio.Transport = _LazyExtraTransport(loop, sock, protocol, peername)
    return transport
