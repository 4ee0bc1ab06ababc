"""``wsharbor run MODULE:ATTR``: the application server's command line.

Synopsis::

    wsharbor run myapp:handler                      # 127.0.0.1:8000, one process
    wsharbor run myapp:handler --workers 4 --port 8765
    wsharbor run myapp:handler --uds /run/myapp.sock
    wsharbor run myapp:handler --fd 3               # an inherited listening socket
    wsharbor run myapp:handler --reload             # development
    WSHARBOR_WORKERS=4 wsharbor run myapp:handler   # every flag has a WSHARBOR_* variable

The app contract
----------------

``MODULE`` is imported with the current directory (or ``--app-dir``) first on
``sys.path`` (as uvicorn does); ``ATTR`` (dotted attributes allowed) is the
handler: an async callable ``handler(websocket)`` (``handler(websocket, path)``
is accepted too). ``ATTR`` may also be a werkzeug URL map (or a
:class:`~wsharbor.asyncio.router.Router`) whose endpoints are handlers, served as
:func:`~wsharbor.asyncio.router.route` would; with ``--factory``, a callable
returning any of these.
It runs once per WebSocket connection; when it returns, the connection is closed
with 1000; when it raises, with 1011 (and the error is logged and counted).

If the handler object has an attribute ``process_request`` (a callable, sync or
async, ``process_request(connection, request) -> Response | None``), it is
called for every HTTP request *after* the app server's own paths
(``--health-path``, ``--ready-path``, ``--metrics-path``): returning a
:class:`wsharbor.Response` answers the request with it (an HTML page at ``/``,
say: ``Response.text(200, html, {"Content-Type": "text/html; charset=utf-8"})``);
returning None continues with the WebSocket handshake. ``--max-connections`` is
checked after it, so an app's own HTTP pages are served even at capacity::

    async def handler(websocket):
        async for message in websocket:
            await websocket.send(message)

    def process_request(connection, request):
        if request.path == "/":
            return Response.text(200, PAGE, {"Content-Type": "text/html; charset=utf-8"})
        return None

    handler.process_request = process_request

Endpoints on the WebSocket port: ``/healthz`` answers 200 while the process
lives; ``/readyz`` 200 while accepting connections, 503 while starting or
draining or while the broker is unreachable; ``/metrics`` the Prometheus text
format, every worker included.

Rooms across workers and hosts: each process has a
:class:`wsharbor.pubsub.Hub` on ``--broker URL`` (``memory://`` by default:
one process; ``redis://...`` to span workers and hosts), which handlers get
from :func:`wsharbor.app.hub`; the handler object's optional ``hub_options``
attribute holds ``Hub()`` keyword arguments (``format``, ``history``, ...;
``--history N`` wins over its ``history``). See :mod:`wsharbor.app.broker`.

Processes: with ``--workers 1`` (the default) one process serves; SIGTERM or
SIGINT stops it gracefully (1001 to every connection, handlers get
``--graceful-timeout`` seconds), a second SIGINT forces, SIGHUP is logged and
ignored (a single process can't restart without downtime). With ``--workers N``
(N >= 2) or ``--reload``, a supervisor holds the socket and runs N workers; see
:mod:`wsharbor.app.supervisor` for restarts, SIGHUP rolling restarts and
SIGTTIN/SIGTTOU.

Bad input (unknown module, import error, missing attribute, a handler that is
not async, a port in use, a bad flag or variable, conflicting options, a missing
certificate, a malformed ``--broker`` URL or an unreachable broker at start)
prints one line, ``wsharbor: error: ...``, and exits with 2.

Exit status: 0 after a graceful stop, 1 when forced, 2 for bad input, 3 when the
supervisor gives up on a crash loop.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from ..exceptions import ConfigError
from .config import parse_config
from .importer import load_config_app
from .listen import open_listener
from .logs import APP_LOGGER, setup_logging

__all__ = ["main"]

logger = logging.getLogger(APP_LOGGER)


def _fail(message: str) -> int:
    line = " ".join(str(message).split())
    sys.stderr.write(f"wsharbor: error: {line}\n")
    sys.stderr.flush()
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the application server; return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = parse_config(args)
    except ConfigError as exc:
        return _fail(str(exc))
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    try:
        setup_logging(
            config.log_level,
            config.log_format,
            config.log_config,
            level_given="log_level" in config.explicit,
        )
        if config.ssl_ca_certs is not None and config.ssl_cert_reqs == "none":
            logger.warning(
                "--ssl-ca-certs without --ssl-cert-reqs: client certificates are not "
                "requested (as with uvicorn); add --ssl-cert-reqs optional or required"
            )
        app = load_config_app(config)
        from .worker import loop_factory, make_ssl_context

        make_ssl_context(config)
        loop_factory(config.loop)
        listener = open_listener(config)
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        if config.workers == 1 and not config.reload:
            from .worker import run_server

            try:
                return run_server(config, app, listener.sock)
            except ConfigError as exc:
                return _fail(str(exc))
        from .broker import check_broker
        from .supervisor import Supervisor

        try:
            # Workers wait for a broker that goes away later; a wrong one is
            # an error now, not a crash loop.
            check_broker(config, app)
            return Supervisor(config, listener.sock).run()
        except ConfigError as exc:
            return _fail(str(exc))
    finally:
        listener.close()
