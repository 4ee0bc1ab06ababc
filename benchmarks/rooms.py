"""``python -m benchmarks.rooms``: one publisher, many subscribers in one room, across workers.

What a chat or a live dashboard does on several processes: one publisher, one
room of (by default) 10,000 subscribers spread over the server's workers,
every publication delivered to every subscriber. Servers (each started fresh
for each run, on uvloop, compression and keepalive pings off):

- ``wsharbor-memory``: ``wsharbor run --broker memory://`` (one process);
- ``wsharbor-redis-1w`` / ``wsharbor-redis``: ``wsharbor run --broker redis://``
  with 1 / 2 workers (``benchmarks/servers/rooms_wsharbor.py``: the process's
  hub, ``wsharbor.fanout()`` encoding each frame once per process);
- ``websockets-redis``: what a user writes by hand today, 2 websockets workers
  that each subscribe with redis-py and call ``websockets.broadcast()``
  (``benchmarks/servers/rooms_websockets_redis.py``).

Both Redis servers use the same ``redis-server``, started by this command on
a free port (flushed before each run).

Workloads:

``fanout``
    ``--subscribers`` (10,000) subscribers; the publisher keeps ``--window``
    publications in flight (it publishes when fewer than that have not yet
    reached every subscriber), so each server runs as fast as it can deliver
    without building a backlog. Reports delivered messages/s (frames counted at
    the subscribers) and publish-to-receive p50/p99 at that load.
``latency``
    ``--latency-subscribers`` (10) subscribers, ``--rate`` (1,000) publications
    per second at a steady pace. Reports p50/p99 publish-to-receive: beside
    ``wsharbor-memory`` it shows what the Redis hop adds.

Measurement: subscribers are :mod:`benchmarks.rooms_loadgen` processes
(``--clients`` of them, each from its own 127.0.0.x source address); one
connection in ``--sample-every`` reads the publisher's ``time.monotonic_ns()``
from each payload (64 bytes of text) and records the latency. CPU time of the
server's processes, of redis-server and of the load generator (its processes
and this one, the publisher) is measured over each run, with the machine's
load average: on a machine with fewer cores than processes, the load
generator competes with the server for them, and the report says when it
used more CPU than the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import datetime
import json
import mmap
import os
import platform
import re
import shlex
import shutil
import statistics
import struct
import sys
import tempfile
import time
from array import array
from collections.abc import AsyncIterator
from typing import Any

from benchmarks.loadgen import (
    OP_TEXT,
    Client,
    client_frame,
    cpu_seconds,
    machine_busy_seconds,
    raise_nofile_limit,
    upgrade_request,
)
from benchmarks.registry import REPO_ROOT, fmt

__all__ = ["SERVERS", "WORKLOADS", "main"]

JSON = dict[str, Any]
HOST = "127.0.0.1"
#: Seconds for a server (all its workers) to start, and for subscribers to connect.
START_TIMEOUT = 120.0
PAYLOAD_SIZE = 64
#: CPU (in cores) used by other processes above which a run is flagged.
NOISY = 0.25


@dataclasses.dataclass(frozen=True)
class FanoutServer:
    name: str
    description: str
    kind: str  # wsharbor, websockets, socketio
    workers: int
    redis: bool

    def command(self, port: int, redis_url: str | None) -> list[str]:
        if self.kind == "wsharbor":
            return [
                sys.executable,
                "-m",
                "wsharbor",
                "run",
                "benchmarks.servers.rooms_wsharbor:app",
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                str(self.workers),
                "--broker",
                redis_url if self.redis and redis_url else "memory://",
                "--loop",
                "uvloop",
                "--compression",
                "none",
                "--ping-interval",
                "none",
                "--no-access-log",
                "--backlog",
                "4096",
            ]
        module = {
            "websockets": "benchmarks.servers.rooms_websockets_redis",
            "socketio": "benchmarks.servers.rooms_socketio_redis",
        }[self.kind]
        return [
            sys.executable,
            "-m",
            module,
            "--port",
            str(port),
            "--workers",
            str(self.workers),
            "--redis",
            str(redis_url),
            "--uvloop",
        ]

    @property
    def path(self) -> str:
        return "/socket.io/?EIO=4&transport=websocket" if self.kind == "socketio" else "/sub"

    @property
    def publish_path(self) -> str:
        return f"{self.path}&role=pub" if self.kind == "socketio" else "/pub"


SERVERS: dict[str, FanoutServer] = {
    server.name: server
    for server in (
        FanoutServer(
            "wsharbor-memory",
            "wsharbor run --broker memory:// (one process)",
            "wsharbor",
            1,
            False,
        ),
        FanoutServer(
            "wsharbor-redis-1w",
            "wsharbor run --broker redis:// --workers 1",
            "wsharbor",
            1,
            True,
        ),
        FanoutServer(
            "wsharbor-redis",
            "wsharbor run --broker redis:// --workers 2",
            "wsharbor",
            2,
            True,
        ),
        FanoutServer(
            "websockets-redis",
            "by hand: 2 websockets workers, redis-py subscribe + websockets.broadcast()",
            "websockets",
            2,
            True,
        ),
        FanoutServer(
            "socketio-redis",
            "python-socketio AsyncRedisManager on aiohttp, 2 workers, WebSocket transport",
            "socketio",
            2,
            True,
        ),
    )
}
DEFAULT_SERVERS = tuple(SERVERS)

WORKLOADS = ("fanout", "latency")


# Processes.


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants still alive."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += cpu_seconds(current)
            with open(f"/proc/{current}/task/{current}/children") as file:
                todo.extend(int(child) for child in file.read().split())
    return total


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Redis:
    """A redis-server of our own on a free port (no persistence), stopped at exit."""

    def __init__(self, program: str) -> None:
        self.program = program
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.directory = tempfile.mkdtemp(prefix="wsharbor-rooms-redis-")

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    async def start(self) -> None:
        self.port = free_port()
        self.proc = await asyncio.create_subprocess_exec(
            self.program,
            "--port", str(self.port),
            "--bind", HOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", self.directory,
            "--daemonize", "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if await self.command(b"PING") == b"+PONG":
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    async def command(self, *words: bytes) -> bytes:
        """One inline command; the first line of the answer (b"" if unreachable)."""
        try:
            reader, writer = await asyncio.open_connection(HOST, self.port)
        except OSError:
            return b""
        try:
            writer.write(b" ".join(words) + b"\r\n")
            return (await asyncio.wait_for(reader.readline(), 5)).strip()
        finally:
            writer.close()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class Server:
    """A server under test: started, ready (every worker), stopped."""

    def __init__(self, spec: FanoutServer, redis: Redis | None) -> None:
        self.spec = spec
        self.redis = redis
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.drainer: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Server:
        url = self.redis.url if self.redis is not None else None
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = await asyncio.create_subprocess_exec(
            *self.spec.command(self.port, url),
            cwd=REPO_ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await asyncio.wait_for(self._ready(), START_TIMEOUT)
        except TimeoutError:
            await self.stop()
            raise RuntimeError(f"not ready after {START_TIMEOUT:.0f} s") from None
        except BaseException:
            await self.stop()
            raise
        return self

    async def _ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        if self.spec.kind == "wsharbor":
            ready = r"worker \d+ ready" if self.spec.workers > 1 else r"listening on "
            needed = self.spec.workers if self.spec.workers > 1 else 1
        else:
            ready, needed = r"^READY \d+", 1
        seen = 0
        while seen < needed:
            line = await self.proc.stdout.readline()
            if not line:
                tail = " | ".join(self.lines[-3:])
                raise RuntimeError(f"{self.spec.name} exited before it was ready: {tail}")
            text = line.decode(errors="replace").rstrip()
            self.lines.append(text)
            if re.search(ready, text):
                seen += 1
        self.drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Subscribers:
    """The load generator's processes, their shared counters and their samples."""

    def __init__(self, server: Server, total: int, processes: int, sample_every: int) -> None:
        self.server = server
        self.total = total
        self.sample_every = sample_every
        self.processes: list[asyncio.subprocess.Process] = []
        count = max(1, min(processes, total))
        self.shares = [total // count + (1 if i < total % count else 0) for i in range(count)]
        fd, self.path = tempfile.mkstemp(prefix="wsharbor-rooms-")
        with os.fdopen(fd, "r+b") as file:
            file.write(b"\0" * 8 * len(self.shares))
            file.flush()
            self.counters = mmap.mmap(file.fileno(), 0)

    def received(self) -> int:
        return sum(struct.unpack_from(f"{len(self.shares)}q", self.counters))

    async def start(self) -> None:
        spec = self.server.spec
        for slot, share in enumerate(self.shares):
            command = [
                sys.executable, "-m", "benchmarks.rooms_loadgen",
                "--port", str(self.server.port),
                "--path", spec.path,
                "--connections", str(share),
                "--source", f"127.0.0.{2 + slot}",
                "--slot", str(slot),
                "--counters", self.path,
                "--sample-every", str(self.sample_every),
            ]  # fmt: skip
            if spec.kind == "socketio":
                command += ["--prefix", '42["msg","', "--after-upgrade", "40"]
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    *command,
                    cwd=REPO_ROOT,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for process in self.processes:
            try:
                reply = await self.reply(process, START_TIMEOUT)
            except TimeoutError:
                raise RuntimeError(
                    f"subscribers: not connected after {START_TIMEOUT:.0f} s"
                ) from None
            if "ready" not in reply:
                raise RuntimeError(f"subscribers: {reply.get('error', reply)}")

    @staticmethod
    async def reply(process: asyncio.subprocess.Process, timeout: float) -> JSON:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout)
        if not line:
            return {"error": f"exited with status {await process.wait()}"}
        result: JSON = json.loads(line)
        return result

    async def send(self, command: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(command.encode() + b"\n")
            await process.stdin.drain()

    async def collect(self) -> tuple[array[int], int]:
        """Stop recording; every process's latency samples (ns) and closed connections."""
        await self.send("stop")
        samples: array[int] = array("q")
        closed = 0
        for process in self.processes:
            reply = await self.reply(process, 30)
            if "samples" not in reply:
                raise RuntimeError(f"subscribers: {reply.get('error', reply)}")
            samples.frombytes(base64.b64decode(reply["samples"]))
            closed += reply["closed"]
        return samples, closed

    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.send("quit")
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        self.counters.close()
        os.unlink(self.path)


class Publisher(Client):
    """The one publisher: a WebSocket connection that sends timestamped messages."""

    def __init__(self, request: bytes, socketio: bool) -> None:
        super().__init__(request)
        self.socketio = socketio
        self.pad = "x" * (PAYLOAD_SIZE - 20)

    def publish(self, count: int) -> None:
        assert self.transport is not None
        frames = []
        for _ in range(count):
            payload = f"{time.monotonic_ns():020d}{self.pad}"
            if self.socketio:
                payload = f'42["publish","{payload}"]'
            frames.append(client_frame(OP_TEXT, payload.encode()))
        self.transport.write(b"".join(frames))


# One run.


@dataclasses.dataclass
class Settings:
    subscribers: int = 10_000
    latency_subscribers: int = 100
    rate: float = 1000.0
    window: int = 4
    duration: float = 5.0
    warmup: float = 1.0
    clients: int = 4
    latency_clients: int = 1
    sample_every: int = 20


@contextlib.asynccontextmanager
async def publisher(server: Server) -> AsyncIterator[Publisher]:
    spec = server.spec
    request = upgrade_request(HOST, server.port, spec.publish_path)
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(
        lambda: Publisher(request, spec.kind == "socketio"), HOST, server.port
    )
    assert isinstance(protocol, Publisher)
    await asyncio.wait_for(protocol.upgraded, 10)
    if spec.kind == "socketio":
        transport.write(client_frame(OP_TEXT, b"40"))
    try:
        yield protocol
    finally:
        transport.abort()


async def wait_all_joined(subscribers: Subscribers, pub: Publisher, count: int) -> None:
    """Publish probes until one reaches every subscriber (joins are asynchronous)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        before = subscribers.received()
        pub.publish(1)
        probe_deadline = time.monotonic() + 2
        while time.monotonic() < probe_deadline:
            await asyncio.sleep(0.01)
            if subscribers.received() - before >= count:
                await asyncio.sleep(0.2)  # stragglers of earlier probes
                return
    raise RuntimeError(f"a publication never reached all {count} subscribers")


async def run_once(
    spec: FanoutServer, workload: str, settings: Settings, redis: Redis | None
) -> JSON:
    count = settings.subscribers if workload == "fanout" else settings.latency_subscribers
    if redis is not None:
        await redis.command(b"FLUSHALL")
    t0 = time.monotonic()
    server = Server(spec, redis)
    try:
        return await run_started(server, workload, count, settings, redis, t0)
    except Exception as exc:
        errors = [line for line in server.lines if "ERROR" in line or "WARNING" in line]
        if errors:
            raise RuntimeError(f"{exc}; the server logged: {errors[-1][:300]}") from exc
        raise


async def run_started(
    server: Server,
    workload: str,
    count: int,
    settings: Settings,
    redis: Redis | None,
    t0: float,
) -> JSON:
    async with server:
        started = time.monotonic() - t0
        processes = settings.clients if workload == "fanout" else settings.latency_clients
        subscribers = Subscribers(server, count, processes, settings.sample_every)
        try:
            await subscribers.start()
            connected = time.monotonic() - t0 - started
            async with publisher(server) as pub:
                await wait_all_joined(subscribers, pub, count)
                joined = time.monotonic() - t0 - started - connected
                result = await measure(server, subscribers, pub, workload, count, settings, redis)
                result["setup_s"] = {"start": started, "connect": connected, "join": joined}
                return result
        finally:
            await subscribers.stop()


async def measure(
    server: Server,
    subscribers: Subscribers,
    pub: Publisher,
    workload: str,
    count: int,
    settings: Settings,
    redis: Redis | None,
) -> JSON:
    assert server.proc is not None
    published = 0
    base = subscribers.received()
    start = time.monotonic()
    recording = False
    window: JSON = {}
    end = start + settings.warmup + settings.duration
    while (now := time.monotonic()) < end:
        if not recording and now >= start + settings.warmup:
            recording = True
            await subscribers.send("record")
            window = {
                "time": time.monotonic(),
                "received": subscribers.received(),
                "server_cpu": tree_cpu(server.proc.pid),
                "redis_cpu": cpu_seconds(redis.pid) if redis and redis.pid else 0.0,
                "loadgen_cpu": sum(cpu_seconds(p) for p in subscribers.pids())
                + time.process_time(),
                "busy": machine_busy_seconds(),
            }
        if workload == "fanout":
            delivered = (subscribers.received() - base) // count
            missing = settings.window - (published - delivered)
            pause = 0.001
        else:
            missing = int((now - start) * settings.rate) - published
            pause = max(0.0, start + (published + max(missing, 0) + 1) / settings.rate - now)
        if missing > 0:
            pub.publish(missing)
            published += missing
        await asyncio.sleep(pause)
    elapsed = time.monotonic() - window["time"]
    received = subscribers.received() - window["received"]
    result: JSON = {
        "seconds": elapsed,
        "subscribers": count,
        "delivered_per_s": received / elapsed,
        "published_per_s": received / count / elapsed,
        "server_cpu": (tree_cpu(server.proc.pid) - window["server_cpu"]) / elapsed,
        "redis_cpu": (
            (cpu_seconds(redis.pid) - window["redis_cpu"]) / elapsed
            if redis and redis.pid and server.spec.redis
            else 0.0
        ),
        "loadgen_cpu": (
            sum(cpu_seconds(p) for p in subscribers.pids())
            + time.process_time()
            - window["loadgen_cpu"]
        )
        / elapsed,
        "machine_cpu": (machine_busy_seconds() - window["busy"]) / elapsed,
    }
    # Server-side CPU per delivered message: what capacity costs when the clients
    # are elsewhere (on this machine the load generator competes for the cores).
    result["server_us_per_msg"] = (
        (result["server_cpu"] + result["redis_cpu"]) / result["delivered_per_s"] * 1e6
        if result["delivered_per_s"]
        else 0.0
    )
    result["background_cpu"] = max(
        0.0,
        result["machine_cpu"] - result["server_cpu"] - result["redis_cpu"] - result["loadgen_cpu"],
    )
    samples, closed = await subscribers.collect()
    # Drain: everything published reaches every subscriber (or is lost).
    expected = base + published * count
    deadline = time.monotonic() + 10
    while subscribers.received() < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    result["undelivered"] = max(0, expected - subscribers.received())
    result["closed"] = closed
    if samples:
        ordered = sorted(samples)
        result["samples"] = len(ordered)
        result["p50_ms"] = ordered[len(ordered) // 2] / 1e6
        result["p99_ms"] = ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)] / 1e6
    return result


# The whole benchmark.


def render(results: JSON, settings: Settings, servers: list[str], workloads: list[str]) -> str:
    out: list[str] = []
    load = results["loadavg"]
    out.append(
        f"Median of {results['runs']} run(s); load average before: {load[0]:.2f} "
        f"(1 min), {load[1]:.2f} (5 min) on {os.cpu_count()} CPUs.\n"
    )
    notes: list[str] = []
    for workload in workloads:
        if workload == "fanout":
            out.append(
                f"#### Fan-out: 1 publisher, {settings.subscribers:,} subscribers in one room, "
                f"{settings.window} publications in flight\n"
            )
        else:
            out.append(
                f"#### Latency: 1 publisher at {settings.rate:,.0f} msg/s, "
                f"{settings.latency_subscribers:,} subscribers in one room\n"
            )
        out.append(
            "| server | delivered msg/s | publications/s | p50 (ms) | p99 (ms) "
            "| CPU server | CPU redis | CPU loadgen | server CPU µs/msg |"
        )
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name in servers:
            summary = results["results"].get(workload, {}).get(name)
            if summary is None:
                continue
            if "median" not in summary:
                out.append(f"| {name} | error | | | | | | | |")
                notes.append(f"{name}, {workload}: {summary.get('error')}")
                continue
            m = summary["median"]
            flag = ""
            if m.get("loadgen_cpu", 0) >= m.get("server_cpu", 0) + m.get("redis_cpu", 0):
                flag = "†"
            if m.get("background_cpu", 0) >= NOISY:
                flag += "‡"
            if m.get("undelivered") or m.get("closed"):
                notes.append(
                    f"{name}, {workload}: {m.get('undelivered', 0):,.0f} deliveries missing "
                    f"after the run, {m.get('closed', 0):,.0f} subscribers closed"
                )
            out.append(
                f"| {name} | {fmt(m['delivered_per_s'])}{flag} | {fmt(m['published_per_s'])} "
                f"| {fmt(m.get('p50_ms', float('nan')))} | {fmt(m.get('p99_ms', float('nan')))} "
                f"| {m['server_cpu']:.2f} | {m['redis_cpu']:.2f} | {m['loadgen_cpu']:.2f} "
                f"| {fmt(m['server_us_per_msg'])} |"
            )
        out.append("")
    text = "\n".join(out)
    if "†" in text:
        notes.append(
            "† the load generator used as much CPU as the server (and Redis) or more: on "
            "this machine they share cores, so that figure may be a lower bound"
        )
    if "‡" in text:
        notes.append(f"‡ other processes used >= {NOISY} core during the run")
    out.extend(f"- {note}" for note in notes)
    out.append(
        "- CPU: cores used over the measured window (server: every worker); server CPU "
        "µs/msg: (server + redis) CPU time per delivered message"
    )
    out.append("")
    out.extend(targets(results))
    return "\n".join(out)


def targets(results: JSON) -> list[str]:
    """The issue's targets, measured in this run."""
    lines = []
    per = results["results"]

    def median(workload: str, name: str, key: str) -> float | None:
        value = per.get(workload, {}).get(name, {}).get("median", {}).get(key)
        return None if value is None else float(value)

    ours = median("fanout", "wsharbor-redis", "delivered_per_s")
    theirs = median("fanout", "websockets-redis", "delivered_per_s")
    if ours and theirs:
        ratio = ours / theirs
        lines.append(
            f"- Redis fan-out, 2 workers: wsharbor {fmt(ours)} msg/s, websockets + redis-py "
            f"{fmt(theirs)} msg/s: {ratio:.2f}x (target: at least 2x) "
            f"{'met' if ratio >= 2 else 'NOT met'}"
        )
    ours_cost = median("fanout", "wsharbor-redis", "server_us_per_msg")
    theirs_cost = median("fanout", "websockets-redis", "server_us_per_msg")
    if ours_cost and theirs_cost:
        lines.append(
            f"- Server CPU per delivered message, same run: wsharbor {ours_cost:.1f} µs, "
            f"websockets + redis-py {theirs_cost:.1f} µs: {theirs_cost / ours_cost:.2f}x the "
            "deliveries per CPU second"
        )
    memory = median("latency", "wsharbor-memory", "p50_ms")
    for name, label in (("wsharbor-redis-1w", "1 worker"), ("wsharbor-redis", "2 workers")):
        hop = median("latency", name, "p50_ms")
        if memory is not None and hop is not None:
            added = hop - memory
            lines.append(
                f"- The Redis hop at the latency workload's rate ({label}): p50 {hop:.2f} ms "
                f"vs {memory:.2f} ms through memory://: {added:+.2f} ms (target: at most "
                f"+1 ms) {'met' if added <= 1 else 'NOT met'}"
            )
    return lines


def summarize(runs: list[JSON]) -> JSON:
    good = [run for run in runs if "error" not in run]
    summary: JSON = {"runs": runs}
    if not good:
        summary["error"] = runs[-1]["error"] if runs else "no run"
        return summary
    keys = {key for run in good for key, value in run.items() if isinstance(value, int | float)}
    summary["median"] = {
        key: statistics.median(run[key] for run in good if key in run) for key in sorted(keys)
    }
    return summary


def machine() -> JSON:
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    dists = ("wsharbor", "websockets", "redis", "hiredis", "python-socketio", "uvloop")
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": {dist: version(dist) for dist in dists},
    }


async def amain(args: argparse.Namespace, argv: list[str] | None = None) -> int:
    settings = Settings(
        subscribers=args.subscribers,
        latency_subscribers=args.latency_subscribers,
        rate=args.rate,
        window=args.window,
        duration=args.duration,
        warmup=args.warmup,
        clients=args.clients,
        latency_clients=args.latency_clients,
        sample_every=args.sample_every,
    )
    soft = raise_nofile_limit()
    if soft < settings.subscribers + 512:
        print(
            f"warning: RLIMIT_NOFILE is {soft}: {settings.subscribers} subscribers need "
            "that many fds in a one-process server",
            file=sys.stderr,
        )
    program = shutil.which("redis-server")
    redis: Redis | None = None
    unavailable: dict[str, str] = {}
    servers = list(args.servers)
    if any(SERVERS[name].redis for name in servers):
        try:
            import redis as _redis  # noqa: F401
        except ImportError:
            program = None
            why = "redis-py is not installed (pip install -e '.[bench]')"
        else:
            why = "redis-server not found (scripts/install-system-deps.sh)"
        if program is None:
            for name in servers:
                if SERVERS[name].redis:
                    unavailable[name] = why
        else:
            redis = Redis(program)
            await redis.start()
    load = os.getloadavg()
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    results: JSON = {"results": {}, "runs": args.runs, "loadavg": load}
    try:
        for workload in args.workloads:
            per = results["results"].setdefault(workload, {})
            for name in servers:
                if name in unavailable:
                    per[name] = {"runs": [], "error": f"not available: {unavailable[name]}"}
                    continue
                runs = []
                for run in range(args.runs):
                    try:
                        result = await run_once(SERVERS[name], workload, settings, redis)
                    except Exception as exc:  # a server that fails is reported, not fatal
                        result = {"error": f"{type(exc).__name__}: {exc}"}
                    runs.append(result)
                    print(f"[{workload}] {name} run {run + 1}/{args.runs}: {describe(result)}")
                    sys.stdout.flush()
                per[name] = summarize(runs)
    finally:
        if redis is not None:
            await redis.stop()
    print()
    print(render(results, settings, servers, list(args.workloads)))
    if args.json:
        command = ["python", "-m", "benchmarks.rooms", *(argv or [])]
        document = {
            "command": shlex.join(command),
            "started": started,
            "machine": machine(),
            "settings": dataclasses.asdict(settings),
            **results,
        }
        with open(args.json, "w") as file:
            json.dump(document, file, indent=2)
            file.write("\n")
    return 0


def describe(result: JSON) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    setup = result.get("setup_s", {})
    steps = ", ".join(f"{key} {value:.1f} s" for key, value in setup.items())
    return (
        f"[{steps}] {result['delivered_per_s']:,.0f} delivered/s, "
        f"p50 {result.get('p50_ms', 0):.2f} ms, "
        f"p99 {result.get('p99_ms', 0):.2f} ms (CPU: server {result['server_cpu']:.2f}, "
        f"redis {result['redis_cpu']:.2f}, loadgen {result['loadgen_cpu']:.2f}, "
        f"others {result['background_cpu']:.2f})"
    )


def csv(choices: tuple[str, ...]) -> Any:
    def parse(value: str) -> list[str]:
        items = [item.strip() for item in value.split(",") if item.strip()]
        unknown = [item for item in items if item not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(unknown)} (choose from {', '.join(choices)})"
            )
        return items

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.rooms",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--servers", type=csv(tuple(SERVERS)), default=list(DEFAULT_SERVERS))
    parser.add_argument("--workloads", type=csv(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--subscribers", type=int, default=10_000, help="fanout (10000)")
    parser.add_argument("--window", type=int, default=4, help="fanout: in flight (4)")
    parser.add_argument("--latency-subscribers", type=int, default=10, help="latency (10)")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency: msg/s (1000)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds (5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before (1)")
    parser.add_argument("--runs", type=int, default=1, help="runs per figure, median (1)")
    parser.add_argument("--clients", type=int, default=4, help="fanout: subscriber processes (4)")
    parser.add_argument(
        "--latency-clients", type=int, default=1, help="latency: subscriber processes (1)"
    )
    parser.add_argument(
        "--sample-every", type=int, default=20, help="one connection in N records latency (20)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1,000 subscribers, 1 s per run"
    )
    parser.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.subscribers = min(args.subscribers, 1000)
        args.duration, args.warmup = 1.0, 0.3
    names = ("subscribers", "latency_subscribers", "window", "runs", "clients", "latency_clients")
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.clients > 250:
        parser.error("--clients: at most 250 (one 127.0.0.x source address each)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if argv is None:
        argv = sys.argv[1:]
    try:
        import uvloop
    except ImportError:
        return asyncio.run(amain(args, argv))
    return uvloop.run(amain(args, argv))


if __name__ == "__main__":
    sys.exit(main())
