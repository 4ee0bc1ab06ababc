"""``wsharbor run`` as a single process (``--workers 1``): endpoints, signals, logs, sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from wsharbor.app import sdnotify

from .apptools import TIMEOUT, ServerProcess, deadline_loop, metric, wait_metric, write_app

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="Unix-only"),
]


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[ServerProcess], tmp_path: Path, *args: str, **kw: object) -> ServerProcess:
    write_app(tmp_path)
    server = ServerProcess(["testapp:handler", "--port", "0", *args], tmp_path, **kw)  # type: ignore[arg-type]
    servers.append(server)
    return server


async def test_endpoints_app_page_and_echo(servers: list[ServerProcess], tmp_path: Path) -> None:
    server = start(servers, tmp_path)
    server.wait_listening()
    assert await asyncio.to_thread(server.http, "/healthz") == (200, "OK\n")
    assert await asyncio.to_thread(server.http, "/readyz") == (200, "ready\n")
    # The app's own process_request runs after the app server's paths.
    assert await asyncio.to_thread(server.http, "/") == (200, "<h1>demo</h1>")
    async with websockets.connect(server.url("/echo")) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await wait_metric(server, "wsharbor_connections_open", 1)
    await wait_metric(server, 'wsharbor_connections_closed_total{code="1000"}', 1)
    assert await metric(server, "wsharbor_messages_received_total") == 1
    assert await metric(server, "wsharbor_messages_sent_total") == 1


async def test_sigterm_sends_1001_and_exits_0(servers: list[ServerProcess], tmp_path: Path) -> None:
    server = start(servers, tmp_path, "--graceful-timeout", "3")
    server.wait_listening()
    clients = [await websockets.connect(server.url()) for _ in range(3)]
    for ws in clients:
        await ws.send("x")
        assert await ws.recv() == "x"
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    for ws in clients:
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1001
    assert await asyncio.to_thread(server.wait_exit) == 0
    assert time.monotonic() - started < 3 + 1


async def test_sighup_is_logged_and_ignored(servers: list[ServerProcess], tmp_path: Path) -> None:
    server = start(servers, tmp_path)
    server.wait_listening()
    async with websockets.connect(server.url()) as ws:
        server.signal(signal.SIGHUP)
        server.wait_for("SIGHUP ignored")
        await ws.send("still here")
        assert await ws.recv() == "still here"


@pytest.mark.parametrize("sig", [signal.SIGTTIN, signal.SIGTTOU])
async def test_sigttin_sigttou_dont_suspend_a_single_process(
    servers: list[ServerProcess], tmp_path: Path, sig: signal.Signals
) -> None:
    server = start(servers, tmp_path)
    server.wait_listening()
    async with websockets.connect(server.url()) as ws:
        server.signal(sig)
        server.wait_for(f"{sig.name} ignored")
        # A stopped (suspended) process would never answer.
        await ws.send("still here")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "still here"


async def test_max_connections_answers_503(servers: list[ServerProcess], tmp_path: Path) -> None:
    server = start(servers, tmp_path, "--max-connections", "2")
    server.wait_listening()
    async with websockets.connect(server.url()), websockets.connect(server.url()):
        with pytest.raises(InvalidStatus) as info:
            await websockets.connect(server.url())
        assert info.value.response.status_code == 503
        # The app's HTTP page and the probes still answer at capacity.
        assert (await asyncio.to_thread(server.http, "/"))[0] == 200
        assert (await asyncio.to_thread(server.http, "/readyz"))[0] == 200
    await wait_metric(server, 'wsharbor_handshakes_total{status="503"}', 1)


async def test_handler_error_gets_1011_and_is_counted(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = start(servers, tmp_path)
    server.wait_listening()
    async with websockets.connect(server.url()) as ws:
        await ws.send("boom")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1011
    await wait_metric(server, "wsharbor_handler_errors_total", 1)


async def test_access_log_json_has_the_fields_and_no_secrets(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = start(servers, tmp_path, "--log-format", "json")
    server.wait_listening()
    mark = server.mark()
    headers = {"Authorization": "Bearer s3cr3t-token", "Cookie": "session=c00kie"}
    async with websockets.connect(
        server.url("/chat?token=qu3ry-secret"), additional_headers=headers
    ) as ws:
        for text in ("first message body", "second message body"):
            await ws.send(text)
            await ws.recv()
    match = server.wait_for(r'"logger": "wsharbor.access"', after=mark)[0]
    record = json.loads(match.string)
    assert record["path"] == "/chat"
    assert record["remote"].startswith("127.0.0.1:")
    assert record["status"] == 101
    assert record["close_code"] == 1000
    assert record["messages_in"] == 2 and record["messages_out"] == 2
    assert record["bytes_in"] > 2 * len("first message body") and record["bytes_out"] > 0
    assert 0 <= record["duration"] < TIMEOUT
    assert record["pid"] == server.proc.pid and record["level"] == "info"
    output = server.output
    for secret in ("s3cr3t-token", "c00kie", "qu3ry-secret", "message body"):
        assert secret not in output
    # Every line is one JSON object.
    for line in output.splitlines():
        if line != "<EOF>":
            json.loads(line)


async def test_sd_notify_ready_and_stopping(servers: list[ServerProcess], tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(TIMEOUT)
        server = start(servers, tmp_path, env={"NOTIFY_SOCKET": path})
        ready = (await asyncio.to_thread(sock.recv, 4096)).decode()
        assert ready.splitlines()[0] == "READY=1"
        assert ready.splitlines()[1].startswith("STATUS=serving on 127.0.0.1:")
        server.signal(signal.SIGTERM)
        assert (await asyncio.to_thread(sock.recv, 4096)).decode() == "STOPPING=1"
        assert await asyncio.to_thread(server.wait_exit) == 0


def test_sd_notify_abstract_socket_and_no_socket() -> None:
    name = f"wsharbor-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(TIMEOUT)
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1"
    assert not sdnotify.notify("READY=1", {})
    assert sdnotify.reloading().startswith("RELOADING=1\nMONOTONIC_USEC=")


async def test_systemd_socket_activation(servers: list[ServerProcess], tmp_path: Path) -> None:
    write_app(tmp_path)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    # Like systemd: the socket is fd 3 and LISTEN_PID is the pid of the process
    # that execs wsharbor (exec keeps the pid).
    wrapper = (
        "import os, sys\n"
        f"os.dup2({listener.fileno()}, 3)\n"
        f"os.close({listener.fileno()})\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'wsharbor', 'run', 'testapp:handler'])\n"
    )
    server = ServerProcess(
        [], tmp_path, command=[sys.executable, "-c", wrapper], pass_fds=[listener.fileno()]
    )
    servers.append(server)
    listener.close()  # only the server holds it now
    assert server.wait_listening() == port
    async with websockets.connect(server.url()) as ws:
        await ws.send("activated")
        assert await ws.recv() == "activated"


async def test_unix_socket_and_stale_file(servers: list[ServerProcess], tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a file left by a crashed server: nobody listens
    write_app(tmp_path)
    server = ServerProcess(["testapp:handler", "--uds", str(path)], tmp_path)
    servers.append(server)
    server.wait_for(f"listening on unix:{path}")
    async with websockets.unix_connect(str(path), "ws://localhost/ws") as ws:
        await ws.send("over unix")
        assert await ws.recv() == "over unix"
    server.signal(signal.SIGTERM)
    assert await asyncio.to_thread(server.wait_exit) == 0
    alive = deadline_loop()
    while path.exists() and alive():
        await asyncio.sleep(0.02)
    assert not path.exists()


def test_readyz_follows_the_worker_state() -> None:
    from types import SimpleNamespace

    from wsharbor.app.config import Config
    from wsharbor.app.importer import App
    from wsharbor.app.worker import AppServer
    from wsharbor.protocol.datastructures import Headers
    from wsharbor.protocol.http11 import Request

    async def handler(websocket: object) -> None:
        pass

    with socket.socket() as sock:
        app_server = AppServer(Config(app="a:b"), App(handler, None), sock)

        def ask(path: str) -> tuple[int, bytes]:
            response = app_server._process_request(
                SimpleNamespace(internal=False),  # type: ignore[arg-type]
                Request(path, Headers()),
            )
            return response.status, response.body

        assert ask("/readyz") == (503, b"starting\n")
        assert ask("/healthz") == (200, b"OK\n")
        app_server.state = "ready"
        assert ask("/readyz?verbose=1") == (200, b"ready\n")
        app_server.state = "draining"
        assert ask("/readyz") == (503, b"draining\n")
        assert ask("/healthz") == (200, b"OK\n")
        status, body = ask("/metrics")
        assert status == 200 and b"wsharbor_connections_open" in body


STUCK_APP = """
import asyncio

async def handler(websocket):
    await websocket.recv()
    await asyncio.Event().wait()  # never finishes, ignores the close
"""


async def test_second_sigint_forces(servers: list[ServerProcess], tmp_path: Path) -> None:
    write_app(tmp_path, source=STUCK_APP)
    server = ServerProcess(["testapp:handler", "--port", "0", "--graceful-timeout", "60"], tmp_path)
    servers.append(server)
    server.wait_listening()
    async with websockets.connect(server.url()) as ws:
        await ws.send("hi")
        server.signal(signal.SIGINT)
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1001
    server.wait_for("closing 1 connection with 1001")
    server.signal(signal.SIGINT)
    # Well before the 60 s graceful timeout.
    assert await asyncio.to_thread(server.wait_exit) == 1
    assert "forcing shutdown" in server.output


async def test_tls_on_asyncio_loop(servers: list[ServerProcess], tmp_path: Path) -> None:
    import ssl

    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    server = start(
        servers,
        tmp_path,
        "--ssl-certfile",
        "server.pem",
        "--loop",
        "asyncio",
        "--log-level",
        "debug",
    )
    port = server.wait_listening()
    async with websockets.connect(f"wss://127.0.0.1:{port}/tls", ssl=client_context) as ws:
        await ws.send("secure")
        assert await ws.recv() == "secure"
    line = server.wait_for(r'"GET /tls" 101 1000 .* in=\d+B/1msg out=\d+B/1msg')[0]
    assert line
    assert "secure" not in server.output.replace('"GET /tls"', "")  # no bodies, even in debug
