"""The asyncio layer under uvloop: uvloop's transports are not asyncio.Transport
subclasses and its clock has millisecond resolution."""

from __future__ import annotations

import asyncio

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
