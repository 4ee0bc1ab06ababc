"""Sphinx configuration: ``make docs`` builds docs/_build/html with warnings as errors.

The pages are the Markdown guides (MyST) and an API reference generated from the
docstrings by autodoc. Docstrings are written in reStructuredText with Sphinx's
roles (``:class:``, ``:func:``), which is why this is Sphinx and not mkdocstrings.
No extension needs the network (no intersphinx): the build runs in CI.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from wsharbor.version import __version__  # noqa: E402

project = "wsharbor"
author = "wsharbor developers"
copyright = "wsharbor developers"
version = release = __version__

extensions = ["myst_parser", "sphinx.ext.autodoc"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Markdown: heading anchors for the guides' [text](page.md#section) links.
myst_heading_anchors = 3
# The guides link to files of the repository (deploy/, examples/, BENCHMARKS.md)
# that are not pages of this site: GitHub renders them; here they stay plain links.
# "ref.python": a type named in an annotation, e.g. "Connection" under
# TYPE_CHECKING, exists in wsharbor.asyncio and in wsharbor.sync (the same names
# as websockets, on purpose): Sphinx can't tell which and says so.
suppress_warnings = ["ref.python"]

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
# Types named in annotations only (under TYPE_CHECKING) and third-party types
# (werkzeug, ssl) are not resolved: without intersphinx there is nothing to link.
nitpicky = False

# "--flag" stays two hyphens (docutils would make it an en dash).
smartquotes = False

html_theme = "alabaster"
html_title = f"wsharbor {release}"
html_static_path: list[str] = []


class OptionsDirective(Directive):
    """``.. wsharbor-options::``: every ``wsharbor run`` flag, from the OPTIONS table."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        from wsharbor.app.config import OPTIONS

        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 30 30 20 40",
            "",
            "   * - flag",
            "     - variable",
            "     - default",
            "     - what",
        ]
        for option in OPTIONS:
            flag = f"``{option.flag}``"
            if option.boolean:
                flag += f" / ``--no-{option.flag[2:]}``"
            elif option.metavar:
                flag = f"``{option.flag} {option.metavar}``"
            default = option.default
            if isinstance(default, tuple):
                default = ",".join(default)
            elif isinstance(default, bool):
                default = "on" if default else "off"
            shown = "" if default is None else f"``{default}``"
            lines += [
                f"   * - {flag}",
                f"     - ``{option.env}``",
                f"     - {shown}",
                f"     - {option.help}",
            ]
        node = nodes.container()
        self.state.nested_parse(StringList(lines), self.content_offset, node)
        return node.children


#: asyncio.Protocol's callbacks: the event loop calls them, applications don't.
_PROTOCOL_CALLBACKS = frozenset(
    name
    for name in dir(asyncio.BufferedProtocol) + dir(asyncio.Protocol)
    if not name.startswith("_")
)


def skip_protocol_callbacks(
    app: Any, what: str, name: str, obj: Any, skip: bool, options: Any
) -> bool | None:
    """Leave asyncio's protocol callbacks of the connection classes out of the reference."""
    owner = getattr(obj, "__qualname__", "").rpartition(".")[0]
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    cls = getattr(module, owner, None) if owner and module is not None else None
    if name in _PROTOCOL_CALLBACKS and isinstance(cls, type):
        return issubclass(cls, asyncio.BaseProtocol) or None
    return None


def setup(app: Any) -> dict[str, Any]:
    app.add_directive("wsharbor-options", OptionsDirective)
    app.connect("autodoc-skip-member", skip_protocol_callbacks)
    return {"parallel_read_safe": True}
