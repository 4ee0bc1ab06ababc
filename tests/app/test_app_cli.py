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
    # Behind a proxy.
    (
        ["testapp:handler", "--forwarded-allow-ips", "localhost"],
        {},
        "--forwarded-allow-ips localhost: 'localhost' is not an IP address or network",
    ),
    (
        ["testapp:handler"],
        {"WSHARBOR_FORWARDED_ALLOW_IPS": "10.0.0.0/99"},
        "WSHARBOR_FORWARDED_ALLOW_IPS=10.0.0.0/99: '10.0.0.0/99' is not an IP address",
    ),
    (
        ["testapp:handler", "--forwarded-header", "x-real-ip"],
        {},
        "--forwarded-header x-real-ip: must be one of x-forwarded, forwarded",
    ),
    (
        ["testapp:handler"],
        {"WSHARBOR_PROXY_HEADERS": "maybe"},
        "WSHARBOR_PROXY_HEADERS=maybe: must be true or false",
    ),
    # Logging configuration.
    (["testapp:handler", "--log-config", "nope.json"], {}, "--log-config nope.json: no such file"),
    (["testapp:handler", "--log-config", "bad.json"], {}, "--log-config bad.json: cannot apply it"),
    (
        ["testapp:handler", "--log-config", "badschema.json"],
        {},
        "--log-config badschema.json: cannot apply it: ",
    ),
    (["testapp:handler", "--log-config", "bad.ini"], {}, "--log-config bad.ini: cannot apply it"),
    (
        ["testapp:handler", "--log-config", "log.yaml"],
        {"PYTHONPATH": "noyaml"},
        "--log-config log.yaml: PyYAML is not installed (pip install pyyaml)",
    ),
    (
        ["testapp:handler", "--log-config", "log.json", "--log-format", "json"],
        {},
        "--log-format and --log-config conflict",
    ),
    # --env-file: read first, its WSHARBOR_* variables count.
    (["testapp:handler", "--env-file", "nope.env"], {}, "--env-file nope.env: no such file"),
    (["testapp:handler", "--env-file", "bad.env"], {}, "--env-file bad.env: line 2: expected"),
    (
        ["testapp:handler"],
        {"WSHARBOR_ENV_FILE": "bad.env"},
        "WSHARBOR_ENV_FILE=bad.env: line 2: expected KEY=VALUE",
    ),
    (
        ["testapp:handler", "--env-file", "workers.env"],
        {},
        "WSHARBOR_WORKERS=zero: must be an integer >= 1",
    ),
    # --factory, --app-dir.
    (
        ["testapp:handler", "--factory"],
        {},
        "--factory: testapp:handler is an async function",
    ),
    (
        ["factories:raises", "--factory"],
        {},
        "error while calling the factory factories:raises(): RuntimeError: no config",
    ),
    (
        ["factories:returns_none", "--factory"],
        {},
        "factories:returns_none() is not an async callable (it is a NoneType)",
    ),
    (
        ["factories:returns_none"],
        {},
        "is not an async callable (it is a function): expected async def handler(websocket); "
        "if it returns the handler, add --factory",
    ),
    (["testapp:handler", "--app-dir", "nodir"], {}, "--app-dir nodir: no such directory"),
    (["nosuchmodule:handler", "--app-dir", "noyaml"], {}, "no such module (from "),
    # TLS.
    (
        ["testapp:handler", "--ssl-ca-certs", "testapp.py"],
        {},
        "--ssl-ca-certs needs --ssl-certfile",
    ),
    (
        ["testapp:handler", "--ssl-keyfile-password", "pw"],
        {},
        "--ssl-keyfile-password needs --ssl-certfile",
    ),
    (
        ["testapp:handler", "--ssl-cert-reqs", "maybe"],
        {},
        "--ssl-cert-reqs maybe: must be one of none, optional, required (or 0, 1, 2)",
    ),
    (
        ["testapp:handler", "--ssl-certfile", "testapp.py", "--ssl-cert-reqs", "2"],
        {},
        "--ssl-cert-reqs required needs --ssl-ca-certs",
    ),
    (
        ["testapp:handler", "--ssl-certfile", "testapp.py", "--ssl-ca-certs", "nope.pem"],
        {},
        "--ssl-ca-certs nope.pem: no such file",
    ),
    # Worker recycling.
    (
        ["testapp:handler", "--limit-max-requests", "0"],
        {},
        "--limit-max-requests 0: must be an integer >= 1, or 'none'",
    ),
    (
        ["testapp:handler", "--limit-max-requests", "100"],
        {},
        "--limit-max-requests needs --workers 2 or more",
    ),
    # The hub's broker (the URL is checked before anything starts; a password
    # in it is never repeated).
    (
        ["testapp:handler", "--broker", "http://127.0.0.1"],
        {},
        "--broker: http://127.0.0.1 isn't a valid broker URL: unknown scheme http://",
    ),
    (
        ["testapp:handler"],
        {"WSHARBOR_BROKER": "redis://app:s3cret@127.0.0.1:abc/0"},
        "WSHARBOR_BROKER: redis://app:***@127.0.0.1:abc/0 isn't a valid broker URL: "
        "invalid port 'abc'",
    ),
    (
        ["testapp:handler", "--broker", "redis+sentinel://s1:26379", "--workers", "2"],
        {},
        "--broker: redis+sentinel://s1:26379 isn't a valid broker URL: missing the Sentinel",
    ),
    (["testapp:handler", "--history", "-1"], {}, "--history -1: must be an integer >= 0"),
    (["testapp:handler"], {"WSHARBOR_HISTORY": "lots"}, "WSHARBOR_HISTORY=lots: must be an"),
    (
        ["hubopts:url", "--port", "0"],
        {},
        "hubopts:url.hub_options: the broker URL comes from --broker (WSHARBOR_BROKER)",
    ),
    (
        ["hubopts:unknown", "--port", "0", "--workers", "2"],
        {},
        "hubopts:unknown.hub_options: Hub.__init__() got an unexpected keyword argument 'colour'",
    ),
    (
        ["hubopts:bad_history", "--port", "0"],
        {},
        "hubopts:bad_history.hub_options: history must be None, an int >= 0 or a function",
    ),
    (
        ["hubopts:not_a_mapping", "--port", "0"],
        {},
        "hubopts:not_a_mapping.hub_options must be a mapping of Hub() keyword arguments",
    ),
]

HUBOPTS_SOURCE = """
async def handler(websocket):
    pass

url = lambda: None
unknown = lambda: None
bad_history = lambda: None
not_a_mapping = lambda: None
"""

for _name, _options in (
    ("url", '{"url": "redis://127.0.0.1"}'),
    ("unknown", '{"colour": "blue"}'),
    ("bad_history", '{"history": -5}'),
    ("not_a_mapping", '["format"]'),
):
    HUBOPTS_SOURCE += (
        f"\nasync def {_name}(websocket):\n    pass\n{_name}.hub_options = {_options}\n"
    )


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    write_app(tmp_path)
    (tmp_path / "broken.py").write_text("import a_module_that_does_not_exist\n")
    (tmp_path / "syntaxerr.py").write_text("x = (\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('at import')\n")
    (tmp_path / "factories.py").write_text(
        "def raises():\n    raise RuntimeError('no config')\ndef returns_none():\n    return None\n"
    )
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "badschema.json").write_text('{"version": 1, "handlers": {"h": {"class": "nope"}}}')
    (tmp_path / "bad.ini").write_text("[loggers]\nkeys=root\n")
    (tmp_path / "log.yaml").write_text("version: 1\n")
    (tmp_path / "log.json").write_text('{"version": 1}')
    # A PYTHONPATH entry where "import yaml" fails, as without PyYAML.
    (tmp_path / "noyaml").mkdir()
    (tmp_path / "noyaml" / "yaml.py").write_text("raise ImportError('no PyYAML here')\n")
    (tmp_path / "bad.env").write_text("A=1\nthis is not a variable\n")
    (tmp_path / "workers.env").write_text("WSHARBOR_WORKERS=zero\n")
    (tmp_path / "hubopts.py").write_text(HUBOPTS_SOURCE)
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


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unreachable_broker_at_start(app_dir: Path, workers: str) -> None:
    """Nothing listens on the port: one line naming the broker, exit 2, no worker started."""
    pytest.importorskip("redis")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: connections are refused
        code, stderr = run_cli(
            app_dir,
            "testapp:handler",
            "--port",
            "0",
            "--workers",
            workers,
            "--broker",
            f"redis://:pw@127.0.0.1:{port}/0",
        )
    assert code == 2, stderr
    assert stderr.startswith(
        f"wsharbor: error: --broker: can't reach Redis at redis://127.0.0.1:{port}/0"
    ), stderr
    assert len(stderr.splitlines()) == 1, stderr
    assert "pw" not in stderr and "Traceback" not in stderr


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
        "max_buffered",
        "max_queue",
        "read_limit",
        "write_limit",
        "ping_interval",
        "ping_timeout",
        "open_timeout",
        "close_timeout",
        "tls_transport",
    ]
    for name in shared:
        assert getattr(config, name) == serve_defaults[name] == table[name], name
        assert getattr(Config("app:handler"), name) == serve_defaults[name], name
    assert config.window_bits == SERVER_DEFAULTS.window_bits == table["window_bits"]
    assert config.memory_level == SERVER_DEFAULTS.memory_level == table["memory_level"]
    # Every setting: the table's default is the Config's (the ones above are
    # the library's); the app server's own settings (TLS client certificates,
    # proxy headers, factory, app dir, env file, log config, recycling) have no
    # counterpart in serve() and are off by default.
    for option in OPTIONS:
        assert getattr(Config("app:handler"), option.name) == option.default, option.name
        assert getattr(config, option.name) == option.default, option.name
    assert config.proxy_headers is False and config.forwarded_allow_ips == ("127.0.0.1",)
    assert config.ssl_cert_reqs == "none" and config.limit_max_requests is None


def test_env_file_fills_the_environment_without_overriding_it(tmp_path: Path) -> None:
    env_file = tmp_path / "app.env"
    env_file.write_text(
        "WSHARBOR_PORT=9100\nWSHARBOR_WORKERS=3\nexport DATABASE_URL='postgres://db/app'\n"
        "WSHARBOR_ENV_FILE=ignored.env\n"
    )
    environ = {"WSHARBOR_WORKERS": "2"}
    config = parse_config(["a:b", "--env-file", str(env_file)], environ)
    # The file's WSHARBOR_* count, the real environment wins, the app sees the rest.
    assert (config.port, config.workers) == (9100, 2)
    assert environ["DATABASE_URL"] == "postgres://db/app"
    assert "WSHARBOR_ENV_FILE" not in environ
    # Named by the variable instead of the flag.
    environ = {"WSHARBOR_ENV_FILE": str(env_file)}
    assert parse_config(["a:b"], environ).port == 9100


def test_new_settings_parse_and_round_trip() -> None:
    config = parse_config(
        [
            "a:b",
            "--workers",
            "2",
            "--proxy-headers",
            "--forwarded-allow-ips",
            "10.0.0.0/8, ::1",
            "--forwarded-header",
            "forwarded",
            "--limit-max-requests",
            "1000",
            "--factory",
        ],
        {},
    )
    assert config.proxy_headers and config.factory
    assert config.forwarded_allow_ips == ("10.0.0.0/8", "::1")
    assert config.forwarded_header == "forwarded"
    assert config.limit_max_requests == 1000
    assert type(config).from_json(config.to_json()) == config
