"""The layering of wsharbor (docs: /work/shared/ARCHITECTURE.md, "Layers").

1. ``defaults``, ``exceptions``, ``typing``, ``version``   2. ``protocol`` (sans-I/O), and
   ``datastructures``, ``frames``, ``http11`` (its names where websockets has them)
3. ``asyncio``   4. ``app``, ``sync``, ``pubsub``   5. ``bench`` / ``tools``

A module may import from its own layer and the lower-numbered ones. The public
facade (``wsharbor/__init__.py``, ``wsharbor/__main__.py``) may import anything
and sits above every layer: no module imports a name from it (``from .. import
__version__``), not even one the facade re-exports from a lower layer; it
imports the name from the module that defines it (``from ..version import
__version__``).
Imports inside ``if TYPE_CHECKING:`` are not runtime dependencies and are exempt
from the layer rule (``exceptions`` names ``Close`` in annotations), but not from
the sans-I/O rule: ``wsharbor/protocol/`` never imports an I/O module, not even
for typing, and not inside a function.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "wsharbor"

LAYERS = {
    "defaults": 1,
    "exceptions": 1,
    "typing": 1,
    "version": 1,
    "protocol": 2,
    # websockets' module names, re-exporting the sans-I/O core's.
    "datastructures": 2,
    "frames": 2,
    "http11": 2,
    "asyncio": 3,
    "pubsub": 4,
    "app": 4,
    "sync": 4,
    "bench": 5,
    "tools": 5,
}
FACADE = {"wsharbor", "wsharbor.__main__"}
IO_MODULES = frozenset(
    {"asyncio", "socket", "threading", "signal", "selectors", "ssl", "subprocess"}
)


@dataclass(frozen=True)
class Import:
    """One import: the absolute module imported, where, and whether it's type-only."""

    target: str
    lineno: int
    type_checking: bool


# Reading imports.


def module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """``from <level dots><name> import ...`` in ``module``, made absolute."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        if level - 1 > len(package) - 1:
            raise ImportError(f"relative import beyond the top package in {module}")
        package = package[: len(package) - (level - 1)]
    return ".".join([*package, name] if name else package)


def _dynamic_import_target(node: ast.Call) -> str | None:
    """``importlib.import_module("x")`` or ``__import__("x")`` with a literal name."""
    func = node.func
    is_dynamic = (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )
    if is_dynamic and node.args and isinstance(node.args[0], ast.Constant):
        value = node.args[0].value
        if isinstance(value, str) and not value.startswith("."):
            return value
    return None


def imports_of(source: str, module: str, is_package: bool) -> list[Import]:
    """Every import in ``source`` (module level, in functions, in classes), made absolute.

    ``from pkg import name`` yields ``pkg.name`` (a submodule or an attribute:
    :func:`layer_of` sorts it out).
    """
    tree = ast.parse(source)
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_checking)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(Import(alias.name, node.lineno, type_checking))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(module, is_package, node.level, node.module)
            else:
                base = node.module or ""
            for alias in node.names:
                target = base if alias.name == "*" else f"{base}.{alias.name}"
                found.append(Import(target, node.lineno, type_checking))
        elif isinstance(node, ast.Call):
            target = _dynamic_import_target(node)
            if target is not None:
                found.append(Import(target, node.lineno, type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(tree, False)
    return found


# Layers.


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def facade_exports() -> dict[str, str]:
    """Names the facade re-exports, mapped to the module they come from.

    Names the facade defines itself map to ``"wsharbor"``.
    """
    path = PACKAGE / "__init__.py"
    tree = ast.parse(path.read_text())
    exports: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = _resolve_relative("wsharbor", True, node.level, node.module)
            for alias in node.names:
                exports[alias.asname or alias.name] = f"{base}.{alias.name}"
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    exports[target.id] = "wsharbor"
    return exports


def layer_of(target: str, exports: dict[str, str]) -> int | None:
    """The layer of an absolute import target inside wsharbor, or None outside it.

    Raises LookupError for a module no layer was assigned to, for the whole
    facade (``import wsharbor``) and for a name imported from the facade (``from
    wsharbor import serve``): the facade is above every layer.
    """
    parts = target.split(".")
    if parts[0] != "wsharbor":
        return None
    if len(parts) == 1:
        raise LookupError("imports the public facade `wsharbor` (above every layer)")
    top = parts[1]
    if top in LAYERS:
        return LAYERS[top]
    if top in exports:
        source = exports[top].rpartition(".")[0]
        where = f"import it from `{source}`" if source else "define it in a layer"
        raise LookupError(f"imports `{top}` from the public facade `wsharbor`: {where}")
    raise LookupError(f"`wsharbor.{top}` belongs to no layer: add it to LAYERS in {__file__}")


def layer_violations(module: str, imports: list[Import], exports: dict[str, str]) -> list[str]:
    if module in FACADE:
        return []
    own = layer_of(module, exports)
    assert own is not None
    problems = []
    for imp in imports:
        if imp.type_checking:
            continue
        try:
            layer = layer_of(imp.target, exports)
        except LookupError as exc:
            problems.append(f"{module}:{imp.lineno} {imp.target}: {exc}")
            continue
        if layer is not None and layer > own:
            problems.append(
                f"{module}:{imp.lineno} (layer {own}) imports {imp.target} (layer {layer})"
            )
    return problems


def io_violations(module: str, imports: list[Import]) -> list[str]:
    if module != "wsharbor.protocol" and not module.startswith("wsharbor.protocol."):
        return []
    return [
        f"{module}:{imp.lineno} imports {imp.target} (the sans-I/O core must not)"
        for imp in imports
        if imp.target.split(".")[0] in IO_MODULES
    ]


def _read(path: Path) -> tuple[str, list[Import]]:
    module = module_name(path)
    return module, imports_of(path.read_text(), module, path.name == "__init__.py")


# The tests on the real package.


def test_every_module_belongs_to_a_layer() -> None:
    modules = package_modules()
    assert "wsharbor.protocol.connection" in modules
    unassigned = [
        name for name in modules if name not in FACADE and name.split(".")[1] not in LAYERS
    ]
    assert unassigned == [], f"assign these modules to a layer in {__file__}"


def test_no_lower_layer_imports_a_higher_one() -> None:
    exports = facade_exports()
    problems = []
    for path in package_modules().values():
        module, imports = _read(path)
        problems += layer_violations(module, imports, exports)
    assert problems == [], "\n".join(problems)


def test_sans_io_core_imports_no_io_module() -> None:
    problems = []
    checked = 0
    for path in sorted((PACKAGE / "protocol").rglob("*.py")):
        module, imports = _read(path)
        problems += io_violations(module, imports)
        checked += 1
    assert checked >= 4
    assert problems == [], "\n".join(problems)


def test_importing_the_protocol_core_does_not_load_asyncio() -> None:
    code = textwrap.dedent(
        """
        import importlib, sys
        import wsharbor.protocol, wsharbor.protocol.connection, wsharbor.protocol.frames
        for name in (
            "wsharbor.protocol.datastructures",
            "wsharbor.protocol.headers",
            "wsharbor.protocol.http11",
            "wsharbor.protocol.uri",
            "wsharbor.protocol.handshake",
            "wsharbor.protocol.deflate",
        ):
            try:
                importlib.import_module(name)
            except ImportError:
                pass
        loaded = sorted(
            m for m in sys.modules if m.split(".")[0] in ("asyncio", "socket", "selectors")
        )
        print(" ".join(loaded))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert "asyncio" not in loaded, (
        "importing the sans-I/O core loads asyncio; the usual cause is wsharbor/__init__.py "
        "importing .asyncio eagerly (re-export it lazily with a module __getattr__, PEP 562). "
        f"Loaded: {' '.join(loaded[:8])}..."
    )


# The checker itself, on synthetic sources.


def _check(source: str, module: str, is_package: bool = False) -> list[Import]:
    return imports_of(textwrap.dedent(source), module, is_package)


def test_checker_resolves_relative_imports() -> None:
    imports = _check(
        """
        from ..exceptions import ProtocolError
        from .frames import Frame
        from . import extensions
        from .. import typing as t
        import struct
        """,
        "wsharbor.protocol.connection",
    )
    assert [i.target for i in imports] == [
        "wsharbor.exceptions.ProtocolError",
        "wsharbor.protocol.frames.Frame",
        "wsharbor.protocol.extensions",
        "wsharbor.typing",
        "struct",
    ]


def test_checker_resolves_relative_imports_in_a_package_init() -> None:
    imports = _check(
        "from .client import connect\nfrom ..protocol import frames\n", "wsharbor.asyncio", True
    )
    assert [i.target for i in imports] == [
        "wsharbor.asyncio.client.connect",
        "wsharbor.protocol.frames",
    ]


def test_checker_rejects_relative_import_beyond_the_top() -> None:
    with pytest.raises(ImportError):
        _check("from ... import x\n", "wsharbor.exceptions")


@pytest.mark.parametrize(
    "source",
    [
        "import asyncio\n",
        "import asyncio.events\n",
        "from asyncio import Protocol\n",
        "import socket as s\n",
        "from ssl import SSLContext\n",
        "def f():\n    import threading\n",
        "class C:\n    def m(self):\n        from signal import SIGINT\n",
        "try:\n    import selectors\nexcept ImportError:\n    pass\n",
        "if TYPE_CHECKING:\n    import subprocess\n",
        "import importlib\nimportlib.import_module('asyncio')\n",
        "__import__('socket')\n",
    ],
)
def test_checker_finds_io_imports_in_the_protocol_layer(source: str) -> None:
    imports = _check(source, "wsharbor.protocol.frames")
    assert len(io_violations("wsharbor.protocol.frames", imports)) == 1
    # Elsewhere, I/O modules are fine.
    assert io_violations("wsharbor.asyncio.connection", imports) == []


def test_checker_does_not_confuse_the_asyncio_layer_with_stdlib_asyncio() -> None:
    imports = _check("from ..asyncio import serve\n", "wsharbor.protocol.frames")
    assert io_violations("wsharbor.protocol.frames", imports) == []
    assert layer_violations("wsharbor.protocol.frames", imports, {}) == [
        "wsharbor.protocol.frames:1 (layer 2) imports wsharbor.asyncio.serve (layer 3)"
    ]


EXPORTS = {"serve": "wsharbor.asyncio.serve", "__version__": "wsharbor.version.__version__"}


@pytest.mark.parametrize(
    ("source", "module", "bad"),
    [
        ("from ..asyncio import connect\n", "wsharbor.protocol.handshake", True),
        ("from .protocol.frames import Close\n", "wsharbor.exceptions", True),
        ("import wsharbor.app.config\n", "wsharbor.asyncio.server", True),
        ("def f():\n    from ...app import cli\n", "wsharbor.protocol.x.y", True),
        ("from .. import serve\n", "wsharbor.protocol.frames", True),  # via the facade
        ("import wsharbor\n", "wsharbor.protocol.frames", True),
        ("from .. import mystery\n", "wsharbor.asyncio.server", True),  # no layer
        ("from ..protocol.frames import Close\n", "wsharbor.asyncio.server", False),
        ("from .frames import Close\n", "wsharbor.protocol.connection", False),
        ("from ..exceptions import ProtocolError\n", "wsharbor.protocol.frames", False),
        # The facade re-exports __version__ from layer 1, but it is above every layer.
        ("from .. import __version__\n", "wsharbor.protocol.handshake", True),
        ("def f():\n    from .. import __version__\n", "wsharbor.asyncio.server", True),
        ("from wsharbor import __version__\n", "wsharbor.app.worker", True),
        ("from ..version import __version__\n", "wsharbor.protocol.handshake", False),
        ("from .version import __version__\n", "wsharbor.__main__", False),  # the facade
        ("from ..asyncio import serve\n", "wsharbor.app.main", False),
        ("from ..app import main\n", "wsharbor.bench.memory", False),
        (
            "if TYPE_CHECKING:\n    from .protocol.frames import Close\n",
            "wsharbor.exceptions",
            False,
        ),
        ("from .app import main\n", "wsharbor.__main__", False),  # the facade
        ("import asyncio\n", "wsharbor.exceptions", False),  # not wsharbor: other rule
    ],
)
def test_checker_layer_rule(source: str, module: str, bad: bool) -> None:
    imports = _check(source, module)
    assert bool(layer_violations(module, imports, EXPORTS)) is bad


def test_checker_type_checking_else_branch_is_runtime() -> None:
    source = """
    if TYPE_CHECKING:
        from .protocol.frames import Close
    else:
        from .protocol.frames import Frame
    if typing.TYPE_CHECKING:
        from .protocol.http11 import Response
    """
    imports = _check(source, "wsharbor.exceptions")
    assert [(i.target, i.type_checking) for i in imports] == [
        ("wsharbor.protocol.frames.Close", True),
        ("wsharbor.protocol.frames.Frame", False),
        ("wsharbor.protocol.http11.Response", True),
    ]
    assert len(layer_violations("wsharbor.exceptions", imports, {})) == 1


def test_facade_exports_are_read_from_the_real_facade() -> None:
    exports = facade_exports()
    assert exports["__version__"] == "wsharbor.version.__version__"
    assert exports["ProtocolError"] == "wsharbor.exceptions.ProtocolError"


def test_checker_names_the_module_to_import_from_instead_of_the_facade() -> None:
    module = "wsharbor.asyncio.server"
    imports = _check("from .. import __version__\n", module)
    assert layer_violations(module, imports, EXPORTS) == [
        "wsharbor.asyncio.server:1 wsharbor.__version__: imports `__version__` from the "
        "public facade `wsharbor`: import it from `wsharbor.version`"
    ]


# Private names across layers (issue 11): the layers above the asyncio layer use
# its public names only.

#: The packages that stand on the asyncio layer and may use its public names only.
ABOVE_ASYNCIO = ("app", "pubsub", "bench")


def private_names_defined(paths: list[Path]) -> set[str]:
    """``_``-prefixed (not dunder) attribute and method names these modules define:
    ``self._x = ...``, ``def _x``, class-level ``_x = ...`` and ``__slots__`` entries."""
    names: set[str] = set()

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__")

    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and private(node.name):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                if private(node.attr):
                    names.add(node.attr)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == "__slots__":
                        names.update(
                            element.value
                            for element in ast.walk(node.value)
                            if isinstance(element, ast.Constant)
                            and isinstance(element.value, str)
                            and private(element.value)
                        )
    return names


def private_uses(source: str, foreign: set[str], own: set[str]) -> list[str]:
    """Uses of a private name the asyncio layer defines and this package doesn't:
    ``obj._name`` (any object) and ``from ...asyncio... import _name``."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in foreign and node.attr not in own:
            problems.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module and "asyncio" in node.module:
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    problems.append(f"line {node.lineno}: imports {alias.name}")
    return problems


def test_layers_above_asyncio_use_its_public_names_only() -> None:
    asyncio_private = private_names_defined(sorted((PACKAGE / "asyncio").rglob("*.py")))
    assert "_deliver" in asyncio_private  # the checker sees the asyncio layer's privates
    problems = []
    for package in ABOVE_ASYNCIO:
        paths = sorted((PACKAGE / package).rglob("*.py"))
        own = private_names_defined(paths)
        for path in paths:
            for problem in private_uses(path.read_text(), asyncio_private, own):
                problems.append(f"{path.relative_to(SRC)}: {problem}")
    assert problems == []


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("def f(c):\n    c._deliver(b'x')\n", True),
        ("def f(s):\n    return s._connections\n", True),
        ("from ..asyncio.connection import _scratch_buffer\n", True),
        ("def f(c):\n    c.send(b'x')\n", False),
        # A private name of the package itself, even if asyncio has one too.
        ("class A:\n    def __init__(self):\n        self._deliver = 1\n", False),
    ],
)
def test_checker_private_uses(source: str, bad: bool) -> None:
    own = private_names_defined_in(source)
    assert bool(private_uses(source, {"_deliver", "_connections", "_x"}, own)) is bad


def private_names_defined_in(source: str) -> set[str]:
    path = Path(tempfile.mkdtemp()) / "m.py"
    path.write_text(source)
    return private_names_defined([path])
