"""The wsharbor demo: an echo endpoint, a chat room and a page that joins the chat.

Run it with the application server (``make run`` does this)::

    wsharbor run examples.demo.app:app --host 127.0.0.1 --port 8765

then open http://127.0.0.1:8765/ in two browser tabs.

Routes:

- ``GET /`` (plain HTTP): the chat page, one self-contained HTML file with an
  inline script allowed by its hash in the Content-Security-Policy.
- ``ws://.../echo``: sends every message back.
- ``ws://.../chat``: a chat room. The first message is
  ``{"type": "join", "name": "..."}``; then ``{"type": "message", "text": "..."}``.
  Every member receives, as JSON, ``{"type": "join"|"leave", "name", "members"}``
  and ``{"type": "message", "name", "text"}``, sent with :func:`wsharbor.broadcast`.
- any other WebSocket path: the handshake completes, then close 1008 "unknown path";
  any other plain HTTP request: 404 (426 for ``/echo`` and ``/chat``).

Limits: a message over :data:`MAX_MESSAGE_BYTES` closes the connection with 1009
(run with ``--max-size 4096`` to have the server refuse it before buffering it);
a chat member sending faster than the rate limit, or breaking the chat protocol,
gets 1008; binary messages in the chat get 1003.

The chat room lives in the process: with ``--workers N``, members connected to
different workers are in different rooms (a shared room needs a pub/sub channel
between processes, such as Redis).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import wsharbor
from wsharbor import Request, Response, ServerConnection

__all__ = ["MAX_MESSAGE_BYTES", "DemoApp", "app"]

#: Largest message accepted from a client, in bytes (UTF-8 for text).
MAX_MESSAGE_BYTES = 4096
#: Longest chat name, in characters.
MAX_NAME_LENGTH = 32

INDEX_HTML = (Path(__file__).parent / "static" / "index.html").read_text(encoding="utf-8")


def _script_hash(html: str) -> str:
    """The CSP source that allows the page's one inline script and nothing else."""
    match = re.search(r"<script>(.*?)</script>", html, re.DOTALL)
    assert match is not None, "index.html has no inline script"
    digest = hashlib.sha256(match.group(1).encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": (
        "default-src 'none'; "
        f"script-src {_script_hash(INDEX_HTML)}; "
        "style-src 'unsafe-inline'; "
        "connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _is_upgrade(request: Request) -> bool:
    tokens = (
        token.strip().lower()
        for value in request.headers.get_all("Upgrade")
        for token in value.split(",")
    )
    return "websocket" in tokens


def _size(message: str | bytes) -> int:
    return len(message.encode("utf-8")) if isinstance(message, str) else len(message)


class TokenBucket:
    """``rate`` messages per second on average, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class ChatError(Exception):
    """A chat member broke the protocol: close with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class DemoApp:
    """The handler: ``async def __call__(websocket)`` plus ``process_request``.

    ``wsharbor run`` calls :meth:`process_request` for every request after its own
    ``/healthz``, ``/readyz`` and ``/metrics``; with :func:`wsharbor.serve`, pass
    ``process_request=app.process_request``.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        rate: float = 5.0,
        burst: int = 20,
        join_timeout: float = 30.0,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.rate = rate
        self.burst = burst
        self.join_timeout = join_timeout
        #: Chat members and their names.
        self.members: dict[ServerConnection, str] = {}

    # HTTP.

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if _is_upgrade(request):
            return None  # a WebSocket handshake: __call__ routes it once open
        path = request.path.partition("?")[0]
        if path == "/":
            return Response.text(200, INDEX_HTML, PAGE_HEADERS)
        if path in ("/echo", "/chat"):
            return Response.text(
                426,
                f"{path} is a WebSocket endpoint: connect with ws://\n",
                {"Upgrade": "websocket", "Sec-WebSocket-Version": "13"},
            )
        return Response.text(404, "not found\n")

    # WebSocket.

    async def __call__(self, websocket: ServerConnection) -> None:
        path = websocket.path.partition("?")[0]
        if path == "/echo":
            await self.echo(websocket)
        elif path == "/chat":
            await self.chat(websocket)
        else:
            await websocket.close(1008, "unknown path")

    async def echo(self, websocket: ServerConnection) -> None:
        async for message in websocket:
            if _size(message) > self.max_message_bytes:
                await websocket.close(1009, "message too big")
                return
            await websocket.send(message)

    async def chat(self, websocket: ServerConnection) -> None:
        try:
            async with asyncio.timeout(self.join_timeout):
                name = self._parse_join(await websocket.recv())
        except TimeoutError:
            await websocket.close(1008, "join timeout")
            return
        except ChatError as exc:
            await websocket.close(exc.code, exc.reason)
            return
        self.members[websocket] = name
        try:
            self._announce({"type": "join", "name": name, "members": len(self.members)})
            bucket = TokenBucket(self.rate, self.burst)
            async for message in websocket:
                if not bucket.take():
                    raise ChatError(1008, "too many messages")
                text = self._parse_text(message)
                if text is not None:
                    self._announce({"type": "message", "name": name, "text": text})
        except ChatError as exc:
            await websocket.close(exc.code, exc.reason)
        finally:
            del self.members[websocket]
            self._announce({"type": "leave", "name": name, "members": len(self.members)})

    def _announce(self, event: dict[str, Any]) -> None:
        wsharbor.broadcast(self.members, json.dumps(event))

    def _decode(self, message: str | bytes, expected: str) -> dict[str, Any]:
        if _size(message) > self.max_message_bytes:
            raise ChatError(1009, "message too big")
        if not isinstance(message, str):
            raise ChatError(1003, "text messages only")
        try:
            event = json.loads(message)
        except ValueError:
            event = None
        if not isinstance(event, dict) or event.get("type") != expected:
            raise ChatError(1008, f'expected JSON {{"type": "{expected}", ...}}')
        return event

    def _parse_join(self, message: str | bytes) -> str:
        name = self._decode(message, "join").get("name")
        if not isinstance(name, str):
            raise ChatError(1008, "name must be a string")
        # No control characters, newlines or runs of spaces.
        name = " ".join("".join(c if c.isprintable() else " " for c in name).split())
        if not 1 <= len(name) <= MAX_NAME_LENGTH:
            raise ChatError(1008, f"name must have 1 to {MAX_NAME_LENGTH} characters")
        return name

    def _parse_text(self, message: str | bytes) -> str | None:
        text = self._decode(message, "message").get("text")
        if not isinstance(text, str):
            raise ChatError(1008, "text must be a string")
        return text if text.strip() else None


#: The handler for ``wsharbor run examples.demo.app:app``.
app = DemoApp()
