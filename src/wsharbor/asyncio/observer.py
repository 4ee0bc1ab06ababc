"""Connection observers: what the application server (or any user) sees of every
connection without subclassing or wrapping it.

An observer is set once per server or client (``serve(..., observer=...)``,
``connect(..., observer=...)``) and shared by all its connections through their
:class:`~wsharbor.asyncio.connection.ConnectionOptions`; connections without one
pay a single ``is None`` check where an event happens, and nothing per idle
connection.

Subclass :class:`ConnectionObserver` and override the methods you need; the
others do nothing. Every method is called synchronously in the event loop's
thread, where the event happens: it must be quick, must not block, and must not
raise (an exception propagates into the connection's I/O callback).

Events, in the order a server connection sees them::

    connection_accepted     TCP connection accepted (server side), before any byte is read
    data_received           bytes read from the network (handshake included)
    data_sent               bytes written to the transport (handshake included)
    connection_opened       the opening handshake succeeded (101 sent or received)
    message_received        a message was received, before the application reads it
    message_sent            a message was written (send() and broadcast())
    connection_closed       the TCP connection is closed, however it ended

``connection_accepted`` may call :meth:`Server.pause_accepting()
<wsharbor.asyncio.server.Server.pause_accepting>`: the server checks it before
it accepts the next connection (``wsharbor run`` balances connections across
workers that way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .connection import Connection
    from .server import ServerConnection

__all__ = ["ConnectionObserver"]


class ConnectionObserver:
    """Callbacks for the events of every connection of a server or client."""

    __slots__ = ()

    def connection_accepted(self, connection: ServerConnection) -> None:
        """A server accepted a TCP connection; nothing was read yet."""

    def connection_opened(self, connection: Connection) -> None:
        """The opening handshake succeeded; ``connection.protocol`` exists."""

    def connection_closed(self, connection: Connection) -> None:
        """The TCP connection is closed: after the closing handshake, after an
        HTTP response (``connection.response``), or when it was lost."""

    def data_received(self, connection: Connection, size: int) -> None:
        """``size`` bytes were read from the network."""

    def data_sent(self, connection: Connection, size: int) -> None:
        """``size`` bytes were written to the transport."""

    def message_received(self, connection: Connection) -> None:
        """A whole message arrived (it waits for ``recv()`` now)."""

    def message_sent(self, connection: Connection) -> None:
        """A whole message was written (every frame of it), by ``send()`` or
        :func:`~wsharbor.asyncio.connection.broadcast`."""
