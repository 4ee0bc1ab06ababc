"""Fixtures shared by several test packages.

``redis_factory`` / ``redis_server``: real ``redis-server`` processes on free
ports of 127.0.0.1 (:mod:`tests.pubsub.redistools`), killed at teardown; the
test is skipped when redis-server or redis-py is missing (it fails instead
when ``CI=true``). Used by ``tests/pubsub`` and by the app server's broker
tests (``tests/app/test_app_broker.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .pubsub.redistools import RedisServer, require_redis


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start real redis-server processes (killed at teardown)."""
    require_redis()
    started: list[RedisServer] = []

    def start(
        persistent: bool = False,
        extra: tuple[str, ...] = (),
        tls: tuple[Path, Path, Path] | None = None,
    ) -> RedisServer:
        server = RedisServer(
            tmp_path / f"redis{len(started)}", persistent=persistent, extra=extra, tls=tls
        )
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_factory()
