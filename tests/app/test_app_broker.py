"""``wsharbor run --broker``: the process's hub across workers and hosts, /readyz, /metrics.

Real ``wsharbor run`` processes (:class:`~tests.app.apptools.ServerProcess`),
real clients, real Redis servers (the ``redis_server`` fixture of
``tests/conftest.py``). The app (:data:`HUB_APP`) gets the hub with
``wsharbor.app.hub()`` and sets its ``format`` with ``hub_options``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import wsharbor
from wsharbor.exceptions import InvalidState

from ..pubsub.redistools import RedisServer
from .apptools import TIMEOUT, ServerProcess, deadline_loop, metric, write_app

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(sys.platform == "win32", reason="Unix-only"),
]

HUB_APP = """
import json
import os
from urllib.parse import parse_qs, urlsplit

from wsharbor.app import hub


def to_json(publication):
    return json.dumps(
        {
            "room": publication.room,
            "message": publication.message,
            "offset": publication.offset,
            "user": publication.user_id,
        }
    )


async def handler(websocket):
    query = parse_qs(urlsplit(websocket.path).query)
    room = query.get("room", ["lobby"])[0]
    user = query.get("user", [None])[0]
    the_hub = hub()
    await the_hub.join(room, websocket, user_id=user)
    await websocket.send(json.dumps({"joined": room, "pid": os.getpid(), "node": the_hub.node_id}))
    async for raw in websocket:
        command = json.loads(raw)
        if "publish" in command:
            position = await the_hub.publish(room, command["publish"])
            await websocket.send(json.dumps({"published": list(position)}))
        elif "presence" in command:
            members = await the_hub.presence(room)
            await websocket.send(json.dumps({"presence": sorted(p.user_id for p in members)}))
        elif "dm" in command:
            reached = await the_hub.send_to_user(command["dm"], command["data"])
            await websocket.send(json.dumps({"reached": reached}))


handler.hub_options = {"format": to_json, "presence_ttl": 6.0}
"""


class Member:
    """A client in a room of the test app: what it received, sorted by kind."""

    def __init__(self, ws: wsharbor.ClientConnection, joined: dict[str, Any]) -> None:
        self.ws = ws
        self.pid: int = joined["pid"]
        self.node: str = joined["node"]
        self.messages: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def join(cls, server: ServerProcess, user: str, room: str = "lobby") -> Member:
        path = f"/?room={quote(room)}&user={quote(user)}"
        ws = await wsharbor.connect(server.url(path), open_timeout=TIMEOUT)
        joined = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        return cls(ws, joined)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                data = json.loads(raw)
                (self.messages if "message" in data else self.replies).append(data)
                self.changed.set()
        except wsharbor.ConnectionClosed:
            pass  # the close code and reason are on self.ws
        finally:
            self.changed.set()

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        async with asyncio.timeout(TIMEOUT):
            while not predicate():
                if self.reader.done():
                    raise AssertionError(f"connection closed before {what}: {self.ws.close_code}")
                self.changed.clear()
                await self.changed.wait()

    async def got(self, message: str) -> dict[str, Any]:
        await self.until(lambda: any(m["message"] == message for m in self.messages), message)
        return next(m for m in self.messages if m["message"] == message)

    async def request(self, command: dict[str, Any]) -> dict[str, Any]:
        count = len(self.replies)
        await self.ws.send(json.dumps(command))
        await self.until(lambda: len(self.replies) > count, f"a reply to {command}")
        return self.replies[count]

    async def close(self) -> None:
        self.ws.abort() if self.reader.done() else await self.ws.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reader, TIMEOUT)


@pytest.fixture
async def members() -> AsyncIterator[list[Member]]:
    opened: list[Member] = []
    yield opened
    for member in opened:
        with contextlib.suppress(Exception):
            await member.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``wsharbor run hubapp:handler`` processes (stopped at teardown)."""
    write_app(tmp_path, "hubapp", HUB_APP)
    started: list[ServerProcess] = []

    def start(*args: str, workers: int = 1) -> ServerProcess:
        server = ServerProcess(
            ["hubapp:handler", "--port", "0", "--workers", str(workers), *args], tmp_path
        )
        started.append(server)
        server.wait_listening()
        if workers > 1:
            server.worker_pids(count=workers)
        return server

    yield start
    for server in started:
        assert server.stop() == 0, server.output


async def spread(
    server: ServerProcess, users: list[str], members: list[Member], limit: int = 100
) -> list[Member]:
    """One member per user, the first two on different workers (the balancing decides)."""
    placed: list[Member] = []
    for _ in range(limit):
        if len(placed) == len(users):
            return placed
        member = await Member.join(server, users[len(placed)])
        if len(placed) == 1 and member.pid == placed[0].pid:
            await member.close()  # the same worker as the first: try again
            continue
        members.append(member)
        placed.append(member)
    raise AssertionError("couldn't reach two different workers")


async def presence_is(member: Member, expected: list[str]) -> None:
    """Poll the room's presence until it is ``expected`` (leaving is asynchronous)."""
    alive = deadline_loop()
    presence: list[str] = []
    while alive():
        presence = (await member.request({"presence": True}))["presence"]
        if presence == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"presence is {presence}, expected {expected}")


async def wait_metric_at_least(server: ServerProcess, line_prefix: str, least: float) -> float:
    """Poll /metrics until the sample reaches ``least`` (workers flush every second)."""
    alive = deadline_loop()
    value = None
    while alive():
        value = await metric(server, line_prefix)
        if value is not None and value >= least:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{line_prefix} is {value}, expected at least {least}")


def test_hub_outside_wsharbor_run_is_a_clear_error() -> None:
    from wsharbor.app import hub

    with pytest.raises(
        InvalidState, match=r"hub\(\) is the hub of a process run by `wsharbor run`"
    ):
        hub()


async def test_memory_broker_by_default(
    servers: Callable[..., ServerProcess], members: list[Member]
) -> None:
    """No --broker: memory://, one process; rooms, presence, direct messages, metrics."""
    server = servers()
    alice = await Member.join(server, "alice")
    bob = await Member.join(server, "bob")
    members += [alice, bob]
    assert (await alice.request({"presence": True}))["presence"] == ["alice", "bob"]
    reply = await alice.request({"publish": "hello"})
    assert reply["published"][1] == 1
    for member in (alice, bob):
        assert (await member.got("hello"))["offset"] == 1
    assert (await alice.request({"dm": "bob", "data": "psst"}))["reached"] == 1
    assert (await bob.got("psst"))["user"] == "bob"
    assert not any(m["message"] == "psst" for m in alice.messages)
    assert await metric(server, "wsharbor_pubsub_published_total") == 1
    assert await metric(server, "wsharbor_pubsub_direct_sent_total") == 1
    assert await metric(server, "wsharbor_pubsub_delivered_total") == 3
    assert await metric(server, "wsharbor_pubsub_lag_seconds_count") == 1
    # The lowest of the workers' gauges, flushed every second: wait for it.
    assert await wait_metric_at_least(server, "wsharbor_pubsub_broker_connected", 1) == 1
    assert await asyncio.to_thread(server.http, "/readyz") == (200, "ready\n")


async def test_two_workers_share_rooms_over_redis(
    servers: Callable[..., ServerProcess], members: list[Member], redis_server: RedisServer
) -> None:
    server = servers("--broker", redis_server.url, workers=2)
    alice, bob = await spread(server, ["alice", "bob"], members)
    assert alice.pid != bob.pid

    # Presence spans the workers, seen from either side.
    for member in (alice, bob):
        await presence_is(member, ["alice", "bob"])

    # A publication on one worker reaches the members of the other, and back.
    await alice.request({"publish": "from alice"})
    await bob.request({"publish": "from bob"})
    for member in (alice, bob):
        first, second = await member.got("from alice"), await member.got("from bob")
        assert (first["offset"], second["offset"]) == (1, 2)

    # A direct message crosses workers too.
    assert (await bob.request({"dm": "alice", "data": "psst"}))["reached"] == 1
    await alice.got("psst")

    # /metrics adds up both workers' hubs: 2 publications, each received by 2 processes.
    await wait_metric_at_least(server, "wsharbor_pubsub_published_total", 2)
    await wait_metric_at_least(server, "wsharbor_pubsub_received_total", 5)  # 2 x 2 + the DM
    await wait_metric_at_least(server, "wsharbor_pubsub_delivered_total", 5)
    await wait_metric_at_least(server, "wsharbor_pubsub_lag_seconds_count", 4)

    # A member leaving disappears from presence everywhere.
    await bob.close()
    await presence_is(alice, ["alice"])


def subscriptions_of(redis: RedisServer, node: str) -> int:
    """Channels held by the subscriber connection of the hub ``node`` (CLIENT LIST)."""
    for client in redis.client().client_list(_type="pubsub"):
        if client.get("name") == f"wsharbor-sub-{node}":
            return int(client["sub"])
    raise AssertionError(f"no subscriber connection for {node}")


async def test_two_hosts_share_one_redis(
    servers: Callable[..., ServerProcess], members: list[Member], redis_server: RedisServer
) -> None:
    """Two ``wsharbor run`` processes on two ports: one room, one presence, direct messages."""
    host_a = servers("--broker", redis_server.url)
    host_b = servers("--broker", redis_server.url)
    assert host_a.port != host_b.port
    alice = await Member.join(host_a, "alice")
    bob = await Member.join(host_b, "bob")
    carol = await Member.join(host_b, "carol")
    members += [alice, bob, carol]

    for member in (alice, bob):
        presence = await member.request({"presence": True})
        assert presence["presence"] == ["alice", "bob", "carol"]

    await alice.request({"publish": "hello from A"})
    await carol.request({"publish": "hello from B"})
    for member in (alice, bob, carol):
        assert (await member.got("hello from A"))["offset"] == 1
        assert (await member.got("hello from B"))["offset"] == 2

    # Bob is on host B only: addressed by user id from host A, he gets it, and
    # host A never subscribed to his channel.
    redis = redis_server.client()
    assert dict(redis.pubsub_numsub("wsharbor:user:bob")) == {b"wsharbor:user:bob": 1}
    assert subscriptions_of(redis_server, alice.node) == 2  # the room and alice's own
    assert subscriptions_of(redis_server, bob.node) == 3  # the room, bob's and carol's
    assert (await alice.request({"dm": "bob", "data": "psst"}))["reached"] == 1
    assert (await bob.got("psst"))["user"] == "bob"
    assert (await alice.request({"dm": "nobody", "data": "?"}))["reached"] == 0
    await asyncio.sleep(0)
    assert not any(m["message"] == "psst" for m in alice.messages + carol.messages)


async def test_readyz_follows_redis_and_metrics_count_the_outage(
    servers: Callable[..., ServerProcess], members: list[Member], redis_server: RedisServer
) -> None:
    server = servers("--broker", redis_server.url, workers=2)
    assert await asyncio.to_thread(server.http, "/readyz") == (200, "ready\n")
    alice = await Member.join(server, "alice")
    members.append(alice)
    await alice.request({"publish": "before"})
    await alice.got("before")

    redis_server.kill()
    alive = deadline_loop()
    status, body = 0, ""
    while alive():
        status, body = await asyncio.to_thread(server.http, "/readyz")
        if status == 503:
            break
        await asyncio.sleep(0.05)
    assert (status, body) == (503, f"broker unavailable: redis://127.0.0.1:{redis_server.port}/0\n")
    await wait_metric_at_least(server, "wsharbor_pubsub_broker_disconnects_total", 2)

    # A worker started meanwhile (SIGTTIN: one more) waits for the broker
    # instead of dying, and is ready once it is back.
    mark = server.mark()
    server.signal(signal.SIGTTIN)
    await asyncio.to_thread(server.wait_for, r"WARNING .*broker unavailable .*retrying", after=mark)

    redis_server.restart()  # without persistence: the room's state is gone
    await asyncio.to_thread(server.wait_for, r"worker \d+ ready", after=mark)
    # Ready again once every worker reconnected (each answers some of the probes).
    alive = deadline_loop()
    streak = 0
    while alive() and streak < 10:
        status, body = await asyncio.to_thread(server.http, "/readyz")
        streak = streak + 1 if status == 200 else 0
        await asyncio.sleep(0.02)
    assert streak == 10, (status, body)
    await wait_metric_at_least(server, "wsharbor_pubsub_broker_reconnects_total", 2)
    await wait_metric_at_least(server, "wsharbor_pubsub_resubscribes_total", 1)
    # The lowest of the workers' gauges, flushed every second: wait for it.
    assert await wait_metric_at_least(server, "wsharbor_pubsub_broker_connected", 1) == 1

    # Redis lost the room's position: the loss is reported, never silent; by
    # default the member is closed with 1013 so that it resynchronises.
    await asyncio.wait_for(alice.reader, TIMEOUT)
    assert (alice.ws.close_code, alice.ws.close_reason) == (1013, "messages lost")
    await wait_metric_at_least(server, "wsharbor_pubsub_loss_events_total", 1)


async def test_a_worker_waiting_for_the_broker_stops_cleanly(
    servers: Callable[..., ServerProcess], redis_server: RedisServer
) -> None:
    server = servers("--broker", redis_server.url, workers=2)
    redis_server.kill()
    mark = server.mark()
    server.signal(signal.SIGTTIN)
    await asyncio.to_thread(server.wait_for, r"WARNING .*broker unavailable .*retrying", after=mark)
    # SIGTERM while a worker still waits for Redis: every worker exits at once, status 0.
    assert await asyncio.to_thread(server.stop) == 0, server.output
    assert len(server.wait_for(r"worker \d+ exited \(exit status 0\)", after=mark, count=3)) == 3
