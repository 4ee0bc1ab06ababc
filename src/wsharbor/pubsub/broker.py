"""What the hub needs from a broker, and broker URLs.

:class:`Broker` is the seam between :class:`~wsharbor.pubsub.Hub` (rooms,
members, positions, fan-out) and a store that carries publications between
processes and keeps positions, history and presence: :mod:`.memory` in one
process, :mod:`.redis_broker` across processes and hosts. Every coroutine of a
broker raises :class:`~wsharbor.exceptions.BrokerUnavailable` when the broker
can't be reached in time, and nothing else for broker trouble.

Broker URLs (:func:`parse_url`):

- ``memory://`` a private in-process broker; ``memory://NAME`` one shared by
  every hub of the process that names it;
- ``redis://[[user]:password@]host[:port][/db]`` and ``rediss://`` (TLS);
- ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``:
  Sentinel finds the master of ``service`` (the password is the master's).
"""

from __future__ import annotations

import abc
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol
from urllib.parse import unquote, urlsplit

from ..exceptions import InvalidBrokerURL
from .types import Position, Presence

__all__ = [
    "Broker",
    "BrokerListener",
    "BrokerURL",
    "Entry",
    "PublishRequest",
    "RoomMeta",
    "parse_url",
]


class BrokerListener(Protocol):
    """The hub, as its broker calls it back (always from the event loop)."""

    def broker_message(self, channel: bytes, data: bytes) -> None:
        """A message arrived on a subscribed channel."""

    def broker_lost(self, exc: BaseException) -> None:
        """The subscriber connection was lost: nothing arrives until restored."""

    def broker_restored(self) -> None:
        """Reconnected, and every channel subscribed before is subscribed again."""


class PublishRequest(NamedTuple):
    """One publication to append (if ``history``) and publish atomically."""

    room: str
    text: bool
    payload: bytes
    published_at: float
    message_id: str
    #: Messages of history to keep (0: none; the position is kept anyway).
    history: int
    #: Seconds the room's position and history are kept after its last publication.
    ttl: int


class Entry(NamedTuple):
    """One publication read back from a room's history."""

    offset: int
    text: bool
    payload: bytes
    published_at: float
    message_id: str


class RoomMeta(NamedTuple):
    """A room's position as the broker has it, read without changing it.

    ``top_id`` is the message id of the publication at ``offset`` (``""`` when
    none); ``check_id`` is the message id the history holds at the offset asked
    for (``None`` when the history doesn't have it).
    """

    epoch: str
    offset: int
    top_id: str
    check_id: str | None

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.offset)


@dataclass(frozen=True)
class BrokerURL:
    """A parsed broker URL. ``address`` is safe to log (no password)."""

    scheme: str
    address: str
    name: str = ""
    hosts: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    service: str = ""

    @property
    def is_memory(self) -> bool:
        return self.scheme == "memory"


def _redact(url: str) -> str:
    """``url`` without the password, for error messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hosts}"
    return f"{scheme}://{netloc}{slash}{tail}"


def _port(url: str, text: str, default: int) -> int:
    if text == "":
        return default
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidBrokerURL(url, f"invalid port {text!r}")
    return int(text)


def _host_port(url: str, item: str, default: int) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:port
        host, bracket, rest = item[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise InvalidBrokerURL(url, f"invalid address {item!r}")
        return host, _port(url, rest[1:], default)
    host, _, port = item.partition(":")
    if not host:
        raise InvalidBrokerURL(url, "missing host")
    return host, _port(url, port, default)


def _db(url: str, text: str) -> int:
    if text == "":
        return 0
    if not text.isdigit():
        raise InvalidBrokerURL(url, f"invalid database number {text!r}")
    return int(text)


def _require_redis(url: str) -> None:
    if importlib.util.find_spec("redis") is None:
        raise ImportError(
            f"the broker {url} needs redis-py, which is not installed: "
            "pip install 'wsharbor[redis]'",
            name="redis",
        )


def parse_url(url: str) -> BrokerURL:
    """Parse and check a broker URL; raise InvalidBrokerURL with the reason.

    A Redis URL also needs redis-py: ImportError names ``pip install
    'wsharbor[redis]'`` when it is missing.
    """
    if not isinstance(url, str):
        raise InvalidBrokerURL(repr(url), "expected a string")
    shown = _redact(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise InvalidBrokerURL(
            shown, "expected memory://, redis://, rediss:// or redis+sentinel://"
        )
    if scheme == "memory":
        if "/" in rest or "@" in rest or "?" in rest:
            raise InvalidBrokerURL(shown, "memory:// takes a name only: memory://NAME")
        return BrokerURL("memory", f"memory://{rest}", name=rest)
    if scheme not in ("redis", "rediss", "redis+sentinel"):
        raise InvalidBrokerURL(
            shown,
            f"unknown scheme {scheme}://: expected memory://, redis://, rediss:// "
            "or redis+sentinel://",
        )
    if "?" in rest or "#" in rest:
        raise InvalidBrokerURL(shown, "query strings and fragments are not supported")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon:  # redis://secret@host is a password, as redis-py reads it
            username, password = None, unquote(user)
    if not hostlist:
        raise InvalidBrokerURL(shown, "missing host")
    if scheme == "redis+sentinel":
        hosts = tuple(_host_port(shown, item, 26379) for item in hostlist.split(","))
        parts = path.split("/") if path else []
        if not parts or not parts[0]:
            raise InvalidBrokerURL(shown, "missing the Sentinel service name: .../mymaster[/db]")
        if len(parts) > 2:
            raise InvalidBrokerURL(shown, "expected /service[/db] after the sentinels")
        service = unquote(parts[0])
        db = _db(shown, parts[1] if len(parts) == 2 else "")
        listed = ",".join(f"{h}:{p}" for h, p in hosts)
        _require_redis(shown)
        return BrokerURL(
            scheme,
            f"redis+sentinel://{listed}/{service}/{db}",
            hosts=hosts,
            username=username,
            password=password,
            db=db,
            service=service,
        )
    if "," in hostlist:
        raise InvalidBrokerURL(shown, "several hosts: use redis+sentinel:// for Sentinel")
    host, port = _host_port(shown, hostlist, 6379)
    if "/" in path:
        raise InvalidBrokerURL(shown, "expected /db after the host")
    db = _db(shown, path)
    # urlsplit checks what the hand-written parsing above might accept.
    try:
        urlsplit(url).port  # noqa: B018
    except ValueError as exc:
        raise InvalidBrokerURL(shown, str(exc)) from None
    _require_redis(shown)
    return BrokerURL(
        scheme,
        f"{scheme}://{host}:{port}/{db}",
        hosts=((host, port),),
        username=username,
        password=password,
        db=db,
    )


class Broker(abc.ABC):
    """Carries publications between hubs and keeps positions, history, presence."""

    #: Where the broker is, safe to log (no password).
    address: str
    #: Whether :meth:`publish` waits on the network: then a lone publication
    #: is sent by the publishing coroutine itself, not by a task (an in-process
    #: broker that never yields would starve the event loop of a loop publishing).
    publishes_over_network = False

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.listener: BrokerListener | None = None

    def room_channel(self, room: str) -> bytes:
        return f"{self.prefix}:room:{room}".encode()

    def user_channel(self, user_id: str) -> bytes:
        return f"{self.prefix}:user:{user_id}".encode()

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the subscriber connection is up (messages can arrive)."""

    @abc.abstractmethod
    async def start(self, listener: BrokerListener) -> None:
        """Connect; raise BrokerUnavailable (with the address) if it can't."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and stop reconnecting."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Round-trip to the broker."""

    @abc.abstractmethod
    async def subscribe(self, channels: Sequence[bytes]) -> None:
        """Subscribe; return once the broker confirmed (messages published after arrive)."""

    @abc.abstractmethod
    def unsubscribe(self, channels: Sequence[bytes]) -> None:
        """Unsubscribe, without waiting."""

    @abc.abstractmethod
    async def publish(self, requests: Sequence[PublishRequest]) -> list[Position]:
        """Append and publish each request atomically, in order; their positions."""

    @abc.abstractmethod
    async def send(self, channel: bytes, data: bytes) -> int:
        """Publish ``data`` on ``channel`` as is (direct messages); processes reached."""

    @abc.abstractmethod
    async def history(
        self, room: str, after: int, until: int | None, limit: int
    ) -> tuple[Position, list[Entry]]:
        """The room's position, and history entries with ``after < offset <= until``."""

    @abc.abstractmethod
    async def room_meta(self, rooms: Sequence[tuple[str, int]]) -> list[RoomMeta]:
        """For each ``(room, offset)``: its position, and the message id at ``offset``."""

    @abc.abstractmethod
    async def new_epoch(self, room: str, expected: str, epoch: str) -> RoomMeta:
        """Start a new epoch if the room's epoch is still ``expected`` (a rollback)."""

    @abc.abstractmethod
    async def presence_add(self, entries: Sequence[tuple[str, str, str]], ttl: float) -> None:
        """Add or refresh ``(room, client_id, user_id)`` entries for ``ttl`` seconds."""

    @abc.abstractmethod
    async def presence_remove(self, entries: Sequence[tuple[str, str]]) -> None:
        """Remove ``(room, client_id)`` entries."""

    @abc.abstractmethod
    async def presence_get(self, room: str) -> list[Presence]:
        """Unexpired entries of a room."""
