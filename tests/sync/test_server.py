"""wsharbor.sync.server.serve against websockets' sync and asyncio clients and our
asyncio client: handshake hooks, HTTP answers, shutdown, TLS, compression."""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
from typing import Any

import pytest
import websockets.asyncio.client
import websockets.exceptions
import websockets.sync.client

import wsharbor
from wsharbor.protocol.http11 import Request, Response
from wsharbor.sync.client import connect
from wsharbor.sync.server import (
    Server,
    ServerConnection,
    basic_auth,
    broadcast,
    serve,
    unix_serve,
)

from .conftest import (
    HOST,
    TIMEOUT,
    LoopThread,
    raw_connect,
    read_to_eof,
    run_in_thread,
    sync_server,
    uri_of,
    watch_log,
)


def http_get(server: Server, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    host, port = server.socket.getsockname()[:2]
    client = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        client.request("GET", path, headers=headers)
        response = client.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        client.close()


# Against websockets' clients and ours.


def test_websockets_sync_client() -> None:
    with sync_server() as server, websockets.sync.client.connect(uri_of(server)) as websocket:
        assert websocket.response.headers["Server"].startswith("wsharbor/")
        assert websocket.response.headers["Sec-WebSocket-Extensions"].startswith(
            "permessage-deflate"
        )
        for message in ["text", b"binary", "x" * 200_000, b"\x00" * 70_000]:
            websocket.send(message)
            assert websocket.recv(timeout=TIMEOUT) == message
        websocket.send(["frag", "ments"])
        assert websocket.recv(timeout=TIMEOUT) == "fragments"
        assert websocket.ping().wait(TIMEOUT)


def test_websockets_asyncio_client(loop_thread: LoopThread) -> None:
    async def exchange(uri: str) -> list[Any]:
        async with websockets.asyncio.client.connect(uri) as websocket:
            received = []
            for message in ["hello", b"\x01\x02", "y" * 100_000]:
                await websocket.send(message)
                received.append(await websocket.recv())
            extensions = websocket.response.headers["Sec-WebSocket-Extensions"]
            return [received, extensions]

    with sync_server() as server:
        received, extensions = loop_thread.run(exchange(uri_of(server)))
    assert received == ["hello", b"\x01\x02", "y" * 100_000]
    assert extensions.startswith("permessage-deflate")


def test_our_asyncio_client(loop_thread: LoopThread) -> None:
    async def exchange(uri: str) -> list[Any]:
        async with wsharbor.connect(uri) as websocket:
            received = []
            for message in ["hello", b"\x01\x02", "z" * 100_000]:
                await websocket.send(message)
                received.append(await websocket.recv())
            assert websocket.protocol is not None
            return [received, len(websocket.protocol.extensions)]

    with sync_server() as server:
        received, extensions = loop_thread.run(exchange(uri_of(server)))
    assert received == ["hello", b"\x01\x02", "z" * 100_000]
    assert extensions == 1


def test_compression_disabled_on_the_server() -> None:
    with (
        sync_server(compression=None) as server,
        websockets.sync.client.connect(uri_of(server)) as websocket,
    ):
        assert "Sec-WebSocket-Extensions" not in websocket.response.headers
        websocket.send("plain")
        assert websocket.recv(timeout=TIMEOUT) == "plain"


def test_connection_attributes_in_the_handler() -> None:
    seen: dict[str, Any] = {}

    def handler(websocket: ServerConnection) -> None:
        seen["request"] = websocket.request
        seen["response"] = websocket.response
        seen["remote"] = websocket.remote_address
        seen["local"] = websocket.local_address
        seen["state"] = websocket.state
        seen["server"] = websocket.server
        seen["connections"] = websocket.server.connections
        websocket.send("seen")  # the client waits for it before closing
        websocket.recv()

    with sync_server(handler) as server, connect(uri_of(server, path="/chat?room=1")) as client:
        assert client.recv(timeout=TIMEOUT) == "seen"
        client.send("go")
    assert isinstance(seen["request"], Request) and seen["request"].path == "/chat?room=1"
    assert isinstance(seen["response"], Response) and seen["response"].status == 101
    assert seen["remote"] == client.local_address
    assert seen["local"] == client.remote_address
    assert seen["state"] is wsharbor.protocol.connection.State.OPEN
    assert seen["server"] is server
    assert len(seen["connections"]) == 1


def test_handler_return_closes_with_1000_and_exception_with_1011() -> None:
    def handler(websocket: ServerConnection) -> None:
        message = websocket.recv()
        if message == "fail":
            raise RuntimeError("handler bug")

    with (
        sync_server(handler) as server,
        watch_log("wsharbor.server", "connection handler failed") as logged,
    ):
        with websockets.sync.client.connect(uri_of(server)) as websocket:
            websocket.send("ok")
            with pytest.raises(websockets.exceptions.ConnectionClosedOK) as ok:
                websocket.recv(timeout=TIMEOUT)
        assert ok.value.rcvd is not None and ok.value.rcvd.code == 1000
        with websockets.sync.client.connect(uri_of(server)) as websocket:
            websocket.send("fail")
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as error:
                websocket.recv(timeout=TIMEOUT)
        assert error.value.rcvd is not None and error.value.rcvd.code == 1011
        assert logged.is_set()


def test_client_close_code_reaches_the_handler() -> None:
    seen: list[Any] = []

    def handler(websocket: ServerConnection) -> None:
        try:
            websocket.recv()
        except wsharbor.ConnectionClosed as exc:
            seen.append(exc)

    with sync_server(handler) as server:
        websocket = websockets.sync.client.connect(uri_of(server), legacy=True)
        websocket.close(4002, "client bye")
        assert websocket.close_code == 4002
    assert isinstance(seen[0], wsharbor.ConnectionClosedError)
    assert (seen[0].code, seen[0].reason) == (4002, "client bye")


def test_server_closing_with_a_code() -> None:
    def handler(websocket: ServerConnection) -> None:
        websocket.close(4003, "server bye")

    with sync_server(handler) as server:
        websocket = websockets.sync.client.connect(uri_of(server), legacy=True)
        with pytest.raises(websockets.exceptions.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4003, "server bye")


# The opening handshake: hooks and HTTP answers.


def test_process_request_answers_a_health_check() -> None:
    def health_check(connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        return None

    with sync_server(process_request=health_check) as server:
        status, headers, body = http_get(server, "/healthz")
        assert (status, body) == (200, b"OK\n")
        assert headers["Content-Type"] == "text/plain; charset=utf-8"
        assert headers["Server"].startswith("wsharbor/")
        # Other paths go on with the WebSocket handshake.
        with connect(uri_of(server, path="/ws")) as websocket:
            websocket.send("still a websocket")
            assert websocket.recv(timeout=TIMEOUT) == "still a websocket"


def test_process_request_failing_answers_500() -> None:
    def broken(connection: ServerConnection, request: Request) -> None:
        raise ValueError("bug in the hook")

    def wrong_type(connection: ServerConnection, request: Request) -> Any:
        return "not a response"

    for hook in (broken, wrong_type):
        with (
            sync_server(process_request=hook) as server,
            watch_log("wsharbor.server", "process_request failed") as logged,
        ):
            status, _, body = http_get(server, "/")
            assert (status, body) == (500, b"process_request failed\n")
            assert logged.is_set()


def test_process_response_modifies_or_replaces_the_response() -> None:
    def add_header(connection: ServerConnection, request: Request, response: Response) -> None:
        response.headers["X-Extra"] = "yes"

    with (
        sync_server(process_response=add_header) as server,
        connect(uri_of(server)) as websocket,
    ):
        assert websocket.response is not None
        assert websocket.response.headers["X-Extra"] == "yes"

    def replace(connection: ServerConnection, request: Request, response: Response) -> Response:
        return connection.respond(418, "teapot\n")

    with sync_server(process_response=replace) as server:
        status, _, body = http_get(server, "/")
    assert (status, body) == (418, b"teapot\n")


def test_plain_http_request_is_rejected_with_426() -> None:
    with sync_server() as server:
        status, headers, body = http_get(server, "/")
        assert status == 426
        assert headers["Upgrade"] == "websocket"
        assert b"Upgrade" in body
        status, headers, _ = http_get(
            server,
            "/",
            Upgrade="websocket",
            Connection="Upgrade",
            **{"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "8"},
        )
        assert status == 426
        assert headers["Sec-WebSocket-Version"] == "13"


def test_malformed_request_is_rejected_with_400() -> None:
    with sync_server() as server:
        sock = raw_connect(server.socket.getsockname()[1])
        sock.sendall(b"GET / HTTP/1.1\r\nHost example\r\n\r\n")
        reply = read_to_eof(sock)
        sock.close()
    assert reply.startswith(b"HTTP/1.1 400 ")


def test_origins_are_checked() -> None:
    with sync_server(origins=["https://good.example"]) as server:
        with connect(uri_of(server), origin="https://good.example"):
            pass
        with pytest.raises(wsharbor.InvalidStatus) as info:
            connect(uri_of(server), origin="https://evil.example")
        assert info.value.response.status == 403


def test_select_subprotocol_gets_the_connection() -> None:
    seen: list[Any] = []

    def select(connection: ServerConnection, offered: Any) -> str | None:
        seen.append((type(connection), list(offered)))
        return offered[-1] if offered else None

    with sync_server(select_subprotocol=select) as server:
        with connect(uri_of(server), subprotocols=["a", "b"]) as websocket:
            assert websocket.subprotocol == "b"
        with connect(uri_of(server), subprotocols=["c"]) as websocket:
            assert websocket.subprotocol == "c"
    assert seen == [(ServerConnection, ["a", "b"]), (ServerConnection, ["c"])]


def test_server_header_option() -> None:
    with sync_server(server_header=None) as server, connect(uri_of(server)) as websocket:
        assert websocket.response is not None and "Server" not in websocket.response.headers
    with sync_server(server_header="custom/1") as server, connect(uri_of(server)) as websocket:
        assert websocket.response is not None and websocket.response.headers["Server"] == "custom/1"


def test_handshake_headers_packed_and_read_right_on_both_sides() -> None:
    """As in the asyncio layer: the handshake's request and response are kept packed
    (Headers.compact) once the connection is open, on both sides; reading them gives
    what was sent, and a handler may still change them."""
    seen: dict[str, object] = {}

    def handler(websocket: ServerConnection) -> None:
        request, response = websocket.request, websocket.response
        assert request is not None and response is not None
        seen["packed"] = (request.headers.packed, response.headers.packed)
        seen["many"] = request.headers.get_all("x-many")
        seen["items"] = request.headers.items()
        seen["response"] = response.headers.items()
        request.headers["X-Added"] = "later"
        seen["added"] = request.headers.get_all("X-ADDED")
        echo_once = websocket.recv(TIMEOUT)
        websocket.send(echo_once)

    with (
        sync_server(handler, server_header="edge/1") as server,
        connect(uri_of(server), additional_headers=[("X-Many", "1"), ("x-many", "2")]) as ws,
    ):
        ws.send("hello")
        assert ws.recv(TIMEOUT) == "hello"
        assert ws.request is not None and ws.response is not None
        assert ws.request.headers.packed and ws.response.headers.packed
        assert ws.response.headers["Server"] == "edge/1"
        client_request, client_response = ws.request.headers.items(), ws.response.headers.items()
    assert seen["packed"] == (True, True)
    assert seen["many"] == ["1", "2"]
    assert seen["items"] == client_request
    assert seen["response"] == client_response
    assert seen["added"] == ["later"]


def test_open_timeout_closes_idle_connections() -> None:
    with sync_server(open_timeout=0.1) as server:
        sock = raw_connect(server.socket.getsockname()[1])
        # Nothing sent: the server closes the connection after open_timeout.
        assert read_to_eof(sock) == b""
        sock.close()


def test_logs_like_websockets() -> None:
    with watch_log("wsharbor.server", "server listening on 127.0.0.1:") as listening:
        with (
            watch_log("wsharbor.server", "connection open") as opened,
            watch_log("wsharbor.server", "connection closed") as closed,
        ):
            with sync_server() as server, connect(uri_of(server)):
                pass
            assert opened.is_set() and closed.is_set()
        assert listening.is_set()


# Shutdown.


def test_shutdown_closes_connections_with_1001() -> None:
    handler_done = threading.Event()

    def handler(websocket: ServerConnection) -> None:
        try:
            for message in websocket:
                websocket.send(message)
        finally:
            handler_done.set()

    server = serve(handler, HOST, 0, ping_interval=None)
    uri = uri_of(server)
    serving, _ = run_in_thread(server.serve_forever)
    client = connect(uri)
    client.send("before")
    assert client.recv(timeout=TIMEOUT) == "before"
    stopping, stopped = run_in_thread(server.shutdown)
    with pytest.raises(wsharbor.ConnectionClosedOK) as info:
        client.recv(timeout=TIMEOUT)
    assert info.value.code == 1001
    stopping.join(TIMEOUT)
    serving.join(TIMEOUT)
    assert stopped == [None] and not serving.is_alive()
    assert handler_done.is_set()
    # No more connections.
    with pytest.raises(ConnectionRefusedError):
        connect(uri, open_timeout=TIMEOUT)


def test_shutdown_with_a_custom_code_and_without_closing() -> None:
    server = serve(lambda websocket: websocket.recv(), HOST, 0, ping_interval=None)
    serving, _ = run_in_thread(server.serve_forever)
    client = connect(uri_of(server))
    stopping, _ = run_in_thread(lambda: server.shutdown(code=1012, reason="restart"))
    with pytest.raises(wsharbor.ConnectionClosedError) as info:
        client.recv(timeout=TIMEOUT)
    assert (info.value.code, info.value.reason) == (1012, "restart")
    stopping.join(TIMEOUT)
    serving.join(TIMEOUT)

    server = serve(lambda websocket: websocket.recv(), HOST, 0, ping_interval=None)
    serving, _ = run_in_thread(server.serve_forever)
    client = connect(uri_of(server))
    stopping, _ = run_in_thread(lambda: server.shutdown(close_connections=False))
    # The connection stays open until the client ends it; then shutdown returns.
    client.send("the handler returns")
    stopping.join(TIMEOUT)
    assert not stopping.is_alive()
    serving.join(TIMEOUT)
    client.close()


def test_handshake_finishing_during_shutdown_gets_503() -> None:
    entered = threading.Event()
    release = threading.Event()

    def slow_hook(connection: ServerConnection, request: Request) -> None:
        entered.set()
        release.wait(TIMEOUT)

    server = serve(lambda ws: None, HOST, 0, process_request=slow_hook, ping_interval=None)
    serving, _ = run_in_thread(server.serve_forever)
    connecting, outcome = run_in_thread(lambda: connect(uri_of(server), open_timeout=TIMEOUT))
    assert entered.wait(TIMEOUT)
    stopping, _ = run_in_thread(server.shutdown)
    # shutdown() waits for the handshake in progress; answer it now.
    release.set()
    connecting.join(TIMEOUT)
    stopping.join(TIMEOUT)
    serving.join(TIMEOUT)
    assert isinstance(outcome[0], wsharbor.InvalidStatus)
    assert outcome[0].response.status == 503


def test_shutdown_before_serve_forever_and_twice() -> None:
    server = serve(lambda ws: None, HOST, 0)
    server.shutdown()
    server.shutdown()
    server.serve_forever()  # returns at once
    with serve(lambda ws: None, HOST, 0) as server:
        assert server.fileno() == server.socket.fileno()


def test_shutdown_from_a_handler() -> None:
    server = serve(lambda ws: ws.server.shutdown(), HOST, 0, ping_interval=None)
    serving, _ = run_in_thread(server.serve_forever)
    client = connect(uri_of(server))
    with pytest.raises(wsharbor.ConnectionClosedOK):
        client.recv(timeout=TIMEOUT)
    serving.join(TIMEOUT)
    assert not serving.is_alive()


# Transports.


def test_wss(server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> None:
    with sync_server(ssl=server_ssl) as server:
        with connect(uri_of(server, "wss"), ssl=client_ssl) as websocket:
            websocket.send("over TLS")
            assert websocket.recv(timeout=TIMEOUT) == "over TLS"
        with websockets.sync.client.connect(uri_of(server, "wss"), ssl=client_ssl) as websocket:
            websocket.send("websockets over TLS")
            assert websocket.recv(timeout=TIMEOUT) == "websockets over TLS"
        # A client that fails the TLS handshake doesn't stop the server.
        sock = raw_connect(server.socket.getsockname()[1])
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        # Closed with our bytes unread: EOF or a reset.
        with contextlib.suppress(ConnectionResetError):
            assert read_to_eof(sock) == b""
        sock.close()
        with connect(uri_of(server, "wss"), ssl=client_ssl) as websocket:
            websocket.send("still serving")
            assert websocket.recv(timeout=TIMEOUT) == "still serving"


def test_unix_serve(tmp_path: Any) -> None:
    path = str(tmp_path / "server.sock")
    server = unix_serve(lambda ws: ws.send(ws.recv()), path, ping_interval=None)
    serving, _ = run_in_thread(server.serve_forever)
    try:
        with websockets.sync.client.unix_connect(path) as websocket:
            websocket.send("unix")
            assert websocket.recv(timeout=TIMEOUT) == "unix"
    finally:
        server.shutdown()
        serving.join(TIMEOUT)


def test_serve_on_an_existing_socket() -> None:
    sock = socket.create_server((HOST, 0))
    with sync_server(sock=sock) as server, connect(uri_of(server)) as websocket:
        websocket.send("given socket")
        assert websocket.recv(timeout=TIMEOUT) == "given socket"
    with pytest.raises(ValueError, match="host"):
        serve(lambda ws: None, "localhost", sock=socket.create_server((HOST, 0)))


def test_invalid_arguments() -> None:
    with pytest.raises(TypeError):
        serve(None, HOST, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compression"):
        serve(lambda ws: None, HOST, 0, compression="zstd")
    with pytest.raises(ValueError, match="close_timeout"):
        serve(lambda ws: None, HOST, 0, close_timeout=-1)
    with pytest.raises(ValueError, match="missing path"):
        unix_serve(lambda ws: None)


# basic_auth and broadcast, as in websockets.sync.server.


def test_basic_auth() -> None:
    users: list[str] = []

    def handler(websocket: ServerConnection) -> None:
        users.append(websocket.username)

    auth = basic_auth(realm="dev", credentials=[("alice", "s3cret"), ("bob", "pw")])
    with sync_server(handler, process_request=auth) as server:
        host, port = server.socket.getsockname()[:2]
        with connect(f"ws://alice:s3cret@{host}:{port}/"):
            pass
        for uri in (uri_of(server), f"ws://alice:wrong@{host}:{port}/"):
            with pytest.raises(wsharbor.InvalidStatus) as info:
                connect(uri)
            assert info.value.response.status == 401
            assert info.value.response.headers["WWW-Authenticate"] == (
                'Basic realm="dev", charset="UTF-8"'
            )
        status, _, body = http_get(server, "/", Authorization="Bearer token")
        assert (status, body) == (401, b"Unsupported credentials\n")
    assert users == ["alice"]
    checked = basic_auth(check_credentials=lambda user, password: user == password)
    with sync_server(handler, process_request=checked) as server:
        host, port = server.socket.getsockname()[:2]
        with websockets.sync.client.connect(f"ws://carol:carol@{host}:{port}/"):
            pass
    assert users == ["alice", "carol"]
    with pytest.raises(ValueError):
        basic_auth()
    with pytest.raises(TypeError):
        basic_auth(credentials=[("only one",)])  # type: ignore[list-item]


def test_broadcast() -> None:
    ready = threading.Barrier(3, timeout=TIMEOUT)

    def handler(websocket: ServerConnection) -> None:
        ready.wait()
        websocket.recv()

    with sync_server(handler) as server:
        clients = [connect(uri_of(server)) for _ in range(2)]
        ready.wait()
        broadcast(server.connections, "to everyone")
        broadcast(server.connections, b"bytes as text", text=True)
        for client in clients:
            assert client.recv(timeout=TIMEOUT) == "to everyone"
            assert client.recv(timeout=TIMEOUT) == "bytes as text"
        with pytest.raises(TypeError):
            broadcast(server.connections, 42)  # type: ignore[arg-type]
        for client in clients:
            client.close()
        # Closed connections are skipped.
        broadcast([*server.connections], "nobody", raise_exceptions=True)
