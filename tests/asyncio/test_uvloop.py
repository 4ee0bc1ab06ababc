"""The asyncio layer under uvloop: uvloop's transports are not asyncio.Transport
subclasses and its clock has millisecond resolution."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

import wsharbor

uvloop = pytest.importorskip("uvloop")


async def echo(websocket: wsharbor.ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(message)


async def exchange() -> tuple[list[object], float, int | None]:
    async with wsharbor.serve(echo, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        received: list[object] = []
        async with wsharbor.connect(f"ws://127.0.0.1:{port}") as client:
            for message in ["hello", b"\x00\x01", "x" * 70_000, b"y" * 300_000]:
                await client.send(message)
                received.append(await client.recv())
            await client.send(["frag", "mented"])
            received.append(await client.recv())
            latency = await asyncio.wait_for(await client.ping(), 10)
        return received, latency, client.close_code


def test_echo_ping_and_close_under_uvloop() -> None:
    received, latency, close_code = uvloop.run(exchange())
    assert received == ["hello", b"\x00\x01", "x" * 70_000, b"y" * 300_000, "fragmented"]
    assert latency > 0  # measured with perf_counter, not uvloop's millisecond clock
    assert close_code == 1000


async def adopt_unusable_sockets() -> tuple[int, list[tuple[int, str]]]:
    """The uvloop server's accept path (``Server._adopt``) given sockets that
    ``connect_accepted_socket()`` refuses: a closed one (OSError) and a UDP
    one (ValueError)."""
    closed: list[wsharbor.Connection] = []

    class Closed(wsharbor.ConnectionObserver):
        def connection_closed(self, connection: wsharbor.Connection) -> None:
            closed.append(connection)

    records: list[tuple[int, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.levelno, record.getMessage()))

    logger = logging.getLogger("test_uvloop.adopt")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    loop = asyncio.get_running_loop()
    async with wsharbor.serve(echo, "127.0.0.1", 0, observer=Closed(), logger=logger) as server:

        def adopt(sock: socket.socket) -> wsharbor.ServerConnection:
            connection = server.create_connection(server)
            server._connections.add(connection)
            server._adopt(loop.connect_accepted_socket(lambda: connection, sock), connection)
            return connection

        gone = socket.socket()
        gone.close()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (gone, udp):
            assert adopt(sock) not in server._connections
        udp.close()
    return len(closed), records


def test_a_socket_uvloop_refuses_is_forgotten() -> None:
    count, records = uvloop.run(adopt_unusable_sockets())
    assert count == 2  # the observer heard of both ends
    failures = [r for r in records if "failed before the opening handshake" in r[1]]
    assert [level for level, _ in failures] == [logging.INFO, logging.ERROR], records
    assert "Bad file descriptor" in failures[0][1]
