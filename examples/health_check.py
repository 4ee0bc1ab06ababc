#!/usr/bin/env python
"""WS echo server with an HTTP endpoint at /health/ (the deployment guide's example).

The guide's ``process_request(path, request_headers)`` form, returning
``(status, headers, body)``, works unchanged.
"""

from __future__ import annotations

import http
from typing import Any

import wsharbor


async def health_check(path: str, request_headers: wsharbor.Headers) -> Any:
    if path == "/health/":
        return http.HTTPStatus.OK, [], b"OK\n"
    return None


async def echo(websocket: wsharbor.ServerConnection, path: str) -> None:
    async for message in websocket:
        await websocket.send(message)


if __name__ == "__main__":
    wsharbor.run(echo, "localhost", 8765, process_request=health_check)
