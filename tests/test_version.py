"""``wsharbor.version``: one version string, the one ``pyproject.toml`` declares."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import wsharbor
from wsharbor.version import __version__

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_version_is_the_one_of_pyproject() -> None:
    with PYPROJECT.open("rb") as file:
        declared = tomllib.load(file)["project"]["version"]
    assert __version__ == declared


def test_the_facade_re_exports_it() -> None:
    assert wsharbor.__version__ is __version__
    assert "__version__" in wsharbor.__all__


@pytest.mark.parametrize("command", [["--version"], ["run", "--version"]])
def test_cli_prints_it_with_python_and_uvloop(command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsharbor", *command],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    python = f"{platform.python_implementation()} {platform.python_version()}"
    try:
        uvloop = f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        uvloop = "no uvloop"
    assert result.stdout == f"wsharbor {__version__} ({python}, {uvloop})\n"
    assert result.stderr == ""
