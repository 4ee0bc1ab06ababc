"""Corpus loading: directory, JSON lines, text; the bundled sample; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from wsharbor.bench.corpus import CorpusError, load_corpus, sample_corpus

ROOT = Path(__file__).resolve().parents[2]


def test_directory_one_message_per_file(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_bytes(b'{"b": 2}')
    (tmp_path / "a.json").write_bytes(b'{"a": 1}\n')
    (tmp_path / ".hidden").write_bytes(b"skipped")
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    assert load_corpus(tmp_path) == [b'{"a": 1}\n', b'{"b": 2}']


def test_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n  \n["x", 2]\n"text"')
    assert load_corpus(path) == [b'{"a": 1}', b'["x", 2]', b'"text"']


def test_ndjson_suffix_is_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.NDJSON"
    path.write_bytes(b"{}\nnot json\n")
    with pytest.raises(CorpusError, match=r"corpus.NDJSON: line 2 isn't JSON"):
        load_corpus(path)


def test_text_one_message_per_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"hello\r\nnot json is fine\n\n\xff binary-ish\n")
    assert load_corpus(str(path)) == [b"hello", b"not json is fine", b"\xff binary-ish"]


@pytest.mark.parametrize(
    ("content", "name"),
    [(b"", "empty.txt"), (b"\n\n  \n", "blank.txt"), (b"\n", "empty.jsonl")],
)
def test_empty_file(tmp_path: Path, content: bytes, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CorpusError, match="empty corpus"):
        load_corpus(path)


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(CorpusError, match="empty corpus"):
        load_corpus(tmp_path)


def test_missing(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file or directory"):
        load_corpus(tmp_path / "missing.jsonl")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "secret.txt"
    path.write_bytes(b"x\n")
    path.chmod(0)
    try:
        with pytest.raises(CorpusError, match="permission denied"):
            load_corpus(path)
    finally:
        path.chmod(0o600)


def test_sample_corpus() -> None:
    messages = sample_corpus()
    assert 2000 <= len(messages) <= 10000
    assert sum(map(len, messages)) < 1_000_000
    kinds = {json.loads(m)["type"] for m in messages}
    assert kinds == {"chat.message", "presence", "ticker", "game.delta"}


def test_sample_corpus_is_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_corpus.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
