"""A host for the cross-process tests: a wsharbor server with a Hub, in its own process.

``python -m tests.pubsub.hubserver BROKER_URL [--history N] [--presence-ttl S]``
serves the :class:`~tests.pubsub.conftest.HubServer` handler on a free port of
127.0.0.1, prints ``listening on PORT node NODE_ID`` on stdout, and runs until
SIGTERM (or until killed).
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from wsharbor.pubsub import Hub

from .conftest import HubServer, fmt


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--history", type=int, default=None)
    parser.add_argument("--presence-ttl", type=float, default=30.0)
    args = parser.parse_args()
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with (
        Hub(args.url, format=fmt, history=args.history, presence_ttl=args.presence_ttl) as hub,
        HubServer(hub) as server,
    ):
        print(f"listening on {server.port} node {hub.node_id}", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
