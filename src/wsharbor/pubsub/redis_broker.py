"""The Redis broker: redis://, rediss:// and redis+sentinel:// (redis-py's asyncio client).

Theory of operation
-------------------

Two kinds of connections per process:

* **one subscriber connection**, owned here rather than by redis-py's
  ``PubSub`` (whose own reconnect-and-resubscribe would hide the outage from
  the hub). One task reads it (:meth:`RedisBroker._read`); a second one
  (:meth:`RedisBroker._ping`) sends ``PING`` every ``health_interval`` and
  declares the connection dead when nothing at all was read for three
  intervals, which catches a half-open TCP connection. A connection that Redis
  closes (``CLIENT KILL TYPE pubsub``, ``client-output-buffer-limit pubsub``
  overflow, a restart, a failover) fails the reader at once. Either way the
  supervisor (:meth:`RedisBroker._supervise`) logs a WARNING, tells the hub
  (``broker_lost``), reconnects with a capped, jittered exponential backoff
  (reset once a connection is restored), subscribes every channel again in
  batches of ``SUBSCRIBE_BATCH``, waits for Redis to confirm each of them, and
  only then tells the hub (``broker_restored``), which back-fills what was
  published meanwhile. ``SUBSCRIBE`` / ``UNSUBSCRIBE`` of the hub are queued
  and sent together at the end of the event loop iteration; each channel's
  confirmations are counted, so that :meth:`RedisBroker.subscribe` returns
  only once the ``SUBSCRIBE`` it sent was confirmed (and not an earlier one).
  With Sentinel, one more task follows the Sentinels' ``+switch-master``
  events and leaves the old master as soon as a switch is announced, rather
  than when Sentinel gets round to demoting it (seconds later).
* **a small pool of command connections** (redis-py's pool, at most
  ``MAX_COMMANDS`` commands in flight) for the Lua scripts that append and
  publish, read positions and history, and keep presence. Scripts are sent as
  ``EVALSHA`` in pipelines; after a Redis restart (``NOSCRIPT``) they are
  loaded again and the calls that failed are sent again. redis-py's own
  retries are off: a publication whose outcome is unknown must not be sent
  twice.

Keys, per room, under the hub's prefix: ``<prefix>:meta:<room>`` (hash: ``e``
epoch, ``o`` offset, ``l`` id of the last publication),
``<prefix>:history:<room>`` (stream, entry id ``<offset>-0``, fields ``k``
kind, ``d`` payload, ``t`` publish time in microseconds, ``i`` message id),
``<prefix>:presence:<room>`` (hash client id -> user id) and
``<prefix>:presence-expiry:<room>`` (sorted set client id -> expiry in
milliseconds of Redis' clock); channels ``<prefix>:room:<room>`` and
``<prefix>:user:<user id>``. Both keys of a room expire ``ttl`` seconds after
its last publication.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from ..exceptions import BrokerUnavailable
from .broker import Broker, BrokerListener, BrokerURL, Entry, PublishRequest, RoomMeta
from .types import Position, Presence

__all__ = ["RedisBroker"]

#: Channels per SUBSCRIBE command when subscribing again after a reconnection.
SUBSCRIBE_BATCH = 500
#: Script calls per pipeline.
PIPELINE_BATCH = 500
#: Commands in flight on the command connections at most.
MAX_COMMANDS = 16


class _Script:
    """A Lua script and its SHA1, run with EVALSHA."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


# Append (if history) and publish, atomically: every subscriber sees the
# publications of a room in offset order, and the history has them in the same
# order. The epoch is created by the first publication (or after the meta key
# was lost); offset 1 of a new epoch deletes what is left of an old stream.
PUBLISH = _Script(
    """
-- KEYS: meta, history.  ARGV: channel, kind, payload, published_at_us,
-- message id, history size (0: none), ttl (s), epoch to start if none.
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[8]
  redis.call('hset', KEYS[1], 'e', epoch)
end
local offset = redis.call('hincrby', KEYS[1], 'o', 1)
redis.call('hset', KEYS[1], 'l', ARGV[5])
redis.call('expire', KEYS[1], ARGV[7])
local id = string.format('%d', offset)
if ARGV[6] ~= '0' then
  if offset == 1 then
    redis.call('del', KEYS[2])
  end
  local added = redis.pcall('xadd', KEYS[2], 'MAXLEN', '~', ARGV[6], id .. '-0',
    'k', ARGV[2], 'd', ARGV[3], 't', ARGV[4], 'i', ARGV[5])
  if type(added) == 'table' and added.err then
    -- The stream is ahead of the position (the position was rolled back
    -- without it): it belongs to a lost timeline. Readers that needed it
    -- find it gone and are told they can't recover.
    redis.call('del', KEYS[2])
    redis.call('xadd', KEYS[2], 'MAXLEN', '~', ARGV[6], id .. '-0',
      'k', ARGV[2], 'd', ARGV[3], 't', ARGV[4], 'i', ARGV[5])
  end
  redis.call('expire', KEYS[2], ARGV[7])
end
redis.call('publish', ARGV[1], 'W1|' .. ARGV[2] .. '|' .. id .. '|' .. epoch .. '|' ..
  ARGV[4] .. '|' .. ARGV[5] .. '|' .. ARGV[3])
return {epoch, offset}
"""
)

# The position and a range of the history, read together (one snapshot).
HISTORY = _Script(
    """
-- KEYS: meta, history.  ARGV: first entry id, last entry id or '+', count.
local meta = redis.call('hmget', KEYS[1], 'e', 'o')
if not meta[1] then
  return {'', 0, {}}
end
local entries = redis.call('xrange', KEYS[2], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
return {meta[1], tonumber(meta[2] or '0'), entries}
"""
)

# The position, the id of the last publication, and the id of the history
# entry at a given offset (to tell a publication seen before from another one
# written at the same offset after a failover lost the first).
META = _Script(
    """
-- KEYS: meta, history.  ARGV: offset to check (0: none).
local meta = redis.call('hmget', KEYS[1], 'e', 'o', 'l')
if not meta[1] then
  return {'', 0, '', ''}
end
local check = ''
if ARGV[1] ~= '0' then
  local entry = redis.call('xrange', KEYS[2], ARGV[1] .. '-0', ARGV[1] .. '-0')
  if #entry > 0 then
    local fields = entry[1][2]
    for i = 1, #fields, 2 do
      if fields[i] == 'i' then
        check = '=' .. fields[i + 1]
      end
    end
  end
end
return {meta[1], tonumber(meta[2] or '0'), meta[3] or '', check}
"""
)

# A process saw publications that the broker no longer has: start a new epoch
# (once: only if the epoch is still the one that process knew).
NEW_EPOCH = _Script(
    """
-- KEYS: meta, history.  ARGV: expected epoch, new epoch.
if redis.call('hget', KEYS[1], 'e') == ARGV[1] then
  redis.call('hset', KEYS[1], 'e', ARGV[2])
  redis.call('del', KEYS[2])
end
local meta = redis.call('hmget', KEYS[1], 'e', 'o', 'l')
return {meta[1] or '', tonumber(meta[2] or '0'), meta[3] or '', ''}
"""
)

# Presence: expiry times come from Redis' clock, the same for every host.
PRESENCE_ADD = _Script(
    """
-- KEYS: presence hash, expiry zset.  ARGV: ttl (ms), then client id, user id pairs.
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('zadd', KEYS[2], expires, ARGV[i])
end
redis.call('pexpire', KEYS[1], ARGV[1])
redis.call('pexpire', KEYS[2], ARGV[1])
return 1
"""
)

PRESENCE_GET = _Script(
    """
-- KEYS: presence hash, expiry zset.
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('zrangebyscore', KEYS[2], '-inf', now)
for i = 1, #expired do
  redis.call('hdel', KEYS[1], expired[i])
end
if #expired > 0 then
  redis.call('zremrangebyscore', KEYS[2], '-inf', now)
end
return redis.call('hgetall', KEYS[1])
"""
)

_SCRIPTS = (PUBLISH, HISTORY, META, NEW_EPOCH, PRESENCE_ADD, PRESENCE_GET)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(raw: Any) -> Entry:
    entry_id, fields = raw
    values = dict(zip(fields[::2], fields[1::2], strict=False))
    return Entry(
        int(_text(entry_id).split("-", 1)[0]),
        values.get(b"k") == b"t",
        bytes(values.get(b"d", b"")),
        int(values.get(b"t", 0)) / 1e6,
        _text(values.get(b"i", b"")),
    )


def _meta(raw: Any) -> RoomMeta:
    epoch, offset, top_id, check = raw
    check_text = _text(check)
    return RoomMeta(
        _text(epoch), int(offset), _text(top_id), check_text[1:] if check_text else None
    )


class RedisBroker(Broker):
    """A broker on a Redis server, directly or through Sentinel (see the module docstring)."""

    publishes_over_network = True

    def __init__(
        self,
        url: BrokerURL,
        *,
        prefix: str,
        timeout: float,
        reconnect_max_delay: float,
        health_interval: float,
        options: Mapping[str, Any] | None,
        node_id: str,
        logger: logging.Logger,
    ) -> None:
        super().__init__(prefix)
        self.url = url
        self.address = url.address
        self.timeout = timeout
        self.reconnect_min_delay = min(0.05, reconnect_max_delay)
        self.reconnect_max_delay = reconnect_max_delay
        self.health_interval = health_interval
        self.options = dict(options or {})
        self.node_id = node_id
        self.logger = logger
        self._commands: Any = None
        self._subscriber_client: Any = None
        self._sentinel: Any = None
        self._semaphore = asyncio.Semaphore(MAX_COMMANDS)
        # The subscriber connection.
        self._conn: Any = None
        self._live = False
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._channels: set[bytes] = set()
        self._outgoing: list[tuple[str, bytes]] = []
        self._flush_scheduled = False
        self._sent: dict[bytes, int] = {}
        self._acked: dict[bytes, int] = {}
        self._waiters: dict[bytes, list[tuple[int, asyncio.Future[None]]]] = {}
        self._attempt = 0
        self._last_read = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Set when Sentinel announces a new master: leave the old one now.
        self._switched = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    # Clients.

    def _client_kwargs(
        self, options: Mapping[str, Any], *, socket_timeout: float | None
    ) -> dict[str, Any]:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        kwargs: dict[str, Any] = {
            "username": self.url.username,
            "password": self.url.password,
            "db": self.url.db,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": self.timeout,
            # No retry inside redis-py: a publication that may have been
            # written must not be written twice. The hub retries what is safe.
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,
        }
        kwargs.update(options)
        return kwargs

    def _make_clients(self) -> None:
        import redis.asyncio as aioredis

        options = {k: v for k, v in self.options.items() if k != "sentinel_kwargs"}
        commands = self._client_kwargs(options, socket_timeout=self.timeout)
        subscriber = self._client_kwargs(options, socket_timeout=None)
        subscriber["socket_keepalive"] = True
        subscriber.setdefault("client_name", f"wsharbor-sub-{self.node_id}")
        if self.url.scheme == "redis+sentinel":
            from redis.asyncio.sentinel import Sentinel

            sentinel_kwargs = {
                "socket_timeout": self.timeout,
                "socket_connect_timeout": self.timeout,
                "retry": commands["retry"],
                **self.options.get("sentinel_kwargs", {}),
            }
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call]
                list(self.url.hosts), sentinel_kwargs=sentinel_kwargs
            )
            self._commands = self._sentinel.master_for(self.url.service, **commands)
            self._subscriber_client = self._sentinel.master_for(self.url.service, **subscriber)
            return
        host, port = self.url.hosts[0]
        ssl = self.url.scheme == "rediss"
        self._commands = aioredis.Redis(host=host, port=port, ssl=ssl, **commands)
        self._subscriber_client = aioredis.Redis(host=host, port=port, ssl=ssl, **subscriber)

    @contextlib.asynccontextmanager
    async def _command(self, what: str) -> AsyncIterator[None]:
        """Bound a command in time and turn every broker error into BrokerUnavailable."""
        from redis.exceptions import RedisError

        try:
            async with self._semaphore, asyncio.timeout(self.timeout):
                yield
        except (RedisError, OSError, TimeoutError) as exc:
            detail = str(exc) or type(exc).__name__
            raise BrokerUnavailable(f"Redis at {self.address}: {what}: {detail}") from exc

    async def _run_scripts(
        self, calls: Sequence[tuple[_Script, list[Any], list[Any]]]
    ) -> list[Any]:
        """EVALSHA each call in one pipeline; results (or exceptions) in order.

        Calls that failed with NOSCRIPT (Redis restarted) are sent again after
        loading the scripts; nothing else is sent twice.
        """
        from redis.exceptions import NoScriptError, ResponseError

        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            answers: list[Any]
            if len(todo) == 1:
                # One call (a lone publish, the common case at a steady pace):
                # a plain command, without building and resetting a pipeline.
                script, keys, args = calls[todo[0]]
                try:
                    answer = await self._commands.execute_command(
                        "EVALSHA", script.sha, len(keys), *keys, *args
                    )
                except ResponseError as exc:  # as the pipeline returns it
                    answer = exc
                answers = [answer]
            else:
                pipe = self._commands.pipeline(transaction=False)
                for index in todo:
                    script, keys, args = calls[index]
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                answers = await pipe.execute(raise_on_error=False)
            retry = []
            for index, answer in zip(todo, answers, strict=True):
                if isinstance(answer, NoScriptError) and attempt == 0:
                    retry.append(index)
                results[index] = answer
            if not retry:
                break
            for script in _SCRIPTS:
                await self._commands.script_load(script.source)
            todo = retry
        return results

    async def _eval(self, script: _Script, keys: list[Any], args: list[Any]) -> Any:
        (result,) = await self._run_scripts([(script, keys, args)])
        if isinstance(result, Exception):
            raise result
        return result

    def _keys(self, room: str) -> list[str]:
        return [f"{self.prefix}:meta:{room}", f"{self.prefix}:history:{room}"]

    def _presence_keys(self, room: str) -> list[str]:
        return [f"{self.prefix}:presence:{room}", f"{self.prefix}:presence-expiry:{room}"]

    # Lifecycle.

    @property
    def connected(self) -> bool:
        return self._live

    async def start(self, listener: BrokerListener) -> None:
        self.listener = listener
        self._make_clients()
        try:
            async with self._command("connect"):
                await self._commands.ping()
                for script in _SCRIPTS:
                    await self._commands.script_load(script.source)
        except BrokerUnavailable as exc:
            await self._close_clients()
            raise BrokerUnavailable(f"can't reach Redis at {self.address}: {exc}") from exc
        try:
            conn = await self._connect()
        except BrokerUnavailable:
            await self._close_clients()
            raise
        self._conn = conn
        self._last_read = asyncio.get_running_loop().time()
        self._live = True
        self._supervisor = asyncio.ensure_future(self._supervise(conn))
        if self._sentinel is not None:
            self._watcher = asyncio.ensure_future(self._watch_sentinels())

    async def close(self) -> None:
        self._closing = True
        self._live = False
        for task in (self._supervisor, self._watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for task in list(self._tasks):
            task.cancel()
        for waiters in self._waiters.values():
            for _, waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(BrokerUnavailable(f"{self.address}: hub closed"))
        self._waiters.clear()
        await self._close_clients()

    async def _close_clients(self) -> None:
        for client in (self._commands, self._subscriber_client):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                with contextlib.suppress(Exception):
                    await sentinel.aclose()

    async def ping(self) -> None:
        async with self._command("PING"):
            await self._commands.ping()

    # The subscriber connection.

    async def _connect(self) -> Any:
        """A new subscriber connection; BrokerUnavailable (with the address) if none."""
        from redis.exceptions import RedisError

        conn = self._subscriber_client.connection_pool.make_connection()
        try:
            async with asyncio.timeout(self.timeout * 2):
                await conn.connect()
        except (RedisError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            detail = str(exc) or type(exc).__name__
            raise BrokerUnavailable(f"can't reach Redis at {self.address}: {detail}") from exc
        return conn

    def _backoff(self) -> float:
        """Capped exponential backoff with jitter (half fixed, half random)."""
        ceiling = min(self.reconnect_max_delay, self.reconnect_min_delay * 2**self._attempt)
        self._attempt += 1
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    async def _supervise(self, conn: Any) -> None:
        loop = asyncio.get_running_loop()
        last_warning = -1e9
        while not self._closing:
            if conn is None:
                try:
                    conn = await self._connect()
                except BrokerUnavailable as exc:
                    delay = self._backoff()
                    now = loop.time()
                    if now - last_warning > 30:
                        last_warning = now
                        self.logger.warning("%s; retrying", exc)
                    else:
                        self.logger.debug("%s; retrying in %.2fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
            error: BaseException | None = None
            try:
                await self._serve(conn)
            except asyncio.CancelledError:
                await self._drop(conn)
                raise
            except Exception as exc:
                error = exc
            await self._drop(conn)
            conn = None
            if self._closing:
                return
            was_live, self._live = self._live, False
            # The command connections idle in the pool died with this one, most
            # likely: don't let the next publication find out the hard way.
            with contextlib.suppress(Exception):
                await self._commands.connection_pool.disconnect(inuse_connections=False)
            if was_live:
                reason = str(error) or type(error).__name__
                self.logger.warning(
                    "lost the Redis subscriber connection to %s (%s); reconnecting",
                    self.address,
                    reason,
                )
                last_warning = loop.time()
                assert self.listener is not None
                self.listener.broker_lost(error or ConnectionError("connection lost"))
            await asyncio.sleep(self._backoff())

    async def _drop(self, conn: Any) -> None:
        if self._conn is conn:
            self._conn = None
        with contextlib.suppress(Exception):
            await conn.disconnect(nowait=True)

    async def _serve(self, conn: Any) -> None:
        """Read ``conn`` until it fails; subscribe everything again first if needed."""
        self._conn = conn
        self._sent.clear()
        self._acked.clear()
        # Waiters of the previous connection wait for the SUBSCRIBE sent below.
        for waiters in self._waiters.values():
            waiters[:] = [(1, waiter) for _, waiter in waiters if not waiter.done()]
        self._last_read = asyncio.get_running_loop().time()
        self._switched.clear()
        reader = asyncio.ensure_future(self._read(conn))
        pinger = asyncio.ensure_future(self._ping(conn))
        switched = asyncio.ensure_future(self._leave_on_switch())
        try:
            if not self._live:
                channels = sorted(self._channels)
                for start in range(0, len(channels), SUBSCRIBE_BATCH):
                    batch = channels[start : start + SUBSCRIBE_BATCH]
                    for channel in batch:
                        self._sent[channel] = self._sent.get(channel, 0) + 1
                    await self._send(conn, [("SUBSCRIBE", *batch)])
                confirmed = asyncio.ensure_future(self._confirmed(channels))
                done, _ = await asyncio.wait(
                    {reader, pinger, switched, confirmed}, return_when=asyncio.FIRST_COMPLETED
                )
                if confirmed not in done:
                    confirmed.cancel()
                    for task in done:
                        task.result()  # raises why the connection failed
                    raise ConnectionError("the connection ended while subscribing")
                confirmed.result()
                self._live = True
                self._attempt = 0
                self.logger.info(
                    "reconnected to Redis at %s; %d channels subscribed again",
                    self.address,
                    len(channels),
                )
                assert self.listener is not None
                self.listener.broker_restored()
            done, _ = await asyncio.wait(
                {reader, pinger, switched}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                task.result()
            raise ConnectionError("the subscriber connection ended")
        finally:
            for task in (reader, pinger, switched):
                task.cancel()
            for task in (reader, pinger, switched):
                with contextlib.suppress(BaseException):
                    await task

    async def _leave_on_switch(self) -> None:
        await self._switched.wait()
        raise ConnectionError("Sentinel announced a new master")

    async def _watch_sentinels(self) -> None:
        """Follow Sentinel's ``+switch-master`` events: leave the old master at once.

        After a failover the old master may stay up, and writable, until
        Sentinel reconfigures it as a replica (seconds later); what is written
        to it meanwhile is lost. Leaving it as soon as a Sentinel announces the
        switch shortens that window to about one round trip.
        """
        service = self.url.service.encode()
        index = 0
        while True:
            sentinel = self._sentinel.sentinels[index % len(self._sentinel.sentinels)]
            index += 1
            pubsub = sentinel.pubsub()
            try:
                await pubsub.subscribe("+switch-master")
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=self.health_interval
                    )
                    if message is None or message.get("type") != "message":
                        continue
                    data = message["data"]
                    fields = (data if isinstance(data, bytes) else str(data).encode()).split()
                    if fields and fields[0] == service:
                        self.logger.warning(
                            "Sentinel switched %s to %s; reconnecting",
                            self.url.service,
                            b":".join(fields[3:5]).decode(errors="replace"),
                        )
                        self._switched.set()
                        with contextlib.suppress(Exception):
                            await self._commands.connection_pool.disconnect()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.logger.debug("Sentinel watch: %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(self.health_interval)

    async def _confirmed(self, channels: Sequence[bytes]) -> None:
        """Wait until Redis confirmed the SUBSCRIBE of each channel (bounded)."""
        loop = asyncio.get_running_loop()
        waiters = []
        for channel in channels:
            if self._acked.get(channel, 0) >= 1 or channel not in self._channels:
                continue
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(channel, []).append((1, waiter))
            waiters.append(waiter)
        if waiters:
            async with asyncio.timeout(self.timeout + len(waiters) / 10_000):
                await asyncio.gather(*waiters)

    async def _send(self, conn: Any, commands: Sequence[tuple[Any, ...]]) -> None:
        async with self._write_lock:
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)

    async def _read(self, conn: Any) -> None:
        loop = asyncio.get_running_loop()
        listener = self.listener
        assert listener is not None
        while True:
            response = await conn.read_response(push_request=True)
            self._last_read = loop.time()
            kind = response[0]
            if kind == b"message":
                listener.broker_message(response[1], response[2])
            elif kind == b"subscribe":
                channel = response[1]
                count = self._acked[channel] = self._acked.get(channel, 0) + 1
                waiters = self._waiters.get(channel)
                if waiters:
                    keep = []
                    for target, waiter in waiters:
                        if target <= count:
                            if not waiter.done():
                                waiter.set_result(None)
                        else:
                            keep.append((target, waiter))
                    if keep:
                        self._waiters[channel] = keep
                    else:
                        del self._waiters[channel]

    async def _ping(self, conn: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.health_interval)
            silent = loop.time() - self._last_read
            if silent > 3 * self.health_interval:
                raise TimeoutError(f"no answer to PING for {silent:.1f}s")
            await self._send(conn, [("PING",)])

    # Subscriptions.

    async def subscribe(self, channels: Sequence[bytes]) -> None:
        loop = asyncio.get_running_loop()
        waiters = []
        for channel in channels:
            self._channels.add(channel)
            if self._conn is not None:
                target = self._sent[channel] = self._sent.get(channel, 0) + 1
                self._queue("SUBSCRIBE", channel)
            else:
                target = 1  # sent by the next connection's resubscription
            if self._acked.get(channel, 0) >= target and self._conn is not None:
                continue
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(channel, []).append((target, waiter))
            waiters.append(waiter)
        if not waiters:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await asyncio.gather(*waiters)
        except TimeoutError:
            raise BrokerUnavailable(
                f"Redis at {self.address} did not confirm the subscription in time"
            ) from None

    def unsubscribe(self, channels: Sequence[bytes]) -> None:
        for channel in channels:
            self._channels.discard(channel)
            waiters = self._waiters.pop(channel, ())
            for _, waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(BrokerUnavailable("unsubscribed before Redis confirmed"))
            if self._conn is not None:
                self._queue("UNSUBSCRIBE", channel)

    def _queue(self, command: str, channel: bytes) -> None:
        self._outgoing.append((command, channel))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send the queued (UN)SUBSCRIBEs, consecutive ones of a kind in one command."""
        self._flush_scheduled = False
        outgoing, self._outgoing = self._outgoing, []
        conn = self._conn
        if conn is None or not outgoing:
            return  # the next connection subscribes to self._channels
        commands: list[tuple[Any, ...]] = []
        for command, channel in outgoing:
            if commands and commands[-1][0] == command and len(commands[-1]) <= SUBSCRIBE_BATCH:
                commands[-1] = (*commands[-1], channel)
            else:
                commands.append((command, channel))
        task = asyncio.ensure_future(self._send_quietly(conn, commands))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_quietly(self, conn: Any, commands: Sequence[tuple[Any, ...]]) -> None:
        try:
            await self._send(conn, commands)
        except Exception as exc:
            # The reader sees the connection fail too and reconnects, which
            # subscribes to every channel again.
            self.logger.debug("sending to Redis failed: %s", exc)

    # Commands.

    async def publish(self, requests: Sequence[PublishRequest]) -> list[Position]:
        epoch = secrets.token_hex(4)
        calls = []
        for request in requests:
            calls.append(
                (
                    PUBLISH,
                    self._keys(request.room),
                    [
                        self.room_channel(request.room),
                        "t" if request.text else "b",
                        request.payload,
                        round(request.published_at * 1e6),
                        request.message_id,
                        request.history,
                        request.ttl,
                        epoch,
                    ],
                )
            )
        async with self._command("publish"):
            results = await self._run_scripts(calls)
        positions = []
        for result in results:
            if isinstance(result, Exception):
                raise BrokerUnavailable(f"Redis at {self.address}: publish: {result}")
            positions.append(Position(_text(result[0]), int(result[1])))
        return positions

    async def send(self, channel: bytes, data: bytes) -> int:
        async with self._command("publish"):
            return int(await self._commands.publish(channel, data))

    async def history(
        self, room: str, after: int, until: int | None, limit: int
    ) -> tuple[Position, list[Entry]]:
        last = "+" if until is None else f"{until}-0"
        async with self._command("read history"):
            epoch, top, raw = await self._eval(
                HISTORY, self._keys(room), [f"{after + 1}-0", last, limit]
            )
        return Position(_text(epoch), int(top)), [_entry(item) for item in raw]

    async def room_meta(self, rooms: Sequence[tuple[str, int]]) -> list[RoomMeta]:
        metas: list[RoomMeta] = []
        for start in range(0, len(rooms), PIPELINE_BATCH):
            calls = [
                (META, self._keys(room), [offset])
                for room, offset in rooms[start : start + PIPELINE_BATCH]
            ]
            async with self._command("read positions"):
                results = await self._run_scripts(calls)
            for result in results:
                if isinstance(result, Exception):
                    raise BrokerUnavailable(f"Redis at {self.address}: read positions: {result}")
                metas.append(_meta(result))
        return metas

    async def new_epoch(self, room: str, expected: str, epoch: str) -> RoomMeta:
        async with self._command("new epoch"):
            return _meta(await self._eval(NEW_EPOCH, self._keys(room), [expected, epoch]))

    async def presence_add(self, entries: Sequence[tuple[str, str, str]], ttl: float) -> None:
        by_room: dict[str, list[str]] = {}
        for room, client_id, user_id in entries:
            by_room.setdefault(room, []).extend((client_id, user_id))
        calls = [
            (PRESENCE_ADD, self._presence_keys(room), [max(1, round(ttl * 1000)), *pairs])
            for room, pairs in by_room.items()
        ]
        for start in range(0, len(calls), PIPELINE_BATCH):
            async with self._command("presence"):
                results = await self._run_scripts(calls[start : start + PIPELINE_BATCH])
            for result in results:
                if isinstance(result, Exception):
                    raise BrokerUnavailable(f"Redis at {self.address}: presence: {result}")

    async def presence_remove(self, entries: Sequence[tuple[str, str]]) -> None:
        async with self._command("presence"):
            pipe = self._commands.pipeline(transaction=False)
            for room, client_id in entries:
                members, expiry = self._presence_keys(room)
                pipe.hdel(members, client_id)
                pipe.zrem(expiry, client_id)
            await pipe.execute()

    async def presence_get(self, room: str) -> list[Presence]:
        async with self._command("presence"):
            raw = await self._eval(PRESENCE_GET, self._presence_keys(room), [])
        pairs = zip(raw[::2], raw[1::2], strict=False)
        return sorted(Presence(_text(client), _text(user) or None) for client, user in pairs)
