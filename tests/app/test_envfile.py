"""wsharbor.app.envfile: the dotenv subset --env-file reads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsharbor.app.envfile import parse_env_file, read_env_file


def test_plain_values_comments_export_and_blanks() -> None:
    text = (
        "# settings\n"
        "\n"
        "WSHARBOR_WORKERS=4\n"
        "export DATABASE_URL=postgres://db/app   # the database\n"
        "  SPACED = value with spaces  \n"
        "HASH=a#b\n"
        "EMPTY=\n"
        "URL=http://x/?a=b=c\n"
    )
    assert parse_env_file(text) == {
        "WSHARBOR_WORKERS": "4",
        "DATABASE_URL": "postgres://db/app",
        "SPACED": "value with spaces",
        "HASH": "a#b",
        "EMPTY": "",
        "URL": "http://x/?a=b=c",
    }


def test_quotes_escapes_and_multiline_values() -> None:
    text = (
        'GREETING="hello\\nworld \\"quoted\\" \\\\ # not a comment"  # a comment\n'
        "RAW='no \\n escapes, $HOME kept'\n"
        'KEY="-----BEGIN KEY-----\n'
        "abc\n"
        '-----END KEY-----"\n'
        "AFTER=1\n"
    )
    assert parse_env_file(text) == {
        "GREETING": 'hello\nworld "quoted" \\ # not a comment',
        "RAW": "no \\n escapes, $HOME kept",
        "KEY": "-----BEGIN KEY-----\nabc\n-----END KEY-----",
        "AFTER": "1",
    }


def test_last_assignment_wins_and_no_final_newline() -> None:
    assert parse_env_file("A=1\nA=2") == {"A": "2"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("JUST_A_NAME\n", "line 1: expected KEY=VALUE, got 'JUST_A_NAME'"),
        ("A=1\n1BAD=2\n", "line 2: expected KEY=VALUE"),
        ("A=1\nB='open\n\n", "line 2: the ' quote is never closed"),
        ('A="x" y\n', "line 1: unexpected 'y' after the closing quote"),
        ("=value\n", "line 1: expected KEY=VALUE"),
    ],
)
def test_malformed_lines_are_named(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_env_file(text)


def test_read_env_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=1\n")
    assert read_env_file(str(path)) == {"A": "1"}
    with pytest.raises(ValueError, match="no such file"):
        read_env_file(str(tmp_path / "missing"))
    path.write_bytes(b"A=\xff\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_env_file(str(path))


@given(st.text())
def test_any_text_parses_or_names_the_line(text: str) -> None:
    try:
        values = parse_env_file(text)
    except ValueError as exc:
        assert str(exc).startswith("line ")
    else:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in values.items())
