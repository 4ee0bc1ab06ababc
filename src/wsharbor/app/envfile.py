"""``--env-file FILE``: environment variables from a dotenv file, before the settings.

The format is the common subset of dotenv files (Docker's ``--env-file``,
python-dotenv, systemd's ``EnvironmentFile``)::

    # a comment
    WSHARBOR_WORKERS=4
    export DATABASE_URL=postgres://db/app    # "export " is allowed and ignored
    GREETING="hello\\nworld"                 # double quotes: \\n \\t \\" \\\\ escapes
    RAW='no $expansion, no \\escapes'         # single quotes: taken as is
    EMPTY=

- a value in quotes may span lines (a PEM key, say);
- an unquoted value ends at `` #`` (a comment) and is stripped;
- no ``${VAR}`` expansion: values are taken literally.

Variables already in the environment win over the file, so that a deployment
can override it. The file is read before the settings are resolved: the
``WSHARBOR_*`` variables in it count like real ones. A line that is none of the
above is an error naming the file and the line.
"""

from __future__ import annotations

import re

__all__ = ["parse_env_file", "read_env_file"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse_env_file(text: str) -> dict[str, str]:
    """Parse the text of a dotenv file; :exc:`ValueError` names the bad line."""
    values: dict[str, str] = {}
    pos, line = 0, 1
    length = len(text)
    while pos < length:
        end = text.find("\n", pos)
        if end == -1:
            end = length
        raw = text[pos:end]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            pos, line = end + 1, line + 1
            continue
        start_line = line
        body = stripped
        if body.startswith("export ") or body.startswith("export\t"):
            body = body[7:].lstrip()
        name, sep, _ = body.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            raise ValueError(f"line {start_line}: expected KEY=VALUE, got {stripped[:40]!r}")
        # The value starts after the first '=' of the line, in the original text.
        value_start = pos + raw.index("=") + 1
        while value_start < length and text[value_start] in " \t":
            value_start += 1
        quote = text[value_start] if value_start < length else ""
        if quote in ("'", '"'):
            value, pos, line = _quoted(text, value_start, quote, line, start_line)
            # After the closing quote: only blanks or a comment.
            end = text.find("\n", pos)
            if end == -1:
                end = length
            rest = text[pos:end].strip()
            if rest and not rest.startswith("#"):
                raise ValueError(f"line {line}: unexpected {rest[:20]!r} after the closing quote")
        else:
            value = text[value_start:end]
            comment = re.search(r"\s#", value)
            if comment is not None:
                value = value[: comment.start()]
            value = value.strip()
        values[name] = value
        pos, line = end + 1, line + 1
    return values


def _quoted(text: str, start: int, quote: str, line: int, start_line: int) -> tuple[str, int, int]:
    """The value between quotes at ``start``; the position after the closing quote and its line."""
    out: list[str] = []
    pos = start + 1
    length = len(text)
    while pos < length:
        char = text[pos]
        if char == quote:
            return "".join(out), pos + 1, line
        if char == "\n":
            line += 1
        if char == "\\" and quote == '"' and pos + 1 < length:
            following = text[pos + 1]
            if following in _ESCAPES:
                out.append(_ESCAPES[following])
                pos += 2
                continue
        out.append(char)
        pos += 1
    raise ValueError(f"line {start_line}: the {quote} quote is never closed")


def read_env_file(path: str) -> dict[str, str]:
    """Read and parse ``path``; :exc:`ValueError` says what is wrong, on one line."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    return parse_env_file(text)
