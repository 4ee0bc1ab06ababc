"""``wsharbor.bench.console``: what the bench commands share on the console."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wsharbor.bench.console import (
    ArgumentParser,
    ProgressBar,
    UsageError,
    grid_table,
    write_output,
)


def test_parser_errors_are_usage_errors() -> None:
    parser = ArgumentParser(prog="wsharbor bench test")
    parser.add_argument("--count", type=int)
    with pytest.raises(UsageError, match="unrecognized arguments: --bogus"):
        parser.parse_args(["--bogus"])
    with pytest.raises(UsageError, match="invalid int value: 'x'"):
        parser.parse_args(["--count", "x"])
    assert parser.parse_args(["--count", "3"]).count == 3


def _read_all(fd: int) -> str:
    chunks = []
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 4096)
        except (BlockingIOError, OSError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_progress_bar_on_a_terminal() -> None:
    controller, terminal = os.openpty()
    try:
        # Raw mode would need termios; the default line discipline turns "\n" into
        # "\r\n", and the bar writes no "\n".
        with open(terminal, "w", closefd=False) as stream:
            bar = ProgressBar(stream)
            assert bar.enabled
            bar(0, 4, "first")
            bar(3, 4, "x" * 40)
            bar(4, 4, "done")
        written = _read_all(controller)
    finally:
        os.close(controller)
        os.close(terminal)
    first, third, last = written.split("\r")[1:4]
    assert first == "[" + "." * 30 + "] 0/4 " + "first".ljust(32)
    assert third == ("[" + "#" * 22 + "." * 8 + "] 3/4 " + "x" * 40)[:79]
    assert last == " " * 80
    assert written.endswith("\r")


def test_progress_bar_is_silent_off_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    assert not bar.enabled
    bar(1, 2, "label")
    bar(2, 2, "done")
    assert stream.getvalue() == ""


def test_grid_table() -> None:
    lines = grid_table(["Name", "Value"], [["a", "1"], ["longer name", "22"]])
    assert lines == [
        "+-------------+-------+",
        "| Name        | Value |",
        "+=============+=======+",
        "| a           | 1     |",
        "+-------------+-------+",
        "| longer name | 22    |",
        "+-------------+-------+",
    ]


def test_grid_table_without_rows_is_the_header() -> None:
    assert grid_table(["A", "Bb"], []) == ["+---+----+", "| A | Bb |", "+===+====+"]


def test_grid_table_rejects_a_short_row() -> None:
    with pytest.raises((ValueError, IndexError)):
        grid_table(["A", "B"], [["only one"]])


def test_write_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.txt"
    write_output(str(target), "héllo\n")
    assert target.read_text(encoding="utf-8") == "héllo\n"
    write_output("-", "to stdout\n")
    assert capsys.readouterr().out == "to stdout\n"
    with pytest.raises(UsageError, match=r"^can't write .*/missing/out.txt: No such file"):
        write_output(str(tmp_path / "missing" / "out.txt"), "x")


def test_no_import_circle() -> None:
    """The commands import the console module, never each other's entry point."""
    code = textwrap.dedent(
        """
        import sys
        import wsharbor.bench.memory, wsharbor.bench.compression
        print(" ".join(sorted(m for m in sys.modules if m.startswith("wsharbor.bench"))))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "wsharbor.bench.console" in loaded
    assert "wsharbor.bench.cli" not in loaded
