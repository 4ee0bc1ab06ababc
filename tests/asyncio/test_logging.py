"""Logging as websockets logs (issue 10, item 7).

The same scenario runs against websockets' server and ours; the INFO messages
of the server logger must be the same (the names differ: ``websockets.server``
and ``wsharbor.server``). The ``logger`` option replaces the logger, and a
``LoggerAdapter`` finds the connection in ``kwargs["extra"]["websocket"]``. A
program that configures no logging prints nothing.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import websockets.asyncio.client
import websockets.asyncio.server

import wsharbor

from .conftest import HOST, PYTHON, TIMEOUT, subprocess_env, wait


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def info(self, port: int) -> list[str]:
        return [
            record.getMessage().replace(str(port), "PORT")
            for record in self.records
            if record.levelno == logging.INFO
        ]


def capture(name: str) -> Iterator[Records]:
    logger = logging.getLogger(name)
    records = Records()
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)


@pytest.fixture
def ours() -> Iterator[Records]:
    yield from capture("wsharbor.server")


@pytest.fixture
def theirs() -> Iterator[Records]:
    yield from capture("websockets.server")


async def scenario(library: Any, client_library: Any) -> int:
    """A server answering one health check, refusing one origin, and serving one
    client; the port it listened on."""

    def health(connection: Any, request: Any) -> Any:
        if request.path == "/healthz":
            return connection.respond(200, "OK\n")
        return None

    async def echo(websocket: Any) -> None:
        async for message in websocket:
            await websocket.send(message)

    server = await library.serve(
        echo, HOST, 0, process_request=health, origins=["http://good"], compression=None
    )
    port: int = server.sockets[0].getsockname()[1]
    uri = f"ws://{HOST}:{port}"
    async with client_library.connect(uri, origin="http://good") as websocket:
        await websocket.send("hello")
        assert await wait(websocket.recv()) == "hello"
    await wait(websocket.wait_closed())
    for path, origin in (("/healthz", "http://good"), ("/", "http://evil")):
        with pytest.raises(Exception, match=r"HTTP (200|403)"):
            await client_library.connect(uri + path, origin=origin, open_timeout=TIMEOUT)
    server.close()
    await wait(server.wait_closed())
    return port


async def test_same_info_messages_as_websockets(ours: Records, theirs: Records) -> None:
    their_port = await scenario(websockets.asyncio.server, websockets.asyncio.client)
    our_port = await scenario(wsharbor, wsharbor)
    expected = theirs.info(their_port)
    assert "server listening on 127.0.0.1:PORT" in expected  # the scenario is meaningful
    # The order of "connection closed" and the next connection's lines may
    # differ (each side sees the end of TCP at its own time): compare sorted.
    assert sorted(ours.info(our_port)) == sorted(expected)


async def test_logger_option_and_adapter_extra() -> None:
    seen: list[Any] = []

    class Adapter(logging.LoggerAdapter):  # type: ignore[type-arg]
        def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
            websocket = kwargs.get("extra", {}).get("websocket")
            seen.append((msg, websocket))
            return msg, kwargs

    base = logging.Logger("tests.custom")  # not under wsharbor: only the option routes here
    base.setLevel(logging.INFO)
    base.addHandler(logging.NullHandler())
    async with wsharbor.serve(lambda ws: ws.close(), HOST, 0, logger=Adapter(base, {})) as server:
        port = server.sockets[0].getsockname()[1]
        async with wsharbor.connect(f"ws://{HOST}:{port}") as ws:
            await wait(ws.wait_closed())
        for _ in range(100):
            if any(msg == "connection closed" for msg, _ in seen):
                break
            await asyncio.sleep(0.01)
    messages = [msg for msg, _ in seen]
    assert messages[0] == "server listening on %s"
    assert "connection open" in messages and "connection closed" in messages
    connections = {websocket for msg, websocket in seen if msg.startswith("connection")}
    assert len(connections) == 1
    assert isinstance(connections.pop(), wsharbor.ServerConnection)


def test_no_output_without_logging_configuration() -> None:
    code = textwrap.dedent(
        """
        import asyncio
        import wsharbor

        async def echo(websocket):
            async for message in websocket:
                await websocket.send(message)

        async def main():
            async with wsharbor.serve(echo, "127.0.0.1", 0) as server:
                port = server.sockets[0].getsockname()[1]
                async with wsharbor.connect(f"ws://127.0.0.1:{port}") as ws:
                    await ws.send("hi")
                    assert await ws.recv() == "hi"
                try:
                    await wsharbor.connect(f"ws://127.0.0.1:{port}", origin="x", compression="x")
                except ValueError:
                    pass
            print("done")

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [PYTHON, "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "done\n"
    assert result.stderr == ""
