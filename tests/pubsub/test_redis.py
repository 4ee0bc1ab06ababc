"""The Hub on real Redis servers: two hubs (two "hosts") in this process, real clients.

Broker faults are real: ``CLIENT KILL TYPE pubsub``, a Redis killed with SIGKILL,
a network partition of one host (a TCP proxy that drops its connections), the
broker's state rolled back behind a host's back. Loss is always either
recovered from the history or reported (``recovered=False``, ``on_loss``, 1013),
never a silent hole.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from wsharbor import BrokerUnavailable
from wsharbor.pubsub import Hub, Loss, Position

from ..asyncio.conftest import RawClient, small_buffer_listener
from .conftest import TIMEOUT, Client, HubServer, assert_contiguous, fmt, until
from .redistools import Proxy, RedisServer

pytestmark = pytest.mark.timeout(90)


def numsub(server: RedisServer, *channels: str) -> dict[str, int]:
    reply = server.client().execute_command("PUBSUB", "NUMSUB", *channels)
    return {name.decode(): count for name, count in zip(reply[::2], reply[1::2], strict=True)}


async def test_two_hosts_share_rooms_presence_users_and_history(
    redis_server: RedisServer, clients: list[Client]
) -> None:
    url = redis_server.url
    async with (
        Hub(url, format=fmt, history=100) as hub_a,
        Hub(url, format=fmt, history=100) as hub_b,
        HubServer(hub_a) as host_a,
        HubServer(hub_b) as host_b,
    ):
        ann = await Client.connect(host_a.port, "lobby", user="ann")
        ben = await Client.connect(host_b.port, "lobby", user="ben")
        bea = await Client.connect(host_b.port, "lobby,other", user="bea")
        clients += [ann, ben, bea]
        # One subscription per room per process, whatever the number of members.
        assert numsub(redis_server, "wsharbor:room:lobby", "wsharbor:room:other") == {
            "wsharbor:room:lobby": 2,
            "wsharbor:room:other": 1,
        }
        first = await hub_a.publish("lobby", "from a")
        await hub_b.publish("lobby", "from b")
        await until(lambda: all(len(c.in_room("lobby")) == 2 for c in (ann, ben, bea)))
        for client in (ann, ben, bea):
            assert client.data("lobby") == ["from a", "from b"]
            assert [m["o"] for m in client.in_room("lobby")] == [1, 2]
        # Presence spans both hosts.
        presence = await hub_a.presence("lobby")
        assert sorted(p.user_id or "" for p in presence) == ["ann", "bea", "ben"]
        assert {p.client_id.split(".")[0] for p in presence} == {hub_a.node_id, hub_b.node_id}
        # A direct message from A reaches ben on B; A holds no subscription for ben.
        assert numsub(redis_server, "wsharbor:user:ben")["wsharbor:user:ben"] == 1
        assert await hub_a.send_to_user("ben", "hi ben") == 1
        await until(lambda: any(m["u"] == "ben" for m in ben.messages))
        assert not any(m["u"] for m in ann.messages + bea.messages)
        # A client of A resumes on B from a position A gave it.
        resumed = await Client.connect(host_b.port, "lobby", since=first)
        clients.append(resumed)
        assert resumed.joined["lobby"]["recovered"] is True
        assert resumed.data("lobby") == ["from b"]
        # Leaving: B unsubscribes once its last member of the room is gone.
        await bea.close()
        await until(lambda: hub_b.local_members("other") == [])
        assert [p.user_id for p in await hub_a.presence("other")] == []


async def test_client_kill_pubsub_is_healed_within_seconds(
    redis_server: RedisServer, clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    rooms = [f"room{i}" for i in range(20)]
    channels = [f"wsharbor:room:{room}" for room in rooms]
    async with (
        Hub(redis_server.url, format=fmt, history=100, health_interval=0.5) as hub,
        HubServer(hub) as server,
    ):
        client = await Client.connect(server.port, ",".join(rooms))
        clients.append(client)
        assert set(numsub(redis_server, *channels).values()) == {1}
        with caplog.at_level(logging.WARNING, logger="wsharbor.pubsub"):
            killed = redis_server.client().execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            assert killed == 1
            # Subscriptions restored (PUBSUB NUMSUB) within 5 s.
            await until(
                lambda: set(numsub(redis_server, *channels).values()) == {1} and hub.ready,
                timeout=5,
                what="subscriptions restored",
            )
        assert "lost the Redis subscriber connection" in caplog.text
        assert hub.stats.broker_disconnects == 1 and hub.stats.broker_reconnects == 1
        assert hub.stats.resubscribes == len(rooms)
        for room in rooms:
            await hub.publish(room, f"after {room}")
        await until(lambda: len(client.messages) == len(rooms))
        assert hub.stats.loss_events == 0


async def test_output_buffer_overflow_is_healed_and_backfilled(
    redis_factory: Callable[..., RedisServer],
    clients: list[Client],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis drops a subscriber that doesn't read (client-output-buffer-limit pubsub)."""
    server = redis_factory(extra=("--client-output-buffer-limit", "pubsub 64kb 32kb 1"))
    count, size = 1000, 8000
    async with (
        Hub(server.url, format=fmt, history=count, reconnect_max_delay=0.2) as hub,
        HubServer(hub) as host,
    ):
        client = await Client.connect(host.port, "r")
        clients.append(client)

        def publish_from_another_thread() -> None:
            async def flood() -> None:
                async with Hub(server.url, history=count) as publisher:
                    for start in range(0, count, 100):
                        await asyncio.gather(
                            *(
                                publisher.publish("r", f"{i:04d}" + "x" * size)
                                for i in range(start, start + 100)
                            )
                        )

            asyncio.run(flood())

        with caplog.at_level(logging.WARNING, logger="wsharbor.pubsub"):
            thread = threading.Thread(target=publish_from_another_thread)
            thread.start()
            # This event loop is blocked meanwhile (as by a long CPU-bound
            # handler): its subscriber connection doesn't read, and Redis
            # drops it once 64 KiB are waiting for it.
            thread.join(TIMEOUT * 3)
            assert not thread.is_alive()
            await until(lambda: len(client.messages) >= count, timeout=30, what="everything")
        assert "lost the Redis subscriber connection" in caplog.text
        assert hub.stats.broker_disconnects >= 1 and hub.stats.backfills >= 1
        assert [m["d"][:4] for m in client.messages] == [f"{i:04d}" for i in range(count)]
        assert [m["o"] for m in client.messages] == list(range(1, count + 1))
        assert hub.stats.loss_events == 0


async def test_publish_while_redis_is_down_raises_after_a_bounded_wait(
    redis_server: RedisServer, clients: list[Client]
) -> None:
    async with (
        Hub(redis_server.url, format=fmt, timeout=1, reconnect_max_delay=0.2) as hub,
        HubServer(hub) as server,
    ):
        client = await Client.connect(server.port, "r")
        clients.append(client)
        assert hub.ready and await hub.check()
        redis_server.kill()
        await until(lambda: not hub.ready, what="the hub notices")
        assert not await hub.check()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(BrokerUnavailable) as info:
            await hub.publish("r", "lost")
        assert loop.time() - started < TIMEOUT  # bounded (about ``timeout``)
        assert "not published" in str(info.value)
        assert hub.stats.publish_errors == 1
        # Joining while the broker is down fails the same way.
        refused = await Client.connect(server.port, "elsewhere")
        clients.append(refused)
        assert refused.replies and "unavailable" in refused.replies[0]["error"]
        redis_server.restart()
        await until(lambda: hub.ready, what="reconnected")
        position = await hub.publish("r", "back")
        await until(lambda: client.data("r") == ["back"])
        assert position.offset == 1


async def test_partition_with_history_backfills_everything(
    redis_server: RedisServer, clients: list[Client], proxies: list[Proxy]
) -> None:
    proxy = Proxy(redis_server.port)
    await proxy.start()
    proxies.append(proxy)
    async with (
        Hub(redis_server.url, format=fmt, history=500) as hub_a,
        Hub(proxy.url, format=fmt, history=500, timeout=1, reconnect_max_delay=0.2) as hub_b,
        HubServer(hub_b) as host_b,
    ):
        members = [await Client.connect(host_b.port, "r1,r2") for _ in range(3)]
        clients += members
        await hub_a.publish("r1", "before")
        await until(lambda: all(len(m.messages) == 1 for m in members))
        proxy.cut()
        await until(lambda: not hub_b.ready, what="B sees the partition")
        with pytest.raises(BrokerUnavailable):
            await hub_b.publish("r1", "from the partitioned side")
        for i in range(60):
            await hub_a.publish("r1" if i % 2 else "r2", f"during {i}")
        proxy.heal()
        await until(lambda: hub_b.ready, what="B reconnects")
        await hub_a.publish("r1", "after")
        expected_r1 = ["before"] + [f"during {i}" for i in range(1, 60, 2)] + ["after"]
        expected_r2 = [f"during {i}" for i in range(0, 60, 2)]
        for member in members:
            await until(lambda m=member: len(m.messages) == len(expected_r1) + len(expected_r2))
            assert member.data("r1") == expected_r1
            assert member.data("r2") == expected_r2
            assert_contiguous(member.in_room("r1"))
            assert any(m["p"] for m in member.messages)  # back-filled from the history
        assert hub_b.stats.backfills == 2
        assert hub_b.stats.lost == 0 and hub_b.stats.loss_events == 0


async def test_partition_without_history_reports_the_loss(
    redis_server: RedisServer, clients: list[Client], proxies: list[Proxy]
) -> None:
    proxy = Proxy(redis_server.port)
    await proxy.start()
    proxies.append(proxy)
    losses: list[Loss] = []
    async with (
        Hub(redis_server.url, format=fmt) as hub_a,
        Hub(proxy.url, format=fmt, timeout=1, reconnect_max_delay=0.2) as hub_b,
        Hub(
            proxy.url, format=fmt, timeout=1, reconnect_max_delay=0.2, on_loss=losses.append
        ) as hub_c,
        HubServer(hub_b) as host_b,
        HubServer(hub_c) as host_c,
    ):
        on_b = [await Client.connect(host_b.port, "quiet,busy") for _ in range(2)]
        on_c = await Client.connect(host_c.port, "busy")
        clients += [*on_b, on_c]
        await hub_a.publish("busy", "before")
        await until(lambda: all(len(m.messages) == 1 for m in [*on_b, on_c]))
        proxy.cut()
        await until(lambda: not hub_b.ready and not hub_c.ready)
        for i in range(25):
            await hub_a.publish("busy", f"during {i}")
        proxy.heal()
        await until(lambda: hub_b.ready and hub_c.ready, what="reconnected")
        # The default signal: every member of the room that lost something is
        # closed with 1013 "messages lost"; the quiet room lost nothing.
        for member in on_b:
            await asyncio.wait_for(member.closed.wait(), TIMEOUT)
            assert (member.ws.close_code, member.ws.close_reason) == (1013, "messages lost")
            assert member.data("busy") == ["before"]
        assert hub_b.stats.lost == 25
        assert hub_b.stats.loss_events == 1 and hub_b.stats.loss_members == 2
        # on_loss instead: the application is told what was lost, and where
        # live delivery goes on.
        await until(lambda: len(losses) == 1, what="C reports the loss")
        (loss,) = losses
        assert (loss.room, loss.lost, len(loss.members)) == ("busy", 25, 1)
        assert loss.position.offset == 26
        await hub_a.publish("busy", "after")
        await until(lambda: on_c.data("busy")[-1:] == ["after"])
        assert on_c.data("busy") == ["before", "after"]


async def test_a_rolled_back_broker_starts_a_new_epoch(
    redis_server: RedisServer, clients: list[Client], proxies: list[Proxy]
) -> None:
    """What a failover with asynchronous replication does: the last writes vanish."""
    proxy = Proxy(redis_server.port)
    await proxy.start()
    proxies.append(proxy)
    losses: list[Loss] = []
    async with (
        Hub(redis_server.url, format=fmt, history=100) as hub_a,
        Hub(proxy.url, format=fmt, history=100, timeout=1, reconnect_max_delay=0.2,
            on_loss=losses.append) as hub_b,
        HubServer(hub_b) as host_b,
    ):  # fmt: skip
        member = await Client.connect(host_b.port, "r")
        clients.append(member)
        for i in range(5):
            await hub_a.publish("r", f"m{i}")
        await until(lambda: len(member.messages) == 5)
        epoch = member.messages[0]["e"]
        proxy.cut()
        await until(lambda: not hub_b.ready)
        # Offsets 4 and 5 vanish from the broker (the position and the history
        # as a promoted replica that had not received them yet has them);
        # then other publications reuse the offsets.
        redis = redis_server.client()
        kept = redis.xrange("wsharbor:history:r", "-", "3-0")
        redis.delete("wsharbor:history:r")
        for entry_id, fields in kept:
            redis.xadd("wsharbor:history:r", fields, id=entry_id)
        redis.hset("wsharbor:meta:r", mapping={"o": 3, "l": kept[-1][1][b"i"]})
        await hub_a.publish("r", "new 4")
        await hub_a.publish("r", "new 5")
        await hub_a.publish("r", "new 6")
        proxy.heal()
        await until(lambda: len(losses) == 1, what="the loss reported")
        (loss,) = losses
        assert loss.lost is None and loss.position.epoch != epoch
        assert hub_b.stats.epoch_changes == 1
        # Nobody can resume across the hole: the epoch changed in the broker.
        late = await Client.connect(host_b.port, "r", since=(epoch, 5))
        clients.append(late)
        assert late.joined["r"]["recovered"] is False
        assert late.joined["r"]["position"][0] == loss.position.epoch
        position = await hub_a.publish("r", "next")
        assert position.epoch == loss.position.epoch
        await until(lambda: member.data("r")[-1:] == ["next"])
        # The member never got "new 4".."new 6" as if they followed m4.
        assert member.data("r") == ["m0", "m1", "m2", "m3", "m4", "next"]


async def test_restart_without_persistence_is_an_epoch_change(
    redis_server: RedisServer, clients: list[Client]
) -> None:
    losses: list[Loss] = []
    async with (
        Hub(redis_server.url, format=fmt, history=100, reconnect_max_delay=0.2,
            on_loss=losses.append) as hub,
        HubServer(hub) as server,
    ):  # fmt: skip
        member = await Client.connect(server.port, "r")
        clients.append(member)
        before = await hub.publish("r", "before")
        await until(lambda: len(member.messages) == 1)
        redis_server.kill()  # no AOF, no RDB: everything is gone
        await until(lambda: not hub.ready)
        redis_server.restart()
        await until(lambda: hub.ready)
        after = await hub.publish("r", "after")
        await until(lambda: len(losses) == 1 or member.data("r")[-1:] == ["after"])
        assert after.epoch != before.epoch
        await until(lambda: member.data("r")[-1:] == ["after"])
        # Reported, either when the hub resynchronised or when the new epoch arrived.
        assert len(losses) == 1 and losses[0].room == "r"
        resumed = await Client.connect(server.port, "r", since=before)
        clients.append(resumed)
        assert resumed.joined["r"]["recovered"] is False


async def test_a_reader_that_never_reads_is_closed_and_memory_stays_bounded(
    redis_server: RedisServer, clients: list[Client]
) -> None:
    write_limit, count, size = 16384, 10_000, 256
    async with (
        Hub(redis_server.url, format=fmt, max_skips=10) as hub,
        # The stalled reader reads only once the others have all 10,000 messages,
        # which takes a while on a busy machine: a close_timeout that outlasts it
        # keeps the close frame there for it to read (the test aborts it after).
        HubServer(
            hub, sock=small_buffer_listener(), write_limit=write_limit, close_timeout=120
        ) as server,
    ):
        fast = [await Client.connect(server.port, "r") for _ in range(2)]
        clients += fast
        never = await RawClient.connect(server.port, "/?room=r", rcvbuf=4096, limit=4096)
        await until(lambda: len(hub.local_members("r")) == 3)
        (never_ws,) = [ws for ws in hub.local_members("r") if ws not in server.connections[:2]]
        assert never_ws.transport is not None
        # The listener's 4 KiB send buffers are for the stalled reader. The
        # fast members get ordinary ones: each message is a TCP segment of its
        # own (TCP_NODELAY), and a few dozen unacknowledged ones fill 4 KiB
        # while the fast clients, in this same thread, wait for the burst to end.
        for ws in server.connections:
            if ws is not never_ws:
                sock = ws.transport.get_extra_info("socket") if ws.transport else None
                assert sock is not None
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        transport = never_ws.transport
        largest = 0
        payload = "x" * size
        for _ in range(count // 500):
            await asyncio.gather(*(hub.publish("r", payload) for _i in range(500)))
            if not transport.is_closing():
                largest = max(largest, transport.get_write_buffer_size())
        # Closed with the documented code; what it holds never passed the bound.
        await until(lambda: hub.stats.slow_consumers_closed == 1)
        assert never_ws not in hub.local_members("r")
        assert largest <= write_limit + size + 200, largest
        # The other members got all 10,000, in order, while it stalled.
        for client in fast:
            await until(lambda c=client: len(c.messages) == count, timeout=30)
            assert_contiguous(client.messages)
            assert client.messages[-1]["o"] == count
        close = await never.expect_close(timeout=TIMEOUT)
        assert (close.code, close.reason) == (1013, "slow consumer")
        lag = hub.stats
        print(
            f"\n10,000 messages, one reader stalled: skipped {lag.skipped}, "
            f"its write buffer max {largest} bytes (limit {write_limit}); "
            f"lag histogram {lag.lag_counts}"
        )
        never.writer.transport.abort()


async def test_join_with_since_across_a_redis_restart_with_persistence(
    redis_factory: object, clients: list[Client]
) -> None:
    server = redis_factory(persistent=True)  # type: ignore[operator]
    async with (
        Hub(server.url, format=fmt, history=100, reconnect_max_delay=0.2) as hub,
        HubServer(hub) as host,
    ):
        first = await hub.publish("r", "one")
        await hub.publish("r", "two")
        server.kill()
        server.restart()
        await until(lambda: hub.stats.broker_disconnects == 1, what="the hub notices")
        await until(lambda: hub.ready, what="reconnected")
        await hub.publish("r", "three")
        client = await Client.connect(host.port, "r", since=first)
        clients.append(client)
        assert client.joined["r"]["recovered"] is True
        assert client.data("r") == ["two", "three"]
        assert [m["o"] for m in client.messages] == [2, 3]
        assert Position(client.messages[0]["e"], 2) == Position(first.epoch, 2)


async def test_rediss_speaks_tls(
    redis_factory: Callable[..., RedisServer], tmp_path: Path, clients: list[Client]
) -> None:
    import trustme

    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    certificate.cert_chain_pems[0].write_to_path(cert)
    certificate.private_key_pem.write_to_path(key)
    authority.cert_pem.write_to_path(ca)
    server = redis_factory(tls=(cert, key, ca))
    url = f"rediss://127.0.0.1:{server.port}/0"
    options = {"ssl_ca_certs": str(ca)}
    async with (
        Hub(url, format=fmt, history=10, broker_options=options) as hub,
        HubServer(hub) as host,
    ):
        client = await Client.connect(host.port, "secure")
        clients.append(client)
        await hub.publish("secure", "over TLS")
        await until(lambda: client.data("secure") == ["over TLS"])
    # A certificate the client doesn't trust: a clear error at start.
    with pytest.raises(BrokerUnavailable, match=f"127.0.0.1:{server.port}"):
        await Hub(url, timeout=2).start()


async def test_a_join_storm_shares_presence_calls(
    redis_server: RedisServer, clients: list[Client]
) -> None:
    """300 clients joining at once: their presence goes to Redis in a few calls,
    not a round trip each (10,000 of those queue past the hub's timeout)."""
    redis = redis_server.client()

    def evalsha_calls() -> int:
        stats = redis.info("commandstats").get("cmdstat_evalsha", {})
        return int(stats.get("calls", 0))

    async with Hub(redis_server.url, format=fmt) as hub, HubServer(hub) as server:
        await hub.publish("storm", "before")  # the room's position exists
        before = evalsha_calls()
        joining = [
            Client.connect(server.port, "storm", user=f"u{n}", wait_joined=False)
            for n in range(300)
        ]
        clients += await asyncio.gather(*joining)
        await until(lambda: all("storm" in c.joined for c in clients), what="every join")
        assert len(await hub.presence("storm")) == 300
        assert all(c.joined["storm"]["position"][1] == 1 for c in clients)
        # One read of the room's position, a few presence batches, the presence() above.
        assert evalsha_calls() - before < 30


async def test_publications_keep_the_order_of_the_calls(
    redis_server: RedisServer, clients: list[Client]
) -> None:
    # A lone publish() is sent by its caller (no task); calls made while it is
    # in flight wait and go together after it: the order of the calls is the
    # order of the offsets and of delivery, whichever way each one went.
    async with Hub(redis_server.url, format=fmt, history=100) as hub, HubServer(hub) as host:
        member = await Client.connect(host.port, "r")
        clients.append(member)
        expected = []
        for round_ in range(20):
            batch = [f"{round_}.{index}" for index in range(round_ % 5 + 1)]
            expected += batch
            positions = await asyncio.gather(*(hub.publish("r", text) for text in batch))
            offsets = [position.offset for position in positions]
            assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
        await until(lambda: len(member.in_room("r")) == len(expected))
        assert member.data("r") == expected
        assert_contiguous(member.in_room("r"))
