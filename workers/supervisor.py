"""Keeps worker greenlets running: every spawn is linked to a logger, a crash is restarted with backoff.

A worker is any object with a `name`, a blocking `run()` and a `stop()` that asks `run()` to return
soon (after flushing what it holds). The supervisor never restarts a worker it has been asked to stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

from gevent import Greenlet

log = logging.getLogger(__name__)


class Worker(Protocol):
    @property
    def name(self) -> str: ...

    def run(self) -> None: ...

    def stop(self) -> None: ...


class Supervisor:
    def __init__(
        self,
        on_restart: Callable[[str], None] | None = None,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
        stable_after_s: float = 30.0,
    ) -> None:
        self._on_restart = on_restart
        self._backoff_initial = backoff_initial_s
        self._backoff_max = backoff_max_s
        self._stable_after = stable_after_s
        self._workers: list[Worker] = []
        self._greenlets: dict[str, Greenlet] = {}
        self._backoff: dict[str, float] = {}
        self._started_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {}
        self.stopping = False

    def start(self, worker: Worker) -> None:
        if any(w.name == worker.name for w in self._workers):
            raise ValueError(f"a worker named {worker.name!r} is already supervised")
        self._workers.append(worker)
        self.restarts[worker.name] = 0
        self._spawn(worker, 0.0)

    @property
    def names(self) -> list[str]:
        return [w.name for w in self._workers]

    def greenlet(self, name: str) -> Greenlet | None:
        return self._greenlets.get(name)

    def _spawn(self, worker: Worker, delay: float) -> None:
        g = Greenlet(self._run, worker)
        g.name = f"worker:{worker.name}"
        g.link(lambda done: self._ended(worker, done))
        self._greenlets[worker.name] = g
        g.start_later(delay) if delay else g.start()

    def _run(self, worker: Worker) -> None:
        self._started_at[worker.name] = time.monotonic()
        worker.run()

    def _ended(self, worker: Worker, g: Greenlet) -> None:
        if self.stopping:
            return
        if g.successful():
            log.error("worker %s returned without being asked to stop; restarting it", worker.name)
        else:
            log.error("worker %s crashed; restarting it", worker.name, exc_info=g.exc_info)
        ran_for = time.monotonic() - self._started_at.get(worker.name, time.monotonic())
        if ran_for >= self._stable_after:
            self._backoff[worker.name] = 0.0
        delay = self._backoff.get(worker.name, 0.0)
        self._backoff[worker.name] = min(self._backoff_max, max(self._backoff_initial, delay * 2))
        self.restarts[worker.name] += 1
        if self._on_restart:
            self._on_restart(worker.name)
        self._spawn(worker, delay)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop workers in reverse start order: producers first, the writer (started first) last."""
        self.stopping = True
        deadline = time.monotonic() + timeout
        for worker in reversed(self._workers):
            g = self._greenlets.get(worker.name)
            try:
                worker.stop()
            except Exception:
                log.exception("worker %s failed to stop cleanly", worker.name)
            if g is not None:
                g.join(timeout=max(0.0, deadline - time.monotonic()))
                if not g.dead:
                    log.error("worker %s did not stop within %.1fs; killing it", worker.name, timeout)
                    g.kill(block=True, timeout=1.0)
