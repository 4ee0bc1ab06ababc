"""``wsharbor.app.metrics``: the exposition a scrape gets, parsed with prometheus_client's parser.

Single-process mode runs here. Multiprocess mode depends on
``PROMETHEUS_MULTIPROC_DIR`` when prometheus_client is first imported, so its
workers and its scraper are real subprocesses sharing one directory, as the
supervisor's workers do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from wsharbor.app.metrics import CONTENT_TYPE, Metrics, multiprocess_dir, resident_memory
from wsharbor.pubsub import LAG_BUCKETS, HubStats

TIMEOUT = 30.0

#: Every metric a worker exports, with its type.
FAMILIES = {
    "wsharbor_connections_open": "gauge",
    "wsharbor_handshakes": "counter",
    "wsharbor_messages_received": "counter",
    "wsharbor_messages_sent": "counter",
    "wsharbor_bytes_received": "counter",
    "wsharbor_bytes_sent": "counter",
    "wsharbor_connections_closed": "counter",
    "wsharbor_handler_errors": "counter",
    "wsharbor_connection_memory_bytes": "gauge",
    "wsharbor_worker_resident_memory_bytes": "gauge",
}


def parse(exposition: bytes) -> dict[str, tuple[str, list[Sample]]]:
    return {
        family.name: (family.type, family.samples)
        for family in text_string_to_metric_families(exposition.decode())
    }


def value(
    families: dict[str, tuple[str, list[Sample]]], sample: str, **labels: str
) -> float | None:
    """The value of one sample, or None when there is no such sample."""
    for _, samples in families.values():
        for s in samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_content_type_is_the_text_format_generated() -> None:
    assert CONTENT_TYPE == CONTENT_TYPE_PLAIN_0_0_4


# One process (--workers 1).


@pytest.fixture
def single(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert multiprocess_dir() is None
    metrics = Metrics()
    assert not metrics.multiprocess
    return metrics


def test_single_process_exposition(single: Metrics) -> None:
    metrics = single
    metrics.connections_open.inc(3)
    metrics.connections_open.dec()
    metrics.handshakes.labels("101").inc(3)
    metrics.handshakes.labels("403").inc()
    metrics.messages_in.inc(10)
    metrics.messages_out.inc(12)
    metrics.bytes_in.inc(1000)
    metrics.bytes_out.inc(2000)
    metrics.close_codes.labels("1000").inc()
    metrics.handler_errors.inc()

    families = parse(metrics.exposition())
    assert {name: families[name][0] for name in FAMILIES} == FAMILIES
    assert value(families, "wsharbor_connections_open") == 2
    assert value(families, "wsharbor_handshakes_total", status="101") == 3
    assert value(families, "wsharbor_handshakes_total", status="403") == 1
    assert value(families, "wsharbor_messages_received_total") == 10
    assert value(families, "wsharbor_messages_sent_total") == 12
    assert value(families, "wsharbor_bytes_received_total") == 1000
    assert value(families, "wsharbor_bytes_sent_total") == 2000
    assert value(families, "wsharbor_connections_closed_total", code="1000") == 1
    assert value(families, "wsharbor_handler_errors_total") == 1
    # The process's own metrics, in single-process mode only.
    assert value(families, "process_resident_memory_bytes")
    assert "python_gc_objects_collected" in families
    assert "python_info" in families


def test_single_process_instances_are_independent(single: Metrics) -> None:
    single.messages_in.inc(5)
    other = Metrics()
    assert value(parse(other.exposition()), "wsharbor_messages_received_total") == 0


def test_update_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    # The baseline, taken when Metrics is made: garbage of earlier tests freed
    # before it, not between it and the reading below (a long test session
    # freed more than the ballast there, and the figure came out 0).
    import gc

    gc.collect()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics()
    metrics.update_memory(0)
    families = parse(metrics.exposition())
    rss = value(families, "wsharbor_worker_resident_memory_bytes")
    assert rss is not None and rss > 0
    assert value(families, "wsharbor_connection_memory_bytes") == 0  # no connection

    # Grow the resident set by a known amount, held while measuring.
    ballast = bytearray(64 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page
    metrics.update_memory(4)
    per_connection = value(parse(metrics.exposition()), "wsharbor_connection_memory_bytes")
    assert per_connection is not None
    assert per_connection >= len(ballast) / 4 * 0.8
    del ballast


def test_resident_memory() -> None:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    reported = int(line.split()[1]) * 1024
    # The same quantity, read at two moments of a live process.
    assert 0.5 * reported <= resident_memory() <= 2 * reported


# Several worker processes (--workers N).

WORKER = textwrap.dedent(
    """
    import json, os, sys
    from wsharbor.app.metrics import Metrics

    metrics = Metrics()
    assert metrics.multiprocess
    n = int(sys.argv[1])
    metrics.connections_open.inc(n)
    metrics.handshakes.labels("101").inc(n)
    metrics.handshakes.labels("503").inc()
    metrics.messages_in.inc(10 * n)
    metrics.close_codes.labels("1001").inc(n)
    metrics.update_memory(n)
    print(json.dumps({"pid": os.getpid()}))
    """
)

SCRAPER = textwrap.dedent(
    """
    import sys
    from wsharbor.app.metrics import Metrics

    sys.stdout.write(Metrics().exposition().decode())
    """
)


def run_child(code: str, directory: Path, *args: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=TIMEOUT,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_multiprocess_exposition_aggregates_every_worker(tmp_path: Path) -> None:
    pids = [json.loads(run_child(WORKER, tmp_path, str(n)))["pid"] for n in (2, 3)]

    families = parse(run_child(SCRAPER, tmp_path).encode())
    assert {name: families[name][0] for name in FAMILIES} == FAMILIES
    # Counters and the livesum gauge: summed over the workers.
    assert value(families, "wsharbor_connections_open") == 5
    assert value(families, "wsharbor_handshakes_total", status="101") == 5
    assert value(families, "wsharbor_handshakes_total", status="503") == 2
    assert value(families, "wsharbor_messages_received_total") == 50
    assert value(families, "wsharbor_connections_closed_total", code="1001") == 5
    # liveall gauges: one sample per worker.
    for pid in pids:
        rss = value(families, "wsharbor_worker_resident_memory_bytes", pid=str(pid))
        assert rss is not None and rss > 0
    # The process collectors are off: they would describe the scraping worker only.
    assert "process_resident_memory_bytes" not in families

    # A dead worker (the supervisor calls mark_process_dead): its live gauges go,
    # its counters stay, since totals don't go down.
    multiprocess.mark_process_dead(pids[0], str(tmp_path))  # type: ignore[no-untyped-call]
    families = parse(run_child(SCRAPER, tmp_path).encode())
    assert value(families, "wsharbor_connections_open") == 3
    assert value(families, "wsharbor_worker_resident_memory_bytes", pid=str(pids[0])) is None
    assert value(families, "wsharbor_worker_resident_memory_bytes", pid=str(pids[1]))
    assert value(families, "wsharbor_handshakes_total", status="101") == 5
    assert value(families, "wsharbor_messages_received_total") == 50


def test_multiprocess_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    assert multiprocess_dir() == str(tmp_path)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "")
    assert multiprocess_dir() is None


# The hub's counters (wsharbor run's wsharbor.app.hub()).


def hub_stats(lags: list[float], **counters: int) -> HubStats:
    stats = HubStats(**counters)
    for lag in lags:
        stats.observe_lag(lag)
    return stats


def test_hub_counters_are_added_as_deltas(single: Metrics) -> None:
    stats = hub_stats([0.0002, 0.003, 7.0], published=3, delivered=30, joins_recovered=1)
    single.update_hub(stats, True)
    single.update_hub(stats, True)  # nothing new: nothing added
    families = parse(single.exposition())
    assert value(families, "wsharbor_pubsub_published_total") == 3
    assert value(families, "wsharbor_pubsub_delivered_total") == 30
    assert value(families, "wsharbor_pubsub_joins_total", result="recovered") == 1
    assert value(families, "wsharbor_pubsub_joins_total", result="unrecovered") == 0
    assert value(families, "wsharbor_pubsub_broker_connected") == 1
    assert families["wsharbor_pubsub_lag_seconds"][0] == "histogram"

    stats.published += 2
    stats.broker_disconnects += 1
    stats.observe_lag(0.0004)
    single.update_hub(stats, False)
    families = parse(single.exposition())
    assert value(families, "wsharbor_pubsub_published_total") == 5
    assert value(families, "wsharbor_pubsub_broker_disconnects_total") == 1
    assert value(families, "wsharbor_pubsub_broker_connected") == 0
    # The histogram is the one observe() would give for the same lags.
    reference = CollectorRegistry()
    observed = Histogram("reference", "", buckets=LAG_BUCKETS, registry=reference)
    for lag in (0.0002, 0.003, 7.0, 0.0004):
        observed.observe(lag)
    expected = {
        (s.name.removeprefix("reference"), s.labels.get("le")): s.value
        for s in parse(generate_latest(reference))["reference"][1]
        if not s.name.endswith("_created")
    }
    got = {
        (s.name.removeprefix("wsharbor_pubsub_lag_seconds"), s.labels.get("le")): s.value
        for s in families["wsharbor_pubsub_lag_seconds"][1]
        if not s.name.endswith("_created")
    }
    assert got == pytest.approx(expected)
    assert value(families, "wsharbor_pubsub_lag_seconds_bucket", le="0.0005") == 2
    assert value(families, "wsharbor_pubsub_lag_seconds_count") == 4


HUB_WORKER = textwrap.dedent(
    """
    import sys
    from wsharbor.app.metrics import Metrics
    from wsharbor.pubsub import HubStats

    metrics = Metrics()
    stats = HubStats(published=int(sys.argv[1]), lost=1)
    for _ in range(int(sys.argv[1])):
        stats.observe_lag(0.002)
    metrics.update_hub(stats, sys.argv[1] != "3")
    """
)


def test_multiprocess_hub_counters_add_up(tmp_path: Path) -> None:
    for n in ("2", "3"):
        run_child(HUB_WORKER, tmp_path, n)
    families = parse(run_child(SCRAPER, tmp_path).encode())
    assert value(families, "wsharbor_pubsub_published_total") == 5
    assert value(families, "wsharbor_pubsub_lost_total") == 2
    assert value(families, "wsharbor_pubsub_lag_seconds_count") == 5
    assert value(families, "wsharbor_pubsub_lag_seconds_bucket", le="0.0025") == 5
    assert value(families, "wsharbor_pubsub_lag_seconds_bucket", le="0.001") == 0
    assert value(families, "wsharbor_pubsub_lag_seconds_sum") == pytest.approx(0.01)
    # The lowest of the workers: one of them lost its broker.
    assert value(families, "wsharbor_pubsub_broker_connected") == 0
