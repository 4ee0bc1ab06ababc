"""The fan-out benchmark's app on ``wsharbor run``: one room of the process's hub.

Served by ``python -m wsharbor run benchmarks.servers.rooms_wsharbor:app
--broker URL --workers N`` (see :mod:`benchmarks.rooms`):

- ``/sub``: join the room, then wait for the connection to close;
- ``/pub``: publish every message received to the room (awaited one at a time).

Members receive each publication as it was published (no ``format``), through
the hub's local fan-out (``wsharbor.fanout()``, the frame encoded once per
process).
"""

from __future__ import annotations

from typing import Any

ROOM = "fanout"


async def app(websocket: Any) -> None:
    from wsharbor.app import hub

    the_hub = hub()
    if websocket.request.path == "/pub":
        async for message in websocket:
            await the_hub.publish(ROOM, message)
    else:
        await the_hub.join(ROOM, websocket)
        await websocket.wait_closed()
