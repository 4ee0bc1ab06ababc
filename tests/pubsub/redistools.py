"""Real Redis servers, Sentinels and a TCP proxy for the pubsub tests.

:class:`RedisServer` runs ``redis-server`` on a free port of 127.0.0.1 with its
own directory, waits until it answers PING, and can be killed with SIGKILL and
started again on the same port (with ``appendfsync always`` when the test needs
what was acknowledged to survive). :class:`Sentinel` runs ``redis-sentinel``
watching one. :class:`Proxy` forwards TCP to a server and can cut every
connection through it (a network partition of one host), for tests that need a
broker outage seen by one process only. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

#: Deadline for a server to start answering.
START_TIMEOUT = 10.0

REDIS_SERVER = os.environ.get("REDIS_SERVER", shutil.which("redis-server") or "")
REDIS_SENTINEL = os.environ.get("REDIS_SENTINEL", shutil.which("redis-sentinel") or "")


def require(program: str, name: str) -> None:
    """Skip when ``program`` is missing; fail instead when CI=true (like nginx)."""
    if program and os.access(program, os.X_OK):
        return
    what = (
        f"{name} not found: run scripts/install-system-deps.sh "
        f"(apt-get install {name}) or set {name.upper().replace('-', '_')}"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (required when CI=true)", pytrace=False)
    pytest.skip(what)


def require_redis() -> None:
    require(REDIS_SERVER, "redis-server")
    try:
        import redis  # noqa: F401
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-py is not installed (pip install -e '.[test]')", pytrace=False)
        pytest.skip("redis-py is not installed (pip install -e '.[test]')")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int, tls: ssl.SSLContext | None = None) -> bool:
    """Whether something on ``port`` answers a RESP PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            sock = raw if tls is None else tls.wrap_socket(raw, server_hostname="localhost")
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class _Process:
    """A redis-server (or sentinel) process on a port; restartable."""

    program = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "server.log"

    def args(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        """Start on a free port (another one if it was taken meanwhile)."""
        for _ in range(20):
            self.port = free_port()
            if self._launch():
                return
        raise AssertionError(f"{self.program} did not start:\n{self.tail()}")

    def restart(self) -> None:
        """Start again on the same port (after :meth:`kill`), with the same directory."""
        if not self._launch():
            raise AssertionError(f"{self.program} did not restart on {self.port}:\n{self.tail()}")

    def _launch(self) -> bool:
        self.proc = subprocess.Popen(
            [self.program, *self.args()],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self._wait_ready()

    #: A client context for servers that speak TLS only.
    client_tls: ssl.SSLContext | None = None

    def _wait_ready(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if _answers(self.port, self.client_tls):
                return True
            time.sleep(0.01)  # polling a condition with a deadline
        self.kill()
        return False

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-20:])
        except OSError:
            return "(no log)"

    def kill(self) -> None:
        """SIGKILL, as ``kill -9``: nothing is flushed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(START_TIMEOUT)
        self.proc = None

    def client(self, **kwargs: Any) -> Any:
        """A synchronous redis-py client (for the test's own inspection)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, **kwargs)


class RedisServer(_Process):
    """``redis-server`` on 127.0.0.1; ``persistent``: AOF with ``appendfsync always``."""

    program = REDIS_SERVER

    def __init__(
        self,
        directory: Path,
        *,
        persistent: bool = False,
        extra: tuple[str, ...] = (),
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        super().__init__(directory)
        self.persistent = persistent
        self.extra = list(extra)
        #: (certificate, key, CA certificate): listen with TLS only.
        self.tls = tls
        if tls is not None:
            self.client_tls = ssl.create_default_context(cafile=str(tls[2]))

    def args(self) -> list[str]:
        if self.tls is not None:
            cert, key, ca = self.tls
            port = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(cert),
                "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(ca),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        else:
            port = ["--port", str(self.port)]
        args = [
            *port,
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--logfile", str(self.log),
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            args += ["--appendonly", "no"]
        return args + self.extra

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class Sentinel(_Process):
    """``redis-sentinel`` watching ``master`` as ``mymaster`` (quorum 1)."""

    program = REDIS_SENTINEL

    def __init__(self, directory: Path, master: RedisServer, service: str = "mymaster") -> None:
        super().__init__(directory)
        self.master = master
        self.service = service
        self.config = directory / "sentinel.conf"

    def args(self) -> list[str]:
        self.config.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.directory}",
                    f"logfile {self.log}",
                    f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 1",
                    f"sentinel down-after-milliseconds {self.service} 1000",
                    f"sentinel failover-timeout {self.service} 10000",
                    f"sentinel parallel-syncs {self.service} 1",
                    "",
                ]
            )
        )
        return [str(self.config)]

    def master_port(self) -> int:
        address = self.client().execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
        return int(address[1])


class Proxy:
    """A TCP forwarder to ``127.0.0.1:target``; :meth:`cut` partitions it."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.server: asyncio.Server | None = None
        self.port = 0
        self.open = True
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        """Drop every connection through the proxy and refuse new ones."""
        self.open = False
        for writer in list(self._writers):
            writer.transport.abort()

    def heal(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
