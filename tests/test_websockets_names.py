"""websockets 17's module layout and names exist in wsharbor (issue 10, item 1).

Compared with the websockets installed as a test dependency: a name websockets
adds in a later release makes this test fail until we decide about it. Names
we don't implement on purpose are listed here, with where the decision is
written (``docs/coming-from-websockets.md``).
"""

from __future__ import annotations

import importlib
import inspect

import pytest
import websockets
import websockets.exceptions

import wsharbor
import wsharbor.exceptions

#: Top-level names of websockets we don't export (yet), and why.
NOT_AT_TOP_LEVEL = {
    # The router is another piece of work (issue 10, item 5).
    "Router",
    "route",
    "unix_route",
    # websockets' sans-I/O classes: ours are shaped differently
    # (wsharbor.protocol.handshake.ClientHandshake / ServerHandshake,
    # wsharbor.protocol.connection.WebSocketProtocol).
    "ClientProtocol",
    "Protocol",
    "ServerProtocol",
}

MODULES = [
    # (websockets module, wsharbor module, names not ported)
    ("websockets.exceptions", "wsharbor.exceptions", set()),
    ("websockets.datastructures", "wsharbor.datastructures", set()),
    ("websockets.http11", "wsharbor.http11", set()),
    ("websockets.frames", "wsharbor.frames", set()),
    ("websockets.typing", "wsharbor.typing", set()),
    ("websockets.asyncio.server", "wsharbor.asyncio.server", set()),
    ("websockets.asyncio.client", "wsharbor.asyncio.client", set()),
    ("websockets.sync.client", "wsharbor.sync.client", set()),
    ("websockets.sync.server", "wsharbor.sync.server", set()),
]


def test_top_level_names() -> None:
    missing = set(websockets.__all__) - set(wsharbor.__all__)
    assert missing == NOT_AT_TOP_LEVEL
    for name in set(websockets.__all__) - NOT_AT_TOP_LEVEL:
        assert getattr(wsharbor, name) is not None, name


@pytest.mark.parametrize(("theirs", "ours", "not_ported"), MODULES)
def test_module_names(theirs: str, ours: str, not_ported: set[str]) -> None:
    their_module = importlib.import_module(theirs)
    our_module = importlib.import_module(ours)
    missing = set(their_module.__all__) - set(our_module.__all__)
    assert missing == not_ported
    for name in their_module.__all__:
        if name not in not_ported:
            assert hasattr(our_module, name), (ours, name)


def test_protocol_state_and_side() -> None:
    from wsharbor.protocol import Side, State

    assert [state.name for state in State] == [state.name for state in websockets.protocol.State]
    assert {side.name for side in Side} == {side.name for side in websockets.protocol.Side}


def hierarchy(module: object, name: str) -> set[str]:
    """The names of the module's exception classes that ``name`` is a subclass of."""
    cls = getattr(module, name)
    exceptions = {
        other: getattr(module, other)
        for other in module.__all__  # type: ignore[attr-defined]
        if inspect.isclass(getattr(module, other))
    }
    return {other for other, base in exceptions.items() if issubclass(cls, base)}


@pytest.mark.parametrize("name", websockets.exceptions.__all__)
def test_except_clauses_catch_what_they_catch_in_websockets(name: str) -> None:
    """For each exception class, every websockets base class of it is a base
    class of ours: ``except <websockets name>`` catches it in both."""
    theirs = hierarchy(websockets.exceptions, name)
    ours = hierarchy(wsharbor.exceptions, name)
    assert theirs <= ours, theirs - ours


def test_connection_closed_and_concurrency_error_roots() -> None:
    assert wsharbor.exceptions.WebSocketException is wsharbor.exceptions.WsharborError
    assert issubclass(wsharbor.exceptions.ConcurrencyError, RuntimeError)
    assert issubclass(wsharbor.exceptions.InvalidState, AssertionError)
    assert wsharbor.exceptions.InvalidProtocol is wsharbor.exceptions.InvalidHTTPVersion
