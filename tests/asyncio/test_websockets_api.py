"""The connection API of websockets 17 on our asyncio connections (issue 10, item 2).

``recv(decode)``, ``recv_streaming(decode)``, ``send(message, text)``, ``pong()``,
``id``, ``state`` (CONNECTING during the handshake), ``close_code`` /
``close_reason``, ``ConcurrencyError``, custom attributes and weak references.
Real connections on 127.0.0.1; the raw client puts exact frames on the wire.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from typing import Any

import pytest

import wsharbor
from wsharbor.exceptions import ConcurrencyError, ConnectionClosedError
from wsharbor.protocol import State
from wsharbor.protocol.frames import Opcode
from wsharbor.protocol.http11 import Request

from .conftest import HOST, RawClient, port_of, uri_of, wait
from .test_connection import Recorder


async def test_recv_decode() -> None:
    async def body(ws: wsharbor.ServerConnection) -> list[Any]:
        return [
            await ws.recv(decode=False),  # text as bytes
            await ws.recv(decode=True),  # binary as str
            await ws.recv(decode=None),
            await ws.recv(),
        ]

    rec = Recorder()
    async with (
        wsharbor.serve(rec.wrap(body), HOST, 0) as server,
        wsharbor.connect(uri_of(server)) as ws,
    ):
        for message in ["héllo", "wörld".encode(), "text", b"bytes"]:
            await ws.send(message)
        assert await wait(rec.result) == ["héllo".encode(), "wörld", "text", b"bytes"]


async def test_recv_decode_true_on_invalid_utf8_fails_with_1007() -> None:
    async def body(ws: wsharbor.ServerConnection) -> Any:
        with pytest.raises(ConnectionClosedError) as info:
            await ws.recv(decode=True)
        return info.value.sent.code if info.value.sent else None

    rec = Recorder()
    async with (
        wsharbor.serve(rec.wrap(body), HOST, 0) as server,
        wsharbor.connect(uri_of(server)) as ws,
    ):
        await ws.send(b"\xff\xfe")
        assert await wait(rec.result) == 1007
        await wait(ws.wait_closed())
        assert ws.close_code == 1007


async def test_send_text_flag() -> None:
    async def body(ws: wsharbor.ServerConnection) -> None:
        await ws.send(b"bytes as text", text=True)
        await ws.send("str as binary", text=False)
        await ws.send([b"frag", b"ments"], text=True)
        await ws.send(["frag", "ments"], text=False)
        await ws.send("plain")

    async with wsharbor.serve(body, HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        frame = await client.recv_data_frame()
        assert (frame.opcode, frame.data) == (Opcode.TEXT, b"bytes as text")
        frame = await client.recv_data_frame()
        assert (frame.opcode, frame.data) == (Opcode.BINARY, b"str as binary")
        first, second = await client.recv_data_frame(), await client.recv_data_frame()
        assert (first.opcode, first.fin, second.opcode, second.fin) == (
            Opcode.TEXT,
            False,
            Opcode.CONT,
            True,
        )
        first, second = await client.recv_data_frame(), await client.recv_data_frame()
        assert (first.opcode, first.data + second.data) == (Opcode.BINARY, b"fragments")
        frame = await client.recv_data_frame()
        assert (frame.opcode, frame.data) == (Opcode.TEXT, b"plain")
        await client.close_transport()


@pytest.mark.parametrize(
    ("decode", "opcode", "expected"),
    [
        # Text is decoded frame by frame: a UTF-8 sequence split across frames
        # comes with the frame that completes it.
        (None, Opcode.TEXT, ["h", "éllo", ""]),
        (False, Opcode.TEXT, [b"h", "éllo".encode(), b""]),
        (None, Opcode.BINARY, [b"h\xc3", b"\xa9llo", b""]),
        (True, Opcode.BINARY, ["h", "éllo", ""]),
    ],
)
async def test_recv_streaming_yields_each_frame(
    decode: bool | None, opcode: Opcode, expected: list[Any]
) -> None:
    streamed: list[Any] = []
    ready = asyncio.Event()

    async def body(ws: wsharbor.ServerConnection) -> Any:
        ready.set()
        async for fragment in ws.recv_streaming(decode=decode):
            streamed.append(fragment)
            await ws.send(f"got {len(streamed)}")
        # After a streamed message, messages come whole again.
        return await ws.recv()

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        await wait(ready.wait())
        parts = [b"h\xc3", b"\xa9llo", b""]
        client.send_frame(opcode, parts[0], fin=False)
        # Each fragment reaches the handler before the next one is sent.
        assert await client.recv_message() == "got 1"
        client.send_frame(Opcode.CONT, parts[1], fin=False)
        assert await client.recv_message() == "got 2"
        client.send_frame(Opcode.CONT, parts[2], fin=True)
        assert await client.recv_message() == "got 3"
        client.send_text("after", fin=False)
        client.send_frame(Opcode.CONT, b" whole", fin=True)
        assert await wait(rec.result) == "after whole"
        assert streamed == expected
        await client.close_transport()


async def test_recv_streaming_of_a_queued_message_and_recv_of_a_streamed_one() -> None:
    async def body(ws: wsharbor.ServerConnection) -> Any:
        await ws.send("go")
        await asyncio.sleep(0)
        # Wait until the first message is queued: recv_streaming yields it whole.
        while ws.buffered_bytes == 0:
            await asyncio.sleep(0.01)
        whole = [fragment async for fragment in ws.recv_streaming()]
        return whole

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        assert await client.recv_message() == "go"
        client.send_text("one", fin=False)
        client.send_frame(Opcode.CONT, b" message", fin=True)
        assert await wait(rec.result) == ["one message"]
        await client.close_transport()


async def test_concurrent_recv_streaming_raises_concurrency_error() -> None:
    async def body(ws: wsharbor.ServerConnection) -> Any:
        stream = ws.recv_streaming()
        first = await stream.__anext__()
        with pytest.raises(ConcurrencyError):
            await ws.recv()
        with pytest.raises(ConcurrencyError):
            await ws.recv_streaming().__anext__()
        rest = [fragment async for fragment in stream]
        return [first, *rest]

    rec = Recorder()
    ready = asyncio.Event()

    async def handler(ws: wsharbor.ServerConnection) -> None:
        ready.set()
        await rec.wrap(body)(ws)

    async with wsharbor.serve(handler, HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        await wait(ready.wait())
        client.send_text("a", fin=False)
        client.send_frame(Opcode.CONT, b"b", fin=True)
        assert await wait(rec.result) == ["a", "b"]
        await client.close_transport()


async def test_pong_id_custom_attributes_and_weak_references() -> None:
    async def body(ws: wsharbor.ServerConnection) -> Any:
        await ws.pong("héartbeat")
        await ws.pong(bytearray(b"raw"))
        ws.username = "alice"  # as basic_auth() does
        return ws.id, ws.id, ws.username, weakref.ref(ws)

    rec = Recorder()
    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        client = await RawClient.connect(port_of(server))
        first_id, second_id, username, ref = await wait(rec.result)
        pongs = [await client.recv_frame(), await client.recv_frame()]
        assert [(f.opcode, f.data) for f in pongs if f is not None] == [
            (Opcode.PONG, "héartbeat".encode()),
            (Opcode.PONG, b"raw"),
        ]
        assert isinstance(first_id, uuid.UUID) and first_id is second_id
        assert username == "alice"
        assert ref() is await wait(rec.connection)
        await client.close_transport()


async def test_state_is_connecting_during_the_handshake() -> None:
    seen: list[Any] = []

    def process_request(connection: wsharbor.ServerConnection, request: Request) -> None:
        seen.append((connection.state, connection.close_code, connection.close_reason))

    async with (
        wsharbor.serve(
            lambda ws: ws.wait_closed(), HOST, 0, process_request=process_request
        ) as server,
        wsharbor.connect(uri_of(server)) as ws,
    ):
        assert ws.state is State.OPEN
        assert seen == [(State.CONNECTING, None, None)]
        await ws.close(4000, "bye")
        assert ws.state is State.CLOSED
        # The close frame received: our server echoes the code, not the reason
        # (docs/coming-from-websockets.md).
        assert (ws.close_code, ws.close_reason) == (4000, "")


async def test_rejected_connection_ends_closed_with_1006() -> None:
    async with wsharbor.serve(
        lambda ws: ws.wait_closed(),
        HOST,
        0,
        process_request=lambda connection, request: connection.respond(403, "no\n"),
    ) as server:
        with pytest.raises(wsharbor.InvalidStatus) as info:
            await wsharbor.connect(uri_of(server))
        assert info.value.response.status_code == 403


async def test_leaving_async_with_on_an_exception_closes_with_1011() -> None:
    rec = Recorder()

    async def body(ws: wsharbor.ServerConnection) -> Any:
        await ws.wait_closed()
        return ws.close_code

    async with wsharbor.serve(rec.wrap(body), HOST, 0) as server:
        with pytest.raises(RuntimeError):
            async with wsharbor.connect(uri_of(server)):
                raise RuntimeError("client bug")
        assert await wait(rec.result) == 1011


# basic_auth (websockets.asyncio.server.basic_auth).


@pytest.mark.parametrize("use_coroutine", [False, True])
async def test_basic_auth(use_coroutine: bool) -> None:
    from wsharbor.asyncio.server import basic_auth

    async def check_async(username: str, password: str) -> bool:
        await asyncio.sleep(0)
        return (username, password) == ("hello", "iloveyou")

    if use_coroutine:
        hook = basic_auth(realm="dev", check_credentials=check_async)
    else:
        hook = basic_auth(realm="dev", credentials=[("hello", "iloveyou"), ("bob", "pw")])

    async def handler(ws: wsharbor.ServerConnection) -> None:
        await ws.send(f"Hello {ws.username}!")

    async with wsharbor.serve(handler, HOST, 0, process_request=hook) as server:
        port = port_of(server)
        async with wsharbor.connect(f"ws://hello:iloveyou@{HOST}:{port}/") as ws:
            assert await wait(ws.recv()) == "Hello hello!"
        for uri, body in [
            (f"ws://{HOST}:{port}/", b"Missing credentials\n"),
            (f"ws://hello:wrong@{HOST}:{port}/", b"Invalid credentials\n"),
            (f"ws://nobody:iloveyou@{HOST}:{port}/", b"Invalid credentials\n"),
        ]:
            with pytest.raises(wsharbor.InvalidStatus) as info:
                await wsharbor.connect(uri)
            response = info.value.response
            assert response.status_code == 401
            assert response.body == body
            assert response.headers["WWW-Authenticate"] == 'Basic realm="dev", charset="UTF-8"'
        with pytest.raises(wsharbor.InvalidStatus) as info:
            await wsharbor.connect(
                f"ws://{HOST}:{port}/", additional_headers={"Authorization": "Bearer x"}
            )
        assert info.value.response.body == b"Unsupported credentials\n"


def test_basic_auth_arguments() -> None:
    from wsharbor.asyncio.server import basic_auth

    with pytest.raises(ValueError):
        basic_auth()
    with pytest.raises(ValueError):
        basic_auth(credentials=("a", "b"), check_credentials=lambda u, p: True)
    with pytest.raises(TypeError):
        basic_auth(credentials=[("a", 1)])  # type: ignore[list-item]
