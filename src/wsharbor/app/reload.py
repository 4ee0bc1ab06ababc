"""``--reload``: notice when a ``.py`` file under a directory changes, by polling mtimes.

Polling needs no dependency and works everywhere; the supervisor calls
:meth:`Watcher.changed` about twice a second. Hidden directories (``.git``,
``.venv``), ``__pycache__``, ``node_modules`` and virtual environments are
skipped.
"""

from __future__ import annotations

import os

__all__ = ["Watcher"]

_SKIP = frozenset({"__pycache__", "node_modules", "venv", "env", "site-packages", "build", "dist"})


class Watcher:
    """The ``.py`` files under ``root`` and their mtimes; :meth:`changed` polls them again."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.mtimes = self._scan()

    def _scan(self) -> dict[str, float]:
        mtimes: dict[str, float] = {}
        for directory, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP]
            for filename in filenames:
                if filename.endswith(".py"):
                    path = os.path.join(directory, filename)
                    try:
                        mtimes[path] = os.stat(path).st_mtime_ns
                    except OSError:
                        continue
        return mtimes

    def changed(self) -> str | None:
        """The relative path of a file added, changed or removed since the last call, if any."""
        mtimes = self._scan()
        previous, self.mtimes = self.mtimes, mtimes
        for path, mtime in mtimes.items():
            if previous.get(path) != mtime:
                return os.path.relpath(path, self.root)
        for path in previous:
            if path not in mtimes:
                return os.path.relpath(path, self.root)
        return None
