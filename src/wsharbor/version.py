"""The version of wsharbor (layer 1): ``wsharbor.__version__`` is re-exported from here.

Every layer that needs the version (the default ``Server`` and ``User-Agent``
headers, ``wsharbor --version``) imports it from this module, never from the
package ``__init__``, which sits above every layer. The same string is the
``version`` of ``pyproject.toml``; a test fails when they differ.
"""

from __future__ import annotations

__all__ = ["__version__", "describe"]

__version__ = "0.1.0.dev0"


def describe() -> str:
    """What ``wsharbor --version`` prints: ``wsharbor X.Y.Z (CPython 3.11.7, uvloop 0.21.0)``.

    uvloop is the event loop ``--loop auto`` picks when it is installed.
    """
    import importlib.metadata
    import platform

    try:
        uvloop = "uvloop " + importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uvloop = "no uvloop"
    python = f"{platform.python_implementation()} {platform.python_version()}"
    return f"wsharbor {__version__} ({python}, {uvloop})"
