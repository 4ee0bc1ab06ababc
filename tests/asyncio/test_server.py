"""The asyncio server: serve(), Server, handlers, TLS, Unix sockets, handshake hooks.

Every test runs a real server on 127.0.0.1 (port 0) and talks to it over real
sockets, with our client or with a raw socket when the exact bytes matter.
"""

from __future__ import annotations

import asyncio
import contextvars
import http
import importlib.util
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import pytest

import wsharbor
from wsharbor import InvalidStatus, Response, ServerConnection

from .conftest import (
    HOST,
    TIMEOUT,
    RawClient,
    http_exchange,
    parse_http_reply,
    port_of,
    upgrade_request,
    uri_of,
    wait,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


# serve() and Server.


async def test_await_serve_returns_started_server() -> None:
    server = await wsharbor.serve(echo, HOST, 0)
    try:
        assert server.sockets, "no listening socket"
        assert server.sockets[0].getsockname()[0] == HOST
        assert port_of(server) > 0
        async with wsharbor.connect(uri_of(server)) as ws:
            await ws.send("hello")
            assert await wait(ws.recv()) == "hello"
    finally:
        server.close()
        await wait(server.wait_closed())
    assert server.sockets == ()
    assert not server.is_serving()


async def test_async_with_serve_and_connections_lists_open_ones_only(raw_clients) -> None:
    finished: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            finished.put_nowait(ws)

    async with wsharbor.serve(handler, HOST, 0) as server:
        assert server.connections == set()
        # A TCP connection still in its opening handshake is not a WebSocket connection.
        pending = await RawClient.open(port_of(server))
        raw_clients.append(pending)
        a = await wsharbor.connect(uri_of(server))
        b = await wsharbor.connect(uri_of(server))
        await a.send("ping")
        assert await wait(a.recv()) == "ping"
        await b.send("ping")
        assert await wait(b.recv()) == "ping"
        connections = server.connections
        assert len(connections) == 2
        assert all(isinstance(c, ServerConnection) for c in connections)
        assert {c.remote_address for c in connections} == {
            a.local_address,
            b.local_address,
        }

        await a.close()
        closed = await wait(finished.get())
        assert server.connections == connections - {closed}
        assert [c.remote_address for c in server.connections] == [b.local_address]
        await b.close()
        await wait(finished.get())
        assert server.connections == set()
        # Otherwise shutdown would wait (up to close_timeout) for its request, to answer 503.
        await pending.close_transport()


async def test_serve_forever_returns_after_close() -> None:
    server = await wsharbor.serve(echo, HOST, 0)
    forever = asyncio.ensure_future(server.serve_forever())
    # serve_forever keeps serving: a client can connect while it runs.
    async with wsharbor.connect(uri_of(server)) as ws:
        await ws.send("x")
        assert await wait(ws.recv()) == "x"
    assert not forever.done()
    server.close()
    await wait(forever)
    assert server.sockets == ()


async def test_async_with_serve_forever_closed_from_another_task() -> None:
    async with wsharbor.serve(echo, HOST, 0) as server:
        port = port_of(server)
        forever = asyncio.ensure_future(server.serve_forever())
        asyncio.get_running_loop().call_soon(server.close)
        await wait(forever)
    # close() stopped accepting: nothing listens on the port any more.
    with pytest.raises(OSError):
        await wait(asyncio.open_connection(HOST, port))


HANDLER_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("handler_var", default="-")


class _RecordVar(logging.Filter):
    """Copies HANDLER_VAR into each record: what a logging filter reading
    context variables (a request id, say) sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.handler_var = HANDLER_VAR.get()
        return True


async def test_handler_end_closes_logs_in_its_context_and_is_forgotten(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What the server does when a handler ends (no wrapper coroutine since issue
    12): returned, 1000; raised, the error logged in the handler's context and 1011;
    closed by the peer, nothing logged; and the task is forgotten either way."""

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        HANDLER_VAR.set(ws.request.path)
        if ws.request.path == "/fail":
            raise ValueError("handler bug")
        if ws.request.path == "/wait":
            await ws.recv()  # the client closes: ConnectionClosedOK

    caplog.set_level(logging.INFO, logger="wsharbor.server")
    server_logger = logging.getLogger("wsharbor.server")
    record_var = _RecordVar()
    server_logger.addFilter(record_var)
    try:
        async with wsharbor.serve(handler, HOST, 0) as server:
            async with wsharbor.connect(uri_of(server, "/ok")) as ws:
                with pytest.raises(wsharbor.ConnectionClosedOK):
                    await wait(ws.recv())
                assert ws.close_code == 1000
            async with wsharbor.connect(uri_of(server, "/fail")) as ws:
                with pytest.raises(wsharbor.ConnectionClosedError):
                    await wait(ws.recv())
                assert (ws.close_code, ws.close_reason) == (1011, "internal error")
            async with wsharbor.connect(uri_of(server, "/wait")) as ws:
                pass
    finally:
        server_logger.removeFilter(record_var)
    # Closing waited for every handler task, and each one's end was handled.
    assert server._handler_tasks == {}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["connection handler failed"]
    assert errors[0].exc_info is not None and isinstance(errors[0].exc_info[1], ValueError)
    assert getattr(errors[0], "handler_var", None) == "/fail"


class CallableHandler:
    """A handler that is an object with an async __call__."""

    async def __call__(self, ws: ServerConnection) -> None:
        await ws.send("object")


def returns_a_coroutine(ws: ServerConnection) -> Awaitable[None]:
    """A plain function returning the handler's coroutine."""
    return ws.send("function")


def raises_when_called(ws: ServerConnection) -> Awaitable[None]:
    raise RuntimeError("sync handler bug")


def returns_nothing(ws: ServerConnection) -> None:
    """Not a handler at all: returns nothing awaitable."""


async def takes_no_connection() -> None:
    """A coroutine function that can't be called with the connection."""


@pytest.mark.parametrize(
    ("handler", "sent", "code", "logged"),
    [
        (CallableHandler(), "object", 1000, None),
        (returns_a_coroutine, "function", 1000, None),
        (raises_when_called, None, 1011, RuntimeError),
        (returns_nothing, None, 1011, TypeError),
        (takes_no_connection, None, 1011, TypeError),
    ],
    ids=[
        "callable-object",
        "function-returning-coroutine",
        "raises",
        "not-awaitable",
        "coroutine-function-without-parameter",
    ],
)
async def test_handlers_that_are_not_coroutine_functions(
    handler: Any,
    sent: str | None,
    code: int,
    logged: type[Exception] | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="wsharbor.server")
    async with (
        wsharbor.serve(handler, HOST, 0) as server,
        wsharbor.connect(uri_of(server)) as ws,
    ):
        if sent is not None:
            assert await wait(ws.recv()) == sent
        with pytest.raises(wsharbor.ConnectionClosed):
            await wait(ws.recv())
        assert ws.close_code == code
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if logged is None:
        assert errors == []
    else:
        assert len(errors) == 1 and errors[0].exc_info is not None
        assert isinstance(errors[0].exc_info[1], logged)


async def test_handler_gets_request_path_and_headers() -> None:
    seen: asyncio.Future[tuple[str, str | None, str]] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen.set_result((ws.request.path, ws.request.headers.get("X-Token"), ws.path))
        await ws.send(ws.request.path)

    async with (
        wsharbor.serve(handler, HOST, 0) as server,
        wsharbor.connect(
            uri_of(server, "/chat/room?id=42"), additional_headers={"X-Token": "s3cret"}
        ) as ws,
    ):
        assert await wait(ws.recv()) == "/chat/room?id=42"
    assert await wait(seen) == ("/chat/room?id=42", "s3cret", "/chat/room?id=42")


async def test_handshake_headers_packed_and_read_right_on_both_sides() -> None:
    """The handshake's request and response are kept packed (Headers.compact) once the
    connection is open, on both sides; reading them gives what was sent and leaves them
    packed, and a handler may still change them."""
    seen: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        request, response = ws.request, ws.response
        assert request is not None and response is not None
        packed_at_start = (request.headers.packed, response.headers.packed)
        result: dict[str, object] = {
            "packed": packed_at_start,
            "token": request.headers["X-Token"],
            "many": request.headers.get_all("x-many"),
            "host": request.headers.get("Host"),
            "items": request.headers.items(),
            "response": response.headers.items(),
            "still_packed": request.headers.packed,
        }
        request.headers["X-Added"] = "later"
        result["added"] = request.headers.get_all("X-ADDED")
        seen.set_result(result)
        async for message in ws:
            await ws.send(message)

    async with wsharbor.serve(handler, HOST, 0, server_header="edge/1") as server:
        port = port_of(server)
        async with wsharbor.connect(
            uri_of(server, "/room"),
            additional_headers=[("X-Token", "s3cret"), ("X-Many", "1"), ("x-many", "2 ,3")],
        ) as ws:
            await ws.send("hello")
            assert await wait(ws.recv()) == "hello"
            assert ws.request is not None and ws.response is not None
            assert ws.request.headers.packed and ws.response.headers.packed
            assert ws.response.headers["Server"] == "edge/1"
            assert ws.response.headers["Upgrade"] == "websocket"
            client_request = ws.request.headers.items()
            client_response = ws.response.headers.items()
        result = await wait(seen)
    assert result["packed"] == (True, True)
    assert result["token"] == "s3cret"
    assert result["many"] == ["1", "2 ,3"]
    assert result["host"] == f"{HOST}:{port}"
    # What the server read is what the client sent, and the other way round.
    assert result["items"] == client_request
    assert result["response"] == client_response
    assert ("Sec-WebSocket-Accept", client_response[2][1]) in client_response
    assert result["still_packed"] is True
    assert result["added"] == ["later"]


async def test_two_argument_handler_gets_path() -> None:
    async def handler(ws: ServerConnection, path: str) -> None:
        await ws.send(f"path={path}")

    async with (
        wsharbor.serve(handler, HOST, 0) as server,
        wsharbor.connect(uri_of(server, "/legacy")) as ws,
    ):
        assert await wait(ws.recv()) == "path=/legacy"


async def test_unix_serve() -> None:
    with tempfile.TemporaryDirectory(prefix="wsh") as tmp:
        path = os.path.join(tmp, "s.sock")
        async with wsharbor.unix_serve(echo, path) as server:
            assert server.sockets[0].family == socket.AF_UNIX
            async with wsharbor.unix_connect(path, "ws://localhost/unix") as ws:
                await ws.send(b"\x00\x01")
                assert await wait(ws.recv()) == b"\x00\x01"
                await ws.send("text")
                assert await wait(ws.recv()) == "text"


async def test_sock_handed_over_by_a_supervisor() -> None:
    # A supervisor binds and listens, then hands the socket to the server.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    async with wsharbor.serve(echo, sock=sock) as server:
        assert port_of(server) == port
        async with wsharbor.connect(f"ws://{HOST}:{port}/") as ws:
            await ws.send("handed over")
            assert await wait(ws.recv()) == "handed over"


async def test_wss_with_self_signed_certificate() -> None:
    trustme = pytest.importorskip("trustme", reason="trustme is a test dependency")
    ca = trustme.CA()
    cert = ca.issue_cert(HOST, "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client_ctx)

    tls_seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        assert ws.transport is not None
        ssl_object = ws.transport.get_extra_info("ssl_object")
        tls_seen.set_result(ssl_object.version() if ssl_object else "plaintext")
        await echo(ws)

    async with wsharbor.serve(handler, HOST, 0, ssl=server_ctx) as server:
        port = port_of(server)
        async with wsharbor.connect(f"wss://{HOST}:{port}/", ssl=client_ctx) as ws:
            await ws.send("over tls")
            assert await wait(ws.recv()) == "over tls"
            big = os.urandom(200_000)
            await ws.send(big)
            assert await wait(ws.recv()) == big
        assert (await wait(tls_seen)).startswith("TLS")
        # A client that doesn't trust the CA is refused by TLS itself.
        with pytest.raises(ssl.SSLError):
            await wait(
                wsharbor.connect(
                    f"wss://{HOST}:{port}/", ssl=ssl.create_default_context(), open_timeout=TIMEOUT
                )
            )


# Handshake options.


async def test_origins_rejects_wrong_origin_with_403() -> None:
    async with wsharbor.serve(echo, HOST, 0, origins=["https://good.example"]) as server:
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port, Origin="https://evil.example"))
        assert reply.status == 403
        with pytest.raises(InvalidStatus) as excinfo:
            await wait(wsharbor.connect(uri_of(server), origin="https://evil.example"))
        assert excinfo.value.status == 403
        async with wsharbor.connect(uri_of(server), origin="https://good.example") as ws:
            await ws.send("ok")
            assert await wait(ws.recv()) == "ok"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_process_request_response_or_none(is_async: bool) -> None:
    calls: list[tuple[type, str]] = []

    def health(connection: ServerConnection, request: wsharbor.Request) -> Response | None:
        calls.append((type(connection), request.path))
        if request.path == "/healthz":
            return Response(http.HTTPStatus.OK, "OK", wsharbor.Headers(), b"OK\n")
        return None

    async def async_health(connection: ServerConnection, request: wsharbor.Request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return health(connection, request)

    hook = async_health if is_async else health
    async with wsharbor.serve(echo, HOST, 0, process_request=hook) as server:
        port = port_of(server)
        reply = await http_exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (reply.status, reply.body) == (200, b"OK\n")
        assert reply.headers["Connection"] == "close"
        # None continues to the upgrade.
        async with wsharbor.connect(uri_of(server, "/ws")) as ws:
            await ws.send("upgraded")
            assert await wait(ws.recv()) == "upgraded"
    assert calls == [(ServerConnection, "/healthz"), (ServerConnection, "/ws")]


def load_example(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_guide_process_request_path_headers_tuple(is_async: bool) -> None:
    example = load_example("health_check")  # the guide's async form, unchanged

    def sync_health_check(path: str, request_headers: wsharbor.Headers):  # type: ignore[no-untyped-def]
        assert isinstance(request_headers, wsharbor.Headers)
        if path == "/health/":
            return http.HTTPStatus.OK, [("X-Check", "sync")], b"OK\n"
        return None

    hook = example.health_check if is_async else sync_health_check
    async with wsharbor.serve(example.echo, HOST, 0, process_request=hook) as server:
        port = port_of(server)
        reply = await http_exchange(port, b"GET /health/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (reply.status, reply.reason, reply.body) == (200, "OK", b"OK\n")
        if not is_async:
            assert reply.headers["X-Check"] == "sync"
        async with wsharbor.connect(uri_of(server, "/")) as ws:
            await ws.send("echo")
            assert await wait(ws.recv()) == "echo"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_process_response_can_change_the_101(is_async: bool) -> None:
    def add_header(
        connection: ServerConnection, request: wsharbor.Request, response: Response
    ) -> Response:
        response.headers["X-Served-By"] = f"hook:{request.path}"
        return response

    async def async_add_header(connection, request, response):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return add_header(connection, request, response)

    hook = async_add_header if is_async else add_header
    async with (
        wsharbor.serve(echo, HOST, 0, process_response=hook) as server,
        wsharbor.connect(uri_of(server, "/p")) as ws,
    ):
        assert ws.response is not None
        assert ws.response.headers["X-Served-By"] == "hook:/p"
        await ws.send("after hook")
        assert await wait(ws.recv()) == "after hook"


async def test_server_header() -> None:
    async with wsharbor.serve(echo, HOST, 0, server_header="Harbor/9") as server:
        async with wsharbor.connect(uri_of(server)) as ws:
            assert ws.response is not None
            assert ws.response.headers["Server"] == "Harbor/9"
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port, method="POST"))
        assert reply.headers["Server"] == "Harbor/9"
    async with wsharbor.serve(echo, HOST, 0) as server, wsharbor.connect(uri_of(server)) as ws:
        assert ws.response is not None
        assert ws.response.headers["Server"] == f"wsharbor/{wsharbor.__version__}"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_process_request_that_raises_gives_500_and_error_log(
    is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(connection: ServerConnection, request: wsharbor.Request) -> None:
        raise RuntimeError("secret-internal-detail")

    async def async_broken(connection: ServerConnection, request: wsharbor.Request) -> None:
        await asyncio.sleep(0)
        broken(connection, request)

    caplog.set_level(logging.ERROR, logger="wsharbor.server")
    hook = async_broken if is_async else broken
    async with wsharbor.serve(echo, HOST, 0, process_request=hook) as server:
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port))
        assert reply.status == 500
        assert b"secret-internal-detail" not in reply.raw
        assert b"Traceback" not in reply.raw
    errors = [r for r in caplog.records if r.name == "wsharbor.server" and r.levelno >= 40]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "secret-internal-detail" in str(errors[0].exc_info[1])


@pytest.mark.parametrize("with_hook", [False, True], ids=["no-hook", "hook"])
async def test_select_subprotocol_that_raises_gives_500_and_error_log(
    with_hook: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Without hooks the handshake is answered without its coroutine: the same 500.
    def select(connection: ServerConnection, offered: Sequence[str]) -> str | None:
        raise RuntimeError("secret-internal-detail")

    def passthrough(connection: ServerConnection, request: wsharbor.Request) -> None:
        return None

    caplog.set_level(logging.ERROR, logger="wsharbor.server")
    async with wsharbor.serve(
        echo,
        HOST,
        0,
        select_subprotocol=select,
        process_request=passthrough if with_hook else None,
    ) as server:
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port, Sec_WebSocket_Protocol="chat"))
        assert reply.status == 500
        assert b"opening handshake failed" in reply.raw
        assert b"secret-internal-detail" not in reply.raw
        # The server goes on.
        async with wsharbor.connect(uri_of(server)) as ws:
            await ws.send("still serving")
            assert await wait(ws.recv()) == "still serving"
    errors = [r for r in caplog.records if r.name == "wsharbor.server" and r.levelno >= 40]
    assert [r.getMessage() for r in errors] == ["opening handshake failed"]
    assert errors[0].exc_info is not None
    assert "secret-internal-detail" in str(errors[0].exc_info[1])


async def test_plain_http_get_gets_complete_response_then_eof() -> None:
    async with wsharbor.serve(echo, HOST, 0) as server:
        port = port_of(server)
        for request in (
            b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl/8\r\n"
            b"Accept: */*\r\n\r\n",
        ):
            reply = await http_exchange(port, request)  # reads to EOF, checks Content-Length
            assert 400 <= reply.status < 500, reply
            assert reply.body.endswith(b"\n")
            assert reply.headers["Connection"] == "close"


async def test_wrong_version_gets_426_with_supported_version() -> None:
    async with wsharbor.serve(echo, HOST, 0) as server:
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port, Sec_WebSocket_Version="8"))
        assert reply.status == 426
        assert reply.headers["Sec-WebSocket-Version"] == "13"


async def test_post_gets_405() -> None:
    async with wsharbor.serve(echo, HOST, 0) as server:
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port, method="POST"))
        assert reply.status == 405
        assert reply.headers["Allow"] == "GET"


async def test_malformed_request_gets_400() -> None:
    async with wsharbor.serve(echo, HOST, 0) as server:
        reply = await http_exchange(port_of(server), b"this is not http\r\n\r\n")
        assert reply.status == 400


async def test_empty_lines_before_the_request_are_ignored() -> None:
    # RFC 9112 section 2.2; a bounded number of them: an endless stream gets 400.
    async with wsharbor.serve(echo, HOST, 0) as server:
        client = await RawClient.open(port_of(server))
        client.writer.write(b"\r\n\n")
        await client.handshake()
        client.send_text("after empty lines")
        assert await client.recv_message() == "after empty lines"
        client.send_close()
        assert (await client.expect_close()).code == 1000
        await client.close_transport()
        # 8194 bytes: the error comes with the last of them, none is left unread.
        reply = await http_exchange(port_of(server), b"\r\n" * 4097)
        assert reply.status == 400
        assert b"empty lines before the request line" in reply.body


async def test_open_timeout_drops_silent_client() -> None:
    async with wsharbor.serve(echo, HOST, 0, open_timeout=0.3) as server:
        silent = await RawClient.open(port_of(server))
        try:
            # The server closes the TCP connection: EOF well before the deadline.
            assert await silent.read_to_eof(TIMEOUT) == b""
        finally:
            await silent.close_transport()
        # A client that completes its handshake in time isn't affected later.
        async with wsharbor.connect(uri_of(server)) as ws:
            # Not waiting for an event: outliving open_timeout on purpose proves
            # the timer was cancelled when the handshake completed.
            await asyncio.sleep(0.5)
            await ws.send("still open")
            assert await wait(ws.recv()) == "still open"


async def test_handler_that_raises_is_logged_and_closed_with_1011(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        raise ValueError("handler bug")

    caplog.set_level(logging.DEBUG, logger="wsharbor")
    async with wsharbor.serve(handler, HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        client.send_text("trigger")
        close = await client.expect_close()
        assert close.code == 1011
        client.send_close(1011)
        assert await client.read_to_eof() == b""
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["wsharbor.server"]
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], ValueError)
    assert "Traceback" in caplog.text or errors[0].exc_text or errors[0].exc_info[2] is not None
    out, err = capsys.readouterr()
    assert (out, err) == ("", "")


async def test_bad_handshake_is_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    async with wsharbor.serve(echo, HOST, 0) as server:
        port = port_of(server)
        reply = await http_exchange(port, upgrade_request(port, Sec_WebSocket_Key="short"))
        assert reply.status == 400
    assert capsys.readouterr() == ("", "")


async def test_pipelined_frames_after_request_are_kept() -> None:
    # Frames sent in the same write as the upgrade request are not lost.
    async with wsharbor.serve(echo, HOST, 0) as server:
        client = await RawClient.open(port_of(server))
        from wsharbor.protocol.frames import Frame, Opcode, serialize_frame

        frame = serialize_frame(Frame(Opcode.TEXT, b"early"), mask=True)
        await client.handshake(extra=frame)
        assert await client.recv_message() == "early"
        client.send_close()
        assert (await client.expect_close()).code == 1000
        await client.close_transport()


def test_parse_http_reply_rejects_truncated_body() -> None:
    # The helper the HTTP tests rely on does fail on an incomplete response.
    with pytest.raises(AssertionError):
        parse_http_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
