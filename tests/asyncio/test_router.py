"""wsharbor.asyncio.router: route(), unix_route(), Router, on a real server, with our
client, websockets' client and raw HTTP; and the same router program run under
websockets and under wsharbor, with the same observable behaviour."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
import websockets
from werkzeug.routing import Map, Rule

import wsharbor
from wsharbor.asyncio.router import Router, RouterConnection, route, unix_route
from wsharbor.asyncio.server import ServerConnection
from wsharbor.exceptions import InvalidStatus

from .conftest import HOST, PYTHON, http_exchange, port_of, subprocess_env, upgrade_request, wait

pytestmark = pytest.mark.timeout(60)


async def echo(websocket: ServerConnection, count: int) -> None:
    message = await websocket.recv()
    for _ in range(count):
        await websocket.send(message)


async def describe(websocket: ServerConnection, **params: Any) -> None:
    """Send the handler's parameters and the request path."""
    await websocket.send(repr(sorted(params.items())))
    await websocket.send(websocket.path)


def url_map() -> Map:
    return Map(
        [
            Rule("/echo", defaults={"count": 1}, endpoint=echo),
            Rule("/echo/<int:count>", endpoint=echo),
            Rule("/room/<uuid:room>/<name>", endpoint=describe),
            Rule("/dir/", endpoint=describe),
            Rule("/", endpoint=describe),
            Rule("/old", redirect_to="/room/00000000-0000-0000-0000-00000000002a/moved"),
            Rule("/post-only", endpoint=describe, methods=["POST"]),
        ]
    )


async def messages_of(client: Any) -> list[Any]:
    """Every message until the server closes."""
    return [message async for message in client]


def uri(server: wsharbor.Server, path: str) -> str:
    return f"ws://{HOST}:{port_of(server)}{path}"


# Matching and parameters.


async def test_parameters_and_defaults_with_our_client() -> None:
    async with route(url_map(), HOST, 0) as server:
        async with wsharbor.connect(uri(server, "/echo")) as client:
            await client.send("hello")
            assert await wait(messages_of(client)) == ["hello"]
        async with wsharbor.connect(uri(server, "/echo/3")) as client:
            await client.send("hello")
            assert await wait(messages_of(client)) == ["hello"] * 3
        room = uuid.UUID(int=42)
        async with wsharbor.connect(uri(server, f"/room/{room}/alice?x=1")) as client:
            assert await wait(messages_of(client)) == [
                repr([("name", "alice"), ("room", room)]),
                f"/room/{room}/alice?x=1",
            ]


async def test_parameters_with_websockets_client() -> None:
    async with route(url_map(), HOST, 0) as server:
        async with websockets.connect(uri(server, "/echo/2")) as client:
            await client.send(b"\x00\x01")
            assert await wait(messages_of(client)) == [b"\x00\x01"] * 2
        with pytest.raises(websockets.InvalidStatus) as raised:
            await wait(websockets.connect(uri(server, "/room/not-a-uuid/alice")))
        assert raised.value.response.status_code == 404


async def test_handler_gets_a_router_connection() -> None:
    seen: list[Any] = []

    async def handler(websocket: ServerConnection) -> None:
        seen.append((type(websocket), websocket.handler_kwargs))  # type: ignore[attr-defined]

    async with (
        route(Map([Rule("/", endpoint=handler)]), HOST, 0) as server,
        wsharbor.connect(uri(server, "/")) as client,
    ):
        await wait(client.wait_closed())
    assert seen == [(RouterConnection, {})]


# HTTP answers: 404, redirects, other werkzeug errors.


async def test_not_found() -> None:
    async with route(url_map(), HOST, 0) as server:
        with pytest.raises(InvalidStatus) as ours:
            await wait(wsharbor.connect(uri(server, "/nothing")))
        with pytest.raises(websockets.InvalidStatus) as theirs:
            await wait(websockets.connect(uri(server, "/nothing")))
        reply = await http_exchange(port_of(server), upgrade_request(port_of(server), "/nothing"))
    assert ours.value.response.status == theirs.value.response.status_code == 404
    assert str(ours.value) == "server rejected WebSocket connection: HTTP 404"
    assert (reply.status, reply.body) == (404, b"Not Found\n")
    assert reply.headers["Server"].startswith("wsharbor/")


async def test_redirect_rule() -> None:
    target = "/room/00000000-0000-0000-0000-00000000002a/moved"
    async with route(url_map(), HOST, 0) as server:
        port = port_of(server)
        # websockets' client follows it.
        async with websockets.connect(uri(server, "/old")) as client:
            messages = await wait(messages_of(client))
        assert messages[1] == target
        # The response itself: 302 with the ws:// URI built from the Host header.
        reply = await http_exchange(port, upgrade_request(port, "/old"))
        assert reply.status == 302
        assert reply.headers["Location"] == f"ws://{HOST}:{port}{target}"
        assert reply.body == f"Found at ws://{HOST}:{port}{target}\n".encode()


async def test_strict_slashes_redirect() -> None:
    async with route(url_map(), HOST, 0) as server:
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port, "/dir?a=b"))
        assert reply.status == 302
        assert reply.headers["Location"] == f"ws://{HOST}:{port}/dir/?a=b"
        async with websockets.connect(uri(server, "/dir")) as client:
            assert await wait(messages_of(client)) == ["[]", "/dir/"]


async def test_redirect_with_server_name_and_ssl_true() -> None:
    async with route(url_map(), HOST, 0, server_name="chat.example", ssl=True) as server:
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port, "/old"))
        # ssl=True only changes the scheme: the server itself speaks plain TCP.
        assert reply.headers["Location"] == (
            "wss://chat.example/room/00000000-0000-0000-0000-00000000002a/moved"
        )


async def test_redirect_with_tls() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with route(url_map(), HOST, 0, ssl=server_context) as server:
        port = port_of(server)
        # websockets' client refuses a redirect from wss:// to ws://: it
        # follows this one, so the Location is wss://.
        async with websockets.connect(f"wss://{HOST}:{port}/old", ssl=client_context) as client:
            messages = await wait(messages_of(client))
        assert messages[1].endswith("/moved")
        # Our client over TLS: parameters as over TCP.
        async with wsharbor.connect(f"wss://{HOST}:{port}/echo/2", ssl=client_context) as client:
            await client.send("tls")
            assert await wait(messages_of(client)) == ["tls", "tls"]


async def test_other_werkzeug_errors_get_their_status() -> None:
    async with route(url_map(), HOST, 0) as server:
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port, "/post-only"))
    assert (reply.status, reply.body) == (405, b"Method Not Allowed\n")


async def test_plain_http_is_routed_then_rejected_by_the_handshake() -> None:
    async with route(url_map(), HOST, 0) as server:
        port = port_of(server)
        reply = await http_exchange(
            port, f"GET /echo HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
        )
        missing = await http_exchange(
            port, f"GET /missing HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
        )
    # The matched path goes on to the handshake, which rejects a request
    # without Upgrade; an unmatched path is a 404 first.
    assert (reply.status, reply.body) == (426, b"missing Upgrade header\n")
    assert missing.status == 404


# process_request, create_router, create_connection, unix_route.


ProcessRequest = Callable[[ServerConnection, Any], Any]


def _forbid_sync(connection: ServerConnection, request: Any) -> Any:
    if request.path == "/":
        return connection.respond(403, "Forbidden")
    return None


async def _forbid_async(connection: ServerConnection, request: Any) -> Any:
    await asyncio.sleep(0)
    return _forbid_sync(connection, request)


def _forbid_legacy(path: str, request_headers: Any) -> Any:
    if path == "/":
        return (403, [], b"Forbidden\n")
    return None


@pytest.mark.parametrize("hook", [_forbid_sync, _forbid_async, _forbid_legacy])
async def test_process_request_runs_before_routing(hook: ProcessRequest) -> None:
    async with route(url_map(), HOST, 0, process_request=hook) as server:
        port = port_of(server)
        forbidden = await http_exchange(port, upgrade_request(port, "/"))
        missing = await http_exchange(port, upgrade_request(port, "/missing"))
        async with wsharbor.connect(uri(server, "/echo/2")) as client:
            await client.send("ok")
            assert await wait(messages_of(client)) == ["ok", "ok"]
    assert forbidden.status == 403
    assert missing.status == 404


async def test_custom_router() -> None:
    class MyRouter(Router):
        def not_found(self, connection: ServerConnection) -> Any:
            return connection.respond(410, "Gone for good")

        async def handler(self, connection: ServerConnection) -> None:
            await connection.send("routed by MyRouter")
            await super().handler(connection)

    async with route(url_map(), HOST, 0, create_router=MyRouter) as server:
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port, "/missing"))
        async with wsharbor.connect(uri(server, "/echo")) as client:
            await client.send("x")
            assert await wait(messages_of(client)) == ["routed by MyRouter", "x"]
    assert (reply.status, reply.body) == (410, b"Gone for good\n")


async def test_any_connection_class_can_be_routed() -> None:
    """Connections take attributes (a ``__dict__``): one that isn't a
    RouterConnection keeps the match there, as in websockets."""

    class Plain(ServerConnection):
        __slots__ = ()

    async with route(url_map(), HOST, 0, create_connection=Plain) as server:
        uri = f"ws://{HOST}:{port_of(server)}/echo/2"
        async with wsharbor.connect(uri) as client:
            await client.send("hi")
            assert await wait(messages_of(client)) == ["hi", "hi"]


async def test_unix_route(tmp_path: Path) -> None:
    path = str(tmp_path / "router.sock")
    async with unix_route(url_map(), path):
        async with wsharbor.unix_connect(path, "ws://localhost/echo/2") as client:
            await client.send("hi")
            assert await wait(messages_of(client)) == ["hi", "hi"]
        async with websockets.unix_connect(path, "ws://localhost/echo/3") as client:
            await client.send("hi")
            assert await wait(messages_of(client)) == ["hi"] * 3


def test_import_without_werkzeug_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['werkzeug'] = None\n"
        "try:\n"
        "    import wsharbor.asyncio.router\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [PYTHON, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout.strip() == (
        "wsharbor.asyncio.router needs werkzeug: pip install 'wsharbor[router]'"
    )


# The same program under websockets and under wsharbor.

#: A router program as websockets' docs write one (experiments/routing.py's
#: shape): converters, defaults, a redirect, parameters as keyword arguments.
PROGRAM = """
import datetime

from websockets.asyncio.router import route
from websockets.exceptions import ConnectionClosed
from werkzeug.routing import BaseConverter, Map, Rule, ValidationError


class TimeDeltaConverter(BaseConverter):
    regex = r"[0-9]{2}:[0-9]{2}:[0-9]{2}"

    def to_python(self, value):
        hours, minutes, seconds = (int(part) for part in value.split(":"))
        if minutes >= 60 or seconds >= 60:
            raise ValidationError
        return datetime.timedelta(hours=hours, minutes=minutes, seconds=seconds)

    def to_url(self, value):
        return str(value)


async def clock(websocket, tz):
    await websocket.send(f"clock in {tz}")


async def timer(websocket, after):
    await websocket.send(f"timer {after.total_seconds():.0f}")
    try:
        async for message in websocket:
            await websocket.send(message.upper())
    except ConnectionClosed:
        pass


async def room(websocket, room_id, page):
    await websocket.send(f"room {room_id} page {page} path {websocket.request.path}")


url_map = Map(
    [
        Rule("/", redirect_to="/clock"),
        Rule("/clock", defaults={"tz": "UTC"}, endpoint=clock),
        Rule("/clock/<tz>", endpoint=clock),
        Rule("/timer/<timedelta:after>", endpoint=timer),
        Rule("/room/<int:room_id>/", defaults={"page": 1}, endpoint=room),
        Rule("/room/<int:room_id>/<int:page>", endpoint=room),
    ],
    converters={"timedelta": TimeDeltaConverter},
)


async def serve(host, port):
    return await route(url_map, host, port)
"""

PATHS = [
    "/",
    "/clock",
    "/clock/Europe",
    "/timer/00:01:30",
    "/timer/00:99:00",
    "/room/7/",
    "/room/7",
    "/room/7/3?q=1",
    "/room/x/",
    "/nothing",
]


def load_program(package: str) -> dict[str, Any]:
    """Run PROGRAM's module code with its imports written for ``package``."""
    source = re.sub(r"\bwebsockets\b", package, PROGRAM)
    namespace: dict[str, Any] = {"__name__": f"router_program_{package}"}
    exec(compile(source, f"<router program for {package}>", "exec"), namespace)
    return namespace


async def response_head(port: int, path: str) -> tuple[int, str | None]:
    """The status and Location of the response to an upgrade request (101 included)."""
    reader, writer = await wait(asyncio.open_connection(HOST, port))
    try:
        writer.write(upgrade_request(port, path))
        head = (await wait(reader.readuntil(b"\r\n\r\n"))).decode("latin-1")
    finally:
        writer.transport.abort()
    status = int(head.split(" ", 2)[1])
    match = re.search(r"(?im)^Location: *(.*?)\r$", head)
    return status, None if match is None else match.group(1)


async def transcript(serve: Callable[[str, int], Awaitable[Any]]) -> list[Any]:
    """What a client sees of the program: per path, the messages, or the HTTP
    status and the redirect's path; a raw request's status and Location too."""
    server = await serve(HOST, 0)
    try:
        port = server.sockets[0].getsockname()[1]
        seen: list[Any] = []
        for path in PATHS:
            status, location = await response_head(port, path)
            if location is not None:
                location = location.replace(str(port), "PORT")
            seen.append((path, status, location))
            try:
                async with websockets.connect(f"ws://{HOST}:{port}{path}") as client:
                    if path.startswith("/timer"):
                        first = await wait(client.recv())
                        await client.send("go")
                        seen.append((path, first, await wait(client.recv())))
                    else:
                        seen.append((path, await wait(messages_of(client))))
                seen.append((path, "close", client.close_code))
            except websockets.InvalidStatus as exc:
                seen.append((path, "status", exc.response.status_code))
        return seen
    finally:
        server.close()
        await wait(server.wait_closed())


async def test_same_program_same_behaviour_under_both() -> None:
    theirs = await transcript(load_program("websockets")["serve"])
    ours = await transcript(load_program("wsharbor")["serve"])
    assert ours == theirs
    # And the transcript is what the program means.
    assert ("/", 302, "ws://127.0.0.1:PORT/clock") in ours
    assert ("/clock", ["clock in UTC"]) in ours
    assert ("/timer/00:01:30", "timer 90", "GO") in ours
    assert ("/timer/00:99:00", "status", 404) in ours
    assert ("/room/7", 302, "ws://127.0.0.1:PORT/room/7/") in ours
    assert ("/room/7/3?q=1", ["room 7 page 3 path /room/7/3?q=1"]) in ours
    assert ("/nothing", 404, None) in ours
