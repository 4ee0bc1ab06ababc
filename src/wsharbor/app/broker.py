"""The hub of a ``wsharbor run`` process: rooms across workers and hosts.

Every process that ``wsharbor run`` serves from (the only one with
``--workers 1``, each worker otherwise) creates one
:class:`wsharbor.pubsub.Hub` on ``--broker`` (``memory://`` by default) before
it accepts connections, and closes it after its connections closed. Handlers
reach it with :func:`hub`::

    from wsharbor.app import hub

    async def handler(websocket):
        await hub().join("lobby", websocket)
        async for message in websocket:
            await hub().publish("lobby", message)

The app tunes the hub with an optional ``hub_options`` attribute on the object
``MODULE:ATTR`` names (as ``process_request``): a mapping of
:class:`~wsharbor.pubsub.Hub` keyword arguments, e.g. ``{"format": to_json,
"history": 100}``. ``--history`` (or ``WSHARBOR_HISTORY``), when given, wins
over ``hub_options["history"]``; the URL is always ``--broker``'s.

Start: an unreachable broker is a clear error (exit 2) when the server starts
(the supervisor checks it once before starting workers). A worker started
later (a restart, a rolling restart, SIGTTIN) while the broker is down waits
for it, logging a WARNING at every attempt, and reports ready only once its
hub started: the other workers keep serving meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import BrokerUnavailable, ConfigError, InvalidBrokerURL, InvalidState
from .logs import APP_LOGGER

if TYPE_CHECKING:
    from ..pubsub import Hub
    from .config import Config
    from .importer import App

__all__ = ["check_broker", "hub", "make_hub", "start_hub"]

logger = logging.getLogger(APP_LOGGER)

#: Backoff between attempts of a worker whose broker is down at start.
START_RETRY_MIN = 0.1
START_RETRY_MAX = 5.0

_current: Hub | None = None


def hub() -> Hub:
    """The :class:`~wsharbor.pubsub.Hub` of this ``wsharbor run`` process.

    Raises :class:`~wsharbor.exceptions.InvalidState` outside ``wsharbor run``
    (or before the process started serving: at import time, say), naming what
    to do instead.
    """
    if _current is None:
        raise InvalidState(
            "wsharbor.app.hub() is the hub of a process run by `wsharbor run`, available "
            "from handlers once it serves; elsewhere create a wsharbor.pubsub.Hub yourself"
        )
    return _current


def set_current(value: Hub | None) -> None:
    """Make ``value`` what :func:`hub` returns (the app server does, at start and stop)."""
    global _current
    _current = value


def hub_kwargs(config: Config, app: App) -> dict[str, Any]:
    """The keyword arguments of the process's Hub: the app's ``hub_options``,
    then ``--history`` when given."""
    options = app.hub_options
    kwargs: dict[str, Any] = {}
    if options is not None:
        if not isinstance(options, Mapping):
            raise ConfigError(
                f"{config.app}.hub_options must be a mapping of Hub() keyword arguments, "
                f"not a {type(options).__name__}"
            )
        kwargs.update(options)
        if "url" in kwargs:
            raise ConfigError(
                f"{config.app}.hub_options: the broker URL comes from --broker "
                "(WSHARBOR_BROKER), not from hub_options"
            )
    if "history" in config.explicit or "history" not in kwargs:
        kwargs["history"] = config.history
    return kwargs


def make_hub(config: Config, app: App) -> Hub:
    """A Hub (not started) with the settings of ``config`` and the app's ``hub_options``.

    Raises ConfigError for a bad option (the message says which).
    """
    from ..pubsub import Hub

    kwargs = hub_kwargs(config, app)
    try:
        return Hub(config.broker, **kwargs)
    except InvalidBrokerURL as exc:
        raise ConfigError(f"--broker: {exc}") from None
    except ImportError as exc:
        raise ConfigError(f"--broker: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{config.app}.hub_options: {exc}") from None


async def start_hub(config: Config, app: App, *, retry: bool) -> Hub:
    """Create and start the process's hub.

    Without ``retry``, an unreachable broker raises ConfigError (the server
    exits with 2); with it (a supervised worker), attempts go on, with a capped
    backoff and a WARNING each, until the broker answers or the task is
    cancelled.
    """
    import asyncio  # not at the top: importing wsharbor.app loads no event loop machinery

    delay = START_RETRY_MIN
    while True:
        instance = make_hub(config, app)
        try:
            await instance.start()
        except BrokerUnavailable as exc:
            if not retry:
                raise ConfigError(f"--broker: {exc}") from None
            logger.warning("broker unavailable (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, START_RETRY_MAX)
            continue
        return instance


def check_broker(config: Config, app: App) -> None:
    """Connect to the broker once and disconnect: ConfigError if it can't be reached.

    The supervisor runs this before starting workers, so that a wrong
    ``--broker`` is one clear line and exit 2 rather than a crash loop.
    """

    instance = make_hub(config, app)  # checks the options
    if config.broker.strip().lower().startswith("memory:"):
        return  # in-process: nothing to reach

    async def probe() -> None:
        started = await start_hub(config, app, retry=False)
        await started.close()

    del instance
    import asyncio

    asyncio.run(probe())
