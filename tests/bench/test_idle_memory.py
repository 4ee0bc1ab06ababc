"""Smoke test of ``python -m benchmarks.idle_memory`` (the breakdown in docs/memory.md):
it runs, attributes the connection's memory to lines of wsharbor and asyncio, and
finds the handshake's headers packed (no per-field tuples kept by the parser)."""

from __future__ import annotations

import asyncio

import pytest
from benchmarks.idle_memory import main, measure


def test_breakdown_attributes_lines() -> None:
    server, client, rows = asyncio.run(measure(connections=60, warmup=5))
    lines = dict(rows)
    assert server > 0 and client >= 0
    assert sum(lines.values()) == pytest.approx(server, rel=0.01)
    assert any(key.startswith("wsharbor/asyncio/server.py:") for key in lines)
    # The parser's list of (name, value) pairs isn't kept: the headers are packed.
    assert not any(
        key.startswith("wsharbor/protocol/http11.py:") and size > 200 for key, size in rows
    )


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--connections", "30", "--warmup", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("idle echo server connection, compression=None: ")
    assert "B traced per connection (30 connections" in out
