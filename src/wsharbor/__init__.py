"""wsharbor: a WebSocket library and application server built for production.

The public API is re-exported here::

    import wsharbor

    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    wsharbor.run(echo, "127.0.0.1", 8765)
"""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from .asyncio import (
    ClientConnection,
    Connection,
    Server,
    ServerConnection,
    ServerThread,
    broadcast,
    connect,
    run,
    serve,
    serve_in_thread,
    unix_connect,
    unix_serve,
)
from .exceptions import (
    ConfigError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidState,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
    ProtocolError,
    WsharborError,
)
from .protocol.deflate import DeflateSettings
from .protocol.frames import CloseCode
from .protocol.handshake import Headers, Request, Response

__all__ = [
    "ClientConnection",
    "CloseCode",
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "DeflateSettings",
    "Headers",
    "InvalidHandshake",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "PayloadTooBig",
    "ProtocolError",
    "Request",
    "Response",
    "Server",
    "ServerConnection",
    "ServerThread",
    "WsharborError",
    "__version__",
    "broadcast",
    "connect",
    "run",
    "serve",
    "serve_in_thread",
    "unix_connect",
    "unix_serve",
]
