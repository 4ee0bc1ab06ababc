"""The idle-memory-at-scale benchmark's plumbing (``python -m benchmarks.idle_scale``).

BENCHMARKS.md runs it with 10,000 and 100,000 connections; this runs it with
300 from three source addresses against the wsharbor benchmark server and
checks that every connection was opened and a per-connection figure came out
of the server's RSS; the figure itself is not asserted beyond being a size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


def test_idle_scale_quick(tmp_path: Path) -> None:
    out = tmp_path / "idle.json"
    command = [sys.executable, "-m", "benchmarks.idle_scale", "--servers", "wsharbor"]
    command += ["--connections", "300", "--sources", "3", "--settle", "0.2"]
    done = subprocess.run(
        [*command, "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    assert "| wsharbor |" in done.stdout
    figure = json.loads(out.read_text())["results"]["wsharbor"]["300"]
    assert figure["connections"] == 300
    assert figure["rss_after"] >= figure["rss_before"]
    assert 0 <= figure["kib_per_conn"] < 100
