"""HTTP Basic Authentication of the opening handshake, without I/O (RFC 7617).

The pieces both servers' ``basic_auth()`` share (:func:`wsharbor.asyncio.server.basic_auth`,
:func:`wsharbor.sync.server.basic_auth`): read the credentials of an
``Authorization: Basic ...`` header, build the ``WWW-Authenticate`` challenge of
a 401 answer (RFC 7235 section 4.1), and check credentials against a fixed list
in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["basic_credentials", "credentials_checker", "www_authenticate_basic"]


def basic_credentials(authorization: str) -> tuple[str, str] | None:
    """``(username, password)`` from an ``Authorization: Basic ...`` value, or None
    when it isn't Basic credentials (RFC 7617 section 2: ``user-id ":" password``,
    base64-encoded, UTF-8)."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def www_authenticate_basic(realm: str) -> str:
    """The ``WWW-Authenticate`` value asking for Basic credentials in ``realm``
    (RFC 7617 section 2, with the ``charset="UTF-8"`` of section 2.1)."""
    escaped = realm.replace("\\", "\\\\").replace('"', '\\"')
    return f'Basic realm="{escaped}", charset="UTF-8"'


def _is_pair(item: Any) -> bool:
    return (
        isinstance(item, tuple | list)
        and len(item) == 2
        and isinstance(item[0], str)
        and isinstance(item[1], str)
    )


def credentials_checker(
    credentials: tuple[str, str] | Iterable[tuple[str, str]],
) -> Callable[[str, str], bool]:
    """``check(username, password)`` for a ``(username, password)`` pair or several.

    The password is compared in constant time (RFC 7617 section 4). Raises
    :exc:`TypeError` for anything that isn't pairs of strings.
    """
    pairs: list[Any] = [credentials] if _is_pair(credentials) else list(credentials)
    if not all(_is_pair(pair) for pair in pairs):
        raise TypeError(f"invalid credentials argument: {credentials}")
    known = dict(pairs)

    def check(username: str, password: str) -> bool:
        expected = known.get(username)
        # Compare even when the user is unknown: no timing difference between
        # an unknown user and a wrong password.
        return hmac.compare_digest(
            (expected if expected is not None else "\0" + password).encode(
                "utf-8", "surrogateescape"
            ),
            password.encode("utf-8", "surrogateescape"),
        ) and (expected is not None)

    return check
