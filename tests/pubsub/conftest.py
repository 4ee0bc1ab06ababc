"""Fixtures and helpers for the wsharbor.pubsub tests.

:class:`HubServer` is a real wsharbor server whose connections join rooms of a
:class:`~wsharbor.pubsub.Hub` (``ws://.../?room=a,b&user=U&since=EPOCH:OFFSET``)
and publish what they send (JSON commands); members receive publications as
JSON carrying their position (the hub's ``format``). :class:`Client` is a real
wsharbor client that records everything it receives. Redis servers come from
:mod:`.redistools` through the ``redis_factory`` and ``redis_server`` fixtures
of ``tests/conftest.py`` (shared with the app server's tests): real
``redis-server`` processes on free ports, killed at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

import wsharbor
from wsharbor import ServerConnection
from wsharbor.pubsub import BrokerUnavailable, Hub, Position, Publication

from .redistools import Proxy

#: Deadline for anything that should happen promptly.
TIMEOUT = 10.0
HOST = "127.0.0.1"


def fmt(publication: Publication) -> str:
    """The hub's ``format`` in these tests: JSON with the position."""
    message = publication.message
    return json.dumps(
        {
            "r": publication.room,
            "e": publication.epoch,
            "o": publication.offset,
            "d": message if isinstance(message, str) else message.hex(),
            "p": publication.replayed,
            "u": publication.user_id,
        }
    )


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "") -> None:
    """Wait until ``predicate()`` is true, checking at every loop iteration; bounded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.005)


class HubServer:
    """A wsharbor server in this process whose handler joins rooms of ``hub``."""

    def __init__(self, hub: Hub, **serve_kwargs: Any) -> None:
        self.hub = hub
        self.serve_kwargs = serve_kwargs
        self.server: wsharbor.Server | None = None
        self.connections: list[ServerConnection] = []

    async def __aenter__(self) -> HubServer:
        if "sock" in self.serve_kwargs:
            self.server = await wsharbor.serve(self.handler, **self.serve_kwargs)
        else:
            self.server = await wsharbor.serve(self.handler, HOST, 0, **self.serve_kwargs)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await asyncio.wait_for(self.server.wait_closed(), TIMEOUT)

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def handler(self, ws: ServerConnection) -> None:
        self.connections.append(ws)
        query = parse_qs(urlsplit(ws.path).query, keep_blank_values=True)
        user = query.get("user", [None])[0]
        since = None
        if "since" in query:
            epoch, _, offset = query["since"][0].rpartition(":")
            since = Position(epoch, int(offset))
        for room in query.get("room", [""])[0].split(","):
            if not room:
                continue
            try:
                result = await self.hub.join(room, ws, user_id=user, since=since)
            except BrokerUnavailable as exc:
                await ws.send(json.dumps({"error": str(exc)}))
                await ws.close(1013, "broker unavailable")
                return
            await ws.send(
                json.dumps(
                    {
                        "joined": room,
                        "position": list(result.position),
                        "recovered": result.recovered,
                        "replayed": result.replayed,
                    }
                )
            )
        async for raw in ws:
            command = json.loads(raw)
            if "publish" in command:
                with contextlib.suppress(BrokerUnavailable):
                    await self.hub.publish(command["publish"], command["data"])
            elif "presence" in command:
                members = await self.hub.presence(command["presence"])
                await ws.send(json.dumps({"presence": [[p.client_id, p.user_id] for p in members]}))
            elif "dm" in command:
                reached = await self.hub.send_to_user(command["dm"], command["data"])
                await ws.send(json.dumps({"reached": reached}))


class Client:
    """A real client that records the publications, joins and replies it receives."""

    def __init__(self, ws: wsharbor.ClientConnection) -> None:
        self.ws = ws
        self.messages: list[dict[str, Any]] = []
        self.joined: dict[str, dict[str, Any]] = {}
        self.replies: list[dict[str, Any]] = []
        self.closed = asyncio.Event()
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(
        cls,
        port: int,
        rooms: str,
        *,
        user: str | None = None,
        since: Position | tuple[str, int] | None = None,
        wait_joined: bool = True,
    ) -> Client:
        path = f"/?room={quote(rooms)}"
        if user is not None:
            path += f"&user={quote(user)}"
        if since is not None:
            path += f"&since={quote(since[0])}:{since[1]}"
        ws = await asyncio.wait_for(wsharbor.connect(f"ws://{HOST}:{port}{path}"), TIMEOUT)
        client = cls(ws)
        if wait_joined:
            names = rooms.split(",")
            await until(
                lambda: all(n in client.joined for n in names) or client.closed.is_set(),
                what=f"joined {rooms}",
            )
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                data = json.loads(raw)
                if "joined" in data:
                    self.joined[data["joined"]] = data
                elif "o" in data:
                    self.messages.append(data)
                else:
                    self.replies.append(data)
        finally:
            self.closed.set()

    def in_room(self, room: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["r"] == room]

    def data(self, room: str) -> list[str]:
        return [m["d"] for m in self.in_room(room)]

    async def request(self, command: dict[str, Any]) -> dict[str, Any]:
        count = len(self.replies)
        await self.ws.send(json.dumps(command))
        await until(lambda: len(self.replies) > count, what=f"a reply to {command}")
        return self.replies[count]

    async def close(self) -> None:
        await asyncio.wait_for(self.ws.close(), TIMEOUT)
        await asyncio.wait_for(self.reader, TIMEOUT)


def assert_contiguous(messages: list[dict[str, Any]]) -> None:
    """Offsets of one room's messages go up by exactly one within an epoch."""
    for before, after in itertools.pairwise(messages):
        if before["e"] == after["e"]:
            assert after["o"] == before["o"] + 1, (before, after)


def is_contiguous(messages: list[dict[str, Any]]) -> bool:
    """:func:`assert_contiguous` as a predicate."""
    return all(
        before["e"] != after["e"] or after["o"] == before["o"] + 1
        for before, after in itertools.pairwise(messages)
    )


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Clients to close at teardown."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.ws.abort()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(client.reader, TIMEOUT)


@pytest.fixture
async def proxies() -> AsyncIterator[list[Proxy]]:
    opened: list[Proxy] = []
    yield opened
    for proxy in opened:
        await proxy.close()
