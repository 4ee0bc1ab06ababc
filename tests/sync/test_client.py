"""wsharbor.sync.client.connect against our asyncio server, websockets' server and our
threaded server: messages, options, handshake failures, timeouts, TLS, proxies."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import wsharbor
from wsharbor.exceptions import (
    ConcurrencyError,
    InvalidHandshake,
    InvalidMessage,
    InvalidProxy,
    InvalidProxyStatus,
    InvalidStatus,
    InvalidURI,
    NegotiationError,
    SecurityError,
)
from wsharbor.protocol.deflate import CLIENT_DEFAULTS
from wsharbor.protocol.http11 import Request, Response
from wsharbor.sync.client import (
    ClientConnection,
    backoff,
    connect,
    process_exception,
    reconnect,
    unix_connect,
)
from wsharbor.sync.server import ServerConnection

from .conftest import (
    HOST,
    TIMEOUT,
    LoopThread,
    RawServer,
    run_in_thread,
    silent_listener,
    sync_server,
    uri_of,
    watch_log,
    websockets_server,
)


async def async_echo(websocket: Any) -> None:
    async for message in websocket:
        await websocket.send(message)


@pytest.fixture
def asyncio_server() -> Iterator[str]:
    """Our asyncio server (wsharbor.serve) in a thread; yields its URI."""
    with wsharbor.serve_in_thread(async_echo, HOST, 0, ping_interval=None) as thread:
        yield f"ws://{HOST}:{thread.port}/"


# Against our asyncio server.


def test_echo_text_binary_and_fragments(asyncio_server: str) -> None:
    with connect(asyncio_server, open_timeout=TIMEOUT) as websocket:
        assert isinstance(websocket, ClientConnection)
        websocket.send("hello")
        assert websocket.recv(timeout=TIMEOUT) == "hello"
        websocket.send(b"\x00\xff")
        assert websocket.recv(timeout=TIMEOUT) == b"\x00\xff"
        websocket.send(bytearray(b"ba"))
        assert websocket.recv(timeout=TIMEOUT) == b"ba"
        websocket.send(memoryview(b"mv"))
        assert websocket.recv(timeout=TIMEOUT) == b"mv"
        websocket.send(["fra", "gmen", "ted"])
        assert websocket.recv(timeout=TIMEOUT) == "fragmented"
        websocket.send(iter([b"a", b"b"]))
        assert websocket.recv(timeout=TIMEOUT) == b"ab"
        websocket.send([])  # an empty iterable sends nothing
        websocket.send("after")
        assert websocket.recv(timeout=TIMEOUT) == "after"
    assert websocket.state is wsharbor.protocol.connection.State.CLOSED
    assert websocket.close_code == 1000
    assert websocket.close_reason == ""


def test_send_text_override_and_recv_decode(asyncio_server: str) -> None:
    with connect(asyncio_server) as websocket:
        websocket.send(b"caf\xc3\xa9", text=True)  # UTF-8 bytes sent as text
        assert websocket.recv(timeout=TIMEOUT) == "café"
        websocket.send("café", text=False)  # str sent as binary
        assert websocket.recv(timeout=TIMEOUT) == "café".encode()
        websocket.send("text")
        assert websocket.recv(timeout=TIMEOUT, decode=False) == b"text"
        websocket.send(b"bytes")
        assert websocket.recv(TIMEOUT, True) == "bytes"
        websocket.send(["a", "b"], text=False)
        assert websocket.recv(timeout=TIMEOUT) == b"ab"


def test_send_refuses_bad_types(asyncio_server: str) -> None:
    with connect(asyncio_server) as websocket:
        with pytest.raises(TypeError, match="dict"):
            websocket.send({"a": 1})  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            websocket.send(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="bytes or str"):
            websocket.send([1, 2])  # type: ignore[list-item]
        # A type error before any frame went out leaves the connection usable.
        with pytest.raises(TypeError, match="uniform"):
            websocket.send(["a", b"b"])  # type: ignore[list-item]
        websocket.send("still open")
        assert websocket.recv(timeout=TIMEOUT) == "still open"


def test_iteration_ends_on_normal_close(asyncio_server: str) -> None:
    websocket = connect(asyncio_server)
    websocket.send("one")
    websocket.send("two")
    received = []
    for message in websocket:
        received.append(message)
        if len(received) == 2:
            websocket.close()
    assert received == ["one", "two"]


def test_recv_timeout_keeps_the_message(asyncio_server: str) -> None:
    with connect(asyncio_server) as websocket:
        with pytest.raises(TimeoutError):
            websocket.recv(timeout=0)
        with pytest.raises(TimeoutError):
            websocket.recv(timeout=0.05)
        websocket.send("late")
        assert websocket.recv(timeout=TIMEOUT) == "late"


def test_connection_attributes(asyncio_server: str) -> None:
    with connect(asyncio_server) as websocket:
        assert websocket.local_address[0] == HOST
        assert websocket.remote_address[1] == int(asyncio_server.rsplit(":", 1)[1].strip("/"))
        assert websocket.id.version == 4
        assert websocket.logger.extra == {"websocket": websocket}  # type: ignore[union-attr]
        assert websocket.latency == 0.0
        assert websocket.state is wsharbor.protocol.connection.State.OPEN
        assert websocket.close_code is None and websocket.close_reason is None
        assert isinstance(websocket.request, Request)
        assert isinstance(websocket.response, Response) and websocket.response.status == 101
        assert websocket.subprotocol is None
        assert repr(websocket).endswith("OPEN>")
        websocket.username = "custom attributes work"  # type: ignore[attr-defined]


def test_ping_pong_and_latency(asyncio_server: str) -> None:
    with connect(asyncio_server) as websocket:
        pong = websocket.ping()
        assert pong.wait(TIMEOUT)
        assert websocket.latency > 0
        first = websocket.ping(b"abc")
        second = websocket.ping("def")
        assert second.wait(TIMEOUT) and first.is_set()
        websocket.pong(b"unsolicited")
        websocket.pong("text too")
        websocket.send("still works")
        assert websocket.recv(timeout=TIMEOUT) == "still works"


def test_ping_with_the_same_data_twice_is_refused() -> None:
    # The raw server doesn't close TCP: close_timeout ends the closing handshake.
    with RawServer() as raw, connect(raw.uri, compression=None, close_timeout=0.2) as websocket:
        raw.accepted.wait(TIMEOUT)
        pong = websocket.ping(b"same")
        with pytest.raises(ConcurrencyError):
            websocket.ping(b"same")
        assert not pong.is_set()  # the raw server never answers


def test_keepalive_fails_the_connection_without_pongs() -> None:
    with RawServer() as raw:
        # The raw server doesn't close TCP either: close_timeout ends the wait.
        websocket = connect(
            raw.uri, compression=None, ping_interval=0.05, ping_timeout=0.05, close_timeout=0.2
        )
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT)
    assert info.value.sent is not None
    assert info.value.sent.code == 1011
    assert info.value.sent.reason == "keepalive ping timeout"


def test_keepalive_pings_are_answered(asyncio_server: str) -> None:
    with (
        watch_log("wsharbor.client", "received keepalive pong") as pong_received,
        connect(asyncio_server, ping_interval=0.05, ping_timeout=TIMEOUT) as websocket,
    ):
        assert pong_received.wait(TIMEOUT)
        assert websocket.latency > 0
        websocket.send("alive")
        assert websocket.recv(timeout=TIMEOUT) == "alive"


def test_close_code_and_reason_reach_the_server() -> None:
    seen: list[Any] = []

    def handler(websocket: ServerConnection) -> None:
        try:
            websocket.recv()
        except wsharbor.ConnectionClosed as exc:
            seen.append(exc)

    with sync_server(handler) as server:
        websocket = connect(uri_of(server))
        websocket.close(4000, "bye")
        # The code the server echoed (our server echoes the code, not the reason).
        assert websocket.close_code == 4000
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            websocket.recv()
        assert info.value.sent is not None and info.value.sent.code == 4000
    assert isinstance(seen[0], wsharbor.ConnectionClosedError)
    assert seen[0].code == 4000 and seen[0].reason == "bye"


def test_close_with_an_invalid_code_raises_and_keeps_the_connection(asyncio_server: str) -> None:
    with connect(asyncio_server) as websocket:
        with pytest.raises(wsharbor.ProtocolError):
            websocket.close(999)
        websocket.send("open")
        assert websocket.recv(timeout=TIMEOUT) == "open"


def test_context_manager_closes_with_1011_on_exception() -> None:
    seen: list[Any] = []

    def handler(websocket: ServerConnection) -> None:
        try:
            websocket.recv()
        except wsharbor.ConnectionClosed as exc:
            seen.append(exc)

    with sync_server(handler) as server, pytest.raises(RuntimeError), connect(uri_of(server)):
        raise RuntimeError("boom")
    assert seen[0].code == 1011


def test_closed_connection_raises_on_send_and_recv(asyncio_server: str) -> None:
    websocket = connect(asyncio_server)
    websocket.close()
    websocket.close()  # idempotent
    with pytest.raises(wsharbor.ConnectionClosedOK):
        websocket.send("late")
    with pytest.raises(wsharbor.ConnectionClosedOK):
        websocket.recv()
    with pytest.raises(wsharbor.ConnectionClosedOK):
        websocket.ping()


def test_compression_negotiated_with_our_asyncio_server(asyncio_server: str) -> None:
    with connect(asyncio_server) as websocket:
        extensions = websocket.response.headers["Sec-WebSocket-Extensions"]  # type: ignore[union-attr]
        assert extensions.startswith("permessage-deflate")
        assert websocket.protocol is not None and len(websocket.protocol.extensions) == 1
        message = "compress me " * 10_000
        websocket.send(message)
        assert websocket.recv(timeout=TIMEOUT) == message
    with connect(asyncio_server, compression=None) as websocket:
        assert "Sec-WebSocket-Extensions" not in websocket.response.headers  # type: ignore[union-attr]
        assert "Sec-WebSocket-Extensions" not in websocket.request.headers  # type: ignore[union-attr]
    settings = dataclasses.replace(CLIENT_DEFAULTS, peer_window_bits=10)
    with connect(asyncio_server, compression=settings) as websocket:
        assert (
            "server_max_window_bits=10"
            in websocket.response.headers[  # type: ignore[union-attr]
                "Sec-WebSocket-Extensions"
            ]
        )


def test_options_reach_the_request(asyncio_server: str) -> None:
    with connect(
        asyncio_server,
        origin="https://example.com",
        additional_headers={"X-Token": "t0k"},
        user_agent_header="my-agent/1.0",
    ) as websocket:
        headers = websocket.request.headers  # type: ignore[union-attr]
        assert headers["Origin"] == "https://example.com"
        assert headers["X-Token"] == "t0k"
        assert headers["User-Agent"] == "my-agent/1.0"
    with connect(asyncio_server, user_agent_header=None) as websocket:
        assert "User-Agent" not in websocket.request.headers  # type: ignore[union-attr]
    with connect(asyncio_server) as websocket:
        assert websocket.request.headers["User-Agent"].startswith("wsharbor/")  # type: ignore[union-attr]


def test_user_info_becomes_basic_authorization() -> None:
    seen: list[str] = []

    def handler(websocket: ServerConnection) -> None:
        assert websocket.request is not None
        seen.append(websocket.request.headers["Authorization"])

    with sync_server(handler) as server:
        host, port = server.socket.getsockname()[:2]
        with connect(f"ws://user:p%40ss@{host}:{port}/"):
            pass
    assert seen == ["Basic " + base64.b64encode(b"user:p@ss").decode()]


def test_subprotocol_negotiated() -> None:
    with sync_server(subprotocols=["chat", "superchat"]) as server:
        with connect(uri_of(server), subprotocols=["superchat", "other"]) as websocket:
            assert websocket.subprotocol == "superchat"
        with pytest.raises(InvalidStatus) as info:
            connect(uri_of(server), subprotocols=["nothing-in-common"])
        assert info.value.response.status == 400


def test_subprotocol_not_offered_is_refused(loop_thread: LoopThread) -> None:
    async def handler(websocket: Any) -> None:
        await websocket.wait_closed()

    # websockets never selects a subprotocol that wasn't offered: add one by hand.
    def process_response(connection: Any, request: Any, response: Any) -> None:
        response.headers["Sec-WebSocket-Protocol"] = "unexpected"

    with (
        websockets_server(loop_thread, handler, process_response=process_response) as uri,
        pytest.raises(NegotiationError),
    ):
        connect(uri, subprotocols=["chat"])


# Handshake failures and timeouts.


def test_invalid_uri_and_arguments() -> None:
    with pytest.raises(InvalidURI):
        connect("http://localhost/")
    with pytest.raises(ValueError, match="ssl"):
        connect("ws://localhost/", ssl=ssl.create_default_context())
    with pytest.raises(ValueError, match="ping_interval"):
        connect("ws://localhost/", ping_interval=0, proxy=None)
    with pytest.raises(ValueError, match="max_queue"):
        connect("ws://localhost/", max_queue=(1, 4), proxy=None)
    with pytest.raises(ValueError, match="compression"):
        connect("ws://localhost/", compression="brotli", proxy=None)
    with pytest.raises(TypeError):
        connect("ws://localhost/", no_such_option=True, proxy=None, open_timeout=TIMEOUT)


def test_http_error_status_is_invalid_status() -> None:
    def process_request(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(403, "go away\n")

    with (
        sync_server(process_request=process_request) as server,
        pytest.raises(InvalidStatus) as info,
    ):
        connect(uri_of(server))
    assert info.value.response.status == 403
    assert info.value.response.body == b"go away\n"


def test_connection_refused() -> None:
    sock = socket.create_server((HOST, 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        connect(f"ws://{HOST}:{port}/", open_timeout=TIMEOUT)


def test_open_timeout_against_a_server_that_never_answers() -> None:
    listener = silent_listener()
    port = listener.getsockname()[1]
    try:
        with pytest.raises(TimeoutError):
            connect(f"ws://{HOST}:{port}/", open_timeout=0.2)
    finally:
        listener.close()


def test_server_closing_during_the_handshake_is_invalid_message() -> None:
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]

    def close_at_once() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.close()

    thread = threading.Thread(target=close_at_once, daemon=True)
    thread.start()
    try:
        with pytest.raises(InvalidMessage):
            connect(f"ws://{HOST}:{port}/", open_timeout=TIMEOUT)
    finally:
        thread.join(TIMEOUT)
        listener.close()


def test_garbage_answer_is_invalid_handshake() -> None:
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]

    def answer_garbage() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        conn.recv(4096)
        conn.close()

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        with pytest.raises(InvalidHandshake):
            connect(f"ws://{HOST}:{port}/", open_timeout=TIMEOUT)
    finally:
        thread.join(TIMEOUT)
        listener.close()


def test_connect_with_an_existing_socket(asyncio_server: str) -> None:
    port = int(asyncio_server.rsplit(":", 1)[1].strip("/"))
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    with connect("ws://example.invalid/", sock=sock) as websocket:
        assert websocket.request.headers["Host"] == "example.invalid"  # type: ignore[union-attr]
        websocket.send("over my socket")
        assert websocket.recv(timeout=TIMEOUT) == "over my socket"


def test_create_connection_subclass(asyncio_server: str) -> None:
    class Custom(ClientConnection):
        created = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            Custom.created += 1

    with connect(asyncio_server, create_connection=Custom) as websocket:
        assert isinstance(websocket, Custom)
    assert Custom.created == 1


def test_unix_connect(tmp_path: Any) -> None:
    path = str(tmp_path / "ws.sock")
    with sync_server(unix=True, path=path), unix_connect(path) as websocket:
        websocket.send("over a unix socket")
        assert websocket.recv(timeout=TIMEOUT) == "over a unix socket"
        assert websocket.request.headers["Host"] == "localhost"  # type: ignore[union-attr]


# Against websockets' asyncio server.


def test_against_websockets_asyncio_server(loop_thread: LoopThread) -> None:
    async def handler(websocket: Any) -> None:
        async for message in websocket:
            await websocket.send(message)

    with websockets_server(loop_thread, handler) as uri, connect(uri) as websocket:
        assert websocket.response.headers["Sec-WebSocket-Extensions"].startswith(  # type: ignore[union-attr]
            "permessage-deflate"
        )
        for message in ["text", b"binary", "x" * 100_000, b"\x00" * 70_000]:
            websocket.send(message)
            assert websocket.recv(timeout=TIMEOUT) == message
        websocket.send(["frag", "ments"])
        assert websocket.recv(timeout=TIMEOUT) == "fragments"
        assert websocket.ping().wait(TIMEOUT)


def test_websockets_server_closing_with_a_code(loop_thread: LoopThread) -> None:
    async def handler(websocket: Any) -> None:
        await websocket.close(4321, "server says bye")

    with websockets_server(loop_thread, handler) as uri:
        websocket = connect(uri)
        with pytest.raises(wsharbor.ConnectionClosedError) as info:
            websocket.recv(timeout=TIMEOUT)
    assert info.value.code == 4321 and info.value.reason == "server says bye"
    assert websocket.close_code == 4321


def test_recv_streaming_from_websockets_fragments(loop_thread: LoopThread) -> None:
    async def handler(websocket: Any) -> None:
        await websocket.send(["one ", "two ", "three"])
        await websocket.send([b"\x01", b"\x02"])
        await websocket.wait_closed()

    with websockets_server(loop_thread, handler, compression=None) as uri, connect(uri) as ws:
        # websockets ends a fragmented message with an empty frame.
        assert list(ws.recv_streaming()) == ["one ", "two ", "three", ""]
        assert list(ws.recv_streaming(decode=True)) == ["\x01", "\x02", ""]


def test_wss_against_websockets_server(
    loop_thread: LoopThread, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async def handler(websocket: Any) -> None:
        async for message in websocket:
            await websocket.send(message)

    with websockets_server(loop_thread, handler, ssl=server_ssl) as uri:
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(uri, open_timeout=TIMEOUT)  # the default context doesn't trust our CA
        with connect(uri, ssl=client_ssl) as websocket:
            assert isinstance(websocket.socket, ssl.SSLSocket)
            websocket.send("secret")
            assert websocket.recv(timeout=TIMEOUT) == "secret"
        with connect(
            uri.replace("127.0.0.1", "localhost"), ssl=client_ssl, server_hostname="localhost"
        ) as websocket:
            websocket.send("by name")
            assert websocket.recv(timeout=TIMEOUT) == "by name"


def test_wss_against_our_asyncio_server(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    with wsharbor.serve_in_thread(async_echo, HOST, 0, ssl=server_ssl) as thread:
        with connect(f"wss://{HOST}:{thread.port}/", ssl=client_ssl) as websocket:
            websocket.send("tls")
            assert websocket.recv(timeout=TIMEOUT) == "tls"
            websocket.close(4001, "done")
        assert websocket.close_code == 4001


# Proxies (RFC 6455 section 4.1, HTTP CONNECT).


class ConnectProxy:
    """A small HTTP CONNECT proxy in threads; it records the requests it gets."""

    def __init__(self, answer: bytes | None = None) -> None:
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.answer = answer
        self.threads: list[threading.Thread] = []
        self._start(self._accept)

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._start(self._tunnel, client)

    def _tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(4096)
            if not data:
                client.close()
                return
            head += data
        self.requests.append(head)
        if self.answer is not None:
            client.sendall(self.answer)
            client.close()
            return
        target = head.split(b" ")[1].decode()
        host, _, port = target.rpartition(":")
        upstream = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        upstream.settimeout(None)
        # Proxies often answer in HTTP/1.0.
        client.sendall(b"HTTP/1.0 200 Connection established\r\n\r\n")
        self._start(self._pipe, client, upstream)
        self._pipe(upstream, client)

    @staticmethod
    def _pipe(source: socket.socket, destination: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                destination.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, destination):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def connect_proxy() -> Iterator[ConnectProxy]:
    proxy = ConnectProxy()
    try:
        yield proxy
    finally:
        proxy.close()


def test_http_connect_proxy(asyncio_server: str, connect_proxy: ConnectProxy) -> None:
    proxy = f"http://user:secret@{HOST}:{connect_proxy.port}"
    with connect(asyncio_server, proxy=proxy) as websocket:
        websocket.send("through the proxy")
        assert websocket.recv(timeout=TIMEOUT) == "through the proxy"
    (request,) = connect_proxy.requests
    authority = asyncio_server.removeprefix("ws://").rstrip("/")
    assert request.startswith(f"CONNECT {authority} HTTP/1.1\r\n".encode())
    credentials = base64.b64encode(b"user:secret").decode()
    assert f"Proxy-Authorization: Basic {credentials}".encode() in request


def test_proxy_from_the_environment(
    asyncio_server: str, connect_proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("http_proxy", f"http://{HOST}:{connect_proxy.port}")
    with connect(asyncio_server) as websocket:
        websocket.send("env proxy")
        assert websocket.recv(timeout=TIMEOUT) == "env proxy"
    assert len(connect_proxy.requests) == 1
    # proxy=None connects directly; no_proxy bypasses the proxy.
    with connect(asyncio_server, proxy=None):
        pass
    monkeypatch.setenv("no_proxy", HOST)
    with connect(asyncio_server):
        pass
    assert len(connect_proxy.requests) == 1


def test_proxy_refusing_the_tunnel(asyncio_server: str) -> None:
    proxy = ConnectProxy(
        answer=b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    )
    try:
        with pytest.raises(InvalidProxyStatus) as info:
            connect(asyncio_server, proxy=f"http://{HOST}:{proxy.port}", open_timeout=TIMEOUT)
        assert info.value.response.status == 407
    finally:
        proxy.close()


def test_invalid_proxy_urls() -> None:
    with pytest.raises(InvalidProxy):
        connect("ws://localhost/", proxy="ftp://proxy:21")
    with pytest.raises(InvalidProxy):
        connect("ws://localhost/", proxy="http://proxy:3128/path")
    with pytest.raises(NotImplementedError, match="TLS in TLS"):
        connect("wss://localhost/", proxy="https://proxy:3128")


# websockets 17: wait_closed(), legacy=, reconnect(), redirects.


def test_wait_closed(asyncio_server: str) -> None:
    websocket = connect(asyncio_server)
    assert websocket.wait_closed(timeout=0) is False
    closer, _ = run_in_thread(websocket.close)
    assert websocket.wait_closed(timeout=TIMEOUT) is True
    closer.join(TIMEOUT)


def test_legacy_flag_and_reconnect_as_a_context_manager(asyncio_server: str) -> None:
    with connect(asyncio_server, legacy=True) as websocket:
        assert isinstance(websocket, ClientConnection)
    connecter = connect(asyncio_server, legacy=False)
    assert isinstance(connecter, reconnect)
    with connecter as websocket:
        websocket.send("via reconnect")
        assert websocket.recv(timeout=TIMEOUT) == "via reconnect"
        with pytest.raises(RuntimeError, match="reentrant"), connecter:
            pass
    assert websocket.close_code == 1000
    assert isinstance(connecter.connect(), ClientConnection)


def test_reconnect_retries_transient_errors_and_raises_fatal_ones() -> None:
    attempts: list[int] = []

    def flaky(connection: ServerConnection, request: Request) -> Response | None:
        attempts.append(len(attempts))
        if len(attempts) < 3:
            return connection.respond(503, "try again\n")
        if len(attempts) == 4:
            return connection.respond(403, "forbidden\n")
        return None

    with sync_server(process_request=flaky) as server:
        connections = []
        with pytest.raises(InvalidStatus) as info:
            for websocket in reconnect(uri_of(server), reconnect_delays=lambda: iter([0.0] * 5)):
                connections.append(websocket)
                websocket.send("connected")
                assert websocket.recv(timeout=TIMEOUT) == "connected"
        assert info.value.response.status == 403
        assert len(connections) == 1 and len(attempts) == 4
        assert connections[0].close_code == 1000  # closed after its iteration


def test_process_exception_decides(asyncio_server: str) -> None:
    listener = silent_listener()
    port = listener.getsockname()[1]
    listener.close()  # nothing listens any more: connection refused
    seen: list[Exception] = []

    def give_up(exc: Exception) -> Exception | None:
        seen.append(exc)
        return None if len(seen) < 2 else RuntimeError("giving up")

    with pytest.raises(RuntimeError, match="giving up"):
        for _ in reconnect(
            f"ws://{HOST}:{port}/",
            process_exception=give_up,
            reconnect_delays=lambda: iter([0.0] * 5),
            proxy=None,
        ):
            pass
    assert all(isinstance(exc, ConnectionRefusedError) for exc in seen)
    assert process_exception(ConnectionRefusedError()) is None
    assert process_exception(ValueError()) is not None
    delays = backoff(initial_delay=1, min_delay=2, max_delay=5, factor=2)
    first = next(delays)
    assert 0 <= first <= 1
    assert [next(delays) for _ in range(4)] == [2, 4, 5, 5]


def test_redirects_are_followed(asyncio_server: str) -> None:
    def redirect(connection: ServerConnection, request: Request) -> Response:
        response = connection.respond(302, "")
        response.headers["Location"] = asyncio_server
        return response

    with (
        sync_server(process_request=redirect) as server,
        connect(uri_of(server), additional_headers={"Cookie": "a=b"}) as websocket,
    ):
        websocket.send("redirected")
        assert websocket.recv(timeout=TIMEOUT) == "redirected"
        # Another port is another origin: credentials stay behind.
        assert "Cookie" not in websocket.request.headers  # type: ignore[union-attr]


def test_redirect_loop_and_downgrade_are_security_errors(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    def to_itself(connection: ServerConnection, request: Request) -> Response:
        response = connection.respond(301, "")
        response.headers["Location"] = request.path + "x"
        return response

    with sync_server(process_request=to_itself) as server, pytest.raises(SecurityError):
        connect(uri_of(server), open_timeout=TIMEOUT)

    def downgrade(connection: ServerConnection, request: Request) -> Response:
        response = connection.respond(302, "")
        response.headers["Location"] = "ws://127.0.0.1:1/"
        return response

    with (
        sync_server(process_request=downgrade, ssl=server_ssl) as server,
        pytest.raises(SecurityError, match="non-secure"),
    ):
        connect(uri_of(server, "wss"), ssl=client_ssl)
