"""The port of a websockets program to wsharbor: its imports, rewritten mechanically.

The whole port the README promises is "replace the top-level package name
``websockets`` by ``wsharbor`` in the imports". :func:`rewrite_imports` does
exactly that and nothing more: module paths in ``import`` and ``from ...
import`` statements, wherever they are (top level, functions, ``try`` blocks).
Names bound by the imports stay the same, so the rest of the program is left
as it is: ``import websockets`` becomes ``import wsharbor as websockets``; an
alias such as ``basic_auth as websockets_basic_auth`` is kept. Strings,
comments and every other line are untouched.
"""

from __future__ import annotations

import ast

__all__ = ["rewrite_imports"]


def _rename(module: str, old: str, new: str) -> str | None:
    """``module`` with its top-level package ``old`` replaced, or None if it isn't ``old``."""
    head, dot, rest = module.partition(".")
    if head != old:
        return None
    return new + dot + rest


def _rewrite(node: ast.Import | ast.ImportFrom, old: str, new: str) -> str | None:
    """The source of ``node`` rewritten, or None when it doesn't import ``old``."""
    if isinstance(node, ast.ImportFrom):
        if node.level or node.module is None:
            return None  # relative: the program's own package
        module = _rename(node.module, old, new)
        if module is None:
            return None
        return ast.unparse(ast.ImportFrom(module=module, names=node.names, level=0))
    names: list[ast.alias] = []
    changed = False
    for alias in node.names:
        module = _rename(alias.name, old, new)
        if module is None:
            names.append(alias)
            continue
        changed = True
        if alias.asname is not None:
            names.append(ast.alias(module, alias.asname))
        else:
            # ``import websockets.x`` binds ``websockets`` (and loads x):
            # load ``wsharbor.x`` and bind ``websockets`` to ``wsharbor``.
            if module != new:
                names.append(ast.alias(module))
            names.append(ast.alias(new, old))
    if not changed:
        return None
    return ast.unparse(ast.Import(names=names))


def rewrite_imports(source: str, old: str = "websockets", new: str = "wsharbor") -> str:
    """Return ``source`` with the package ``old`` replaced by ``new`` in its imports.

    Raises :exc:`SyntaxError` if ``source`` isn't valid Python.
    """
    tree = ast.parse(source)
    edits: list[tuple[int, int, int, int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            text = _rewrite(node, old, new)
            if text is not None:
                assert node.end_lineno is not None and node.end_col_offset is not None
                edits.append(
                    (node.lineno, node.col_offset, node.end_lineno, node.end_col_offset, text)
                )
    lines = source.splitlines(keepends=True)
    # From the end, so that earlier positions stay valid. Offsets are in UTF-8
    # bytes (ast's convention).
    for lineno, col, end_lineno, end_col, text in sorted(edits, reverse=True):
        first = lines[lineno - 1].encode()
        last = lines[end_lineno - 1].encode()
        replaced = first[:col] + text.encode() + last[end_col:]
        lines[lineno - 1 : end_lineno] = [replaced.decode()]
    return "".join(lines)
