"""``MODULE:ATTR`` to a handler, with one clear :class:`ConfigError` for each way it fails."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..exceptions import ConfigError

__all__ = ["App", "is_async_callable", "load_app"]


@dataclass(frozen=True)
class App:
    """The handler and its optional ``process_request`` hook."""

    #: ``handler(websocket)`` or, as in the deployment guide, ``handler(websocket,
    #: path)``: the asyncio layer adapts it (``handler_callable``).
    handler: Callable[..., Awaitable[Any]]
    process_request: Callable[..., Any] | None


def is_async_callable(obj: Any) -> bool:
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)  # noqa: B004 - an object with async __call__
    return call is not None and not inspect.isclass(obj) and inspect.iscoroutinefunction(call)


def _last_frame(exc: BaseException) -> str:
    """``file:line`` of the innermost frame, to say where an import failed."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    frame = frames[-1]
    return f" ({os.path.relpath(frame.filename)}:{frame.lineno})"


def load_app(spec: str) -> App:
    """Import ``MODULE`` (the current directory first on ``sys.path``) and take ``ATTR``."""
    module_name, _, attr_path = spec.partition(":")
    cwd = os.getcwd()
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
    if not is_async_callable(handler):
        kind = type(handler).__name__
        raise ConfigError(
            f"{spec} is not an async callable (it is a {kind}): "
            "expected async def handler(websocket)"
        )
    process_request = getattr(handler, "process_request", None)
    if process_request is not None and not callable(process_request):
        raise ConfigError(f"{spec}.process_request is not callable")
    return App(handler=handler, process_request=process_request)
