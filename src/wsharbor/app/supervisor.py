"""The supervisor: N worker processes sharing one listening socket.

Process model
-------------

The supervisor opens the listening socket (or takes it from ``--fd`` or systemd
socket activation) and keeps it open for its whole life. Each worker is a fresh
interpreter, ``python -m wsharbor.app.worker``, started with ``subprocess`` and
the socket passed with ``pass_fds``; every worker accepts on the same socket, and
a shared scoreboard keeps their connection counts even (:mod:`.balance`).

Why spawn rather than fork: a rolling restart (SIGHUP, ``--reload``) must run the
*new* code, which a fork of the supervisor would not have; a fresh interpreter
also inherits no event loop, threads, locks or prometheus state from the parent,
and uvloop is safe to use. The cost, the worker's start-up time, is paid while
the old workers keep serving.

Because the socket stays open in the supervisor, a connection is never refused
while workers come and go: connections wait in the kernel's backlog until a
worker accepts them.

Signals (the previous handlers are restored on exit)
----------------------------------------------------

- SIGTERM, SIGINT: graceful stop. Every worker gets SIGTERM (stop accepting,
  1001 to every connection, ``--graceful-timeout`` for handlers); workers still
  running ``--graceful-timeout`` + 3 s later are killed. Exit 0.
- SIGINT again: force. Workers get SIGINT (which forces them), then SIGKILL after
  3 s. Exit 1.
- SIGHUP: zero-downtime rolling restart, one worker at a time: start a new
  worker; when it reports ready (it accepts), retire an old one (SIGUSR1: it
  stops accepting, finishes the handshakes in progress, sends 1012 "service
  restart" to its connections and exits); repeat. If a new worker dies before it
  is ready (say, the new code doesn't import), the restart is abandoned and the
  old workers keep serving. ``--reload`` does the same when a ``.py`` file
  under the current directory changes.
- SIGTTIN / SIGTTOU: one more / one fewer worker (never fewer than one).

A worker that served ``--limit-max-requests`` connections retires by itself (1012
to its connections) and exits with status 4; it is replaced at once, and that
is not a death. A worker that dies unexpectedly is restarted, at once the first time, then with
an exponential backoff (0.2 s, 0.4 s, ... up to 2 s) while deaths keep coming. More
than 5 deaths within 10 s is a crash loop: it is logged as an error, the other
workers are stopped gracefully and the supervisor exits with status 3.

systemd: READY=1 once every worker is ready (again after a rolling restart),
RELOADING=1 on SIGHUP, STOPPING=1 on stop, STATUS= with the worker count, when
``NOTIFY_SOCKET`` is set. Workers never notify (systemd accepts the main pid only).

The decisions live in :meth:`Supervisor.handle_signal`,
:meth:`Supervisor.handle_ready`, :meth:`Supervisor.handle_exit` and
:meth:`Supervisor.step`, which take the time as an argument and act through a
spawn function and worker handles, so tests drive them without processes.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import sdnotify
from .balance import Scoreboard
from .config import Config
from .env import ENV_BALANCE, ENV_CONFIG, ENV_FD, ENV_READY_FD, EXIT_RECYCLED
from .listen import describe
from .logs import APP_LOGGER
from .reload import Watcher
from .signals import capture_signals

__all__ = ["CRASH_LIMIT", "CRASH_WINDOW", "Supervisor", "WorkerHandle", "backoff"]

logger = logging.getLogger(APP_LOGGER)

#: More than CRASH_LIMIT unexpected deaths within CRASH_WINDOW seconds is a crash loop.
CRASH_LIMIT = 5
CRASH_WINDOW = 10.0
#: Seconds past the graceful timeout before stragglers get SIGKILL.
KILL_GRACE = 3.0
#: Seconds after a forced stop before stragglers get SIGKILL.
FORCE_GRACE = 3.0
#: Longest wait in the event loop (the reload watcher polls at this pace).
MAX_WAIT = 0.5

EXIT_OK = 0
EXIT_FORCED = 1
EXIT_CRASH_LOOP = 3


class Process(Protocol):
    pid: int

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


@dataclass(eq=False)
class WorkerHandle:
    """What the supervisor knows about one worker."""

    process: Process
    generation: int
    started: float
    ready: bool = False
    retiring: bool = False
    #: SIGTERM or SIGINT was sent as part of a stop.
    stopping: bool = False
    #: When to SIGKILL it if it hasn't exited.
    kill_at: float | None = None
    killed: bool = False
    #: Read end of the pipe on which it reports readiness.
    ready_fd: int | None = field(default=None, repr=False)
    #: Its slot in the connection scoreboard (see :mod:`.balance`).
    slot: int | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)


def backoff(deaths: int) -> float:
    """Delay before restarting a worker after ``deaths`` deaths within the crash window."""
    if deaths <= 1:
        return 0.0
    return float(min(0.1 * 2 ** (deaths - 1), 2.0))


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


class Supervisor:
    """Start, watch and restart workers; see the module docstring."""

    def __init__(
        self,
        config: Config,
        sock: socket.socket | None,
        *,
        spawn: Callable[[int], WorkerHandle] | None = None,
        notify: Callable[[str], Any] = sdnotify.notify,
    ) -> None:
        self.config = config
        self.sock = sock
        self.target = config.workers
        self.generation = 0
        self.workers: list[WorkerHandle] = []
        self.deaths: collections.deque[float] = collections.deque()
        self.next_spawn_at = 0.0
        self.stopping = False
        self.forced = False
        self.exit_code = EXIT_OK
        self.notified_generation = -1
        self._spawn_fn = spawn if spawn is not None else self._spawn_process
        self._notify = notify
        self._selector: selectors.BaseSelector | None = None
        self._signals: list[int] = []
        self.metrics_dir: str | None = None
        self.scoreboard: Scoreboard | None = None

    # Decisions. ``now`` is time.monotonic() or a test's clock.

    def handle_signal(self, sig: int, now: float) -> None:
        name = signal.Signals(sig).name
        if sig in (signal.SIGTERM, signal.SIGINT):
            if not self.stopping:
                logger.info("received %s: stopping %d workers gracefully", name, len(self.workers))
                self.stop(now)
            elif sig == signal.SIGINT and not self.forced:
                logger.warning("received SIGINT again: forcing shutdown")
                self.force(now)
            return
        if self.stopping:
            logger.info("received %s while stopping: ignored", name)
            return
        if sig == signal.SIGHUP:
            self.reload(now, "received SIGHUP")
        elif sig == signal.SIGTTIN:
            self.target += 1
            logger.info("received SIGTTIN: %d workers", self.target)
        elif sig == signal.SIGTTOU:
            if self.target > 1:
                self.target -= 1
                logger.info("received SIGTTOU: %d workers", self.target)
            else:
                logger.warning("received SIGTTOU: already down to 1 worker")

    def reload(self, now: float, why: str) -> None:
        """Start a rolling restart: every current worker is replaced."""
        self.generation += 1
        logger.info("%s: rolling restart of %d workers", why, len(self._live()))
        self._notify(sdnotify.reloading() + "\nSTATUS=rolling restart")

    def stop(self, now: float, exit_code: int = EXIT_OK) -> None:
        self.stopping = True
        self.exit_code = exit_code
        self._notify("STOPPING=1\nSTATUS=stopping")
        deadline = now + self.config.graceful_timeout + KILL_GRACE
        for worker in self.workers:
            worker.stopping = True
            worker.kill_at = deadline if worker.kill_at is None else min(worker.kill_at, deadline)
            worker.signal(signal.SIGTERM)

    def force(self, now: float) -> None:
        self.forced = True
        self.exit_code = EXIT_FORCED
        for worker in self.workers:
            worker.kill_at = now + FORCE_GRACE
            worker.signal(signal.SIGINT)

    def handle_ready(self, worker: WorkerHandle, now: float) -> None:
        worker.ready = True
        logger.info("worker %d ready", worker.pid)

    def handle_exit(self, worker: WorkerHandle, returncode: int, now: float) -> None:
        """A worker exited: forget it; restart it later in :meth:`step` if it wasn't asked to."""
        if worker in self.workers:
            self.workers.remove(worker)
        self._forget(worker)
        how = _describe_exit(returncode)
        if self.stopping or worker.retiring:
            logger.info("worker %d exited (%s)", worker.pid, how)
            return
        if returncode == EXIT_RECYCLED:
            # --limit-max-requests: planned, not a death; step() replaces it.
            logger.info("worker %d retired after --limit-max-requests: replacing it", worker.pid)
            return
        old_alive = [w for w in self._live() if w.generation < worker.generation]
        if not worker.ready and old_alive:
            logger.error(
                "worker %d died before it was ready (%s): rolling restart abandoned, "
                "%d old workers keep serving",
                worker.pid,
                how,
                len(old_alive),
            )
            for other in self.workers:
                other.generation = self.generation
            return
        self._record_death(now, f"worker {worker.pid} died unexpectedly ({how})")

    def _record_death(self, now: float, what: str) -> None:
        """Count a death toward the crash loop; schedule the restart with backoff."""
        self.deaths.append(now)
        while self.deaths and self.deaths[0] < now - CRASH_WINDOW:
            self.deaths.popleft()
        if len(self.deaths) > CRASH_LIMIT:
            logger.error(
                "crash loop: %d worker deaths within %.0f s (last: %s); "
                "giving up: check the application and its logs",
                len(self.deaths),
                CRASH_WINDOW,
                what,
            )
            self.stop(now, EXIT_CRASH_LOOP)
            return
        delay = backoff(len(self.deaths))
        self.next_spawn_at = max(self.next_spawn_at, now + delay)
        logger.warning("%s; restarting %s", what, "now" if delay == 0 else f"in {delay:.1f} s")

    def step(self, now: float) -> int | None:
        """Start, retire and kill workers as due; return the exit status once done."""
        for worker in self.workers:
            if worker.kill_at is not None and now >= worker.kill_at and not worker.killed:
                logger.error("worker %d didn't exit in time: killing it", worker.pid)
                worker.killed = True
                worker.signal(signal.SIGKILL)
        if self.stopping:
            return self.exit_code if not self.workers else None
        live = self._live()
        old = [w for w in live if w.generation < self.generation]
        current = [w for w in live if w.generation == self.generation]
        if old:
            # Rolling restart: retire an old worker for each ready new one, and
            # start new workers one at a time.
            ready = [w for w in current if w.ready]
            excess = len(ready) + len(old) - self.target
            for worker in sorted(old, key=lambda w: (w.ready, w.started))[: max(excess, 0)]:
                self._retire(worker, now, "replaced by a new worker")
            booting = any(not w.ready for w in current)
            if not booting and len(current) < self.target and now >= self.next_spawn_at:
                self._spawn(now)
        else:
            missing = self.target - len(live)
            if missing > 0 and now >= self.next_spawn_at:
                for _ in range(missing):
                    if self.stopping or now < self.next_spawn_at:
                        break  # a spawn failed: back off
                    self._spawn(now)
            elif missing < 0:
                extra = sorted(live, key=lambda w: (w.ready, w.started))[:-missing]
                for worker in extra:
                    self._retire(worker, now, "fewer workers wanted")
            live = self._live()
            if (
                not self.stopping
                and self.notified_generation != self.generation
                and len(live) == self.target
                and all(w.ready for w in live)
            ):
                self.notified_generation = self.generation
                if self.generation:
                    logger.info("rolling restart complete: %d workers", self.target)
                self._notify(f"READY=1\nSTATUS={self.target} workers ready")
        return None

    def next_wakeup(self, now: float) -> float:
        """Seconds until :meth:`step` has something due (bounded by MAX_WAIT)."""
        times = [w.kill_at for w in self.workers if w.kill_at is not None and not w.killed]
        if self.next_spawn_at > now:
            times.append(self.next_spawn_at)
        wait = min([t - now for t in times] + [MAX_WAIT])
        return max(wait, 0.0)

    def _live(self) -> list[WorkerHandle]:
        return [w for w in self.workers if not w.retiring and not w.stopping]

    def _retire(self, worker: WorkerHandle, now: float, why: str) -> None:
        logger.info("retiring worker %d: %s", worker.pid, why)
        worker.retiring = True
        worker.kill_at = now + self.config.graceful_timeout + KILL_GRACE
        worker.signal(signal.SIGUSR1)

    def _spawn(self, now: float) -> None:
        try:
            worker = self._spawn_fn(self.generation)
        except OSError as exc:
            self._record_death(now, f"cannot start a worker: {exc}")
            return
        self.workers.append(worker)
        logger.info("started worker %d", worker.pid)

    # Processes.

    def _spawn_process(self, generation: int) -> WorkerHandle:
        assert self.sock is not None
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        for name in ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(name, None)
        env[ENV_CONFIG] = self.config.to_json()
        env[ENV_FD] = str(self.sock.fileno())
        env[ENV_READY_FD] = str(write_fd)
        if self.metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        pass_fds = [self.sock.fileno(), write_fd]
        slot = None
        if self.scoreboard is not None:
            slot = self.scoreboard.claim()
            env[ENV_BALANCE] = f"{self.scoreboard.fd}:{slot}"
            pass_fds.append(self.scoreboard.fd)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "wsharbor.app.worker"],
                pass_fds=pass_fds,
                env=env,
            )
        except BaseException:
            if slot is not None and self.scoreboard is not None:
                self.scoreboard.release(slot)
            raise
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        worker = WorkerHandle(process, generation, time.monotonic(), ready_fd=read_fd, slot=slot)
        if self._selector is not None:
            self._selector.register(read_fd, selectors.EVENT_READ, worker)
        return worker

    def _forget(self, worker: WorkerHandle) -> None:
        slot, worker.slot = worker.slot, None
        if slot is not None and self.scoreboard is not None:
            self.scoreboard.release(slot)
        fd, worker.ready_fd = worker.ready_fd, None
        if fd is not None:
            if self._selector is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(fd)
            os.close(fd)
        if self.metrics_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(worker.pid, self.metrics_dir)  # type: ignore[no-untyped-call]

    def run(self) -> int:
        """Supervise until stopped; return the exit status."""
        assert self.sock is not None
        watcher = Watcher(os.getcwd()) if self.config.reload else None
        self.metrics_dir = tempfile.mkdtemp(prefix="wsharbor-metrics-")
        self.scoreboard = Scoreboard.create()
        selector = self._selector = selectors.DefaultSelector()
        wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(wakeup_r, False)
        os.set_blocking(wakeup_w, False)
        selector.register(wakeup_r, selectors.EVENT_READ, None)
        handled = (
            signal.SIGTERM,
            signal.SIGINT,
            signal.SIGHUP,
            signal.SIGTTIN,
            signal.SIGTTOU,
            signal.SIGCHLD,
        )
        # Handlers only record the signal: the loop below acts on it, woken by
        # the wakeup fd. capture_signals restores the previous handlers.
        with capture_signals(handled, lambda sig: self._signals.append(sig)):
            return self._loop(watcher, selector, wakeup_r, wakeup_w)

    def _loop(
        self,
        watcher: Watcher | None,
        selector: selectors.BaseSelector,
        wakeup_r: int,
        wakeup_w: int,
    ) -> int:
        assert self.sock is not None and self.metrics_dir is not None
        previous_wakeup = signal.set_wakeup_fd(wakeup_w, warn_on_full_buffer=False)
        logger.info(
            "supervisor listening on %s with %d workers%s",
            describe(self.sock),
            self.target,
            " (reload on .py changes)" if watcher else "",
        )
        next_watch = time.monotonic() + MAX_WAIT
        try:
            while True:
                now = time.monotonic()
                code = self.step(now)
                if code is not None:
                    logger.info("supervisor stopped")
                    return code
                for key, _ in selector.select(self.next_wakeup(now)):
                    if key.data is None:
                        with contextlib.suppress(OSError):
                            while os.read(wakeup_r, 512):
                                pass
                    else:
                        self._read_ready(key.data)
                now = time.monotonic()
                received, self._signals = self._signals, []
                for signum in received:
                    if signum != signal.SIGCHLD:
                        self.handle_signal(signum, now)
                for worker in list(self.workers):
                    returncode = worker.process.poll()
                    if returncode is not None:
                        self.handle_exit(worker, returncode, now)
                if watcher is not None and now >= next_watch:
                    next_watch = now + MAX_WAIT
                    changed = watcher.changed()
                    if changed and not self.stopping:
                        self.reload(now, f"{changed} changed")
        finally:
            for worker in list(self.workers):
                worker.signal(signal.SIGKILL)
                with contextlib.suppress(Exception):
                    worker.process.poll()
            signal.set_wakeup_fd(previous_wakeup)
            selector.close()
            os.close(wakeup_r)
            os.close(wakeup_w)
            for worker in list(self.workers):
                self._forget(worker)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            if self.scoreboard is not None:
                self.scoreboard.close()
                self.scoreboard = None

    def _read_ready(self, worker: WorkerHandle) -> None:
        fd = worker.ready_fd
        if fd is None:
            return
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if b"R" in data and not worker.ready:
            self.handle_ready(worker, time.monotonic())
        if not data or b"R" in data:
            # Ready reported, or the worker closed the pipe (it exits): done with it.
            assert self._selector is not None
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(fd)
            os.close(fd)
            worker.ready_fd = None
