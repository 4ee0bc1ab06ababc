"""Helpers for the application server tests: a test app, the CLI in a subprocess, clients.

:class:`ServerProcess` runs ``python -m wsharbor run ...`` with ``--port 0``,
reads its stderr in a thread and learns the port and the worker pids from the
log. Every wait has a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

import websockets

#: Deadline for anything that should happen promptly (process start included).
TIMEOUT = 15.0

APP_SOURCE = """
import asyncio
import os

from wsharbor import Response


async def handler(websocket):
    async for message in websocket:
        if message == "pid":
            await websocket.send(str(os.getpid()))
        elif message == "boom":
            raise RuntimeError("boom")
        else:
            await websocket.send(message)


def process_request(connection, request):
    if request.path == "/":
        return Response.text(200, "<h1>demo</h1>", {"Content-Type": "text/html; charset=utf-8"})
    return None


handler.process_request = process_request


def not_async(websocket):
    return None
"""


def write_app(directory: Path, name: str = "testapp", source: str = APP_SOURCE) -> str:
    (directory / f"{name}.py").write_text(source)
    return f"{name}:handler"


def deadline_loop(timeout: float = TIMEOUT) -> Callable[[], bool]:
    end = time.monotonic() + timeout
    return lambda: time.monotonic() < end


class ServerProcess:
    """``wsharbor run`` in a subprocess, its stderr collected line by line."""

    def __init__(
        self,
        args: Sequence[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        full_env = dict(os.environ)
        for name in list(full_env):
            if name.startswith("WSHARBOR_") or name in ("NOTIFY_SOCKET", "LISTEN_FDS"):
                del full_env[name]
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        if command is None:
            command = [sys.executable, "-m", "wsharbor", "run", *args]
        self.proc = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=tuple(pass_fds),
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port: int | None = None

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self.lines.append("<EOF>")
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(
        self, pattern: str, *, after: int = 0, count: int = 1, timeout: float = TIMEOUT
    ) -> list[re.Match[str]]:
        """Wait until ``count`` lines from index ``after`` match ``pattern``."""
        regex = re.compile(pattern)
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = [m for line in self.lines[after:] if (m := regex.search(line))]
                if len(matches) >= count:
                    return matches
                if "<EOF>" in self.lines[after:]:
                    raise AssertionError(f"process exited before {pattern!r}:\n{self.output}")
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.output}")
                self._cond.wait(remaining)

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_listening(self) -> int:
        match = self.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[0]
        self.port = int(match.group(1))
        return self.port

    def worker_pids(self, after: int = 0, count: int = 1) -> list[int]:
        return [
            int(m.group(1)) for m in self.wait_for(r"worker (\d+) ready", after=after, count=count)
        ]

    def url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int:
        """SIGTERM, then wait for the exit (kill after the deadline); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        return self.proc.returncode


async def metric(server: ServerProcess, line_prefix: str) -> float | None:
    """The value of the sample line starting with ``line_prefix`` (e.g. ``name{label="x"}``)."""
    status, text = await asyncio.to_thread(server.http, "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(line_prefix + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def wait_metric(server: ServerProcess, line_prefix: str, expected: float) -> None:
    alive = deadline_loop()
    value = None
    while alive():
        value = await metric(server, line_prefix)
        if value == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{line_prefix} is {value}, expected {expected}")


async def connect_spread(
    server: ServerProcess, pids: set[int], *, per_pid: int = 1, limit: int = 200
) -> dict[int, list[websockets.ClientConnection]]:
    """Open connections until each worker in ``pids`` has ``per_pid`` of them.

    The workers' balancing decides which worker serves a connection (it keeps
    their counts even, see app/balance.py); connections beyond what's needed are
    closed. The limit of 200 is from before the balancing, when the kernel alone
    picked and one worker once got none of 60 attempts.
    """
    clients: dict[int, list[websockets.ClientConnection]] = {pid: [] for pid in pids}
    for _ in range(limit):
        if all(len(c) >= per_pid for c in clients.values()):
            return clients
        ws = await websockets.connect(server.url(), open_timeout=TIMEOUT)
        await ws.send("pid")
        pid = int(await asyncio.wait_for(ws.recv(), TIMEOUT))
        if pid in clients and len(clients[pid]) < per_pid:
            clients[pid].append(ws)
        else:
            await ws.close()
    raise AssertionError(
        f"couldn't reach every worker: { ({p: len(c) for p, c in clients.items()}) }"
    )
