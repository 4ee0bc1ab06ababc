"""wsharbor: a WebSocket library and application server built for production.

The public API is re-exported here::

    import wsharbor

    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    wsharbor.run(echo, "127.0.0.1", 8765)

The asyncio layer is imported lazily, on first use of one of its names, so that
``import wsharbor.protocol`` (the sans-I/O core) doesn't import asyncio.

Every name ``websockets`` exports at its top level is here too (but the router's
``route``, ``unix_route``, ``Router`` and the sans-I/O ``ClientProtocol``,
``ServerProtocol``, ``Protocol``: see ``docs/coming-from-websockets.md``), so that
``import websockets`` becomes ``import wsharbor as websockets`` or a rename.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .exceptions import (
    BrokerUnavailable,
    ConcurrencyError,
    ConfigError,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    DuplicateParameter,
    HeaderLineTooLong,
    HeadersTooLarge,
    InvalidBrokerURL,
    InvalidHandshake,
    InvalidHeader,
    InvalidHeaderFormat,
    InvalidHeaderValue,
    InvalidHTTPVersion,
    InvalidMessage,
    InvalidMethod,
    InvalidOrigin,
    InvalidParameterName,
    InvalidParameterValue,
    InvalidProtocol,
    InvalidProxy,
    InvalidProxyMessage,
    InvalidProxyStatus,
    InvalidState,
    InvalidStatus,
    InvalidUpgrade,
    InvalidURI,
    InvalidVersion,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    ProxyError,
    RequestLineTooLong,
    SecurityError,
    StatusLineTooLong,
    TooManyFragments,
    TooManyHeaders,
    WebSocketException,
    WriteBufferFull,
    WsharborError,
)
from .version import __version__

if TYPE_CHECKING:
    from .asyncio.client import ClientConnection, connect, unix_connect
    from .asyncio.connection import Connection, broadcast, fanout
    from .asyncio.observer import ConnectionObserver
    from .asyncio.runner import ServerThread, run, serve_in_thread
    from .asyncio.server import Server, ServerConnection, basic_auth, serve, unix_serve
    from .protocol.connection import Side, State
    from .protocol.datastructures import Headers, HeadersLike, MultipleValuesError
    from .protocol.deflate import DeflateSettings
    from .protocol.frames import Close, CloseCode, Frame, Opcode
    from .protocol.http11 import Request, Response
    from .pubsub.hub import Hub
    from .typing import (
        Data,
        ExtensionName,
        ExtensionParameter,
        LoggerLike,
        Origin,
        StatusLike,
        Subprotocol,
    )

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
    "basic_auth": ".asyncio.server",
    "serve": ".asyncio.server",
    "unix_serve": ".asyncio.server",
    "Side": ".protocol.connection",
    "State": ".protocol.connection",
    "DeflateSettings": ".protocol.deflate",
    "Close": ".protocol.frames",
    "CloseCode": ".protocol.frames",
    "Frame": ".protocol.frames",
    "Opcode": ".protocol.frames",
    "Headers": ".protocol.datastructures",
    "HeadersLike": ".protocol.datastructures",
    "MultipleValuesError": ".protocol.datastructures",
    "Request": ".protocol.http11",
    "Response": ".protocol.http11",
    "Hub": ".pubsub.hub",
    "Data": ".typing",
    "ExtensionName": ".typing",
    "ExtensionParameter": ".typing",
    "LoggerLike": ".typing",
    "Origin": ".typing",
    "StatusLike": ".typing",
    "Subprotocol": ".typing",
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
    "Close",
    "CloseCode",
    "ConcurrencyError",
    "ConfigError",
    "Connection",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ConnectionObserver",
    "Data",
    "DeflateSettings",
    "DuplicateParameter",
    "ExtensionName",
    "ExtensionParameter",
    "Frame",
    "HeaderLineTooLong",
    "Headers",
    "HeadersLike",
    "HeadersTooLarge",
    "Hub",
    "InvalidBrokerURL",
    "InvalidHTTPVersion",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidHeaderFormat",
    "InvalidHeaderValue",
    "InvalidMessage",
    "InvalidMethod",
    "InvalidOrigin",
    "InvalidParameterName",
    "InvalidParameterValue",
    "InvalidProtocol",
    "InvalidProxy",
    "InvalidProxyMessage",
    "InvalidProxyStatus",
    "InvalidState",
    "InvalidStatus",
    "InvalidURI",
    "InvalidUpgrade",
    "InvalidVersion",
    "LoggerLike",
    "MultipleValuesError",
    "NegotiationError",
    "Opcode",
    "Origin",
    "PayloadTooBig",
    "ProtocolError",
    "ProxyError",
    "Request",
    "RequestLineTooLong",
    "Response",
    "SecurityError",
    "Server",
    "ServerConnection",
    "ServerThread",
    "Side",
    "State",
    "StatusLike",
    "StatusLineTooLong",
    "Subprotocol",
    "TooManyFragments",
    "TooManyHeaders",
    "WebSocketException",
    "WriteBufferFull",
    "WsharborError",
    "__version__",
    "basic_auth",
    "broadcast",
    "connect",
    "fanout",
    "run",
    "serve",
    "serve_in_thread",
    "unix_connect",
    "unix_serve",
]
