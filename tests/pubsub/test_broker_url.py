"""Broker URLs, the envelope, and the errors a bad configuration gets (no server needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from wsharbor import BrokerUnavailable, InvalidBrokerURL, WsharborError
from wsharbor.pubsub import LAG_BUCKETS, Hub, HubStats
from wsharbor.pubsub.broker import parse_url
from wsharbor.pubsub.envelope import decode, encode

from .redistools import free_port


@pytest.mark.parametrize(
    ("url", "address", "hosts", "db"),
    [
        ("memory://", "memory://", (), 0),
        ("memory://shared", "memory://shared", (), 0),
        ("redis://localhost", "redis://localhost:6379/0", (("localhost", 6379),), 0),
        ("redis://127.0.0.1:7000/3", "redis://127.0.0.1:7000/3", (("127.0.0.1", 7000),), 3),
        (
            "rediss://cache.example:6380",
            "rediss://cache.example:6380/0",
            (("cache.example", 6380),),
            0,
        ),
        ("redis://[::1]:7001/2", "redis://::1:7001/2", (("::1", 7001),), 2),
        (
            "redis+sentinel://s1:26379,s2/mymaster/1",
            "redis+sentinel://s1:26379,s2:26379/mymaster/1",
            (("s1", 26379), ("s2", 26379)),
            1,
        ),
    ],
)
def test_valid_urls(url: str, address: str, hosts: tuple[tuple[str, int], ...], db: int) -> None:
    parsed = parse_url(url)
    assert parsed.address == address
    assert parsed.hosts == hosts
    assert parsed.db == db


def test_credentials_are_parsed_and_never_shown() -> None:
    parsed = parse_url("redis://app:s%40cret@127.0.0.1:6379/0")
    assert (parsed.username, parsed.password) == ("app", "s@cret")
    assert "cret" not in parsed.address and "cret" not in repr(parsed)
    only_password = parse_url("redis://:hunter2@127.0.0.1")
    assert (only_password.username, only_password.password) == (None, "hunter2")
    sentinel = parse_url("redis+sentinel://:pw@s1:26379/svc")
    assert sentinel.password == "pw" and sentinel.service == "svc"
    with pytest.raises(InvalidBrokerURL) as info:
        parse_url("redis://app:topsecret@127.0.0.1:notaport/0")
    assert "topsecret" not in str(info.value)
    assert "app:***@" in str(info.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("127.0.0.1:6379", "expected memory://, redis://"),
        ("http://127.0.0.1", "unknown scheme http://"),
        ("redis://", "missing host"),
        ("redis://:6379", "missing host"),
        ("redis://127.0.0.1:0", "invalid port"),
        ("redis://127.0.0.1:99999", "invalid port"),
        ("redis://127.0.0.1:abc", "invalid port"),
        ("redis://127.0.0.1/x", "invalid database number"),
        ("redis://127.0.0.1/1/2", "expected /db"),
        ("redis://a:1,b:2/0", "use redis+sentinel://"),
        ("redis://127.0.0.1?db=1", "query strings"),
        ("redis+sentinel://s1:26379", "missing the Sentinel service name"),
        ("redis+sentinel://s1:26379/svc/1/2", "expected /service[/db]"),
        ("redis+sentinel://s1:x/svc", "invalid port"),
        ("memory://a/b", "memory:// takes a name only"),
    ],
)
def test_bad_urls_raise_a_clear_error(url: str, reason: str) -> None:
    with pytest.raises(InvalidBrokerURL) as info:
        Hub(url)
    message = str(info.value)
    assert reason in message, message
    assert "isn't a valid broker URL" in message
    # One class for both ways of catching it.
    assert isinstance(info.value, ValueError) and isinstance(info.value, WsharborError)


def test_bad_options_raise_value_error() -> None:
    for kwargs in (
        {"history": -1},
        {"history": "10"},
        {"timeout": 0},
        {"presence_ttl": float("inf")},
        {"max_skips": 0},
        {"replay_batch": True},
        {"linger": -1},
        {"prefix": ""},
    ):
        with pytest.raises(ValueError):
            Hub(**kwargs)  # type: ignore[arg-type]


def test_a_redis_url_without_redis_py_names_the_extra() -> None:
    # A child interpreter where redis-py can't be imported.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["redis"] = None  # import redis raises ImportError
        import importlib.util
        real_find_spec = importlib.util.find_spec
        def find_spec(name, *args):
            return None if name == "redis" else real_find_spec(name, *args)
        importlib.util.find_spec = find_spec
        import wsharbor.pubsub
        hub = wsharbor.pubsub.Hub()  # memory:// works without it
        try:
            wsharbor.pubsub.Hub("redis://127.0.0.1:6379/0")
        except ImportError as exc:
            print(exc)
        """
    )
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.path.abspath(src)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'wsharbor[redis]'" in result.stdout
    assert "redis://127.0.0.1:6379/0" in result.stdout


def test_importing_wsharbor_pubsub_does_not_import_redis() -> None:
    code = "import sys, wsharbor.pubsub; print('redis' in sys.modules)"
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.path.abspath(src)},
        check=False,
    )
    assert result.stdout.strip() == "False", result.stderr


async def test_unreachable_redis_at_start_names_the_address() -> None:
    port = free_port()  # nothing listens there
    hub = Hub(f"redis://127.0.0.1:{port}/0", timeout=2)
    with pytest.raises(BrokerUnavailable) as info:
        await hub.start()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert not hub.ready
    with pytest.raises(BrokerUnavailable):
        async with Hub(f"redis://user:pw@127.0.0.1:{port}/0", timeout=2):
            pass


async def test_unreachable_sentinel_at_start_names_the_sentinels() -> None:
    port = free_port()
    hub = Hub(f"redis+sentinel://127.0.0.1:{port}/mymaster", timeout=2)
    with pytest.raises(BrokerUnavailable) as info:
        await hub.start()
    assert f"127.0.0.1:{port}/mymaster" in str(info.value)


def test_envelope_round_trip() -> None:
    data = encode(True, 42, "ab12", 1700000000.123456, "n.7", "é|x".encode())
    assert data.startswith(b"W1|t|42|ab12|1700000000123456|n.7|")
    envelope = decode(data)
    assert envelope.payload.decode() == "é|x"
    assert (envelope.text, envelope.offset, envelope.epoch, envelope.message_id) == (
        True,
        42,
        "ab12",
        "n.7",
    )
    assert abs(envelope.published_at - 1700000000.123456) < 1e-6
    for bad in (b"", b"hello", b"W2|t|1|e|0|i|x", b"W1|x|1|e|0|i|x", b"W1|t|1|e"):
        with pytest.raises(ValueError):
            decode(bad)


def test_lag_histogram_buckets() -> None:
    stats = HubStats()
    for seconds in (0.0001, 0.0005, 0.003, 7.0):
        stats.observe_lag(seconds)
    assert stats.lag_counts[0] == 2  # <= 0.5 ms, bound included
    assert stats.lag_counts[LAG_BUCKETS.index(0.005)] == 1
    assert stats.lag_counts[-1] == 1  # above every bound
    assert stats.lag_count == 4 and sum(stats.lag_counts) == 4
    assert stats.as_dict()["lag_count"] == 4
