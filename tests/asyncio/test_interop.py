"""Interoperability with real third-party peers, on 127.0.0.1.

Our server (``wsharbor.serve``) with the websockets and aiohttp clients; our
client (``wsharbor.connect``) with the websockets and aiohttp servers. With and
without compression (the negotiated ``Sec-WebSocket-Extensions`` is checked),
text and binary, fragmented messages, 16 MiB messages both ways, and the
closing codes: 1000 when the client closes, 1001 when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import websockets
import websockets.asyncio.client
import websockets.asyncio.server
from aiohttp import web

import wsharbor
from wsharbor.protocol.deflate import SERVER_CONTEXT_TAKEOVER, SERVER_DEFAULTS, DeflateSettings
from wsharbor.protocol.headers import parse_extension_header

MiB = 1 << 20
MAX_SIZE = 32 * MiB
DEADLINE = 10.0

PEERS = ["websockets", "aiohttp"]
COMPRESSION = {
    # (our side, the peer): both offer/accept, neither, and each side alone.
    "on": (True, True),
    "off": (False, False),
    "ours-off": (False, True),
    "peer-off": (True, False),
}


def digest(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def text_payload(size: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    alphabet = "abcdefghij κόσμε 中文 ✓ 𝄞 \n"
    return "".join(rng.choices(alphabet, k=size))


MESSAGES: list[str | bytes] = [
    "",
    b"",
    "Hello, world!",
    b"\x00\xff" * 50,
    text_payload(300, 1),
    os.urandom(70_000),
    text_payload(200_000, 2),
    (b"compressible " * 20_000),
]

FRAGMENTS: list[list[str] | list[bytes]] = [
    ["frag", "mented ", "κόσ", "με"],
    [b"\x01" * 10, b"", b"\x02" * 70_000, b"\x03"],
    [text_payload(1000, 3) for _ in range(5)],
]


def expected_extensions(ours: bool, peer: bool, header: str | None) -> None:
    if ours and peer:
        assert header is not None and header.startswith("permessage-deflate"), header
    else:
        assert header is None, header


# ---------------------------------------------------------------------------
# Our server, third-party clients
# ---------------------------------------------------------------------------


@dataclass
class Record:
    """What our server's handler saw, per connection."""

    extensions: list[str | None] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def our_server(
    compression: bool | DeflateSettings,
) -> AsyncIterator[tuple[wsharbor.Server, str, Record]]:
    record = Record()

    async def echo(ws: wsharbor.ServerConnection) -> None:
        assert ws.response is not None
        record.extensions.append(ws.response.headers.get("Sec-WebSocket-Extensions"))
        try:
            async for message in ws:
                await ws.send(message)
        finally:
            await ws.wait_closed()
            record.close_codes.append(ws.close_code)
            record.done.set()

    server = await wsharbor.serve(
        echo,
        "127.0.0.1",
        0,
        compression=compression
        if isinstance(compression, DeflateSettings)
        else "deflate"
        if compression
        else None,
        max_size=MAX_SIZE,
        ping_interval=None,
        close_timeout=5,
    )
    port = server.sockets[0].getsockname()[1]
    try:
        yield server, f"ws://127.0.0.1:{port}/", record
    finally:
        server.close()
        async with asyncio.timeout(DEADLINE):
            await server.wait_closed()


class PeerClient:
    """A third-party client behind one interface."""

    extensions: str | None

    async def send(self, message: str | bytes) -> None:
        raise NotImplementedError

    async def send_fragments(self, fragments: list[str] | list[bytes]) -> None:
        raise NotImplementedError

    async def recv(self) -> str | bytes:
        raise NotImplementedError

    async def close(self) -> int | None:
        """Close with 1000; return the close code the server answered with."""
        raise NotImplementedError

    async def closed_by_server(self) -> int | None:
        """Wait for the server to close; return the close code it sent."""
        raise NotImplementedError


class WebsocketsClient(PeerClient):
    def __init__(self, ws: websockets.asyncio.client.ClientConnection) -> None:
        self.ws = ws
        assert ws.response is not None
        self.extensions = ws.response.headers.get("Sec-WebSocket-Extensions")

    @classmethod
    async def connect(cls, uri: str, compression: bool) -> WebsocketsClient:
        ws = await websockets.asyncio.client.connect(
            uri,
            compression="deflate" if compression else None,
            max_size=MAX_SIZE,
            ping_interval=None,
            proxy=None,
        )
        return cls(ws)

    async def send(self, message: str | bytes) -> None:
        await self.ws.send(message)

    async def send_fragments(self, fragments: list[str] | list[bytes]) -> None:
        await self.ws.send(iter(fragments))

    async def recv(self) -> str | bytes:
        return await self.ws.recv()

    async def close(self) -> int | None:
        await self.ws.close()
        return self.ws.close_code

    async def closed_by_server(self) -> int | None:
        with pytest.raises(websockets.ConnectionClosedOK) as info:
            await self.ws.recv()
        assert info.value.rcvd is not None
        await self.ws.wait_closed()
        return info.value.rcvd.code


class AiohttpClient(PeerClient):
    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self.extensions = ws._response.headers.get("Sec-WebSocket-Extensions")

    @classmethod
    async def connect(cls, uri: str, compression: bool) -> AiohttpClient:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(
                uri, compress=15 if compression else 0, max_msg_size=MAX_SIZE, autoclose=True
            )
        except BaseException:
            await session.close()
            raise
        client = cls(session, ws)
        # aiohttp's public view of the negotiation agrees with the header.
        assert bool(ws.compress) == (client.extensions is not None)
        return client

    async def send(self, message: str | bytes) -> None:
        if isinstance(message, str):
            await self.ws.send_str(message)
        else:
            await self.ws.send_bytes(message)

    async def send_fragments(self, fragments: list[str] | list[bytes]) -> None:
        pytest.skip("aiohttp can't send a fragmented message")

    async def recv(self) -> str | bytes:
        msg = await self.ws.receive()
        assert msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), msg
        return msg.data  # type: ignore[no-any-return]

    async def close(self) -> int | None:
        await self.ws.close()
        await self.session.close()
        return self.ws.close_code

    async def closed_by_server(self) -> int | None:
        msg = await self.ws.receive()
        assert msg.type is aiohttp.WSMsgType.CLOSE, msg
        code = msg.data
        await self.session.close()
        return code  # type: ignore[no-any-return]


#: The close code each peer answers a 1001 with.
CLOSE_REPLY = {"websockets": 1001, "aiohttp": 1000}

PEER_CLIENTS: dict[str, Any] = {"websockets": WebsocketsClient, "aiohttp": AiohttpClient}


@pytest.mark.parametrize("compression", COMPRESSION.values(), ids=COMPRESSION.keys())
@pytest.mark.parametrize("peer", PEERS)
async def test_our_server_peer_client_messages(peer: str, compression: tuple[bool, bool]) -> None:
    ours, theirs = compression
    async with our_server(ours) as (_, uri, record):
        async with asyncio.timeout(DEADLINE):
            client = await PEER_CLIENTS[peer].connect(uri, theirs)
            expected_extensions(ours, theirs, client.extensions)
            for message in MESSAGES:
                await client.send(message)
                echoed = await client.recv()
                assert type(echoed) is type(message)
                assert digest(echoed) == digest(message)
            assert await client.close() == 1000
            await record.done.wait()
    # The server saw the same negotiation, and the client's 1000.
    assert record.extensions == [client.extensions]
    assert record.close_codes == [1000]


@pytest.mark.parametrize("compression", ["on", "off"])
@pytest.mark.parametrize("fragments", FRAGMENTS, ids=["text", "binary", "text-large"])
async def test_our_server_websockets_client_fragmented(
    fragments: list[str] | list[bytes], compression: str
) -> None:
    ours, theirs = COMPRESSION[compression]
    whole = "".join(fragments) if isinstance(fragments[0], str) else b"".join(fragments)  # type: ignore[arg-type]
    async with our_server(ours) as (_, uri, record):
        async with asyncio.timeout(DEADLINE):
            client = await WebsocketsClient.connect(uri, theirs)
            await client.send_fragments(fragments)
            assert await client.recv() == whole
            assert await client.close() == 1000
            await record.done.wait()
    assert record.close_codes == [1000]


@pytest.mark.parametrize("compression", ["on", "off"])
@pytest.mark.parametrize("peer", PEERS)
async def test_our_server_fragments_to_peer_client(peer: str, compression: str) -> None:
    # Our server sends fragmented messages; the peer reassembles them.
    ours, theirs = COMPRESSION[compression]

    async def handler(ws: wsharbor.ServerConnection) -> None:
        for fragments in FRAGMENTS:
            await ws.send(fragments)
        await ws.wait_closed()

    async with wsharbor.serve(
        handler, "127.0.0.1", 0, compression="deflate" if ours else None, ping_interval=None
    ) as server:
        uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with asyncio.timeout(DEADLINE):
            client = await PEER_CLIENTS[peer].connect(uri, theirs)
            for fragments in FRAGMENTS:
                whole: Any = fragments[0][:0]
                assert await client.recv() == whole.join(fragments)
            assert await client.close() == 1000


@pytest.mark.parametrize("compression", ["on", "off"])
@pytest.mark.parametrize("peer", PEERS)
async def test_our_server_shutdown_sends_1001(peer: str, compression: str) -> None:
    ours, theirs = COMPRESSION[compression]
    async with our_server(ours) as (server, uri, record):
        async with asyncio.timeout(DEADLINE):
            client = await PEER_CLIENTS[peer].connect(uri, theirs)
            await client.send("hello")
            assert await client.recv() == "hello"
            server.close()
            assert await client.closed_by_server() == 1001
            await server.wait_closed()
    # RFC 6455 section 5.5.1: the peer "typically echos the status code it
    # received"; websockets does, aiohttp's autoclose answers 1000.
    assert record.close_codes == [CLOSE_REPLY[peer]]


# ---------------------------------------------------------------------------
# Our client, third-party servers
# ---------------------------------------------------------------------------


class PeerServer:
    """A third-party echo server: its URI, what it saw, and how to stop it."""

    uri: str
    close_codes: list[int | None]
    done: asyncio.Event

    async def shutdown(self) -> None:
        raise NotImplementedError


class WebsocketsServer(PeerServer):
    @classmethod
    @contextlib.asynccontextmanager
    async def run(cls, compression: bool) -> AsyncIterator[WebsocketsServer]:
        self = cls()
        self.close_codes = []
        self.done = asyncio.Event()

        async def echo(ws: websockets.asyncio.server.ServerConnection) -> None:
            try:
                async for message in ws:
                    await ws.send(message)
            finally:
                await ws.wait_closed()
                self.close_codes.append(ws.close_code)
                self.done.set()

        self.server = await websockets.asyncio.server.serve(
            echo,
            "127.0.0.1",
            0,
            compression="deflate" if compression else None,
            max_size=MAX_SIZE,
            ping_interval=None,
        )
        self.uri = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"
        try:
            yield self
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        self.server.close()  # 1001 to every connection
        async with asyncio.timeout(DEADLINE):
            await self.server.wait_closed()


class AiohttpServer(PeerServer):
    @classmethod
    @contextlib.asynccontextmanager
    async def run(cls, compression: bool) -> AsyncIterator[AiohttpServer]:
        self = cls()
        self.close_codes = []
        self.done = asyncio.Event()
        self.sockets: set[web.WebSocketResponse] = set()

        async def echo(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(compress=compression, max_msg_size=MAX_SIZE)
            await ws.prepare(request)
            self.sockets.add(ws)
            try:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        await ws.send_str(msg.data)
                    elif msg.type is aiohttp.WSMsgType.BINARY:
                        await ws.send_bytes(msg.data)
            finally:
                self.sockets.discard(ws)
                self.close_codes.append(ws.close_code)
                self.done.set()
            return ws

        async def on_shutdown(app: web.Application) -> None:
            # aiohttp's documented graceful shutdown: close with 1001.
            for ws in set(self.sockets):
                await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"Server shutdown")

        app = web.Application()
        app.router.add_get("/", echo)
        app.on_shutdown.append(on_shutdown)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.uri = f"ws://{host}:{port}/"
        self.stopped = False
        try:
            yield self
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        if not self.stopped:
            self.stopped = True
            async with asyncio.timeout(DEADLINE):
                await self.runner.cleanup()


PEER_SERVERS: dict[str, Any] = {"websockets": WebsocketsServer, "aiohttp": AiohttpServer}


@pytest.mark.parametrize("compression", COMPRESSION.values(), ids=COMPRESSION.keys())
@pytest.mark.parametrize("peer", PEERS)
async def test_our_client_peer_server_messages(peer: str, compression: tuple[bool, bool]) -> None:
    ours, theirs = compression
    async with PEER_SERVERS[peer].run(theirs) as server:
        async with asyncio.timeout(DEADLINE):
            ws = await wsharbor.connect(
                server.uri,
                compression="deflate" if ours else None,
                max_size=MAX_SIZE,
                ping_interval=None,
            )
            assert ws.response is not None
            expected_extensions(ours, theirs, ws.response.headers.get("Sec-WebSocket-Extensions"))
            for message in MESSAGES:
                await ws.send(message)
                echoed = await ws.recv()
                assert type(echoed) is type(message)
                assert digest(echoed) == digest(message)
            for fragments in FRAGMENTS:
                await ws.send(fragments)
                whole: Any = fragments[0][:0]
                assert await ws.recv() == whole.join(fragments)
            await ws.close()
            assert ws.close_code == 1000
            await server.done.wait()
    assert server.close_codes == [1000]


@pytest.mark.parametrize("compression", ["on", "off"])
async def test_our_client_websockets_server_fragmented_from_peer(compression: str) -> None:
    ours, theirs = COMPRESSION[compression]

    async def handler(peer_ws: websockets.asyncio.server.ServerConnection) -> None:
        for fragments in FRAGMENTS:
            await peer_ws.send(iter(fragments))
        await peer_ws.wait_closed()

    async with websockets.asyncio.server.serve(
        handler,
        "127.0.0.1",
        0,
        compression="deflate" if theirs else None,
        ping_interval=None,
    ) as server:
        uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with asyncio.timeout(DEADLINE):
            async with wsharbor.connect(
                uri, compression="deflate" if ours else None, ping_interval=None
            ) as ws:
                for fragments in FRAGMENTS:
                    whole: Any = fragments[0][:0]
                    assert await ws.recv() == whole.join(fragments)
            assert ws.close_code == 1000


@pytest.mark.parametrize("compression", ["on", "off"])
@pytest.mark.parametrize("peer", PEERS)
async def test_our_client_peer_server_shutdown_1001(peer: str, compression: str) -> None:
    ours, theirs = COMPRESSION[compression]
    async with PEER_SERVERS[peer].run(theirs) as server:
        async with asyncio.timeout(DEADLINE):
            ws = await wsharbor.connect(
                server.uri, compression="deflate" if ours else None, ping_interval=None
            )
            await ws.send("hello")
            assert await ws.recv() == "hello"
            shutdown = asyncio.create_task(server.shutdown())
            with pytest.raises(wsharbor.ConnectionClosedOK) as info:
                await ws.recv()
            assert info.value.code == 1001
            # We echoed the code (RFC 6455 section 5.5.1).
            assert info.value.sent is not None and info.value.sent.code == 1001
            await ws.wait_closed()
            assert ws.close_code == 1001
            await shutdown
    if peer == "websockets":
        # aiohttp's close_code is the code of its own close(), not the answer.
        assert server.close_codes == [1001]


# ---------------------------------------------------------------------------
# 16 MiB messages, both ways
# ---------------------------------------------------------------------------


def big_payload() -> bytes:
    # Half random (incompressible), half repetitive (compressible).
    return os.urandom(8 * MiB) + b"sixteen mebibytes " * (8 * MiB // 18) + b"x" * (8 * MiB % 18)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", ["on", "off"])
async def test_16_mib_our_server_websockets_client(compression: str) -> None:
    ours, theirs = COMPRESSION[compression]
    payload = big_payload()
    assert len(payload) == 16 * MiB
    async with our_server(ours) as (_, uri, record):
        async with asyncio.timeout(30):
            client = await WebsocketsClient.connect(uri, theirs)
            expected_extensions(ours, theirs, client.extensions)
            await client.send(payload)
            echoed = await client.recv()
            assert digest(echoed) == digest(payload)
            assert await client.close() == 1000
            await record.done.wait()
    assert record.close_codes == [1000]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("compression", ["on", "off"])
async def test_16_mib_our_client_aiohttp_server(compression: str) -> None:
    ours, theirs = COMPRESSION[compression]
    payload = big_payload()
    async with AiohttpServer.run(theirs) as server:
        async with asyncio.timeout(30):
            ws = await wsharbor.connect(
                server.uri,
                compression="deflate" if ours else None,
                max_size=MAX_SIZE,
                ping_interval=None,
            )
            assert ws.response is not None
            expected_extensions(ours, theirs, ws.response.headers.get("Sec-WebSocket-Extensions"))
            await ws.send(payload)
            echoed = await ws.recv()
            assert digest(echoed) == digest(payload)
            await ws.close()
            await server.done.wait()
    assert server.close_codes == [1000]


@pytest.mark.timeout(60)
async def test_16_mib_fragmented_our_client_websockets_server() -> None:
    payload = big_payload()
    async with WebsocketsServer.run(True) as server:
        async with asyncio.timeout(30):
            async with wsharbor.connect(server.uri, max_size=MAX_SIZE, ping_interval=None) as ws:
                await ws.send(payload[i : i + MiB] for i in range(0, len(payload), MiB))
                echoed = await ws.recv()
                assert digest(echoed) == digest(payload)
            await server.done.wait()
    assert server.close_codes == [1000]


# ---------------------------------------------------------------------------
# Context takeover parameters (RFC 7692 section 7.1.1), both ways
# ---------------------------------------------------------------------------

#: Our server's settings: the defaults (no context takeover either way, answered
#: unasked) and the settings that keep the context.
SERVER_SETTINGS = {"defaults": SERVER_DEFAULTS, "takeover": SERVER_CONTEXT_TAKEOVER}


def deflate_params(header: str | None) -> dict[str, str | None]:
    assert header is not None
    ((name, params),) = parse_extension_header(header)
    assert name == "permessage-deflate"
    return dict(params)


@pytest.mark.parametrize("setting", list(SERVER_SETTINGS))
@pytest.mark.parametrize("peer", PEERS)
async def test_our_server_context_takeover_parameters(peer: str, setting: str) -> None:
    # The peer client accepts our answer (with or without the two
    # no_context_takeover parameters it didn't ask for) and the messages
    # compressed both ways, many in a row, come back intact: without context
    # takeover each decodes alone, with it each may refer to the ones before.
    settings = SERVER_SETTINGS[setting]
    async with our_server(settings) as (_, uri, record):
        async with asyncio.timeout(DEADLINE):
            client = await PEER_CLIENTS[peer].connect(uri, True)
            params = deflate_params(client.extensions)
            takeover = setting == "takeover"
            assert ("server_no_context_takeover" in params) is not takeover
            assert ("client_no_context_takeover" in params) is not takeover
            messages = [text_payload(300, seed) for seed in range(20)]
            messages += [text_payload(300, 0).encode(), text_payload(20_000, 9)]
            for message in messages:
                await client.send(message)
                echoed = await client.recv()
                assert type(echoed) is type(message) and echoed == message
            assert await client.close() == 1000
            await record.done.wait()
    assert record.extensions == [client.extensions]


@pytest.mark.parametrize("setting", list(SERVER_SETTINGS))
async def test_our_server_broadcast_to_peer_clients(setting: str) -> None:
    # broadcast() to websockets and aiohttp clients at once: with the defaults
    # one compressed frame for all of them, with context takeover one each.
    connections: list[wsharbor.ServerConnection] = []
    opened = asyncio.Event()

    async def handler(ws: wsharbor.ServerConnection) -> None:
        connections.append(ws)
        if len(connections) == 4:
            opened.set()
        await ws.wait_closed()

    async with wsharbor.serve(
        handler, "127.0.0.1", 0, compression=SERVER_SETTINGS[setting], ping_interval=None
    ) as server:
        uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with asyncio.timeout(DEADLINE):
            clients = [
                await WebsocketsClient.connect(uri, True),
                await WebsocketsClient.connect(uri, True),
                await AiohttpClient.connect(uri, True),
                await AiohttpClient.connect(uri, True),
            ]
            await opened.wait()
            for seed in range(5):
                message = text_payload(500, seed)
                assert wsharbor.fanout(connections, message) == []  # none skipped
                for client in clients:
                    assert await client.recv() == message
            for client in clients:
                assert await client.close() == 1000


@pytest.mark.parametrize("server_nct, client_nct", [(True, False), (False, True), (True, True)])
async def test_our_client_websockets_server_no_context_takeover(
    server_nct: bool, client_nct: bool
) -> None:
    # websockets' server asks for no context takeover on either side or both:
    # our client accepts, and the messages go through both ways.
    from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

    async def echo(ws: websockets.asyncio.server.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=server_nct, client_no_context_takeover=client_nct
    )
    async with websockets.asyncio.server.serve(
        echo, "127.0.0.1", 0, compression=None, extensions=[factory], ping_interval=None
    ) as server:
        uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        async with asyncio.timeout(DEADLINE), wsharbor.connect(uri) as client:
            assert client.response is not None
            params = deflate_params(client.response.headers.get("Sec-WebSocket-Extensions"))
            assert ("server_no_context_takeover" in params) is server_nct
            assert ("client_no_context_takeover" in params) is client_nct
            for seed in range(10):
                message = text_payload(1000, seed)
                await client.send(message)
                assert await client.recv() == message
