"""websockets' options of serve() and connect() (issue 10, item 3).

``user_agent_header``, ``origins`` with ``re.Pattern``, ``max_size`` /
``max_queue`` / ``write_limit`` tuples, ``create_connection`` and
``extensions`` on ``connect``, ``TypeError`` for unknown options, and
``proxy=`` through real proxies running in another process (HTTP CONNECT and
SOCKS5, see ``proxy_servers.py``), given as a URL or read from the environment.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

import wsharbor
import wsharbor.http11
from wsharbor.exceptions import ConnectionClosedError, InvalidStatus
from wsharbor.protocol.deflate import ClientPerMessageDeflateFactory, DeflateSettings
from wsharbor.protocol.frames import Opcode

from .conftest import HOST, PYTHON, TIMEOUT, RawClient, port_of, uri_of, wait

PROXY_SERVERS = os.path.join(os.path.dirname(__file__), "proxy_servers.py")


async def echo(ws: wsharbor.ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def test_user_agent_header() -> None:
    agents: list[str | None] = []

    def record(connection: Any, request: wsharbor.Request) -> None:
        agents.append(request.headers.get("User-Agent"))

    async with wsharbor.serve(echo, HOST, 0, process_request=record) as server:
        for value in (wsharbor.http11.USER_AGENT, "my-agent/1.0", None):
            options = {} if value == wsharbor.http11.USER_AGENT else {"user_agent_header": value}
            async with wsharbor.connect(uri_of(server), **options):
                pass
    assert agents == [wsharbor.http11.USER_AGENT, "my-agent/1.0", None]


async def test_origins_with_patterns() -> None:
    origins = [re.compile(r"https://[a-z]+\.example\.com"), "http://exact", None]
    async with wsharbor.serve(echo, HOST, 0, origins=origins) as server:
        for origin in ("https://app.example.com", "http://exact", None):
            async with wsharbor.connect(uri_of(server), origin=origin):
                pass
        # fullmatch: a prefix or a suffix that matches isn't enough.
        for origin in ("https://app.example.com.evil", "https://x.example.com/", "http://other"):
            with pytest.raises(InvalidStatus) as info:
                await wsharbor.connect(uri_of(server), origin=origin)
            assert info.value.response.status_code == 403


def test_options_neither_library_knows_raise_type_error_at_the_call() -> None:
    with pytest.raises(TypeError, match="bogus"):
        wsharbor.connect("ws://localhost/", bogus=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="bogus"):
        wsharbor.serve(echo, HOST, 0, bogus=1)  # type: ignore[call-arg]


async def test_create_connection_options_websockets_passes_to_asyncio() -> None:
    async with (
        wsharbor.serve(
            echo, HOST, 0, family=2, flags=0, reuse_port=True, ssl_handshake_timeout=5
        ) as server,
        wsharbor.connect(
            "ws://name.invalid/",
            host=HOST,
            port=port_of(server),
            family=2,
            local_addr=(HOST, 0),
            proxy=None,
        ) as ws,
    ):
        await ws.send("through host=/port=")
        assert await wait(ws.recv()) == "through host=/port="
        assert ws.request is not None and ws.request.headers["Host"] == "name.invalid"


async def test_max_size_message_and_frame() -> None:
    async with wsharbor.serve(echo, HOST, 0, max_size=(1000, 100), compression=None) as server:
        client = await RawClient.connect(port_of(server))
        # A long message in short frames is fine...
        client.send_text("x" * 100, fin=False)
        for _ in range(4):
            client.send_frame(Opcode.CONT, b"x" * 100, fin=False)
        client.send_frame(Opcode.CONT, b"", fin=True)
        assert await client.recv_message() == "x" * 500
        # ... a frame over the frame limit isn't.
        client.send_text("y" * 101)
        assert (await client.expect_close()).code == 1009
        await client.close_transport()


def test_limits_tuples() -> None:
    from wsharbor.asyncio.connection import ConnectionOptions

    options = ConnectionOptions(max_queue=(8, 2), write_limit=(1000, 10), logger=None)  # type: ignore[arg-type]
    assert (options.max_queue, options.max_queue_low) == (8, 2)
    assert (options.write_limit, options.write_limit_low) == (1000, 10)
    options = ConnectionOptions(max_queue=16, write_limit=4096, logger=None)  # type: ignore[arg-type]
    assert (options.max_queue_low, options.write_limit_low) == (4, 1024)  # a quarter
    with pytest.raises(ValueError):
        ConnectionOptions(max_queue=(2, 8), logger=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ConnectionOptions(write_limit=(10, 100), logger=None)  # type: ignore[arg-type]


async def test_write_limit_tuple_sets_the_transport_marks() -> None:
    async with (
        wsharbor.serve(echo, HOST, 0, write_limit=(50_000, 1_000)) as server,
        wsharbor.connect(uri_of(server), write_limit=(40_000, 2_000)) as ws,
    ):
        if True:
            assert ws.transport is not None
            assert ws.transport.get_write_buffer_limits() == (2_000, 40_000)


async def test_create_connection_and_extensions_on_connect() -> None:
    class Tagged(wsharbor.ClientConnection):
        __slots__ = ()
        tag = "custom"

    deflate = ClientPerMessageDeflateFactory(DeflateSettings(window_bits=12, memory_level=4))
    async with (
        wsharbor.serve(echo, HOST, 0) as server,
        wsharbor.connect(
            uri_of(server), create_connection=Tagged, extensions=[deflate], compression=None
        ) as ws,
    ):
        assert isinstance(ws, Tagged) and ws.tag == "custom"
        assert ws.request is not None
        assert "permessage-deflate" in ws.request.headers["Sec-WebSocket-Extensions"]
        assert ws.protocol is not None and ws.protocol.extensions
        await ws.send("compressed")
        assert await wait(ws.recv()) == "compressed"


# Proxies, real ones, in another process.


class ProxyProcess:
    def __init__(self, kind: str) -> None:
        self.process = subprocess.Popen(
            [PYTHON, PROXY_SERVERS, kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def tunnels(self) -> str:
        """The lines printed so far (closes the proxy)."""
        out, _ = self.process.communicate(timeout=TIMEOUT)
        return out

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)


@pytest.fixture
def http_proxy() -> Iterator[ProxyProcess]:
    proxy = ProxyProcess("http")
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def socks_proxy() -> Iterator[ProxyProcess]:
    pytest.importorskip("python_socks", reason="python-socks is a test dependency")
    proxy = ProxyProcess("socks5")
    try:
        yield proxy
    finally:
        proxy.close()


async def exchange(uri: str, **options: Any) -> None:
    async with wsharbor.connect(uri, open_timeout=TIMEOUT, **options) as ws:
        await ws.send("through the proxy")
        assert await wait(ws.recv()) == "through the proxy"


async def test_http_connect_proxy_url(http_proxy: ProxyProcess) -> None:
    async with wsharbor.serve(echo, HOST, 0) as server:
        await exchange(uri_of(server), proxy=f"http://{HOST}:{http_proxy.port}")
        port = port_of(server)
    assert http_proxy.tunnels() == f"CONNECT {HOST}:{port}\n"


async def test_socks5_proxy_url(socks_proxy: ProxyProcess) -> None:
    async with wsharbor.serve(echo, HOST, 0) as server:
        await exchange(uri_of(server), proxy=f"socks5h://{HOST}:{socks_proxy.port}")
        port = port_of(server)
    assert socks_proxy.tunnels() == f"socks5 {HOST}:{port}\n"


async def test_proxy_from_the_environment(
    socks_proxy: ProxyProcess, http_proxy: ProxyProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("http_proxy", f"http://{HOST}:{http_proxy.port}")
    async with wsharbor.serve(echo, HOST, 0) as server:
        await exchange(uri_of(server))  # proxy=True by default
        await exchange(uri_of(server), proxy=None)  # direct
        monkeypatch.setenv("socks_proxy", f"socks5h://{HOST}:{socks_proxy.port}")
        await exchange(uri_of(server))  # SOCKS is preferred, as websockets does
        monkeypatch.setenv("no_proxy", HOST)
        await exchange(uri_of(server))  # bypassed
        port = port_of(server)
    assert http_proxy.tunnels() == f"CONNECT {HOST}:{port}\n"
    assert socks_proxy.tunnels() == f"socks5 {HOST}:{port}\n"


async def test_socks_proxy_refusing_is_a_proxy_error_or_os_error() -> None:
    pytest.importorskip("python_socks")
    async with wsharbor.serve(echo, HOST, 0) as server:
        # An HTTP server is no SOCKS proxy.
        with pytest.raises((wsharbor.ProxyError, OSError)):
            await wsharbor.connect(
                uri_of(server), proxy=f"socks5://{HOST}:{port_of(server)}", open_timeout=TIMEOUT
            )


async def test_recv_after_frame_limit_is_closed() -> None:
    async with (
        wsharbor.serve(echo, HOST, 0) as server,
        wsharbor.connect(uri_of(server), max_size=(None, 10)) as ws,
    ):
        await ws.send("x" * 11)  # echoed in one frame over the client's frame limit
        with pytest.raises(ConnectionClosedError) as info:
            await wait(ws.recv())
    assert info.value.sent is not None and info.value.sent.code == 1009
