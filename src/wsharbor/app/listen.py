"""The listening socket: bound here, inherited with ``--fd``, or from systemd socket activation.

The process that runs ``wsharbor run`` opens the socket once; workers inherit it.
With systemd socket activation (``LISTEN_PID`` equal to our pid and
``LISTEN_FDS`` >= 1) the socket is fd 3 (``SD_LISTEN_FDS_START``); the variables
are then removed from the environment so that children don't take them for
theirs, as ``sd_listen_fds(1)`` does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import MutableMapping
from dataclasses import dataclass

from ..exceptions import ConfigError
from .config import Config

__all__ = ["SD_LISTEN_FDS_START", "Listener", "describe", "open_listener", "systemd_fd"]

SD_LISTEN_FDS_START = 3


@dataclass
class Listener:
    sock: socket.socket
    #: A Unix socket path we created and must remove on exit.
    unlink: str | None = None

    def close(self) -> None:
        self.sock.close()
        if self.unlink is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.unlink)


def systemd_fd(environ: MutableMapping[str, str] | None = None) -> int | None:
    """The socket passed by systemd socket activation, if any; clears the variables."""
    if environ is None:
        environ = os.environ
    if "LISTEN_FDS" not in environ:
        return None
    try:
        pid = int(environ.get("LISTEN_PID", ""))
        count = int(environ["LISTEN_FDS"])
    except ValueError:
        raise ConfigError(
            f"LISTEN_PID={environ.get('LISTEN_PID')!r} / LISTEN_FDS={environ['LISTEN_FDS']!r}: "
            "must be integers (systemd socket activation)"
        ) from None
    if pid != os.getpid():
        return None  # meant for another process (our parent)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        environ.pop(name, None)
    if count < 1:
        return None
    if count > 1:
        raise ConfigError(f"LISTEN_FDS={count}: wsharbor serves exactly one socket")
    return SD_LISTEN_FDS_START


def _inherited(fd: int, source: str) -> socket.socket:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        raise ConfigError(f"{source}: fd {fd} is not open") from None
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{source}: fd {fd} is not a socket")
    sock = socket.socket(fileno=fd)
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        listening = 1
    if sock.type != socket.SOCK_STREAM or not listening:
        sock.detach()
        raise ConfigError(f"{source}: fd {fd} is not a listening stream socket")
    sock.set_inheritable(True)
    return sock


def _bind_unix(path: str, backlog: int) -> Listener:
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise ConfigError(f"--uds {path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)  # stale: nobody listens there
        else:
            raise ConfigError(f"--uds {path}: another server is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--uds {path}: cannot bind: {exc.strerror}") from None
    sock.listen(backlog)
    sock.set_inheritable(True)
    return Listener(sock, unlink=path)


def _bind_tcp(host: str, port: int, backlog: int) -> Listener:
    try:
        infos = socket.getaddrinfo(
            host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: cannot resolve: {exc.strerror}") from None
    family, type_, proto, _, address = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"port {port} on {host}: permission denied") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--host {host}: not an address of this machine") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return Listener(sock)


def open_listener(config: Config, environ: MutableMapping[str, str] | None = None) -> Listener:
    """The listening socket for ``config`` (raises :class:`ConfigError`)."""
    activated = systemd_fd(environ)
    if activated is not None:
        for name in ("uds", "fd", "host", "port"):
            if name in config.explicit:
                raise ConfigError(
                    f"--{name} conflicts with systemd socket activation (LISTEN_FDS is set)"
                )
        return Listener(_inherited(activated, "LISTEN_FDS"))
    if config.fd is not None:
        return Listener(_inherited(config.fd, f"--fd {config.fd}"))
    if config.uds is not None:
        return _bind_unix(config.uds, config.backlog)
    return _bind_tcp(config.host, config.port, config.backlog)


def describe(sock: socket.socket) -> str:
    """``127.0.0.1:8000``, ``[::1]:8000`` or ``unix:/run/app.sock``, for the log."""
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{os.fsdecode(name) if name else '(unnamed)'}"
    host, port = name[0], name[1]
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}"
