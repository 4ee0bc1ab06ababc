"""What can be measured: the echo servers and the workloads.

A server is one more :class:`ServerSpec` entry; a workload is one more :class:`Workload`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

from benchmarks.servers._common import DEFAULT_MAX_SIZE

__all__ = [
    "BASELINE",
    "DEFAULT_SERVERS",
    "REPO_ROOT",
    "SERVERS",
    "WORKLOADS",
    "Metric",
    "ServerSpec",
    "Workload",
    "fmt",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Every ratio is this server's figure divided by the baseline's, measured in the same run.
BASELINE = "websockets"


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """How to start one echo server.

    ``module`` servers follow :mod:`benchmarks.servers`: ``--port 0``, ``--uvloop``, and a
    ``READY <port>`` line on stdout. ``script`` servers are outside programs (such as
    ``examples/echo.py``) that take ``--host``/``--port``: the harness picks a free port and
    waits until it accepts TCP connections.
    """

    name: str
    description: str
    module: str | None = None
    script: tuple[str, ...] = ()
    supports_uvloop: bool = True
    #: The workloads this server is run on; ``None``: all of them.
    workloads: frozenset[str] | None = None
    #: Extra arguments after ``--host``/``--port`` of a ``module`` server.
    args: tuple[str, ...] = ()
    #: Directories put first on the server's PYTHONPATH (another wsharbor checkout).
    pythonpath: tuple[str, ...] = ()
    #: What the server can do beyond echoing: ``deflate`` (``--compression``: the library's
    #: permessage-deflate), ``fanout`` (``--fanout``: every message to every connection).
    features: frozenset[str] = frozenset({"deflate", "fanout"})

    def runs(self, workload: str) -> bool:
        if self.workloads is not None:
            return workload in self.workloads
        return WORKLOADS[workload].needs <= self.features

    def command(
        self,
        uvloop: bool,
        port: int = 0,
        tls: tuple[str, str] | None = None,
        extra: tuple[str, ...] = (),
    ) -> list[str]:
        """The server's command line; ``tls``: (certificate, key) PEM files for wss://;
        ``extra``: a workload's flags."""
        if self.module is not None:
            cmd = [sys.executable, "-m", self.module, "--host", "127.0.0.1", "--port", "0"]
            cmd += [*self.args, *extra]
            if tls is not None:
                cmd += ["--tls-cert", tls[0], "--tls-key", tls[1]]
            return [*cmd, "--uvloop"] if uvloop else cmd
        return [
            sys.executable,
            *(arg.replace("{port}", str(port)) for arg in self.script),
        ]


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(
            "websockets",
            "websockets.asyncio.server.serve",
            module="benchmarks.servers.websockets_server",
        ),
        ServerSpec(
            "aiohttp", "aiohttp web.WebSocketResponse", module="benchmarks.servers.aiohttp_server"
        ),
        ServerSpec(
            "picows",
            "picows ws_create_server + WSListener (no permessage-deflate: not run compressed)",
            module="benchmarks.servers.picows_server",
            features=frozenset({"fanout"}),
        ),
        ServerSpec("wsharbor", "wsharbor.serve", module="benchmarks.servers.wsharbor_server"),
        ServerSpec(
            "asyncio-floor",
            "reference, not a WebSocket server: canned 101, unmask and echo in one callback "
            "(fan-out: one transport.write per connection in a plain loop)",
            module="benchmarks.servers.floor_server",
            workloads=frozenset({"echo-64-1", "echo-64-100", "handshake", "memory", "fanout"}),
        ),
        ServerSpec(
            "blocking-floor",
            "reference, not a WebSocket server: blocking sockets, a thread per connection",
            module="benchmarks.servers.blocking_floor_server",
            workloads=frozenset({"echo-64-1", "echo-64-100"}),
        ),
        ServerSpec(
            "wsharbor-limits-32-64k",
            "wsharbor.serve with the earlier defaults max_queue=32 and write_limit=64 KiB "
            "(the measurement behind today's, docs/coming-from-websockets.md)",
            module="benchmarks.servers.wsharbor_server",
            args=("--max-queue", "32", "--write-limit", str(64 * 1024)),
            workloads=frozenset({"echo-64-1", "echo-64-100", "echo-64k", "echo-1m"}),
        ),
        ServerSpec(
            "wsharbor-loop-tls",
            "wsharbor.serve with tls_transport='loop': the event loop's own TLS "
            "(asyncio's SSLProtocol or uvloop's) instead of wsharbor's; wss workloads only",
            module="benchmarks.servers.wsharbor_server",
            args=("--tls-transport", "loop"),
            workloads=frozenset({"wss-handshake", "wss-memory"}),
        ),
        ServerSpec(
            "wsharbor-before",
            "wsharbor.serve from the checkout in $WSHARBOR_BEFORE (its src/ with the C "
            "accelerator built): a before/after comparison in one run",
            module="benchmarks.servers.wsharbor_server",
            pythonpath=(os.path.join(os.environ.get("WSHARBOR_BEFORE", "/nonexistent"), "src"),),
        ),
        ServerSpec(
            "wsharbor-example",
            "examples/echo.py (asyncio only)",
            script=(
                str(REPO_ROOT / "examples" / "echo.py"),
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--no-compression",
                "--max-size",
                str(DEFAULT_MAX_SIZE),
                "--log-level",
                "WARNING",
            ),
            supports_uvloop=False,
            workloads=frozenset(
                {"echo-64-1", "echo-64-100", "echo-64k", "echo-1m", "handshake", "memory"}
            ),
            features=frozenset(),
        ),
    )
}

DEFAULT_SERVERS = (
    "websockets",
    "aiohttp",
    "picows",
    "wsharbor",
    "asyncio-floor",
    "blocking-floor",
)


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str  # key in the load generator's JSON result
    label: str
    higher_is_better: bool = True


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    label: str
    kind: str  # the load generator's --workload
    size: int = 0
    inflight: int = 0
    metrics: tuple[Metric, ...] = ()
    #: Over wss:// (the harness gives the server a certificate, the load generator --tls).
    tls: bool = False
    #: Flags for the server (``--compression``, ``--fanout``) and the load generator.
    server_args: tuple[str, ...] = ()
    loadgen_args: tuple[str, ...] = ()
    #: Server features this workload needs (:attr:`ServerSpec.features`).
    needs: frozenset[str] = frozenset()


MSG_PER_S = Metric("msg_per_s", "msg/s")
MB_PER_S = Metric("mb_per_s", "MB/s")
DELIVERIES = Metric("deliveries_per_s", "deliveries/s (connections / time to the last)")
LAST_MS = Metric("last_ms", "ms until the last client has it", higher_is_better=False)
DEFLATE = frozenset({"deflate"})
SERVER_US = Metric("server_us_per_msg", "server CPU per message (µs)", higher_is_better=False)

WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "echo-64-1",
            "64 B echo, 1 in flight",
            "echo",
            64,
            1,
            (
                MSG_PER_S,
                Metric("p50_us", "p50 round trip (µs)", higher_is_better=False),
                Metric("p99_us", "p99 round trip (µs)", higher_is_better=False),
            ),
        ),
        Workload("echo-64-100", "64 B echo, 100 in flight", "echo", 64, 100, (MSG_PER_S,)),
        Workload(
            "echo-64k", "64 KiB echo, {inflight} in flight", "echo", 64 * 1024, 4, (MB_PER_S,)
        ),
        Workload(
            "echo-1m", "1 MiB echo, {inflight} in flight", "echo", 1024 * 1024, 2, (MB_PER_S,)
        ),
        Workload(
            "handshake",
            "handshakes, {concurrency} concurrent",
            "handshake",
            metrics=(Metric("handshakes_per_s", "handshakes/s"),),
        ),
        Workload(
            "memory",
            "{connections} idle connections",
            "memory",
            metrics=(Metric("kib_per_conn", "server RSS per connection (KiB)", False),),
        ),
        Workload(
            "wss-handshake",
            "TLS + WebSocket handshakes, {concurrency} concurrent",
            "handshake",
            metrics=(
                Metric("handshakes_per_s", "handshakes/s"),
                Metric("server_us_per_handshake", "server CPU per handshake (µs)", False),
            ),
            tls=True,
        ),
        Workload(
            "wss-memory",
            "{connections} idle wss connections",
            "memory",
            metrics=(Metric("kib_per_conn", "server RSS per connection (KiB)", False),),
            tls=True,
        ),
        # Realistic JSON text (benchmarks.loadgen.json_messages), permessage-deflate with
        # each library's default settings, offered as a browser offers it.
        Workload(
            "deflate-200",
            "200 B JSON echo, compressed, {inflight} in flight",
            "echo",
            200,
            100,
            (MSG_PER_S, SERVER_US),
            server_args=("--compression",),
            loadgen_args=("--compression",),
            needs=DEFLATE,
        ),
        Workload(
            "deflate-16k",
            "16 KiB JSON echo, compressed, {inflight} in flight",
            "echo",
            16 * 1024,
            4,
            (MSG_PER_S, MB_PER_S, SERVER_US),
            server_args=("--compression",),
            loadgen_args=("--compression",),
            needs=DEFLATE,
        ),
        Workload(
            "fanout",
            "fan-out: 100 B to {connections} connections",
            "fanout",
            100,
            metrics=(DELIVERIES, LAST_MS, SERVER_US),
            server_args=("--fanout",),
            needs=frozenset({"fanout"}),
        ),
        Workload(
            "fanout-deflate",
            "fan-out, compressed: 100 B to {connections} connections",
            "fanout",
            100,
            metrics=(DELIVERIES, LAST_MS, SERVER_US),
            server_args=("--fanout", "--compression"),
            loadgen_args=("--compression",),
            needs=frozenset({"fanout", "deflate"}),
        ),
    )
}


def fmt(value: float) -> str:
    """A figure for the tables: three significant digits or so."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
