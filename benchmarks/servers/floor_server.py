"""Reference, not a WebSocket server: the least work an asyncio echo server can do.

It exists to show what the event loop itself allows on this machine. It answers any
request containing a ``Sec-WebSocket-Key`` with a 101, then for each client frame:
unmask (wsharbor's C masking routine), echo it unmasked, and on a close frame echo it
and close the TCP connection. One ``data_received`` call, at most one ``write`` per read,
no coroutine, no task, no future, no timer, no validation of anything (UTF-8,
reserved bits, lengths against a limit, control frame rules): a real server does all
of that and cannot be faster than this on the same event loop.

Its figures in the benchmark tables are an upper bound for the ratio any server on the
same loop can reach against websockets in the same run. It is run on the small-message,
handshake, memory and fan-out workloads only: it accumulates large messages in one
bytearray, which says nothing about a floor for them.

With ``--fanout``, a data frame is not echoed: it is unmasked once, and the same
unmasked frame is handed to ``transport.write()`` of every upgraded connection, one call
each, in a plain loop. That is the least an asyncio server can do to deliver a message to
N connections (one ``send()`` system call per connection, as no system call writes to
several TCP sockets). Its time per delivery bounds every server's fan-out on the loop,
compressed or not: a server that compresses once has the same write per connection
left. It doesn't negotiate permessage-deflate, so it is not run on ``fanout-deflate``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import sys

from benchmarks.servers._common import ServerArgs, announce, parse_args, run, wait_for_signal
from wsharbor.protocol.frames import apply_mask

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = b"sec-websocket-key:"


def _header(first: int, length: int) -> bytes:
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


class FloorEcho(asyncio.Protocol):
    #: With ``--fanout``: the transports of the upgraded connections, else None.
    fanout: set[asyncio.Transport] | None = None

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.fanout is not None and self.transport is not None:
            self.fanout.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end == -1:
                return
            head = bytes(buffer[:end])
            start = head.lower().find(_KEY)  # lower() keeps every offset
            if start == -1:
                transport.close()
                return
            start += len(_KEY)
            stop = head.find(b"\r\n", start)
            key = head[start : len(head) if stop == -1 else stop].strip()
            accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
            transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.upgraded = True
            if self.fanout is not None:
                self.fanout.add(transport)
            del buffer[: end + 4]
        out: list[bytes] = []
        offset = 0
        size = len(buffer)
        while size - offset >= 6:
            first = buffer[offset]
            length = buffer[offset + 1] & 0x7F
            start = offset + 6
            if length == 126:
                start += 2
                if size < start:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset + 2)
            elif length == 127:
                start += 8
                if size < start:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset + 2)
            end = start + length
            if size < end:
                break
            payload = apply_mask(buffer[start:end], bytes(buffer[start - 4 : start]))
            offset = end
            if self.fanout is not None and first & 0x0F in (0x1, 0x2):
                frame = _header(first, length) + payload
                for receiver in self.fanout:
                    receiver.write(frame)
                continue
            out.append(_header(first, length))
            out.append(payload)
            if first & 0x0F == 0x8:  # close: echo it and close the TCP connection
                transport.writelines(out)
                transport.close()
                buffer.clear()
                return
        if offset:
            del buffer[:offset]
        if out:
            transport.writelines(out)


async def main(args: ServerArgs) -> None:
    if args.fanout:
        FloorEcho.fanout = set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(FloorEcho, args.host, args.port)
    async with server:
        announce(server.sockets[0].getsockname()[1])
        await wait_for_signal()


if __name__ == "__main__":
    arguments = parse_args(__doc__ or "")
    if arguments.compression:
        print("a reference server has no --compression", file=sys.stderr)
        sys.exit(3)
    sys.exit(run(main, arguments))
