"""Bad input: one line on stderr, exit code 2, never a traceback. Config resolution in-process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from wsharbor.app.config import parse_config
from wsharbor.app.importer import load_app
from wsharbor.asyncio.server import handler_callable
from wsharbor.exceptions import ConfigError

from .apptools import TIMEOUT, write_app

pytestmark = pytest.mark.timeout(60)


def run_cli(cwd: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WSHARBOR_")}
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "wsharbor", "run", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return result.returncode, result.stderr


BAD_INPUT = [
    (["nosuchmodule:handler"], {}, "cannot import module 'nosuchmodule': no such module"),
    (["broken:handler"], {}, "error while importing module 'broken': ModuleNotFoundError"),
    (["syntaxerr:handler"], {}, "error while importing module 'syntaxerr': SyntaxError"),
    (["raises:handler"], {}, "error while importing module 'raises': RuntimeError: at import"),
    (["testapp:missing"], {}, "module 'testapp' has no attribute 'missing'"),
    (["testapp:not_async"], {}, "testapp:not_async is not an async callable"),
    (["testapp"], {}, "must be MODULE:ATTR"),
    ([], {}, "missing MODULE:ATTR"),
    (["testapp:handler", "--workers", "0"], {}, "--workers 0: must be an integer >= 1"),
    (["testapp:handler", "--port", "70000"], {}, "--port 70000: must be an integer from 0 to"),
    (["testapp:handler", "--log-format", "xml"], {}, "--log-format xml: must be one of text, json"),
    (["testapp:handler", "--graceful-timeout", "-1"], {}, "--graceful-timeout -1: must be a pos"),
    (["testapp:handler", "--compression", "gzip"], {}, "--compression gzip: must be one of"),
    (["testapp:handler", "--uds", "x.sock", "--port", "9000"], {}, "--uds and --port conflict"),
    (["testapp:handler", "--ssl-certfile", "nope.pem"], {}, "--ssl-certfile nope.pem: no such"),
    (["testapp:handler", "--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
    (["testapp:handler"], {"WSHARBOR_WORKERS": "zero"}, "WSHARBOR_WORKERS=zero: must be an int"),
    (["testapp:handler"], {"WSHARBOR_MAX_SIZE": "-5"}, "WSHARBOR_MAX_SIZE=-5: must be an integer"),
]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    write_app(tmp_path)
    (tmp_path / "broken.py").write_text("import a_module_that_does_not_exist\n")
    (tmp_path / "syntaxerr.py").write_text("x = (\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('at import')\n")
    return tmp_path


@pytest.mark.parametrize(("args", "env", "message"), BAD_INPUT)
def test_bad_input_prints_one_line_and_exits_2(
    app_dir: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    code, stderr = run_cli(app_dir, *args, env=env)
    assert code == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("wsharbor: error: "), stderr
    assert message in lines[0]
    assert "Traceback" not in stderr


def test_port_in_use(app_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stderr = run_cli(app_dir, "testapp:handler", "--port", str(port))
    assert code == 2
    assert stderr == f"wsharbor: error: port {port} on 127.0.0.1 is already in use\n"


def test_help_exits_0(app_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsharbor", "run", "--help"],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0
    assert "--graceful-timeout" in result.stdout and "WSHARBOR_WORKERS" in result.stdout


# In-process: resolution order and parsing.


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    env = {"WSHARBOR_PORT": "9001", "WSHARBOR_WORKERS": "3", "WSHARBOR_APP": "envapp:h"}
    config = parse_config(["--port", "9002"], env)
    assert (config.port, config.workers, config.app) == (9002, 3, "envapp:h")
    assert config.host == "127.0.0.1" and config.graceful_timeout == 10.0
    assert {"port", "workers"} <= config.explicit and "host" not in config.explicit


def test_none_disables_limits_and_booleans_from_environment() -> None:
    config = parse_config(
        ["a:b", "--max-size", "none", "--ping-interval", "none", "--no-access-log"],
        {"WSHARBOR_RELOAD": "yes", "WSHARBOR_ORIGINS": "https://a.example,"},
    )
    assert config.max_size is None and config.ping_interval is None
    assert config.access_log is False and config.reload is True
    assert config.origins == ("https://a.example", "")


def test_config_round_trips_through_json() -> None:
    config = parse_config(["a:b", "--workers", "2", "--subprotocols", "chat,v2"], {})
    assert type(config).from_json(config.to_json()) == config


def test_uds_with_default_port_is_fine_and_fd_conflicts_with_uds() -> None:
    assert parse_config(["a:b", "--uds", "/tmp/x.sock"], {}).uds == "/tmp/x.sock"
    with pytest.raises(ConfigError, match="--uds and --fd conflict"):
        parse_config(["a:b", "--uds", "/tmp/x.sock", "--fd", "3"], {})


def test_load_app_takes_process_request_and_the_library_adapts_legacy_handlers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "legacyapp.py").write_text(
        "async def handler(websocket, path):\n    pass\n"
        "class Obj:\n    async def __call__(self, websocket):\n        pass\n"
        "    def process_request(self, connection, request):\n        return None\n"
        "obj = Obj()\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    legacy = load_app("legacyapp:handler")
    assert legacy.process_request is None
    # One place adapts the guide's handler(websocket, path): the asyncio layer.
    assert handler_callable(legacy.handler) is not legacy.handler
    obj = load_app("legacyapp:obj")
    assert obj.process_request is not None
    assert handler_callable(obj.handler) is obj.handler


def test_run_defaults_are_the_librarys() -> None:
    """``wsharbor run`` with no flag serves with the defaults of ``serve()``."""
    import inspect

    import wsharbor
    from wsharbor.app.config import OPTIONS, Config
    from wsharbor.protocol.deflate import SERVER_DEFAULTS

    serve_defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(wsharbor.serve).parameters.items()
    }
    config = parse_config(["app:handler"], environ={})
    table = {option.name: option.default for option in OPTIONS}
    shared = [
        "max_size",
        "max_fragments",
        "max_queue",
        "read_limit",
        "write_limit",
        "ping_interval",
        "ping_timeout",
        "open_timeout",
        "close_timeout",
    ]
    for name in shared:
        assert getattr(config, name) == serve_defaults[name] == table[name], name
        assert getattr(Config("app:handler"), name) == serve_defaults[name], name
    assert config.window_bits == SERVER_DEFAULTS.window_bits == table["window_bits"]
    assert config.memory_level == SERVER_DEFAULTS.memory_level == table["memory_level"]
