"""wsharbor.run() in a subprocess (real signals) and ServerThread from synchronous code."""

from __future__ import annotations

import asyncio
import queue
import re
import signal
import socket
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosedOK as WebsocketsClosedOK
from websockets.sync.client import connect as sync_connect

import wsharbor
from wsharbor import ServerConnection

from .conftest import HOST, PYTHON, TIMEOUT, subprocess_env, wait

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="signals are Unix-only"),
]

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, signal, sys
    import wsharbor

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    MODE = sys.argv[1]

    async def handler(ws):
        print("handler started", flush=True)
        try:
            if MODE == "stuck":
                await asyncio.Event().wait()  # ignores the close: never finishes
            async for message in ws:
                await ws.send(message)
        finally:
            print("cleanup ran", ws.path, flush=True)

    def custom_sigterm(signum, frame):
        print("custom handler called", flush=True)

    signal.signal(signal.SIGTERM, custom_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    rc = wsharbor.run(handler, "127.0.0.1", 0, close_timeout=float(sys.argv[2]))
    print("run returned", rc, flush=True)
    print(
        "restored",
        signal.getsignal(signal.SIGTERM) is custom_sigterm,
        signal.getsignal(signal.SIGINT) is previous_int,
        flush=True,
    )
    sys.exit(rc)
    """
)


class Child:
    """The script above in a subprocess; knows its port once it listens."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @classmethod
    async def start(cls, tmp_path: Path, mode: str, close_timeout: float) -> Child:
        script = tmp_path / "run_script.py"
        script.write_text(SCRIPT)
        proc = await asyncio.create_subprocess_exec(
            PYTHON,
            str(script),
            mode,
            str(close_timeout),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=subprocess_env(),
        )
        line = await cls._wait_stderr(proc, rb"listening on \('127\.0\.0\.1', (\d+)\)")
        match = re.search(rb"\d+\)", line)
        assert match is not None
        return cls(proc, int(match.group()[:-1]))

    @staticmethod
    async def _wait_stderr(proc: asyncio.subprocess.Process, pattern: bytes) -> bytes:
        assert proc.stderr is not None
        while True:
            line = await wait(proc.stderr.readline(), 2 * TIMEOUT)
            assert line, f"process exited before logging {pattern!r}"
            if re.search(pattern, line):
                return line

    async def wait_stderr(self, pattern: bytes) -> bytes:
        return await self._wait_stderr(self.proc, pattern)

    async def wait_stdout(self, text: bytes) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await wait(self.proc.stdout.readline())
            assert line, f"process exited before printing {text!r}"
            if text in line:
                return

    async def finish(self, timeout: float) -> tuple[int, str]:
        assert self.proc.stdout is not None
        try:
            rc = await wait(self.proc.wait(), timeout)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        return rc, (await self.proc.stdout.read()).decode()


async def test_run_sigterm_graceful_exit_0_cleanup_ran_handlers_restored(tmp_path: Path) -> None:
    child = await Child.start(tmp_path, "echo", close_timeout=10)
    ws = await wsharbor.connect(f"ws://{HOST}:{child.port}/one")
    await child.wait_stdout(b"handler started")
    await ws.send("before")
    assert await wait(ws.recv()) == "before"
    child.proc.send_signal(signal.SIGTERM)
    with pytest.raises(wsharbor.ConnectionClosedOK) as excinfo:
        await wait(ws.recv())
    assert excinfo.value.code == 1001
    rc, out = await child.finish(10 + TIMEOUT)
    assert rc == 0
    assert "cleanup ran /one" in out
    assert "run returned 0" in out
    assert "restored True True" in out
    assert "custom handler called" not in out  # run() had replaced it meanwhile


async def test_run_second_sigint_forces_exit_1_before_close_timeout(tmp_path: Path) -> None:
    close_timeout = 30.0  # far longer than the test's deadline below
    child = await Child.start(tmp_path, "stuck", close_timeout=close_timeout)
    ws = await wsharbor.connect(f"ws://{HOST}:{child.port}/stuck")
    await child.wait_stdout(b"handler started")
    child.proc.send_signal(signal.SIGINT)
    await child.wait_stderr(b"shutting down gracefully")
    with pytest.raises(wsharbor.ConnectionClosed):  # 1001 sent; the handler ignores it
        await wait(ws.recv())
    child.proc.send_signal(signal.SIGINT)
    rc, out = await child.finish(TIMEOUT)  # well before close_timeout
    assert rc == 1
    assert "cleanup ran /stuck" in out  # the cancelled handler's finally ran
    assert "run returned 1" in out
    assert "restored True True" in out


# ServerThread.


def test_server_thread_send_broadcast_stop_from_sync_code() -> None:
    connections: queue.Queue[ServerConnection] = queue.Queue()
    finished = threading.Event()

    async def handler(ws: ServerConnection) -> None:
        connections.put(ws)
        try:
            async for message in ws:
                await ws.send(f"echo:{message}")
        finally:
            finished.set()

    thread = wsharbor.serve_in_thread(handler, "127.0.0.1", 0)
    try:
        assert thread.port > 0
        with sync_connect(f"ws://{HOST}:{thread.port}/", open_timeout=TIMEOUT) as client:
            conn = connections.get(timeout=TIMEOUT)
            client.send("hello")
            assert client.recv(timeout=TIMEOUT) == "echo:hello"
            thread.send(conn, "direct", timeout=TIMEOUT)
            assert client.recv(timeout=TIMEOUT) == "direct"
            assert thread.broadcast(b"to all", timeout=TIMEOUT) == 0
            assert client.recv(timeout=TIMEOUT) == b"to all"
            assert thread.broadcast(b"bytes as text", timeout=TIMEOUT, text=True) == 0
            assert client.recv(timeout=TIMEOUT) == "bytes as text"
            fut = thread.run_coroutine(conn.ping())
            assert fut.result(TIMEOUT) is not None
            thread.stop(timeout=TIMEOUT)
            with pytest.raises(WebsocketsClosedOK) as excinfo:
                client.recv(timeout=TIMEOUT)
            assert excinfo.value.rcvd is not None and excinfo.value.rcvd.code == 1001
        assert finished.is_set()  # stop() returned after the handler finished
        assert thread._thread is not None and not thread._thread.is_alive()
    finally:
        thread.stop(timeout=TIMEOUT)


def test_server_thread_with_client_on_the_test_loop() -> None:
    connections: queue.Queue[ServerConnection] = queue.Queue()

    async def handler(ws: ServerConnection) -> None:
        connections.put(ws)
        await ws.wait_closed()

    async def client(thread: wsharbor.ServerThread) -> list[object]:
        async with wsharbor.connect(f"ws://{HOST}:{thread.port}/") as ws:
            conn = await asyncio.to_thread(connections.get, timeout=TIMEOUT)
            # From another thread, while this loop keeps running.
            await asyncio.to_thread(thread.send, conn, "from main thread", TIMEOUT)
            first = await wait(ws.recv())
            skipped = await asyncio.to_thread(thread.broadcast, "broadcast", None, TIMEOUT)
            second = await wait(ws.recv())
            await asyncio.to_thread(thread.stop, TIMEOUT)
            with pytest.raises(wsharbor.ConnectionClosedOK) as excinfo:
                await wait(ws.recv())
            return [first, skipped, second, excinfo.value.code]

    with wsharbor.ServerThread(handler) as thread:
        assert asyncio.run(client(thread)) == ["from main thread", 0, "broadcast", 1001]


def test_server_thread_port_in_use_raises_from_start() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.wait_closed()

    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        thread = wsharbor.ServerThread(handler, HOST, port)
        with pytest.raises(OSError):
            thread.start(timeout=TIMEOUT)
        assert thread._thread is not None and not thread._thread.is_alive()


def test_run_outside_main_thread_raises() -> None:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            wsharbor.run(lambda ws: ws.wait_closed(), HOST, 0)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=target)
    worker.start()
    worker.join(TIMEOUT)
    assert not worker.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
