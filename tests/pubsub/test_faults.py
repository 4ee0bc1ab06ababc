"""Broker faults under traffic: Redis killed with SIGKILL, a Sentinel failover.

Two hubs (two "hosts") on real Redis, real clients in many rooms, a publisher
at about 1,000 publications per second. The property checked for every client
and room: offsets go up by exactly one (no gap, no duplicate) unless the hub
reported a loss for that room (``on_loss``, or the default close 1013); with
history and a Redis that keeps what it acknowledged, every acknowledged
publication arrives exactly once, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from wsharbor import BrokerUnavailable
from wsharbor.pubsub import Hub, Loss, Position

from .conftest import Client, HubServer, assert_contiguous, fmt, is_contiguous, until
from .redistools import REDIS_SENTINEL, RedisServer, Sentinel, require

pytestmark = pytest.mark.timeout(120)


class Traffic:
    """Publications round-robin over ``rooms`` at about ``rate`` per second."""

    def __init__(self, hub: Hub, rooms: list[str], rate: int = 1000) -> None:
        self.hub = hub
        self.rooms = rooms
        self.rate = rate
        self.attempted: dict[str, set[str]] = {room: set() for room in rooms}
        #: room -> position -> data, for publications the broker acknowledged.
        self.acked: dict[str, dict[Position, str]] = {room: {} for room in rooms}
        self.failed = 0
        self.stop = asyncio.Event()
        self.task = asyncio.ensure_future(self._run())
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def acked_count(self) -> int:
        return sum(len(positions) for positions in self.acked.values())

    async def _one(self, room: str, data: str) -> None:
        try:
            position = await self.hub.publish(room, data)
        except BrokerUnavailable:
            self.failed += 1
        else:
            self.acked[room][position] = data

    async def _run(self) -> None:
        count = 0
        per_tick = max(1, self.rate // 100)
        while not self.stop.is_set():
            for _ in range(per_tick):
                room = self.rooms[count % len(self.rooms)]
                data = str(count)
                count += 1
                self.attempted[room].add(data)
                task = asyncio.ensure_future(self._one(room, data))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            await asyncio.sleep(0.01)  # pacing the load, not waiting for anything

    async def finish(self) -> None:
        self.stop.set()
        await self.task
        if self._pending:
            await asyncio.wait(self._pending, timeout=30)

    def last(self, room: str) -> Position | None:
        return max(self.acked[room], key=lambda p: p.offset, default=None)


def check_room(client: Client, room: str, traffic: Traffic, *, loss_reported: bool) -> None:
    """What ``client`` got in ``room``: never a silent hole.

    With a reported loss, a position may have been acknowledged twice (by the
    old master, then, after the failover lost it, by the new one): the client
    then has the first one and, after the loss, a new epoch.
    """
    got = client.in_room(room)
    assert_contiguous(got)
    data = [m["d"] for m in got]
    assert len(set(data)) == len(data), f"{room}: a publication arrived twice"
    assert set(data) <= traffic.attempted[room]
    acked = traffic.acked[room]
    if not loss_reported:
        for message in got:
            position = Position(message["e"], message["o"])
            if position in acked:
                assert acked[position] == message["d"], (room, position)
        assert got and got[0]["o"] == 1, f"{room}: the beginning is missing"
        epochs = {m["e"] for m in got}
        assert len(epochs) == 1, f"{room}: the epoch changed without a reported loss"
        missing = set(acked.values()) - set(data)
        assert not missing, f"{room}: {len(missing)} acknowledged publications missing"


@pytest.mark.parametrize("history", [1000, None], ids=["history", "no-history"])
async def test_redis_killed_under_traffic(
    redis_factory: Callable[..., RedisServer], clients: list[Client], history: int | None
) -> None:
    server = redis_factory(persistent=True)  # appendfsync always
    rooms = [f"room{i}" for i in range(100)]
    groups = [rooms[i : i + 10] for i in range(0, 100, 10)]
    options = {"format": fmt, "history": history, "timeout": 2, "reconnect_max_delay": 0.3}
    async with (
        Hub(server.url, **options) as hub_a,  # type: ignore[arg-type]
        Hub(server.url, **options) as hub_b,  # type: ignore[arg-type]
        HubServer(hub_a) as host_a,
        HubServer(hub_b) as host_b,
    ):
        for host in (host_a, host_b):
            for group in groups:
                clients.append(await Client.connect(host.port, ",".join(group)))
        traffic = Traffic(hub_a, rooms, rate=1000)
        await until(lambda: traffic.acked_count >= 500, what="traffic")
        server.kill()
        await until(lambda: not hub_a.ready and not hub_b.ready, what="both hubs notice")
        server.restart()
        await until(lambda: hub_a.ready and hub_b.ready, what="both hubs reconnect")
        restarted_at = traffic.acked_count
        await until(lambda: traffic.acked_count >= restarted_at + 500, what="traffic again")
        await traffic.finish()

        def done(client: Client) -> bool:
            if client.closed.is_set():
                return True
            return all(
                (last := traffic.last(room)) is None
                or any(m["o"] >= last.offset and m["e"] == last.epoch for m in client.in_room(room))
                for room in client.joined
            )

        await until(lambda: all(done(c) for c in clients), timeout=30, what="delivery")
        # A loss is reported once the room is live again, after what was
        # buffered meanwhile went out: a member with a hole may still have its
        # 1013 on the way. Every hole must be signalled, within the deadline.
        await until(
            lambda: all(
                c.closed.is_set() or all(is_contiguous(c.in_room(room)) for room in c.joined)
                for c in clients
            ),
            what="every hole signalled",
        )
        signalled = [c for c in clients if c.closed.is_set()]
        for client in clients:
            lost = client in signalled
            if lost:
                assert (client.ws.close_code, client.ws.close_reason) == (1013, "messages lost")
            for room in client.joined:
                check_room(client, room, traffic, loss_reported=lost)
        stats = [hub_a.stats, hub_b.stats]
        print(
            f"\nhistory={history}: {traffic.acked_count} acknowledged, {traffic.failed} "
            f"failed while Redis was down; lost {[s.lost for s in stats]}, "
            f"back-fills {[s.backfills for s in stats]}, "
            f"clients signalled {len(signalled)}/{len(clients)}"
        )
        if history:
            # Redis kept every acknowledged publication: nothing may be lost.
            assert not signalled
            assert sum(s.loss_events for s in stats) == 0
        else:
            # Losses are counted exactly when they are signalled.
            assert bool(signalled) == (sum(s.lost for s in stats) > 0)
        assert all(s.broker_reconnects == 1 for s in stats)


@pytest.fixture
def sentinel_setup(
    redis_factory: Callable[..., RedisServer], tmp_path: Path
) -> tuple[RedisServer, RedisServer, Sentinel]:
    """A master, its replica (in sync), and a Sentinel that knows both."""
    require(REDIS_SENTINEL, "redis-sentinel")
    master = redis_factory()
    replica = redis_factory(extra=("--replicaof", "127.0.0.1", str(master.port)))
    sentinel = Sentinel(tmp_path / "sentinel", master)
    sentinel.start()
    return master, replica, sentinel


async def test_sentinel_failover_under_traffic(
    sentinel_setup: tuple[RedisServer, RedisServer, Sentinel],
    clients: list[Client],
) -> None:
    master, replica, sentinel = sentinel_setup
    try:
        await until(
            lambda: replica.client().info("replication").get("master_link_status") == "up",
            what="the replica in sync",
        )

        def replica_known() -> bool:
            known = sentinel.client(decode_responses=True).sentinel_slaves("mymaster")
            return any(r.get("master-link-status") == "ok" for r in known)

        await until(replica_known, what="Sentinel knows the replica")
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
        rooms = [f"room{i}" for i in range(20)]
        losses: list[Loss] = []
        options = {
            "format": fmt,
            "history": 1000,
            "timeout": 2,
            "reconnect_max_delay": 0.3,
            "on_loss": losses.append,
        }
        async with (
            Hub(url, **options) as hub_a,  # type: ignore[arg-type]
            Hub(url, **options) as hub_b,  # type: ignore[arg-type]
            HubServer(hub_a) as host_a,
            HubServer(hub_b) as host_b,
        ):
            for host in (host_a, host_b):
                for i in range(0, 20, 5):
                    clients.append(await Client.connect(host.port, ",".join(rooms[i : i + 5])))
            traffic = Traffic(hub_a, rooms, rate=500)
            await until(lambda: traffic.acked_count >= 300, what="traffic")
            assert sentinel.master_port() == master.port
            sentinel.client().execute_command("SENTINEL", "FAILOVER", "mymaster")
            await until(lambda: sentinel.master_port() == replica.port, what="the failover")
            await until(
                lambda: all(h.stats.broker_reconnects >= 1 and h.ready for h in (hub_a, hub_b)),
                timeout=20,
                what="both hubs on the new master",
            )
            switched_at = traffic.acked_count
            await until(lambda: traffic.acked_count >= switched_at + 300, what="traffic again")
            await traffic.finish()

            def lost_rooms() -> set[str]:
                return {loss.room for loss in losses}

            def done(client: Client) -> bool:
                return all(
                    room in lost_rooms()
                    or (last := traffic.last(room)) is None
                    or any(m["o"] >= last.offset for m in client.in_room(room))
                    for room in client.joined
                )

            def explained(client: Client, room: str) -> bool:
                # A hole or a new epoch is reported (on_loss) once the room is
                # live again, after what was buffered meanwhile went out.
                got = client.in_room(room)
                return room in lost_rooms() or (
                    is_contiguous(got) and len({m["e"] for m in got}) <= 1
                )

            await until(lambda: all(done(c) for c in clients), timeout=30, what="delivery")
            await until(
                lambda: all(explained(c, room) for c in clients for room in c.joined),
                what="every hole reported",
            )
            lost = lost_rooms()
            for client in clients:
                for room in client.joined:
                    check_room(client, room, traffic, loss_reported=room in lost)
            # A client resuming from the very beginning: all of it, or told it can't.
            first_epoch = next(iter(traffic.acked[rooms[0]])).epoch
            resumer = await Client.connect(host_b.port, rooms[0], since=(first_epoch, 0))
            clients.append(resumer)
            if resumer.joined[rooms[0]]["recovered"]:
                assert rooms[0] not in lost
                assert [m["o"] for m in resumer.messages] == list(
                    range(1, len(resumer.messages) + 1)
                )
            print(
                f"\nSentinel failover: {traffic.acked_count} acknowledged, {traffic.failed} "
                f"failed; rooms with a reported loss: {len(lost)}/{len(rooms)}"
            )
    finally:
        sentinel.kill()
