"""The attack suite's plumbing (``benchmarks/attacks``), on its two quick attacks.

``make attack`` runs the whole suite (about 10 minutes, beside websockets); this
runs only ``frame-abuse`` and ``malformed`` with ``--quick`` against wsharbor, as
``make attack`` would (real server process, real probe, real sockets on
127.0.0.1), and checks the table, the JSON and the codes and statuses. The
figures themselves (RSS, latency) are not asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.attacks.frames import FRAME_CASES, frame_cases
from benchmarks.attacks.handshakes import MALFORMED_KINDS, malformed_kinds
from benchmarks.attacks.report import COLUMNS

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(180)


def run_suite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.attacks", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    path = tmp_path_factory.mktemp("attacks") / "results.json"
    done = run_suite(
        "--quick",
        "--only",
        "frame-abuse,malformed",
        "--servers",
        "wsharbor",
        "--markdown",
        "--json",
        str(path),
    )
    assert done.returncode in (0, 1), done.stderr  # 1: a row did not hold
    document: dict[str, object] = json.loads(path.read_text())
    return done.stdout, document


def results_by_scenario(document: dict[str, object]) -> dict[str, dict[str, object]]:
    results = document["results"]
    assert isinstance(results, list)
    return {r["scenario"]: r for r in results}


def test_prints_markdown_table(quick_run: tuple[str, dict[str, object]]) -> None:
    stdout, _ = quick_run
    assert "| " + " | ".join(COLUMNS) + " |" in stdout
    assert "| frame-abuse | wsharbor |" in stdout
    assert "| malformed | wsharbor |" in stdout
    assert "- limits (both servers): max_size 1 MiB" in stdout
    assert "- event loop of the servers: asyncio" in stdout
    assert "- command: python -m benchmarks.attacks --quick" in stdout


def test_json_has_measurements(quick_run: tuple[str, dict[str, object]]) -> None:
    _, document = quick_run
    assert document["quick"] is True
    results = results_by_scenario(document)
    assert set(results) == {"frame-abuse", "malformed"}
    for result in results.values():
        assert result["server"] == "wsharbor"
        assert result["server_alive"] is True
        assert result["rss_peak_kib"] >= result["rss_base_kib"] > 0  # type: ignore[operator]
        probe = result["probe"]
        assert isinstance(probe, dict)
        assert probe["echoes"] > 0
        assert "p99_ms" in probe
        assert result["log"]["tracebacks"] == 0  # type: ignore[index]
        assert isinstance(result["held"], bool)
        assert result["held"] == (not result["why"])


def test_frame_abuse_close_codes(quick_run: tuple[str, dict[str, object]]) -> None:
    _, document = quick_run
    cases = results_by_scenario(document)["frame-abuse"]["cases"]
    assert isinstance(cases, dict)
    assert list(cases) == FRAME_CASES
    for case in frame_cases():
        got = cases[case.name]["got"]
        # The close code; what follows it ("+RST": the TCP connection was reset
        # after the close frame) is reported by the suite, not asserted here.
        code = got.partition("+")[0]
        assert code in case.expect, f"{case.name}: {got}"


def test_malformed_statuses(quick_run: tuple[str, dict[str, object]]) -> None:
    _, document = quick_run
    assert_malformed_statuses(results_by_scenario(document)["malformed"]["kinds"])


def assert_malformed_statuses(kinds: object) -> None:
    assert isinstance(kinds, dict)
    assert list(kinds) == MALFORMED_KINDS
    for kind in malformed_kinds(0):
        got = kinds[kind.name]["got"]
        statuses = {answer.partition("+")[0] for answer in got}
        if kind.name == "1 KiB of NUL bytes":
            # No line end: wsharbor waits for one until open_timeout, then drops
            # the connection without an answer (reported by the suite).
            assert statuses <= {kind.expect, "none"}, f"{kind.name}: {got}"
        else:
            assert statuses == {kind.expect}, f"{kind.name}: {got}"


def test_malformed_on_uvloop(tmp_path: Path) -> None:
    """``--uvloop``: the server runs on uvloop, where it accepts the other way
    (``Server._adopt``), and answers the malformed handshakes as on asyncio."""
    pytest.importorskip("uvloop")
    path = tmp_path / "results.json"
    done = run_suite(
        "--quick", "--only", "malformed", "--servers", "wsharbor", "--uvloop", "--json", str(path)
    )
    assert done.returncode in (0, 1), done.stderr
    assert "event loop of the servers: uvloop" in done.stdout
    result = results_by_scenario(json.loads(path.read_text()))["malformed"]
    assert result["server_alive"] is True
    assert result["log"]["tracebacks"] == 0  # type: ignore[index]
    assert_malformed_statuses(result["kinds"])


def test_unknown_attack_is_a_clear_error() -> None:
    done = run_suite("--only", "nonsense")
    assert done.returncode == 2
    assert "unknown attack: nonsense" in done.stderr
    assert "Traceback" not in done.stderr
