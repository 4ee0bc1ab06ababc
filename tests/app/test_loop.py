"""``wsharbor run --loop``: ``auto`` (the default) serves on uvloop when it can be
imported and on asyncio's loop otherwise; ``uvloop`` requires it. wss:// on both, with
wsharbor's TLS transport or (``--tls-transport loop``) the loop's."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets

from wsharbor.app.config import ConfigError
from wsharbor.app.worker import loop_factory, loop_name

from .apptools import TIMEOUT, ServerProcess, write_app

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="Unix-only"),
]

uvloop = pytest.importorskip("uvloop")

#: A module named uvloop that can't be imported: first on PYTHONPATH, it hides
#: the installed uvloop from a subprocess.
HIDE_UVLOOP = "raise ImportError('uvloop hidden by the test')\n"


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def certificates(tmp_path: Path) -> ssl.SSLContext:
    """server.pem (certificate and key for 127.0.0.1) in ``tmp_path``; returns the
    client's context that trusts it."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "server.pem")
    )
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def hidden_uvloop_env(tmp_path: Path) -> dict[str, str]:
    stub = tmp_path / "no-uvloop"
    stub.mkdir(exist_ok=True)
    (stub / "uvloop.py").write_text(HIDE_UVLOOP)
    path = os.pathsep.join(filter(None, [str(stub), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path}


def test_loop_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop: ImportError
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match=r"pip install 'wsharbor\[fast\]'"):
        loop_factory("uvloop")


def test_loop_name() -> None:
    assert loop_name(uvloop.new_event_loop()) == "uvloop"
    loop = asyncio.new_event_loop()
    try:
        assert loop_name(loop) == "asyncio"
    finally:
        loop.close()


async def wss_echo(port: int, context: ssl.SSLContext) -> str:
    async with websockets.connect(f"wss://127.0.0.1:{port}/echo", ssl=context) as ws:
        await ws.send("secure")
        return str(await asyncio.wait_for(ws.recv(), TIMEOUT))


@pytest.mark.parametrize("hidden", [False, True], ids=["uvloop-installed", "uvloop-hidden"])
async def test_run_auto_picks_uvloop_when_importable(
    servers: list[ServerProcess], tmp_path: Path, certificates: ssl.SSLContext, hidden: bool
) -> None:
    """The default --loop auto, serving wss:// (wsharbor's TLS transport on either loop)."""
    write_app(tmp_path)
    server = ServerProcess(
        ["testapp:handler", "--port", "0", "--ssl-certfile", "server.pem"],
        tmp_path,
        env=hidden_uvloop_env(tmp_path) if hidden else None,
    )
    servers.append(server)
    port = server.wait_listening()
    expected = "asyncio" if hidden else "uvloop"
    server.wait_for(rf"listening on 127\.0\.0\.1:{port} \({expected}\)")
    assert await wss_echo(port, certificates) == "secure"


def test_run_loop_uvloop_without_uvloop_is_a_clear_error(tmp_path: Path) -> None:
    write_app(tmp_path)
    env = {**os.environ, **hidden_uvloop_env(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "wsharbor", "run", "testapp:handler", "--loop", "uvloop"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--loop uvloop: uvloop is not installed (pip install 'wsharbor[fast]')" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_run_tls_transport_loop(
    servers: list[ServerProcess], tmp_path: Path, certificates: ssl.SSLContext, loop: str
) -> None:
    """--tls-transport loop: the event loop's own TLS, the way back."""
    write_app(tmp_path)
    server = ServerProcess(
        [
            "testapp:handler",
            "--port",
            "0",
            "--ssl-certfile",
            "server.pem",
            "--tls-transport",
            "loop",
            "--loop",
            loop,
        ],
        tmp_path,
    )
    servers.append(server)
    port = server.wait_listening()
    assert await wss_echo(port, certificates) == "secure"


def test_tls_transport_needs_a_certificate(tmp_path: Path) -> None:
    write_app(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "wsharbor", "run", "testapp:handler", "--tls-transport", "loop"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "--tls-transport needs --ssl-certfile" in result.stderr
