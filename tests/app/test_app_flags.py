"""``wsharbor run`` flags for uvicorn and gunicorn users, each working, in a subprocess:
a URL map as the app, --factory, --app-dir, --env-file, --log-config, --proxy-headers,
--ssl-ca-certs / --ssl-cert-reqs, --ssl-keyfile-password, --limit-max-requests."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
import websockets
from cryptography.hazmat.primitives import serialization
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from .apptools import TIMEOUT, ServerProcess, write_app

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(sys.platform == "win32", reason="Unix-only"),
]

ROUTED_APP = """
import os

from werkzeug.routing import Map, Rule

from wsharbor.asyncio.router import Router


async def echo(websocket, count):
    message = await websocket.recv()
    for _ in range(count):
        await websocket.send(message)


async def whoami(websocket):
    await websocket.send(repr(websocket.remote_address))


async def env(websocket, name):
    await websocket.send(os.environ.get(name, "<unset>"))
    async for message in websocket:
        await websocket.send(message)


async def peercert(websocket):
    cert = websocket.transport.get_extra_info("peercert")
    await websocket.send(repr(None if cert is None else cert.get("subjectAltName")))


url_map = Map(
    [
        Rule("/echo", defaults={"count": 1}, endpoint=echo),
        Rule("/echo/<int:count>", endpoint=echo),
        Rule("/old", redirect_to="/echo/2"),
        Rule("/whoami", endpoint=whoami),
        Rule("/env/<name>", endpoint=env),
        Rule("/peercert", endpoint=peercert),
    ]
)


def make_router():
    return Router(url_map)
"""


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        assert server.stop() == 0, server.output


def start(
    servers: list[ServerProcess],
    cwd: Path,
    *args: str,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    server = ServerProcess(list(args), cwd, env=env)
    servers.append(server)
    server.wait_listening()
    return server


def routed_app(directory: Path) -> None:
    write_app(directory, "routedapp", ROUTED_APP)


async def recv_all(ws: websockets.ClientConnection) -> list[object]:
    return [message async for message in ws]


# A URL map as the app.


async def test_url_map_as_the_app(servers: list[ServerProcess], tmp_path: Path) -> None:
    routed_app(tmp_path)
    server = start(servers, tmp_path, "routedapp:url_map", "--port", "0")
    async with websockets.connect(server.url("/echo/3"), open_timeout=TIMEOUT) as ws:
        await ws.send("hi")
        assert await asyncio.wait_for(recv_all(ws), TIMEOUT) == ["hi"] * 3
    # websockets' client follows the redirect.
    async with websockets.connect(server.url("/old"), open_timeout=TIMEOUT) as ws:
        await ws.send("moved")
        assert await asyncio.wait_for(recv_all(ws), TIMEOUT) == ["moved"] * 2
    with pytest.raises(InvalidStatus) as raised:
        await websockets.connect(server.url("/missing"), open_timeout=TIMEOUT)
    assert raised.value.response.status_code == 404
    # The app server's own paths come first.
    assert await asyncio.to_thread(server.http, "/healthz") == (200, "OK\n")
    assert await asyncio.to_thread(server.http, "/missing") == (404, "Not Found\n")
    server.wait_for(r'"GET /echo/3" 101 1000 ')
    server.wait_for(r'"GET /missing" 404 - ')


async def test_factory_returning_a_router_in_workers(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    routed_app(tmp_path)
    server = start(
        servers, tmp_path, "routedapp:make_router", "--factory", "--workers", "2", "--port", "0"
    )
    server.worker_pids(count=2)
    for _ in range(4):
        async with websockets.connect(server.url("/echo/2"), open_timeout=TIMEOUT) as ws:
            await ws.send("w")
            assert await asyncio.wait_for(recv_all(ws), TIMEOUT) == ["w", "w"]


# --app-dir and --env-file.


async def test_app_dir_and_env_file(servers: list[ServerProcess], tmp_path: Path) -> None:
    app_dir = tmp_path / "src"
    app_dir.mkdir()
    routed_app(app_dir)
    (tmp_path / "app.env").write_text(
        "# read before the settings\n"
        "WSHARBOR_MAX_SIZE=64\n"
        "export GREETING='hello from the file'\n"
        "OVERRIDDEN=from the file\n"
    )
    server = start(
        servers,
        tmp_path,
        "routedapp:url_map",
        "--app-dir",
        "src",
        "--env-file",
        "app.env",
        "--port",
        "0",
        env={"OVERRIDDEN": "from the environment"},
    )
    for name, value in [
        ("GREETING", "hello from the file"),
        ("OVERRIDDEN", "from the environment"),
    ]:
        async with websockets.connect(server.url(f"/env/{name}"), open_timeout=TIMEOUT) as ws:
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == value
    # WSHARBOR_MAX_SIZE from the file is the server's --max-size.
    async with websockets.connect(server.url("/env/X"), open_timeout=TIMEOUT) as ws:
        await asyncio.wait_for(ws.recv(), TIMEOUT)
        await ws.send("x" * 65)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert ws.close_code == 1009


# --log-config.

LOG_DICT = {
    "version": 1,
    "formatters": {"custom": {"format": "CUSTOM %(levelname)s %(name)s | %(message)s"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "custom",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"level": "INFO", "handlers": ["stderr"]},
}

LOG_INI = """\
[loggers]
keys=root

[handlers]
keys=stderr

[formatters]
keys=custom

[logger_root]
level=INFO
handlers=stderr

[handler_stderr]
class=StreamHandler
formatter=custom
args=(sys.stderr,)

[formatter_custom]
format=CUSTOM %(levelname)s %(name)s | %(message)s
"""


def write_log_config(directory: Path, kind: str) -> str:
    if kind == "json":
        (directory / "log.json").write_text(json.dumps(LOG_DICT))
        return "log.json"
    if kind == "yaml":
        yaml = pytest.importorskip("yaml")
        (directory / "log.yaml").write_text(yaml.safe_dump(LOG_DICT))
        return "log.yaml"
    (directory / "log.ini").write_text(LOG_INI)
    return "log.ini"


@pytest.mark.parametrize("kind", ["json", "yaml", "ini"])
async def test_log_config(servers: list[ServerProcess], tmp_path: Path, kind: str) -> None:
    write_app(tmp_path)
    name = write_log_config(tmp_path, kind)
    server = start(servers, tmp_path, "testapp:handler", "--log-config", name, "--port", "0")
    server.wait_for(r"^CUSTOM INFO wsharbor\.app \| listening on 127\.0\.0\.1:")
    async with websockets.connect(server.url("/chat"), open_timeout=TIMEOUT) as ws:
        await ws.send("x")
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    server.wait_for(r'^CUSTOM INFO wsharbor\.access \| 127\.0\.0\.1:\d+ "GET /chat" 101 1000 ')
    # Nothing in wsharbor's own format: the file configures logging alone.
    assert " [" not in server.output.split("\n")[0], server.output


# --proxy-headers, --forwarded-allow-ips, --forwarded-header (nginx: test_nginx.py).


async def whoami(server: ServerProcess, headers: dict[str, str]) -> object:
    async with websockets.connect(
        server.url("/whoami"), additional_headers=headers, open_timeout=TIMEOUT
    ) as ws:
        return await asyncio.wait_for(ws.recv(), TIMEOUT)


async def test_proxy_headers_from_a_trusted_peer(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    routed_app(tmp_path)
    server = start(servers, tmp_path, "routedapp:url_map", "--proxy-headers", "--port", "0")
    # The test client is on 127.0.0.1, the default trusted proxy.
    forwarded = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
    assert await whoami(server, forwarded) == "('203.0.113.7', 0)"
    server.wait_for(r'^\S+ \S+ \[\d+\] INFO wsharbor\.access: 203\.0\.113\.7:0 "GET /whoami" 101')
    # No header: the socket's peer.
    assert (await whoami(server, {})).startswith("('127.0.0.1', ")  # type: ignore[attr-defined]
    # The RFC 7239 header is not the one chosen: ignored.
    peer = await whoami(server, {"Forwarded": "for=192.0.2.60"})
    assert peer.startswith("('127.0.0.1', ")  # type: ignore[attr-defined]


async def test_forwarded_header_rfc7239(servers: list[ServerProcess], tmp_path: Path) -> None:
    routed_app(tmp_path)
    server = start(
        servers,
        tmp_path,
        "routedapp:url_map",
        "--proxy-headers",
        "--forwarded-header",
        "forwarded",
        "--port",
        "0",
    )
    headers = {"Forwarded": 'for="[2001:db8::7]:4711";proto=https', "X-Forwarded-For": "1.2.3.4"}
    assert await whoami(server, headers) == "('2001:db8::7', 4711)"
    server.wait_for(r'INFO wsharbor\.access: \[2001:db8::7\]:4711 "GET /whoami" 101')


@pytest.mark.parametrize(
    "args",
    [
        # The peer (127.0.0.1) is not in the list.
        ["--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8,192.0.2.1"],
        # Proxy headers off (the default).
        [],
    ],
)
async def test_proxy_headers_of_untrusted_peers_are_ignored(
    servers: list[ServerProcess], tmp_path: Path, args: list[str]
) -> None:
    routed_app(tmp_path)
    server = start(servers, tmp_path, "routedapp:url_map", *args, "--port", "0")
    peer = await whoami(server, {"X-Forwarded-For": "203.0.113.7"})
    assert peer.startswith("('127.0.0.1', ")  # type: ignore[attr-defined]
    server.wait_for(r'INFO wsharbor\.access: 127\.0\.0\.1:\d+ "GET /whoami" 101')
    assert "203.0.113.7" not in server.output


# TLS: client certificates and an encrypted key.


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_files(directory: Path, ca: trustme.CA, password: bytes | None = None) -> list[str]:
    """Server certificate and key (encrypted with ``password``), the CA; the flags."""
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), None)
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if password is None
        else serialization.BestAvailableEncryption(password)
    )
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    return ["--ssl-certfile", "cert.pem", "--ssl-keyfile", "key.pem"]


def client_context(ca: trustme.CA, identity: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if identity is not None:
        ca.issue_cert(identity).configure_cert(context)
    return context


def wss_url(server: ServerProcess, path: str) -> str:
    return f"wss://127.0.0.1:{server.port}{path}"


async def test_client_certificates_required(
    servers: list[ServerProcess], tmp_path: Path, ca: trustme.CA
) -> None:
    routed_app(tmp_path)
    flags = tls_files(tmp_path, ca)
    server = start(
        servers,
        tmp_path,
        "routedapp:url_map",
        *flags,
        "--ssl-ca-certs",
        "ca.pem",
        "--ssl-cert-reqs",
        "required",
        "--port",
        "0",
    )
    context = client_context(ca, "client@example.org")
    async with websockets.connect(
        wss_url(server, "/peercert"), ssl=context, open_timeout=TIMEOUT
    ) as ws:
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "(('email', 'client@example.org'),)"
    # Without a client certificate: no connection.
    # (TLS 1.3: the client learns it after its side of the TLS handshake.)
    with pytest.raises((ssl.SSLError, ConnectionError, InvalidMessage)):
        async with websockets.connect(
            wss_url(server, "/peercert"), ssl=client_context(ca, None), open_timeout=TIMEOUT
        ) as ws:
            await asyncio.wait_for(ws.recv(), TIMEOUT)


async def test_ca_certs_alone_requests_no_client_certificate(
    servers: list[ServerProcess], tmp_path: Path, ca: trustme.CA
) -> None:
    routed_app(tmp_path)
    flags = tls_files(tmp_path, ca)
    server = start(
        servers, tmp_path, "routedapp:url_map", *flags, "--ssl-ca-certs", "ca.pem", "--port", "0"
    )
    server.wait_for(r"--ssl-ca-certs without --ssl-cert-reqs: client certificates are not")
    async with websockets.connect(
        wss_url(server, "/peercert"), ssl=client_context(ca, None), open_timeout=TIMEOUT
    ) as ws:
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "None"


async def test_encrypted_key_with_its_password(
    servers: list[ServerProcess], tmp_path: Path, ca: trustme.CA
) -> None:
    routed_app(tmp_path)
    flags = tls_files(tmp_path, ca, password=b"s3cret")
    # The variable, as the docs advise (a flag shows in ps).
    server = start(
        servers,
        tmp_path,
        "routedapp:url_map",
        *flags,
        "--port",
        "0",
        env={"WSHARBOR_SSL_KEYFILE_PASSWORD": "s3cret"},
    )
    async with websockets.connect(
        wss_url(server, "/echo"), ssl=client_context(ca, None), open_timeout=TIMEOUT
    ) as ws:
        await ws.send("over TLS")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "over TLS"
    # A wrong or a missing password: one line, exit 2.
    for extra, hint in [
        (["--ssl-keyfile-password", "wrong"], "wrong --ssl-keyfile-password for the encrypted"),
        ([], "cannot load: the key is encrypted: give --ssl-keyfile-password"),
    ]:
        bad = ServerProcess(["routedapp:url_map", *flags, "--port", "0", *extra], tmp_path)
        assert bad.wait_exit() == 2
        bad.stop()
        lines = [line for line in bad.lines if line != "<EOF>"]
        assert len(lines) == 1 and lines[0].startswith("wsharbor: error: --ssl-certfile")
        assert hint in lines[0], lines


# --limit-max-requests.


async def test_limit_max_requests_recycles_workers(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    write_app(tmp_path)
    server = start(
        servers,
        tmp_path,
        "testapp:handler",
        "--workers",
        "2",
        "--limit-max-requests",
        "1",
        "--port",
        "0",
    )
    server.worker_pids(count=2)
    # More recycles than the crash-loop limit (5 deaths in 10 s): none is a death.
    rounds = 7
    for _ in range(rounds):
        async with websockets.connect(server.url(), open_timeout=TIMEOUT) as ws:
            # The worker retires at once: its first connection gets 1012.
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1012 and ws.close_reason == "service restart"
    server.wait_for(r"served 1 connections \(--limit-max-requests\): retiring", count=rounds)
    server.wait_for(r"retired after --limit-max-requests: replacing it", count=rounds)
    server.worker_pids(count=2 + rounds)
    assert "died unexpectedly" not in server.output
    assert "crash loop" not in server.output
    assert server.proc.poll() is None
