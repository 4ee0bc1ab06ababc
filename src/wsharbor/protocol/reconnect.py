"""When and how soon a client reconnects, without I/O: websockets' ``process_exception``
and ``backoff``, shared by ``async for ws in connect(...)`` (:mod:`wsharbor.asyncio.client`)
and ``for ws in reconnect(...)`` (:mod:`wsharbor.sync.client`).
"""

from __future__ import annotations

import random
import urllib.parse
from collections.abc import Iterator

from .. import defaults
from ..exceptions import InvalidMessage, InvalidStatus, SecurityError
from .datastructures import Headers, HeadersLike
from .uri import WebSocketURI, parse_uri

__all__ = ["backoff", "follow_redirect", "process_exception", "without_credentials"]

#: Statuses a client follows with the response's ``Location`` header.
REDIRECT_STATUSES = (300, 301, 302, 303, 307, 308)

#: Headers that carry credentials: not sent to another origin after a redirect.
CREDENTIAL_HEADERS = ("authorization", "cookie", "proxy-authorization")


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


def follow_redirect(
    exc: Exception,
    uri: str,
    current: WebSocketURI,
    *,
    preexisting_socket: bool,
    unix: bool,
    fixed_address: str | None,
) -> Exception | tuple[str, bool]:
    """The URI to follow if ``exc`` is a redirect, and whether it goes to another
    origin; else the exception to raise.

    ``uri`` is the URI just tried, ``current`` its parsed form. A redirect can't
    be followed on a socket the caller gave (``preexisting_socket``), from
    ``wss://`` to ``ws://``, or to another origin over a Unix socket or with an
    address the caller fixed (``fixed_address`` names it in the error, as
    ``"host or port"``; None when there is none).
    """
    if not (
        isinstance(exc, InvalidStatus)
        and exc.response.status in REDIRECT_STATUSES
        and "Location" in exc.response.headers
    ):
        return exc
    new_uri = urllib.parse.urljoin(uri, exc.response.headers["Location"])
    new = parse_uri(new_uri)
    if preexisting_socket:
        return ValueError(f"cannot follow redirect to {new_uri} with a preexisting socket")
    if current.secure and not new.secure:
        return SecurityError(f"cannot follow redirect to non-secure URI {new_uri}")
    cross_origin = (current.secure, current.host, current.port) != (
        new.secure,
        new.host,
        new.port,
    )
    if cross_origin:
        if unix:
            return ValueError(
                f"cannot follow cross-origin redirect to {new_uri} with a Unix socket"
            )
        if fixed_address is not None:
            return ValueError(
                f"cannot follow cross-origin redirect to {new_uri} with an explicit {fixed_address}"
            )
    return new_uri, cross_origin


def without_credentials(headers: Headers | HeadersLike) -> Headers:
    """``headers`` less those carrying credentials: they are for the origin they
    were given for, not for the one a redirect leads to."""
    return Headers(
        [
            (name, value)
            for name, value in Headers(headers).raw_items()
            if name.lower() not in CREDENTIAL_HEADERS
        ]
    )
