"""The supervisor's decisions, driven through its handlers with fake worker processes."""

from __future__ import annotations

import itertools
import signal
from dataclasses import dataclass, field

import pytest

from wsharbor.app.config import Config
from wsharbor.app.supervisor import (
    CRASH_LIMIT,
    CRASH_WINDOW,
    FORCE_GRACE,
    KILL_GRACE,
    Supervisor,
    WorkerHandle,
    backoff,
)


@dataclass
class FakeProcess:
    pid: int
    signals: list[int] = field(default_factory=list)
    returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self.signals.append(sig)


class Harness:
    def __init__(self, workers: int = 2, graceful_timeout: float = 10.0) -> None:
        self.pids = itertools.count(100)
        self.notified: list[str] = []
        self.now = 0.0
        self.sup = Supervisor(
            Config(app="a:b", workers=workers, graceful_timeout=graceful_timeout),
            None,
            spawn=self.spawn,
            notify=self.notified.append,
        )

    def spawn(self, generation: int) -> WorkerHandle:
        return WorkerHandle(FakeProcess(next(self.pids)), generation, self.now)

    def step(self, dt: float = 0.0) -> int | None:
        self.now += dt
        return self.sup.step(self.now)

    def ready_all(self) -> None:
        for worker in self.sup.workers:
            if not worker.ready:
                self.sup.handle_ready(worker, self.now)

    def exit(self, worker: WorkerHandle, code: int = 0) -> None:
        self.sup.handle_exit(worker, code, self.now)

    def signal(self, sig: int) -> None:
        self.sup.handle_signal(sig, self.now)

    @property
    def workers(self) -> list[WorkerHandle]:
        return list(self.sup.workers)

    def signals_of(self, worker: WorkerHandle) -> list[int]:
        process = worker.process
        assert isinstance(process, FakeProcess)
        return process.signals


def started() -> Harness:
    h = Harness()
    h.step()
    h.ready_all()
    h.step()
    return h


def test_starts_workers_and_notifies_ready_once_all_are_ready() -> None:
    h = Harness(workers=3)
    h.step()
    assert len(h.workers) == 3
    h.sup.handle_ready(h.workers[0], h.now)
    h.step()
    assert h.notified == []
    h.ready_all()
    h.step()
    h.step()
    assert h.notified == ["READY=1\nSTATUS=3 workers ready"]


def test_backoff_schedule() -> None:
    assert [backoff(n) for n in range(1, 7)] == [0.0, 0.2, 0.4, 0.8, 1.6, 2.0]


def test_unexpected_death_restarts_at_once_then_with_backoff() -> None:
    h = started()
    first = h.workers[0]
    h.exit(first, -9)
    h.step()
    assert len(h.workers) == 2  # replaced at once
    h.ready_all()
    h.exit(h.workers[-1], 1)  # a second death within the window
    h.step(0.1)
    assert len(h.workers) == 1  # backing off
    h.step(0.1)
    assert len(h.workers) == 2


def test_deaths_spread_over_time_are_not_a_crash_loop() -> None:
    h = started()
    for _ in range(CRASH_LIMIT * 3):
        h.exit(h.workers[0], 1)
        h.step(CRASH_WINDOW / 2)
        h.ready_all()
    assert not h.sup.stopping and len(h.workers) == 2


def test_crash_loop_stops_everything_and_exits_3() -> None:
    h = started()
    survivor = h.workers[1]
    for _ in range(CRASH_LIMIT + 1):
        victim = next(w for w in h.workers if w is not survivor)
        h.exit(victim, 1)
        h.step(1.7)  # longer than any backoff delay before the limit
    assert h.sup.stopping
    assert signal.SIGTERM in h.signals_of(survivor)
    assert h.step() is None  # waits for the survivor
    h.exit(survivor, 0)
    assert h.step() == 3
    assert h.notified[-1].startswith("STOPPING=1")


def test_ttin_adds_and_ttou_retires_the_oldest() -> None:
    h = started()
    oldest = h.workers[0]
    h.signal(signal.SIGTTIN)
    h.step()
    assert len(h.workers) == 3
    h.ready_all()
    h.signal(signal.SIGTTOU)
    h.step()
    assert h.signals_of(oldest) == [signal.SIGUSR1] and oldest.retiring
    h.exit(oldest, 0)  # expected: not a death, no replacement
    h.step()
    assert len(h.workers) == 2 and not h.sup.deaths
    h.signal(signal.SIGTTOU)
    h.step()
    h.exit(next(w for w in h.workers if w.retiring))
    h.signal(signal.SIGTTOU)  # not below one worker
    h.step()
    assert h.sup.target == 1 and len(h.workers) == 1


def test_sighup_replaces_workers_one_at_a_time_new_ready_before_old_retires() -> None:
    h = started()
    old = h.workers
    h.signal(signal.SIGHUP)
    assert h.notified[-1].startswith("RELOADING=1\nMONOTONIC_USEC=")
    h.step()
    new1 = h.workers[-1]
    assert len(h.workers) == 3 and not new1.ready
    h.step()
    assert len(h.workers) == 3  # one new worker at a time
    assert all(h.signals_of(w) == [] for w in old)  # nobody retired before new1 is ready
    h.sup.handle_ready(new1, h.now)
    h.step()
    assert h.signals_of(old[0]) == [signal.SIGUSR1]  # now one old worker goes
    assert h.signals_of(old[1]) == []
    new2 = h.workers[-1]
    assert new2 is not new1 and not new2.ready
    h.sup.handle_ready(new2, h.now)
    h.step()
    assert h.signals_of(old[1]) == [signal.SIGUSR1]
    for worker in old:
        h.exit(worker, 0)
    h.step()
    assert h.workers == [new1, new2]
    assert h.notified[-1] == "READY=1\nSTATUS=2 workers ready"
    assert not h.sup.deaths


def test_failed_rolling_restart_keeps_the_old_workers() -> None:
    h = started()
    old = h.workers
    h.signal(signal.SIGHUP)
    h.step()
    broken = h.workers[-1]
    h.exit(broken, 2)  # e.g. the new code doesn't import
    for _ in range(3):
        h.step(1.0)
    assert h.workers == old and all(h.signals_of(w) == [] for w in old)
    assert not h.sup.deaths  # not counted toward a crash loop
    assert h.notified[-1] == "READY=1\nSTATUS=2 workers ready"


def test_sigterm_stops_gracefully_and_kills_stragglers_after_the_deadline() -> None:
    h = Harness(graceful_timeout=5.0)
    h.step()
    h.ready_all()
    a, b = h.workers
    h.signal(signal.SIGTERM)
    assert h.signals_of(a) == h.signals_of(b) == [signal.SIGTERM]
    h.exit(a, 0)
    assert h.step(5.0) is None
    h.signal(signal.SIGTERM)  # a repeated SIGTERM changes nothing
    assert h.signals_of(b) == [signal.SIGTERM]
    h.step(KILL_GRACE)
    assert h.signals_of(b)[-1] == signal.SIGKILL
    h.exit(b, -9)
    assert h.step() == 0


def test_second_sigint_forces() -> None:
    h = started()
    a, b = h.workers
    h.signal(signal.SIGINT)
    h.signal(signal.SIGINT)
    assert h.signals_of(a) == [signal.SIGTERM, signal.SIGINT]
    h.step(FORCE_GRACE)
    assert h.signals_of(a)[-1] == signal.SIGKILL
    h.exit(a, -9)
    h.exit(b, 1)
    assert h.step() == 1


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU])
def test_signals_while_stopping_are_ignored(sig: int) -> None:
    h = started()
    h.signal(signal.SIGTERM)
    h.signal(sig)
    h.step()
    assert len(h.workers) == 2 and h.sup.target == 2 and h.sup.generation == 0


def test_next_wakeup_is_bounded_by_due_actions() -> None:
    h = started()
    assert 0 < h.sup.next_wakeup(h.now) <= 0.5
    h.exit(h.workers[0], 1)
    h.exit(h.workers[0], 1)  # second death: 0.2 s backoff
    assert h.sup.next_wakeup(h.now) == pytest.approx(0.2)


def test_a_failing_spawn_counts_as_a_death_and_backs_off() -> None:
    h = started()
    real_spawn = h.sup._spawn_fn
    failures = [0]

    def failing(generation: int) -> WorkerHandle:
        failures[0] += 1
        raise OSError(24, "Too many open files")

    h.sup._spawn_fn = failing
    h.exit(h.workers[0], 1)
    h.step()
    assert failures == [1] and len(h.sup.deaths) == 2
    h.step(0.1)
    assert failures == [1]  # backing off
    h.sup._spawn_fn = real_spawn
    h.step(0.2)
    assert len(h.workers) == 2
