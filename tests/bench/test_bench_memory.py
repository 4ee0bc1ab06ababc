"""``wsharbor bench memory`` on a few real connections (separate processes, 127.0.0.1)."""

from __future__ import annotations

import json
import resource

import pytest

from wsharbor.__main__ import main
from wsharbor.bench.memory import raise_nofile_limit, zlib_memory


def test_raise_nofile_limit() -> None:
    limit = raise_nofile_limit()
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == limit


def test_zlib_memory_grows_with_the_setting() -> None:
    assert (
        0
        < zlib_memory(9, 2, ["hello"])
        < zlib_memory(12, 5, ["hello"])
        < zlib_memory(15, 8, ["hello"])
    )


@pytest.mark.timeout(300)
def test_memory_command(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("websockets")
    code = main(
        [
            *("bench", "memory", "--connections", "20", "--settings", "disabled,12/5"),
            *("--messages", "sample", "--json", "-"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["connections"] == 20
    results = {(r["library"], r["setting"]): r for r in data["results"]}
    assert set(results) == {
        (library, setting)
        for library in ("wsharbor", "websockets")
        for setting in ("disabled", "12/5")
    }
    for r in results.values():
        assert r["errors"] == []
        assert r["server_traced"] > 0 and r["client_traced"] > 0
    # The messages compress, so both sides hold a compressor and a decompressor.
    codec = data["zlib"]["12/5"]
    for side in ("server", "client"):
        ours = results["wsharbor", "12/5"][f"{side}_traced"]
        assert ours > results["wsharbor", "disabled"][f"{side}_traced"] + codec / 2


@pytest.mark.timeout(300)
def test_memory_command_default_messages_are_compressed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The default exchange is one 100-byte JSON message each way, above every
    # threshold: with context takeover both sides then hold zlib state (so the
    # messages really were compressed), and with the server's defaults (no
    # context takeover) neither does.
    code = main(
        [
            *("bench", "memory", "--connections", "20", "--libraries", "wsharbor"),
            *("--settings", "disabled,default,takeover", "--json", "-"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["messages"] == "json"
    results = {r["setting"]: r for r in data["results"]}
    for side in ("server", "client"):
        disabled = results["disabled"][f"{side}_traced"]
        assert results["takeover"][f"{side}_traced"] > disabled + 20 * 1024
        assert results["default"][f"{side}_traced"] < disabled + 4 * 1024


def test_memory_command_says_what_was_exchanged(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "bench",
            "memory",
            "--connections",
            "2",
            "--settings",
            "disabled",
            "--libraries",
            "wsharbor",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "one 100-byte JSON text message each way (compressed: above every threshold)" in out
