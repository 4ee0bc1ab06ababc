"""The supervisor with real workers and real signals (``--workers 2``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .apptools import TIMEOUT, ServerProcess, connect_spread, metric, wait_metric, write_app

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(sys.platform == "win32", reason="Unix-only"),
]

GRACEFUL = 4.0


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[ServerProcess]:
    write_app(tmp_path)
    server = ServerProcess(
        ["testapp:handler", "--port", "0", "--workers", "2", "--graceful-timeout", str(GRACEFUL)],
        tmp_path,
    )
    try:
        server.wait_listening()
        yield server
    finally:
        server.stop()


async def chatter(
    ws: websockets.ClientConnection, stop: asyncio.Event, progress: list[int] | None = None
) -> int:
    """Exchange messages until ``stop`` or the server closes; return how many."""
    count = 0
    with contextlib.suppress(ConnectionClosed):
        while not stop.is_set():
            await ws.send(f"m{count}")
            assert await asyncio.wait_for(ws.recv(), TIMEOUT) == f"m{count}"
            count += 1
            if progress is not None:
                progress[0] += 1
            await asyncio.sleep(0)
    return count


async def test_sigterm_during_traffic_1001_to_all_and_exit_0(supervisor: ServerProcess) -> None:
    pids = supervisor.worker_pids(count=2)
    clients = await connect_spread(supervisor, set(pids), per_pid=3)
    stop = asyncio.Event()
    all_clients = [ws for group in clients.values() for ws in group]
    tasks = [asyncio.create_task(chatter(ws, stop)) for ws in all_clients]
    # Traffic is flowing on both workers.
    await asyncio.sleep(0)  # let the tasks start; the wait below is on a condition
    await wait_metric_at_least(supervisor, "wsharbor_messages_received_total", 30)
    started = time.monotonic()
    supervisor.signal(signal.SIGTERM)
    counts = await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
    assert all(count > 0 for count in counts)
    for ws in all_clients:
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1001, ws.close_code
    assert await asyncio.to_thread(supervisor.wait_exit) == 0
    assert time.monotonic() - started < GRACEFUL + 1
    assert "supervisor stopped" in supervisor.output


async def wait_metric_at_least(server: ServerProcess, name: str, minimum: float) -> None:
    end = time.monotonic() + TIMEOUT
    while time.monotonic() < end:
        value = await metric(server, name)
        if value is not None and value >= minimum:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never reached {minimum}")


async def test_kill_9_restarts_the_worker_and_spares_the_other(
    supervisor: ServerProcess,
) -> None:
    victim, survivor = supervisor.worker_pids(count=2)
    clients = await connect_spread(supervisor, {victim, survivor}, per_pid=2)
    stop = asyncio.Event()
    progress = [0]
    survivors = [asyncio.create_task(chatter(ws, stop, progress)) for ws in clients[survivor]]
    mark = supervisor.mark()
    os.kill(victim, signal.SIGKILL)
    # The victim's clients lose their connection (no close frame: it was killed).
    for ws in clients[victim]:
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    supervisor.wait_for(rf"worker {victim} died unexpectedly \(killed by SIGKILL\); restarting now")
    (replacement,) = supervisor.worker_pids(after=mark)
    assert replacement not in (victim, survivor)
    # The survivor's clients kept exchanging messages throughout and still do.
    after_restart = progress[0]
    while progress[0] < after_restart + 10:
        assert not any(task.done() for task in survivors)
        await asyncio.sleep(0.01)
    stop.set()
    counts = await asyncio.wait_for(asyncio.gather(*survivors), TIMEOUT)
    assert all(count > 0 for count in counts)
    for ws in clients[survivor]:
        assert ws.close_code is None  # never disturbed
        await ws.send("after restart")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "after restart"
    # The new worker serves too.
    new_clients = await connect_spread(supervisor, {replacement})
    await new_clients[replacement][0].close()
    for ws in clients[survivor]:
        await ws.close()


async def test_sighup_rolling_restart_1012_and_never_refused(supervisor: ServerProcess) -> None:
    old_pids = supervisor.worker_pids(count=2)
    clients = await connect_spread(supervisor, set(old_pids), per_pid=2)
    old_clients = [ws for group in clients.values() for ws in group]
    stop = asyncio.Event()
    outcomes: dict[str, int] = {"served": 0, "restart": 0}
    failures: list[str] = []
    served_pids: set[int] = set()

    async def connect_in_a_loop() -> None:
        while not stop.is_set():
            try:
                async with websockets.connect(supervisor.url(), open_timeout=TIMEOUT) as ws:
                    await ws.send("pid")
                    served_pids.add(int(await asyncio.wait_for(ws.recv(), TIMEOUT)))
                    outcomes["served"] += 1
            except ConnectionClosed as exc:
                # Connected to a worker that was retiring: 1012 says "reconnect".
                if exc.rcvd is not None and exc.rcvd.code == 1012:
                    outcomes["restart"] += 1
                else:
                    failures.append(f"closed without 1012: {exc!r}")
            except (OSError, InvalidStatus, TimeoutError) as exc:
                failures.append(repr(exc))

    loopers = [asyncio.create_task(connect_in_a_loop()) for _ in range(2)]
    while outcomes["served"] < 5:
        await asyncio.sleep(0.01)
    mark = supervisor.mark()
    supervisor.signal(signal.SIGHUP)
    for ws in old_clients:
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 1012, ws.close_code
        assert ws.close_reason == "service restart"
    supervisor.wait_for("rolling restart complete", after=mark)
    new_pids = supervisor.worker_pids(after=mark, count=2)
    assert not set(new_pids) & set(old_pids)
    served_before = outcomes["served"]
    while not set(new_pids) <= served_pids or outcomes["served"] < served_before + 5:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*loopers), TIMEOUT)
    assert failures == []
    assert set(old_pids) & served_pids  # the loop ran before the restart...
    assert set(new_pids) <= served_pids  # ...and after it
    # Old workers exited cleanly.
    for pid in old_pids:
        supervisor.wait_for(rf"worker {pid} exited \(exit status 0\)", after=mark)


async def test_connections_arriving_one_after_another_are_spread_evenly(
    supervisor: ServerProcess,
) -> None:
    """Issue 13, item 9: with the kernel alone, the busiest of two workers held
    52% to 78% of 200 connections arriving one after another (20 of 20 once)."""
    pids = supervisor.worker_pids(count=2)
    held: dict[int, list[websockets.ClientConnection]] = {pid: [] for pid in pids}
    try:
        for _ in range(200):
            ws = await websockets.connect(supervisor.url(), open_timeout=TIMEOUT)
            await ws.send("pid")
            held[int(await asyncio.wait_for(ws.recv(), TIMEOUT))].append(ws)
        counts = {pid: len(group) for pid, group in held.items()}
        print(f"\nconnections per worker: {counts}")
        assert sum(counts.values()) == 200
        assert max(counts.values()) <= 110, counts  # at most 55%
        # Connections that leave make room: the next ones go to the worker that lost them.
        emptied = pids[0]
        for ws in held[emptied][:20]:
            await ws.close()
        del held[emptied][:20]
        await wait_metric(supervisor, "wsharbor_connections_open", 180)
        for _ in range(20):
            ws = await websockets.connect(supervisor.url(), open_timeout=TIMEOUT)
            await ws.send("pid")
            held[int(await asyncio.wait_for(ws.recv(), TIMEOUT))].append(ws)
        counts = {pid: len(group) for pid, group in held.items()}
        assert max(counts.values()) - min(counts.values()) <= 4, counts
    finally:
        for group in held.values():
            for ws in group:
                await ws.close()


async def test_sighup_with_a_burst_waiting_in_the_backlog_loses_nothing(
    supervisor: ServerProcess,
) -> None:
    """A rolling restart while 100 connections arrive at once: every one is served
    (by an old worker, which then closes it with 1012, or by a new one)."""
    supervisor.worker_pids(count=2)
    mark = supervisor.mark()
    supervisor.signal(signal.SIGHUP)

    async def one(index: int) -> str:
        try:
            async with websockets.connect(supervisor.url(), open_timeout=TIMEOUT) as ws:
                await ws.send(f"burst {index}")
                assert await asyncio.wait_for(ws.recv(), TIMEOUT) == f"burst {index}"
                return "served"
        except ConnectionClosed as exc:
            return "restart" if exc.rcvd is not None and exc.rcvd.code == 1012 else repr(exc)
        except (OSError, InvalidStatus, TimeoutError) as exc:
            return repr(exc)

    outcomes = await asyncio.gather(*(one(i) for i in range(100)))
    assert set(outcomes) <= {"served", "restart"}, [o for o in outcomes if len(o) > 8]
    assert outcomes.count("served") > 0
    supervisor.wait_for("rolling restart complete", after=mark)


async def test_metrics_count_traffic_across_workers(supervisor: ServerProcess) -> None:
    pids = supervisor.worker_pids(count=2)
    await wait_metric(supervisor, "wsharbor_connections_open", 0)
    clients = [await websockets.connect(supervisor.url()) for _ in range(3)]
    await wait_metric(supervisor, "wsharbor_connections_open", 3)
    for ws in clients:
        for i in range(10):
            await ws.send(f"message {i:02d}")  # 10 bytes of payload
            assert await ws.recv() == f"message {i:02d}"
    for ws in clients:
        await ws.close()
    await wait_metric(supervisor, "wsharbor_connections_open", 0)
    await wait_metric(supervisor, 'wsharbor_connections_closed_total{code="1000"}', 3)
    assert await metric(supervisor, "wsharbor_messages_received_total") == 30
    assert await metric(supervisor, "wsharbor_messages_sent_total") == 30
    assert await metric(supervisor, 'wsharbor_handshakes_total{status="101"}') == 3
    # 30 unmasked server frames of 2 + 10 bytes, plus 3 handshake responses and closes.
    sent = await metric(supervisor, "wsharbor_bytes_sent_total")
    assert sent is not None and sent > 30 * 12
    # Each live worker reports its memory.
    status, text = await asyncio.to_thread(supervisor.http, "/metrics")
    assert status == 200
    for pid in pids:
        assert f'wsharbor_worker_resident_memory_bytes{{pid="{pid}"}}' in text


async def test_ttin_ttou_add_and_remove_a_worker(supervisor: ServerProcess) -> None:
    pids = supervisor.worker_pids(count=2)
    mark = supervisor.mark()
    supervisor.signal(signal.SIGTTIN)
    (added,) = supervisor.worker_pids(after=mark)
    clients = await connect_spread(supervisor, {*pids, added})
    mark = supervisor.mark()
    supervisor.signal(signal.SIGTTOU)
    match = supervisor.wait_for(r"retiring worker (\d+): fewer workers wanted", after=mark)[0]
    retired = int(match.group(1))
    assert retired in pids  # the oldest goes first
    await asyncio.wait_for(clients[retired][0].wait_closed(), TIMEOUT)
    assert clients[retired][0].close_code == 1012
    supervisor.wait_for(rf"worker {retired} exited \(exit status 0\)", after=mark)
    for pid, group in clients.items():
        if pid != retired:
            await group[0].send("still")
            assert await group[0].recv() == "still"
            await group[0].close()


async def test_sd_notify_from_the_supervisor(tmp_path: Path) -> None:
    write_app(tmp_path)
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(TIMEOUT)
        server = ServerProcess(
            ["testapp:handler", "--port", "0", "--workers", "2"],
            tmp_path,
            env={"NOTIFY_SOCKET": path},
        )
        try:

            async def receive() -> str:
                return (await asyncio.to_thread(sock.recv, 4096)).decode()

            assert await receive() == "READY=1\nSTATUS=2 workers ready"
            server.signal(signal.SIGHUP)
            reloading = await receive()
            assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
            assert await receive() == "READY=1\nSTATUS=2 workers ready"
            server.signal(signal.SIGTERM)
            assert (await receive()).startswith("STOPPING=1")
            assert await asyncio.to_thread(server.wait_exit) == 0
        finally:
            server.stop()


async def test_reload_restarts_on_code_change(tmp_path: Path) -> None:
    write_app(tmp_path)
    server = ServerProcess(["testapp:handler", "--port", "0", "--reload"], tmp_path)
    try:
        server.wait_listening()
        (first,) = server.worker_pids()
        mark = server.mark()
        source = (tmp_path / "testapp.py").read_text()
        (tmp_path / "testapp.py").write_text(source.replace("<h1>demo</h1>", "<h1>v2</h1>"))
        server.wait_for(r"testapp\.py changed: rolling restart", after=mark)
        (second,) = server.worker_pids(after=mark)
        assert second != first
        server.wait_for(rf"worker {first} exited", after=mark)
        assert await asyncio.to_thread(server.http, "/") == (200, "<h1>v2</h1>")
        # A broken edit doesn't take the server down: the old worker keeps serving.
        mark = server.mark()
        (tmp_path / "testapp.py").write_text("x = (\n")
        server.wait_for("rolling restart abandoned", after=mark)
        assert await asyncio.to_thread(server.http, "/") == (200, "<h1>v2</h1>")
    finally:
        server.stop()


async def test_crash_loop_is_reported_and_exits_3(tmp_path: Path) -> None:
    # Imports fine in the supervisor (which checks it), dies in every worker.
    write_app(
        tmp_path,
        source="import os\nif 'PROMETHEUS_MULTIPROC_DIR' in os.environ:\n    os._exit(1)\n"
        "async def handler(websocket):\n    pass\n",
    )
    server = ServerProcess(["testapp:handler", "--port", "0", "--workers", "2"], tmp_path)
    try:
        assert await asyncio.to_thread(server.wait_exit, 30) == 3
        server.wait_for(r"ERROR wsharbor.app: crash loop: 6 worker deaths within 10 s")
        assert "Traceback" not in server.output
    finally:
        server.stop()
