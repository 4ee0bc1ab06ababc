"""``MODULE:ATTR`` to a handler, with one clear :class:`ConfigError` for each way it fails.

``ATTR`` is one of:

- an async callable, the handler: ``handler(websocket)``; its optional
  ``process_request`` attribute is the app's HTTP hook, its optional
  ``hub_options`` the settings of the process's hub (:mod:`.broker`);
- a :class:`werkzeug.routing.Map` whose endpoints are handlers, served through
  a :class:`~wsharbor.asyncio.router.Router` (as ``route()`` would), or a
  ``Router`` itself;
- with ``--factory``, a callable that takes no argument and returns one of the
  above.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import ConfigError

if TYPE_CHECKING:
    from ..asyncio.router import Router
    from .config import Config

__all__ = ["App", "is_async_callable", "load_app", "load_config_app"]


@dataclass(frozen=True)
class App:
    """The handler and its optional ``process_request`` hook."""

    #: ``handler(websocket)`` or, as in the deployment guide, ``handler(websocket,
    #: path)``: the asyncio layer adapts it (``handler_callable``).
    handler: Callable[..., Awaitable[Any]]
    process_request: Callable[..., Any] | None
    #: The router when ``ATTR`` is a URL map or a router: ``handler`` and
    #: ``process_request`` are its own, and connections need room for the match
    #: (:class:`~wsharbor.asyncio.router.RouterConnection`).
    router: Router | None = None
    #: The object's ``hub_options`` attribute: Hub() keyword arguments for the
    #: process's hub (see :mod:`.broker`), or None.
    hub_options: Any = None


def is_async_callable(obj: Any) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - an object with async __call__
    return call is not None and not inspect.isclass(obj) and inspect.iscoroutinefunction(call)


def _call_factory(spec: str, factory: Any) -> Any:
    """``--factory``: the app the factory returns."""
    if not callable(factory):
        raise ConfigError(f"--factory: {spec} is not callable (it is a {type(factory).__name__})")
    if is_async_callable(factory):
        raise ConfigError(
            f"--factory: {spec} is an async function: the factory must be a plain "
            "function that returns the handler"
        )
    try:
        app = factory()
    except BaseException as exc:  # the app's code can raise anything, even exit
        if isinstance(exc, KeyboardInterrupt):
            raise
        message = " ".join(str(exc).split())
        raise ConfigError(
            f"error while calling the factory {spec}(): {type(exc).__name__}"
            f"{': ' + message if message else ''}{_last_frame(exc)}"
        ) from None
    return app


def _last_frame(exc: BaseException) -> str:
    """``file:line`` of the innermost frame, to say where an import failed."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" ({os.path.relpath(frame.filename)}:{frame.lineno})"


def _router(obj: Any, url_scheme: str) -> Router | None:
    """``obj`` as a router if it is a werkzeug ``Map`` or a ``Router``, else None.

    Neither werkzeug nor the router module is imported unless the app did.
    """
    routing = sys.modules.get("werkzeug.routing")
    if routing is not None and isinstance(obj, routing.Map):
        from ..asyncio.router import Router

        return Router(obj, None, url_scheme)
    router_module = sys.modules.get("wsharbor.asyncio.router")
    if router_module is not None and isinstance(obj, router_module.Router):
        router: Router = obj
        return router
    return None


def load_app(
    spec: str,
    *,
    factory: bool = False,
    app_dir: str | None = None,
    url_scheme: str = "ws",
) -> App:
    """Import ``MODULE`` and take ``ATTR`` (see the module docstring).

    ``app_dir`` (default: the current directory) goes first on ``sys.path``, as
    uvicorn's ``--app-dir``. With ``factory``, ``ATTR`` is called with no
    arguments and returns the app. ``url_scheme`` is the scheme of a router's
    redirects, when ``ATTR`` is a URL map (``wss`` when the server does TLS).
    """
    module_name, _, attr_path = spec.partition(":")
    cwd = os.path.abspath(app_dir) if app_dir is not None else os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise ConfigError(
                f"cannot import module {module_name!r}: no such module (from {cwd})"
            ) from None
        raise ConfigError(
            f"error while importing module {module_name!r}: {type(exc).__name__}: {exc}"
            f"{_last_frame(exc)}"
        ) from None
    except SyntaxError as exc:
        where = f" ({exc.filename}:{exc.lineno})" if exc.filename else ""
        raise ConfigError(
            f"error while importing module {module_name!r}: SyntaxError: {exc.msg}{where}"
        ) from None
    except BaseException as exc:  # the app's import-time code can raise anything, even exit
        if isinstance(exc, KeyboardInterrupt):
            raise
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            f"error while importing module {module_name!r}: {type(exc).__name__}"
            f"{': ' + message if message else ''}{_last_frame(exc)}"
        ) from None
    handler: Any = module
    for part in attr_path.split("."):
        try:
            handler = getattr(handler, part)
        except AttributeError:
            raise ConfigError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if factory:
        handler = _call_factory(spec, handler)
    hub_options = getattr(handler, "hub_options", None)
    router = _router(handler, url_scheme)
    if router is not None:
        return App(
            handler=router.handler,
            process_request=router.route_request,
            router=router,
            hub_options=hub_options,
        )
    if not is_async_callable(handler):
        kind = type(handler).__name__
        hint = ""
        if not factory and callable(handler) and not inspect.isclass(handler):
            hint = "; if it returns the handler, add --factory"
        raise ConfigError(
            f"{spec}{'()' if factory else ''} is not an async callable (it is a {kind}): "
            f"expected async def handler(websocket){hint}"
        )
    process_request = getattr(handler, "process_request", None)
    if process_request is not None and not callable(process_request):
        raise ConfigError(f"{spec}.process_request is not callable")
    return App(handler=handler, process_request=process_request, hub_options=hub_options)


def load_config_app(config: Config) -> App:
    """:func:`load_app` with the settings of ``config`` (``--factory``,
    ``--app-dir``, and ``wss`` redirects when the server does TLS)."""
    return load_app(
        config.app,
        factory=config.factory,
        app_dir=config.app_dir,
        url_scheme="ws" if config.ssl_certfile is None else "wss",
    )
