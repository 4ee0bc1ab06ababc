"""The porting test (issue 10, item 10): websockets' own programs run unchanged.

Each program of ``programs/`` (taken from websockets' docs and examples, see
``programs/README.md``) runs in a subprocess twice: under websockets as
written, then under wsharbor with its imports rewritten by
:func:`~tests.compat.porting.rewrite_imports`. Its fixed port is replaced by a
free one. A real peer talks to it, websockets' own client or server, the same
both times, and records what it observes: messages, close codes and reasons,
HTTP statuses, the headers that matter, the program's output and exit status.
Both records must be equal, and equal to what websockets' docs say the program
does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import ServerConnection as WsServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .porting import rewrite_imports

pytestmark = pytest.mark.timeout(90)

PROGRAMS = Path(__file__).parent / "programs"
LIBRARIES = ("websockets", "wsharbor")
HOST = "127.0.0.1"
#: Deadline for anything expected soon (a program starting, a message).
TIMEOUT = 10.0


async def wait(aw: Awaitable[Any], timeout: float = TIMEOUT) -> Any:
    return await asyncio.wait_for(aw, timeout)


def free_port() -> int:
    """A port free on 127.0.0.1 now (the program binds it a moment later;
    :func:`serve_program` retries if another process took it meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def environment() -> dict[str, str]:
    """The test's environment, unbuffered, without proxies (clients read them)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Program:
    """One program of ``programs/`` in a subprocess, under one library.

    ``ports`` maps each port literal of the program to the port it gets; the
    output is mapped back, so that both runs print the same.
    """

    def __init__(self, name: str, library: str, tmp_path: Path, ports: dict[int, int]) -> None:
        source_path = PROGRAMS / name
        workdir = tmp_path / f"{library}-{'-'.join(map(str, ports.values()))}"
        if source_path.parent != PROGRAMS:  # a program with files beside it
            shutil.copytree(source_path.parent, workdir)
        else:
            workdir.mkdir()
        source = source_path.read_text()
        if library == "wsharbor":
            source = rewrite_imports(source)
            assert "websockets." not in "".join(
                line for line in source.splitlines() if line.lstrip().startswith(("from", "import"))
            )
        for old, new in ports.items():
            source = re.sub(rf"\b{old}\b", str(new), source)
        self.path = workdir / source_path.name
        self.path.write_text(source)
        self.ports = ports
        self.proc: asyncio.subprocess.Process | None = None
        self.stdout = ""
        self.stderr = ""

    async def start(self, stdin: bytes | None = None) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            self.path.name,
            cwd=self.path.parent,
            env=environment(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdin is not None
        if stdin is not None:
            self.proc.stdin.write(stdin)
        self.proc.stdin.close()

    async def wait_listening(self, port: int) -> None:
        """Return once ``port`` accepts connections; fail if the program exits first."""
        assert self.proc is not None
        async with asyncio.timeout(TIMEOUT):
            while True:
                try:
                    _, writer = await asyncio.open_connection(HOST, port)
                except OSError:
                    # Not listening yet: wait for the program to exit, briefly.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(self.proc.wait()), 0.05)
                    if self.proc.returncode is not None:
                        await self.finish()
                        raise ProgramExited(self.stderr) from None
                else:
                    writer.close()
                    return

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def finish(self, sig: int | None = None) -> int:
        """Send ``sig`` if given, wait for the exit; return the exit status."""
        assert self.proc is not None
        if sig is not None and self.proc.returncode is None:
            self.proc.send_signal(sig)
        stdout, stderr = await wait(self.proc.communicate())
        self.stdout, self.stderr = self.unmap(stdout.decode()), self.unmap(stderr.decode())
        assert self.proc.returncode is not None
        return self.proc.returncode

    def unmap(self, text: str) -> str:
        for old, new in self.ports.items():
            text = text.replace(str(new), str(old))
        return text

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


class ProgramExited(Exception):
    pass


@contextlib.asynccontextmanager
async def serve_program(
    name: str, library: str, tmp_path: Path, ports: list[int]
) -> AsyncIterator[tuple[Program, dict[int, int]]]:
    """Start a server program on free ports; yield it once every port listens."""
    for attempt in range(3):
        mapping = {port: free_port() for port in ports}
        program = Program(name, library, tmp_path, mapping)
        await program.start()
        try:
            for port in mapping.values():
                await program.wait_listening(port)
        except ProgramExited as exc:
            if "address already in use" in str(exc).lower() and attempt < 2:
                continue  # another process took the port meanwhile
            raise
        break
    try:
        yield program, mapping
    finally:
        program.kill()
        if program.proc is not None:
            await wait(program.proc.wait())


@contextlib.asynccontextmanager
async def client_program(
    name: str, library: str, tmp_path: Path, peer_port: int, *, stdin: bytes | None = None
) -> AsyncIterator[Program]:
    """Start a client program connecting to the peer listening on ``peer_port``."""
    program = Program(name, library, tmp_path, {8765: peer_port})
    await program.start(stdin)
    try:
        yield program
    finally:
        program.kill()
        if program.proc is not None:
            await wait(program.proc.wait())


async def http_get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP/1.1 GET, read to EOF: status, headers (lower-case names), body."""
    reader, writer = await wait(asyncio.open_connection(HOST, port))
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    try:
        raw = await wait(reader.read())
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in header_lines:
        field, _, value = line.partition(":")
        fields[field.strip().lower()] = value.strip()
    if "content-length" in fields:
        assert int(fields["content-length"]) == len(body), raw
    return int(status_line.split()[1]), fields, body


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec_WebSocket_Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec_WebSocket_Version": "13",
}


def only(fields: dict[str, str], *names: str) -> dict[str, str | None]:
    """The headers that matter to a client, by name."""
    return {name: fields.get(name) for name in names}


async def rejected(uri: str, **kwargs: Any) -> tuple[int, dict[str, str | None], bytes]:
    """Connect with websockets' client, expecting an HTTP answer other than 101."""
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(uri, open_timeout=TIMEOUT, **kwargs):
            pass
    response = info.value.response
    headers = {k.lower(): v for k, v in response.headers.raw_items()}
    return response.status_code, only(headers, "content-type", "www-authenticate"), response.body


# The scenarios: each returns what the peer observed.

Scenario = Callable[[str, Path], Awaitable[Any]]


async def echo_scenario(name: str, library: str, tmp_path: Path) -> Any:
    async with serve_program(name, library, tmp_path, [8765]) as (program, ports):
        async with ws_connect(f"ws://{HOST}:{ports[8765]}/") as ws:
            got = []
            for message in ["héllo", b"\x00\xff", ["frag", "mented"]]:
                await ws.send(message)
                got.append(await wait(ws.recv()))
        got.append(ws.close_code)
        rc = await program.finish(signal.SIGTERM)
    return {"messages": got, "rc": rc, "stdout": program.stdout}


async def scenario_echo(library: str, tmp_path: Path) -> Any:
    return await echo_scenario("echo.py", library, tmp_path)


async def scenario_sync_echo(library: str, tmp_path: Path) -> Any:
    return await echo_scenario("sync_echo.py", library, tmp_path)


EXPECTED_ECHO = {
    "messages": ["héllo", b"\x00\xff", "fragmented", 1000],
    "rc": -signal.SIGTERM,
    "stdout": "",
}


class Peer:
    """websockets' server as the peer of a client program: it runs ``body`` for
    each connection and records the close code and reason it received."""

    def __init__(self, body: Callable[[WsServerConnection, int], Awaitable[None]]) -> None:
        self.body = body
        self.connections = 0
        self.closes: list[tuple[int | None, str | None]] = []

    async def handler(self, ws: WsServerConnection) -> None:
        self.connections += 1
        try:
            await self.body(ws, self.connections)
        finally:
            await ws.wait_closed()
            # When the peer closed first, what it received is the client's
            # echo, whose reason differs on purpose (docs/coming-from-
            # websockets.md: we echo the code only): not compared.
            echo = ws.protocol.close_rcvd_then_sent is False
            self.closes.append((ws.close_code, "(echo)" if echo else ws.close_reason))


async def hello_peer(ws: WsServerConnection, _: int) -> None:
    """Greet by name, as websockets' example/asyncio/server.py."""
    with contextlib.suppress(ConnectionClosed):
        name = await ws.recv()
        await ws.send(f"Hello {name}!")
        await ws.wait_closed()


async def echo_peer(ws: WsServerConnection, _: int) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            await ws.send(message)


async def client_scenario(
    name: str, library: str, tmp_path: Path, peer: Peer, stdin: bytes | None = None
) -> Any:
    async with ws_serve(peer.handler, HOST, 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with client_program(name, library, tmp_path, port, stdin=stdin) as program:
            rc = await program.finish()
    return {
        "rc": rc,
        "stdout": program.stdout,
        "stderr": program.stderr,
        "connections": peer.connections,
        "closes": peer.closes,
    }


async def scenario_hello(library: str, tmp_path: Path) -> Any:
    return await client_scenario("hello.py", library, tmp_path, Peer(echo_peer))


EXPECTED_HELLO = {
    "rc": 0,
    "stdout": "Hello world!\n",
    "stderr": "",
    "connections": 1,
    "closes": [(1000, "")],
}


async def scenario_sync_client(library: str, tmp_path: Path) -> Any:
    return await client_scenario(
        "sync_client.py", library, tmp_path, Peer(hello_peer), stdin=b"Alice\n"
    )


EXPECTED_SYNC_CLIENT = {
    "rc": 0,
    "stdout": "What's your name? >>> Alice\n<<< Hello Alice!\n",
    "stderr": "",
    "connections": 1,
    "closes": [(1000, "")],
}


async def scenario_hello_server(library: str, tmp_path: Path) -> Any:
    async with serve_program("hello_server.py", library, tmp_path, [8765]) as (program, ports):
        async with ws_connect(f"ws://{HOST}:{ports[8765]}/") as ws:
            await ws.send("Alice")
            greeting = await wait(ws.recv())
            with pytest.raises(ConnectionClosed):
                await wait(ws.recv())  # the handler returned
        rc = await program.finish(signal.SIGTERM)
    return {
        "greeting": greeting,
        "close": (ws.close_code, ws.close_reason),
        "rc": rc,
        "stdout": program.stdout,
    }


EXPECTED_HELLO_SERVER = {
    "greeting": "Hello Alice!",
    "close": (1000, ""),
    "rc": -signal.SIGTERM,
    "stdout": "<<< Alice\n>>> Hello Alice!\n",
}


async def scenario_reconnecting_client(library: str, tmp_path: Path) -> Any:
    async def body(ws: WsServerConnection, number: int) -> None:
        if number == 1:
            await ws.send("one")
            await ws.close(1011, "oops")  # an error: ConnectionClosedError
        elif number == 2:
            await ws.send("two")
            await ws.close(1001)  # going away: the loop ends quietly
        else:
            await ws.send("stop")

    observed = await client_scenario("reconnecting_client.py", library, tmp_path, Peer(body))
    # The program returns from inside its loop: the last connection is closed
    # when asyncio.run() finalizes the iterator, with 1011 or 1000 depending
    # on when that happens (in websockets as in wsharbor): not compared.
    observed["closes"] = observed["closes"][:2]
    return observed


EXPECTED_RECONNECTING_CLIENT = {
    "rc": 0,
    "stdout": "one\ntwo\nstop\n",
    "stderr": "",
    "connections": 3,
    "closes": [(1011, "(echo)"), (1001, "(echo)")],
}


async def scenario_counter(library: str, tmp_path: Path) -> Any:
    async with serve_program("counter.py", library, tmp_path, [6789]) as (program, ports):
        uri = f"ws://{HOST}:{ports[6789]}/"
        seen: dict[str, list[Any]] = {"a": [], "b": []}

        async def recv(ws: Any, who: str, count: int) -> None:
            for _ in range(count):
                seen[who].append(json.loads(await wait(ws.recv())))

        async with ws_connect(uri) as a:
            await recv(a, "a", 2)  # users 1, value 0
            async with ws_connect(uri) as b:
                await recv(b, "b", 2)  # users 2, value 0
                await recv(a, "a", 1)  # users 2
                await a.send(json.dumps({"action": "plus"}))
                await recv(a, "a", 1)
                await recv(b, "b", 1)
                await b.send(json.dumps({"action": "minus"}))
                await recv(a, "a", 1)
                await recv(b, "b", 1)
                await a.send(json.dumps({"action": "nope"}))  # logged, nothing sent
                await a.send(json.dumps({"action": "plus"}))
                await recv(a, "a", 1)
                await recv(b, "b", 1)
            await recv(a, "a", 1)  # users 1
        rc = await program.finish(signal.SIGTERM)
    return {"seen": seen, "rc": rc, "stdout": program.stdout, "stderr": program.stderr}


def users(count: int) -> dict[str, Any]:
    return {"type": "users", "count": count}


def value(count: int) -> dict[str, Any]:
    return {"type": "value", "value": count}


EXPECTED_COUNTER = {
    "seen": {
        "a": [users(1), value(0), users(2), value(1), value(0), value(1), users(1)],
        "b": [users(2), value(0), value(1), value(0), value(1)],
    },
    "rc": -signal.SIGTERM,
    "stdout": "",
    "stderr": "ERROR:root:unsupported event: {'action': 'nope'}\n",
}


async def scenario_health_check_server(library: str, tmp_path: Path) -> Any:
    async with serve_program("health_check_server.py", library, tmp_path, [8765]) as (
        program,
        ports,
    ):
        port = ports[8765]
        status, fields, body = await http_get(port, "/healthz")
        health = (status, only(fields, "content-type", "connection"), body)
        # Not a health check, not an upgrade: no WebSocket handshake possible.
        status, fields, _ = await http_get(port, "/")
        plain = (status, only(fields, "upgrade", "connection", "content-type"))
        # A WebSocket client asking for /healthz gets the health check's answer.
        upgrade_to_health = await rejected(f"ws://{HOST}:{port}/healthz")
        async with ws_connect(f"ws://{HOST}:{port}/") as ws:
            await ws.send("ping")
            echo = await wait(ws.recv())
        rc = await program.finish(signal.SIGTERM)
    return {
        "health": health,
        "plain": plain,
        "upgrade_to_health": upgrade_to_health,
        "echo": echo,
        "rc": rc,
    }


EXPECTED_HEALTH_CHECK_SERVER = {
    "health": (200, {"content-type": "text/plain; charset=utf-8", "connection": "close"}, b"OK\n"),
    "plain": (
        426,
        {
            "upgrade": "websocket",
            "connection": "close",
            "content-type": "text/plain; charset=utf-8",
        },
    ),
    "upgrade_to_health": (
        200,
        {"content-type": "text/plain; charset=utf-8", "www-authenticate": None},
        b"OK\n",
    ),
    "echo": "ping",
    "rc": -signal.SIGTERM,
}


async def scenario_authentication(library: str, tmp_path: Path) -> Any:
    ports_used = [8000, 8001, 8002, 8003, 8004]
    async with serve_program("authentication/app.py", library, tmp_path, ports_used) as (
        program,
        ports,
    ):
        http, first, query, cookie, basic = (ports[p] for p in ports_used)
        seen: dict[str, Any] = {}

        async def token(user: str = "alice") -> str:
            """A token from the HTML page, valid for one second."""
            status, fields, body = await http_get(http, f"/?user={user}")
            assert status == 200 and fields["content-type"] == "text/html; charset=utf-8"
            match = re.search(rb'data-token="([0-9a-f]{32})"', body)
            assert match is not None, body
            return match.group(1).decode()

        async def hello_goodbye(ws: Any) -> tuple[Any, ...]:
            greeting = await wait(ws.recv())
            await ws.send(greeting.replace("Hello", "Goodbye").replace("!", "."))
            with pytest.raises(ConnectionClosed):
                await wait(ws.recv())
            return greeting, ws.close_code, ws.close_reason

        status, _, body = await http_get(http, "/")
        seen["index"] = status, b'<input name="user"' in body
        status, fields, body = await http_get(http, "/missing.html")
        seen["missing"] = status, fields.get("content-type"), body

        # First message.
        async with ws_connect(f"ws://{HOST}:{first}/") as ws:
            await ws.send(await token())
            seen["first_message"] = await hello_goodbye(ws)
        async with ws_connect(f"ws://{HOST}:{first}/") as ws:
            await ws.send("not a token")
            with pytest.raises(ConnectionClosed):
                await wait(ws.recv())
            seen["first_message_bad"] = ws.close_code, ws.close_reason

        # Query parameter.
        async with ws_connect(f"ws://{HOST}:{query}/?token={await token()}") as ws:
            seen["query_param"] = await hello_goodbye(ws)
        seen["query_param_missing"] = await rejected(f"ws://{HOST}:{query}/")
        seen["query_param_bad"] = await rejected(f"ws://{HOST}:{query}/?token=abc")

        # Cookie.
        headers = {"Cookie": f"token={await token()}"}
        async with ws_connect(f"ws://{HOST}:{cookie}/", additional_headers=headers) as ws:
            seen["cookie"] = await hello_goodbye(ws)
        seen["cookie_missing"] = await rejected(
            f"ws://{HOST}:{cookie}/", additional_headers={"Cookie": "other=1"}
        )

        # HTTP Basic Auth (basic_auth with check_credentials).
        async with ws_connect(f"ws://alice:{await token()}@{HOST}:{basic}/") as ws:
            seen["basic_auth"] = await hello_goodbye(ws)
        seen["basic_auth_bad"] = await rejected(f"ws://alice:wrong@{HOST}:{basic}/")
        seen["basic_auth_missing"] = await rejected(f"ws://{HOST}:{basic}/")

        seen["rc"] = await program.finish(signal.SIGTERM)
        seen["stdout"] = program.stdout
    return seen


def unauthorized(body: bytes, www_authenticate: str | None = None) -> Any:
    return (
        401,
        {"content-type": "text/plain; charset=utf-8", "www-authenticate": www_authenticate},
        body,
    )


EXPECTED_AUTHENTICATION = {
    "index": (200, True),
    "missing": (404, "text/plain; charset=utf-8", b"Not found\n"),
    "first_message": ("Hello alice!", 1000, ""),
    "first_message_bad": (1011, "authentication failed"),
    "query_param": ("Hello alice!", 1000, ""),
    "query_param_missing": unauthorized(b"Missing token\n"),
    "query_param_bad": unauthorized(b"Invalid token\n"),
    "cookie": ("Hello alice!", 1000, ""),
    "cookie_missing": unauthorized(b"Missing token\n"),
    "basic_auth": ("Hello alice!", 1000, ""),
    "basic_auth_bad": unauthorized(b"Invalid credentials\n", 'Basic realm="", charset="UTF-8"'),
    "basic_auth_missing": unauthorized(b"Missing credentials\n", 'Basic realm="", charset="UTF-8"'),
    "rc": 0,
    "stdout": "Running on http://localhost:8000/\n\rExiting\n",
}


async def scenario_routing(library: str, tmp_path: Path) -> Any:
    async with serve_program("routing.py", library, tmp_path, [8888]) as (program, ports):
        port = ports[8888]
        uri = f"ws://{HOST}:{port}"
        seen: dict[str, Any] = {}
        iso = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"

        async with ws_connect(uri + "/alarm/2020-01-01T00:00:00/UTC") as ws:
            seen["alarm"] = await wait(ws.recv())
            with pytest.raises(ConnectionClosed):
                await wait(ws.recv())
            seen["alarm_close"] = ws.close_code
        async with ws_connect(uri + "/clock/Europe/Paris") as ws:
            seen["clock_paris"] = bool(re.fullmatch(iso + r"\+0[12]:00", await wait(ws.recv())))
        # "/" redirects to "/clock"; websockets' client follows it.
        async with ws_connect(uri + "/") as ws:
            seen["redirected"] = bool(re.fullmatch(iso + r"\+00:00", await wait(ws.recv())))
        status, fields, _ = await http_get(port, "/", **UPGRADE)
        seen["redirect"] = status, fields.get("location", "").replace(str(port), "PORT")
        seen["not_found"] = (await rejected(uri + "/nope"))[0]
        seen["bad_zone"] = (await rejected(uri + "/clock/Not_A_Zone"))[0]
        async with ws_connect(uri + "/timer/00:00:01") as ws:
            messages = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    messages.append(await wait(ws.recv()))
            seen["timer"] = (
                len(messages) >= 1 and all(re.fullmatch(r"\d\d:\d\d:\d\d", m) for m in messages),
                ws.close_code,
            )
        seen["rc"] = await program.finish(signal.SIGTERM)
    return seen


EXPECTED_ROUTING = {
    "alarm": "2020-01-01T00:00:00+00:00",
    "alarm_close": 1000,
    "clock_paris": True,
    "redirected": True,
    "redirect": (302, f"ws://{HOST}:PORT/clock"),
    "not_found": 404,
    "bad_zone": 404,
    "timer": (True, 1000),
    "rc": -signal.SIGTERM,
}


async def scenario_shutdown_server(library: str, tmp_path: Path) -> Any:
    async with serve_program("shutdown_server.py", library, tmp_path, [8765]) as (
        program,
        ports,
    ):
        async with ws_connect(f"ws://{HOST}:{ports[8765]}/") as ws:
            await ws.send("ignored")
            await wait(ws.ping())  # the server is past serve(): its handler is in
            program.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                await wait(ws.recv())
        rc = await program.finish()
    return {
        "close": (ws.close_code, ws.close_reason),
        "rc": rc,
        "stdout": program.stdout,
        "stderr": program.stderr,
    }


EXPECTED_SHUTDOWN_SERVER = {"close": (1001, ""), "rc": 0, "stdout": "", "stderr": ""}


async def scenario_shutdown_client(library: str, tmp_path: Path) -> Any:
    connected = asyncio.Event()

    async def body(ws: WsServerConnection, _: int) -> None:
        # The program installs its SIGTERM handler once connect() returns,
        # a few event loop iterations after the handshake response (a library
        # may chain futures). Each ping is sent after the previous pong came,
        # so the client processes it in a later iteration: after five round
        # trips, the program is past connect() and handles SIGTERM.
        for _ in range(5):
            await wait(await ws.ping())
        connected.set()

    peer = Peer(body)
    async with ws_serve(peer.handler, HOST, 0) as server:
        port = server.sockets[0].getsockname()[1]
        async with client_program("shutdown_client.py", library, tmp_path, port) as program:
            await wait(connected.wait())
            rc = await program.finish(signal.SIGTERM)
    return {
        "rc": rc,
        "stdout": program.stdout,
        "stderr": program.stderr,
        "connections": peer.connections,
        "closes": peer.closes,
    }


EXPECTED_SHUTDOWN_CLIENT = {
    "rc": 0,
    "stdout": "",
    "stderr": "",
    "connections": 1,
    "closes": [(1000, "")],
}


SCENARIOS: dict[str, tuple[Callable[[str, Path], Awaitable[Any]], Any]] = {
    "echo": (scenario_echo, EXPECTED_ECHO),
    "hello": (scenario_hello, EXPECTED_HELLO),
    "hello_server": (scenario_hello_server, EXPECTED_HELLO_SERVER),
    "counter": (scenario_counter, EXPECTED_COUNTER),
    "health_check_server": (scenario_health_check_server, EXPECTED_HEALTH_CHECK_SERVER),
    "authentication": (scenario_authentication, EXPECTED_AUTHENTICATION),
    "reconnecting_client": (scenario_reconnecting_client, EXPECTED_RECONNECTING_CLIENT),
    "routing": (scenario_routing, EXPECTED_ROUTING),
    "sync_client": (scenario_sync_client, EXPECTED_SYNC_CLIENT),
    "sync_echo": (scenario_sync_echo, EXPECTED_ECHO),
    "shutdown_server": (scenario_shutdown_server, EXPECTED_SHUTDOWN_SERVER),
    "shutdown_client": (scenario_shutdown_client, EXPECTED_SHUTDOWN_CLIENT),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_program_runs_unchanged(name: str, tmp_path: Path) -> None:
    scenario, expected = SCENARIOS[name]
    observed = {library: await scenario(library, tmp_path) for library in LIBRARIES}
    # What websockets' docs say the program does...
    assert observed["websockets"] == expected
    # ... is what it does once ported.
    assert observed["wsharbor"] == observed["websockets"]


def test_every_program_has_a_scenario() -> None:
    files = {p.relative_to(PROGRAMS).as_posix() for p in PROGRAMS.rglob("*.py")}
    assert files == {
        "echo.py",
        "hello.py",
        "hello_server.py",
        "counter.py",
        "health_check_server.py",
        "authentication/app.py",
        "reconnecting_client.py",
        "routing.py",
        "sync_client.py",
        "sync_echo.py",
        "shutdown_server.py",
        "shutdown_client.py",
    }
