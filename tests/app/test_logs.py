"""``wsharbor.app.logs``: text and JSON lines on stderr, and the access log's fields.

:func:`setup_logging` changes the process's ``wsharbor`` loggers for good, so it
runs in a subprocess here; the JSON output is parsed, never matched as text.
"""

from __future__ import annotations

import calendar
import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import pytest

from wsharbor.app.logs import JsonFormatter, access_fields, access_message

TIMEOUT = 30.0
JSON_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def json_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A private logger writing through :class:`JsonFormatter` into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.app.test_logs.json")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# JsonFormatter.


def test_json_record(json_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_logger
    before = time.time()
    logger.warning("worker %d exited with %s", 1234, "status 3")
    (record,) = records(stream)
    assert set(record) == {"time", "level", "logger", "pid", "message"}
    assert record["level"] == "warning"
    assert record["logger"] == "tests.app.test_logs.json"
    assert record["pid"] == os.getpid()
    assert record["message"] == "worker 1234 exited with status 3"
    assert JSON_TIME.match(record["time"]), record["time"]
    # UTC (Z), to the millisecond: the moment of the call.
    stamp = calendar.timegm(time.strptime(record["time"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert int(before) <= stamp <= time.time()


def test_json_fields_are_top_level_keys(json_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_logger
    fields = {"remote": "127.0.0.1:5", "status": 101, "path": "/chat", "close_code": None}
    logger.info("access", extra={"fields": fields})
    (record,) = records(stream)
    assert record["message"] == "access"
    assert {key: record[key] for key in fields} == fields


def test_json_fields_must_be_a_dict(json_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_logger
    logger.info("odd", extra={"fields": ["not", "a", "dict"]})
    (record,) = records(stream)
    assert set(record) == {"time", "level", "logger", "pid", "message"}


def test_json_values_that_are_not_json(json_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_logger
    logger.info("bytes", extra={"fields": {"address": ("::1", 8000), "raw": b"\x00"}})
    (record,) = records(stream)
    assert record["address"] == ["::1", 8000]
    assert record["raw"] == "b'\\x00'"  # str() of the value: never a crash


def test_json_exception(json_logger: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_logger
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        logger.exception("handler failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1  # one record, one line, even with a multi-line traceback
    record = json.loads(lines[0])
    assert record["level"] == "error"
    assert record["exception"].startswith("Traceback (most recent call last):")
    assert record["exception"].endswith("RuntimeError: boom\nsecond line")


# setup_logging(), in a fresh process.

SETUP_CHILD = textwrap.dedent(
    """
    import logging, sys
    from wsharbor.app.logs import setup_logging

    level, log_format = sys.argv[1], sys.argv[2]
    # A handler on the root logger: it must see nothing of wsharbor's records.
    logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format="ROOT %(message)s")
    setup_logging(level, log_format)
    setup_logging(level, log_format)  # idempotent: still one handler
    app = logging.getLogger("wsharbor.app")
    app.debug("debug %s", "detail")
    app.info("listening on %s", "127.0.0.1:8000")
    logging.getLogger("wsharbor.access").info(
        "access line", extra={"fields": {"status": 101, "path": "/chat"}}
    )
    # The library's frame logs show payloads: off even at debug.
    logging.getLogger("wsharbor.server").debug("< TEXT 'secret'")
    logging.getLogger("wsharbor.client").debug("> TEXT 'secret'")
    logging.getLogger("wsharbor.server").error("handler failed")
    """
)


def run_setup(level: str, log_format: str) -> tuple[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", SETUP_CHILD, level, log_format],
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr.splitlines()


def test_setup_text() -> None:
    stdout, lines = run_setup("info", "text")
    assert stdout == ""
    prefix = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[\d+\] "
    assert len(lines) == 3, lines
    assert re.match(prefix + r"INFO wsharbor\.app: listening on 127\.0\.0\.1:8000$", lines[0])
    assert re.match(prefix + r"INFO wsharbor\.access: access line$", lines[1])
    assert re.match(prefix + r"ERROR wsharbor\.server: handler failed$", lines[2])
    pids = {re.search(r"\[(\d+)\]", line).group(1) for line in lines}  # type: ignore[union-attr]
    assert len(pids) == 1


def test_setup_json() -> None:
    stdout, lines = run_setup("info", "json")
    assert stdout == ""
    parsed = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"], r["message"]) for r in parsed] == [
        ("info", "wsharbor.app", "listening on 127.0.0.1:8000"),
        ("info", "wsharbor.access", "access line"),
        ("error", "wsharbor.server", "handler failed"),
    ]
    assert parsed[1]["status"] == 101 and parsed[1]["path"] == "/chat"
    assert len({r["pid"] for r in parsed}) == 1


def test_setup_debug_level_keeps_frame_logs_off() -> None:
    _, lines = run_setup("debug", "json")
    messages = [json.loads(line)["message"] for line in lines]
    assert messages == [
        "debug detail",
        "listening on 127.0.0.1:8000",
        "access line",
        "handler failed",
    ]
    assert not any("secret" in line for line in lines)


def test_setup_warning_level() -> None:
    _, lines = run_setup("warning", "text")
    assert len(lines) == 1 and lines[0].endswith("ERROR wsharbor.server: handler failed")


# The access log.


def fields(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "remote": ("127.0.0.1", 54321),
        "path": "/chat",
        "status": 101,
        "duration": 12.3456789,
        "close_code": 1001,
        "bytes_in": 10,
        "bytes_out": 20,
        "messages_in": 2,
        "messages_out": 3,
    }
    values.update(overrides)
    return access_fields(**values)


def test_access_fields() -> None:
    assert fields() == {
        "remote": "127.0.0.1:54321",
        "path": "/chat",
        "status": 101,
        "duration": 12.345679,
        "close_code": 1001,
        "bytes_in": 10,
        "bytes_out": 20,
        "messages_in": 2,
        "messages_out": 3,
    }


def test_access_fields_drop_the_query_string() -> None:
    # Tokens often travel in the query string: never logged.
    assert fields(path="/chat?token=s3cret&room=1")["path"] == "/chat"
    assert fields(path="/?")["path"] == "/"
    assert fields(path=None)["path"] is None


@pytest.mark.parametrize(
    ("remote", "shown"),
    [
        (("10.0.0.1", 80), "10.0.0.1:80"),
        (("::1", 8000, 0, 0), "[::1]:8000"),
        ("/run/app.sock", "/run/app.sock"),
        (b"/run/app.sock", "/run/app.sock"),
        ("", "unix"),  # an unnamed Unix socket peer
        (None, "unix"),
    ],
)
def test_access_fields_remote(remote: Any, shown: str) -> None:
    assert fields(remote=remote)["remote"] == shown


def test_access_message() -> None:
    assert access_message(fields()) == (
        '127.0.0.1:54321 "GET /chat" 101 1001 12.346s in=10B/2msg out=20B/3msg'
    )


def test_access_message_for_a_refused_request() -> None:
    line = access_message(fields(path=None, status=None, close_code=None, duration=0.0))
    assert line == '127.0.0.1:54321 "GET -" - - 0.000s in=10B/2msg out=20B/3msg'
