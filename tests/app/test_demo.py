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
from wsharbor.exceptions import InvalidState
from wsharbor.pubsub import Hub

from ..pubsub.redistools import RedisServer
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

from examples.demo.app import MAX_MESSAGE_BYTES, ROOM, DemoApp  # noqa: E402


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
    """Join the chat as ``name`` and read the welcome and our own join notice."""
    ws = await wsharbor.connect(server.url("/chat"), open_timeout=TIMEOUT)
    await ws.send(json.dumps({"type": "join", "name": name}))
    welcome = await recv_json(ws)
    assert welcome["type"] == "welcome" and name in welcome["members"], welcome
    await next_event(ws, type="join", name=name)
    return ws


def without_position(event: dict[str, Any]) -> dict[str, Any]:
    """A room event without its ``epoch`` and ``offset`` (checked to be there)."""
    assert isinstance(event.get("epoch"), str) and isinstance(event.get("offset"), int), event
    return {key: value for key, value in event.items() if key not in ("epoch", "offset")}


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
    joined = await next_event(alice, type="join", name="bob")
    assert {"alice", "bob"} <= set(joined["members"])

    await alice.send(json.dumps({"type": "message", "text": "hi <b>bob</b>"}))
    expected = {"type": "message", "name": "alice", "text": "hi <b>bob</b>"}
    first = await next_event(alice, type="message")
    assert without_position(first) == expected
    assert await next_event(bob, type="message") == first  # the same position for both

    await bob.send(json.dumps({"type": "message", "text": "hello alice"}))
    expected = {"type": "message", "name": "bob", "text": "hello alice"}
    second = await next_event(alice, type="message")
    assert without_position(second) == expected
    assert await next_event(bob, type="message") == second
    assert second["epoch"] == first["epoch"] and second["offset"] > first["offset"]

    await bob.close()
    leave = await next_event(alice, type="leave", name="bob")
    assert "alice" in leave["members"] and "bob" not in leave["members"]
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
        (
            json.dumps({"type": "join", "name": "x", "since": {"epoch": "e"}}),
            1008,
            'since must be {"epoch": string, "offset": integer >= 0}',
        ),
        (
            json.dumps({"type": "join", "name": "x", "since": {"epoch": "e", "offset": -1}}),
            1008,
            'since must be {"epoch": string, "offset": integer >= 0}',
        ),
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


# Resuming after a reconnection (what the page does): nothing lost.


async def join_since(
    server: DemoServer, name: str, since: dict[str, Any] | None = None
) -> tuple[ClientConnection, list[dict[str, Any]], dict[str, Any]]:
    """Join, with ``since`` when given: the events sent before the welcome, and
    the welcome. Those events are the replay (offsets up to the welcome's
    position), possibly followed by live ones (after it)."""
    ws = await wsharbor.connect(server.url("/chat"), open_timeout=TIMEOUT)
    join: dict[str, Any] = {"type": "join", "name": name}
    if since is not None:
        join["since"] = since
    await ws.send(json.dumps(join))
    replayed = []
    while (event := await recv_json(ws))["type"] != "welcome":
        replayed.append(event)
    return ws, replayed, event


def replayed_of(before: list[dict[str, Any]], welcome: dict[str, Any]) -> list[dict[str, Any]]:
    """The events before the welcome that are not live ones (see :func:`join_since`)."""
    position = welcome["position"]
    return [
        event
        for event in before
        if event["epoch"] != position["epoch"] or event["offset"] <= position["offset"]
    ]


def position_of(event: dict[str, Any]) -> dict[str, Any]:
    return {"epoch": event["epoch"], "offset": event["offset"]}


async def resume_loses_nothing(host_a: DemoServer, host_b: DemoServer, tag: str) -> None:
    """Alice on A drops; bob (on B) talks meanwhile; alice reconnects to B with
    her last position: she gets exactly what she missed, in order, then live."""
    alice, before, welcome = await join_since(host_a, f"alice-{tag}")
    assert welcome["recovered"] is False
    assert replayed_of(before, welcome) == []
    last = position_of(await next_event(alice, type="join", name=f"alice-{tag}"))
    bob = await join(host_b, f"bob-{tag}")
    last = position_of(await next_event(alice, type="join", name=f"bob-{tag}"))
    await alice.close()  # the page's connection drops
    await next_event(bob, type="leave", name=f"alice-{tag}")
    texts = [f"while you were away {n}" for n in range(5)]
    for text in texts:
        await bob.send(json.dumps({"type": "message", "text": text}))
        await next_event(bob, type="message", text=text)

    again, before, welcome = await join_since(host_b, f"alice-{tag}", since=last)
    assert welcome["recovered"] is True
    replayed = replayed_of(before, welcome)
    offsets = [event["offset"] for event in replayed]
    assert offsets == list(range(last["offset"] + 1, welcome["position"]["offset"] + 1))
    assert {event["epoch"] for event in replayed} == {last["epoch"]}
    said = [e["text"] for e in replayed if e["type"] == "message" and e["name"] == f"bob-{tag}"]
    assert said == texts
    # Then live, right after: her own join, then what bob says next.
    rejoin = await next_event(again, type="join", name=f"alice-{tag}")
    assert rejoin["offset"] > welcome["position"]["offset"]
    await bob.send(json.dumps({"type": "message", "text": "welcome back"}))
    assert (await next_event(again, type="message"))["text"] == "welcome back"

    # A position from another epoch (or older than the history) can't be resumed:
    # the welcome says so, and nothing is replayed.
    stale, before, welcome = await join_since(host_a, "carol", {"epoch": "gone", "offset": 3})
    assert (replayed_of(before, welcome), welcome["recovered"]) == ([], False)
    for ws in (again, bob, stale):
        await ws.close()


async def test_chat_resume_after_reconnect(demo: DemoServer) -> None:
    await resume_loses_nothing(demo, demo, "local")


async def test_chat_one_room_across_workers_and_hosts(redis_server: RedisServer) -> None:
    """Two ``wsharbor run`` of the demo (one with two workers) on one Redis."""
    broker = ["--broker", redis_server.url]
    host_a = DemoServer([*broker, "--workers", "2"])
    host_b = DemoServer(broker)
    try:
        host_a.start(workers=2)
        host_b.start()
        members = [await join(host, f"m{n}") for n, host in enumerate([host_a] * 3 + [host_b])]
        # The member list spans the hosts (presence), seen from either side.
        welcome_everyone = sorted(f"m{n}" for n in range(4))
        last_join = await next_event(members[0], type="join", name="m3")
        assert last_join["members"] == welcome_everyone
        await members[3].send(json.dumps({"type": "message", "text": "from host B"}))
        for ws in members:
            event = await next_event(ws, type="message")
            assert (event["name"], event["text"]) == ("m3", "from host B")
        for ws in members:
            await ws.close()
        await resume_loses_nothing(host_a, host_b, "hosts")
    finally:
        assert host_a.stop() == 0, host_a.output
        assert host_b.stop() == 0, host_b.output


# In process, with serve(): the same object works without the app server.


async def test_with_serve_and_join_timeout() -> None:
    async with Hub(**DemoApp.hub_options) as hub:
        app = DemoApp(hub=hub, join_timeout=0.2)
        async with wsharbor.serve(
            app, "127.0.0.1", 0, process_request=app.process_request
        ) as server:
            port = server.sockets[0].getsockname()[1]
            ws = await wsharbor.connect(f"ws://127.0.0.1:{port}/chat", open_timeout=TIMEOUT)
            assert await closed_with(ws) == (1008, "join timeout")
            async with wsharbor.connect(f"ws://127.0.0.1:{port}/echo", open_timeout=TIMEOUT) as e:
                await e.send("ping")
                assert await asyncio.wait_for(e.recv(), TIMEOUT) == "ping"
            chat = await wsharbor.connect(f"ws://127.0.0.1:{port}/chat", open_timeout=TIMEOUT)
            await chat.send(json.dumps({"type": "join", "name": "local"}))
            assert (await recv_json(chat))["members"] == ["local"]
            assert len(hub.local_members(ROOM)) == 1
            await chat.close()
        assert hub.local_members(ROOM) == []
        assert await hub.presence(ROOM) == []


def test_without_wsharbor_run_the_app_needs_a_hub() -> None:
    with pytest.raises(InvalidState, match="wsharbor run"):
        DemoApp().hub  # noqa: B018
