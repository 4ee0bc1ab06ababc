#!/usr/bin/env python
"""Graceful shutdown on SIGTERM (the deployment guide's example, Unix-only).

``wsharbor.run()`` does all of this in one call; this is the long form, for
programs that run other things on the same loop.
"""

from __future__ import annotations

import asyncio
import signal

import wsharbor


async def echo(websocket: wsharbor.ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(message)


async def echo_server(stop: asyncio.Future[None]) -> None:
    # On exit, the server sends 1001 to every connection and waits for handlers.
    async with wsharbor.serve(echo, "localhost", 8765):
        await stop


async def main() -> None:
    loop = asyncio.get_running_loop()
    # The stop condition is set when receiving SIGTERM.
    stop: asyncio.Future[None] = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    # Run the server until the stop condition is met.
    await echo_server(stop)


if __name__ == "__main__":
    asyncio.run(main())
