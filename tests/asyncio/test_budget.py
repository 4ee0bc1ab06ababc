"""The server-wide read budget (issue 13, deliver 3): ``serve(max_buffered=...)``.

A thousand connections flood a handler that doesn't read; every one stays
within its own limits, and together they stay under the budget, while a
well-behaved connection on the same server keeps getting its echoes.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import wsharbor
from wsharbor import ServerConnection

from .conftest import HOST, PYTHON, port_of, subprocess_env, wait

pytestmark = pytest.mark.timeout(120)

FLOODERS = 1000
BUDGET = 8 * 2**20
READ_LIMIT = 2**16


async def handler(ws: ServerConnection) -> None:
    if ws.request is not None and ws.request.path == "/probe":
        async for message in ws:
            await ws.send(message)
    else:
        await ws.wait_closed()  # a handler that never reads


def total_buffered(server: wsharbor.Server) -> int:
    return sum(connection.buffered_bytes for connection in server.connections)


#: The attackers, in a process of their own (so that their work doesn't slow the
#: server's event loop, as it wouldn't on a real server): FLOODERS connections,
#: each sending 4 KiB messages as fast as the server takes them, until stdin closes.
FLOOD = """
import asyncio, base64, os, socket, struct, sys

PORT, COUNT = int(sys.argv[1]), int(sys.argv[2])
payload = b"f" * 4096
key = b"\\x00" * 4  # a zero mask key: the payload goes out as is
FRAME = struct.pack("!BBH", 0x82, 0x80 | 126, len(payload)) + key + payload

async def one(ready):
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    nonce = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /flood HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\n"
        f"Connection: Upgrade\\r\\nSec-WebSocket-Key: {nonce}\\r\\n"
        f"Sec-WebSocket-Version: 13\\r\\n\\r\\n".encode()
    )
    await reader.readuntil(b"\\r\\n\\r\\n")
    ready.append(writer)
    while True:
        writer.write(FRAME * 4)
        await writer.drain()

async def main():
    ready = []
    tasks = [asyncio.ensure_future(one(ready)) for _ in range(COUNT)]
    while len(ready) < COUNT:
        await asyncio.sleep(0.05)
    print("flooding", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


@pytest.mark.parametrize("max_buffered", [BUDGET, None], ids=["budget", "no-budget"])
async def test_a_thousand_flooding_connections_stay_under_the_budget(
    max_buffered: int | None,
) -> None:
    async with wsharbor.serve(
        handler, HOST, 0, max_buffered=max_buffered, read_limit=READ_LIMIT, compression=None
    ) as server:
        port = port_of(server)
        probe = await wsharbor.connect(f"ws://{HOST}:{port}/probe", compression=None)
        flooders = await asyncio.create_subprocess_exec(
            PYTHON,
            "-c",
            FLOOD,
            str(port),
            str(FLOODERS),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=subprocess_env(),
        )
        peak = 0
        echoes = 0
        try:
            assert flooders.stdout is not None
            assert await wait(flooders.stdout.readline(), 120) == b"flooding\n"
            # Two seconds of flood; the probe echoes all along.
            loop = asyncio.get_running_loop()
            end = loop.time() + 2.0
            while loop.time() < end:
                await probe.send(f"probe {echoes}")
                # A deadline for a machine busy with other work too; what is
                # checked is that the echoes keep coming, not how fast.
                assert await wait(probe.recv(), 30) == f"probe {echoes}"
                echoes += 1
                peak = max(peak, total_buffered(server))
                await asyncio.sleep(0.01)
        finally:
            await probe.close()
            if flooders.stdin is not None:
                flooders.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                flooders.kill()
            await flooders.wait()
        print(f"\nmax_buffered={max_buffered}: peak {peak / 2**20:.1f} MiB, probe echoes {echoes}")
        assert echoes >= 10  # the probe kept its round trip through the flood
        if max_buffered is not None:
            assert peak <= max_buffered, peak
        else:
            # Without a budget the per-connection limits alone allow far more:
            # the same flood breaks the budget.
            assert peak > 2 * BUDGET, peak


def test_max_buffered_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_buffered must be positive"):
        wsharbor.serve(handler, HOST, 0, max_buffered=0)


class Reader:
    """A connection as the budget sees it: it reads when not paused, and never
    gives its bytes to an application (the worst case: a handler that doesn't
    read)."""

    def __init__(self) -> None:
        self.paused = False
        self.held = 0

    def _budget_pause(self) -> bool:
        self.paused = True
        return True

    def _budget_resume(self) -> None:
        self.paused = False


@pytest.mark.parametrize("seed", range(20))
def test_the_total_never_passes_the_budget_whatever_the_order(seed: int) -> None:
    """Connections join while others flood (shares taken early are larger than
    later ones): the total stays under ``max_buffered`` all the same."""
    import random

    from wsharbor.asyncio.budget import ReadBudget

    rng = random.Random(seed)
    budget = ReadBudget(256 * 1024)
    readers: list[Reader] = []
    for _ in range(20000):
        active = [reader for reader in readers if not reader.paused]
        if len(readers) < 300 and (not active or rng.random() < 0.05):
            reader = Reader()  # connections keep opening, even when all wait
            readers.append(reader)
            budget.join(reader)  # type: ignore[arg-type]
            continue
        if not active:
            break
        reader = rng.choice(active)
        size = budget.read_size(reader, 65536)  # type: ignore[arg-type]
        reader.held += size if rng.random() < 0.7 else rng.randint(1, size)
        budget.update(reader, reader.held)  # type: ignore[arg-type]
        assert budget.total == sum(reader.held for reader in readers)
        assert budget.total <= budget.high, (budget.total, len(readers))
