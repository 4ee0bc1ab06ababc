"""``wsharbor.app.reload``: the ``--reload`` watcher, on real files in a temporary directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from wsharbor.app.reload import Watcher

TIMEOUT = 10.0


def bump_mtime(path: Path, seconds: int = 1) -> None:
    """Move a file's mtime forward, as an edit a second later would."""
    mtime = path.stat().st_mtime_ns + seconds * 1_000_000_000
    os.utime(path, ns=(mtime, mtime))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text("x = 1\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("y = 1\n")
    (tmp_path / "README.txt").write_text("not python\n")
    return tmp_path


def test_nothing_changed(project: Path) -> None:
    watcher = Watcher(str(project))
    assert watcher.changed() is None
    assert watcher.changed() is None


def test_edit_is_detected(project: Path) -> None:
    """An edit is noticed on a later poll; polls are bounded by a deadline.

    The file system's clock may not tick between two writes close together (the
    mtime can stay the same for a few milliseconds), so the test edits and polls
    until the watcher notices, as the supervisor polls twice a second.
    """
    watcher = Watcher(str(project))
    path = project / "pkg" / "mod.py"
    deadline = time.monotonic() + TIMEOUT
    edits = 0
    while (found := watcher.changed()) is None:
        assert time.monotonic() < deadline, f"no change seen after {edits} edits"
        edits += 1
        path.write_text(f"y = {edits}\n")
    assert found == os.path.join("pkg", "mod.py")
    assert watcher.changed() is None  # reported once


def test_mtime_change_is_detected(project: Path) -> None:
    watcher = Watcher(str(project))
    bump_mtime(project / "app.py")
    assert watcher.changed() == "app.py"
    assert watcher.changed() is None


def test_added_file_is_detected(project: Path) -> None:
    watcher = Watcher(str(project))
    (project / "pkg" / "new.py").write_text("")
    assert watcher.changed() == os.path.join("pkg", "new.py")
    assert watcher.changed() is None


def test_removed_file_is_detected(project: Path) -> None:
    watcher = Watcher(str(project))
    (project / "app.py").unlink()
    assert watcher.changed() == "app.py"
    assert watcher.changed() is None


def test_new_package_is_detected(project: Path) -> None:
    watcher = Watcher(str(project))
    (project / "other").mkdir()
    assert watcher.changed() is None  # an empty directory is no code
    (project / "other" / "code.py").write_text("")
    assert watcher.changed() == os.path.join("other", "code.py")


def test_only_python_files_count(project: Path) -> None:
    watcher = Watcher(str(project))
    bump_mtime(project / "README.txt")
    (project / "data.json").write_text("{}")
    (project / "app.pyc").write_text("")
    assert watcher.changed() is None


def test_several_changes_are_one_reload(project: Path) -> None:
    watcher = Watcher(str(project))
    bump_mtime(project / "app.py")
    bump_mtime(project / "pkg" / "mod.py")
    assert watcher.changed() in ("app.py", os.path.join("pkg", "mod.py"))
    assert watcher.changed() is None


@pytest.mark.parametrize(
    "directory",
    [
        ".git",
        ".venv",
        ".tox",
        "__pycache__",
        "node_modules",
        "venv",
        "env",
        "site-packages",
        "build",
        "dist",
        os.path.join("pkg", "__pycache__"),
        os.path.join("pkg", ".hidden", "deep"),
    ],
)
def test_skipped_directories(project: Path, directory: str) -> None:
    skipped = project / directory
    skipped.mkdir(parents=True)
    (skipped / "lib.py").write_text("")
    watcher = Watcher(str(project))
    watched = {os.path.relpath(path, project) for path in watcher.mtimes}
    assert watched == {"app.py", os.path.join("pkg", "__init__.py"), os.path.join("pkg", "mod.py")}
    bump_mtime(skipped / "lib.py")
    (skipped / "added.py").write_text("")
    assert watcher.changed() is None
    # The rest of the tree is still watched.
    bump_mtime(project / "app.py")
    assert watcher.changed() == "app.py"


def test_unreadable_or_missing_root(tmp_path: Path) -> None:
    watcher = Watcher(str(tmp_path / "missing"))
    assert watcher.mtimes == {}
    assert watcher.changed() is None
    (tmp_path / "missing").mkdir()
    (tmp_path / "missing" / "late.py").write_text("")
    assert watcher.changed() == "late.py"
