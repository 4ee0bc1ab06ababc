"""Start servers and the load generator as subprocesses, collect and summarize results."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any

from benchmarks.loadgen import machine_busy_seconds
from benchmarks.registry import BASELINE, REPO_ROOT, ServerSpec, Workload

__all__ = ["Config", "Harness", "ServerUnavailable"]

JSON = dict[str, Any]

START_TIMEOUT = 20.0  # seconds for a server to print READY or accept connections
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
QUIET = 0.2  # CPU (in cores) used by others under which the machine counts as quiet
NOT_AVAILABLE = 3  # exit status of a server script whose library is missing


class ServerUnavailable(Exception):
    """The server could not be started; the message says why in one line."""


@dataclasses.dataclass
class Config:
    runs: int = 3
    duration: float = 2.0
    warmup: float = 0.5
    connections: int = 10_000
    connect_concurrency: int = 50
    handshake_concurrency: int = 8
    inflight_64k: int = 4
    inflight_1m: int = 2
    settle: float = 1.0
    quiet_timeout: float = 3.0
    pin: bool = True
    server_cpu: int = 0
    loadgen_cpu: int = 1
    fanout_rounds: int = 10
    fanout_processes: int = 1


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft fd limit to the hard one (inherited by the subprocesses)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(stream: IO[bytes], lines: int = 3) -> str:
    stream.seek(0)
    text = stream.read().decode(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


class RunningServer:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, stderr: IO[bytes]) -> None:
        self.proc = proc
        self.port = port
        self.stderr = stderr

    @property
    def pid(self) -> int:
        return self.proc.pid


class Harness:
    def __init__(self, config: Config, log: IO[str] = sys.stderr) -> None:
        self.config = config
        self.log = log
        self._tls_files: tuple[str, str] | None = None
        self._tls_dir: tempfile.TemporaryDirectory[str] | None = None
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        if len(cpus) < 2 or not {config.server_cpu, config.loadgen_cpu} <= cpus:
            config.pin = False
        self.nofile = raise_nofile_limit()

    def say(self, message: str) -> None:
        print(message, file=self.log, flush=True)

    # servers

    def tls_files(self) -> tuple[str, str]:
        """A certificate for 127.0.0.1 and its key (PEM files), made once per run with
        trustme (a throwaway CA: the load generator doesn't check certificates)."""
        if self._tls_files is None:
            try:
                import trustme
            except ImportError:
                raise ServerUnavailable(
                    "wss workloads need trustme: pip install -r benchmarks/requirements.txt"
                ) from None
            self._tls_dir = tempfile.TemporaryDirectory(prefix="wsharbor-bench-")
            cert = trustme.CA().issue_cert("127.0.0.1")
            cert_path = os.path.join(self._tls_dir.name, "cert.pem")
            key_path = os.path.join(self._tls_dir.name, "key.pem")
            cert.cert_chain_pems[0].write_to_path(cert_path)
            cert.private_key_pem.write_to_path(key_path)
            self._tls_files = (cert_path, key_path)
        return self._tls_files

    @contextlib.contextmanager
    def server(
        self, spec: ServerSpec, uvloop: bool, tls: bool = False, extra: tuple[str, ...] = ()
    ) -> Iterator[RunningServer]:
        """Start ``spec`` (serving wss:// if ``tls``, with the ``extra`` flags of a
        workload); stop it (SIGTERM, then SIGKILL) on exit."""
        if uvloop and not spec.supports_uvloop:
            raise ServerUnavailable("does not support --uvloop")
        for directory in spec.pythonpath:
            if not os.path.isdir(os.path.join(directory, "wsharbor")):
                raise ServerUnavailable(f"no wsharbor package in {directory}")
        if spec.script and not os.path.exists(spec.script[0]):
            raise ServerUnavailable(f"{os.path.relpath(spec.script[0], REPO_ROOT)} not found")
        if tls and not spec.module:
            raise ServerUnavailable("does not serve TLS")
        tls_files = self.tls_files() if tls else None
        port = 0 if spec.module else free_port()
        path = os.pathsep.join(
            filter(None, [*spec.pythonpath, str(REPO_ROOT), os.environ.get("PYTHONPATH")])
        )
        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(
                spec.command(uvloop, port, tls_files, extra),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env={**os.environ, "PYTHONPATH": path},
            )
            try:
                if self.config.pin:
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(proc.pid, {self.config.server_cpu})
                if spec.module:
                    port = self._wait_ready_line(proc, stderr)
                else:
                    self._wait_accepting(proc, port, stderr)
                yield RunningServer(proc, port, stderr)
            finally:
                self._stop(proc)

    def _wait_ready_line(self, proc: subprocess.Popen[bytes], stderr: IO[bytes]) -> int:
        assert proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while (remaining := deadline - time.monotonic()) > 0:
                if not sel.select(remaining):
                    continue
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                buffer += chunk
                for line in buffer.split(b"\n")[:-1]:
                    if line.startswith(b"READY "):
                        return int(line.split()[1])
        self._stop(proc)
        if proc.returncode == NOT_AVAILABLE:
            raise ServerUnavailable(tail(stderr, 1))
        status = f"exited with status {proc.returncode}" if proc.returncode else "no READY line"
        raise ServerUnavailable(f"{status}: {tail(stderr) or 'no output'}")

    def _wait_accepting(self, proc: subprocess.Popen[bytes], port: int, stderr: IO[bytes]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ServerUnavailable(f"exited with status {proc.returncode}: {tail(stderr)}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return
            time.sleep(0.05)
        self._stop(proc)
        raise ServerUnavailable(f"not accepting on port {port} after {START_TIMEOUT} s")

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def probe(self, spec: ServerSpec, uvloop: bool) -> str | None:
        """None if ``spec`` starts on this loop, else the reason it does not."""
        try:
            with self.server(spec, uvloop):
                return None
        except ServerUnavailable as exc:
            return str(exc)

    # load generator

    def loadgen_args(self, workload: Workload) -> list[str]:
        c = self.config
        args = ["--workload", workload.kind, "--duration", str(c.duration)]
        args += ["--warmup", str(c.warmup)]
        if workload.kind == "echo":
            inflight = workload.inflight
            if workload.name == "echo-64k":
                inflight = c.inflight_64k
            elif workload.name == "echo-1m":
                inflight = c.inflight_1m
            args += ["--size", str(workload.size), "--inflight", str(inflight)]
        elif workload.kind == "handshake":
            args += ["--concurrency", str(c.handshake_concurrency)]
        elif workload.kind == "memory":
            args += ["--connections", str(c.connections), "--settle", str(c.settle)]
            args += ["--concurrency", str(c.connect_concurrency)]
        elif workload.kind == "fanout":
            args += ["--connections", str(c.connections), "--size", str(workload.size)]
            args += ["--rounds", str(c.fanout_rounds), "--processes", str(c.fanout_processes)]
        if workload.tls:
            args.append("--tls")
        return [*args, *workload.loadgen_args]

    def label(self, workload: Workload) -> str:
        c = self.config
        inflight = {"echo-64k": c.inflight_64k, "echo-1m": c.inflight_1m}.get(
            workload.name, workload.inflight
        )
        return workload.label.format(
            inflight=inflight,
            concurrency=c.handshake_concurrency,
            connections=f"{c.connections:,}",
        )

    def wait_quiet(self) -> float:
        """Wait (at most ``quiet_timeout`` s) until other processes use under QUIET of a
        core, so a run does not start in the middle of someone else's test suite. Returns
        the seconds waited."""
        t0 = time.monotonic()
        deadline = t0 + self.config.quiet_timeout
        while True:
            busy0, w0 = machine_busy_seconds(), time.monotonic()
            time.sleep(0.3)
            busy = (machine_busy_seconds() - busy0) / (time.monotonic() - w0)
            if busy < QUIET or time.monotonic() >= deadline:
                return time.monotonic() - t0

    def run_once(self, spec: ServerSpec, uvloop: bool, workload: Workload) -> JSON:
        """One measurement on a fresh server process; ``{"error": ...}`` on failure."""
        c = self.config
        waited = self.wait_quiet() if c.quiet_timeout > 0 else 0.0
        result = self._run_once(spec, uvloop, workload)
        if waited >= 1:
            result["waited_for_quiet_s"] = round(waited, 1)
        return result

    def _run_once(self, spec: ServerSpec, uvloop: bool, workload: Workload) -> JSON:
        c = self.config
        try:
            with self.server(spec, uvloop, workload.tls, workload.server_args) as server:
                cmd = [sys.executable, "-m", "benchmarks.loadgen", "--port", str(server.port)]
                cmd += ["--server-pid", str(server.pid), *self.loadgen_args(workload)]
                if c.pin:
                    cmd += ["--cpu", str(c.loadgen_cpu)]
                # TLS handshakes cost about 1 ms of server CPU each.
                timeout = c.warmup + c.duration + 60 + c.connections / (20 if workload.tls else 100)
                try:
                    done = subprocess.run(
                        cmd, cwd=REPO_ROOT, capture_output=True, timeout=timeout, check=False
                    )
                except subprocess.TimeoutExpired:
                    return {"error": f"load generator timed out after {timeout:.0f} s"}
                lines = done.stdout.decode().strip().splitlines()
                try:
                    result: JSON = json.loads(lines[-1])
                except (IndexError, json.JSONDecodeError):
                    err = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
                    return {"error": f"load generator failed: {' | '.join(err) or 'no output'}"}
                if server.proc.poll() is not None:
                    result["error"] = (
                        f"server exited with status {server.proc.returncode}: {tail(server.stderr)}"
                    )
                return result
        except ServerUnavailable as exc:
            return {"error": f"server did not start: {exc}"}

    # the whole benchmark

    def run(self, specs: list[ServerSpec], workloads: list[Workload], loops: list[str]) -> JSON:
        c = self.config
        results: JSON = {}
        unavailable: dict[str, dict[str, str]] = {}
        for loop in loops:
            uvloop = loop == "uvloop"
            available: list[ServerSpec] = []
            for spec in specs:
                reason = self.probe(spec, uvloop)
                if reason is None:
                    available.append(spec)
                else:
                    unavailable.setdefault(loop, {})[spec.name] = reason
                    self.say(f"[{loop}] {spec.name}: not available ({reason})")
            loop_results: JSON = results.setdefault(loop, {})
            for workload in workloads:
                running = [s for s in available if s.runs(workload.name)]
                per_server: dict[str, list[JSON]] = {s.name: [] for s in running}
                for run in range(c.runs):
                    # Rotate the order so no server always runs first (or last).
                    shift = run % len(running) if running else 0
                    for spec in running[shift:] + running[:shift]:
                        result = self.run_once(spec, uvloop, workload)
                        per_server[spec.name].append(result)
                        self.say(
                            f"[{loop}] {workload.name} run {run + 1}/{c.runs} "
                            f"{spec.name}: {describe(workload, result)}"
                        )
                loop_results[workload.name] = {
                    name: summarize(workload, runs) for name, runs in per_server.items()
                }
                add_ratios(workload, loop_results[workload.name])
        return {"results": results, "unavailable": unavailable}


def describe(workload: Workload, result: JSON) -> str:
    if "error" in result:
        return f"ERROR {result['error']}"
    parts = [f"{result[m.key]:,.1f} {m.label}" for m in workload.metrics if m.key in result]
    cpu = [
        f"{who} {result[key] * 100:.0f}%"
        for who, key in (("server", "server_cpu"), ("loadgen", "loadgen_cpu"))
        if key in result
    ]
    if result.get("background_cpu", 0) > 0.1:
        cpu.append(f"background {result['background_cpu'] * 100:.0f}%")
    return ", ".join(parts) + (f" (CPU: {', '.join(cpu)})" if cpu else "")


def summarize(workload: Workload, runs: list[JSON]) -> JSON:
    """Median of every metric over the runs that succeeded."""
    good = [r for r in runs if "error" not in r]
    summary: JSON = {"runs": runs, "ok": len(good)}
    if not good:
        summary["error"] = runs[-1]["error"] if runs else "no run"
        return summary
    keys = [m.key for m in workload.metrics]
    keys += ["server_cpu", "loadgen_cpu", "background_cpu"]
    summary["median"] = {
        key: statistics.median(r[key] for r in good if key in r)
        for key in keys
        if any(key in r for r in good)
    }
    return summary


def add_ratios(workload: Workload, per_server: JSON) -> None:
    base = per_server.get(BASELINE, {}).get("median")
    if not base:
        return
    for summary in per_server.values():
        median = summary.get("median")
        if not median:
            continue
        summary["ratio"] = {
            m.key: median[m.key] / base[m.key]
            for m in workload.metrics
            if m.key in median and base.get(m.key)
        }
