"""Two hosts in two processes sharing one Redis: rooms, presence, direct messages.

Each host is ``python -m tests.pubsub.hubserver`` (a wsharbor server with its
own Hub); the clients are real wsharbor clients; Redis is a real redis-server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .conftest import TIMEOUT, Client, until
from .redistools import RedisServer

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]


class Host:
    """A hub server in a child process."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int, node_id: str) -> None:
        self.proc = proc
        self.port = port
        self.node_id = node_id

    @classmethod
    async def start(cls, *args: str) -> Host:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.pubsub.hubserver",
            *args,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        match = re.match(rb"listening on (\d+) node (\w+)", line)
        assert match, line
        return cls(proc, int(match.group(1)), match.group(2).decode())

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), TIMEOUT)
            except TimeoutError:
                self.kill()
                await self.proc.wait()


@pytest.fixture
async def hosts() -> AsyncIterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in started:
        await host.stop()


def subscriptions_of(server: RedisServer, node_id: str) -> int:
    """How many channels the subscriber connection of ``node_id`` holds (CLIENT LIST)."""
    for client in server.client().client_list(_type="pubsub"):
        if client.get("name") == f"wsharbor-sub-{node_id}":
            return int(client["sub"])
    raise AssertionError(f"no subscriber connection for node {node_id}")


async def test_two_processes_share_rooms_presence_and_users(
    redis_server: RedisServer, hosts: list[Host], clients: list[Client]
) -> None:
    host_a = await Host.start(redis_server.url, "--presence-ttl", "2")
    host_b = await Host.start(redis_server.url, "--presence-ttl", "2", "--history", "10")
    hosts += [host_a, host_b]
    ann = await Client.connect(host_a.port, "lobby", user="ann")
    ben = await Client.connect(host_b.port, "lobby", user="ben")
    bob = await Client.connect(host_b.port, "b-only", user="bob")
    clients += [ann, ben, bob]

    # Published on A, received by every member on B (and on A).
    await ann.ws.send('{"publish": "lobby", "data": "hello from a"}')
    await ben.ws.send('{"publish": "lobby", "data": "hello from b"}')
    await until(lambda: len(ann.messages) == 2 and len(ben.messages) == 2)
    assert ann.data("lobby") == ben.data("lobby")
    assert sorted(ann.data("lobby")) == ["hello from a", "hello from b"]
    assert [m["o"] for m in ben.messages] == [1, 2]

    # Presence spans both processes.
    reply = await ann.request({"presence": "lobby"})
    members = {tuple(member) for member in reply["presence"]}
    assert {user for _, user in members} == {"ann", "ben"}
    assert {client_id.split(".")[0] for client_id, _ in members} == {
        host_a.node_id,
        host_b.node_id,
    }

    # bob is on B only; A sends him a direct message by user id.
    assert (await ann.request({"dm": "bob", "data": "psst"}))["reached"] == 1
    await until(lambda: any(m["u"] == "bob" for m in bob.messages))
    assert bob.messages[-1]["d"] == "psst"
    # A holds no subscription for bob: only its room and its own user (ann).
    numsub = redis_server.client().pubsub_numsub("wsharbor:user:bob", "wsharbor:user:ann")
    assert dict(numsub) == {b"wsharbor:user:bob": 1, b"wsharbor:user:ann": 1}
    assert subscriptions_of(redis_server, host_a.node_id) == 2  # room:lobby, user:ann
    assert subscriptions_of(redis_server, host_b.node_id) == 4  # 2 rooms, ben, bob

    # B is killed with SIGKILL: its members leave A's presence within the TTL.
    host_b.kill()
    await host_b.proc.wait()
    loop = asyncio.get_running_loop()
    killed_at = loop.time()

    async def users() -> set[str]:
        reply = await ann.request({"presence": "lobby"})
        return {user for _, user in reply["presence"]}

    while await users() != {"ann"}:
        assert loop.time() - killed_at < 2 + TIMEOUT, "B's members stayed present"
        await asyncio.sleep(0.1)  # polling presence, bounded above
    await ann.ws.send('{"publish": "lobby", "data": "still here"}')
    await until(lambda: ann.data("lobby")[-1:] == ["still here"])
