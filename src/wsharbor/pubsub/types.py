"""The values :class:`~wsharbor.pubsub.Hub` hands to the application.

Every room publication has a :class:`Position`: the room's ``epoch`` (a string
that changes when the broker lost the room's state, e.g. Redis restarted without
persistence, the keys expired, or a failover rolled back the last writes) and an
``offset`` (1, 2, 3, ... within an epoch, one per publication, the same order for
every member everywhere). A client that keeps the position of the last message
it got can ask for what it missed with ``hub.join(room, ws, since=position)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ..asyncio.connection import Connection

__all__ = [
    "LAG_BUCKETS",
    "HubStats",
    "JoinResult",
    "Loss",
    "Position",
    "Presence",
    "Publication",
]


class Position(NamedTuple):
    """Where a room's stream is: ``(epoch, offset)``.

    ``epoch`` is ``""`` and ``offset`` 0 for a room nothing was published to yet
    (or whose state the broker forgot). Positions compare equal as tuples; only
    offsets of the same epoch are comparable.
    """

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Publication:
    """One message as the hub delivers it; what ``Hub(format=...)`` receives.

    ``room`` is ``None`` for a direct message (:meth:`Hub.send_to_user`), which
    has no position (``epoch`` ``""``, ``offset`` 0) and ``user_id`` set.
    ``published_at`` is the publisher's ``time.time()`` when it called
    :meth:`Hub.publish`. ``replayed`` is true for a message read back from the
    room's history (a join with ``since``, a slow member catching up, a
    back-fill after a broker outage) rather than received live.
    """

    room: str | None
    message: str | bytes
    epoch: str
    offset: int
    published_at: float
    replayed: bool = False
    user_id: str | None = None

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.offset)


@dataclass(frozen=True, slots=True)
class JoinResult:
    """What :meth:`Hub.join` returns.

    ``position`` is the room's position when the member started receiving live
    messages: the member gets every publication after it, in order. With
    ``since``, ``recovered`` is true when every publication between ``since``
    and ``position`` was delivered first (``replayed`` of them), in order,
    exactly once; false when that was impossible (the epoch changed, the gap
    is larger than the history, or the room keeps no history): then the
    application must resynchronise the client some other way (reload its
    state), and no replayed message was sent unless ``replayed`` says so.
    Without ``since``, ``recovered`` is false.
    """

    position: Position
    recovered: bool
    replayed: int = 0


@dataclass(frozen=True, slots=True, order=True)
class Presence:
    """One member of a room somewhere in the cluster (:meth:`Hub.presence`).

    ``client_id`` is unique per connection and room membership across hosts
    (``<node id>.<number>``); ``user_id`` is what the member joined with.
    """

    client_id: str
    user_id: str | None


@dataclass(frozen=True, slots=True)
class Loss:
    """Publications of a room that some local members will never get.

    Passed to ``Hub(on_loss=...)``, once per room each time the room
    resynchronises with the broker and finds publications it can't deliver:
    the broker connection was lost and the room keeps no history (or not
    enough of it), or the broker lost the room's state (a new ``epoch``).
    ``lost`` is how many publications were lost, or ``None`` when the broker
    can't tell. ``members`` are the local connections of the room; live
    delivery goes on after ``position``.
    Without ``on_loss``, the hub closes each of them with 1013 (try again
    later) and the reason ``"messages lost"``, so that clients reconnect and
    resynchronise.
    """

    room: str
    members: tuple[Connection, ...]
    lost: int | None
    position: Position
    reason: str


#: Upper bounds (seconds) of the publish-to-delivery lag histogram buckets; the
#: last bucket is everything above the last bound.
LAG_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


@dataclass(slots=True)
class HubStats:
    """Plain integer counters of one hub (one process), since it was created.

    Counters only grow. ``lag_counts[i]`` counts live deliveries whose
    publish-to-delivery lag was at most ``LAG_BUCKETS[i]`` seconds and more than
    the previous bound (the last element: above every bound); the lag is
    measured once per publication per process, against the publisher's clock.
    """

    #: Publications this hub published (``publish()`` that returned).
    published: int = 0
    #: ``publish()`` calls that raised BrokerUnavailable.
    publish_errors: int = 0
    #: Direct messages sent with ``send_to_user()``.
    direct_sent: int = 0
    #: Publications received from the broker (once per process, not per member).
    received: int = 0
    #: Messages written to member connections (per member), live or replayed.
    delivered: int = 0
    #: Messages a member did not get live because its write buffer was full
    #: (or it was sending a fragmented message). With history the member then
    #: catches up from the history; without it the message is lost for it.
    skipped: int = 0
    #: Members closed with 1013 because they kept falling behind.
    slow_consumers_closed: int = 0
    #: Messages delivered from history (joins with ``since``, catch-ups, back-fills).
    replayed: int = 0
    #: Publications received twice (at a seam) and dropped.
    duplicates: int = 0
    #: Joins with ``since`` that recovered everything / that could not.
    joins_recovered: int = 0
    joins_unrecovered: int = 0
    #: Times the broker connection was lost / re-established.
    broker_disconnects: int = 0
    broker_reconnects: int = 0
    #: Channels subscribed again after a reconnection.
    resubscribes: int = 0
    #: Rooms whose publications during an outage were back-filled from history.
    backfills: int = 0
    #: Publications known lost for local members (no history), and loss events
    #: (one per room and outage) with the members they concerned.
    lost: int = 0
    loss_events: int = 0
    loss_members: int = 0
    #: Times a room's epoch changed under a subscribed process.
    epoch_changes: int = 0
    #: Lag histogram (see the class docstring), its sum (seconds) and count.
    lag_counts: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS) + 1))
    lag_sum: float = 0.0
    lag_count: int = 0

    def observe_lag(self, seconds: float) -> None:
        """Count one publish-to-delivery lag."""
        index = 0
        for bound in LAG_BUCKETS:
            if seconds <= bound:
                break
            index += 1
        self.lag_counts[index] += 1
        self.lag_sum += seconds
        self.lag_count += 1

    def as_dict(self) -> dict[str, int | float | list[int]]:
        """The counters by name (for logs, JSON, or a metrics exporter)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
