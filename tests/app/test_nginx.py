"""A real nginx (Debian's package) on loopback in front of ``wsharbor run --workers 2``.

The nginx configuration is ``deploy/nginx.conf``, the one the deployment guide
documents, with its listen and upstream ports replaced, inside a minimal main
configuration that keeps every file in a temporary directory. Without nginx the
tests are skipped, or fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import websockets

import wsharbor
from wsharbor import ClientConnection, ConnectionClosed

from .apptools import ServerProcess, write_app
from .test_demo import ROOT, TIMEOUT, DemoServer

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(sys.platform != "linux", reason="Debian's nginx"),
]

NGINX = os.environ.get("NGINX", shutil.which("nginx") or "/usr/sbin/nginx")
SITE = ROOT / "deploy" / "nginx.conf"


def require_nginx() -> None:
    """Skip when nginx is missing; fail instead when CI=true."""
    if Path(NGINX).is_file() and os.access(NGINX, os.X_OK):
        return
    what = (
        f"nginx not found at {NGINX}: run scripts/install-system-deps.sh "
        "(apt-get install nginx) or set NGINX"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (required when CI=true)", pytrace=False)
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nginx_config(directory: Path, listen: int, upstream: int) -> str:
    """``deploy/nginx.conf`` on these ports, in a main config that writes only in ``directory``."""
    site, listens = re.subn(
        r"(?m)^(\s*)listen\s+[^;]+;", rf"\1listen 127.0.0.1:{listen};", SITE.read_text()
    )
    site, servers = re.subn(
        r"(?m)^(\s*)server\s+127\.0\.0\.1:\d+;", rf"\1server 127.0.0.1:{upstream};", site
    )
    assert (listens, servers) == (1, 1), "deploy/nginx.conf: expected one listen and one server"
    temp = "\n".join(
        f"    {name}_temp_path {directory / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx's workers would switch to an unprivileged user that can't
    # write in our temporary directory: keep them as root (loopback, test only).
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes 1;\n"
        "events {\n    worker_connections 512;\n}\n"
        "http {\n"
        f"    access_log {directory / 'access.log'};\n"
        f"{temp}\n"
        f"{site}\n"
        "}\n"
    )


class Nginx:
    """``nginx -p DIR -c DIR/nginx.conf`` in the foreground, its error log collected."""

    def __init__(self, directory: Path, upstream: int) -> None:
        self.directory = directory
        self.port = free_port()
        config = directory / "nginx.conf"
        config.write_text(nginx_config(directory, self.port, upstream))
        directives = f"daemon off; pid {directory / 'nginx.pid'}; error_log stderr;"
        command = [NGINX, "-p", str(directory), "-e", "stderr", "-c", str(config), "-g", directives]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def http(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def wait_ready(self) -> None:
        """Poll /healthz through nginx until it answers 200 (nginx and wsharbor both up)."""
        end = time.monotonic() + TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.output}")
            try:
                if self.http("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > end:
                raise AssertionError(f"nginx didn't answer in {TIMEOUT} s:\n{self.output}")
            time.sleep(0.05)  # poll interval

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)


@dataclass
class Stack:
    server: DemoServer
    nginx: Nginx


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_nginx()
    server = DemoServer(["--workers", "2", "--graceful-timeout", "5"])
    nginx = None
    try:
        server.start(workers=2)
        nginx = Nginx(tmp_path_factory.mktemp("nginx"), server.port)
        nginx.wait_ready()
        yield Stack(server, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        assert server.stop() == 0, server.output


async def echo_once(client: ClientConnection, message: str) -> None:
    await client.send(message)
    assert await asyncio.wait_for(client.recv(), TIMEOUT) == message


def test_http_through_nginx(stack: Stack) -> None:
    assert stack.nginx.http("/healthz") == (200, "OK\n")
    assert stack.nginx.http("/readyz") == (200, "ready\n")
    status, body = stack.nginx.http("/")
    assert status == 200 and "<title>wsharbor chat</title>" in body
    assert stack.nginx.http("/nothing-here") == (404, "not found\n")


async def test_websocket_through_nginx(stack: Stack) -> None:
    async with wsharbor.connect(stack.nginx.url("/echo"), open_timeout=TIMEOUT) as ws:
        for index in range(20):
            await echo_once(ws, f"message {index}")
        await echo_once(ws, "é" * 2000)
        await ws.send("x" * 5000)  # over the demo's limit: the close code crosses nginx
        with pytest.raises(ConnectionClosed) as raised:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert (raised.value.code, raised.value.reason) == (1009, "message too big")

    async with wsharbor.connect(stack.nginx.url("/chat"), open_timeout=TIMEOUT) as ws:
        await ws.send(json.dumps({"type": "join", "name": "via-nginx"}))
        welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert (welcome["type"], welcome["members"]) == ("welcome", ["via-nginx"])
        event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert (event["type"], event["name"], event["members"]) == (
            "join",
            "via-nginx",
            ["via-nginx"],
        )


@dataclass
class Traffic:
    """New clients through nginx, one after another, each exchanging a message."""

    served: int = 0
    restarted: int = 0  # got 1012 right after connecting to a retiring worker: reconnect
    failures: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, nginx: Nginx) -> None:
        while not self.stop.is_set():
            try:
                async with wsharbor.connect(nginx.url("/echo"), open_timeout=TIMEOUT) as ws:
                    await echo_once(ws, f"new {self.served}")
                self.served += 1
            except ConnectionClosed as exc:
                if exc.code == 1012:
                    self.restarted += 1
                else:
                    self.failures.append(f"closed: {exc}")
            except Exception as exc:  # refused, 502 from nginx, timeout: all failures
                self.failures.append(f"{type(exc).__name__}: {exc}")


async def old_client(client: ClientConnection) -> tuple[int, str, int]:
    """Exchange messages until the server closes; the close code, reason and count."""
    count = 0
    try:
        async with asyncio.timeout(TIMEOUT * 2):
            while True:
                await echo_once(client, f"old {count}")
                count += 1
                await asyncio.sleep(0.01)  # pace the traffic, not a wait
    except ConnectionClosed as exc:
        return exc.code, exc.reason, count


async def test_sighup_restart_behind_nginx(stack: Stack) -> None:
    server, nginx = stack.server, stack.nginx
    olds = [await wsharbor.connect(nginx.url("/echo"), open_timeout=TIMEOUT) for _ in range(6)]
    for client in olds:
        await echo_once(client, "before")
    traffic = Traffic()
    traffic_task = asyncio.create_task(traffic.run(nginx))
    old_tasks = [asyncio.create_task(old_client(client)) for client in olds]

    # Some traffic flows before the restart starts.
    async with asyncio.timeout(TIMEOUT):
        while traffic.served < 3:
            await asyncio.sleep(0.01)
    mark = server.mark()
    served_before = traffic.served
    server.proc.send_signal(signal.SIGHUP)
    await asyncio.to_thread(server.wait_for, r"rolling restart complete: 2 workers", after=mark)
    served_during = traffic.served - served_before

    # Every old client got 1012 "service restart", through nginx, after exchanging messages.
    results = await asyncio.wait_for(asyncio.gather(*old_tasks), TIMEOUT)
    assert [(code, reason) for code, reason, _ in results] == [(1012, "service restart")] * 6
    assert all(count > 0 for _, _, count in results)

    # New clients keep being served, during the restart and after it.
    served = traffic.served
    async with asyncio.timeout(TIMEOUT):
        while traffic.served < served + 3:
            await asyncio.sleep(0.01)
    traffic.stop.set()
    await asyncio.wait_for(traffic_task, TIMEOUT)
    assert traffic.failures == [], f"{traffic.failures}\n{server.output}\n{nginx.output}"
    assert served_during > 0  # clients were served while the workers were replaced
    print(
        f"served during the restart: {served_during}, reconnected after 1012: {traffic.restarted}"
    )
    retired = server.wait_for(r"retiring worker (\d+)", after=mark, count=2)
    assert len(retired) == 2
    assert nginx.http("/healthz") == (200, "OK\n")
    assert nginx.http("/readyz") == (200, "ready\n")


# --proxy-headers behind nginx: the handler and the access log see the client.

WHOAMI_APP = """
async def handler(websocket):
    await websocket.send(repr(websocket.remote_address))
"""

#: The client's own loopback address, other than nginx's 127.0.0.1.
CLIENT_HOST = "127.0.0.2"
ACCESS = r"wsharbor\.access: 127\.0\.0\.2"


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Nginx]]:
    """``wsharbor run --proxy-headers`` (nginx's 127.0.0.1 trusted by default) behind nginx."""
    require_nginx()
    directory = tmp_path_factory.mktemp("proxied")
    write_app(directory, "whoami", WHOAMI_APP)
    server = ServerProcess(["whoami:handler", "--port", "0", "--proxy-headers"], directory)
    nginx = None
    try:
        port = server.wait_listening()
        nginx = Nginx(tmp_path_factory.mktemp("nginx-proxied"), port)
        nginx.wait_ready()
        yield server, nginx
    finally:
        if nginx is not None:
            nginx.stop()
        assert server.stop() == 0, server.output


async def whoami_from(url: str, headers: dict[str, str] | None = None) -> str:
    """Connect from CLIENT_HOST; what the handler says remote_address is."""
    async with websockets.connect(
        url, local_addr=(CLIENT_HOST, 0), additional_headers=headers, open_timeout=TIMEOUT
    ) as ws:
        answer = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(answer, str)
    return answer


async def test_proxy_headers_behind_nginx(proxied: tuple[ServerProcess, Nginx]) -> None:
    server, nginx = proxied
    mark = server.mark()
    # nginx sets X-Forwarded-For to the client's address (deploy/nginx.conf).
    assert await whoami_from(nginx.url("/through-nginx")) == f"('{CLIENT_HOST}', 0)"
    server.wait_for(rf'{ACCESS}:0 "GET /through-nginx" 101', after=mark)
    # A client that writes its own X-Forwarded-For: nginx appends the address it
    # saw, and the header is read from the right, so the forgery is ignored.
    forged = {"X-Forwarded-For": "203.0.113.66"}
    assert await whoami_from(nginx.url("/forged"), forged) == f"('{CLIENT_HOST}', 0)"
    server.wait_for(rf'{ACCESS}:0 "GET /forged" 101', after=mark)


async def test_proxy_headers_of_an_untrusted_peer_are_ignored(
    proxied: tuple[ServerProcess, Nginx],
) -> None:
    server, _ = proxied
    mark = server.mark()
    # Straight to wsharbor from 127.0.0.2, which is not a trusted proxy.
    answer = await whoami_from(server.url("/direct"), {"X-Forwarded-For": "203.0.113.66"})
    match = re.fullmatch(rf"\('{re.escape(CLIENT_HOST)}', (\d+)\)", answer)
    assert match is not None, answer
    port = match.group(1)
    server.wait_for(rf'{ACCESS}:{port} "GET /direct" 101', after=mark)
    assert "203.0.113.66" not in server.output
