"""The version of wsharbor (layer 1): ``wsharbor.__version__`` is re-exported from here.

Every layer that needs the version (the default ``Server`` and ``User-Agent``
headers, ``wsharbor --version``) imports it from this module, never from the
package ``__init__``, which sits above every layer. The same string is the
``version`` of ``pyproject.toml``; a test fails when they differ.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0.dev0"
