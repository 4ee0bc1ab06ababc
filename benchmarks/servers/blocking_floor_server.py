"""Reference, not a WebSocket server: blocking sockets, a thread per connection, no event loop.

For the small-message echo workloads only. Like ``floor_server`` it answers any request
with a ``Sec-WebSocket-Key`` with a 101, then unmasks and echoes each frame, checking
nothing; but it has no event loop at all: each connection's thread sits in ``recv()``.
With one message in flight, its round trip is what loopback, the kernel's wake-ups and
the load generator cost on this machine, which no Python server can go below.
``--uvloop`` is accepted and ignored (there is no loop).
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import sys
import threading

from benchmarks.servers._common import ServerArgs, announce, parse_args, raise_nofile_limit
from wsharbor.protocol.frames import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = b"sec-websocket-key:"


def _handshake(conn: socket.socket) -> bytes | None:
    """Answer the upgrade; return the bytes received after it, None if the peer left."""
    buffer = b""
    while (end := buffer.find(b"\r\n\r\n")) == -1:
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    head = buffer[:end]
    start = head.lower().find(_KEY)
    if start == -1:
        return None
    start += len(_KEY)
    stop = head.find(b"\r\n", start)
    key = head[start : len(head) if stop == -1 else stop].strip()
    accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
    conn.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    return buffer[end + 4 :]


def _frame(buffer: bytearray) -> tuple[int, int] | None:
    """Where the payload of the first frame starts and ends; None if incomplete."""
    if len(buffer) < 2:
        return None
    length = buffer[1] & 0x7F
    start = 6  # 2-byte header and the mask key
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,) = struct.unpack_from("!H", buffer, 2)
        start = 8
    elif length == 127:
        raise ValueError("frames over 64 KiB are not supported by this reference server")
    end = start + length
    return (start, end) if len(buffer) >= end else None


def _echo(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rest = _handshake(conn)
        if rest is None:
            return
        buffer = bytearray(rest)
        while True:
            while (frame := _frame(buffer)) is None:
                data = conn.recv(65536)
                if not data:
                    return
                buffer += data
            start, end = frame
            first, length = buffer[0], end - start
            header = (
                bytes((first, length)) if length < 126 else struct.pack("!BBH", first, 126, length)
            )
            conn.sendall(header + apply_mask(buffer[start:end], bytes(buffer[start - 4 : start])))
            del buffer[:end]
            if first & 0x0F == 0x8:
                return


def main(args: ServerArgs) -> int:
    raise_nofile_limit()
    with socket.create_server((args.host, args.port), backlog=1024) as server:
        announce(server.getsockname()[1])
        try:
            while True:
                conn, _ = server.accept()
                threading.Thread(target=_echo, args=(conn,), daemon=True).start()
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "")
    if arguments.compression or arguments.fanout:
        print("a reference server has no --compression or --fanout", file=sys.stderr)
        sys.exit(3)
    sys.exit(main(arguments))
