"""wsharbor: a WebSocket library and application server built for production.

The public API is re-exported here::

    import wsharbor

    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    wsharbor.run(echo, "127.0.0.1", 8765)

The asyncio layer is imported lazily, on first use of one of its names, so that
``import wsharbor.protocol`` (the sans-I/O core) doesn't import asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .exceptions import (
    BrokerUnavailable,
    ConfigError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidBrokerURL,
    InvalidHandshake,
    InvalidState,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
    ProtocolError,
    WsharborError,
)
from .version import __version__

if TYPE_CHECKING:
    from .asyncio.client import ClientConnection, connect, unix_connect
    from .asyncio.connection import Connection, broadcast, fanout
    from .asyncio.observer import ConnectionObserver
    from .asyncio.runner import ServerThread, run, serve_in_thread
    from .asyncio.server import Server, ServerConnection, serve, unix_serve
    from .protocol.datastructures import Headers
    from .protocol.deflate import DeflateSettings
    from .protocol.frames import CloseCode
    from .protocol.http11 import Request, Response
    from .pubsub.hub import Hub

_LAZY = {
    "ClientConnection": ".asyncio.client",
    "connect": ".asyncio.client",
    "unix_connect": ".asyncio.client",
    "Connection": ".asyncio.connection",
    "broadcast": ".asyncio.connection",
    "ConnectionObserver": ".asyncio.observer",
    "fanout": ".asyncio.connection",
    "ServerThread": ".asyncio.runner",
    "run": ".asyncio.runner",
    "serve_in_thread": ".asyncio.runner",
    "Server": ".asyncio.server",
    "ServerConnection": ".asyncio.server",
    "serve": ".asyncio.server",
    "unix_serve": ".asyncio.server",
    "DeflateSettings": ".protocol.deflate",
    "CloseCode": ".protocol.frames",
    "Headers": ".protocol.datastructures",
    "Request": ".protocol.http11",
    "Response": ".protocol.http11",
    "Hub": ".pubsub.hub",
}


def __getattr__(name: str) -> Any:
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'wsharbor' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BrokerUnavailable",
    "ClientConnection",
    "CloseCode",
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionObserver",
    "DeflateSettings",
    "Headers",
    "Hub",
    "InvalidBrokerURL",
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
    "fanout",
    "run",
    "serve",
    "serve_in_thread",
    "unix_connect",
    "unix_serve",
]
