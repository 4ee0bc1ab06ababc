"""Prometheus metrics of a worker, in prometheus-client's multiprocess mode when supervised.

The supervisor sets ``PROMETHEUS_MULTIPROC_DIR`` to a directory it creates (and
removes on exit) before starting workers; each worker then writes its values to
memory-mapped files there and ``/metrics``, answered by any worker, aggregates
every worker's files. A dead worker's live gauges are dropped
(``mark_process_dead``); its counters stay, since totals don't go down.

Without the variable (``--workers 1``), values live in this process.

Per-message and per-byte counting happens in plain integers on each connection
(see :mod:`.worker`); they are added to these counters when the connection
closes and, for open connections, every few seconds and before each scrape:
touching a multiprocess counter (a lock and an mmap write) per message would
cost more than the message.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["CONTENT_TYPE", "Metrics", "multiprocess_dir"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The metrics of one worker process."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.multiprocess = multiprocess_dir() is not None
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.connections_open = Gauge(
            "wsharbor_connections_open",
            "Open WebSocket connections.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.handshakes = Counter(
            "wsharbor_handshakes",
            "HTTP answers to requests on the WebSocket port, by status "
            "(101 for accepted handshakes; the health, readiness and metrics paths excluded).",
            ["status"],
            registry=registry,
        )
        self.messages_in = Counter(
            "wsharbor_messages_received", "WebSocket messages received.", registry=registry
        )
        self.messages_out = Counter(
            "wsharbor_messages_sent", "WebSocket messages sent.", registry=registry
        )
        self.bytes_in = Counter(
            "wsharbor_bytes_received",
            "Bytes received on WebSocket connections (after TLS), handshake included.",
            registry=registry,
        )
        self.bytes_out = Counter(
            "wsharbor_bytes_sent",
            "Bytes sent on WebSocket connections (before TLS), handshake included.",
            registry=registry,
        )
        self.close_codes = Counter(
            "wsharbor_connections_closed",
            "Closed WebSocket connections, by close code received (1006: no close frame).",
            ["code"],
            registry=registry,
        )
        self.handler_errors = Counter(
            "wsharbor_handler_errors",
            "Connection handlers that raised an exception (the connection got 1011).",
            registry=registry,
        )
        self.memory_per_connection = Gauge(
            "wsharbor_connection_memory_bytes",
            "Estimated memory per open connection in a worker: resident memory growth since "
            "the worker started, divided by its open connections.",
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.resident_memory = Gauge(
            "wsharbor_worker_resident_memory_bytes",
            "Resident memory of each worker.",
            registry=registry,
            multiprocess_mode="liveall",
        )
        if not self.multiprocess:
            from prometheus_client import GCCollector, PlatformCollector, ProcessCollector

            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self._baseline = resident_memory()

    def update_memory(self, open_connections: int) -> None:
        rss = resident_memory()
        self.resident_memory.set(rss)
        if open_connections > 0:
            self.memory_per_connection.set(max(rss - self._baseline, 0) / open_connections)
        else:
            self.memory_per_connection.set(0)

    def exposition(self) -> bytes:
        """The Prometheus text format, every worker included in multiprocess mode."""
        from prometheus_client import CollectorRegistry, generate_latest

        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def resident_memory() -> int:
    """Resident set size of this process in bytes (Linux: /proc; else peak RSS)."""
    try:
        with open("/proc/self/statm", "rb") as file:
            pages = int(file.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        import resource

        usage: Any = resource.getrusage(resource.RUSAGE_SELF)
        return int(usage.ru_maxrss) * 1024
