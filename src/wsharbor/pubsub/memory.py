"""The in-process broker behind ``memory://``: the same semantics as Redis, no dependency.

Positions, epochs, history and presence work as with Redis, so that a
single-process application gets history and recovery, and the hub's logic is
tested without a server. ``memory://NAME`` is shared by every hub of the
process (on one event loop) that names it, like processes sharing one Redis;
``memory://`` is private to its hub. Messages are delivered with
``loop.call_soon``, in publication order, as a subscriber connection would.
"""

from __future__ import annotations

import asyncio
import collections
import secrets
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..exceptions import BrokerUnavailable
from . import envelope
from .broker import Broker, BrokerListener, Entry, PublishRequest, RoomMeta
from .types import Position, Presence

__all__ = ["MemoryBroker"]


@dataclass
class _Room:
    epoch: str
    offset: int = 0
    top_id: str = ""
    history: collections.deque[Entry] = field(default_factory=collections.deque)
    expires: float = 0.0


class _Store:
    """What a memory:// broker shares: rooms, subscriptions, presence."""

    def __init__(self) -> None:
        self.rooms: dict[str, _Room] = {}
        self.subscribers: dict[bytes, set[MemoryBroker]] = {}
        #: room -> client_id -> (user_id, expires at, monotonic)
        self.presence: dict[str, dict[str, tuple[str, float]]] = {}

    def room(self, name: str) -> _Room | None:
        room = self.rooms.get(name)
        if room is not None and room.expires <= time.monotonic():
            del self.rooms[name]  # expired, as a Redis key with a TTL would
            return None
        return room


_shared: weakref.WeakValueDictionary[str, _Store] = weakref.WeakValueDictionary()


class MemoryBroker(Broker):
    """A broker inside this process (see the module docstring)."""

    def __init__(self, name: str = "", prefix: str = "wsharbor") -> None:
        super().__init__(prefix)
        self.address = f"memory://{name}"
        if name:
            store = _shared.get(name)
            if store is None:
                store = _Store()
                _shared[name] = store
        else:
            store = _Store()
        self.store = store
        self._channels: set[bytes] = set()
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def connected(self) -> bool:
        return self._started

    def _check(self) -> None:
        if not self._started:
            raise BrokerUnavailable(f"{self.address} is not started")

    async def start(self, listener: BrokerListener) -> None:
        self.listener = listener
        self._loop = asyncio.get_running_loop()
        self._started = True

    async def close(self) -> None:
        self._started = False
        self.unsubscribe(list(self._channels))

    async def ping(self) -> None:
        self._check()

    async def subscribe(self, channels: Sequence[bytes]) -> None:
        self._check()
        for channel in channels:
            self._channels.add(channel)
            self.store.subscribers.setdefault(channel, set()).add(self)

    def unsubscribe(self, channels: Sequence[bytes]) -> None:
        for channel in channels:
            self._channels.discard(channel)
            subscribers = self.store.subscribers.get(channel)
            if subscribers is not None:
                subscribers.discard(self)
                if not subscribers:
                    del self.store.subscribers[channel]

    def _deliver(self, channel: bytes, data: bytes) -> None:
        if channel in self._channels and self.listener is not None:
            self.listener.broker_message(channel, data)

    def _publish_raw(self, channel: bytes, data: bytes) -> int:
        subscribers = list(self.store.subscribers.get(channel, ()))
        for subscriber in subscribers:
            loop = subscriber._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon(subscriber._deliver, channel, data)
        return len(subscribers)

    async def publish(self, requests: Sequence[PublishRequest]) -> list[Position]:
        self._check()
        positions = []
        for request in requests:
            room = self.store.room(request.room)
            if room is None:
                room = self.store.rooms[request.room] = _Room(secrets.token_hex(4))
            room.offset += 1
            room.top_id = request.message_id
            room.expires = time.monotonic() + request.ttl
            if request.history:
                room.history.append(
                    Entry(
                        room.offset,
                        request.text,
                        request.payload,
                        request.published_at,
                        request.message_id,
                    )
                )
                while len(room.history) > request.history:
                    room.history.popleft()
            else:
                room.history.clear()
            data = envelope.encode(
                request.text,
                room.offset,
                room.epoch,
                request.published_at,
                request.message_id,
                request.payload,
            )
            self._publish_raw(self.room_channel(request.room), data)
            positions.append(Position(room.epoch, room.offset))
        return positions

    async def send(self, channel: bytes, data: bytes) -> int:
        self._check()
        return self._publish_raw(channel, data)

    async def history(
        self, room: str, after: int, until: int | None, limit: int
    ) -> tuple[Position, list[Entry]]:
        self._check()
        state = self.store.room(room)
        if state is None:
            return Position("", 0), []
        entries: list[Entry] = []
        if state.history:
            first = state.history[0].offset
            start = max(after + 1 - first, 0)
            for index in range(start, len(state.history)):
                entry = state.history[index]
                if (until is not None and entry.offset > until) or len(entries) >= limit:
                    break
                entries.append(entry)
        return Position(state.epoch, state.offset), entries

    def _meta(self, room: str, offset: int) -> RoomMeta:
        state = self.store.room(room)
        if state is None:
            return RoomMeta("", 0, "", None)
        check = None
        if state.history and offset >= state.history[0].offset:
            index = offset - state.history[0].offset
            if index < len(state.history):
                check = state.history[index].message_id
        return RoomMeta(state.epoch, state.offset, state.top_id, check)

    async def room_meta(self, rooms: Sequence[tuple[str, int]]) -> list[RoomMeta]:
        self._check()
        return [self._meta(room, offset) for room, offset in rooms]

    async def new_epoch(self, room: str, expected: str, epoch: str) -> RoomMeta:
        self._check()
        state = self.store.room(room)
        if state is not None and state.epoch == expected:
            state.epoch = epoch
            state.history.clear()
        return self._meta(room, 0)

    async def presence_add(self, entries: Sequence[tuple[str, str, str]], ttl: float) -> None:
        self._check()
        expires = time.monotonic() + ttl
        for room, client_id, user_id in entries:
            self.store.presence.setdefault(room, {})[client_id] = (user_id, expires)

    async def presence_remove(self, entries: Sequence[tuple[str, str]]) -> None:
        self._check()
        for room, client_id in entries:
            members = self.store.presence.get(room)
            if members is not None:
                members.pop(client_id, None)
                if not members:
                    del self.store.presence[room]

    async def presence_get(self, room: str) -> list[Presence]:
        self._check()
        members = self.store.presence.get(room, {})
        now = time.monotonic()
        for client_id in [c for c, (_, expires) in members.items() if expires <= now]:
            del members[client_id]
        return sorted(
            Presence(client_id, user_id or None) for client_id, (user_id, _) in members.items()
        )
