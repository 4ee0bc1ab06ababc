"""The Hub's semantics on memory:// (no Redis): the same API, history and recovery.

Real servers and clients on 127.0.0.1; ``memory://NAME`` shared by two hubs
stands for two processes sharing one broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

import wsharbor
from wsharbor import InvalidState
from wsharbor.pubsub import Hub, Loss, Position, Presence, Publication

from ..asyncio.conftest import RawClient, small_buffer_listener
from .conftest import Client, HubServer, assert_contiguous, fmt, until

pytestmark = pytest.mark.timeout(60)


async def test_join_publish_leave(clients: list[Client]) -> None:
    async with Hub(format=fmt, linger=0) as hub, HubServer(hub) as server:
        alice = await Client.connect(server.port, "lobby,news", user="alice")
        bob = await Client.connect(server.port, "lobby")
        clients += [alice, bob]
        assert alice.joined["lobby"]["position"] == ["", 0]  # nothing published yet
        assert alice.joined["lobby"]["recovered"] is False
        assert len(hub.local_members("lobby")) == 2 and len(hub.local_members("news")) == 1
        assert sorted(hub.rooms) == ["lobby", "news"]

        first = await hub.publish("lobby", "hello")
        second = await hub.publish("lobby", b"\x00\x01")
        assert first.offset == 1 and second == Position(first.epoch, 2)
        await hub.publish("news", "headline")
        await until(lambda: len(bob.messages) == 2 and len(alice.messages) == 3)
        assert bob.data("lobby") == ["hello", "0001"]
        assert alice.data("news") == ["headline"]
        assert [m["o"] for m in bob.messages] == [1, 2]
        assert bob.messages[0]["e"] == first.epoch and not bob.messages[0]["p"]

        # leave(): no more deliveries to that member; the other one still gets them.
        (alice_ws,) = [ws for ws in server.connections if "alice" in ws.path]
        await hub.leave("lobby", alice_ws)
        # Gone from this process's presence() at once (bob has no user id).
        assert [p.user_id for p in await hub.presence("lobby")] == [None]
        await hub.leave("lobby", alice_ws)  # not a member any more: nothing
        await hub.publish("lobby", "after")
        await until(lambda: len(bob.messages) == 3)
        assert alice.data("lobby") == ["hello", "0001"]
        assert hub.local_members("lobby") != [] and alice_ws not in hub.local_members("lobby")

        # A closed connection leaves every room by itself, presence included:
        # at once in this process's presence(), whose own members it knows.
        assert [p.user_id for p in await hub.presence("news")] == ["alice"]
        await alice.close()
        await until(lambda: hub.local_members("news") == [], what="automatic leave")
        assert await hub.presence("news") == []
        await until(lambda: "news" not in hub.rooms, what="room dropped after linger=0")
        assert await hub.presence("news") == []
        assert hub.stats.published == 4
        assert hub.stats.received == 4
        assert hub.stats.delivered == 2 + 2 + 1 + 1


async def test_two_hubs_share_a_named_memory_broker(clients: list[Client]) -> None:
    async with (
        Hub("memory://two-hosts", format=fmt) as hub_a,
        Hub("memory://two-hosts", format=fmt) as hub_b,
        HubServer(hub_a) as host_a,
        HubServer(hub_b) as host_b,
        Hub("memory://elsewhere", format=fmt) as other,
    ):
        on_a = await Client.connect(host_a.port, "room", user="ann")
        on_b = await Client.connect(host_b.port, "room", user="ben")
        clients += [on_a, on_b]
        await hub_a.publish("room", "from a")
        await hub_b.publish("room", "from b")
        await other.publish("room", "not shared")
        await until(lambda: len(on_a.messages) == 2 and len(on_b.messages) == 2)
        assert on_a.data("room") == on_b.data("room") == ["from a", "from b"]
        presence = await hub_a.presence("room")
        assert sorted(p.user_id or "" for p in presence) == ["ann", "ben"]
        assert {p.client_id.split(".")[0] for p in presence} == {hub_a.node_id, hub_b.node_id}
        # Direct messages reach the user wherever it is connected.
        assert await hub_a.send_to_user("ben", "psst") == 1
        assert await hub_a.send_to_user("nobody", "psst") == 0
        await until(lambda: any(m["u"] == "ben" for m in on_b.messages))
        direct = on_b.messages[-1]
        assert (direct["r"], direct["d"], direct["o"]) == (None, "psst", 0)
        assert not any(m["u"] for m in on_a.messages)


async def test_direct_messages_reach_every_connection_of_the_user(clients: list[Client]) -> None:
    async with Hub(format=fmt) as hub, HubServer(hub) as server:
        tabs = [await Client.connect(server.port, "r", user="carol") for _ in range(3)]
        clients += tabs
        assert await hub.send_to_user("carol", b"\xff") == 1
        await until(lambda: all(len(t.messages) == 1 for t in tabs))
        assert [t.messages[0]["d"] for t in tabs] == ["ff"] * 3
        ws = server.connections[0]
        with pytest.raises(ValueError, match="carol"):
            await hub.bind_user(ws, "dave")
        await hub.bind_user(ws, "carol")  # the same id again: fine


async def test_history_resume_is_exact(clients: list[Client]) -> None:
    # timeout: how long a join from a position in the future waits for it.
    async with Hub(format=fmt, history=5, timeout=0.2) as hub, HubServer(hub) as server:
        watcher = await Client.connect(server.port, "feed")
        clients.append(watcher)
        positions = [await hub.publish("feed", f"m{i}") for i in range(8)]
        epoch = positions[0].epoch
        await until(lambda: len(watcher.messages) == 8)

        # Missed 6, 7, 8 (within the history of 5): replayed, then live.
        late = await Client.connect(server.port, "feed", since=(epoch, 5))
        clients.append(late)
        assert late.joined["feed"] == {
            "joined": "feed",
            "position": [epoch, 8],
            "recovered": True,
            "replayed": 3,
        }
        assert late.data("feed") == ["m5", "m6", "m7"]
        assert all(m["p"] for m in late.messages)
        await hub.publish("feed", "m8")
        await until(lambda: len(late.messages) == 4)
        assert late.data("feed")[-1] == "m8" and not late.messages[-1]["p"]

        # Up to date already: nothing replayed, recovered.
        current = await Client.connect(server.port, "feed", since=(epoch, 9))
        clients.append(current)
        assert current.joined["feed"]["recovered"] is True
        assert current.joined["feed"]["replayed"] == 0

        # Older than the history (offset 1 is gone), another epoch, the future:
        # recovered is false and nothing is replayed, never a partial replay.
        for since in ((epoch, 1), ("other", 7), (epoch, 99)):
            client = await Client.connect(server.port, "feed", since=since)
            clients.append(client)
            assert client.joined["feed"]["recovered"] is False, since
            assert client.joined["feed"]["replayed"] == 0
            assert client.joined["feed"]["position"] == [epoch, 9]
            assert client.messages == []
        assert hub.stats.joins_recovered == 2
        assert hub.stats.joins_unrecovered == 3
        assert hub.stats.replayed == 3


@pytest.mark.parametrize("history", [None, 10])
async def test_resume_from_a_position_this_host_has_not_reached_yet(
    clients: list[Client], history: int | None
) -> None:
    """The client got offset 3 from another host; here offset 3 is on its way."""
    async with Hub(format=fmt, history=history) as hub, HubServer(hub) as server:
        first = await hub.publish("r", "1")
        await hub.publish("r", "2")
        client = await Client.connect(server.port, "r", since=(first.epoch, 3), wait_joined=False)
        clients.append(client)
        await until(lambda: hub.local_members("r") != [])
        await hub.publish("r", "3")
        await until(lambda: "r" in client.joined)
        assert client.joined["r"]["recovered"] is True
        assert client.joined["r"]["position"] == [first.epoch, 3]
        await hub.publish("r", "4")
        await until(lambda: len(client.messages) == 1)
        assert client.data("r") == ["4"]


async def test_no_history_means_no_recovery(clients: list[Client]) -> None:
    async with Hub(format=fmt) as hub, HubServer(hub) as server:
        position = await hub.publish("r", "x")
        await hub.publish("r", "y")
        client = await Client.connect(server.port, "r", since=position)
        clients.append(client)
        assert client.joined["r"]["recovered"] is False
        assert client.messages == []


async def test_per_room_history(clients: list[Client]) -> None:
    def history(room: str) -> int | None:
        return 10 if room.startswith("chat:") else None

    async with Hub(format=fmt, history=history) as hub, HubServer(hub) as server:
        chat = await hub.publish("chat:1", "kept")
        ticker = await hub.publish("ticker", "not kept")
        await hub.publish("chat:1", "kept too")
        await hub.publish("ticker", "not kept either")
        a = await Client.connect(server.port, "chat:1", since=(chat.epoch, 0))
        b = await Client.connect(server.port, "ticker", since=(ticker.epoch, 0))
        clients += [a, b]
        assert a.joined["chat:1"]["recovered"] is True and a.data("chat:1") == ["kept", "kept too"]
        assert b.joined["ticker"]["recovered"] is False and b.messages == []


async def test_resume_while_publishing_has_no_gap_and_no_duplicate(
    clients: list[Client],
) -> None:
    """The seam: a member replays while the room keeps publishing."""
    async with (
        Hub("memory://seam", format=fmt, history=2000, replay_batch=7) as hub,
        Hub("memory://seam", format=fmt, history=2000) as publisher,
        HubServer(hub) as server,
    ):
        first = await publisher.publish("busy", "0")
        await until(lambda: True)
        watcher = await Client.connect(server.port, "busy")
        clients.append(watcher)
        stop = asyncio.Event()
        published = 1

        async def publish_forever() -> None:
            nonlocal published
            while not stop.is_set():
                await publisher.publish("busy", str(published))
                published += 1
                if published % 10 == 0:
                    await asyncio.sleep(0)

        task = asyncio.ensure_future(publish_forever())
        await until(lambda: published > 300)
        joiners = []
        for _ in range(5):
            joiners.append(await Client.connect(server.port, "busy", since=first))
            await until(lambda n=published + 100: published > n)
        clients.extend(joiners)
        stop.set()
        await task
        total = published
        for client in [*joiners]:
            await until(lambda c=client: len(c.messages) == total - 1, what="all messages")
            assert client.joined["busy"]["recovered"] is True
            assert [m["o"] for m in client.messages] == list(range(2, total + 1))
            assert client.data("busy") == [str(i) for i in range(1, total)]
            assert client.joined["busy"]["replayed"] > 0
        assert hub.stats.joins_recovered == 5


async def test_format_and_raw_delivery(clients: list[Client]) -> None:
    seen: list[Publication] = []

    def custom(publication: Publication) -> bytes:
        seen.append(publication)
        return json.dumps({"n": publication.offset}).encode()

    async with (
        Hub(format=custom, history=3) as hub,
        Hub() as raw_hub,
        HubServer(hub) as server,
        HubServer(raw_hub) as raw_server,
    ):
        ws = await wsharbor.connect(f"ws://127.0.0.1:{server.port}/?room=a")
        raw = await wsharbor.connect(f"ws://127.0.0.1:{raw_server.port}/?room=a")
        await ws.recv(), await raw.recv()  # the "joined" replies
        await hub.publish("a", "text")
        assert await ws.recv() == b'{"n": 1}'
        await raw_hub.publish("a", "as published")
        await raw_hub.publish("a", b"\x01bytes")
        assert await raw.recv() == "as published"
        assert await raw.recv() == b"\x01bytes"
        assert seen[0].room == "a" and seen[0].message == "text"
        assert seen[0].position == Position(seen[0].epoch, 1)
        assert seen[0].published_at > 0 and not seen[0].replayed
        await ws.close()
        await raw.close()


async def test_slow_consumer_without_history_is_closed_with_1013(
    clients: list[Client], caplog: pytest.LogCaptureFixture
) -> None:
    write_limit, size = 4096, 1024
    async with (
        Hub(format=fmt, max_skips=3) as hub,
        HubServer(hub, sock=small_buffer_listener(), write_limit=write_limit) as server,
    ):
        fast = await Client.connect(server.port, "r")
        clients.append(fast)
        slow = await RawClient.connect(server.port, "/?room=r", rcvbuf=4096, limit=4096)
        await until(lambda: len(hub.local_members("r")) == 2)
        (slow_ws,) = [ws for ws in server.connections if ws is not fast_ws(server, fast)]
        assert slow_ws.transport is not None
        sizes = []
        count = 0
        with caplog.at_level(logging.INFO, logger="wsharbor.pubsub"):
            while hub.stats.slow_consumers_closed == 0:
                count += 1
                assert count < 10_000, "the slow reader was never closed"
                await hub.publish("r", "x" * size)
                await until(lambda n=count: len(fast.messages) == n)
                sizes.append(slow_ws.transport.get_write_buffer_size())
        assert hub.stats.skipped == 3
        assert slow_ws not in hub.local_members("r")
        assert "slow consumer" in caplog.text
        # The slow reader's server buffer never went past the limit and a frame.
        assert max(sizes) <= write_limit + size + 200
        # What it gets when it reads: the messages before the skips, then 1013.
        close = await slow.expect_close()
        assert (close.code, close.reason) == (1013, "slow consumer")
        # The fast reader got everything, in order.
        await hub.publish("r", "after")
        await until(lambda: len(fast.messages) == count + 1)
        assert_contiguous(fast.messages)
        slow.writer.transport.abort()


def fast_ws(server: HubServer, client: Client) -> Any:
    """The server side of ``client`` (the first connection)."""
    return server.connections[0]


async def test_slow_consumer_with_history_catches_up_or_is_closed(
    clients: list[Client],
) -> None:
    write_limit, size, history = 4096, 1024, 50
    async with (
        Hub(format=fmt, history=history) as hub,
        HubServer(hub, sock=small_buffer_listener(), write_limit=write_limit) as server,
    ):
        fast = await Client.connect(server.port, "r")
        clients.append(fast)
        # A reader that stalls, then reads: it catches up from the history and
        # ends with every message exactly once, in order.
        stalled = await RawClient.connect(server.port, "/?room=r", rcvbuf=4096, limit=4096)
        await until(lambda: len(hub.local_members("r")) == 2)
        count = 0
        while hub.stats.skipped == 0:
            count += 1
            assert count < 1000
            await hub.publish("r", "x" * size)
        for _ in range(10):  # well within the history
            count += 1
            await hub.publish("r", "y" * size)
        got = []
        while len(got) < count - 1:
            got.append(json.loads(await stalled.recv_message()))  # skip the "joined" line
            if "joined" in got[-1]:
                got.pop()
        offsets = [m["o"] for m in got]
        assert offsets == list(range(1, count + 1))[: len(offsets)]
        while len(got) < count:
            got.append(json.loads(await stalled.recv_message()))
        assert [m["o"] for m in got] == list(range(1, count + 1))
        assert any(m["p"] for m in got), "nothing came from the history"
        await until(lambda: hub.stats.replayed > 0)
        await hub.publish("r", "live again")
        assert json.loads(await stalled.recv_message())["d"] == "live again"
        assert hub.stats.slow_consumers_closed == 0
        stalled.writer.transport.abort()
        await until(lambda: len(hub.local_members("r")) == 1)

        # A reader that never reads falls more than the history behind: 1013.
        never = await RawClient.connect(server.port, "/?room=r", rcvbuf=4096, limit=4096)
        await until(lambda: len(hub.local_members("r")) == 2)
        while hub.stats.slow_consumers_closed == 0:
            count += 1
            assert count < 5000
            await hub.publish("r", "z" * size)
        close = await never.expect_close()
        assert (close.code, close.reason) == (1013, "slow consumer")
        await hub.publish("r", "end")
        await until(lambda: fast.messages and fast.messages[-1]["d"] == "end")
        assert_contiguous(fast.messages)
        never.writer.transport.abort()


async def test_misuse_and_bad_arguments(clients: list[Client]) -> None:
    hub = Hub()
    with pytest.raises(InvalidState, match="start"):
        await hub.publish("r", "x")
    async with hub, HubServer(hub) as server:
        client = await Client.connect(server.port, "r")
        clients.append(client)
        ws = server.connections[0]
        with pytest.raises(TypeError):
            await hub.publish("r", 42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            await hub.send_to_user("u", {"a": 1})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="room"):
            await hub.publish("", "x")
        with pytest.raises(ValueError, match="since"):
            await hub.join("r2", ws, since=("e",))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="since"):
            await hub.join("r2", ws, since=("e", -1))
        # Joining twice does nothing (and says where the room is).
        again = await hub.join("r", ws)
        assert again.position == Position("", 0) and len(hub.local_members("r")) == 1
        with pytest.raises(InvalidState):
            await hub.start()
    assert not hub.ready
    with pytest.raises(InvalidState, match="closed"):
        await hub.publish("r", "x")
    await hub.close()  # twice: nothing


async def test_on_loss_and_presence_types() -> None:
    # Loss and Presence are plain values an application can build and compare.
    loss = Loss("r", (), 3, Position("e", 9), "why")
    assert loss.lost == 3 and loss.position.offset == 9
    assert sorted([Presence("b", None), Presence("a", "u")])[0].client_id == "a"


async def test_ready_and_check() -> None:
    hub = Hub()
    assert not hub.ready and not await hub.check()
    async with hub:
        assert hub.ready and await hub.check()
        assert "ready" in repr(hub)
    assert not hub.ready and not await hub.check()
