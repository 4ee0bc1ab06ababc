"""The demo application (examples/demo) served by ``wsharbor run``, over real sockets.

:class:`DemoServer` (also used by ``test_browser.py`` and ``test_nginx.py``) runs
``python -m wsharbor run examples.demo.app:app --port 0`` from the repository root,
reads its log in a thread and learns the port from it. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import wsharbor
from wsharbor import ClientConnection, ConnectionClosed

from .apptools import ServerProcess

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="Unix-only"),
]

ROOT = Path(__file__).resolve().parents[2]
APP = "examples.demo.app:app"
#: Deadline for anything that should happen promptly (process start included).
TIMEOUT = 15.0

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.demo.app import MAX_MESSAGE_BYTES, DemoApp  # noqa: E402


class DemoServer(ServerProcess):
    """``wsharbor run examples.demo.app:app`` in a subprocess, its log collected line by line."""

    def __init__(self, args: Sequence[str] = (), env: dict[str, str] | None = None) -> None:
        super().__init__([APP, "--port", "0", *args], cwd=ROOT, env=env)

    def start(self, workers: int = 1) -> DemoServer:
        """Wait until the server listens and every worker is ready."""
        self.wait_listening()
        if workers > 1:
            self.wait_for(r"worker \d+ ready", count=workers)
        return self

    def get(self, path: str) -> tuple[int, dict[str, str], str]:
        """GET ``path``: status, headers, body."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoServer]:
    server = DemoServer()
    try:
        yield server.start()
    finally:
        assert server.stop() == 0, server.output


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert isinstance(message, str)
    event = json.loads(message)
    assert isinstance(event, dict)
    return event


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes the connection; its close code and reason."""
    async with asyncio.timeout(TIMEOUT):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return exc.code, exc.reason


async def join(server: DemoServer, name: str) -> ClientConnection:
    """Join the chat as ``name`` and read our own join notice."""
    ws = await wsharbor.connect(server.url("/chat"), open_timeout=TIMEOUT)
    await ws.send(json.dumps({"type": "join", "name": name}))
    await next_event(ws, type="join", name=name)
    return ws


async def next_event(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    """The next event with these fields (other tests' members may come and go)."""
    while True:
        event = await recv_json(ws)
        if all(event.get(key) == value for key, value in fields.items()):
            return event


# Plain HTTP.


def test_index_page(demo: DemoServer) -> None:
    status, headers, body = demo.get("/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert '<ul id="messages"' in body
    assert '"/chat"' in body
    # Self-contained: no external resources; text goes in with textContent only.
    assert "http://" not in body and "https://" not in body and " src=" not in body
    assert "textContent" in body and "innerHTML" not in body


def test_http_routes(demo: DemoServer) -> None:
    assert demo.get("/healthz")[0] == 200  # the app server's own endpoint comes first
    assert demo.get("/readyz")[0] == 200
    status, headers, body = demo.get("/chat")
    assert (status, headers["Upgrade"]) == (426, "websocket")
    assert "WebSocket endpoint" in body
    assert demo.get("/echo")[0] == 426
    status, _, body = demo.get("/nothing-here")
    assert (status, body) == (404, "not found\n")


# WebSocket.


async def test_echo(demo: DemoServer) -> None:
    async with wsharbor.connect(demo.url("/echo"), open_timeout=TIMEOUT) as ws:
        for message in ["hello", "<script>alert(1)</script>", b"\x00\xff", "é" * 1000]:
            await ws.send(message)
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == message


async def test_echo_message_too_big(demo: DemoServer) -> None:
    async with wsharbor.connect(demo.url("/echo"), open_timeout=TIMEOUT) as ws:
        await ws.send("x" * MAX_MESSAGE_BYTES)
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "x" * MAX_MESSAGE_BYTES
        await ws.send("x" * (MAX_MESSAGE_BYTES + 1))
        assert await closed_with(ws) == (1009, "message too big")


async def test_unknown_path(demo: DemoServer) -> None:
    ws = await wsharbor.connect(demo.url("/nowhere"), open_timeout=TIMEOUT)
    assert await closed_with(ws) == (1008, "unknown path")


async def test_chat_two_members(demo: DemoServer) -> None:
    alice = await join(demo, "alice")
    bob = await join(demo, "bob")
    assert (await next_event(alice, type="join", name="bob"))["members"] >= 2

    await alice.send(json.dumps({"type": "message", "text": "hi <b>bob</b>"}))
    expected = {"type": "message", "name": "alice", "text": "hi <b>bob</b>"}
    assert await next_event(alice, type="message") == expected
    assert await next_event(bob, type="message") == expected

    await bob.send(json.dumps({"type": "message", "text": "hello alice"}))
    expected = {"type": "message", "name": "bob", "text": "hello alice"}
    assert await next_event(alice, type="message") == expected
    assert await next_event(bob, type="message") == expected

    await bob.close()
    leave = await next_event(alice, type="leave", name="bob")
    assert leave["members"] >= 1
    await alice.close()


async def test_chat_name_is_cleaned(demo: DemoServer) -> None:
    ws = await wsharbor.connect(demo.url("/chat"), open_timeout=TIMEOUT)
    await ws.send(json.dumps({"type": "join", "name": "  carol\n\x1b[31m  x "}))
    assert (await next_event(ws, type="join"))["name"] == "carol [31m x"
    await ws.close()


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        ("hello", 1008, 'expected JSON {"type": "join", ...}'),
        (json.dumps({"type": "message", "text": "x"}), 1008, 'expected JSON {"type": "join", ...}'),
        (json.dumps({"type": "join", "name": 3}), 1008, "name must be a string"),
        (json.dumps({"type": "join", "name": " \t "}), 1008, "name must have 1 to 32 characters"),
        (json.dumps({"type": "join", "name": "x" * 33}), 1008, "name must have 1 to 32 characters"),
        (b"binary", 1003, "text messages only"),
        ("x" * (MAX_MESSAGE_BYTES + 1), 1009, "message too big"),
    ],
)
async def test_chat_bad_join(demo: DemoServer, first: str | bytes, code: int, reason: str) -> None:
    ws = await wsharbor.connect(demo.url("/chat"), open_timeout=TIMEOUT)
    await ws.send(first)
    assert await closed_with(ws) == (code, reason)


@pytest.mark.parametrize(
    ("message", "code", "reason"),
    [
        ("not json", 1008, 'expected JSON {"type": "message", ...}'),
        (json.dumps({"type": "message", "text": None}), 1008, "text must be a string"),
        (b"\x00", 1003, "text messages only"),
        (json.dumps({"type": "message", "text": "x" * MAX_MESSAGE_BYTES}), 1009, "message too big"),
    ],
)
async def test_chat_bad_message(
    demo: DemoServer, message: str | bytes, code: int, reason: str
) -> None:
    ws = await join(demo, "mallory")
    await ws.send(message)
    assert await closed_with(ws) == (code, reason)


async def test_chat_rate_limit(demo: DemoServer) -> None:
    ws = await join(demo, "flood")
    # A client reads while it sends (one that doesn't stops reading once
    # max_queue messages wait, and never sees the close frame behind them).
    closed = asyncio.create_task(closed_with(ws))
    sent = 0
    async with asyncio.timeout(TIMEOUT):
        try:  # as fast as we can, until the server closes the connection
            while True:
                await ws.send(json.dumps({"type": "message", "text": str(sent)}))
                sent += 1
                await asyncio.sleep(0)  # let the close frame in
        except ConnectionClosed:
            pass
    assert sent > 20  # the burst
    assert await closed == (1008, "too many messages")


async def test_chat_blank_message_is_ignored(demo: DemoServer) -> None:
    ws = await join(demo, "dave")
    await ws.send(json.dumps({"type": "message", "text": "   "}))
    await ws.send(json.dumps({"type": "message", "text": "after"}))
    assert (await next_event(ws, type="message", name="dave"))["text"] == "after"
    await ws.close()


# In process, with serve(): the same object works without the app server.


async def test_with_serve_and_join_timeout() -> None:
    app = DemoApp(join_timeout=0.2)
    async with wsharbor.serve(app, "127.0.0.1", 0, process_request=app.process_request) as server:
        port = server.sockets[0].getsockname()[1]
        ws = await wsharbor.connect(f"ws://127.0.0.1:{port}/chat", open_timeout=TIMEOUT)
        assert await closed_with(ws) == (1008, "join timeout")
        async with wsharbor.connect(f"ws://127.0.0.1:{port}/echo", open_timeout=TIMEOUT) as echo:
            await echo.send("ping")
            assert await asyncio.wait_for(echo.recv(), TIMEOUT) == "ping"
    assert app.members == {}
