"""Rooms, presence and history across processes and hosts: :class:`Hub`.

A hub joins WebSocket connections to rooms and fans publications out to them,
through a broker shared by every process and host: ``memory://`` (one process,
no dependency) or Redis (``pip install 'wsharbor[redis]'``). With history, a
client that reconnects resumes where it left off, or is told it can't. See
``docs/scaling.md``.
"""

from ..exceptions import BrokerUnavailable, InvalidBrokerURL
from .hub import Hub
from .types import LAG_BUCKETS, HubStats, JoinResult, Loss, Position, Presence, Publication

__all__ = [
    "LAG_BUCKETS",
    "BrokerUnavailable",
    "Hub",
    "HubStats",
    "InvalidBrokerURL",
    "JoinResult",
    "Loss",
    "Position",
    "Presence",
    "Publication",
]
