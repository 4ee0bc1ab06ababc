"""Rooms, direct messages, presence and history across processes and hosts.

Theory of operation
-------------------

A :class:`Hub` lives in one process (one event loop) and talks to one broker
(:mod:`.broker`): ``memory://`` in-process, or Redis. Each room this process
has members in is one broker channel, subscribed once per process however
many members the room has here (and unsubscribed ``linger`` seconds after its
last local member left); each user id with a local connection is one more
channel. A publication received on a room channel is formatted once and
written to every local member with :func:`wsharbor.fanout`, which encodes the
frame once.

**Positions.** The broker gives every publication of a room an offset
(1, 2, 3, ...) within an epoch, in one atomic step with appending it to the
room's history (Redis: one Lua script), so every process sees a room's
publications in the same order. A room here remembers the position of the
last publication it delivered (``epoch``, ``last``, and the id of that
publication). A publication is delivered live when it is the next one
(``last + 1`` in the same epoch); an older one is a duplicate and dropped;
anything else (a gap, a new epoch) sends the room to *sync*.

**Sync** (:meth:`Hub._sync`) runs when a room opens (subscribe, wait for the
broker's confirmation, then read the position: nothing published after that
can be missed), after a gap, and for every room after the broker connection
was restored. Meanwhile publications received for the room are buffered
(bounded). It reads the room's position from the broker and compares it with
what the room delivered: the same position means nothing was missed; further
on in the same epoch means publications were missed, and they are back-filled
from the history when the room keeps one and still has them, otherwise they
are *lost* and reported (:class:`~wsharbor.pubsub.Loss`, ``on_loss``, never
silently); behind, or a different publication at the same offset, means the
broker lost publications this process saw (a failover with asynchronous
replication): the hub starts a new epoch in the broker so that every client
of the room learns it can't resume, and reports the loss. Buffered
publications that arrived before the position was read but are not in it
(another epoch, or past it) belong to a timeline the broker lost, and are
dropped. Then the rest of the buffer is delivered, the room is live again,
and what was lost on the way is reported once, with the position live
delivery goes on from.

**Members** of a room are *live* (they get the fan-out) or *recovering*. A
member recovering (a join with ``since``, or with history a live member that
was skipped because its write buffer was full) reads the history from its own
offset up to the room's position with awaited ``send()`` (so at its own pace,
bounded memory), and joins the fan-out at the exact moment it reaches the
room's position, in the same event loop step: no gap and no duplicate at the
seam. A recovering member that falls more than the history's size behind can't
catch up: it is closed with 1013. Without history, a member that is skipped
``max_skips`` times in a row is closed with 1013 too.

**Slow consumers: 1013, not 1008.** 1013 (Try Again Later) says the server
shed this client for a temporary condition; 1008 (Policy Violation) says the
client broke a rule, and clients usually don't reconnect after it. A client
that can't keep up now may well keep up after reconnecting (and, with
history, resume from its last position), so it gets 1013. The same code, with
the reason ``"messages lost"``, is the default signal of a :class:`Loss`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Literal

from ..asyncio import Connection, fanout
from ..exceptions import BrokerUnavailable, ConnectionClosed, InvalidState
from ..protocol.connection import State
from ..typing import Data
from . import envelope
from .broker import Broker, Entry, PublishRequest, RoomMeta, parse_url
from .memory import MemoryBroker
from .types import HubStats, JoinResult, Loss, Position, Presence, Publication

__all__ = ["Hub"]

#: Close code for a member that can't keep up, and the default loss signal.
TRY_AGAIN_LATER = 1013
SLOW_CONSUMER_REASON = "slow consumer"
MESSAGES_LOST_REASON = "messages lost"

#: Publications buffered per room while it syncs; past it the buffer is
#: dropped and the sync reads the history (or reports the loss) instead.
MAX_PENDING = 10_000
#: Publications sent to the broker in one pipeline.
PUBLISH_BATCH = 256
#: Presence entries of concurrent joins added in one broker call.
PRESENCE_BATCH = 1000

_LIVE: Literal["live"] = "live"
_SYNCING: Literal["syncing"] = "syncing"
_JOINING: Literal["joining"] = "joining"
_RECOVERING: Literal["recovering"] = "recovering"
_GONE: Literal["gone"] = "gone"

logger = logging.getLogger("wsharbor.pubsub")


class _Client:
    """One connection known to the hub."""

    __slots__ = ("client_id", "members", "user", "ws")

    def __init__(self, ws: Connection, client_id: str) -> None:
        self.ws = ws
        self.client_id = client_id
        self.members: dict[str, _Member] = {}
        self.user: _User | None = None


class _Member:
    """One connection in one room."""

    __slots__ = ("client", "epoch", "last", "replayed", "room", "skips", "state", "task")

    def __init__(self, client: _Client, room: _Room) -> None:
        self.client = client
        self.room = room
        self.state: str = _JOINING
        self.skips = 0
        # While recovering: the position of the last message this member got.
        self.epoch = ""
        self.last = 0
        self.replayed = 0
        self.task: asyncio.Task[None] | None = None


class _Room:
    """A room with local members (or lingering after the last one left)."""

    __slots__ = (
        "channel",
        "epoch",
        "history",
        "known",
        "last",
        "last_id",
        "last_time",
        "linger",
        "live",
        "loss",
        "members",
        "name",
        "pending",
        "pending_dropped",
        "ready",
        "received",
        "recovering",
        "skipping",
        "state",
        "subscribed",
        "task",
        "waiters",
    )

    def __init__(self, name: str, channel: bytes, history: int) -> None:
        self.name = name
        self.channel = channel
        self.history = history
        self.members: dict[Connection, _Member] = {}
        self.live: dict[Connection, _Member] = {}
        self.recovering: dict[Connection, _Member] = {}
        self.skipping: dict[Connection, _Member] = {}
        self.state: str = _SYNCING
        self.ready = asyncio.Event()
        self.known = False  # the position was read from the broker once
        self.subscribed = False
        self.epoch = ""
        self.last = 0
        self.last_id = ""
        self.last_time = time.monotonic()
        #: Publications received while syncing, numbered by ``received``.
        self.pending: list[tuple[int, envelope.Envelope]] = []
        self.pending_dropped = False
        self.received = 0
        #: Publications lost, found by the current sync: (how many or None, why).
        self.loss: tuple[int | None, str] | None = None
        self.task: asyncio.Task[None] | None = None
        self.linger: asyncio.TimerHandle | None = None
        #: Joins waiting for the room to reach an offset (:meth:`Hub._reach`).
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.last)


class _User:
    """A user id with local connections: one channel for direct messages."""

    __slots__ = ("channel", "clients", "subscribing", "user_id")

    def __init__(self, user_id: str, channel: bytes) -> None:
        self.user_id = user_id
        self.channel = channel
        self.clients: set[_Client] = set()
        self.subscribing: asyncio.Task[None] | None = None


HistorySetting = int | None | Callable[[str], "int | None"]
Formatter = Callable[[Publication], Data]
LossHandler = Callable[[Loss], "Awaitable[object] | object"]


def _check_name(what: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty str, not {value!r}")
    if len(value) > 1024:
        raise ValueError(f"{what} is longer than 1024 characters")
    return value


class Hub:
    """Rooms and direct messages across processes and hosts, over a broker.

    ::

        hub = Hub("redis://127.0.0.1:6379/0", history=100)
        await hub.start()                      # or: async with Hub(...) as hub:

        async def handler(websocket):
            result = await hub.join("lobby", websocket, user_id="alice")
            async for message in websocket:
                await hub.publish("lobby", message)

    ``url``: ``memory://`` (default: this process only, no dependency),
    ``memory://NAME`` (shared by the hubs of this process that name it),
    ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``redis+sentinel://host:port[,host:port...]/service[/db]``. A malformed URL
    raises :class:`~wsharbor.exceptions.InvalidBrokerURL` here; a Redis URL
    without redis-py installed raises ImportError naming
    ``pip install 'wsharbor[redis]'``.

    Options:

    - ``history``: messages of history each room keeps (``None`` or 0: none,
      the default), or a function of the room name returning it, for
      per-room settings. Every process publishing to a room should agree.
    - ``history_ttl``: seconds a room's position and history are kept after
      its last publication (one day by default). When they expire the room
      starts a new epoch.
    - ``format``: ``format(publication) -> str | bytes``, what members receive
      for a :class:`~wsharbor.pubsub.Publication`; called once per
      publication per process (once per member for replays). By default
      members receive the message as published. Give it to send the position
      along, e.g. ``json.dumps({"offset": p.offset, "epoch": p.epoch,
      "data": p.message})``.
    - ``on_loss``: ``on_loss(loss)`` (may be a coroutine function) when
      publications of a room are known lost for local members; by default
      those members are closed with 1013 and the reason ``"messages lost"``.
    - ``max_skips``: in rooms without history, a member skipped this many
      times in a row (its write buffer stayed over ``write_limit``) is closed
      with 1013 (``"slow consumer"``). With history a skipped member catches
      up from the history instead, and is closed only when it falls more than
      the history behind.
    - ``presence_ttl``: seconds a member stays in :meth:`presence` after its
      process stopped refreshing it (refreshed every third of it).
    - ``timeout``: the bound on every wait for the broker: connecting,
      publishing, joining, reading; past it, BrokerUnavailable.
    - ``linger``: seconds a room stays subscribed after its last local member
      left (a member that reconnects at once finds it still there).
    - ``replay_batch``: history entries read per request when replaying.
    - ``max_pending_publishes``: publications waiting for the broker at most;
      past it ``publish()`` raises BrokerUnavailable at once.
    - ``reconnect_max_delay``, ``health_interval``: the Redis subscriber
      connection's backoff ceiling, and how often it is pinged (a connection
      silent for three intervals is replaced).
    - ``prefix``: of every Redis key and channel.
    - ``broker_options``: extra keyword arguments for redis-py's clients
      (TLS settings such as ``ssl_ca_certs``; ``sentinel_kwargs`` for Sentinel).

    A hub belongs to the event loop that started it: call it from that loop's
    thread. It has nothing specific to an application server; any handler
    given the hub object can use it.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        history: HistorySetting = None,
        history_ttl: float = 86400.0,
        format: Formatter | None = None,
        on_loss: LossHandler | None = None,
        max_skips: int = 10,
        presence_ttl: float = 30.0,
        timeout: float = 5.0,
        linger: float = 2.0,
        replay_batch: int = 100,
        max_pending_publishes: int = 10_000,
        reconnect_max_delay: float = 5.0,
        health_interval: float = 1.0,
        prefix: str = "wsharbor",
        broker_options: Mapping[str, Any] | None = None,
    ) -> None:
        parsed = parse_url(url)
        if not (history is None or callable(history) or _is_count(history)):
            raise ValueError(f"history must be None, an int >= 0 or a function, not {history!r}")
        for name, value in (
            ("history_ttl", history_ttl),
            ("presence_ttl", presence_ttl),
            ("timeout", timeout),
            ("reconnect_max_delay", reconnect_max_delay),
            ("health_interval", health_interval),
        ):
            if not isinstance(value, int | float) or not value > 0 or math.isinf(value):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if not isinstance(linger, int | float) or linger < 0:
            raise ValueError(f"linger must be >= 0 seconds, not {linger!r}")
        for name, count in (
            ("max_skips", max_skips),
            ("replay_batch", replay_batch),
            ("max_pending_publishes", max_pending_publishes),
        ):
            if not _is_count(count) or count < 1:
                raise ValueError(f"{name} must be an int >= 1, not {count!r}")
        _check_name("prefix", prefix)
        self.url = parsed.address
        self.node_id = secrets.token_hex(4)
        self.history = history
        self.history_ttl = history_ttl
        self.format = format
        self.on_loss = on_loss
        self.max_skips = max_skips
        self.presence_ttl = presence_ttl
        self.timeout = timeout
        self.linger = linger
        self.replay_batch = replay_batch
        self.max_pending_publishes = max_pending_publishes
        #: Counters and the lag histogram (plain integers; see HubStats).
        self.stats = HubStats()
        self._broker: Broker
        if parsed.is_memory:
            self._broker = MemoryBroker(parsed.name, prefix)
        else:
            from .redis_broker import RedisBroker

            self._broker = RedisBroker(
                parsed,
                prefix=prefix,
                timeout=timeout,
                reconnect_max_delay=reconnect_max_delay,
                health_interval=health_interval,
                options=broker_options,
                node_id=self.node_id,
                logger=logger,
            )
        self._rooms: dict[str, _Room] = {}
        self._users: dict[str, _User] = {}
        self._clients: dict[Connection, _Client] = {}
        self._channels: dict[bytes, _Room | _User] = {}
        self._client_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._started = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = asyncio.Event()
        self._outbox: list[tuple[PublishRequest, asyncio.Future[Position], float]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: A publish() sending its own publication (see publish()) is in flight.
        self._publishing = False
        self._presence_out: list[tuple[str, str]] = []
        self._presence_flusher: asyncio.Task[None] | None = None
        self._presence_in: list[tuple[tuple[str, str, str], asyncio.Future[None]]] = []
        self._presence_adder: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "ready" if self.ready else "not ready"
        return f"<Hub {self.url} node {self.node_id} {state}, {len(self._rooms)} rooms>"

    # Lifecycle.

    async def start(self) -> None:
        """Connect to the broker.

        Raises :class:`~wsharbor.exceptions.BrokerUnavailable`, naming the
        broker's address, when it can't be reached within ``timeout``.
        """
        if self._started:
            raise InvalidState("the hub is already started")
        if self._closed:
            raise InvalidState("the hub is closed")
        self._loop = asyncio.get_running_loop()
        await self._broker.start(self)
        self._started = True
        self._connected.set()
        self._heartbeat = self._spawn(self._refresh_presence())
        logger.debug("hub %s started on %s", self.node_id, self.url)

    async def close(self) -> None:
        """Leave every room (presence included) and disconnect from the broker.

        Members' connections are not closed: they belong to the application.
        Publications still waiting for the broker fail with BrokerUnavailable.
        """
        if self._closed:
            return
        self._closed = True
        self._connected.clear()
        for room in self._rooms.values():
            if room.linger is not None:
                room.linger.cancel()
        for request_future in self._outbox:
            if not request_future[1].done():
                request_future[1].set_exception(BrokerUnavailable("the hub is closed"))
        self._outbox.clear()
        for _, joining in self._presence_in:
            if not joining.done():
                joining.set_exception(BrokerUnavailable("the hub is closed"))
        self._presence_in.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            _, stuck = await asyncio.wait(tasks, timeout=self.timeout)
            if stuck:
                logger.warning("%d pubsub tasks did not stop when cancelled", len(stuck))
        if self._started:
            entries = [
                (name, client.client_id)
                for client in self._clients.values()
                for name in client.members
            ]
            if entries and self._broker.connected:
                with contextlib.suppress(BrokerUnavailable, TimeoutError):
                    async with asyncio.timeout(self.timeout):
                        await self._broker.presence_remove(entries)
            await self._broker.close()
        for room in self._rooms.values():
            for member in room.members.values():
                member.state = _GONE
        self._rooms.clear()
        self._users.clear()
        self._clients.clear()
        self._channels.clear()

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def ready(self) -> bool:
        """Whether the hub is started and its broker connection is up (for /readyz)."""
        return self._started and not self._closed and self._broker.connected

    async def check(self) -> bool:
        """Round-trip to the broker within ``timeout``: whether it answered."""
        if not self.ready:
            return False
        try:
            async with asyncio.timeout(self.timeout):
                await self._broker.ping()
        except (BrokerUnavailable, TimeoutError):
            return False
        return True

    def _check_running(self) -> None:
        if self._closed:
            raise InvalidState("the hub is closed")
        if not self._started:
            raise InvalidState("the hub isn't started: await hub.start() first")

    def _spawn(self, coro: Awaitable[Any], *, awaited: bool = False) -> asyncio.Task[Any]:
        """Run ``coro`` in a task the hub cancels when it closes.

        Its failure is logged, unless ``awaited`` (someone awaits its result).
        """
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if not awaited:
            task.add_done_callback(_log_failure)
        return task

    def _history_for(self, room: str) -> int:
        setting = self.history
        if callable(setting):
            setting = setting(room)
            if not (setting is None or _is_count(setting)):
                raise ValueError(f"history({room!r}) returned {setting!r}: expected an int >= 0")
        return setting or 0

    # Rooms.

    async def join(
        self,
        room: str,
        websocket: Connection,
        *,
        user_id: str | None = None,
        since: Position | tuple[str, int] | None = None,
    ) -> JoinResult:
        """Add ``websocket`` to ``room``; it leaves by itself when it closes.

        ``user_id`` names its user, for :meth:`send_to_user` and
        :meth:`presence` (a connection has one user id). ``since`` is the
        :class:`Position` of the last message the client got: what was published
        after it is sent first, in order, exactly once, then live delivery
        continues with no gap and no duplicate; the result's ``recovered`` says
        whether that was possible (see :class:`JoinResult`). Raises
        BrokerUnavailable when the broker can't be reached within ``timeout``
        (the connection is then not a member), and ConnectionClosed if the
        connection closes during the replay. Joining a room twice does nothing.
        """
        self._check_running()
        _check_name("room", room)
        if since is not None:
            since = _position(since)
        client = self._client(websocket)
        if user_id is not None:
            await self.bind_user(websocket, user_id)
        existing = client.members.get(room)
        if existing is not None and existing.state is not _GONE:
            position = existing.room.position
            return JoinResult(position, since == position)
        state = self._room(room)
        member = _Member(client, state)
        client.members[room] = member
        state.members[websocket] = member
        try:
            await self._wait_ready(state)
            async with asyncio.timeout(self.timeout):
                await self._add_presence((room, client.client_id, _user_of(client)))
            await self._wait_ready(state)
        except TimeoutError:
            self._remove(member)
            raise BrokerUnavailable(
                f"room {room!r}: the broker at {self.url} did not answer in time"
            ) from None
        except BaseException:
            self._remove(member)
            raise
        if member.state is _GONE:
            return JoinResult(state.position, False)
        if since is not None and since.epoch == state.epoch and since.offset > state.last:
            # The client saw a publication on another host that this one has
            # not received yet (it is on its way): wait for it, briefly.
            await self._reach(state, since.offset)
            if member.state is _GONE:
                return JoinResult(state.position, False)
        position = state.position
        if since is None:
            self._go_live(member)
            return JoinResult(position, False)
        if since == position:
            self._go_live(member)
            self.stats.joins_recovered += 1
            return JoinResult(position, True)
        if not state.history or since.epoch != state.epoch or since.offset > state.last:
            self._go_live(member)
            self.stats.joins_unrecovered += 1
            return JoinResult(position, False)
        member.epoch, member.last = since
        member.state = _RECOVERING
        state.recovering[websocket] = member
        try:
            outcome = await self._replay(member, bounded=True)
        except BaseException:
            self._remove(member)
            raise
        if outcome is _LIVE:
            self.stats.joins_recovered += 1
            return JoinResult(Position(member.epoch, member.last), True, member.replayed)
        if member.state is _RECOVERING:  # the history no longer has what it needs
            self._go_live(member)
        self.stats.joins_unrecovered += 1
        return JoinResult(state.position, False, member.replayed)

    async def leave(self, room: str, websocket: Connection) -> None:
        """Remove ``websocket`` from ``room`` (nothing if it isn't a member)."""
        client = self._clients.get(websocket)
        member = None if client is None else client.members.get(room)
        if member is not None:
            self._remove(member)

    def local_members(self, room: str) -> list[Connection]:
        """The connections of this process in ``room``."""
        state = self._rooms.get(room)
        return [] if state is None else list(state.members)

    @property
    def rooms(self) -> list[str]:
        """The rooms this process has members in (or lingering)."""
        return list(self._rooms)

    async def presence(self, room: str) -> list[Presence]:
        """Every member of ``room`` in every process, as the broker has them.

        A member whose process stopped refreshing it (killed) disappears
        within ``presence_ttl``. This process's own members are as it knows
        them: one that left (or whose connection closed) is not listed, even
        while its removal is still on its way to the broker, so that a
        handler announcing a departure lists who is left.
        """
        self._check_running()
        _check_name("room", room)
        try:
            async with asyncio.timeout(self.timeout):
                members = await self._broker.presence_get(room)
        except TimeoutError:
            raise BrokerUnavailable(f"the broker at {self.url} did not answer in time") from None
        mine = f"{self.node_id}."
        state = self._rooms.get(room)
        here = (
            set()
            if state is None
            else {member.client.client_id for member in state.members.values()}
        )
        return [p for p in members if not p.client_id.startswith(mine) or p.client_id in here]

    async def publish(self, room: str, message: Data) -> Position:
        """Publish ``message`` (str: text, bytes: binary) to every member of ``room``.

        Returns the publication's position. Concurrent calls are sent to the
        broker together (one pipeline). Raises BrokerUnavailable when the broker
        can't be reached within ``timeout`` (the message may then have been
        published or not) or when ``max_pending_publishes`` are already waiting.
        """
        self._check_running()
        _check_name("room", room)
        if isinstance(message, str):
            text, payload = True, message.encode()
        elif isinstance(message, bytes | bytearray | memoryview):
            text, payload = False, bytes(message)
        else:
            raise TypeError(f"can't publish {type(message).__name__}: expected str or bytes")
        if len(self._outbox) >= self.max_pending_publishes:
            self.stats.publish_errors += 1
            raise BrokerUnavailable(
                f"{len(self._outbox)} publications already wait for the broker at {self.url}"
            )
        request = PublishRequest(
            room,
            text,
            payload,
            time.time(),
            f"{self.node_id}.{next(self._message_ids)}",
            self._history_for(room),
            math.ceil(self.history_ttl),
        )
        broker = self._broker
        if (
            broker.publishes_over_network
            and not self._publishing
            and self._flusher is None
            and broker.connected
        ):
            # Nothing in flight (a publisher at a steady pace): this call sends
            # its publication itself, without a task and its loop iterations
            # (a fifth fewer function calls per publish); calls made meanwhile wait in the
            # outbox and go together once it is done, in the order of the calls.
            self._publishing = True
            try:
                (position,) = await broker.publish([request])
            except BrokerUnavailable:
                self.stats.publish_errors += 1
                raise
            finally:
                self._publishing = False
                if self._outbox and self._flusher is None and not self._closed:
                    self._flusher = self._spawn(self._flush_outbox())
            self.stats.published += 1
            return position
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Position] = loop.create_future()
        self._outbox.append((request, future, loop.time() + self.timeout))
        if self._flusher is None and not self._publishing:
            self._flusher = self._spawn(self._flush_outbox())
        try:
            return await future
        except BrokerUnavailable:
            self.stats.publish_errors += 1
            raise

    async def _flush_outbox(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._outbox:
                if not self._broker.connected:
                    try:
                        async with asyncio.timeout_at(self._outbox[0][2]):
                            await self._connected.wait()
                    except TimeoutError:
                        now = loop.time()
                        while self._outbox and self._outbox[0][2] <= now:
                            _, future, _ = self._outbox.pop(0)
                            if not future.done():
                                future.set_exception(
                                    BrokerUnavailable(
                                        f"no connection to the broker at {self.url} for "
                                        f"{self.timeout:g}s: not published"
                                    )
                                )
                        continue
                batch = self._outbox[:PUBLISH_BATCH]
                del self._outbox[:PUBLISH_BATCH]
                try:
                    positions = await self._broker.publish([request for request, _, _ in batch])
                except BrokerUnavailable as exc:
                    error = f"{exc}; the message may or may not have been published"
                    for _, future, _ in batch:
                        if not future.done():
                            future.set_exception(BrokerUnavailable(error))
                    continue
                self.stats.published += len(batch)
                for (_, future, _), position in zip(batch, positions, strict=True):
                    if not future.done():
                        future.set_result(position)
        finally:
            self._flusher = None

    # Users.

    async def bind_user(self, websocket: Connection, user_id: str) -> None:
        """Give ``websocket`` the user id ``user_id`` (also done by ``join(user_id=...)``).

        From then on :meth:`send_to_user` reaches it. Raises ValueError if the
        connection already has another user id.
        """
        self._check_running()
        _check_name("user_id", user_id)
        client = self._client(websocket)
        if client.user is not None:
            if client.user.user_id != user_id:
                raise ValueError(
                    f"this connection is user {client.user.user_id!r}, not {user_id!r}"
                )
        else:
            user = self._users.get(user_id)
            if user is None:
                channel = self._broker.user_channel(user_id)
                user = self._users[user_id] = _User(user_id, channel)
                self._channels[channel] = user
                user.subscribing = self._spawn(self._broker.subscribe([channel]), awaited=True)
            user.clients.add(client)
            client.user = user
        user = client.user
        if user.subscribing is not None:
            try:
                await asyncio.shield(user.subscribing)
            except BrokerUnavailable:
                self._unbind(client)
                raise
            user.subscribing = None

    def _unbind(self, client: _Client) -> None:
        user, client.user = client.user, None
        if user is None:
            return
        user.clients.discard(client)
        if not user.clients and self._users.get(user.user_id) is user:
            del self._users[user.user_id]
            self._channels.pop(user.channel, None)
            if user.subscribing is not None:
                user.subscribing.cancel()
            self._broker.unsubscribe([user.channel])

    async def send_to_user(self, user_id: str, message: Data) -> int:
        """Send ``message`` to every connection of ``user_id``, in every process.

        Returns how many processes have the user (0: connected nowhere). Only
        processes holding a connection of the user subscribe to its channel.
        Direct messages have no history: delivery is at most once.
        """
        self._check_running()
        _check_name("user_id", user_id)
        if isinstance(message, str):
            text, payload = True, message.encode()
        elif isinstance(message, bytes | bytearray | memoryview):
            text, payload = False, bytes(message)
        else:
            raise TypeError(f"can't send {type(message).__name__}: expected str or bytes")
        data = envelope.encode(
            text, 0, "", time.time(), f"{self.node_id}.{next(self._message_ids)}", payload
        )
        try:
            async with asyncio.timeout(self.timeout):
                reached = await self._broker.send(self._broker.user_channel(user_id), data)
        except TimeoutError:
            raise BrokerUnavailable(f"the broker at {self.url} did not answer in time") from None
        self.stats.direct_sent += 1
        return reached

    # Connections, rooms and members.

    def _client(self, websocket: Connection) -> _Client:
        client = self._clients.get(websocket)
        if client is None:
            client_id = f"{self.node_id}.{next(self._client_ids)}"
            client = self._clients[websocket] = _Client(websocket, client_id)
            websocket.add_close_callback(self._connection_closed)
        return client

    def _connection_closed(self, websocket: Connection) -> None:
        client = self._clients.pop(websocket, None)
        if client is None:
            return
        for member in list(client.members.values()):
            self._remove(member)
        self._unbind(client)

    def _room(self, name: str) -> _Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = _Room(
                name, self._broker.room_channel(name), self._history_for(name)
            )
            self._channels[room.channel] = room
            room.task = self._spawn(self._sync(room))
        elif room.linger is not None:
            room.linger.cancel()
            room.linger = None
        return room

    async def _wait_ready(self, room: _Room) -> None:
        if room.state is _LIVE:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await room.ready.wait()
        except TimeoutError:
            raise BrokerUnavailable(
                f"room {room.name!r}: the broker at {self.url} is unavailable"
            ) from None

    async def _reach(self, room: _Room, offset: int) -> None:
        """Wait (at most ``timeout``) until the room delivered ``offset``."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        room.waiters.append((offset, waiter))
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except TimeoutError:
            pass
        finally:
            if (offset, waiter) in room.waiters:
                room.waiters.remove((offset, waiter))

    def _go_live(self, member: _Member) -> None:
        ws = member.client.ws
        member.room.recovering.pop(ws, None)
        member.room.live[ws] = member
        member.state = _LIVE
        member.skips = 0

    def _remove(self, member: _Member) -> None:
        if member.state is _GONE:
            return
        member.state = _GONE
        client, room = member.client, member.room
        ws = client.ws
        if client.members.get(room.name) is member:
            del client.members[room.name]
        for members in (room.members, room.live, room.recovering, room.skipping):
            members.pop(ws, None)
        if member.task is not None and member.task is not asyncio.current_task():
            member.task.cancel()
        self._presence_out.append((room.name, client.client_id))
        if self._presence_flusher is None and not self._closed:
            self._presence_flusher = self._spawn(self._flush_presence())
        if not room.members and self._rooms.get(room.name) is room and not self._closed:
            if room.linger is not None:
                room.linger.cancel()
            assert self._loop is not None
            room.linger = self._loop.call_later(self.linger, self._drop_room, room)

    def _drop_room(self, room: _Room) -> None:
        room.linger = None
        if room.members or self._rooms.get(room.name) is not room:
            return
        del self._rooms[room.name]
        self._channels.pop(room.channel, None)
        if room.task is not None:
            room.task.cancel()
        self._broker.unsubscribe([room.channel])

    def _close_slow(self, client: _Client) -> None:
        """Close a member that can't keep up (1013), and forget it now."""
        if self._clients.get(client.ws) is not client:
            return
        self.stats.slow_consumers_closed += 1
        logger.info("closing %r: slow consumer (%s)", client.ws, ", ".join(sorted(client.members)))
        self._connection_closed(client.ws)
        self._spawn(client.ws.close(TRY_AGAIN_LATER, SLOW_CONSUMER_REASON))

    # Presence.

    async def _add_presence(self, entry: tuple[str, str, str]) -> None:
        """Add a joining member's presence, with those of concurrent joins.

        Joins arriving together (10,000 clients reconnecting after a restart)
        share one broker call per :data:`PRESENCE_BATCH` of them, instead of a
        round trip each that would queue past ``timeout``.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._presence_in.append((entry, future))
        if self._presence_adder is None:
            self._presence_adder = self._spawn(self._flush_presence_in())
        await future

    async def _flush_presence_in(self) -> None:
        try:
            await asyncio.sleep(0)  # the joins of this loop iteration go together
            while self._presence_in:
                batch = self._presence_in[:PRESENCE_BATCH]
                del self._presence_in[:PRESENCE_BATCH]
                waiting = [(entry, future) for entry, future in batch if not future.done()]
                if not waiting:
                    continue  # those joins gave up (timed out or cancelled)
                try:
                    async with asyncio.timeout(self.timeout):
                        await self._broker.presence_add(
                            [entry for entry, _ in waiting], self.presence_ttl
                        )
                except (BrokerUnavailable, TimeoutError) as exc:
                    error = f"presence at {self.url}: {exc or 'timed out'}"
                    for _, future in waiting:
                        if not future.done():
                            future.set_exception(BrokerUnavailable(error))
                    continue
                for _, future in waiting:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._presence_adder = None

    async def _flush_presence(self) -> None:
        try:
            await asyncio.sleep(0)
            while self._presence_out:
                entries, self._presence_out = self._presence_out, []
                if not self._broker.connected:
                    continue  # expires by itself within presence_ttl
                with contextlib.suppress(BrokerUnavailable, TimeoutError):
                    async with asyncio.timeout(self.timeout):
                        await self._broker.presence_remove(entries)
        finally:
            self._presence_flusher = None

    async def _refresh_presence(self) -> None:
        """Refresh every local member's presence every third of ``presence_ttl``."""
        while True:
            await asyncio.sleep(self.presence_ttl / 3)
            await self._add_all_presence()

    async def _add_all_presence(self) -> None:
        entries = [
            (name, client.client_id, _user_of(client))
            for client in self._clients.values()
            for name, member in client.members.items()
            if member.state is not _GONE
        ]
        if not entries or not self._broker.connected:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self._broker.presence_add(entries, self.presence_ttl)
        except (BrokerUnavailable, TimeoutError) as exc:
            logger.debug("presence refresh failed: %s", exc)

    # The broker's callbacks.

    def broker_message(self, channel: bytes, data: bytes) -> None:
        target = self._channels.get(channel)
        if target is None:
            return
        try:
            message = envelope.decode(data)
        except ValueError:
            logger.warning("ignored a message that is not a wsharbor envelope on %r", channel)
            return
        self.stats.received += 1
        if isinstance(target, _Room):
            self._room_message(target, message)
        else:
            self._user_message(target, message)

    def broker_lost(self, exc: BaseException) -> None:
        self.stats.broker_disconnects += 1
        self._connected.clear()
        for room in self._rooms.values():
            if room.task is not None:
                room.task.cancel()
                room.task = None
            room.state = _SYNCING
            room.ready.clear()

    def broker_restored(self) -> None:
        self.stats.broker_reconnects += 1
        self.stats.resubscribes += len(self._channels)
        self._connected.set()
        for room in self._rooms.values():
            if room.task is not None:
                room.task.cancel()
            room.state = _SYNCING
            room.ready.clear()
            room.task = self._spawn(self._sync(room))
        self._spawn(self._add_all_presence())

    # Delivery.

    def _room_message(self, room: _Room, message: envelope.Envelope) -> None:
        if room.state is _LIVE:
            if message.epoch == room.epoch:
                if message.offset == room.last + 1:
                    self._deliver(room, message, replayed=False)
                    return
                if message.offset <= room.last:
                    self.stats.duplicates += 1
                    return
            elif room.epoch == "" and room.last == 0 and message.offset == 1:
                room.epoch = message.epoch  # the room's first publication
                self._deliver(room, message, replayed=False)
                return
        self._buffer(room, message)
        if room.state is _LIVE:
            # A gap or a new epoch: find out what happened before going on.
            room.state = _SYNCING
            room.ready.clear()
            room.task = self._spawn(self._sync(room))

    def _buffer(self, room: _Room, message: envelope.Envelope) -> None:
        if len(room.pending) >= MAX_PENDING:
            room.pending.clear()
            room.pending_dropped = True
        room.received += 1
        room.pending.append((room.received, message))

    def _publication(
        self, room: str | None, message: envelope.Envelope | Entry, *, replayed: bool, epoch: str
    ) -> Data | None:
        """What members get for a publication, or None if it can't be formatted."""
        payload = message.payload
        try:
            body: str | bytes = payload.decode() if message.text else payload
        except UnicodeDecodeError:
            logger.warning("dropped a text publication in %r that is not UTF-8", room)
            return None
        if self.format is None:
            return body
        try:
            return self.format(
                Publication(
                    room,
                    body,
                    epoch,
                    message.offset,
                    message.published_at,
                    replayed,
                    None,
                )
            )
        except Exception:
            logger.exception("Hub(format=...) failed on a publication in %r", room)
            return None

    def _deliver(self, room: _Room, message: envelope.Envelope, *, replayed: bool) -> None:
        """Fan a room's next publication out to its live members."""
        room.last = message.offset
        room.last_id = message.message_id
        room.last_time = time.monotonic()
        if not replayed:
            self.stats.observe_lag(max(0.0, time.time() - message.published_at))
        if room.waiters:
            for target, waiter in room.waiters:
                if target <= room.last and not waiter.done():
                    waiter.set_result(None)
        live = room.live
        if live:
            data = self._publication(room.name, message, replayed=replayed, epoch=room.epoch)
            if data is not None:
                skipped = fanout(live, data)
                delivered = len(live) - len(skipped)
                self.stats.delivered += delivered
                if replayed:
                    self.stats.replayed += delivered
                if skipped or room.skipping:
                    self._skipped(room, skipped, message.offset)
        if room.recovering and room.history:
            for member in list(room.recovering.values()):
                if member.epoch == room.epoch and room.last - member.last > room.history:
                    # Its next message is no longer in the history: it can't catch up.
                    self._close_slow(member.client)

    def _skipped(self, room: _Room, skipped: list[Connection], offset: int) -> None:
        missed = set()
        for ws in skipped:
            member = room.live.get(ws)
            if member is None or ws.state is not State.OPEN:
                continue  # closing: it leaves when closed
            missed.add(ws)
            self.stats.skipped += 1
            if room.history:
                # Catch up from the history at its own pace.
                del room.live[ws]
                room.skipping.pop(ws, None)
                member.state = _RECOVERING
                member.epoch, member.last = room.epoch, offset - 1
                room.recovering[ws] = member
                member.task = self._spawn(self._catch_up(member))
            else:
                member.skips += 1
                if member.skips >= self.max_skips:
                    self._close_slow(member.client)
                else:
                    room.skipping[ws] = member
        for ws in [ws for ws in room.skipping if ws not in missed]:
            room.skipping.pop(ws).skips = 0

    def _user_message(self, user: _User, message: envelope.Envelope) -> None:
        payload = message.payload
        try:
            body: str | bytes = payload.decode() if message.text else payload
        except UnicodeDecodeError:
            logger.warning("dropped a direct message that is not UTF-8")
            return
        data: Data | None = body
        if self.format is not None:
            try:
                data = self.format(
                    Publication(None, body, "", 0, message.published_at, False, user.user_id)
                )
            except Exception:
                logger.exception("Hub(format=...) failed on a direct message")
                return
        assert data is not None
        targets = [client.ws for client in user.clients]
        skipped = fanout(targets, data)
        self.stats.delivered += len(targets) - len(skipped)
        self.stats.skipped += sum(1 for ws in skipped if ws.state is State.OPEN)

    # Recovery.

    async def _catch_up(self, member: _Member) -> None:
        try:
            outcome = await self._replay(member, bounded=False)
        except ConnectionClosed:
            return
        if outcome is _RECOVERING and member.state is _RECOVERING:
            self._close_slow(member.client)  # the history no longer has what it missed

    async def _replay(self, member: _Member, *, bounded: bool) -> str:
        """Send a recovering member what it missed, then make it live.

        Returns ``_LIVE`` once it joined the fan-out, ``_RECOVERING`` when the
        history can't give it what it needs, ``_GONE`` when something else
        took it out of recovery meanwhile (it left, or a loss reset it).
        """
        room, ws = member.room, member.client.ws
        while True:
            if member.state is not _RECOVERING:
                return _GONE
            if room.state is not _LIVE:
                if bounded:
                    await self._wait_ready(room)
                else:
                    await room.ready.wait()
                continue
            if member.epoch != room.epoch or member.last > room.last:
                return _RECOVERING
            if member.last == room.last:
                # Caught up, in this very step: from now on the fan-out has it.
                self._go_live(member)
                return _LIVE
            try:
                async with asyncio.timeout(self.timeout):
                    position, entries = await self._broker.history(
                        room.name, member.last, room.last, self.replay_batch
                    )
            except (BrokerUnavailable, TimeoutError):
                if bounded and self._broker.connected:
                    raise BrokerUnavailable(
                        f"room {room.name!r}: the broker at {self.url} is unavailable"
                    ) from None
                await asyncio.sleep(0.1)  # the room syncs again after a reconnection
                continue
            if member.state is not _RECOVERING:
                return _GONE
            if position.epoch != member.epoch or not entries:
                return _RECOVERING
            if entries[0].offset != member.last + 1:
                return _RECOVERING  # trimmed: older than the history
            for entry in entries:
                data = self._publication(room.name, entry, replayed=True, epoch=member.epoch)
                if data is not None:
                    await ws.send(data)
                    member.replayed += 1
                    self.stats.delivered += 1
                    self.stats.replayed += 1
                if member.state is not _RECOVERING:
                    return _GONE
                member.last = entry.offset

    async def _meta(self, room: _Room, offset: int) -> RoomMeta:
        async with asyncio.timeout(self.timeout):
            (meta,) = await self._broker.room_meta([(room.name, offset)])
        return meta

    async def _sync(self, room: _Room) -> None:
        """Bring a room to the broker's position, then deliver what was buffered.

        Losses found on the way are reported once, when the room is live
        again, with the position live delivery goes on from.
        """
        while not self._closed:
            try:
                if not room.subscribed:
                    await self._broker.subscribe([room.channel])
                    room.subscribed = True
                check = room.last if room.known else 0
                cutoff = room.received
                meta = await self._meta(room, check)
                if not room.known:
                    room.epoch, room.last, room.last_id = meta.epoch, meta.offset, meta.top_id
                    room.known = True
                    self._drop_stale(room, meta, cutoff)
                else:
                    backfill = await self._reconcile(room, meta, cutoff)
                    if backfill and not await self._backfill(room):
                        continue  # the epoch changed under the back-fill: read it again
            except (BrokerUnavailable, TimeoutError) as exc:
                if not self._broker.connected:
                    room.task = None
                    return  # broker_restored() starts the sync again
                logger.debug("room %r: sync failed (%s); retrying", room.name, exc)
                await asyncio.sleep(min(self.timeout, 0.5))
                continue
            if self._flush_pending(room):
                room.state = _LIVE
                room.task = None
                room.ready.set()
                if room.loss is not None:
                    self._report_loss(room)
                return
            await asyncio.sleep(0)  # publications arrived meanwhile: let them in

    def _drop_stale(self, room: _Room, meta: RoomMeta, cutoff: int) -> None:
        """Forget buffered publications the broker's position shows are not in it.

        A publication received before the position was asked for, but of
        another epoch or past the position, belongs to a timeline the broker
        lost (a failover): nobody should get it.
        """
        room.pending = [
            (number, message)
            for number, message in room.pending
            if number > cutoff or (message.epoch == meta.epoch and message.offset <= meta.offset)
        ]

    async def _reconcile(self, room: _Room, meta: RoomMeta, cutoff: int) -> bool:
        """Compare a room's position with the broker's; whether to back-fill."""
        self._drop_stale(room, meta, cutoff)
        idle = time.monotonic() - room.last_time > self.history_ttl
        if meta.epoch == "":
            if room.epoch != "" and not idle:
                self._lose(room, None, "the broker lost the room's state")
            room.epoch, room.last, room.last_id = "", 0, ""
            return False
        if meta.epoch != room.epoch:
            self.stats.epoch_changes += 1
            if room.epoch != "" and not idle:
                # What the old epoch had after this room's position is unknown.
                self._lose(room, None, "the room's epoch changed")
            # Everything in the new epoch came after what the room delivered.
            room.epoch, room.last, room.last_id = meta.epoch, 0, ""
            return self._missed(room, meta)
        if (
            meta.offset < room.last
            or (meta.offset == room.last and meta.top_id != room.last_id)
            or (meta.check_id is not None and room.last and meta.check_id != room.last_id)
        ):
            # The broker no longer has publications this process delivered (a
            # failover lost them) and may reuse their offsets: a new epoch, so
            # that no client resumes across the hole.
            fresh = await self._broker.new_epoch(room.name, room.epoch, secrets.token_hex(4))
            self.stats.epoch_changes += 1
            self._lose(room, None, "the broker lost publications (failover?)")
            room.epoch, room.last, room.last_id = fresh.epoch, fresh.offset, fresh.top_id
            room.pending.clear()
            return False
        return self._missed(room, meta)

    def _missed(self, room: _Room, meta: RoomMeta) -> bool:
        """The broker is at ``meta``: deliver what is buffered, then say whether
        to back-fill the rest from the history (or report it lost)."""
        self._flush_pending(room)
        if meta.offset <= room.last:
            return False
        if room.history:
            return True
        # Lost: from the room's position up to the first buffered publication.
        upto = meta.offset
        for _, message in room.pending:
            if message.epoch == room.epoch and room.last < message.offset <= upto:
                upto = message.offset - 1
                break
        self._lose(room, upto - room.last, "publications during a broker outage (no history)")
        room.last = upto
        room.last_id = meta.top_id if upto == meta.offset else ""
        self._flush_pending(room)
        return False

    async def _backfill(self, room: _Room) -> bool:
        """Deliver missed publications from the history; false if the epoch changed."""
        self.stats.backfills += 1
        while True:
            async with asyncio.timeout(self.timeout):
                position, entries = await self._broker.history(
                    room.name, room.last, None, self.replay_batch
                )
            if position.epoch != room.epoch:
                return False
            if not entries:
                if position.offset > room.last:
                    self._lose(
                        room, position.offset - room.last, "publications older than the history"
                    )
                    room.last = position.offset
                return True
            first = entries[0].offset
            if first != room.last + 1:
                self._lose(room, first - room.last - 1, "publications older than the history")
                room.last = first - 1
            for entry in entries:
                self._deliver(room, _envelope_of(entry, room.epoch), replayed=True)
            if len(entries) < self.replay_batch:
                return True

    def _flush_pending(self, room: _Room) -> bool:
        """Deliver buffered publications that follow the room's position, in order.

        False if some are left after a gap (or the buffer overflowed): the sync
        reads the broker's position again.
        """
        if room.pending_dropped:
            room.pending_dropped = False
            room.pending.clear()
            return False
        pending, room.pending = room.pending, []
        for index, (_, message) in enumerate(pending):
            if message.epoch == room.epoch:
                if message.offset <= room.last:
                    self.stats.duplicates += 1
                    continue
                if message.offset == room.last + 1:
                    self._deliver(room, message, replayed=False)
                    continue
            elif room.epoch == "" and room.last == 0 and message.offset == 1:
                room.epoch = message.epoch
                self._deliver(room, message, replayed=False)
                continue
            room.pending = pending[index:] + room.pending
            return False
        return True

    def _lose(self, room: _Room, lost: int | None, reason: str) -> None:
        """Publications of the room that its members won't get: note them.

        Members replaying stop (the loss covers them); the loss is reported
        once the room is live again (:meth:`_report_loss`).
        """
        for member in list(room.recovering.values()):
            self._go_live(member)
        if lost is not None and lost <= 0:
            return
        if lost:
            self.stats.lost += lost
        if room.loss is None:
            room.loss = (lost, reason)
        else:
            known, reasons = room.loss
            total = None if known is None or lost is None else known + lost
            room.loss = (total, reasons if reason in reasons else f"{reasons}; {reason}")

    def _report_loss(self, room: _Room) -> None:
        """Tell the application (``on_loss``), or close the members with 1013."""
        assert room.loss is not None
        lost, reason = room.loss
        room.loss = None
        members = tuple(room.members)
        self.stats.loss_events += 1
        self.stats.loss_members += len(members)
        logger.warning(
            "room %r: %s publications lost for %d local members: %s",
            room.name,
            "some" if lost is None else lost,
            len(members),
            reason,
        )
        if not members:
            return
        if self.on_loss is not None:
            try:
                result = self.on_loss(Loss(room.name, members, lost, room.position, reason))
            except Exception:
                logger.exception("Hub(on_loss=...) failed")
                return
            if inspect.isawaitable(result):
                self._spawn(result)
            return
        for ws in members:
            self._spawn(ws.close(TRY_AGAIN_LATER, MESSAGES_LOST_REASON))


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("pubsub task failed", exc_info=task.exception())


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _position(value: object) -> Position:
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and _is_count(value[1])
    ):
        return Position(value[0], value[1])
    raise ValueError(f"since must be a Position (epoch, offset), not {value!r}")


def _user_of(client: _Client) -> str:
    return "" if client.user is None else client.user.user_id


def _envelope_of(entry: Entry, epoch: str) -> envelope.Envelope:
    return envelope.Envelope(
        entry.text, entry.offset, epoch, entry.published_at, entry.message_id, entry.payload
    )
