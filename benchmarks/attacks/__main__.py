"""``python -m benchmarks.attacks``: the attack suite, wsharbor beside websockets.

See :mod:`benchmarks.attacks` for what it does. Examples::

    python -m benchmarks.attacks                      # everything, ~10 minutes
    python -m benchmarks.attacks --quick              # shorter budgets
    python -m benchmarks.attacks --only huge-length,ping-flood --servers wsharbor
    python -m benchmarks.attacks --markdown --json results.json
    python -m benchmarks.attacks --uvloop             # the servers on uvloop
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from benchmarks.attacks.report import render
from benchmarks.attacks.runner import JSON, Budget, run_scenario
from benchmarks.attacks.scenarios import ATTACKS, SCENARIOS, select
from benchmarks.attacks.server import LIBRARIES, describe_limits
from benchmarks.harness import Config, Harness
from benchmarks.registry import REPO_ROOT

__all__ = ["main"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.attacks",
        description="Attack wsharbor and websockets (same limits) from 127.0.0.1 and "
        "print what held: server RSS, a probe's round-trip p99, how the attacker was "
        "closed, errors in the server's log.",
    )
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=f"run only these attacks or scenarios (attacks: {', '.join(ATTACKS)}; "
        f"scenarios: {', '.join(s.name for s in SCENARIOS)})",
    )
    parser.add_argument(
        "--servers",
        default=",".join(LIBRARIES),
        help=f"comma-separated servers to attack (default {','.join(LIBRARIES)})",
    )
    parser.add_argument("--quick", action="store_true", help="smaller counts, shorter budgets")
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="run the attacked servers on uvloop (what `wsharbor run` picks when it is "
        "installed) instead of asyncio's loop",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every figure as JSON")
    parser.add_argument(
        "--markdown", action="store_true", help="print the table as Markdown (for SECURITY.md)"
    )
    args = parser.parse_args(argv)
    try:
        args.scenarios = select(_split(args.only) if args.only else None)
    except ValueError as exc:
        parser.error(str(exc))
    args.server_list = _split(args.servers)
    unknown = [s for s in args.server_list if s not in LIBRARIES]
    if unknown or not args.server_list:
        parser.error(f"unknown server: {', '.join(unknown)} (choose from {', '.join(LIBRARIES)})")
    return args


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def commit() -> str:
    """The checked-out commit (short), with ``+dirty`` when the tree has changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = Budget(quick=args.quick)
    harness = Harness(Config(pin=False, quiet_timeout=0.0))
    command = shlex.join(["python", "-m", "benchmarks.attacks", *(argv or sys.argv[1:])])
    header = [
        f"command: {command}",
        f"commit: {commit()}; wsharbor {_version('wsharbor')}, websockets "
        f"{_version('websockets')}, Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs",
        f"limits (both servers): {describe_limits()}",
        f"event loop of the servers: {'uvloop' if args.uvloop else 'asyncio'}",
        "target: 127.0.0.1 only; probe: one 32-byte echo every 50 ms on its own connection",
    ]
    for line in header:
        harness.say(line)
    started = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    results: list[JSON] = []
    with tempfile.TemporaryDirectory(prefix="wsharbor-attacks-") as tmp:
        for scenario in args.scenarios:
            for lib in args.server_list:
                result = run_scenario(harness, scenario, lib, budget, Path(tmp), args.uvloop)
                results.append(result)
                held = "held" if result.get("held") else "NOT HELD"
                harness.say(
                    f"[{scenario.name}] {lib}: {result.get('closes', result.get('error'))}"
                    f" ({held}, {result.get('seconds', 0):.1f} s)"
                )
    seconds = time.monotonic() - t0
    print()
    if args.markdown:
        for line in header:
            print(f"- {line}")
        print()
    else:
        print("\n".join(header))
        print()
    print(render(results, markdown=args.markdown))
    print(f"\n{len(results)} runs in {seconds:.0f} s.")
    if args.json:
        document = {
            "command": command,
            "commit": commit(),
            "started": started.isoformat(timespec="seconds"),
            "seconds": round(seconds, 1),
            "quick": args.quick,
            "limits": describe_limits(),
            "versions": {d: _version(d) for d in ("wsharbor", "websockets")},
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(document, f, indent=2)
            f.write("\n")
    # websockets is the reference beside it: only wsharbor's rows decide the status.
    return 0 if all(r.get("held") for r in results if r["server"] == "wsharbor") else 1


if __name__ == "__main__":
    sys.exit(main())
