"""Settings of the application server, from command-line flags and ``WSHARBOR_*`` variables.

Every setting has one flag and one environment variable: ``--max-size`` is
``WSHARBOR_MAX_SIZE``, ``--workers`` is ``WSHARBOR_WORKERS``, the positional
``MODULE:ATTR`` is ``WSHARBOR_APP``. A flag wins over the variable, the variable
over the default. Flags and variables go through the same parser, so a bad value
gets the same one-line message naming where it came from::

    wsharbor: error: --port 70000: must be an integer from 0 to 65535
    wsharbor: error: WSHARBOR_WORKERS=0: must be an integer >= 1

Everything here raises :class:`~wsharbor.exceptions.ConfigError`; the CLI turns
it into that line and exit code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .. import defaults
from ..exceptions import ConfigError, InvalidBrokerURL
from ..protocol.deflate import SERVER_DEFAULTS
from ..version import describe as describe_version
from .envfile import read_env_file
from .proxy_headers import parse_trusted

__all__ = ["OPTIONS", "Config", "Option", "build_parser", "parse_config"]

ENV_PREFIX = "WSHARBOR_"


# Value parsers: str -> value, ValueError with a short message on bad input.


def _int(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip(), 10)
        except ValueError:
            value = None
        if (
            value is None
            or (low is not None and value < low)
            or (high is not None and value > high)
        ):
            if low is not None and high is not None:
                raise ValueError(f"must be an integer from {low} to {high}")
            if low is not None:
                raise ValueError(f"must be an integer >= {low}")
            raise ValueError("must be an integer")
        return value

    return parse


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Also accept ``none`` (no limit / disabled)."""

    def parse_optional(text: str) -> Any:
        if text.strip().lower() == "none":
            return None
        try:
            return parse(text)
        except ValueError as exc:
            raise ValueError(f"{exc}, or 'none'") from None

    return parse_optional


def _positive_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise ValueError("must be a positive number of seconds")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false (1/0, yes/no, on/off)")


def _str(text: str) -> str:
    return text


def _nonempty(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    return text


def _http_path(text: str) -> str:
    if not text.startswith("/") or any(c in text for c in " ?#\r\n"):
        raise ValueError("must be a URL path starting with '/', without query")
    return text


def _csv(text: str) -> tuple[str, ...]:
    # An empty item (e.g. "https://a.example,") stands for "no Origin header".
    return tuple(item.strip() for item in text.split(","))


def _trusted(text: str) -> tuple[str, ...]:
    return parse_trusted(text)


def _cert_reqs(text: str) -> str:
    # uvicorn takes ssl.CERT_* as integers: 0, 1, 2.
    value = text.strip().lower()
    value = {"0": "none", "1": "optional", "2": "required"}.get(value, value)
    if value not in ("none", "optional", "required"):
        raise ValueError("must be one of none, optional, required (or 0, 1, 2)")
    return value


def _broker_url(text: str) -> str:
    """A broker URL ``wsharbor.pubsub.Hub`` takes (checked here, connected later)."""
    from ..pubsub.broker import parse_url

    try:
        parse_url(text.strip())
    except InvalidBrokerURL as exc:
        raise ValueError(str(exc)) from None
    except ImportError as exc:
        raise ValueError(str(exc)) from None
    return text.strip()


def _app(text: str) -> str:
    module, sep, attr = text.partition(":")
    if not sep or not module or not attr:
        raise ValueError("must be MODULE:ATTR, e.g. myapp:handler")
    return text


@dataclass(frozen=True)
class Option:
    """One setting: attribute name, flag, parser, default, help."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str | None = None
    boolean: bool = False
    group: str = "server"
    #: The value may hold a secret (a password in a URL): error messages don't
    #: repeat it (the parser's message names what is wrong without it).
    secret: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    # Where to listen.
    Option("host", _nonempty, "127.0.0.1", "bind to this address", "HOST", group="socket"),
    Option("port", _int(0, 65535), 8000, "bind to this TCP port", "PORT", group="socket"),
    Option("uds", _nonempty, None, "bind to this Unix socket path instead", "PATH", group="socket"),
    Option("fd", _int(0), None, "use this inherited listening socket", "N", group="socket"),
    Option("backlog", _int(1), 2048, "listen() backlog", "N", group="socket"),
    Option("ssl_certfile", _nonempty, None, "TLS certificate (PEM)", "FILE", group="socket"),
    Option("ssl_keyfile", _nonempty, None, "TLS private key (PEM)", "FILE", group="socket"),
    Option(
        "ssl_keyfile_password",
        _str,
        None,
        "password of the TLS private key (prefer the variable: flags show in ps)",
        "PASSWORD",
        group="socket",
    ),
    Option(
        "ssl_ca_certs",
        _nonempty,
        None,
        "CA certificates (PEM) to verify client certificates with",
        "FILE",
        group="socket",
    ),
    Option(
        "ssl_cert_reqs",
        _cert_reqs,
        "none",
        "client certificates: none, optional or required (uvicorn's 0, 1, 2)",
        "MODE",
        group="socket",
    ),
    Option(
        "tls_transport",
        _choice("wsharbor", "loop"),
        "wsharbor",
        "who does TLS: wsharbor (small per connection) or the event loop's own",
        "NAME",
        group="socket",
    ),
    # Processes.
    Option("workers", _int(1), 1, "worker processes (1: no supervisor)", "N", group="process"),
    Option(
        "graceful_timeout",
        _positive_float,
        10.0,
        "on shutdown, how long handlers get to finish",
        "S",
        group="process",
    ),
    Option(
        "max_connections",
        _optional(_int(1)),
        None,
        "open connections per worker; beyond it handshakes get 503",
        "N",
        group="process",
    ),
    Option(
        "loop", _choice("auto", "asyncio", "uvloop"), "auto", "event loop", "LOOP", group="process"
    ),
    Option(
        "reload",
        _bool,
        False,
        "development: restart workers when .py files under the cwd change",
        boolean=True,
        group="process",
    ),
    Option(
        "limit_max_requests",
        _optional(_int(1)),
        None,
        "a worker retires (1012) and is replaced after this many WebSocket connections "
        "(--workers 2 or more)",
        "N",
        group="process",
    ),
    # The application.
    Option(
        "factory",
        _bool,
        False,
        "MODULE:ATTR is a factory: call it with no arguments to get the handler",
        boolean=True,
        group="app",
    ),
    Option(
        "app_dir",
        _nonempty,
        None,
        "import MODULE from this directory (default: the current directory)",
        "DIR",
        group="app",
    ),
    Option(
        "env_file",
        _nonempty,
        None,
        "read KEY=VALUE lines into the environment first (real variables win)",
        "FILE",
        group="app",
    ),
    # Rooms across workers and hosts: the process's wsharbor.pubsub.Hub.
    Option(
        "broker",
        _broker_url,
        "memory://",
        "the broker of the hub handlers get from wsharbor.app.hub(): memory:// (one "
        "process), redis://[[user]:password@]host[:port][/db], rediss://..., "
        "redis+sentinel://host:port[,host:port...]/service[/db]",
        "URL",
        group="pubsub",
        secret=True,
    ),
    Option(
        "history",
        _optional(_int(0)),
        None,
        "messages of history each room of the hub keeps, for resuming clients "
        "(default: the app's hub_options, else none)",
        "N",
        group="pubsub",
    ),
    # Behind a reverse proxy.
    Option(
        "proxy_headers",
        _bool,
        False,
        "take the client's address from the proxy's header (see --forwarded-header)",
        boolean=True,
        group="proxy",
    ),
    Option(
        "forwarded_allow_ips",
        _trusted,
        ("127.0.0.1",),
        "peers whose proxy headers are believed: addresses, networks, or '*'",
        "LIST",
        group="proxy",
    ),
    Option(
        "forwarded_header",
        _choice("x-forwarded", "forwarded"),
        "x-forwarded",
        "the header to read: X-Forwarded-For, or RFC 7239 Forwarded",
        "HEADER",
        group="proxy",
    ),
    # HTTP endpoints on the WebSocket port.
    Option("health_path", _http_path, "/healthz", "liveness endpoint", "PATH", group="http"),
    Option("ready_path", _http_path, "/readyz", "readiness endpoint", "PATH", group="http"),
    Option("metrics_path", _http_path, "/metrics", "Prometheus endpoint", "PATH", group="http"),
    # The library's server options.
    Option(
        "max_size",
        _optional(_int(1)),
        defaults.MAX_SIZE,
        "largest message received, bytes",
        "BYTES",
    ),
    Option(
        "max_fragments",
        _optional(_int(1)),
        defaults.MAX_FRAGMENTS,
        "frames in one message received",
        "N",
    ),
    Option(
        "max_buffered",
        _optional(_int(1)),
        defaults.MAX_BUFFERED,
        "bytes buffered by all connections of a worker before the largest pause",
        "BYTES",
    ),
    Option(
        "max_queue",
        _optional(_int(1)),
        defaults.MAX_QUEUE,
        "messages queued before reading pauses",
        "N",
    ),
    Option(
        "read_limit",
        _int(1024),
        defaults.READ_LIMIT,
        "bytes buffered before reading pauses",
        "BYTES",
    ),
    Option("write_limit", _int(0), defaults.WRITE_LIMIT, "write buffer high-water mark", "BYTES"),
    Option(
        "ping_interval",
        _optional(_positive_float),
        defaults.PING_INTERVAL,
        "keepalive ping interval",
        "S",
    ),
    Option(
        "ping_timeout",
        _optional(_positive_float),
        defaults.PING_TIMEOUT,
        "keepalive pong deadline",
        "S",
    ),
    Option(
        "open_timeout",
        _optional(_positive_float),
        defaults.OPEN_TIMEOUT,
        "opening handshake deadline",
        "S",
    ),
    Option(
        "close_timeout",
        _optional(_positive_float),
        defaults.CLOSE_TIMEOUT,
        "closing handshake deadline",
        "S",
    ),
    Option("compression", _choice("deflate", "none"), "deflate", "permessage-deflate", "MODE"),
    Option("window_bits", _int(9, 15), SERVER_DEFAULTS.window_bits, "compression window bits", "N"),
    Option(
        "memory_level", _int(1, 9), SERVER_DEFAULTS.memory_level, "compression memory level", "N"
    ),
    Option("origins", _csv, None, "allowed Origin values, comma-separated", "LIST"),
    Option("subprotocols", _csv, None, "supported subprotocols, comma-separated", "LIST"),
    Option("server_header", _str, None, "Server header ('' to omit)", "VALUE"),
    # Logging.
    Option(
        "log_level",
        _choice("critical", "error", "warning", "info", "debug"),
        "info",
        "log level",
        "LEVEL",
        group="log",
    ),
    Option("access_log", _bool, True, "one line per connection", boolean=True, group="log"),
    Option("log_format", _choice("text", "json"), "text", "text or json", "FORMAT", group="log"),
    Option(
        "log_config",
        _nonempty,
        None,
        "logging configuration: dictConfig in .json/.yaml/.yml, fileConfig otherwise",
        "FILE",
        group="log",
    ),
)


@dataclass(frozen=True)
class Config:
    """The resolved settings. Serialized to JSON to hand them to worker processes."""

    app: str
    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    backlog: int = 2048
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_keyfile_password: str | None = None
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: str = "none"
    tls_transport: str = "wsharbor"
    workers: int = 1
    graceful_timeout: float = 10.0
    max_connections: int | None = None
    loop: str = "auto"
    reload: bool = False
    limit_max_requests: int | None = None
    factory: bool = False
    app_dir: str | None = None
    env_file: str | None = None
    broker: str = "memory://"
    history: int | None = None
    proxy_headers: bool = False
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1",)
    forwarded_header: str = "x-forwarded"
    health_path: str = "/healthz"
    ready_path: str = "/readyz"
    metrics_path: str = "/metrics"
    max_size: int | None = defaults.MAX_SIZE
    max_fragments: int | None = defaults.MAX_FRAGMENTS
    max_buffered: int | None = defaults.MAX_BUFFERED
    max_queue: int | None = defaults.MAX_QUEUE
    read_limit: int = defaults.READ_LIMIT
    write_limit: int = defaults.WRITE_LIMIT
    ping_interval: float | None = defaults.PING_INTERVAL
    ping_timeout: float | None = defaults.PING_TIMEOUT
    open_timeout: float | None = defaults.OPEN_TIMEOUT
    close_timeout: float | None = defaults.CLOSE_TIMEOUT
    compression: str = "deflate"
    window_bits: int = SERVER_DEFAULTS.window_bits
    memory_level: int = SERVER_DEFAULTS.memory_level
    origins: tuple[str, ...] | None = None
    subprotocols: tuple[str, ...] | None = None
    server_header: str | None = None
    log_level: str = "info"
    access_log: bool = True
    log_format: str = "text"
    log_config: str | None = None
    #: Settings given explicitly (flag or variable), to detect conflicts.
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["explicit"] = sorted(self.explicit)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Config:
        data = json.loads(text)
        data["explicit"] = frozenset(data.get("explicit", ()))
        for name in ("origins", "subprotocols", "forwarded_allow_ips"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`ConfigError` instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)


class _VersionAction(argparse.Action):
    """``--version``: the line of :func:`wsharbor.version.describe`, exit 0."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        sys.stdout.write(describe_version() + "\n")
        parser.exit(0)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wsharbor run",
        description=(
            "Serve an async WebSocket handler: wsharbor run MODULE:ATTR. Every flag can also "
            "be set with a WSHARBOR_* environment variable (--max-size: WSHARBOR_MAX_SIZE); "
            "flags win. 'none' disables a limit or timeout."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print wsharbor's, Python's and uvloop's versions and exit",
    )
    parser.add_argument("app", nargs="?", metavar="MODULE:ATTR", help="the handler (WSHARBOR_APP)")
    groups = {
        "socket": parser.add_argument_group("listening socket"),
        "process": parser.add_argument_group("processes"),
        "app": parser.add_argument_group("the application"),
        "pubsub": parser.add_argument_group(
            "rooms across workers and hosts (wsharbor.app.hub(), docs/scaling.md)"
        ),
        "proxy": parser.add_argument_group("behind a reverse proxy"),
        "http": parser.add_argument_group("HTTP endpoints on the WebSocket port"),
        "server": parser.add_argument_group("WebSocket server options"),
        "log": parser.add_argument_group("logging"),
    }
    for option in OPTIONS:
        group = groups[option.group]
        default = "" if option.default is None else f" (default: {_show(option.default)})"
        help_text = f"{option.help}{default} [{option.env}]"
        if option.boolean:
            group.add_argument(
                option.flag,
                dest=option.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                option.flag, dest=option.name, metavar=option.metavar, default=None, help=help_text
            )
    return parser


def parse_config(argv: Sequence[str], environ: MutableMapping[str, str] | None = None) -> Config:
    """Resolve flags, then ``WSHARBOR_*`` variables, then defaults; validate.

    ``--env-file`` (or ``WSHARBOR_ENV_FILE``) is read first, into ``environ``
    (``os.environ`` by default) without replacing a variable already set, so
    that the ``WSHARBOR_*`` variables in it count and the application sees the
    others.
    """
    if environ is None:
        environ = os.environ
    namespace = build_parser().parse_args(list(argv))
    load_env_file(namespace.env_file, environ)
    values: dict[str, Any] = {}
    explicit: set[str] = set()
    for option in OPTIONS:
        raw = getattr(namespace, option.name)
        if raw is not None:
            explicit.add(option.name)
            if isinstance(raw, bool):
                values[option.name] = raw
                continue
            shown = option.flag if option.secret else f"{option.flag} {raw}"
            values[option.name] = _convert(option, raw, shown)
        elif option.env in environ:
            explicit.add(option.name)
            text = environ[option.env]
            shown = option.env if option.secret else f"{option.env}={text}"
            values[option.name] = _convert(option, text, shown)
        else:
            values[option.name] = option.default
    app = namespace.app
    source = f"MODULE:ATTR {app!r}"
    if app is None:
        app = environ.get(ENV_PREFIX + "APP")
        source = f"WSHARBOR_APP={app}"
    if not app:
        raise ConfigError("missing MODULE:ATTR, e.g. wsharbor run myapp:handler")
    try:
        _app(app)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    config = Config(app=app, explicit=frozenset(explicit), **values)
    check(config)
    return config


def load_env_file(flag: str | None, environ: MutableMapping[str, str]) -> None:
    """Apply ``--env-file`` (the flag, else ``WSHARBOR_ENV_FILE``) to ``environ``."""
    if flag is not None:
        path, source = flag, f"--env-file {flag}"
    else:
        env_path = environ.get(ENV_PREFIX + "ENV_FILE")
        if not env_path:
            return
        path, source = env_path, f"{ENV_PREFIX}ENV_FILE={env_path}"
    try:
        values = read_env_file(path)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for name, value in values.items():
        if name not in environ and name != ENV_PREFIX + "ENV_FILE":
            environ[name] = value


def _convert(option: Option, text: str, source: str) -> Any:
    try:
        return option.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def check(config: Config) -> None:
    """Cross-option checks that need no I/O beyond looking at files."""
    explicit = config.explicit
    if config.uds is not None and config.fd is not None:
        raise ConfigError("--uds and --fd conflict: choose one listening socket")
    for other in ("uds", "fd"):
        if getattr(config, other) is not None:
            for name in ("host", "port"):
                if name in explicit:
                    raise ConfigError(
                        f"--{other} and --{name} conflict: a Unix socket or an inherited fd "
                        "has no host or port"
                    )
    # A certificate file may hold the key too: --ssl-keyfile alone is the error.
    if config.ssl_keyfile is not None and config.ssl_certfile is None:
        raise ConfigError("--ssl-keyfile needs --ssl-certfile")
    if config.ssl_certfile is None:
        for name in ("ssl_keyfile_password", "ssl_ca_certs"):
            if getattr(config, name) is not None:
                raise ConfigError(f"--{name.replace('_', '-')} needs --ssl-certfile")
        if config.ssl_cert_reqs != "none":
            raise ConfigError("--ssl-cert-reqs needs --ssl-certfile")
        if "tls_transport" in config.explicit:
            raise ConfigError("--tls-transport needs --ssl-certfile")
    if config.ssl_cert_reqs != "none" and config.ssl_ca_certs is None:
        raise ConfigError(
            f"--ssl-cert-reqs {config.ssl_cert_reqs} needs --ssl-ca-certs: "
            "the CA certificates that sign client certificates"
        )
    for name in ("ssl_certfile", "ssl_keyfile", "ssl_ca_certs", "log_config"):
        path = getattr(config, name)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"--{name.replace('_', '-')} {path}: no such file")
    if config.app_dir is not None and not os.path.isdir(config.app_dir):
        raise ConfigError(f"--app-dir {config.app_dir}: no such directory")
    if config.limit_max_requests is not None and config.workers < 2:
        raise ConfigError(
            "--limit-max-requests needs --workers 2 or more: a worker is replaced "
            "while the others serve"
        )
    if config.log_config is not None:
        if "log_format" in explicit:
            raise ConfigError(
                "--log-format and --log-config conflict: set the formatter in the file "
                "(wsharbor.app.logs.JsonFormatter for JSON lines)"
            )
        if config.log_config.endswith((".yaml", ".yml")):
            try:
                import yaml  # noqa: F401
            except ImportError:
                raise ConfigError(
                    f"--log-config {config.log_config}: PyYAML is not installed "
                    "(pip install pyyaml), or use a .json file"
                ) from None
    if config.loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--loop uvloop: uvloop is not installed (pip install 'wsharbor[fast]')"
            ) from None
    if sys.platform == "win32":  # pragma: no cover - the app server is Unix-only
        raise ConfigError("wsharbor run needs a Unix system (signals, fd passing)")
