"""``python -m benchmarks``: wsharbor and its peers, same workloads, same run.

Every figure is the median of ``--runs`` runs, each on a fresh server process; ratios are to
websockets measured in the same invocation (for latency and memory, lower is better, so a
ratio under 1 is a win there). The load generator is a separate process pinned to its own
core; each run records its CPU use and the server's, and a figure where the load generator
rather than the server was saturated is flagged.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
from importlib import metadata
from typing import Any

from benchmarks.harness import Config, Harness
from benchmarks.registry import BASELINE, DEFAULT_SERVERS, SERVERS, WORKLOADS, Workload, fmt

JSON = dict[str, Any]

LOOPS = ("asyncio", "uvloop")
LOADGEN_BOUND = 0.9  # load generator CPU share above which a figure may be its own limit
NOISY = 0.25  # CPU (in cores) used by other processes above which a run is flagged


def csv(choices: list[str] | tuple[str, ...]) -> Any:
    def parse(value: str) -> list[str]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        unknown = [v for v in items if v not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(
                f"unknown: {', '.join(unknown)} (choose from {', '.join(choices)})"
            )
        return items

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Servers: "
        + "; ".join(f"{s.name} = {s.description}" for s in SERVERS.values())
        + ". Workloads: "
        + "; ".join(f"{w.name} = {w.label}" for w in WORKLOADS.values())
        + ".",
    )
    names = list(SERVERS)
    parser.add_argument(
        "--servers",
        type=csv(names),
        default=list(DEFAULT_SERVERS),
        help=f"comma-separated servers (default {','.join(DEFAULT_SERVERS)}); "
        "one that cannot start is reported as not available and skipped",
    )
    parser.add_argument(
        "--workloads",
        type=csv(list(WORKLOADS)),
        default=list(WORKLOADS),
        help=f"comma-separated workloads (default all: {','.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--loops",
        type=csv(LOOPS),
        default=list(LOOPS),
        help="server event loops (default asyncio,uvloop); the load generator always uses uvloop",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure, median (3)")
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds (2)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before (0.5)")
    parser.add_argument(
        "--connections",
        type=int,
        default=10_000,
        help="memory: idle connections; fanout: receiving connections (10000)",
    )
    parser.add_argument(
        "--fanout-rounds", type=int, default=10, help="fanout: measured messages, median (10)"
    )
    parser.add_argument(
        "--fanout-processes",
        type=int,
        default=1,
        help="fanout: client processes sharing the connections, each from its own "
        "127.0.0.x address (1)",
    )
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        default=50,
        help="memory: handshakes in progress at once while opening (50)",
    )
    parser.add_argument(
        "--handshake-concurrency", type=int, default=8, help="handshake workers (8)"
    )
    parser.add_argument("--inflight-64k", type=int, default=4, help="64 KiB in flight (4)")
    parser.add_argument("--inflight-1m", type=int, default=2, help="1 MiB in flight (2)")
    parser.add_argument(
        "--settle", type=float, default=1.0, help="memory: seconds before reading RSS (1)"
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=3.0,
        help="before each run, wait up to this many seconds for other processes to use "
        "under 0.2 core (3; 0 disables)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 run, 0.5 s per workload, 1000 connections (figures are rough)",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server to CPU 0 and the load generator to CPU 1",
    )
    parser.add_argument("--json", metavar="FILE", help="also write all results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.duration, args.warmup = 1, 0.5, 0.2
        args.connections, args.settle = min(args.connections, 1000), 0.3
        args.quiet_timeout = 0.0
        args.fanout_rounds = min(args.fanout_rounds, 3)
    for name in (
        "runs",
        "connections",
        "connect_concurrency",
        "handshake_concurrency",
        "fanout_rounds",
        "fanout_processes",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.warmup < 0:
        parser.error("--duration must be positive and --warmup not negative")
    return args


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> JSON:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "packages": {
            d: version(d) for d in ("wsharbor", "websockets", "aiohttp", "picows", "uvloop")
        },
    }


def render(data: JSON, harness: Harness, servers: list[str], workloads: list[Workload]) -> str:
    out: list[str] = []
    c = harness.config
    for loop, loop_results in data["results"].items():
        shown = [s for s in servers if s not in data["unavailable"].get(loop, {})]
        out.append(f"### Server loop: {loop}\n")
        out.append(
            f"Median of {c.runs} run(s); ratio = server / {BASELINE} in this run "
            "(latency and memory: lower is better).\n"
        )
        out.append("| workload | metric | " + " | ".join(shown) + " |")
        out.append("|---|---|" + "---:|" * len(shown))
        notes: list[str] = []
        for workload in workloads:
            per_server = loop_results.get(workload.name, {})
            for i, metric in enumerate(workload.metrics):
                label = harness.label(workload) if i == 0 else ""
                cells = []
                for name in shown:
                    if not SERVERS[name].runs(workload.name):
                        cells.append("n/a" if i == 0 else "")
                        continue
                    summary = per_server.get(name, {})
                    median = summary.get("median", {})
                    if metric.key not in median:
                        cells.append("error" if i == 0 else "")
                        if i == 0:
                            notes.append(f"{name}, {workload.name}: {summary.get('error')}")
                        continue
                    cell = fmt(median[metric.key])
                    ratio = summary.get("ratio", {}).get(metric.key)
                    if ratio is not None:
                        cell += f" ({ratio:.2f}x)"
                    flags = ""
                    if i == 0 and median.get("loadgen_cpu", 0) >= LOADGEN_BOUND:
                        flags += "†"
                    if i == 0 and median.get("background_cpu", 0) >= NOISY:
                        flags += "‡"
                    if i == 0 and summary.get("ok", 0) < len(summary.get("runs", [])):
                        flags += "*"
                        notes.append(
                            f"{name}, {workload.name}: {summary['ok']} of "
                            f"{len(summary['runs'])} runs succeeded"
                        )
                    cells.append(cell + flags)
                out.append(f"| {label} | {metric.label} | " + " | ".join(cells) + " |")
        out.append("")
        legend = []
        text = "\n".join(out)
        if "†" in text:
            legend.append(
                f"† load generator at >= {LOADGEN_BOUND:.0%} of a core: the figure may be "
                "a lower bound for that server"
            )
        if "‡" in text:
            legend.append(f"‡ other processes used >= {NOISY} core during the run")
        for line in legend + notes:
            out.append(f"- {line}")
        if "asyncio-floor" in shown:
            out.append(
                "- asyncio-floor is not a WebSocket server: a canned 101, then unmask and echo "
                "in one `data_received` call, no validation "
                "(`benchmarks/servers/floor_server.py`); its ratio bounds what any server on "
                "this loop can reach"
            )
        if "blocking-floor" in shown:
            out.append(
                "- blocking-floor is not a WebSocket server either: the same echo on blocking "
                "sockets, a thread per connection, no event loop "
                "(`benchmarks/servers/blocking_floor_server.py`); with one message in flight "
                "it shows the machine's round trip"
            )
        if any(not SERVERS[name].runs(w.name) for name in shown for w in workloads):
            out.append("- n/a: that server is not run on that workload")
        for name, reason in data["unavailable"].get(loop, {}).items():
            out.append(f"- {name}: not available ({reason})")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = Config(
        runs=args.runs,
        duration=args.duration,
        warmup=args.warmup,
        connections=args.connections,
        connect_concurrency=args.connect_concurrency,
        handshake_concurrency=args.handshake_concurrency,
        inflight_64k=args.inflight_64k,
        inflight_1m=args.inflight_1m,
        settle=args.settle,
        quiet_timeout=args.quiet_timeout,
        pin=not args.no_pin,
        fanout_rounds=args.fanout_rounds,
        fanout_processes=args.fanout_processes,
    )
    loops = list(args.loops)
    try:
        import uvloop  # noqa: F401
    except ImportError:
        sys.exit("uvloop is not installed: pip install -r benchmarks/requirements.txt")
    harness = Harness(config)
    servers: list[str] = list(dict.fromkeys(args.servers))
    workloads = [WORKLOADS[name] for name in args.workloads]
    soft, hard = harness.nofile
    if {"memory", "wss-memory", "fanout", "fanout-deflate"} & set(args.workloads) and (
        soft < config.connections + 256
    ):
        harness.say(
            f"warning: RLIMIT_NOFILE is {soft} (hard {hard}); {config.connections} "
            "connections need that many fds in the server and in the load generator"
        )
    started = datetime.datetime.now(datetime.UTC)
    data = harness.run([SERVERS[s] for s in servers], workloads, loops)
    finished = datetime.datetime.now(datetime.UTC)
    report = render(data, harness, servers, workloads)
    print(report)
    if args.json:
        document = {
            "command": shlex.join(
                [
                    os.path.basename(sys.executable),
                    "-m",
                    "benchmarks",
                    *(argv if argv is not None else sys.argv[1:]),
                ]
            ),
            "started": started.isoformat(timespec="seconds"),
            "seconds": (finished - started).total_seconds(),
            "machine": machine(),
            "config": vars(config),
            "pinned": config.pin,
            "baseline": BASELINE,
            **data,
        }
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
