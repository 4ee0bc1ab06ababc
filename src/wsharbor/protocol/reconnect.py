"""When and how soon a client reconnects, without I/O: websockets' ``process_exception``
and ``backoff``, shared by ``async for ws in connect(...)`` (:mod:`wsharbor.asyncio.client`)
and ``for ws in reconnect(...)`` (:mod:`wsharbor.sync.client`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from .. import defaults
from ..exceptions import InvalidMessage, InvalidStatus

__all__ = ["backoff", "process_exception"]


def process_exception(exc: Exception) -> Exception | None:
    """Whether reconnecting after ``exc`` may succeed: None to retry, else the
    exception to raise.

    Retried, as websockets retries: network errors (:exc:`OSError`,
    :exc:`TimeoutError`), the server closing the connection during the
    handshake (:exc:`~wsharbor.exceptions.InvalidMessage` caused by
    :exc:`EOFError`), and HTTP 500, 502, 503 and 504. Anything else is raised.
    """
    if isinstance(exc, OSError | TimeoutError):
        return None
    if isinstance(exc, InvalidMessage) and isinstance(exc.__cause__, EOFError):
        return None
    if isinstance(exc, InvalidStatus) and exc.response.status in (500, 502, 503, 504):
        return None
    return exc


def backoff(
    initial_delay: float = defaults.BACKOFF_INITIAL_DELAY,
    min_delay: float = defaults.BACKOFF_MIN_DELAY,
    max_delay: float = defaults.BACKOFF_MAX_DELAY,
    factor: float = defaults.BACKOFF_FACTOR,
) -> Iterator[float]:
    """Delays between reconnection attempts: random up to ``initial_delay`` first
    (RFC 6455 section 7.2.3: clients mustn't all come back at once), then
    growing by ``factor`` from ``min_delay`` to ``max_delay``."""
    yield random.random() * initial_delay
    delay = min_delay
    while delay < max_delay:
        yield delay
        delay *= factor
    while True:
        yield max_delay
