"""The mechanical port (:func:`tests.compat.porting.rewrite_imports`) on its own."""

from __future__ import annotations

import ast
import textwrap

import pytest

from .porting import rewrite_imports


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (
            "from websockets.asyncio.server import serve\n",
            "from wsharbor.asyncio.server import serve\n",
        ),
        (
            "from websockets.asyncio.server import basic_auth as websockets_basic_auth, serve\n",
            "from wsharbor.asyncio.server import basic_auth as websockets_basic_auth, serve\n",
        ),
        ("from websockets import ConnectionClosed\n", "from wsharbor import ConnectionClosed\n"),
        ("import websockets\n", "import wsharbor as websockets\n"),
        ("import websockets as ws\n", "import wsharbor as ws\n"),
        ("import websockets.exceptions as exc\n", "import wsharbor.exceptions as exc\n"),
        (
            "import websockets.sync.client\n",
            "import wsharbor.sync.client, wsharbor as websockets\n",
        ),
        ("import json, websockets\n", "import json, wsharbor as websockets\n"),
        # Multi-line, parenthesized: one line afterwards.
        (
            "from websockets.exceptions import (\n    ConnectionClosed,\n    InvalidURI,\n)\n"
            "x = 1\n",
            "from wsharbor.exceptions import ConnectionClosed, InvalidURI\nx = 1\n",
        ),
        # Two statements on one line.
        (
            "import os; from websockets.frames import CloseCode; y = 2\n",
            "import os; from wsharbor.frames import CloseCode; y = 2\n",
        ),
    ],
)
def test_imports_are_rewritten(before: str, after: str) -> None:
    assert rewrite_imports(before) == after


@pytest.mark.parametrize(
    "source",
    [
        # Not imports: attribute access, strings, comments, look-alike names.
        "websockets.serve(handler)\n",
        'print("websockets")  # from websockets import serve\n',
        "websockets_basic_auth = basic_auth()\n",
        "from websocketsx import serve\nimport websockets_compat\n",
        "from . import websockets\nfrom .websockets import serve\n",
        "from mypackage.websockets import serve\n",
    ],
)
def test_everything_else_is_left_alone(source: str) -> None:
    assert rewrite_imports(source) == source


def test_nested_imports_and_the_rest_of_the_file() -> None:
    source = textwrap.dedent(
        '''\
        """Docstring naming websockets."""

        import asyncio

        async def main():
            try:
                from websockets.asyncio.client import connect
            except ImportError:  # websockets too old
                raise
            async with connect("ws://localhost:8765") as websocket:  # héllo
                await websocket.send("websockets")
        '''
    )
    result = rewrite_imports(source)
    assert result == source.replace(
        "from websockets.asyncio.client", "from wsharbor.asyncio.client"
    )
    ast.parse(result)


def test_invalid_source_raises_syntax_error() -> None:
    with pytest.raises(SyntaxError):
        rewrite_imports("from websockets import (\n")


def test_other_names() -> None:
    assert rewrite_imports("import aiohttp.web\n", "aiohttp", "x") == "import x.web, x as aiohttp\n"
