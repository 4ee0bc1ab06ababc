"""Smoke run of the fuzz harnesses of ``fuzz/`` (the real runs: ``make fuzz``).

Each harness runs in a subprocess under atheris: it replays its committed seed
corpus, then a few hundred inputs mutated from it, with a fixed libFuzzer seed.
A crash or a broken invariant exits non-zero and fails the test. New inputs go to
a temporary directory, never into ``fuzz/corpus/``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
TARGETS = sorted(path.stem.removeprefix("fuzz_") for path in FUZZ.glob("fuzz_*.py"))
RUNS = 300


def test_targets_found() -> None:
    assert set(TARGETS) >= {"frames", "connection", "utf8", "deflate", "http", "headers", "uri"}


@pytest.mark.parametrize("target", TARGETS)
def test_seed_corpus_is_small(target: str) -> None:
    seeds = [path for path in (FUZZ / "corpus" / target).iterdir() if path.is_file()]
    assert 5 <= len(seeds) <= 60
    assert sum(path.stat().st_size for path in seeds) < 64 * 1024


def test_committed_seeds_match_make_seeds(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(FUZZ / "make_seeds.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    written = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    assert written
    for relative in written:
        committed = FUZZ / "corpus" / relative
        assert committed.read_bytes() == (tmp_path / relative).read_bytes(), relative


@pytest.mark.parametrize("target", TARGETS)
def test_harness_smoke(target: str, tmp_path: Path) -> None:
    scratch = tmp_path / "corpus"
    scratch.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ / f"fuzz_{target}.py"),
            f"-runs={RUNS}",
            "-seed=1",
            "-timeout=20",
            f"-artifact_prefix={tmp_path}/",
            str(scratch),
            str(FUZZ / "corpus" / target),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "INITED" in result.stderr
    assert f"Done {RUNS} runs" in result.stderr
    assert not list(tmp_path.glob("crash-*"))
