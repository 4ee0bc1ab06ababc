"""wss:// end to end: wsharbor's TLS transport (:mod:`wsharbor.asyncio.tls`) and the loop's.

Real TLS on 127.0.0.1 with trustme certificates, on asyncio and on uvloop; peers:
our client, websockets' and aiohttp's clients, websockets' server, our threaded
client, headless Chromium, and :class:`TLSPeer`, a raw TLS client over memory BIOs
that does exactly what a test asks (stall mid-ClientHello, never read, send
close_notify and keep reading, half-close TCP without close_notify).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import pytest
import websockets.asyncio.client
import websockets.asyncio.server
import websockets.exceptions

import wsharbor
import wsharbor.sync.client
from wsharbor import ConnectionClosed, ServerConnection
from wsharbor.asyncio.tls import READ_SIZE, TLSTransport
from wsharbor.protocol.frames import Close, Frame, FrameParser, Opcode, serialize_frame
from wsharbor.protocol.http11 import ResponseParser

from .conftest import HOST, TIMEOUT, port_of, small_buffer_listener, upgrade_request, wait

trustme = pytest.importorskip("trustme", reason="trustme is a test dependency")

MiB = 1 << 20
T = TypeVar("T")

LOOPS = ["asyncio", "uvloop"]
TRANSPORTS = ["wsharbor", "loop"]


@dataclass
class Certificates:
    server: ssl.SSLContext
    client: ssl.SSLContext
    ca: Any = field(repr=False)
    ca_path: str = ""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    ca_path = str(tmp_path_factory.mktemp("ca") / "ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    return Certificates(server, client, ca, ca_path)


def run_on(loop: str, main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` on a new event loop: asyncio's or uvloop's."""
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(main())  # type: ignore[no-any-return]
    return asyncio.run(main())  # type: ignore[arg-type]


def wss_uri(server: wsharbor.Server, path: str = "/") -> str:
    return f"wss://{HOST}:{port_of(server)}{path}"


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def assert_nothing_left(fds_before: int) -> None:
    """Every TLS transport still in memory is closed, and so is its socket (log
    records, which pytest keeps, hold the exceptions and through them the
    transports: what matters is that nothing is left open)."""
    gc.collect()
    for tls in [obj for obj in gc.get_objects() if type(obj) is TLSTransport]:
        assert tls.is_closing()
        assert not tls.is_reading()
        sock = tls.get_extra_info("socket")
        assert sock is None or sock.fileno() == -1
    assert open_fds() == fds_before


class Tracker(wsharbor.ConnectionObserver):
    """Counts connections accepted and closed (the server's end of each)."""

    def __init__(self) -> None:
        self.accepted = 0
        self.closed = 0
        self.all_closed = asyncio.Event()

    def connection_accepted(self, connection: Any) -> None:
        self.accepted += 1
        self.all_closed.clear()

    def connection_closed(self, connection: Any) -> None:
        self.closed += 1
        if self.closed == self.accepted:
            self.all_closed.set()


class Messages(logging.Handler):
    """The lines wsharbor logs, as (level, text)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


@pytest.fixture
def server_log() -> Iterator[Messages]:
    logger = logging.getLogger("wsharbor")
    handler = Messages()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# A raw TLS client.


class TLSPeer:
    """A TLS client over asyncio streams and memory BIOs, under the test's control."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, context: ssl.SSLContext
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=HOST)
        self.parser = FrameParser(mask=False)
        self.tcp_eof = False

    @classmethod
    async def open(
        cls, port: int, context: ssl.SSLContext, *, rcvbuf: int | None = None
    ) -> TLSPeer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await wait(asyncio.get_running_loop().sock_connect(sock, (HOST, port)))
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer, context)

    def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.writer.write(data)

    async def feed(self, timeout: float = TIMEOUT) -> bool:
        """Read ciphertext from TCP into the BIO; False at TCP EOF."""
        data = await wait(self.reader.read(65536), timeout)
        if not data:
            self.tcp_eof = True
            self.incoming.write_eof()
            return False
        self.incoming.write(data)
        return True

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.flush()
                assert await self.feed(), "EOF during the TLS handshake"
            else:
                self.flush()
                return

    def send(self, data: bytes) -> None:
        self.tls.write(data)
        self.flush()

    async def recv(self, timeout: float = TIMEOUT) -> bytes:
        """Plaintext; b"" at close_notify (or TCP EOF)."""
        while True:
            try:
                return self.tls.read(65536)
            except ssl.SSLWantReadError:
                if not await self.feed(timeout):
                    return b""
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                return b""

    async def upgrade(self) -> None:
        port = self.writer.get_extra_info("peername")[1]
        self.send(upgrade_request(port))
        parser = ResponseParser()
        response = None
        while response is None:
            data = await self.recv()
            assert data, "EOF during the opening handshake"
            response = parser.feed(data)
        assert response.status == 101, response
        self.parser.feed(parser.leftover)

    def send_frame(self, opcode: Opcode, data: bytes) -> None:
        self.send(serialize_frame(Frame(opcode, data), mask=True))

    async def recv_frame(self, timeout: float = TIMEOUT) -> Frame | None:
        """The next frame; None at the end of the TLS stream."""
        while True:
            frame = self.parser.parse()
            if frame is not None:
                return frame
            data = await self.recv(timeout)
            if not data:
                return None
            self.parser.feed(data)

    async def recv_to_eof(self, timeout: float = TIMEOUT) -> None:
        """Read until the server closes TCP (a reset raises)."""
        while not self.tcp_eof:
            await self.feed(timeout)

    def close_notify(self) -> None:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.unwrap()
        self.flush()

    def close(self) -> None:
        self.writer.transport.abort()


@contextlib.asynccontextmanager
async def raw_peer(port: int, certs: Certificates, **kwargs: Any) -> AsyncIterator[TLSPeer]:
    peer = await TLSPeer.open(port, certs.client, **kwargs)
    try:
        yield peer
    finally:
        peer.close()


def client_hello() -> bytes:
    """The first flight of a real TLS client."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=HOST)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


# Options.


def test_tls_transport_option_is_checked() -> None:
    with pytest.raises(ValueError, match="tls_transport must be one of wsharbor, loop"):
        wsharbor.serve(echo, HOST, 0, tls_transport="openssl")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tls_transport must be one of wsharbor, loop"):
        wsharbor.connect("wss://example.com/", tls_transport="nope")  # type: ignore[arg-type]


# Echo, messages, extra info, close codes: both transports, both loops.


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_echo_large_messages_and_extra_info(certs: Certificates, loop: str, transport: str) -> None:
    """1 MiB and 3 MiB messages both ways, text and binary; what get_extra_info() gives."""
    client_cert = certs.ca.issue_cert("client.example")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certs.ca.issue_cert(HOST).configure_cert(server_ctx)
    certs.ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # so that peercert has something
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    certs.ca.configure_trust(client_ctx)
    client_cert.configure_cert(client_ctx)
    seen: dict[str, Any] = {}

    async def handler(ws: ServerConnection) -> None:
        t = ws.transport
        assert t is not None
        seen["server_transport"] = type(t).__name__
        seen["version"] = t.get_extra_info("ssl_object").version()
        seen["peercert"] = t.get_extra_info("peercert")
        seen["cipher"] = t.get_extra_info("cipher")
        seen["sslcontext"] = t.get_extra_info("sslcontext")
        seen["peername"] = t.get_extra_info("peername")
        seen["sockname"] = t.get_extra_info("sockname")
        seen["remote_address"] = ws.remote_address
        await echo(ws)

    async def main() -> None:
        rng = random.Random(7)
        messages: list[str | bytes] = [
            "hello",
            rng.randbytes(MiB),
            "é" * (MiB // 2),
            rng.randbytes(3 * MiB + 5),
            b"",
        ]
        async with wsharbor.serve(
            handler, HOST, 0, ssl=server_ctx, tls_transport=transport, max_size=4 * MiB
        ) as server:
            port = port_of(server)
            async with wsharbor.connect(
                wss_uri(server), ssl=client_ctx, tls_transport=transport, max_size=4 * MiB
            ) as ws:
                for message in messages:
                    await ws.send(message)
                    assert await wait(ws.recv(), 20) == message
                assert ws.transport is not None
                local = ws.transport.get_extra_info("sockname")
                client_cert_seen = ws.transport.get_extra_info("peercert")
                client_transport = type(ws.transport).__name__
            assert ws.close_code == 1000
        assert ("IP Address", HOST) in client_cert_seen["subjectAltName"]
        assert seen["version"] == "TLSv1.3"
        assert seen["peercert"] and ("DNS", "client.example") in seen["peercert"]["subjectAltName"]
        assert seen["cipher"][1] == "TLSv1.3"
        assert seen["sslcontext"] is server_ctx
        assert seen["peername"] == local == seen["remote_address"]
        assert seen["sockname"][1] == port
        if transport == "wsharbor":
            assert seen["server_transport"] == client_transport == "TLSTransport"
        else:
            assert seen["server_transport"] != "TLSTransport"
            assert client_transport != "TLSTransport"

    run_on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_close_codes_both_ways(certs: Certificates, loop: str) -> None:
    async def main() -> None:
        codes: asyncio.Queue[tuple[int | None, str | None]] = asyncio.Queue()

        async def handler(ws: ServerConnection) -> None:
            message = await ws.recv()
            if message == "close 4000":
                await ws.close(4000, "server says bye")
            else:
                with contextlib.suppress(ConnectionClosed):
                    await ws.recv()
            codes.put_nowait((ws.close_code, ws.close_reason))

        async with wsharbor.serve(handler, HOST, 0, ssl=certs.server) as server:
            # The server closes.
            ws = await wsharbor.connect(wss_uri(server), ssl=certs.client)
            await ws.send("close 4000")
            with pytest.raises(ConnectionClosed) as raised:
                await wait(ws.recv())
            assert raised.value.rcvd is not None and raised.value.rcvd.code == 4000
            assert raised.value.rcvd.reason == "server says bye"
            await wait(ws.wait_closed())
            assert await wait(codes.get()) == (4000, "")  # the client echoed the code
            # The client closes.
            ws = await wsharbor.connect(wss_uri(server), ssl=certs.client)
            await ws.send("wait")
            await wait(ws.close(1001, "client leaves"))
            assert await wait(codes.get()) == (1001, "client leaves")

    run_on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_pipelined_burst_keeps_order(certs: Certificates, loop: str) -> None:
    """A burst of small and large messages: the server's coalesced writes
    (small ones share TLS records, large ones are cut in records) stay in order."""

    async def main() -> None:
        rng = random.Random(3)
        sizes = [
            rng.choice([0, 1, 50, 700, 16 * 1024 - 3, 16 * 1024, 40_000, 150_000])
            for _ in range(300)
        ]
        messages = [rng.randbytes(size) for size in sizes]
        async with (
            wsharbor.serve(echo, HOST, 0, ssl=certs.server, max_queue=None) as server,
            wsharbor.connect(wss_uri(server), ssl=certs.client) as ws,
        ):
            sender = asyncio.ensure_future(asyncio.gather(*(ws.send(m) for m in messages)))
            for message in messages:
                assert await wait(ws.recv()) == message
            await wait(sender)

    run_on(loop, main)


# Interoperability.


async def test_websockets_client(certs: Certificates) -> None:
    payload = os.urandom(MiB)
    async with wsharbor.serve(echo, HOST, 0, ssl=certs.server, max_size=2 * MiB) as server:
        async with websockets.asyncio.client.connect(
            wss_uri(server), ssl=certs.client, max_size=2 * MiB
        ) as ws:
            await ws.send("hello")
            assert await wait(ws.recv()) == "hello"
            await ws.send(payload)
            assert await wait(ws.recv()) == payload
            await ws.close(4001, "done")
        assert ws.close_code == 4001  # echoed by the server


async def test_websockets_server(certs: Certificates) -> None:
    payload = os.urandom(MiB)

    async def ws_echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with websockets.asyncio.server.serve(
        ws_echo, HOST, 0, ssl=certs.server, max_size=2 * MiB
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with wsharbor.connect(
            f"wss://{HOST}:{port}/", ssl=certs.client, max_size=2 * MiB
        ) as ws:
            assert isinstance(ws.transport, TLSTransport)
            await ws.send(payload)
            assert await wait(ws.recv()) == payload
            await ws.send("é" * 1000)
            assert await wait(ws.recv()) == "é" * 1000
        assert ws.close_code == 1000


async def test_aiohttp_client(certs: Certificates) -> None:
    payload = os.urandom(MiB)
    async with (
        wsharbor.serve(echo, HOST, 0, ssl=certs.server, max_size=2 * MiB) as server,
        aiohttp.ClientSession() as session,
        session.ws_connect(wss_uri(server), ssl=certs.client, max_msg_size=2 * MiB) as ws,
    ):
        await ws.send_str("hello")
        assert (await wait(ws.receive())).data == "hello"
        await ws.send_bytes(payload)
        assert (await wait(ws.receive())).data == payload
        await ws.close(code=4002, message=b"bye")
    assert ws.close_code == 4002


async def test_sync_client(certs: Certificates) -> None:
    payload = os.urandom(MiB)

    def exchange(uri: str) -> tuple[str, bytes, int | None]:
        with wsharbor.sync.client.connect(uri, ssl=certs.client, max_size=2 * MiB) as ws:
            ws.send("hello")
            text = ws.recv(TIMEOUT)
            ws.send(payload)
            data = ws.recv(TIMEOUT)
        return text, data, ws.close_code  # type: ignore[return-value]

    async with wsharbor.serve(echo, HOST, 0, ssl=certs.server, max_size=2 * MiB) as server:
        text, data, code = await wait(asyncio.to_thread(exchange, wss_uri(server)), 20)
    assert (text, data, code) == ("hello", payload, 1000)


async def test_chromium(certs: Certificates) -> None:
    from tests.app.test_browser import CHROMIUM, CHROMIUM_ARGS, require_chromium

    require_chromium()
    from playwright.async_api import async_playwright

    script = """async (url) => {
        const ws = new WebSocket(url);
        ws.binaryType = "arraybuffer";
        const next = () => new Promise((resolve, reject) => {
            ws.onmessage = (event) => resolve(event.data);
            ws.onerror = () => reject(new Error("error"));
        });
        await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
        const results = {};
        ws.send("héllo");
        results.text = await next();
        const big = new Uint8Array(1 << 20);
        for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 255;
        ws.send(big);
        const echoed = new Uint8Array(await next());
        results.size = echoed.length;
        results.same = echoed.every((value, i) => value === big[i]);
        ws.send("x".repeat(1 << 20));
        results.bigText = (await next()).length;
        const closed = new Promise((resolve) => {
            ws.onclose = (e) => resolve([e.code, e.reason]);
        });
        ws.send("please close");
        results.close = await closed;
        return results;
    }"""

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            if message == "please close":
                await ws.close(4003, "closing from the server")
                return
            await ws.send(message)

    def page(connection: ServerConnection, request: Any) -> Any:
        # The page comes from the same server over HTTPS: Chromium's local
        # network access checks block about:blank from opening 127.0.0.1.
        if request.path == "/page":
            return (200, [("Content-Type", "text/html")], "<!doctype html><title>wss</title>")
        return None

    async with (
        wsharbor.serve(
            handler, HOST, 0, ssl=certs.server, max_size=2 * MiB, process_request=page
        ) as server,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=TIMEOUT * 6000
        )
        try:
            # The trustme CA isn't Chromium's: certificate errors are ignored.
            context = await browser.new_context(ignore_https_errors=True)
            page_ = await context.new_page()
            page_.set_default_timeout(TIMEOUT * 6000)
            response = await page_.goto(f"https://{HOST}:{port_of(server)}/page")
            assert response is not None and response.status == 200
            results = await wait(page_.evaluate(script, wss_uri(server)), 60)
        finally:
            await browser.close()
    assert results == {
        "text": "héllo",
        "size": MiB,
        "same": True,
        "bigText": MiB,
        "close": [4003, "closing from the server"],
    }


# Flow control over TLS.


@pytest.mark.parametrize("loop", LOOPS)
def test_peer_that_never_reads_keeps_buffers_bounded(certs: Certificates, loop: str) -> None:
    """The server's write buffer stays under write_limit plus one message while
    send() waits; nothing is lost once the peer reads."""
    message = os.urandom(100_000)
    write_limit = 64 * 1024
    bound = write_limit + len(message) + 1024  # TLS records add 22 bytes per 16 KiB

    async def main() -> None:
        sizes: list[int] = []
        sent = 0
        blocked = asyncio.Event()

        async def handler(ws: ServerConnection) -> None:
            nonlocal sent
            assert ws.transport is not None
            for _ in range(200):
                task = asyncio.ensure_future(ws.send(message))
                done, _ = await asyncio.wait([task], timeout=0.5)
                sizes.append(ws.transport.get_write_buffer_size())
                if not done:
                    blocked.set()  # send() waits for the peer: good
                    await task
                sent += 1
            await ws.close()

        listener = small_buffer_listener()
        async with (
            wsharbor.serve(
                handler, sock=listener, ssl=certs.server, write_limit=write_limit
            ) as server,
            raw_peer(port_of(server), certs, rcvbuf=4096) as peer,
        ):
            await peer.handshake()
            await peer.upgrade()
            await wait(blocked.wait(), 20)
            assert max(sizes) <= bound, sizes
            received = 0
            while True:
                frame = await peer.recv_frame(20)
                assert frame is not None
                if frame.opcode is Opcode.CLOSE:
                    break
                assert frame.data == message
                received += 1
            peer.send_frame(Opcode.CLOSE, Close(1000, "").serialize())
            await peer.recv_to_eof()
        assert received == sent == 200
        assert max(sizes) <= bound

    run_on(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_flooding_client_pauses_reading(certs: Certificates, loop: str) -> None:
    """A handler that doesn't read: reading pauses, and what the server holds is
    bounded by max_queue, read_limit and one read of ciphertext."""
    max_queue, read_limit = 4, 64 * 1024
    message = os.urandom(32 * 1024)

    async def main() -> None:
        go = asyncio.Event()
        held: list[tuple[int, int]] = []
        received = 0
        connections: list[ServerConnection] = []

        async def handler(ws: ServerConnection) -> None:
            nonlocal received
            connections.append(ws)
            await go.wait()
            async for _ in ws:
                received += 1

        listener = small_buffer_listener()
        async with (
            wsharbor.serve(
                handler, sock=listener, ssl=certs.server, max_queue=max_queue, read_limit=read_limit
            ) as server,
            wsharbor.connect(wss_uri(server), ssl=certs.client, write_limit=16 * 1024) as ws,
        ):
            sent = 0
            while True:
                task = asyncio.ensure_future(ws.send(message))
                done, _ = await asyncio.wait([task], timeout=0.5)
                transport = connections[0].transport
                assert isinstance(transport, TLSTransport)
                if not done and not transport.is_reading():
                    break  # our send() waits because the server stopped reading
                await wait(task, 20)
                sent += 1
                assert sent < 10_000, "the server never stopped reading"
            held.append((connections[0].buffered_bytes, transport.get_read_buffer_size()))
            go.set()
            await wait(task, 20)
            sent += 1
        assert received == sent
        buffered, ciphertext = held[0]
        assert buffered <= max_queue * len(message) + read_limit + len(message)
        assert ciphertext <= READ_SIZE

    run_on(loop, main)


# The TLS handshake: timeouts and failures.


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("stall", ["silent", "half-client-hello"])
async def test_handshake_bounded_by_open_timeout(
    certs: Certificates, transport: str, stall: str
) -> None:
    tracker = Tracker()
    fds = open_fds()
    async with wsharbor.serve(
        echo,
        HOST,
        0,
        ssl=certs.server,
        open_timeout=0.5,
        tls_transport=transport,  # type: ignore[arg-type]
        observer=tracker,
    ) as server:
        reader, writer = await asyncio.open_connection(HOST, port_of(server))
        if stall == "half-client-hello":
            hello = client_hello()
            writer.write(hello[: len(hello) // 2])
        assert await wait(reader.read()) == b""  # the server gave up
        writer.close()
        await wait(tracker.all_closed.wait())
        # A real client still gets in.
        async with wsharbor.connect(wss_uri(server), ssl=certs.client) as ws:
            await ws.send("hi")
            assert await wait(ws.recv()) == "hi"
    assert tracker.accepted == tracker.closed == 2
    assert_nothing_left(fds)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_server_close_ends_handshakes_in_progress(
    certs: Certificates, transport: str
) -> None:
    """Closing the server drops TLS handshakes that don't complete (after
    close_timeout): their sockets are closed, nothing waits for open_timeout."""
    fds = open_fds()
    server = await wsharbor.serve(
        echo,
        HOST,
        0,
        ssl=certs.server,
        open_timeout=60,
        close_timeout=0.5,
        tls_transport=transport,  # type: ignore[arg-type]
    )
    hello = client_hello()
    streams = []
    for _ in range(3):
        reader, writer = await asyncio.open_connection(HOST, port_of(server))
        writer.write(hello[: len(hello) // 2])
        streams.append((reader, writer))
    await asyncio.sleep(0)
    server.close()
    await wait(server.wait_closed())
    for reader, writer in streams:
        with contextlib.suppress(ConnectionResetError):
            assert await wait(reader.read()) == b""
        writer.close()
        await writer.wait_closed()
    assert_nothing_left(fds)


async def test_untrusted_certificate_fails_cleanly(
    certs: Certificates, server_log: Messages
) -> None:
    """The client rejects the certificate: a clear error there, the server's end
    logged at INFO, nothing left behind on either side."""
    tracker = Tracker()
    fds = open_fds()
    async with wsharbor.serve(echo, HOST, 0, ssl=certs.server, observer=tracker) as server:
        for _ in range(3):
            with pytest.raises(ssl.SSLCertVerificationError, match=r"unable to get local issuer"):
                await wait(wsharbor.connect(wss_uri(server), ssl=ssl.create_default_context()))
        await wait(tracker.all_closed.wait())
        assert server.connections == set()
    assert tracker.accepted == tracker.closed == 3
    failures = [
        (level, text)
        for level, text in server_log.lines
        if "failed before the opening handshake" in text
    ]
    assert len(failures) == 3
    assert all(level == logging.INFO and "unknown ca" in text for level, text in failures)
    assert not [line for line in server_log.lines if line[0] >= logging.ERROR]
    assert_nothing_left(fds)


async def test_not_tls_on_the_tls_port(certs: Certificates, server_log: Messages) -> None:
    """Plain HTTP to the TLS port: the handshake fails, the server closes, no error logged."""
    tracker = Tracker()
    fds = open_fds()
    async with wsharbor.serve(echo, HOST, 0, ssl=certs.server, observer=tracker) as server:
        reader, writer = await asyncio.open_connection(HOST, port_of(server))
        writer.write(upgrade_request(port_of(server)))
        data = await wait(reader.read())  # EOF, maybe after a TLS alert; a reset raises
        assert not data.startswith(b"HTTP")
        writer.close()
        await wait(tracker.all_closed.wait())
    assert any("failed before the opening handshake" in text for _, text in server_log.lines)
    assert not [line for line in server_log.lines if line[0] >= logging.ERROR]
    assert_nothing_left(fds)


async def test_client_side_handshake_timeout(certs: Certificates) -> None:
    """Our client against a TLS port that accepts and never answers: open_timeout."""
    fds = open_fds()
    silent = socket.create_server((HOST, 0))
    try:
        port = silent.getsockname()[1]
        with pytest.raises(TimeoutError):
            await wait(
                wsharbor.connect(f"wss://{HOST}:{port}/", ssl=certs.client, open_timeout=0.5)
            )
    finally:
        silent.close()
    assert_nothing_left(fds)


# Half-closed peers and the end of the TLS stream.


async def test_close_frame_then_tcp_half_close(certs: Certificates) -> None:
    """The client sends its close frame, then shuts down its side of TCP without
    close_notify: the server still answers with its close frame, then closes."""
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()
        closed.set_result(ws.close_code)

    async with wsharbor.serve(handler, HOST, 0, ssl=certs.server) as server:
        async with raw_peer(port_of(server), certs) as peer:
            await peer.handshake()
            await peer.upgrade()
            peer.send_frame(Opcode.CLOSE, Close(1000, "bye").serialize())
            peer.writer.write_eof()  # TCP FIN, no close_notify
            frame = await peer.recv_frame()
            assert frame is not None and frame.opcode is Opcode.CLOSE
            assert Close.parse(frame.data).code == 1000
            assert await peer.recv_frame() is None  # close_notify, then EOF
            await peer.recv_to_eof()
        assert await wait(closed) == 1000


async def test_close_notify_without_close_frame(certs: Certificates) -> None:
    """close_notify alone ends the connection (1006 for the handler); the server
    answers with its own close_notify and closes TCP."""
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.recv()
        closed.set_result(ws.close_code)

    async with wsharbor.serve(handler, HOST, 0, ssl=certs.server) as server:
        async with raw_peer(port_of(server), certs) as peer:
            await peer.handshake()
            await peer.upgrade()
            peer.close_notify()
            assert await peer.recv_frame() is None  # the server's close_notify
            assert not peer.tcp_eof  # it came before the end of TCP
            await peer.recv_to_eof()
        assert await wait(closed) == 1006


async def test_ragged_eof(certs: Certificates, server_log: Messages) -> None:
    """TCP ends without close frame or close_notify: 1006, nothing logged as an error."""
    closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                await ws.send(message)
        closed.set_result(ws.close_code)

    async with wsharbor.serve(handler, HOST, 0, ssl=certs.server) as server:
        async with raw_peer(port_of(server), certs) as peer:
            await peer.handshake()
            await peer.upgrade()
            peer.send_frame(Opcode.TEXT, b"last words")
            frame = await peer.recv_frame()
            assert frame is not None and frame.data == b"last words"
            peer.writer.write_eof()
            await peer.recv_to_eof()
        assert await wait(closed) == 1006
    assert not [line for line in server_log.lines if line[0] >= logging.ERROR]


async def test_server_close_waits_for_the_peer_then_closes(certs: Certificates) -> None:
    """After the closing handshake the server sends close_notify and its FIN at
    once, and the connection ends when the peer closes too."""

    async def handler(ws: ServerConnection) -> None:
        await ws.close(1000, "done")

    tracker = Tracker()
    async with wsharbor.serve(handler, HOST, 0, ssl=certs.server, observer=tracker) as server:
        async with raw_peer(port_of(server), certs) as peer:
            await peer.handshake()
            await peer.upgrade()
            frame = await peer.recv_frame()
            assert frame is not None and Close.parse(frame.data) == Close(1000, "done")
            peer.send_frame(Opcode.CLOSE, frame.data)
            assert await peer.recv_frame() is None  # close_notify
            await peer.recv_to_eof()  # and the FIN, before we close anything
            peer.close_notify()
        # The server's connection is gone once the peer closed.
        await wait(tracker.all_closed.wait())


async def _until(predicate: Callable[[], bool]) -> None:
    while not predicate():
        await asyncio.sleep(0.01)


# TLSTransport with a plain asyncio.Protocol, against asyncio's TLS server.


class Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.data = bytearray()
        self.eof = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()
        self.pause_at: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.pause_at is not None and len(self.data) >= self.pause_at:
            self.pause_at = None
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        if not self.eof.done():
            self.eof.set_result(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


class EchoThenClose(asyncio.Protocol):
    """asyncio's TLS server side: echo, and close once ``expected`` bytes came."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)
        self.count += len(data)
        if self.count >= self.expected:
            self.transport.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_transport_with_a_plain_protocol(certs: Certificates, loop: str) -> None:
    early = [b"written before the handshake completes ", b"(kept until it does)"]
    chunks = [b"a" * 10, os.urandom(100_000), b"b" * 3, os.urandom(16 * 1024), b""]
    total = sum(map(len, early + chunks))

    async def main() -> None:
        running = asyncio.get_running_loop()
        server = await running.create_server(
            lambda: EchoThenClose(total), HOST, 0, ssl=certs.server
        )
        try:
            port = server.sockets[0].getsockname()[1]
            waiter: asyncio.Future[None] = running.create_future()
            recorder = Recorder()
            recorder.pause_at = 50_000
            tcp, tls = await running.create_connection(
                lambda: TLSTransport(
                    recorder, certs.client, server_side=False, server_hostname=HOST, waiter=waiter
                ),
                HOST,
                port,
            )
            assert isinstance(tls, TLSTransport)
            # Most likely before the handshake completes (it needs a round trip).
            tls.write(early[0])
            tls.writelines(early[1:])
            await wait(waiter)
            assert recorder.transport is tls
            assert tls.get_protocol() is recorder
            assert not tls.can_write_eof()
            with pytest.raises(NotImplementedError):
                tls.write_eof()
            assert tls.get_extra_info("ssl_object").version() == "TLSv1.3"
            assert tls.get_extra_info("nothing", "default") == "default"
            tls.writelines(chunks[:2])
            tls.write(chunks[2])
            tls.writelines(chunks[3:])
            # Reading pauses at 50,000 bytes: the rest waits.
            await wait(_until(lambda: not tls.is_reading()))
            paused_at = len(recorder.data)
            for _ in range(20):
                await asyncio.sleep(0)
            assert len(recorder.data) == paused_at < total
            tls.resume_reading()
            await wait(recorder.eof)  # the server closed: close_notify
            assert bytes(recorder.data) == b"".join(early + chunks)
            assert await wait(recorder.lost) is None
            assert tls.is_closing()
            assert tcp.is_closing()
        finally:
            server.close()
            await server.wait_closed()

    run_on(loop, main)
