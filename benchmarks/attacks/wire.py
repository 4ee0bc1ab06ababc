"""Raw WebSocket client pieces for the attacks: requests, frames, and how a connection ended.

Nothing here validates what it sends: an attack needs frames a real client library
refuses to build (unmasked, reserved bits and opcodes, a declared length far larger
than the payload). What the server answers is read with :meth:`RawConnection.ending`,
which names the way a connection ended:

- ``"1002"``, ``"1009"``, ...: a close frame with that code (``"1005"``: without one);
- ``"EOF"``: the server closed the TCP connection without a close frame;
- ``"RST"``: the connection was reset;
- ``"open"``: nothing of the above before the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct

from benchmarks.loadgen import ACCEPT, KEY, MASK, mask_payload

__all__ = [
    "EOF",
    "HOST",
    "MASK",
    "OPEN",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "RST",
    "ZERO_MASK",
    "HandshakeFailed",
    "RawConnection",
    "close_payload",
    "frame",
    "header",
    "http_ending",
    "request",
]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: A legal mask key that leaves the payload as it is: megabytes cost nothing to "mask".
ZERO_MASK = b"\x00\x00\x00\x00"

EOF = "EOF"
RST = "RST"
OPEN = "open"

HOST = "127.0.0.1"


def request(
    port: int,
    *,
    path: str = "/",
    extensions: str | None = None,
    method: str = "GET",
    version: str = "HTTP/1.1",
    headers: list[tuple[str, str]] | None = None,
) -> bytes:
    """A WebSocket upgrade request; ``headers`` replaces the usual ones when given."""
    if headers is None:
        headers = [
            ("Host", f"{HOST}:{port}"),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", KEY.decode()),
            ("Sec-WebSocket-Version", "13"),
        ]
        if extensions:
            headers.append(("Sec-WebSocket-Extensions", extensions))
    lines = [f"{method} {path} {version}", *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def header(
    opcode: int,
    length: int,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = ZERO_MASK,
    form: int | None = None,
) -> bytes:
    """A frame header declaring ``length`` payload bytes (RFC 6455 section 5.2).

    ``rsv`` is the three RSV bits as a number (4 = RSV1, 2 = RSV2, 1 = RSV3);
    ``mask=None`` sends an unmasked frame; ``form`` forces the length encoding
    (7, 16 or 64 bits), minimal otherwise.
    """
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)
    mask_bit = 0x80 if mask is not None else 0
    if form is None:
        form = 7 if length < 126 else 16 if length < 1 << 16 else 64
    if form == 7:
        head = struct.pack("!BB", b0, mask_bit | length)
    elif form == 16:
        head = struct.pack("!BBH", b0, mask_bit | 126, length)
    else:
        head = struct.pack("!BBQ", b0, mask_bit | 127, length)
    return head + (mask or b"")


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    form: int | None = None,
) -> bytes:
    """A complete frame carrying ``payload`` (masked with ``mask`` unless it is None)."""
    body = payload if mask is None or mask == ZERO_MASK else mask_payload(payload, mask)
    return header(opcode, len(payload), fin=fin, rsv=rsv, mask=mask, form=form) + body


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class HandshakeFailed(Exception):
    """The server did not answer the upgrade with 101; ``status`` is what it answered."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _status(line: bytes) -> str:
    parts = line.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return parts[1].decode()
    return "garbage"


async def http_ending(reader: asyncio.StreamReader, timeout: float) -> tuple[str, str]:
    """Read an HTTP response and what follows: ``(status, then)``.

    ``status`` is the status code (``"none"`` if the connection ended first, ``"open"``
    if nothing came before the deadline); ``then`` is how the connection ended
    after it: ``EOF``, ``RST`` or ``open``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    status = "none"
    try:
        async with asyncio.timeout_at(deadline):
            head = await reader.readuntil(b"\r\n\r\n")
            status = _status(head.split(b"\r\n", 1)[0])
            if status == "101":  # accepted: the connection stays open by design
                return status, OPEN
            while await reader.read(65536):
                pass
        return status, EOF
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            status = _status(exc.partial.split(b"\r\n", 1)[0])
        return status, EOF
    except asyncio.LimitOverrunError:
        return "garbage", OPEN
    except (ConnectionResetError, BrokenPipeError):
        return status, RST
    except TimeoutError:
        return ("open" if status == "none" else status), OPEN


class RawConnection:
    """A TCP (or TLS) connection to the server, upgraded to WebSocket by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.response = b""
        self.extensions = ""

    @classmethod
    async def connect(
        cls, port: int, *, ssl_context: ssl.SSLContext | None = None, timeout: float = 5.0
    ) -> RawConnection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port, ssl=ssl_context, limit=1 << 20), timeout
        )
        return cls(reader, writer)

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        extensions: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 5.0,
    ) -> RawConnection:
        """Connect and upgrade; raise :exc:`HandshakeFailed` if the answer isn't 101."""
        conn = await cls.connect(port, ssl_context=ssl_context, timeout=timeout)
        try:
            conn.writer.write(request(port, extensions=extensions))
            try:
                head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), timeout)
            except asyncio.IncompleteReadError as exc:
                raise HandshakeFailed(EOF) from exc
            except TimeoutError as exc:
                raise HandshakeFailed("no answer") from exc
            if not head.startswith(b"HTTP/1.1 101 ") or ACCEPT not in head:
                raise HandshakeFailed(_status(head.split(b"\r\n", 1)[0]))
        except BaseException:
            conn.abort()
            raise
        conn.response = head
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-extensions":
                conn.extensions = value.strip().decode("latin-1")
        return conn

    @property
    def deflate(self) -> bool:
        """Whether the server accepted permessage-deflate."""
        return "permessage-deflate" in self.extensions

    async def send(self, data: bytes, timeout: float) -> bool:
        """Write ``data``; False if the server reset or closed, or it didn't drain in time."""
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout)
        except (ConnectionError, TimeoutError, RuntimeError):
            return False
        return True

    async def read_frame(self, skip_over: int = 1 << 20) -> tuple[int, int, bytes]:
        """The next frame: ``(first byte, opcode, payload)``; large payloads are skipped."""
        reader = self.reader
        b0, b1 = await reader.readexactly(2)
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        if b1 & 0x80:
            await reader.readexactly(4)
        if length > skip_over:
            while length:
                chunk = await reader.read(min(length, 1 << 20))
                if not chunk:
                    raise asyncio.IncompleteReadError(b"", length)
                length -= len(chunk)
            return b0, b0 & 0x0F, b""
        return b0, b0 & 0x0F, await reader.readexactly(length)

    async def ending(self, timeout: float) -> str:
        """Read (and drop) frames until the server's close frame, EOF, reset or deadline."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    _, opcode, payload = await self.read_frame()
                    if opcode == OP_CLOSE:
                        if len(payload) >= 2:
                            return str(struct.unpack("!H", payload[:2])[0])
                        return "1005"
        except asyncio.IncompleteReadError:
            return EOF
        except TimeoutError:  # before OSError: it is one
            return OPEN
        except OSError:  # ConnectionResetError, BrokenPipeError, ssl.SSLError
            return RST

    async def closed_by_server(self, timeout: float) -> str:
        """After a close frame: how TCP ended (``EOF``, ``RST`` or ``open``)."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except (ConnectionResetError, BrokenPipeError):
            return RST
        except TimeoutError:
            return OPEN
        return EOF

    def abort(self) -> None:
        """Close at once (RST when the buffers aren't empty)."""
        transport = self.writer.transport
        with contextlib.suppress(Exception):
            transport.abort()

    async def close(self, timeout: float = 2.0) -> None:
        """Half-close our side (FIN), then wait for the server's EOF; abort after ``timeout``."""
        with contextlib.suppress(Exception):
            if self.writer.can_write_eof():
                self.writer.write_eof()
        with contextlib.suppress(Exception):
            await self.closed_by_server(timeout)
        self.abort()
