"""Graceful shutdown (issue 3, item 5): Server.close(), async with serve(), SIGTERM.

The deployment guide's recipe: stop accepting, answer handshakes in progress
with 503, send 1001 to every open connection, wait (up to close_timeout) for the
closing handshakes and the handlers, then abort and cancel what is left.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

import wsharbor
from wsharbor import ConnectionClosed, ConnectionClosedOK, ServerConnection

from .conftest import (
    HOST,
    PYTHON,
    TIMEOUT,
    RawClient,
    http_exchange,
    parse_http_reply,
    port_of,
    subprocess_env,
    upgrade_request,
    uri_of,
    wait,
)

pytestmark = pytest.mark.timeout(60)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def expect_close_1001(ws: wsharbor.ClientConnection) -> ConnectionClosed:
    with pytest.raises(ConnectionClosedOK) as excinfo:
        await wait(ws.recv())
    assert excinfo.value.code == 1001
    return excinfo.value


async def test_close_stops_accepting_sends_1001_and_waits_for_every_finally() -> None:
    in_finally = asyncio.Queue[str]()
    gate = asyncio.Event()
    finished: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            in_finally.put_nowait(ws.path)
            await gate.wait()  # asynchronous cleanup the server must wait for
            finished.append(ws.path)

    server = await wsharbor.serve(handler, HOST, 0)
    port = port_of(server)
    clients = [await wsharbor.connect(uri_of(server, f"/c{i}")) for i in range(3)]
    for ws in clients:
        await ws.send("hi")
        assert await wait(ws.recv()) == "hi"
    assert len(server.connections) == 3

    server.close()
    closed = asyncio.ensure_future(server.wait_closed())
    for ws in clients:
        await expect_close_1001(ws)
    # Every handler is in its finally, held by the gate: wait_closed() must wait.
    paths = {await wait(in_finally.get()) for _ in clients}
    assert paths == {"/c0", "/c1", "/c2"}
    for ws in clients:
        await wait(ws.wait_closed())  # TCP closed too
    assert not closed.done()
    # No longer accepting.
    with pytest.raises(OSError):
        await wait(asyncio.open_connection(HOST, port))

    gate.set()
    await wait(closed)
    assert sorted(finished) == ["/c0", "/c1", "/c2"]
    assert server.connections == set()


async def test_handler_ignoring_close_is_cancelled_after_close_timeout() -> None:
    outcome: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    finally_ran = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        try:
            await asyncio.Event().wait()  # ignores the close, forever
        except asyncio.CancelledError:
            outcome.set_result("cancelled")
            raise
        finally:
            finally_ran.set()

    server = await wsharbor.serve(handler, HOST, 0, close_timeout=0.3)
    ws = await wsharbor.connect(uri_of(server))
    # A raw client that ignores the close frame too: it gets aborted.
    raw = await RawClient.connect(port_of(server))
    server.close()
    await expect_close_1001(ws)
    assert (await raw.expect_close()).code == 1001
    await wait(server.wait_closed())
    assert finally_ran.is_set()
    assert outcome.result() == "cancelled"
    assert await raw.read_to_eof() == b""  # aborted, never answered
    await raw.close_transport()


async def test_handshake_in_progress_during_close_gets_503() -> None:
    async with wsharbor.serve(lambda ws: ws.wait_closed(), HOST, 0) as server:
        port = port_of(server)
        open_ws = await wsharbor.connect(uri_of(server))
        # Accepted before close(), request not sent yet.
        raw = await RawClient.open(port)
        server.close()
        await expect_close_1001(open_ws)  # the shutdown is under way
        raw.writer.write(upgrade_request(port))
        reply = parse_http_reply(await raw.read_to_eof())
        assert reply.status == 503
        assert reply.headers["Connection"] == "close"
        await raw.close_transport()
        await wait(server.wait_closed())


async def test_async_process_request_in_progress_during_close_gets_503() -> None:
    entered = asyncio.Event()
    gate = asyncio.Event()

    async def slow_check(connection: ServerConnection, request: wsharbor.Request) -> None:
        entered.set()
        await gate.wait()

    server = await wsharbor.serve(lambda ws: ws.wait_closed(), HOST, 0, process_request=slow_check)
    port = port_of(server)
    exchange = asyncio.ensure_future(http_exchange(port, upgrade_request(port)))
    await wait(entered.wait())
    server.close()
    closed = asyncio.ensure_future(server.wait_closed())
    gate.set()
    reply = await wait(exchange)
    assert reply.status == 503
    await wait(closed)


async def test_async_with_exit_is_a_graceful_close() -> None:
    finished: list[str] = []

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            await asyncio.sleep(0)
            finished.append(ws.path)

    async with wsharbor.serve(handler, HOST, 0) as server:
        port = port_of(server)
        a = await wsharbor.connect(uri_of(server, "/a"))
        b = await wsharbor.connect(uri_of(server, "/b"))
        await a.send("x")
        assert await wait(a.recv()) == "x"
    # Exiting the block waited for every handler.
    assert sorted(finished) == ["/a", "/b"]
    await expect_close_1001(a)
    await expect_close_1001(b)
    with pytest.raises(OSError):
        await wait(asyncio.open_connection(HOST, port))


async def test_close_with_custom_code_and_reason() -> None:
    server = await wsharbor.serve(lambda ws: ws.wait_closed(), HOST, 0)
    raw = await RawClient.connect(port_of(server))
    ws = await wsharbor.connect(uri_of(server))
    server.close(code=1012, reason="restart")
    close = await raw.expect_close()
    assert (close.code, close.reason) == (1012, "restart")
    raw.send_close(1012)
    with pytest.raises(ConnectionClosed) as excinfo:
        await wait(ws.recv())
    assert (excinfo.value.code, excinfo.value.reason) == (1012, "restart")
    await wait(server.wait_closed())
    await raw.close_transport()


# SIGTERM during traffic, on the echo example.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def start_echo_example() -> tuple[asyncio.subprocess.Process, int]:
    """Start examples/echo.py on a free port; retry if another process took it."""
    for _ in range(3):
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            PYTHON,
            str(EXAMPLES / "echo.py"),
            "--host",
            HOST,
            "--port",
            str(port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=subprocess_env(),
        )
        assert proc.stderr is not None
        # It logs "listening on ('127.0.0.1', port)" once it accepts connections.
        while True:
            line = await wait(proc.stderr.readline(), 2 * TIMEOUT)
            if not line:
                break  # exited: most likely the port was taken meanwhile
            if re.search(rb"listening on .*%d" % port, line):
                return proc, port
        await wait(proc.wait())
    raise AssertionError("examples/echo.py did not start")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is Unix-only")
async def test_sigterm_during_traffic_closes_every_client_with_1001_and_exits_0() -> None:
    proc, port = await start_echo_example()
    try:
        exchanged = [0] * 5
        busy = [asyncio.Event() for _ in exchanged]

        async def client(index: int) -> tuple[int, str]:
            ws = await wsharbor.connect(f"ws://{HOST}:{port}/")
            try:
                while True:
                    payload = f"{index}:{exchanged[index]}"
                    await ws.send(payload)
                    assert await ws.recv() == payload  # nothing lost or reordered
                    exchanged[index] += 1
                    if exchanged[index] == 20:
                        busy[index].set()
            except ConnectionClosed as exc:
                return exc.code, type(exc).__name__

        tasks = [asyncio.ensure_future(client(i)) for i in range(len(exchanged))]
        for event in busy:
            await wait(event.wait())
        proc.send_signal(signal.SIGTERM)  # during traffic
        results = await wait(asyncio.gather(*tasks), 15)
        assert results == [(1001, "ConnectionClosedOK")] * len(exchanged)
        # Default close_timeout is 10 s: exit well within it (plus start-up slack).
        assert await wait(proc.wait(), 10 + TIMEOUT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert "SIGTERM" in log
    assert "Traceback" not in log
