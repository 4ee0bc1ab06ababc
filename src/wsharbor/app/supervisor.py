"""The supervisor of worker processes (in progress)."""

from __future__ import annotations

import socket

from ..exceptions import ConfigError
from .config import Config

__all__ = ["Supervisor"]


class Supervisor:
    def __init__(self, config: Config, sock: socket.socket) -> None:
        self.config = config
        self.sock = sock

    def run(self) -> int:
        raise ConfigError("--workers > 1 and --reload are not implemented yet")
