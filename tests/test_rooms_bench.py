"""The fan-out benchmark's plumbing (``python -m benchmarks.rooms``), on a small room.

``make bench`` runs it with 10,000 subscribers; this runs it with 60 (the
``--quick`` timings) against wsharbor over memory:// and Redis and the
hand-written websockets + redis-py server: real servers, real subscriber
processes, a real redis-server started by the benchmark. It checks that every
publication reached every subscriber in every run, that the table and the
target lines are printed, and the JSON; the figures themselves are not
asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(240)

SERVERS = ("wsharbor-memory", "wsharbor-redis", "websockets-redis")


def test_rooms_benchmark_quick(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not found: run scripts/install-system-deps.sh")
    pytest.importorskip("redis")
    path = tmp_path / "rooms.json"
    command = [sys.executable, "-m", "benchmarks.rooms", "--quick", "--json", str(path)]
    command += ["--subscribers", "60", "--latency-subscribers", "10", "--rate", "200"]
    command += ["--clients", "2", "--servers", ",".join(SERVERS)]
    done = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=230, check=False
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "#### Fan-out: 1 publisher, 60 subscribers in one room" in done.stdout
    assert "#### Latency: 1 publisher at 200 msg/s, 10 subscribers" in done.stdout
    assert "- Redis fan-out, 2 workers: wsharbor " in done.stdout
    assert "- The Redis hop at the latency workload's rate (2 workers)" in done.stdout
    document = json.loads(path.read_text())
    for workload, count in (("fanout", 60), ("latency", 10)):
        for server in SERVERS:
            (run,) = document["results"][workload][server]["runs"]
            assert "error" not in run, (workload, server, run)
            assert run["subscribers"] == count
            # Every publication reached every subscriber; none was closed.
            assert (run["undelivered"], run["closed"]) == (0, 0), (workload, server, run)
            assert run["delivered_per_s"] > 0 and run["samples"] > 0
