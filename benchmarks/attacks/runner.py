"""Run one attack scenario against one server: start it, probe it, measure it, stop it.

For each (scenario, server) pair the runner starts a fresh server process (through
:class:`benchmarks.harness.Harness`), starts the probe process (one echo every 50 ms
on its own connection), reads the server's RSS, runs the attack coroutine in this
process while a thread samples ``VmRSS`` every 50 ms, waits for the RSS to settle
once the attacker let go (and again after asking the server for a full
``gc.collect()``), stops the probe and reads the server's stderr. Everything
is bounded in time: the attack by its own budget and by the scenario's time limit,
the server's start and stop by the harness, the probe by its timeouts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import selectors
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks.harness import Harness, RunningServer, ServerUnavailable
from benchmarks.loadgen import cpu_seconds, rss_kib
from benchmarks.registry import REPO_ROOT, ServerSpec

__all__ = [
    "JSON",
    "Budget",
    "Outcomes",
    "Scenario",
    "Target",
    "read_log",
    "run_scenario",
]

JSON = dict[str, Any]

SAMPLE_EVERY = 0.05  # seconds between two VmRSS samples
PROBE_START_TIMEOUT = 15.0
PROBE_STOP_TIMEOUT = 10.0
SETTLE_MAX = 5.0  # seconds to wait for the RSS to stop moving after an attack
MIB = 1024  # KiB in a MiB


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long and how hard: the full run or ``--quick``."""

    quick: bool = False

    def pick(self, full: Any, quick: Any) -> Any:
        return quick if self.quick else full


@dataclasses.dataclass
class Target:
    """The server under attack, as an attack sees it."""

    lib: str
    port: int
    pid: int
    budget: Budget
    stderr_fd: int
    ca_path: str | None = None

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def log_size(self) -> int:
        return os.fstat(self.stderr_fd).st_size


class Outcomes:
    """How the attacker's connections ended, with when (seconds after they started)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = collections.defaultdict(list)

    def add(self, outcome: str, seconds: float | None = None) -> None:
        self.times[outcome].append(-1.0 if seconds is None else seconds)

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in sorted(self.times.items(), key=lambda kv: -len(kv[1]))}

    def summary(self, with_times: bool = False) -> str:
        parts = []
        for outcome, count in self.counts().items():
            text = f"{outcome} x{count:,}"
            seen = [t for t in self.times[outcome] if t >= 0]
            if with_times and seen and outcome != "open":
                text += f" at {statistics.median(seen):.1f} s"
            parts.append(text)
        return ", ".join(parts) or "none"


Attack = Callable[[Target], Awaitable[JSON]]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One row of the table per server.

    ``run`` returns a dict with at least ``closes`` (the closes column), ``held``
    (whether the server behaved as ``expect`` says) and ``why`` (the reasons it did
    not), plus any figures worth keeping; ``time_limit`` bounds it (seconds, from the
    budget) in case the attack's own bounds fail. ``max_growth_mib`` bounds the peak
    RSS over the RSS before the attack, ``max_after_mib`` the RSS once the attacker
    let go (both over the same base), when given.
    """

    name: str
    attack: str
    description: str
    expect: str
    run: Attack
    time_limit: Callable[[Budget], float]
    tls: bool = False
    nofile: int | None = None
    max_growth_mib: float | None = None
    max_after_mib: float | None = None


class Sampler:
    """Samples a process's VmRSS in a thread; ``peak_kib`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.peak_kib = max(self.peak_kib, rss_kib(self.pid))
            self._stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of ``pid`` since it started (``VmHWM``), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def settle(pid: int) -> int:
    """The RSS once it stopped moving (1 s within 1 % or 512 KiB), or after SETTLE_MAX s."""
    deadline = time.monotonic() + SETTLE_MAX
    samples = [rss_kib(pid)]
    while time.monotonic() < deadline:
        time.sleep(0.25)
        samples.append(rss_kib(pid))
        recent = samples[-5:]
        if len(recent) == 5 and max(recent) - min(recent) <= max(512, recent[-1] // 100):
            break
    return samples[-1]


def read_log(fd: int) -> bytes:
    """Everything the server wrote to stderr so far (``pread``: the offset it writes at
    is shared with us and must not move)."""
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


def analyze_log(data: bytes) -> JSON:
    lines = data.decode(errors="replace").splitlines()
    errors = [line for line in lines if line.startswith(("ERROR", "CRITICAL"))]
    return {
        "bytes": len(data),
        "lines": len(lines),
        "tracebacks": sum(1 for line in lines if line.startswith("Traceback")),
        "error_lines": len(errors),
        "warning_lines": sum(1 for line in lines if line.startswith("WARNING")),
        "first_errors": list(dict.fromkeys(errors))[:3],
        "first_lines": lines[:5],
    }


class Probe:
    """The probe process (``benchmarks.attacks.probe``)."""

    def __init__(self, port: int, ca_path: str | None) -> None:
        cmd = [sys.executable, "-m", "benchmarks.attacks.probe", "--port", str(port)]
        if ca_path:
            cmd += ["--tls-ca", ca_path]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(),
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + PROBE_START_TIMEOUT
        line = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in line and (remaining := deadline - time.monotonic()) > 0:
                if sel.select(remaining):
                    chunk = os.read(self.proc.stdout.fileno(), 1)
                    if not chunk:
                        break
                    line += chunk
        if line.strip() != b"READY":
            self.proc.kill()
            _, err = self.proc.communicate()
            raise ServerUnavailable(f"probe did not start: {err.decode().strip()[-200:]}")

    def stop(self) -> JSON:
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=PROBE_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            return {"error": "probe did not stop"}
        try:
            result: JSON = json.loads(out.decode().strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            return {"error": f"probe failed: {err.decode().strip()[-200:] or 'no output'}"}
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def _env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


@contextlib.contextmanager
def _server(
    harness: Harness, scenario: Scenario, lib: str, workdir: Path, uvloop: bool
) -> Iterator[tuple[RunningServer, str | None]]:
    args = ["--lib", lib]
    ca_path = None
    if scenario.tls:
        ca_path = str(workdir / f"ca-{lib}.pem")
        args += ["--tls-ca", ca_path]
    if scenario.nofile is not None:
        args += ["--nofile", str(scenario.nofile)]
    spec = ServerSpec(lib, lib, module="benchmarks.attacks.server", args=tuple(args))
    with harness.server(spec, uvloop=uvloop) as server:
        yield server, ca_path


def _failed(reason: str) -> JSON:
    return {"closes": reason, "error": reason, "why": [reason]}


async def _bounded(attack: Attack, target: Target, limit: float) -> JSON:
    async with asyncio.timeout(limit):
        return await attack(target)


def run_scenario(
    harness: Harness,
    scenario: Scenario,
    lib: str,
    budget: Budget,
    workdir: Path,
    uvloop: bool = False,
) -> JSON:
    """Run ``scenario`` against a fresh ``lib`` server (on uvloop if ``uvloop``); the
    row's figures as a dict."""
    result: JSON = {"scenario": scenario.name, "attack": scenario.attack, "server": lib}
    try:
        with _server(harness, scenario, lib, workdir, uvloop) as (server, ca_path):
            pid = server.pid
            stderr_fd = server.stderr.fileno()
            target = Target(lib, server.port, pid, budget, stderr_fd, ca_path)
            probe = Probe(server.port, ca_path)
            try:
                base = rss_kib(pid)
                cpu0, t0 = cpu_seconds(pid), time.monotonic()
                with Sampler(pid) as sampler:
                    try:
                        attack = asyncio.run(
                            _bounded(scenario.run, target, scenario.time_limit(budget))
                        )
                    except TimeoutError:
                        attack = _failed("the attack overran its time limit")
                    except (Exception, ExceptionGroup) as exc:  # the attack itself broke
                        attack = _failed(f"the attack failed: {type(exc).__name__}: {exc}")
                    seconds = time.monotonic() - t0
                    cpu = (cpu_seconds(pid) - cpu0) / seconds
                    alive = server.proc.poll() is None
                    after = settle(pid) if alive else 0
                    after_gc = 0
                    if alive:
                        os.kill(pid, signal.SIGUSR1)  # the server runs gc.collect()
                        after_gc = settle(pid)
                peak = max(sampler.peak_kib, vm_hwm_kib(pid) if alive else 0)
                probe_result = probe.stop()
            finally:
                probe.kill()
            log = analyze_log(read_log(stderr_fd))
    except ServerUnavailable as exc:
        result["error"] = str(exc)
        return result
    result.update(
        {
            "rss_base_kib": base,
            "rss_peak_kib": peak,
            "rss_after_kib": after,
            "rss_after_gc_kib": after_gc,
            "seconds": round(seconds, 2),
            "server_cpu": round(cpu, 3),
            "server_alive": alive,
            "probe": probe_result,
            "log": log,
            **attack,
        }
    )
    why: list[str] = result.setdefault("why", [])
    if not alive:
        why.append(f"server died (status {server.proc.returncode})")
    if log["tracebacks"]:
        why.append(f"{log['tracebacks']} tracebacks in the server's log")
    if probe_result.get("failures") or "error" in probe_result:
        why.append(f"probe: {probe_result.get('failures') or probe_result.get('error')}")
    growth = (peak - base) / MIB
    if scenario.max_growth_mib is not None and growth > scenario.max_growth_mib:
        why.append(f"peak RSS +{growth:,.0f} MiB (bound: {scenario.max_growth_mib:g} MiB)")
    kept = (after - base) / MIB
    if scenario.max_after_mib is not None and alive and kept > scenario.max_after_mib:
        why.append(
            f"RSS after +{kept:,.0f} MiB (bound: {scenario.max_after_mib:g} MiB; "
            f"after a full gc.collect(): {(after_gc - base) / MIB:+,.0f} MiB)"
        )
    result["held"] = not why
    return result
