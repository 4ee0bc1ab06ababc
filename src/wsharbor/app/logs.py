"""Logging of the application server: text or JSON lines on stderr, and the access log.

Loggers:

- ``wsharbor.app``: the supervisor and the workers (start, signals, restarts);
- ``wsharbor.access``: one line per connection, when it closes;
- ``wsharbor.server``: the library's connection logger (handler errors...).

The access log has the remote address, the path *without* its query string
(tokens often travel there), the HTTP status, the duration, the close code and
the bytes and messages in and out. It never has a header value or a message
body. Requests to the health, readiness and metrics paths are logged at debug
level, so that probes don't flood the log. The library's frame-level debug logs
(which show payloads) stay off even with ``--log-level debug``.

With ``--log-format json`` every record is one JSON object on one line; the
access log's fields are top-level keys.

With ``--log-config FILE`` the file configures logging instead, as with uvicorn:
``logging.config.dictConfig`` for ``.json``, ``.yaml`` and ``.yml`` files
(YAML needs PyYAML), ``logging.config.fileConfig`` for any other name
(``.ini``, ``.conf``). Existing loggers stay enabled unless the file says
``disable_existing_loggers: true``; wsharbor installs no handler of its own
then, and its loggers propagate to the root logger (configure ``wsharbor``,
``wsharbor.access``... or the root). ``--log-level``, when given, still sets the
level of ``wsharbor``. Use :class:`JsonFormatter` (``"()":
"wsharbor.app.logs.JsonFormatter"``) for JSON lines.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import sys
import time
from typing import Any

from ..exceptions import ConfigError

__all__ = [
    "ACCESS_LOGGER",
    "APP_LOGGER",
    "JsonFormatter",
    "access_fields",
    "access_message",
    "apply_log_config",
    "setup_logging",
]

APP_LOGGER = "wsharbor.app"
ACCESS_LOGGER = "wsharbor.access"

_TEXT_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, pid, message, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


#: The library's INFO messages about each connection, which the access log covers.
_PER_CONNECTION = frozenset(
    {
        "connection open",
        "connection closed",
        "connection rejected (%d %s)",
        "HTTP response sent (%d %s)",
    }
)


def _not_per_connection(record: logging.LogRecord) -> bool:
    return not (
        record.levelno == logging.INFO
        and record.name == "wsharbor.server"
        and record.msg in _PER_CONNECTION
    )


def setup_logging(
    level: str, log_format: str, log_config: str | None = None, *, level_given: bool = True
) -> None:
    """Configure the root of wsharbor's loggers (idempotent: replaces our handler).

    With ``log_config``, the file configures logging (see the module docstring)
    and ``level`` applies only if ``level_given``. Raises :exc:`ConfigError`
    when the file can't be applied.
    """
    root = logging.getLogger("wsharbor")
    for handler in list(root.handlers):
        if getattr(handler, "_wsharbor", False):
            root.removeHandler(handler)
    if log_config is not None:
        # Frame-level debug logs show message bodies: off unless the file
        # sets these loggers' levels itself.
        logging.getLogger("wsharbor.server").setLevel(logging.INFO)
        logging.getLogger("wsharbor.client").setLevel(logging.INFO)
        root.propagate = True
        apply_log_config(log_config)
        if level_given:
            root.setLevel(getattr(logging, level.upper()))
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._wsharbor = True  # type: ignore[attr-defined]
    # The access log has a line per connection: the library's own per-connection
    # INFO lines (websockets' "connection open", ...) would repeat it.
    handler.addFilter(_not_per_connection)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(_TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    root.propagate = False
    # Frame-level debug logs show message bodies: never on from the app server.
    logging.getLogger("wsharbor.server").setLevel(max(logging.INFO, root.level))
    logging.getLogger("wsharbor.client").setLevel(max(logging.INFO, root.level))


def apply_log_config(path: str) -> None:
    """Apply a logging configuration file, as uvicorn's ``--log-config`` does."""
    try:
        if path.endswith((".json", ".yaml", ".yml")):
            with open(path, encoding="utf-8") as file:
                if path.endswith(".json"):
                    config = json.load(file)
                else:
                    import yaml

                    config = yaml.safe_load(file)
            if not isinstance(config, dict):
                raise ValueError("expected a mapping (logging.config.dictConfig's schema)")
            config.setdefault("disable_existing_loggers", False)
            logging.config.dictConfig(config)
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ImportError:
        raise ConfigError(
            f"--log-config {path}: PyYAML is not installed (pip install pyyaml), "
            "or use a .json file"
        ) from None
    except KeyError as exc:  # fileConfig: a missing section
        raise ConfigError(f"--log-config {path}: cannot apply it: missing {exc}") from None
    except Exception as exc:
        # json.JSONDecodeError, yaml.YAMLError, configparser errors, and
        # dictConfig's ValueError/TypeError ("Unable to configure handler ...").
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"--log-config {path}: cannot apply it: {message}") from None


def _address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if isinstance(address, str | bytes) and address:
        return os.fsdecode(address)
    return "unix"


def access_fields(
    *,
    remote: Any,
    path: str | None,
    status: int | None,
    duration: float,
    close_code: int | None,
    bytes_in: int,
    bytes_out: int,
    messages_in: int,
    messages_out: int,
) -> dict[str, Any]:
    """The access log's fields; the query string is dropped from ``path``."""
    return {
        "remote": _address(remote),
        "path": None if path is None else path.split("?", 1)[0],
        "status": status,
        "duration": round(duration, 6),
        "close_code": close_code,
        "bytes_in": bytes_in,
        "bytes_out": bytes_out,
        "messages_in": messages_in,
        "messages_out": messages_out,
    }


def access_message(fields: dict[str, Any]) -> str:
    """The text form: ``1.2.3.4:5 "GET /chat" 101 1001 12.345s in=10B/2msg out=20B/2msg``.

    ``-`` stands for a missing path, status or close code.
    """
    path = fields["path"] if fields["path"] is not None else "-"
    status = fields["status"] if fields["status"] is not None else "-"
    code = fields["close_code"] if fields["close_code"] is not None else "-"
    return (
        f'{fields["remote"]} "GET {path}" {status} {code} {fields["duration"]:.3f}s '
        f"in={fields['bytes_in']}B/{fields['messages_in']}msg "
        f"out={fields['bytes_out']}B/{fields['messages_out']}msg"
    )
