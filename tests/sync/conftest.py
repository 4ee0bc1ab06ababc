"""Shared helpers for the tests of the threaded API (:mod:`wsharbor.sync`).

Every server runs on 127.0.0.1, port 0, in a background thread; every wait is
bounded by :data:`TIMEOUT` (something expected soon) or by a short explicit
deadline for something that should *not* happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme

from wsharbor.protocol.frames import Frame, FrameParser, Opcode, serialize_frame
from wsharbor.protocol.handshake import ServerHandshake
from wsharbor.protocol.http11 import RequestParser
from wsharbor.sync.server import Server, ServerConnection, serve

#: Deadline for anything that should happen promptly.
TIMEOUT = 5.0

HOST = "127.0.0.1"


def echo(websocket: ServerConnection) -> None:
    for message in websocket:
        websocket.send(message)


@contextlib.contextmanager
def sync_server(
    handler: Callable[[ServerConnection], None] = echo, **options: Any
) -> Iterator[Server]:
    """Our threaded server, serving in a background thread; shut down on exit."""
    options.setdefault("ping_interval", None)
    if "sock" not in options and "unix" not in options:
        options.setdefault("host", HOST)
        options.setdefault("port", 0)
    server = serve(handler, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        shutdown = threading.Thread(target=server.shutdown, daemon=True)
        shutdown.start()
        shutdown.join(TIMEOUT)
        thread.join(TIMEOUT)
        assert not shutdown.is_alive(), "server.shutdown() did not return"
        assert not thread.is_alive(), "serve_forever() did not return"


def uri_of(server: Server, scheme: str = "ws", path: str = "/") -> str:
    host, port = server.socket.getsockname()[:2]
    return f"{scheme}://{host}:{port}{path}"


class LoopThread:
    """An event loop in a background thread, to run asyncio servers and clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    loop_thread = LoopThread()
    try:
        yield loop_thread
    finally:
        loop_thread.close()


@contextlib.contextmanager
def websockets_server(
    loop_thread: LoopThread, handler: Callable[..., Any], **options: Any
) -> Iterator[str]:
    """websockets' asyncio server in ``loop_thread``; yields its ws:// URI."""
    import websockets.asyncio.server

    async def start() -> Any:
        return await websockets.asyncio.server.serve(handler, HOST, 0, **options)

    server = loop_thread.run(start())
    port = server.sockets[0].getsockname()[1]
    scheme = "wss" if options.get("ssl") is not None else "ws"
    try:
        yield f"{scheme}://{HOST}:{port}/"
    finally:

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        loop_thread.run(stop())


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="session")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


class LogWatcher(logging.Handler):
    """Sets an event when a record whose message contains ``text`` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@contextlib.contextmanager
def watch_log(name: str, text: str) -> Iterator[threading.Event]:
    """An event set when logger ``name`` logs a message containing ``text``."""
    logger = logging.getLogger(name)
    watcher = LogWatcher(text)
    level = logger.level
    logger.addHandler(watcher)
    logger.setLevel(logging.DEBUG)
    try:
        yield watcher.seen
    finally:
        logger.removeHandler(watcher)
        logger.setLevel(level)


def silent_listener() -> socket.socket:
    """A listening socket that never accepts: the kernel completes TCP connections
    (backlog), and nobody ever answers."""
    sock = socket.create_server((HOST, 0))
    return sock


def raw_connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    return sock


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``target`` in a daemon thread; the list receives its result or exception."""
    outcome: list[Any] = []

    def main() -> None:
        try:
            outcome.append(target())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    return thread, outcome


class RawServer:
    """Accepts one connection in a thread and completes the opening handshake (no
    extensions), then does nothing by itself: the test reads and writes raw frames
    on :attr:`conn`. It never answers pings."""

    def __init__(self) -> None:
        self.listener = socket.create_server((HOST, 0))
        port = self.listener.getsockname()[1]
        self.uri = f"ws://{HOST}:{port}/"
        self.conn: socket.socket | None = None
        self.accepted = threading.Event()
        self._parser = FrameParser(mask=True)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(TIMEOUT)
        parser = RequestParser()
        request = None
        while request is None:
            request = parser.feed(conn.recv(4096))
        conn.sendall(ServerHandshake().accept(request).response.serialize())
        self.conn = conn
        self.accepted.set()

    def send_frame(self, opcode: Opcode, data: bytes, fin: bool = True) -> None:
        assert self.accepted.wait(TIMEOUT) and self.conn is not None
        self.conn.sendall(serialize_frame(Frame(opcode, data, fin), mask=False))

    def recv_frame(self) -> Frame:
        assert self.accepted.wait(TIMEOUT) and self.conn is not None
        while True:
            frame = self._parser.parse()
            if frame is not None:
                return frame
            data = self.conn.recv(65536)
            assert data, "connection closed"
            self._parser.feed(data)

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._thread.join(TIMEOUT)
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
