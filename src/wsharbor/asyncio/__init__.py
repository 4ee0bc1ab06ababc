"""The asyncio layer: drives the sans-I/O protocol core over asyncio transports."""

from .client import ClientConnection, connect, unix_connect
from .connection import Connection, broadcast, fanout
from .observer import ConnectionObserver
from .runner import ServerThread, run, serve_in_thread
from .server import Server, ServerConnection, serve, unix_serve

__all__ = [
    "ClientConnection",
    "Connection",
    "ConnectionObserver",
    "Server",
    "ServerConnection",
    "ServerThread",
    "broadcast",
    "connect",
    "fanout",
    "run",
    "serve",
    "serve_in_thread",
    "unix_connect",
    "unix_serve",
]
