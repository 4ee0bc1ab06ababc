#!/usr/bin/env python

"""Reconnecting client: the FAQ's snippet ("How do I reconnect when the
connection drops?", docs/faq/client.rst) with its ``...`` filled in: print each
message, stop at "stop"."""

import asyncio

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed


async def main():
    async for websocket in connect("ws://localhost:8765"):
        try:
            async for message in websocket:
                print(message)
                if message == "stop":
                    return
        except ConnectionClosed:
            continue


if __name__ == "__main__":
    asyncio.run(main())
