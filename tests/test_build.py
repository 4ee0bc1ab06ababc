"""The package builds and installs without a C compiler (pure-Python fallback)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_wheel_builds_without_a_compiler(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is needed to copy the source tree")
    # Build from a clean copy of the tracked sources (no compiled .so inside).
    src = tmp_path / "src"
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], check=True, capture_output=True, text=True
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k != "WSHARBOR_REQUIRE_SPEEDUPS"}
    env["CC"] = "false"  # every compiler call fails
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("wsharbor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "wsharbor/protocol/frames.py" in names
    assert not [n for n in names if n.endswith(".so")], names


def test_fallback_is_used_when_the_accelerator_is_missing() -> None:
    code = (
        "from wsharbor.protocol import frames;"
        "assert not frames.SPEEDUPS;"
        "assert frames.apply_mask(b'abcd', b'\\x01\\x02\\x03\\x04') == b'````'"
    )
    env = dict(os.environ, WSHARBOR_NO_SPEEDUPS="1")
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
