"""The wsharbor demo: an echo endpoint, a chat room and a page that joins the chat.

Run it with the application server (``make run`` does this)::

    wsharbor run examples.demo.app:app --host 127.0.0.1 --port 8765

then open http://127.0.0.1:8765/ in two browser tabs.

Routes:

- ``GET /`` (plain HTTP): the chat page, one self-contained HTML file with an
  inline script allowed by its hash in the Content-Security-Policy.
- ``ws://.../echo``: sends every message back.
- ``ws://.../chat``: a chat room, one room across every worker and host
  sharing the broker (see below). The protocol is JSON:

  * first message ``{"type": "join", "name": "..."}``, with ``"since":
    {"epoch": "...", "offset": N}`` when the client reconnects (the position
    of the last event it got);
  * then ``{"type": "message", "text": "..."}``.

  The member first receives ``{"type": "welcome", "recovered", "position":
  {"epoch", "offset"}, "members"}`` (sent to it alone; ``recovered`` says
  whether every event after ``since`` was sent again first, in order: when
  false, some may be missing). Every member receives the room's events
  ``{"type": "join"|"leave", "name", "members"}`` and ``{"type": "message",
  "name", "text"}``, each with its ``"epoch"`` and ``"offset"``; ``members``
  is the member list across hosts (presence). A page keeps the position of
  the last event and sends it back when it reconnects: nothing is lost as
  long as the room's history (:data:`HISTORY` events) covers the gap.
- any other WebSocket path: the handshake completes, then close 1008 "unknown path";
  any other plain HTTP request: 404 (426 for ``/echo`` and ``/chat``).

Limits: a message over :data:`MAX_MESSAGE_BYTES` closes the connection with 1009
(run with ``--max-size 4096`` to have the server refuse it before buffering it);
a chat member sending faster than the rate limit, or breaking the chat protocol,
gets 1008; binary messages in the chat get 1003.

The chat room is a room of a :class:`wsharbor.pubsub.Hub`: under ``wsharbor
run``, the process's hub (:func:`wsharbor.app.hub`), whose broker is
``--broker`` (``memory://`` by default: one process, nothing to install, as
``make run`` serves it). With ``--workers N``, or several hosts, run it with
``--broker redis://HOST:6379/0`` and every member is in one room::

    wsharbor run examples.demo.app:app --workers 2 --broker redis://127.0.0.1:6379/0

The app sets the hub's ``format`` (each event carries its position) and a
history of :data:`HISTORY` events through ``hub_options``. Outside ``wsharbor
run``, give it a started hub: ``DemoApp(hub=Hub(format=...,
history=HISTORY))`` (see :meth:`DemoApp.hub_options`).
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

from wsharbor import Request, Response, ServerConnection
from wsharbor.exceptions import BrokerUnavailable
from wsharbor.pubsub import Hub, Position, Publication

__all__ = ["HISTORY", "MAX_MESSAGE_BYTES", "ROOM", "DemoApp", "app", "with_position"]

#: Largest message accepted from a client, in bytes (UTF-8 for text).
MAX_MESSAGE_BYTES = 4096
#: Longest chat name, in characters.
MAX_NAME_LENGTH = 32
#: The chat's room in the hub.
ROOM = "chat"
#: Events of the room kept for clients that reconnect.
HISTORY = 100

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


def with_position(publication: Publication) -> str:
    """The hub's ``format``: the event the chat published, with its position.

    Events are JSON objects the chat serialised itself, so the position is
    spliced in front of the first key rather than parsed and dumped again.
    """
    event = publication.message
    assert isinstance(event, str) and event.startswith("{")
    head = json.dumps({"epoch": publication.epoch, "offset": publication.offset})
    return f"{head[:-1]}, {event[1:]}" if event != "{}" else head


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
    ``process_request=app.process_request``, and a started hub as ``hub``.
    """

    def __init__(
        self,
        *,
        hub: Hub | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        rate: float = 5.0,
        burst: int = 20,
        join_timeout: float = 30.0,
    ) -> None:
        self._hub = hub
        self.max_message_bytes = max_message_bytes
        self.rate = rate
        self.burst = burst
        self.join_timeout = join_timeout

    #: What ``wsharbor run`` creates the process's hub with (besides ``--broker``):
    #: events carry their position, and the room keeps a history to resume from.
    #: ``--history N`` overrides the history.
    hub_options: dict[str, Any] = {"format": with_position, "history": HISTORY}

    @property
    def hub(self) -> Hub:
        """The hub given to the constructor, else the ``wsharbor run`` process's."""
        if self._hub is not None:
            return self._hub
        from wsharbor.app import hub

        return hub()

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
                name, since = self._parse_join(await websocket.recv())
        except TimeoutError:
            await websocket.close(1008, "join timeout")
            return
        except ChatError as exc:
            await websocket.close(exc.code, exc.reason)
            return
        hub = self.hub
        try:
            # With ``since``, what the client missed comes first, in order.
            result = await hub.join(ROOM, websocket, user_id=name, since=since)
            members = await self._members()
        except BrokerUnavailable:
            await websocket.close(1013, "chat unavailable, try again later")
            return
        position = {"epoch": result.position.epoch, "offset": result.position.offset}
        welcome = {"type": "welcome", "recovered": result.recovered, "position": position}
        await websocket.send(json.dumps({**welcome, "members": members}))
        try:
            await self._announce({"type": "join", "name": name, "members": members})
            bucket = TokenBucket(self.rate, self.burst)
            async for message in websocket:
                if not bucket.take():
                    raise ChatError(1008, "too many messages")
                text = self._parse_text(message)
                if text is not None and not await self._announce(
                    {"type": "message", "name": name, "text": text}
                ):
                    await websocket.send(
                        json.dumps({"type": "error", "text": "not sent: chat unavailable"})
                    )
        except ChatError as exc:
            await websocket.close(exc.code, exc.reason)
        finally:
            await hub.leave(ROOM, websocket)
            try:
                members = await self._members()
            except BrokerUnavailable:
                pass
            else:
                await self._announce({"type": "leave", "name": name, "members": members})

    async def _members(self) -> list[str]:
        """Who is in the room, on every host (the hub's presence)."""
        return sorted(p.user_id or "" for p in await self.hub.presence(ROOM))

    async def _announce(self, event: dict[str, Any]) -> bool:
        """Publish an event to the room, everywhere; False if the broker is unavailable."""
        try:
            await self.hub.publish(ROOM, json.dumps(event))
        except BrokerUnavailable:
            return False
        return True

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

    def _parse_join(self, message: str | bytes) -> tuple[str, Position | None]:
        event = self._decode(message, "join")
        name = event.get("name")
        if not isinstance(name, str):
            raise ChatError(1008, "name must be a string")
        # No control characters, newlines or runs of spaces.
        name = " ".join("".join(c if c.isprintable() else " " for c in name).split())
        if not 1 <= len(name) <= MAX_NAME_LENGTH:
            raise ChatError(1008, f"name must have 1 to {MAX_NAME_LENGTH} characters")
        since = event.get("since")
        if since is None:
            return name, None
        epoch = since.get("epoch") if isinstance(since, dict) else None
        offset = since.get("offset") if isinstance(since, dict) else None
        if (
            not isinstance(epoch, str)
            or len(epoch) > 64
            or not isinstance(offset, int)
            or isinstance(offset, bool)
            or offset < 0
        ):
            raise ChatError(1008, 'since must be {"epoch": string, "offset": integer >= 0}')
        return name, Position(epoch, offset)

    def _parse_text(self, message: str | bytes) -> str | None:
        text = self._decode(message, "message").get("text")
        if not isinstance(text, str):
            raise ChatError(1008, "text must be a string")
        return text if text.strip() else None


#: The handler for ``wsharbor run examples.demo.app:app``.
app = DemoApp()
