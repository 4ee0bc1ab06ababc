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
cost more than the message. The process's hub (:mod:`.broker`) counts the same
way, in the plain integers of :class:`~wsharbor.pubsub.HubStats`: their
growth is added to the ``wsharbor_pubsub_*`` counters and to the lag
histogram at the same moments (:meth:`Metrics.update_hub`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram

from ..pubsub.types import LAG_BUCKETS

if TYPE_CHECKING:
    from ..pubsub.types import HubStats

__all__ = ["CONTENT_TYPE", "HUB_COUNTERS", "Metrics", "multiprocess_dir"]

#: The hub's counters on /metrics: HubStats field, metric name (``_total`` is
#: appended), help. Joins with ``since`` are one counter with a ``result`` label.
HUB_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("published", "wsharbor_pubsub_published", "Publications published (publish() that returned)."),
    (
        "publish_errors",
        "wsharbor_pubsub_publish_errors",
        "publish() calls that raised BrokerUnavailable.",
    ),
    ("direct_sent", "wsharbor_pubsub_direct_sent", "Direct messages sent (send_to_user())."),
    (
        "received",
        "wsharbor_pubsub_received",
        "Publications received from the broker (once per process, not per member).",
    ),
    (
        "delivered",
        "wsharbor_pubsub_delivered",
        "Messages written to member connections (per member), live or replayed.",
    ),
    (
        "skipped",
        "wsharbor_pubsub_skipped",
        "Messages a member did not get live because its write buffer was full.",
    ),
    (
        "slow_consumers_closed",
        "wsharbor_pubsub_slow_consumers_closed",
        "Members closed with 1013 because they kept falling behind.",
    ),
    ("replayed", "wsharbor_pubsub_replayed", "Messages delivered from a room's history."),
    ("duplicates", "wsharbor_pubsub_duplicates", "Publications received twice and dropped."),
    (
        "broker_disconnects",
        "wsharbor_pubsub_broker_disconnects",
        "Times the broker's subscriber connection was lost.",
    ),
    (
        "broker_reconnects",
        "wsharbor_pubsub_broker_reconnects",
        "Times the broker's subscriber connection was re-established.",
    ),
    (
        "resubscribes",
        "wsharbor_pubsub_resubscribes",
        "Channels subscribed again after a reconnection.",
    ),
    (
        "backfills",
        "wsharbor_pubsub_backfills",
        "Rooms back-filled from their history after a broker outage.",
    ),
    (
        "lost",
        "wsharbor_pubsub_lost",
        "Publications known lost for local members (reported, never silent).",
    ),
    ("loss_events", "wsharbor_pubsub_loss_events", "Losses reported (one per room and outage)."),
    ("loss_members", "wsharbor_pubsub_loss_members", "Members concerned by reported losses."),
    (
        "epoch_changes",
        "wsharbor_pubsub_epoch_changes",
        "Times a room's epoch changed under a subscribed process.",
    ),
)


class _LagHistogram(Histogram):
    """A histogram that takes counts already bucketed (HubStats keeps them so).

    prometheus-client observes one value at a time; this adds a bucket's count
    and the sum at once, through the same per-bucket values ``observe()``
    writes (plain or, with workers, memory-mapped), so the exposition is the
    one ``observe()`` would give. Checked by tests/app/test_metrics.py.
    """

    def add(self, counts: Sequence[int], total: float) -> None:
        """Add ``counts[i]`` observations to bucket ``i`` (non-cumulative), ``total`` to the sum."""
        buckets = self._buckets
        if len(counts) != len(buckets):
            raise ValueError(f"expected {len(buckets)} bucket counts, got {len(counts)}")
        for bucket, count in zip(buckets, counts, strict=True):
            if count:
                bucket.inc(count)
        if total:
            self._sum.inc(total)


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
        # The process's hub (wsharbor.app.hub()).
        self.hub_counters = {
            field: Counter(name, documentation, registry=registry)
            for field, name, documentation in HUB_COUNTERS
        }
        self.hub_joins = Counter(
            "wsharbor_pubsub_joins",
            "Joins with a position to resume from, by result: recovered (everything missed "
            "was delivered) or unrecovered (the client must resynchronise).",
            ["result"],
            registry=registry,
        )
        for result in ("recovered", "unrecovered"):
            self.hub_joins.labels(result)
        self.hub_lag = _LagHistogram(
            "wsharbor_pubsub_lag_seconds",
            "Publish-to-delivery lag of live publications, once per publication per process "
            "(the publisher's clock against this host's).",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.hub_connected = Gauge(
            "wsharbor_pubsub_broker_connected",
            "1 while the hub's broker connection is up (the lowest of the workers).",
            registry=registry,
            multiprocess_mode="livemin",
        )
        self._hub_reported: dict[str, Any] = {}
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

    def update_hub(self, stats: HubStats, connected: bool) -> None:
        """Add what the hub counted since the last call to the Prometheus metrics."""
        self.hub_connected.set(1 if connected else 0)
        before = self._hub_reported
        for field, counter in self.hub_counters.items():
            now = getattr(stats, field)
            delta = now - before.get(field, 0)
            if delta > 0:
                counter.inc(delta)
            before[field] = now
        for result, field in (
            ("recovered", "joins_recovered"),
            ("unrecovered", "joins_unrecovered"),
        ):
            now = getattr(stats, field)
            delta = now - before.get(field, 0)
            if delta > 0:
                self.hub_joins.labels(result).inc(delta)
            before[field] = now
        counts = list(stats.lag_counts)
        previous = before.get("lag_counts") or [0] * len(counts)
        deltas = [now - then for now, then in zip(counts, previous, strict=True)]
        if any(deltas):
            self.hub_lag.add(deltas, stats.lag_sum - before.get("lag_sum", 0.0))
            before["lag_counts"] = counts
            before["lag_sum"] = stats.lag_sum

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
