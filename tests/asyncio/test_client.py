"""Tests for ``wsharbor.connect``: options, handshake failures, TLS, Unix sockets
and the reconnecting ``async for`` loop, against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trustme

import wsharbor
from wsharbor.exceptions import InvalidHeader, InvalidMessage, NegotiationError

DEADLINE = 5.0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


async def echo(ws: wsharbor.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def uri_of(server: wsharbor.Server, scheme: str = "ws") -> str:
    host, port = server.sockets[0].getsockname()[:2]
    return f"{scheme}://{host}:{port}/"


@contextlib.asynccontextmanager
async def serving(handler: Any = echo, **options: Any) -> AsyncIterator[wsharbor.Server]:
    options.setdefault("ping_interval", None)
    options.setdefault("close_timeout", 2)
    async with wsharbor.serve(handler, "127.0.0.1", 0, **options) as server:
        yield server


@contextlib.asynccontextmanager
async def raw_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[str]:
    """A TCP server running ``handle`` for each connection; yields its ws:// URI."""
    tasks: set[asyncio.Task[None]] = set()

    async def wrapper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            # Swallow the cancellation at exit: asyncio.start_server logs the
            # task's exception otherwise.
            pass
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(wrapper, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def accept_for(request: bytes) -> str:
    key = next(
        line.split(b":", 1)[1].strip().decode()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def answering(response: Callable[[bytes], bytes]) -> Any:
    """A raw handler: read the request, write ``response(request)``, wait for EOF."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        writer.write(response(request))
        await reader.read()

    return handle


class RecordingHandler(logging.Handler):
    """Collects log records and wakes up waiters on each one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.changed.set()

    def retries(self) -> list[logging.LogRecord]:
        return [r for r in self.records if "reconnecting in" in r.getMessage()]

    async def wait_for_retries(self, count: int) -> None:
        while len(self.retries()) < count:
            self.changed.clear()
            await self.changed.wait()


@pytest.fixture
def recording_logger() -> Any:
    logger = logging.getLogger(f"wsharbor.client.test.{os.urandom(4).hex()}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = RecordingHandler()
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------------------
# Awaitable and async context manager
# ---------------------------------------------------------------------------


async def test_await_connect() -> None:
    async with serving() as server:
        async with asyncio.timeout(DEADLINE):
            ws = await wsharbor.connect(uri_of(server))
            assert isinstance(ws, wsharbor.ClientConnection)
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.close()
            assert ws.close_code == 1000


async def test_async_with_connect_closes_on_exit() -> None:
    codes: list[int | None] = []

    async def handler(ws: wsharbor.ServerConnection) -> None:
        await echo(ws)
        codes.append(ws.close_code)

    async with serving(handler) as server:
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(uri_of(server)) as ws:
                await ws.send(b"bytes")
                assert await ws.recv() == b"bytes"
            assert ws.state.name == "CLOSED"
            assert ws.close_code == 1000
    assert codes == [1000]


async def test_async_with_connect_closes_on_error() -> None:
    async with serving() as server:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(ZeroDivisionError):
                async with wsharbor.connect(uri_of(server)) as ws:
                    1 / 0  # noqa: B018
            # As websockets: leaving on an exception closes with 1011 (echoed).
            assert ws.close_code == 1011


async def test_request_path_and_query() -> None:
    paths: list[str] = []

    async def handler(ws: wsharbor.ServerConnection) -> None:
        paths.append(ws.request.path if ws.request else "")

    async with serving(handler) as server:
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(uri_of(server) + "chat/room?id=1&x=%20y") as ws:
                await ws.wait_closed()
    assert paths == ["/chat/room?id=1&x=%20y"]


# ---------------------------------------------------------------------------
# Handshake options
# ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def request_recorder(**options: Any) -> AsyncIterator[tuple[str, list[Any]]]:
    """A server that records each connection's request and response."""
    seen: list[Any] = []

    async def handler(ws: wsharbor.ServerConnection) -> None:
        seen.append(ws)
        await echo(ws)

    async with serving(handler, **options) as server:
        yield uri_of(server), seen


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Token": "secret", "X-Other": "1"},
        [("X-Token", "secret"), ("X-Other", "1")],
        wsharbor.Headers([("X-Token", "secret"), ("X-Other", "1")]),
    ],
    ids=["dict", "pairs", "Headers"],
)
async def test_additional_headers(headers: Any) -> None:
    async with request_recorder() as (uri, seen):
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(uri, additional_headers=headers) as ws:
                await ws.send("x")
                await ws.recv()
    request = seen[0].request
    assert request.headers["X-Token"] == "secret"
    assert request.headers["X-Other"] == "1"
    assert request.headers.get("User-Agent", "").startswith("wsharbor")


async def test_additional_headers_repeated() -> None:
    async with request_recorder() as (uri, seen):
        async with asyncio.timeout(DEADLINE):
            headers = [("X-Many", "a"), ("X-Many", "b")]
            async with wsharbor.connect(uri, additional_headers=headers) as ws:
                await ws.send("x")
                await ws.recv()
    assert seen[0].request.headers.get_all("X-Many") == ["a", "b"]


async def test_user_info_becomes_basic_authorization() -> None:
    async with request_recorder() as (uri, seen):
        uri = uri.replace("ws://", "ws://user:p%40ss@")
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(uri) as ws:
                await ws.send("x")
                await ws.recv()
    expected = "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert seen[0].request.headers["Authorization"] == expected


@pytest.mark.parametrize(
    ("offered", "expected"),
    [(["superchat", "chat"], "superchat"), (["chat"], "chat"), (["other", "chat"], "chat")],
)
async def test_subprotocols(offered: list[str], expected: str) -> None:
    async with request_recorder(subprotocols=["superchat", "chat"]) as (uri, seen):
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(uri, subprotocols=offered) as ws:
                assert ws.subprotocol == expected
                await ws.send("x")
                await ws.recv()
    assert seen[0].subprotocol == expected
    assert seen[0].request.headers["Sec-WebSocket-Protocol"] == ", ".join(offered)


async def test_no_subprotocol_offered() -> None:
    async with request_recorder(subprotocols=["chat"]) as (uri, seen):
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(uri) as ws:
                assert ws.subprotocol is None
                await ws.send("x")
                await ws.recv()
    assert "Sec-WebSocket-Protocol" not in seen[0].request.headers


async def test_unsupported_subprotocol_rejected_400() -> None:
    async with request_recorder(subprotocols=["chat"]) as (uri, _):
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(wsharbor.InvalidStatus) as info:
                await wsharbor.connect(uri, subprotocols=["other"])
    assert info.value.status == 400


async def test_server_selects_subprotocol_not_offered() -> None:
    def response(request: bytes) -> bytes:
        return (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_for(request).encode() + b"\r\n"
            b"Sec-WebSocket-Protocol: sneaky\r\n\r\n"
        )

    async with raw_server(answering(response)) as uri:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(NegotiationError):
                await wsharbor.connect(uri, subprotocols=["chat"])


async def test_origin() -> None:
    async with request_recorder(origins=["https://good.example"]) as (uri, seen):
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(uri, origin="https://good.example") as ws:
                await ws.send("x")
                await ws.recv()
            with pytest.raises(wsharbor.InvalidStatus) as info:
                await wsharbor.connect(uri, origin="https://evil.example")
            assert info.value.status == 403
            with pytest.raises(wsharbor.InvalidStatus) as info:
                await wsharbor.connect(uri)  # no Origin at all
            assert info.value.status == 403
    assert [ws.request.headers["Origin"] for ws in seen] == ["https://good.example"]


CLIENT_SETTINGS = wsharbor.DeflateSettings(
    window_bits=11, memory_level=4, context_takeover=False, peer_window_bits=10
)


@pytest.mark.parametrize(
    ("compression", "offer", "answer"),
    [
        (None, None, None),
        (
            "deflate",
            "permessage-deflate; client_max_window_bits",
            # Our server's defaults: no context takeover on either side.
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
            " client_max_window_bits=12",
        ),
        (
            CLIENT_SETTINGS,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10;"
            " client_max_window_bits=11",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
            " server_max_window_bits=10; client_max_window_bits=11",
        ),
    ],
    ids=["none", "deflate", "settings"],
)
async def test_compression(compression: Any, offer: str | None, answer: str | None) -> None:
    async with request_recorder() as (uri, seen):
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(uri, compression=compression) as ws:
                assert ws.response is not None
                assert ws.response.headers.get("Sec-WebSocket-Extensions") == answer
                for message in ["small", "large " * 10_000, b"\x00" * 100_000]:
                    await ws.send(message)
                    assert await ws.recv() == message
    assert seen[0].request.headers.get("Sec-WebSocket-Extensions") == offer


async def test_compression_declined_by_server() -> None:
    async with request_recorder(compression=None) as (uri, seen):
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(uri, compression="deflate") as ws:
                assert ws.response is not None
                assert "Sec-WebSocket-Extensions" not in ws.response.headers
                await ws.send("large " * 1000)
                assert await ws.recv() == "large " * 1000
    assert "Sec-WebSocket-Extensions" in seen[0].request.headers


@pytest.mark.parametrize("compression", ["gzip", 15, True])
def test_invalid_compression(compression: Any) -> None:
    with pytest.raises((ValueError, TypeError)):
        wsharbor.connect("ws://127.0.0.1:1/", compression=compression)


@pytest.mark.parametrize(
    "options",
    [{"backoff_min": 0}, {"backoff_min": 2, "backoff_max": 1}, {"backoff_factor": 0.5}],
)
def test_invalid_backoff(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        wsharbor.connect("ws://127.0.0.1:1/", **options)


# ---------------------------------------------------------------------------
# Handshake failures
# ---------------------------------------------------------------------------


async def test_open_timeout_when_server_never_answers() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # accept, read the request, never answer

    async with raw_server(silent) as uri:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(TimeoutError):
                await wsharbor.connect(uri, open_timeout=0.2)


async def test_open_timeout_in_async_with() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with raw_server(silent) as uri:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(TimeoutError):
                async with wsharbor.connect(uri, open_timeout=0.2):
                    pytest.fail("connected")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 429, 500, 503])
async def test_invalid_status_from_process_request(status: int) -> None:
    def process_request(connection: Any, request: wsharbor.Request) -> Any:
        return (status, [("X-Reason", "test")], b"go away\n")

    async with serving(process_request=process_request) as server:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(wsharbor.InvalidStatus) as info:
                await wsharbor.connect(uri_of(server))
    assert info.value.status == status
    assert isinstance(info.value, wsharbor.InvalidHandshake)
    assert info.value.response.headers["X-Reason"] == "test"
    assert info.value.response.body == b"go away\n"


async def test_invalid_status_from_raw_server() -> None:
    def response(request: bytes) -> bytes:
        return b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops\n"

    async with raw_server(answering(response)) as uri:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(wsharbor.InvalidStatus) as info:
                await wsharbor.connect(uri)
    assert info.value.status == 500


async def test_redirect_is_followed() -> None:
    # As websockets 17: 3xx with Location is followed (docs/coming-from-websockets.md).
    async with serving() as server:
        target = uri_of(server) + "moved?x=1"

        def response(request: bytes) -> bytes:
            return (
                b"HTTP/1.1 302 Found\r\nLocation: " + target.encode() + b"\r\n"
                b"Content-Length: 0\r\n\r\n"
            )

        async with raw_server(answering(response)) as uri:
            async with asyncio.timeout(DEADLINE):
                async with wsharbor.connect(uri) as ws:
                    assert ws.request is not None and ws.request.path == "/moved?x=1"
                    await ws.send("after redirect")
                    assert await ws.recv() == "after redirect"


async def test_redirect_downgrading_tls_is_refused() -> None:
    def response(request: bytes) -> bytes:
        return b"HTTP/1.1 302 Found\r\nLocation: ws://elsewhere/\r\nContent-Length: 0\r\n\r\n"

    async with raw_server(answering(response)) as uri:
        connecter = wsharbor.connect(uri)
        redirect = wsharbor.InvalidStatus(
            wsharbor.Response(302, "Found", wsharbor.Headers({"Location": "ws://x/"}), b"")
        )
        connecter.ws_uri = wsharbor.asyncio.client.parse_uri("wss://secure/")
        assert isinstance(connecter._redirect(redirect), wsharbor.SecurityError)


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage\r\n\r\n",
        b"\x00\x01\x02\x03\r\n\r\n",
        b"HTTP/1.1 abc Switching\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nno colon here\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 101 OK\r\n" + b"X: " + b"y" * 100_000 + b"\r\n\r\n",
    ],
    ids=["words", "binary", "status", "header", "ssh", "huge-header"],
)
async def test_garbage_response(garbage: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(garbage)
        await writer.drain()
        writer.close()  # then EOF, for the answers that are merely incomplete

    async with raw_server(handle) as uri:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(wsharbor.InvalidHandshake) as info:
                await wsharbor.connect(uri)
    assert not isinstance(info.value, wsharbor.InvalidStatus)


async def test_connection_closed_during_handshake() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")

    async with raw_server(hang_up) as uri:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(InvalidMessage):
                await wsharbor.connect(uri)


@pytest.mark.parametrize(
    "headers",
    [
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n",
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n",
        b"Upgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n",
        b"Upgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n",
    ],
    ids=["wrong-accept", "no-accept", "no-upgrade", "wrong-upgrade", "no-connection"],
)
async def test_invalid_101_response(headers: bytes) -> None:
    def response(request: bytes) -> bytes:
        head = headers.replace(b"{accept}", accept_for(request).encode())
        return b"HTTP/1.1 101 Switching Protocols\r\n" + head + b"\r\n"

    async with raw_server(answering(response)) as uri:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(InvalidHeader):
                await wsharbor.connect(uri)


async def test_extension_not_offered() -> None:
    def response(request: bytes) -> bytes:
        return (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_for(request).encode() + b"\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        )

    async with raw_server(answering(response)) as uri:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(NegotiationError):
                await wsharbor.connect(uri, compression=None)


async def test_frames_right_after_101_are_not_lost() -> None:
    # The server's first frames arrive in the same segment as the 101.
    def response(request: bytes) -> bytes:
        return (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_for(request).encode() + b"\r\n\r\n"
            b"\x81\x05hello\x82\x02\x00\x01"
        )

    async with raw_server(answering(response)) as uri:
        async with asyncio.timeout(DEADLINE):
            ws = await wsharbor.connect(uri, close_timeout=1)
            assert await ws.recv() == "hello"
            assert await ws.recv() == b"\x00\x01"
            ws.abort()


async def test_connection_refused() -> None:
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(OSError):
            await wsharbor.connect(f"ws://127.0.0.1:{closed_port()}/")


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1/",
        "https://127.0.0.1/",
        "ws://",
        "ws:///path",
        "wss://:443/",
        "ws://127.0.0.1:99999/",
        "ws://127.0.0.1:port/",
        "ws://127.0.0.1/#fragment",
        "127.0.0.1:8765",
        "",
        "ws://user@127.0.0.1/",
    ],
)
async def test_invalid_uri(uri: str) -> None:
    with pytest.raises(wsharbor.InvalidURI):
        await wsharbor.connect(uri)


def test_invalid_uri_raised_at_call_time() -> None:
    # Before any I/O, in the caller's frame.
    with pytest.raises(wsharbor.InvalidURI):
        wsharbor.connect("http://127.0.0.1/")


def test_ssl_with_ws_uri() -> None:
    with pytest.raises(ValueError, match="incompatible with a ws:// URI"):
        wsharbor.connect("ws://127.0.0.1/", ssl=ssl.create_default_context())


# ---------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def test_wss_default_context_rejects_self_signed(server_ssl: ssl.SSLContext) -> None:
    async with serving(ssl=server_ssl) as server:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(ssl.SSLCertVerificationError):
                await wsharbor.connect(uri_of(server, "wss"))


async def test_wss_with_trusted_context(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    async with serving(ssl=server_ssl) as server:
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(uri_of(server, "wss"), ssl=client_ssl) as ws:
                assert ws.transport is not None
                assert ws.transport.get_extra_info("ssl_object") is not None
                await ws.send("secure " * 1000)
                assert await ws.recv() == "secure " * 1000
            assert ws.close_code == 1000


async def test_wss_hostname_is_checked(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    # The certificate names 127.0.0.1 and localhost; connect through a socket
    # whose URI names another host: verification must fail.
    async with serving(ssl=server_ssl) as server:
        port = server.sockets[0].getsockname()[1]
        sock = socket.create_connection(("127.0.0.1", port))
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(ssl.SSLCertVerificationError):
                await wsharbor.connect(f"wss://other.example:{port}/", ssl=client_ssl, sock=sock)
        sock.close()


async def test_ws_to_wss_server_fails_cleanly(server_ssl: ssl.SSLContext) -> None:
    async with serving(ssl=server_ssl) as server:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises((wsharbor.InvalidHandshake, OSError)):
                await wsharbor.connect(uri_of(server), open_timeout=2)


# ---------------------------------------------------------------------------
# Unix sockets and sock=
# ---------------------------------------------------------------------------


async def test_unix_connect(tmp_path: Any) -> None:
    path = str(tmp_path / "ws.sock")
    paths: list[str] = []

    async def handler(ws: wsharbor.ServerConnection) -> None:
        paths.append(ws.path)
        await echo(ws)

    async with wsharbor.unix_serve(handler, path, ping_interval=None):
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.unix_connect(path) as ws:
                await ws.send("over unix")
                assert await ws.recv() == "over unix"
            async with wsharbor.unix_connect(path, "ws://localhost/some/path") as ws:
                await ws.send(b"again")
                assert await ws.recv() == b"again"
    assert paths == ["/", "/some/path"]


async def test_unix_connect_tls(
    tmp_path: Any, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    path = str(tmp_path / "wss.sock")
    async with wsharbor.unix_serve(echo, path, ssl=server_ssl, ping_interval=None):
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.unix_connect(path, ssl=client_ssl) as ws:
                await ws.send("tls over unix")
                assert await ws.recv() == "tls over unix"


async def test_connect_with_sock() -> None:
    async with serving() as server:
        sock = socket.create_connection(server.sockets[0].getsockname()[:2])
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect("ws://anything.invalid/", sock=sock) as ws:
                await ws.send("via sock")
                assert await ws.recv() == "via sock"


# ---------------------------------------------------------------------------
# Reconnection: async for websocket in connect(...)
# ---------------------------------------------------------------------------

FAST = {"backoff_min": 0.01, "backoff_max": 0.05}


async def test_reconnects_after_each_close() -> None:
    connections = 0

    async def one_message(ws: wsharbor.ServerConnection) -> None:
        nonlocal connections
        connections += 1
        await ws.send(f"connection {connections}")
        # The handler returns: the server closes the connection (1000).

    received: list[str | bytes] = []
    async with serving(one_message) as server:
        async with asyncio.timeout(DEADLINE):
            async for ws in wsharbor.connect(uri_of(server), **FAST):
                received.append(await ws.recv())
                with pytest.raises(wsharbor.ConnectionClosedOK):
                    await ws.recv()
                if len(received) == 4:
                    break
    assert received == [f"connection {i}" for i in range(1, 5)]
    assert connections == 4


async def test_reconnects_after_abnormal_closure() -> None:
    attempts = 0

    async def drop(ws: wsharbor.ServerConnection) -> None:
        nonlocal attempts
        attempts += 1
        await ws.send("hi")
        ws.abort()  # no closing handshake: 1006

    async with serving(drop) as server:
        async with asyncio.timeout(DEADLINE):
            count = 0
            async for ws in wsharbor.connect(uri_of(server), **FAST):
                count += 1
                try:
                    await ws.recv()
                    await ws.recv()
                except wsharbor.ConnectionClosedError as exc:
                    assert exc.code == 1006
                if count == 3:
                    break
    assert attempts == 3


async def test_break_closes_the_connection() -> None:
    codes: list[int | None] = []
    closed = asyncio.Event()

    async def handler(ws: wsharbor.ServerConnection) -> None:
        with contextlib.suppress(wsharbor.ConnectionClosed):
            await echo(ws)
        codes.append(ws.close_code)
        closed.set()

    async with serving(handler) as server:
        async with asyncio.timeout(DEADLINE):
            async for ws in wsharbor.connect(uri_of(server), **FAST):
                await ws.send("x")
                await ws.recv()
                break
            # The generator's cleanup closes the connection: with 1011, as
            # websockets 17 does (the generator exits on GeneratorExit).
            await closed.wait()
            await ws.wait_closed()
    assert codes == [1011]


async def test_retries_until_the_server_starts(recording_logger: Any) -> None:
    logger, log = recording_logger
    port = closed_port()
    uri = f"ws://127.0.0.1:{port}/"

    async def client() -> str | bytes:
        async for ws in wsharbor.connect(uri, logger=logger, **FAST):
            await ws.send("finally")
            message = await ws.recv()
            await ws.close()
            return message
        raise AssertionError("unreachable")

    async with asyncio.timeout(DEADLINE):
        task = asyncio.create_task(client())
        try:
            # Several refused attempts, then the server starts on that port.
            await log.wait_for_retries(3)
            assert not task.done()
            async with wsharbor.serve(echo, "127.0.0.1", port, ping_interval=None):
                assert await task == "finally"
        finally:
            task.cancel()
    assert all("ConnectionRefusedError" in r.args[1] for r in log.retries())  # type: ignore[index, operator]


async def test_retries_5xx_then_connects() -> None:
    attempts = 0

    def process_request(connection: Any, request: wsharbor.Request) -> Any:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            return (503, [], b"not yet\n")
        return None

    async with serving(process_request=process_request) as server:
        async with asyncio.timeout(DEADLINE):
            async for ws in wsharbor.connect(uri_of(server), **FAST):
                await ws.send("in")
                assert await ws.recv() == "in"
                break
    assert attempts == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_4xx_is_not_retried(status: int) -> None:
    attempts = 0

    def process_request(connection: Any, request: wsharbor.Request) -> Any:
        nonlocal attempts
        attempts += 1
        return (status, [], b"no\n")

    async with serving(process_request=process_request) as server:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(wsharbor.InvalidStatus) as info:
                async for _ in wsharbor.connect(uri_of(server), **FAST):
                    pytest.fail("connected")
    assert info.value.status == status
    assert attempts == 1


async def test_429_is_raised_unless_process_exception_retries_it() -> None:
    attempts = 0

    def process_request(connection: Any, request: wsharbor.Request) -> Any:
        nonlocal attempts
        attempts += 1
        return (429, [], b"slow down\n") if attempts <= 2 else None

    def retry_429(exc: Exception) -> Exception | None:
        if isinstance(exc, wsharbor.InvalidStatus) and exc.response.status_code == 429:
            return None
        return wsharbor.asyncio.client.process_exception(exc)

    async with serving(process_request=process_request) as server:
        async with asyncio.timeout(DEADLINE):
            # As websockets: only 500, 502, 503 and 504 are retried by default.
            with pytest.raises(wsharbor.InvalidStatus):
                async for _ in wsharbor.connect(uri_of(server), **FAST):
                    break
            assert attempts == 1
            async for _ in wsharbor.connect(uri_of(server), process_exception=retry_429, **FAST):
                break
    assert attempts == 3


async def test_negotiation_error_is_not_retried() -> None:
    attempts = 0

    def response(request: bytes) -> bytes:
        nonlocal attempts
        attempts += 1
        return (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_for(request).encode() + b"\r\n"
            b"Sec-WebSocket-Protocol: sneaky\r\n\r\n"
        )

    async with raw_server(answering(response)) as uri:
        async with asyncio.timeout(DEADLINE):
            with pytest.raises(NegotiationError):
                async for _ in wsharbor.connect(uri, subprotocols=["chat"], **FAST):
                    pytest.fail("connected")
    assert attempts == 1


async def test_backoff_is_capped_and_jittered(recording_logger: Any) -> None:
    # The delays aren't exposed: observe them in the retry log records, whose
    # second argument is the delay chosen for that attempt.
    logger, log = recording_logger
    backoff_min, backoff_max, factor = 0.001, 0.004, 2.0
    uri = f"ws://127.0.0.1:{closed_port()}/"

    async def forever() -> None:
        async for _ in wsharbor.connect(
            uri,
            logger=logger,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            backoff_factor=factor,
        ):
            pytest.fail("connected")

    async with asyncio.timeout(DEADLINE):
        task = asyncio.create_task(forever())
        try:
            await log.wait_for_retries(40)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    delays = [float(r.args[0]) for r in log.retries()]  # type: ignore[index]
    # Capped exponential backoff with full jitter: attempt i waits a random
    # time in [0, min(backoff_min * factor**i, backoff_max)].
    for i, delay in enumerate(delays):
        assert 0 <= delay <= min(backoff_min * factor**i, backoff_max) + 1e-12, (i, delay)
    # Jittered: not a fixed sequence.
    capped = delays[5:]
    assert len(set(capped)) > len(capped) // 2
    # And the cap is reached: some delays exceed what the first step allows.
    assert max(capped) > backoff_min


# ---------------------------------------------------------------------------
# Closing against misbehaving servers (bounded by close_timeout)
# ---------------------------------------------------------------------------


def handshake_then(
    after: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_for(request).encode() + b"\r\n\r\n"
        )
        await after(reader, writer)

    return handle


async def test_close_when_server_answers_but_never_closes_tcp() -> None:
    eof = asyncio.Event()

    async def answer_close_keep_tcp(reader: asyncio.StreamReader, writer: Any) -> None:
        header = await reader.readexactly(2)
        assert header[0] == 0x88  # the client's close frame
        await reader.readexactly(4 + (header[1] & 0x7F))
        writer.write(b"\x88\x02\x03\xe8")  # 1000, then keep the connection open
        await reader.read()
        eof.set()

    async with raw_server(handshake_then(answer_close_keep_tcp)) as uri:
        async with asyncio.timeout(DEADLINE):
            ws = await wsharbor.connect(uri, close_timeout=0.2)
            await ws.close()
            assert ws.close_code == 1000
            await eof.wait()  # the client closed the TCP connection itself


async def test_close_when_server_never_answers() -> None:
    async def ignore(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.read()

    async with raw_server(handshake_then(ignore)) as uri:
        async with asyncio.timeout(DEADLINE):
            ws = await wsharbor.connect(uri, close_timeout=0.2)
            await ws.close()
            assert ws.close_code == 1006
            with pytest.raises(wsharbor.ConnectionClosedError):
                await ws.recv()


async def test_server_closes_tcp_without_close_frame() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: Any) -> None:
        writer.write(b"\x81\x02hi")
        await writer.drain()

    async with raw_server(handshake_then(hang_up)) as uri:
        async with asyncio.timeout(DEADLINE):
            ws = await wsharbor.connect(uri)
            assert await ws.recv() == "hi"  # received before the EOF: not lost
            with pytest.raises(wsharbor.ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.code == 1006


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not has_ipv6(), reason="no IPv6 loopback")
async def test_ipv6_literal() -> None:
    hosts: list[str | None] = []

    async def handler(ws: wsharbor.ServerConnection) -> None:
        hosts.append(ws.request.headers.get("Host") if ws.request else None)
        await echo(ws)

    async with wsharbor.serve(handler, "::1", 0, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(f"ws://[::1]:{port}/") as ws:
                await ws.send("v6")
                assert await ws.recv() == "v6"
    assert hosts == [f"[::1]:{port}"]
