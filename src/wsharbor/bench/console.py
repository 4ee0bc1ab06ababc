"""What the ``wsharbor bench`` commands share on the console.

- :class:`UsageError`: a one-line error for the command line; ``wsharbor bench``
  prints it on stderr and exits with status 2;
- :class:`ArgumentParser`: :class:`argparse.ArgumentParser` raising
  :class:`UsageError` instead of printing usage and exiting;
- :class:`ProgressBar`: a progress bar on stderr, redrawn in place, only on a
  terminal;
- :func:`grid_table`: a reStructuredText grid table, the shape of every table
  the commands print;
- :func:`write_output`: write a result to a file or to stdout (``-``).

This module imports no other module of :mod:`wsharbor.bench`, so that each
command (``cli``, ``compression``, ``memory``) can import it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

__all__ = ["ArgumentParser", "ProgressBar", "UsageError", "grid_table", "write_output"]


class UsageError(Exception):
    """A one-line error for the command line (exit status 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """An argument parser whose errors are :class:`UsageError`, not an exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class ProgressBar:
    """``[#####.....] 12/64 14/7`` on ``stream``, redrawn in place; only on a terminal.

    Call it with ``(done, total, label)``; ``done >= total`` erases the bar.
    """

    #: Characters of the bar between the brackets.
    WIDTH = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, done: int, total: int, label: str) -> None:
        if not self.enabled:
            return
        width = self.WIDTH
        filled = width * done // total if total else width
        bar = "#" * filled + "." * (width - filled)
        if done >= total:
            self.stream.write("\r" + " " * 80 + "\r")
        else:
            self.stream.write(f"\r[{bar}] {done}/{total} {label:<32}"[:80])
        self.stream.flush()


def grid_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a reStructuredText grid table: ``header``, then one line per row.

    Each column is as wide as its widest cell plus two; the caller adds notes
    below the table. With no rows, the table is the header alone.
    """
    widths = [max([len(h), *(len(row[i]) for row in rows)]) + 2 for i, h in enumerate(header)]

    def line(char: str) -> str:
        return "+" + "+".join(char * w for w in widths) + "+"

    def cells(values: Sequence[str]) -> str:
        return "|" + "|".join(f" {v:<{w - 1}}" for v, w in zip(values, widths, strict=True)) + "|"

    out = [line("-"), cells(header), line("=")]
    for row in rows:
        out += [cells(row), line("-")]
    return out


def write_output(target: str, text: str) -> None:
    """Write ``text`` to the file ``target``, or to stdout for ``-``.

    Raises :class:`UsageError` when the file can't be written.
    """
    if target == "-":
        sys.stdout.write(text)
        return
    try:
        Path(target).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"can't write {target}: {exc.strerror or exc}") from None
