"""``wsharbor bench``: arguments, outputs and one-line errors with exit status 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from wsharbor.__main__ import main


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"type": "chat", "text": f"message number {i}"}) for i in range(30)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_table(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["bench", "compression", str(corpus), "--settings", "15/8,9/2,disabled", "--repeat", "1"],
        capsys,
    )
    assert code == 0, err
    assert "| *default*" in out and "| 9 " in out and "| *disabled*" in out


def test_context_takeover_and_backend(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Each setting with and without context takeover; without it, nothing is
    # kept per connection and small messages compress worse.
    args = ["bench", "compression", str(corpus), "--settings", "12/4", "--repeat", "1"]
    code, out, err = run(
        [*args, "--context-takeover", "both", "--backend", "zlib", "--json", "-"], capsys
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["backend"] == "zlib"
    results = {r["setting"]: r for r in data["results"]}
    assert set(results) == {"12/4", "12/4 nct"}
    assert results["12/4 nct"]["context_takeover"] is False
    assert results["12/4 nct"]["memory"] < 1024  # the codec objects, no zlib state
    assert results["12/4"]["memory"] > 20 * 1024
    assert results["12/4 nct"]["size"] > results["12/4"]["size"]
    code, out, err = run([*args, "--context-takeover", "off"], capsys)
    assert code == 0, err
    assert "| Context takeover" in out and "| no " in out and "zlib implementation:" in out


def test_json_and_csv_to_stdout_and_files(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "compression", str(corpus), "--settings", "12/5", "--repeat", "1"]
    code, out, _ = run([*args, "--json", "-"], capsys)
    assert code == 0
    data = json.loads(out)  # nothing but JSON on stdout
    assert data["messages"] == 30 and data["results"][0]["setting"] == "12/5"
    code, out, _ = run([*args, "--csv", "-"], capsys)
    assert code == 0 and out.startswith("setting,")
    target = tmp_path / "out.json"
    code, out, _ = run([*args, "--json", str(target), "--csv", str(tmp_path / "o.csv")], capsys)
    assert code == 0 and "| 12 " in out
    assert json.loads(target.read_text())["results"][0]["window_bits"] == 12
    assert (tmp_path / "o.csv").read_text().startswith("setting,")


def test_thresholds(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        [
            *("bench", "compression", str(corpus), "--settings", "12/5,disabled"),
            *("--threshold", "0,1000", "--repeat", "1", "--json", "-"),
        ],
        capsys,
    )
    assert code == 0
    rows = json.loads(out)["results"]
    assert [(r["setting"], r["threshold"]) for r in rows] == [
        ("12/5", 0),
        ("12/5@1000", 1000),
        ("disabled", 0),
    ]
    assert rows[1]["compressed_messages"] == 0


def test_sample(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        ["bench", "compression", "--sample", "--settings", "12/5", "--repeat", "1"], capsys
    )
    assert code == 0 and "sample.jsonl" in out and "3000 messages" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compression"], "give a CORPUS or --sample"),
        (["compression", "x", "--sample"], "give a CORPUS or --sample"),
        (["compression", "--sample", "--settings", "8/8"], "invalid --settings"),
        (["compression", "--sample", "--threshold", "a"], "invalid --threshold"),
        (["compression", "--sample", "--all", "--settings", "15/8"], "exclusive"),
        (["compression", "--sample", "--bogus"], "unrecognized arguments"),
        (["compression", "--sample", "--repeat", "0"], "invalid --repeat"),
        (["nope"], "unknown command"),
        (["memory", "--connections", "0"], "--connections must be between 1"),
        (["memory", "--settings", "16/8"], "invalid setting"),
        (["compression", "--sample", "--context-takeover", "maybe"], "invalid choice"),
        (["compression", "--sample", "--backend", "brotli"], "invalid choice"),
        (["memory", "--libraries", "aiohttp"], "unknown library"),
        (["memory", "--messages", "/nonexistent/corpus"], "no such file or directory"),
    ],
)
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["bench", *argv], capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith("wsharbor bench ")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.jsonl", None, "no such file or directory"),
        ("empty.txt", b"", "empty corpus"),
        ("blank.jsonl", b"\n \n", "empty corpus"),
        ("bad.jsonl", b"{}\n{oops\n", "line 2 isn't JSON"),
        ("emptydir", "dir", "empty corpus"),
    ],
)
def test_bad_corpus(
    tmp_path: Path,
    name: str,
    content: bytes | str | None,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    code, out, err = run(["bench", "compression", str(path)], capsys)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_plot_without_matplotlib(
    corpus: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ImportError
    code, out, err = run(["bench", "compression", str(corpus), "--plot", "x.png"], capsys)
    assert code == 2 and out == ""
    assert (
        err == "wsharbor bench compression: error: --plot needs matplotlib: "
        "pip install 'wsharbor[plot]'\n"
    )


def test_plot(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "chart.png"
    args = ["bench", "compression", str(corpus), "--settings", "15/8,9/2", "--repeat", "1"]
    code, _, err = run([*args, "--plot", str(target)], capsys)
    assert code == 0, err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["bench"], capsys)[0] == 2
    code, out, _ = run(["bench", "--help"], capsys)
    assert code == 0 and "bench compression" in out
    code, out, _ = run(["bench", "compression", "--help"], capsys)
    assert code == 0 and "--threshold" in out
