"""The connection scoreboard and accept throttling of app/balance.py, on real sockets.

The board is real shared memory; "another worker" is a slot this test writes,
or a child process that attached the inherited board. The server is a real
wsharbor server whose observer feeds the balancer, as ``wsharbor run`` does.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

import pytest

import wsharbor
from wsharbor import ServerConnection
from wsharbor.app.balance import Balancer, Scoreboard, backlog_length

TIMEOUT = 5.0
HOST = "127.0.0.1"


def test_scoreboard_slots_and_least_other() -> None:
    board = Scoreboard.create()
    try:
        a, b, c = board.claim(), board.claim(), board.claim()
        assert (a, b, c) == (1, 2, 3)
        assert board.counts() == {}  # claimed slots count once their worker serves
        board.set(a, 5)
        assert board.least_other(a) is None
        board.set(b, 3)
        board.set(c, 7)
        assert board.least_other(a) == 3 and board.least_other(b) == 5
        board.release(b)
        assert board.least_other(a) == 7
        assert board.claim() == b  # a freed slot is used again
        assert board.counts() == {a: 5, c: 7}
    finally:
        board.close()


def test_a_child_process_sees_and_writes_the_board() -> None:
    board = Scoreboard.create()
    try:
        mine, child = board.claim(), board.claim()
        board.set(mine, 4)
        code = (
            "import sys; from wsharbor.app.balance import Scoreboard\n"
            "board = Scoreboard.attach(int(sys.argv[1]))\n"
            "print(board.least_other(int(sys.argv[2])))\n"
            "board.set(int(sys.argv[2]), 9)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(board.fd), str(child)],
            pass_fds=(board.fd,),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "4"
        assert board.counts() == {mine: 4, child: 9}
    finally:
        board.close()


async def test_backlog_length_of_a_listening_socket() -> None:
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(16)
    clients = []
    try:
        assert backlog_length(sock) == 0
        for _ in range(3):
            clients.append(socket.create_connection(sock.getsockname()))
        # The kernel completes the handshakes into the accept queue.
        for _ in range(100):
            if backlog_length(sock) == 3:
                break
            await asyncio.sleep(0.01)
        assert backlog_length(sock) == 3
        sock.accept()[0].close()
        assert backlog_length(sock) == 2
    finally:
        for client in clients:
            client.close()
        sock.close()
    with socket.socket(socket.AF_UNIX) as unix:
        assert backlog_length(unix) is None


class Feed(wsharbor.ConnectionObserver):
    def __init__(self, balancer: Balancer) -> None:
        self.balancer = balancer

    def connection_accepted(self, connection: ServerConnection) -> None:
        self.balancer.accepted()

    def connection_closed(self, connection: wsharbor.Connection) -> None:
        self.balancer.closed()


async def hold(ws: ServerConnection) -> None:
    await ws.wait_closed()


@pytest.fixture
def board() -> object:
    board = Scoreboard.create()
    yield board
    board.close()


async def test_a_worker_ahead_stops_accepting_until_the_others_catch_up(
    board: Scoreboard,
) -> None:
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(64)
    mine, other = board.claim(), board.claim()
    balancer = Balancer(board, mine, sock, recheck=0.02, backlog=lambda _: 0)
    server = await wsharbor.serve(hold, sock=sock, observer=Feed(balancer))
    balancer.start(server)
    board.set(other, 0)  # "another worker", with no connection
    clients: list[wsharbor.ClientConnection] = []
    try:
        uri = f"ws://{HOST}:{sock.getsockname()[1]}/"
        for _ in range(2):  # up to SLACK (1) ahead, then one more
            clients.append(await wsharbor.connect(uri))
        assert balancer.count == 2 and not server.accepting
        assert board.counts() == {mine: 2, other: 0}
        # A client now waits in the backlog: nobody takes it.
        waiting = asyncio.ensure_future(wsharbor.connect(uri))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        # The other worker catches up: this one accepts again.
        board.set(other, 1)
        clients.append(await asyncio.wait_for(waiting, TIMEOUT))
        assert balancer.count == 3
        # A closed connection makes room too.
        board.set(other, 1)
        await clients.pop().close()
        for _ in range(100):
            if server.accepting:
                break
            await asyncio.sleep(0.01)
        assert server.accepting
    finally:
        for ws in clients:
            await ws.close()
        server.close()
        await server.wait_closed()


async def test_a_paused_worker_relieves_a_backlog_the_others_leave(board: Scoreboard) -> None:
    """Safety valve: the less loaded worker is stuck; connections waiting in the
    backlog at two looks in a row are taken although this worker is ahead."""
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(64)
    mine, other = board.claim(), board.claim()
    balancer = Balancer(board, mine, sock, recheck=0.02)
    server = await wsharbor.serve(hold, sock=sock, observer=Feed(balancer))
    balancer.start(server)
    board.set(other, 0)  # never accepts anything
    uri = f"ws://{HOST}:{sock.getsockname()[1]}/"
    clients = [await wsharbor.connect(uri) for _ in range(2)]
    try:
        assert not server.accepting
        more = [await asyncio.wait_for(wsharbor.connect(uri), TIMEOUT) for _ in range(3)]
        clients += more
        assert balancer.count == 5
    finally:
        for ws in clients:
            await ws.close()
        server.close()
        await server.wait_closed()


async def test_leave_stops_counting_in_the_board(board: Scoreboard) -> None:
    sock = socket.socket()
    sock.bind((HOST, 0))
    sock.listen(8)
    mine, other = board.claim(), board.claim()
    balancer = Balancer(board, mine, sock)
    server = await wsharbor.serve(hold, sock=sock, observer=Feed(balancer))
    try:
        balancer.start(server)
        board.set(other, 3)
        assert board.least_other(other) == 0
        balancer.leave()
        assert board.least_other(other) is None  # a retiring worker isn't a target
        assert os.path.exists(f"/proc/self/fd/{board.fd}")
    finally:
        server.close()
        await server.wait_closed()
