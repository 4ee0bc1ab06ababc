"""Small proxies for the client tests, run as a separate process:

    python tests/asyncio/proxy_servers.py socks5|http

prints the port it listens on, then one line per tunnel it opens
(``socks5 host:port`` or ``CONNECT host:port``), and serves until stdin closes.
The SOCKS5 server speaks RFC 1928 (no authentication, CONNECT, IPv4 or domain
names); the HTTP one answers CONNECT in HTTP/1.0, as many proxies do.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int
) -> None:
    up_reader, up_writer = await asyncio.open_connection(host, port)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def socks5(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    version, count = await reader.readexactly(2)
    methods = await reader.readexactly(count)
    if version != 5 or 0 not in methods:
        writer.write(b"\x05\xff")
        writer.close()
        return
    writer.write(b"\x05\x00")  # no authentication
    _, command, _, kind = await reader.readexactly(4)
    if kind == 1:
        host = socket.inet_ntoa(await reader.readexactly(4))
    elif kind == 3:
        host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
    else:
        writer.write(b"\x05\x08\x00\x01" + bytes(6))  # address type not supported
        writer.close()
        return
    (port,) = struct.unpack("!H", await reader.readexactly(2))
    if command != 1:
        writer.write(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
        writer.close()
        return
    print(f"socks5 {host}:{port}", flush=True)
    writer.write(b"\x05\x00\x00\x01" + socket.inet_aton("127.0.0.1") + b"\x00\x00")
    await tunnel(reader, writer, host, port)


async def http_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
    if method != "CONNECT":
        writer.write(b"HTTP/1.0 405 Method Not Allowed\r\n\r\n")
        writer.close()
        return
    print(f"CONNECT {target}", flush=True)
    host, _, port = target.rpartition(":")
    writer.write(b"HTTP/1.0 200 Connection established\r\n\r\n")
    await tunnel(reader, writer, host, int(port))


async def main(kind: str) -> None:
    handler = socks5 if kind == "socks5" else http_connect
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until stdin closes
    server.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
