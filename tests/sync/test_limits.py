"""The threaded API's limits and options (issue 10): ``max_fragments``,
``read_limit``, ``max_size`` checked from a frame's header, ``origins`` patterns,
and the connection options it shares with the asyncio API.

Real sockets on 127.0.0.1; raw clients put exact frames on the wire.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import os
import queue
import re
import socket
import struct
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
import websockets.exceptions
import websockets.sync.client

import wsharbor
import wsharbor.asyncio.client
import wsharbor.asyncio.server
from wsharbor import defaults
from wsharbor.protocol.frames import Close, FrameParser, Opcode
from wsharbor.sync.client import connect
from wsharbor.sync.server import ServerConnection, serve

from .conftest import HOST, TIMEOUT, sync_server, uri_of

pytestmark = pytest.mark.timeout(60)


class RawClient:
    """A blocking client that completes the opening handshake by hand (offering
    permessage-deflate if asked) and then sends whatever bytes a test wants."""

    def __init__(self, port: int, *, deflate: bool = False, sndbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if sndbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((HOST, port))
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET / HTTP/1.1",
            f"Host: {HOST}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(4096)
            assert data, "EOF during the opening handshake"
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert (b"permessage-deflate" in head) is deflate
        self.parser = FrameParser(mask=False)
        self.parser.feed(rest)

    def send_header(
        self, length: int, *, opcode: Opcode = Opcode.BINARY, rsv1: bool = False
    ) -> None:
        """A masked frame header announcing ``length`` payload bytes (64-bit length)."""
        first = 0x80 | (0x40 if rsv1 else 0) | opcode
        self.sock.sendall(bytes([first, 0x80 | 127]) + struct.pack("!Q", length) + b"\0" * 4)

    def recv_close(self) -> Close:
        while True:
            frame = self.parser.parse()
            if frame is not None:
                if frame.opcode is Opcode.CLOSE:
                    return Close.parse(frame.data)
                continue
            data = self.sock.recv(65536)
            assert data, "EOF before a close frame"
            self.parser.feed(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def handler_outcome() -> Iterator[tuple[Any, queue.Queue[Any]]]:
    outcome: queue.Queue[Any] = queue.Queue()

    def handler(websocket: ServerConnection) -> None:
        try:
            websocket.recv()
        except Exception as exc:
            outcome.put(exc)

    yield handler, outcome


# max_size, checked from the header.

MAX_SIZES = [defaults.MAX_SIZE, (None, 1024), (2**20, 1024), 1024]


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
@pytest.mark.parametrize("max_size", MAX_SIZES, ids=str)
def test_frame_announcing_2_62_bytes_gets_1009_from_its_header(
    max_size: Any, deflate: bool, handler_outcome: tuple[Any, queue.Queue[Any]]
) -> None:
    handler, outcome = handler_outcome
    with sync_server(handler, max_size=max_size) as server:
        client = RawClient(server.socket.getsockname()[1], deflate=deflate)
        try:
            # The header only: no payload follows. The answer can't wait for it.
            client.send_header(2**62, rsv1=deflate)
            close = client.recv_close()
        finally:
            client.close()
        assert close.code == 1009
        assert "exceeds limit" in close.reason
        exc = outcome.get(timeout=TIMEOUT)
        assert isinstance(exc, wsharbor.ConnectionClosedError)
        assert isinstance(exc.__cause__, wsharbor.PayloadTooBig)


@pytest.mark.parametrize("max_size", [(None, 1024), defaults.MAX_SIZE], ids=str)
def test_oversize_frame_payload_is_not_buffered(
    max_size: Any, handler_outcome: tuple[Any, queue.Queue[Any]]
) -> None:
    """The client keeps sending the payload it announced (8 MiB): the server
    answers 1009 and discards what follows; its memory doesn't grow with it."""
    handler, outcome = handler_outcome
    chunk = b"\0" * 2**16
    with sync_server(handler, max_size=max_size, compression=None) as server:
        client = RawClient(server.socket.getsockname()[1])
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            client.send_header(2**62)
            sent = 0
            # After failing, the server discards what follows until the client
            # closes (RFC 6455 section 7.1.7), or it resets the connection.
            with contextlib.suppress(OSError):
                while sent < 2**23:
                    client.sock.sendall(chunk)
                    sent += len(chunk)
                client.sock.shutdown(socket.SHUT_WR)
            exc = outcome.get(timeout=TIMEOUT)
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
            client.close()
        assert isinstance(exc, wsharbor.ConnectionClosedError)
        assert exc.sent is not None and exc.sent.code == 1009
        assert isinstance(exc.__cause__, wsharbor.PayloadTooBig)
        # A read or two (read_limit each), not what was sent.
        assert peak < 2**20, f"peak {peak} bytes after sending {sent}"


# max_fragments.


def test_server_max_fragments_closes_with_1009(
    handler_outcome: tuple[Any, queue.Queue[Any]],
) -> None:
    handler, outcome = handler_outcome
    with (
        sync_server(handler, max_fragments=3) as server,
        websockets.sync.client.connect(uri_of(server)) as websocket,
    ):
        websocket.send(["a", "b", "c", "d"])
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    exc = outcome.get(timeout=TIMEOUT)
    assert isinstance(exc.__cause__, wsharbor.TooManyFragments)


def test_client_max_fragments_closes_with_1009() -> None:
    def handler(websocket: ServerConnection) -> None:
        websocket.send(["a", "b", "c"])
        websocket.send(["a", "b", "c", "d"])
        websocket.recv()

    with sync_server(handler) as server, connect(uri_of(server), max_fragments=3) as websocket:
        assert websocket.recv(timeout=TIMEOUT) == "abc"
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT)
    assert info.value.sent is not None and info.value.sent.code == 1009
    assert isinstance(info.value.__cause__, wsharbor.TooManyFragments)


def test_max_fragments_none_and_bad_values() -> None:
    def handler(websocket: ServerConnection) -> None:
        websocket.send(["x"] * 5000)  # over the default of 4,096
        websocket.recv()

    with sync_server(handler) as server:
        with connect(uri_of(server), max_fragments=None) as websocket:
            assert websocket.recv(timeout=TIMEOUT) == "x" * 5000
        with pytest.raises(ValueError, match="max_fragments"):
            connect(uri_of(server), max_fragments=0)
    with pytest.raises(ValueError, match="max_fragments"):
        serve(handler, HOST, 0, max_fragments=-1)
    with pytest.raises(ValueError, match="read_limit"):
        serve(handler, HOST, 0, read_limit=0)


# read_limit.


def test_read_limit_pauses_reading_on_bytes() -> None:
    """With ``max_queue=None`` (no limit in frames), a handler that doesn't
    read holds at most ``read_limit`` bytes plus one read, then the client is
    slowed down by TCP; released, everything arrives in order."""
    read_limit, size, count = 8192, 1000, 2000  # 2 MB sent
    connections: queue.Queue[ServerConnection] = queue.Queue()
    release = threading.Event()
    received: queue.Queue[Any] = queue.Queue()

    def handler(websocket: ServerConnection) -> None:
        connections.put(websocket)
        release.wait(TIMEOUT * 4)
        received.put([websocket.recv(timeout=TIMEOUT) for _ in range(count)])

    # Small kernel buffers on both sides: TCP pushes back after kilobytes.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind((HOST, 0))
    listener.listen()
    client_sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    messages = [i.to_bytes(4, "big") * (size // 4) for i in range(count)]
    with sync_server(
        handler, sock=listener, max_queue=None, read_limit=read_limit, compression=None
    ) as server:
        client_sock.connect(server.socket.getsockname())
        websocket = connect(uri_of(server), sock=client_sock, compression=None)
        try:
            server_ws = connections.get(timeout=TIMEOUT)
            # Send from another thread: send() blocks once TCP pushes back.
            sent = threading.Event()
            sender = threading.Thread(
                target=lambda: ([websocket.send(m) for m in messages], sent.set()), daemon=True
            )
            sender.start()
            # Only to decide when to look: the bound below holds at all times.
            assert not sent.wait(0.5), "the client was never slowed down"
            assembler = server_ws._messages
            queued = assembler.size
            assert assembler.paused
            assert 0 < queued <= read_limit + read_limit
        finally:
            release.set()
        assert received.get(timeout=TIMEOUT * 4) == messages
        assert sent.wait(TIMEOUT)
        sender.join(TIMEOUT)
        websocket.close()


# origins with patterns, as the asyncio server.


def test_origins_with_patterns() -> None:
    origins = [re.compile(r"https://[a-z]+\.example\.com"), "https://other.org", None]
    with sync_server(origins=origins) as server:
        for origin in ("https://app.example.com", "https://other.org", None):
            with connect(uri_of(server), origin=origin) as websocket:  # type: ignore[arg-type]
                websocket.send("ok")
                assert websocket.recv(timeout=TIMEOUT) == "ok"
        for origin in ("https://app.example.com.evil.net", "https://x.other.org"):
            with pytest.raises(wsharbor.InvalidStatus) as info:
                connect(uri_of(server), origin=origin)  # type: ignore[arg-type]
            assert info.value.response.status_code == 403


# The options the threaded API shares with the asyncio API.

#: Connection options of the asyncio API that have no meaning with threads.
ASYNCIO_ONLY = {
    # A blocking sendall() has no user-space write buffer: the kernel's is the limit.
    "write_limit",
    # Hooks called from the event loop with asyncio connections.
    "observer",
    # The server-wide read budget pauses reading on event-loop transports; a
    # threaded connection's reader blocks on its own queue (max_queue, read_limit).
    "max_buffered",
    # Who does TLS on the event loop (wsharbor's TLSTransport or the loop's own);
    # the sync API wraps its sockets with the ssl module.
    "tls_transport",
    # wsharbor's earlier reconnection schedule; reconnect_delays is websockets'.
    "backoff_min",
    "backoff_max",
    "backoff_factor",
}

#: The per-connection options, from wsharbor.defaults.
CONNECTION_OPTIONS = [
    "max_size",
    "max_fragments",
    "max_queue",
    "read_limit",
    "ping_interval",
    "ping_timeout",
    "open_timeout",
    "close_timeout",
]


@pytest.mark.parametrize(
    ("asyncio_api", "sync_api"),
    [
        (wsharbor.asyncio.server.serve.__init__, serve),
        (wsharbor.asyncio.client.connect.__init__, wsharbor.sync.client.reconnect.__init__),
    ],
    ids=["serve", "connect"],
)
def test_sync_api_takes_the_asyncio_connection_options(asyncio_api: Any, sync_api: Any) -> None:
    asyncio_params = inspect.signature(asyncio_api).parameters
    sync_params = inspect.signature(sync_api).parameters
    for name in CONNECTION_OPTIONS:
        assert name in sync_params, name
        assert sync_params[name].default == asyncio_params[name].default, name
        assert sync_params[name].default == getattr(defaults, name.upper()), name
    # connect() takes them too (reconnect's other options go through **kwargs).
    connect_params = inspect.signature(connect).parameters
    for name in CONNECTION_OPTIONS:
        assert connect_params[name].default == sync_params[name].default, name
    missing = {
        name
        for name, param in asyncio_params.items()
        if param.kind is param.KEYWORD_ONLY and name not in sync_params
    }
    # What the asyncio API forwards to asyncio's create_server/create_connection
    # has socket-module counterparts through **kwargs; the rest is listed.
    loop_options = {
        "start_serving", "backlog", "family", "flags", "reuse_address", "reuse_port",
        "ssl_handshake_timeout", "ssl_shutdown_timeout", "host", "port", "proto",
        "local_addr", "happy_eyeballs_delay", "interleave", "unix", "path",
    }  # fmt: skip
    assert missing - loop_options == ASYNCIO_ONLY & set(asyncio_params)
