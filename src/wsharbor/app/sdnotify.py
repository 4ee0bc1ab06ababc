"""``sd_notify(3)`` with the socket module: READY=1, RELOADING=1, STOPPING=1, STATUS=...

systemd passes ``NOTIFY_SOCKET``: a path, or an abstract name written with a
leading ``@``. Each notification is one datagram of ``KEY=VALUE`` lines. Without
the variable, :func:`notify` does nothing. Errors are logged, never raised: a
service must not die because its supervisor's socket went away.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

__all__ = ["notify", "reloading"]

logger = logging.getLogger("wsharbor.app")


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1\\nSTATUS=2 workers"``); True if sent."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    elif address[0] != "/":
        logger.debug("NOTIFY_SOCKET=%s: unsupported address", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as exc:
        logger.warning("sd_notify to %s failed: %s", address.replace("\0", "@"), exc)
        return False
    return True


def reloading() -> str:
    """``RELOADING=1`` with the ``MONOTONIC_USEC`` that ``Type=notify-reload`` requires."""
    return f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
