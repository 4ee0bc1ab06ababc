"""Shared helpers for the asyncio server and connection tests.

:class:`RawClient` is a WebSocket client built from asyncio streams and the
sans-I/O pieces of :mod:`wsharbor.protocol`: it sends whatever bytes a test
wants (unmasked frames, invalid UTF-8, nothing at all) and reads frames one by
one, so a test sees exactly what the server put on the wire.

Every wait is bounded: :data:`TIMEOUT` is the deadline for anything expected
to happen "soon"; a test that waits on something that should *not* happen
uses a short explicit deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import pytest

import wsharbor
from wsharbor.protocol.datastructures import Headers
from wsharbor.protocol.frames import Close, Frame, FrameParser, Opcode, serialize_frame
from wsharbor.protocol.handshake import ClientHandshake
from wsharbor.protocol.http11 import Response, ResponseParser


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The loops a test runs on: asyncio's, and uvloop's too for the tests
    marked ``uvloop_too`` (a module's ``pytestmark``) when uvloop is installed.

    The server's accept path differs between them (a transport of its own on
    asyncio's selector loop, uvloop's own transport otherwise).
    """
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    if item.get_closest_marker("uvloop_too") is not None:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            factories["uvloop"] = uvloop.new_event_loop
    return factories


#: Deadline for anything that should happen promptly.
TIMEOUT = 5.0

HOST = "127.0.0.1"


def port_of(server: wsharbor.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


def uri_of(server: wsharbor.Server, path: str = "/") -> str:
    return f"ws://{HOST}:{port_of(server)}{path}"


async def wait(aw, timeout: float = TIMEOUT):  # type: ignore[no-untyped-def]
    """``asyncio.wait_for`` with the default deadline."""
    return await asyncio.wait_for(aw, timeout)


def small_buffer_listener(size: int = 4096) -> socket.socket:
    """A listening socket on 127.0.0.1:0 with small kernel buffers.

    Accepted sockets inherit SO_SNDBUF/SO_RCVBUF from the listener on Linux, so
    backpressure shows up after a few kilobytes instead of megabytes.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.bind((HOST, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@dataclass
class HTTPReply:
    status: int
    reason: str
    headers: Headers
    body: bytes
    raw: bytes = field(repr=False)


def parse_http_reply(raw: bytes) -> HTTPReply:
    """Parse a complete HTTP/1.1 response read to EOF; check its Content-Length."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"incomplete HTTP response: {raw!r}"
    lines = head.decode("latin-1").split("\r\n")
    version, status, reason = lines[0].split(" ", 2)
    assert version == "HTTP/1.1", lines[0]
    headers = Headers()
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip()] = value.strip()
    assert "Content-Length" in headers, f"no Content-Length: {raw!r}"
    assert int(headers["Content-Length"]) == len(body), f"body length mismatch: {raw!r}"
    return HTTPReply(int(status), reason, headers, body, raw)


async def http_exchange(
    port: int, request: bytes, *, host: str = HOST, timeout: float = TIMEOUT
) -> HTTPReply:
    """Send raw bytes, read to EOF (a reset fails the test), parse the reply."""
    reader, writer = await wait(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(request)
        raw = await wait(reader.read(), timeout)  # read() returns at EOF
    finally:
        writer.close()
    return parse_http_reply(raw)


def upgrade_request(port: int, path: str = "/", *, method: str = "GET", **headers: str) -> bytes:
    """A valid upgrade request; keyword arguments add or replace headers
    (underscores become dashes; a value of "" removes the header)."""
    handshake = ClientHandshake(host=f"{HOST}:{port}", path=path)
    request_headers = Headers(handshake.request.headers)
    for name, value in headers.items():
        name = name.replace("_", "-")
        if name in request_headers:
            del request_headers[name]
        if value:
            request_headers[name] = value
    lines = [f"{method} {path} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in request_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawClient:
    """A minimal WebSocket client that puts exactly the requested bytes on the wire."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = FrameParser(mask=False)
        self.response: Response | None = None
        #: Answer pings automatically while reading frames.
        self.auto_pong = True
        self.pings_received: list[bytes] = []

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        host: str = HOST,
        rcvbuf: int | None = None,
        sndbuf: int | None = None,
        limit: int = 2**16,
    ) -> RawClient:
        """Open a TCP connection (no handshake yet); optionally shrink kernel buffers."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await wait(loop.sock_connect(sock, (host, port)))
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        return cls(reader, writer)

    @classmethod
    async def connect(
        cls, port: int, path: str = "/", *, extra: bytes = b"", **kwargs: object
    ) -> RawClient:
        """Open a connection and complete the opening handshake (no extensions)."""
        client = await cls.open(port, **kwargs)  # type: ignore[arg-type]
        await client.handshake(path, extra=extra)
        return client

    @property
    def transport(self) -> asyncio.WriteTransport:
        return self.writer.transport  # type: ignore[return-value]

    async def handshake(self, path: str = "/", *, extra: bytes = b"") -> Response:
        port = self.writer.get_extra_info("peername")[1]
        handshake = ClientHandshake(host=f"{HOST}:{port}", path=path)
        self.writer.write(handshake.request.serialize() + extra)
        parser = ResponseParser()
        response = None
        while response is None:
            data = await wait(self.reader.read(65536))
            assert data, "EOF during the opening handshake"
            response = parser.feed(data)
        assert response.status == 101, response
        handshake.process_response(response)
        self.response = response
        if parser.leftover:
            self.parser.feed(parser.leftover)
        return response

    # Sending.

    def send_frame(
        self, opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool = True
    ) -> None:
        self.writer.write(serialize_frame(Frame(opcode, data, fin), mask=mask))

    def send_text(self, text: str | bytes, *, fin: bool = True) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.send_frame(Opcode.TEXT, data, fin=fin)

    def send_binary(self, data: bytes, *, fin: bool = True) -> None:
        self.send_frame(Opcode.BINARY, data, fin=fin)

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        self.send_frame(Opcode.CLOSE, Close(code, reason).serialize())

    # Receiving.

    async def recv_frame(self, timeout: float = TIMEOUT) -> Frame | None:
        """The next frame, or None at EOF. Pings are answered if ``auto_pong``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = self.parser.parse()
            if frame is not None:
                if frame.opcode is Opcode.PING:
                    self.pings_received.append(frame.data)
                    if self.auto_pong:
                        with contextlib.suppress(ConnectionError):
                            self.send_frame(Opcode.PONG, frame.data)
                return frame
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("no frame within the deadline")
            data = await wait(self.reader.read(2**16), left)
            if not data:
                return None
            self.parser.feed(data)

    async def recv_data_frame(self, timeout: float = TIMEOUT) -> Frame:
        """The next data or close frame (pings and pongs skipped)."""
        while True:
            frame = await self.recv_frame(timeout)
            assert frame is not None, "EOF instead of a frame"
            if frame.opcode not in (Opcode.PING, Opcode.PONG):
                return frame

    async def recv_message(self, timeout: float = TIMEOUT) -> str | bytes:
        """The next whole message, reassembled from its frames."""
        first = await self.recv_data_frame(timeout)
        assert first.opcode in (Opcode.TEXT, Opcode.BINARY), first
        chunks = [first.data]
        frame = first
        while not frame.fin:
            frame = await self.recv_data_frame(timeout)
            assert frame.opcode is Opcode.CONT, frame
            chunks.append(frame.data)
        data = b"".join(chunks)
        return data.decode() if first.opcode is Opcode.TEXT else data

    async def expect_close(self, timeout: float = TIMEOUT) -> Close:
        """Read until a close frame arrives; return its code and reason."""
        while True:
            frame = await self.recv_data_frame(timeout)
            if frame.opcode is Opcode.CLOSE:
                return Close.parse(frame.data)

    async def read_to_eof(self, timeout: float = TIMEOUT) -> bytes:
        """Everything left until the server closes TCP (a reset raises)."""
        rest = self.parser.take_buffer()
        return rest + await wait(self.reader.read(), timeout)

    async def close_transport(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await wait(self.writer.wait_closed())


@pytest.fixture
async def raw_clients() -> AsyncIterator[list[RawClient]]:
    """Collects raw clients to close at teardown."""
    clients: list[RawClient] = []
    yield clients
    for client in clients:
        client.writer.transport.abort()


def subprocess_env() -> dict[str, str]:
    """Environment for child Python processes: the source tree importable, unbuffered."""
    env = dict(os.environ)
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env["PYTHONPATH"] = os.path.abspath(src) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable
