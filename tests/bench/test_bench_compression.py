"""The compression benchmark: structure and measured orderings (no timing assertions)."""

from __future__ import annotations

import csv
import io
import json

import pytest

from wsharbor.bench.compression import (
    ALL_SETTINGS,
    DEFAULT,
    DISABLED,
    GUIDE_SETTINGS,
    Result,
    Setting,
    benchmark,
    format_csv,
    format_json,
    format_table,
    parse_settings,
)

TINY: list[bytes | str] = [
    *(
        json.dumps({"type": "ticker", "symbol": "BTC-USD", "bid": 64000 + i, "seq": i}).encode()
        for i in range(60)
    ),
    "hé",
    b"\x00\x01",
]


@pytest.fixture(scope="module")
def results() -> dict[Setting, Result]:
    return {r.setting: r for r in benchmark(TINY, GUIDE_SETTINGS, repeat=1)}


def test_one_result_per_setting_in_order() -> None:
    settings = [Setting(12, 5), DISABLED, Setting(9, 2)]
    assert [r.setting for r in benchmark(TINY, settings, repeat=1)] == settings


def test_guide_rows() -> None:
    labels = [s.label for s in GUIDE_SETTINGS]
    assert labels == ["15/8", "14/7", "13/6", "12/5", "11/4", "10/3", "9/2", "disabled"]
    assert len(ALL_SETTINGS) == 7 * 9 + 1


def test_disabled_row_has_no_compression(results: dict[Setting, Result]) -> None:
    r = results[DISABLED]
    raw = sum(len(m.encode() if isinstance(m, str) else m) for m in TINY)
    assert r.size == r.raw_size == raw
    assert r.memory == 0 and r.compressed_messages == 0
    assert r.compress_time == r.decompress_time == 0


def test_default_row_is_the_reference(results: dict[Setting, Result]) -> None:
    r = results[DEFAULT]
    assert r.size_vs_default == 0 and r.time_vs_default == 0
    assert 0 < r.size < r.raw_size
    assert r.compressed_messages == len(TINY)


def test_memory_is_measured_and_ordered(results: dict[Setting, Result]) -> None:
    small, large = results[Setting(9, 2)], results[DEFAULT]
    assert 0 < small.memory < large.memory
    assert large.compressor_memory > large.decompressor_memory > 0
    memories = [results[s].memory for s in GUIDE_SETTINGS]
    assert memories == sorted(memories, reverse=True)


def test_threshold_leaves_small_messages_uncompressed() -> None:
    (r,) = benchmark(TINY, [Setting(12, 5, threshold=10)], repeat=1)
    assert r.compressed_messages == len(TINY) - 2
    (r,) = benchmark(TINY, [Setting(12, 5, threshold=10_000)], repeat=1)
    assert r.compressed_messages == 0 and r.size == r.raw_size
    assert r.memory < 1024  # lazy: no zlib object was ever created


def test_reference_measured_even_when_not_shown() -> None:
    (r,) = benchmark(TINY, [Setting(10, 3)], repeat=1)
    assert r.size_vs_default > 0


def test_empty_message_list() -> None:
    with pytest.raises(ValueError, match="no messages"):
        benchmark([])


def test_progress_callback() -> None:
    calls: list[tuple[int, int, str]] = []
    benchmark(
        TINY[:3], [DISABLED], repeat=1, progress=lambda d, t, s: calls.append((d, t, s.label))
    )
    assert calls == [(0, 2, "15/8"), (1, 2, "disabled"), (2, 2, "disabled")]


def test_parse_settings() -> None:
    assert parse_settings("15/8, 12/5,disabled") == [Setting(15, 8), Setting(12, 5), DISABLED]
    for bad in ("15", "8/8", "15/0", "x/y", ""):
        with pytest.raises(ValueError):
            parse_settings(bad)


def test_outputs(results: dict[Setting, Result]) -> None:
    rows = list(results.values())
    table = format_table(rows)
    assert "| *default*" in table and "| *disabled*" in table and "Window Bits" in table
    data = json.loads(format_json(rows, corpus="tiny"))
    assert data["corpus"] == "tiny"
    assert [r["setting"] for r in data["results"]] == [s.label for s in GUIDE_SETTINGS]
    assert data["results"][0]["memory"] == (
        data["results"][0]["compressor_memory"] + data["results"][0]["decompressor_memory"]
    )
    parsed = list(csv.DictReader(io.StringIO(format_csv(rows))))
    assert [r["setting"] for r in parsed] == [s.label for s in GUIDE_SETTINGS]
