"""The queue in front of the single SQLite writer (ADR-005).

Routes and workers never touch the write connection. They hand the writer a *job*, a function of
the connection, and get an `AsyncResult` that is set only after the transaction containing the job
has committed (or with the job's own exception if it failed). The writer (``workers.sqlite_writer``)
takes up to `batch_max` jobs at a time, runs each inside its own SAVEPOINT so one failure never fails
the others, and commits them together.

Two lanes feed the writer:

- the *tap* lane (bets, deposits, withdrawals) is bounded: when it is full, `submit` raises
  `Overloaded` (503 with Retry-After) at once, so overload is refused up front instead of piling up
  as latency;
- the *priority* lane (settlement, rollover: `priority=True`) is unbounded and always taken first,
  so payouts never queue behind taps and never see `Overloaded`; its producers are few and pace
  themselves on the results.

A job marked *solo* (`mark_solo`, e.g. the week rollover) runs in a transaction of its own: the
writer commits the jobs taken before it, runs it alone on committed state, and starts a new
transaction (which re-reads CURRENT) for the jobs after it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apsw
from gevent.event import AsyncResult, Event

from app.errors import Overloaded, Unavailable

WriteFn = Callable[[apsw.Connection], Any]


class Expired(Exception):
    """The job waited longer than its deadline and was not run (so it can never commit late)."""


class OutcomeUnknown(Exception):
    """The writer cannot tell whether the job's transaction committed (it was stopped mid-commit, or
    COMMIT failed with an I/O error after writing). Callers must answer "pending" and reconcile from
    SQLite later — never "rejected", and never free what the job holds (a bet's cell claim)."""


def mark_solo(fn: WriteFn) -> WriteFn:
    """Mark `fn` as a job that must run alone in its own transaction, on committed state only.

    The mark travels with the function, so every caller gets it right (the week rollover copies the
    file it runs in: it must never see, or be followed in its transaction by, another job's writes).
    """
    fn.write_solo = True  # type: ignore[attr-defined]
    return fn


def is_solo(fn: WriteFn) -> bool:
    return bool(getattr(fn, "write_solo", False))


def mark_rerunnable(fn: WriteFn) -> WriteFn:
    """Mark `fn` as touching nothing but the connection (no other side effect), so the writer may run
    it without a SAVEPOINT of its own and, if any job of the batch fails, roll the whole transaction
    back and run it again. Each SAVEPOINT/RELEASE pair is two GIL round trips on the writer thread."""
    fn.write_rerunnable = True  # type: ignore[attr-defined]
    return fn


def is_rerunnable(fn: WriteFn) -> bool:
    return bool(getattr(fn, "write_rerunnable", False))


@dataclass(slots=True)
class WriteJob:
    fn: WriteFn
    result: AsyncResult = field(default_factory=AsyncResult)
    on_done: Callable[[bool, Any], None] | None = None
    expires_at: float | None = None  # monotonic
    enqueued_at: float = field(default_factory=time.monotonic)
    solo: bool = False  # run in a transaction of its own (see `mark_solo`)
    priority: bool = False  # taken before any tap job, never refused for a full queue


@dataclass(slots=True)
class CommitState:
    """What the writer's last transactions did, for /readyz and the operator (issue 10 item 14)."""

    last_ok_at: float | None = None  # monotonic
    last_failed_at: float | None = None
    failures_in_a_row: int = 0
    last_error: str | None = None

    @property
    def failing(self) -> bool:
        """The last COMMIT attempt failed and none has succeeded since."""
        return self.failures_in_a_row > 0


class WriteQueue:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._taps: deque[WriteJob] = deque()
        self._priority: deque[WriteJob] = deque()
        self._ready = Event()  # set while either lane holds a job
        self.accepting = True
        self._heartbeat: float | None = None
        self.commits = CommitState()
        # Called by the writer after each committed batch (e.g. to publish results in one round trip).
        self.batch_listeners: list[Callable[[], None]] = []

    def beat(self) -> None:
        """Called by the writer on every loop so readiness can tell that it is alive."""
        self._heartbeat = time.monotonic()

    def heartbeat_age(self) -> float | None:
        return None if self._heartbeat is None else time.monotonic() - self._heartbeat

    def record_commit(self, ok: bool, error: BaseException | None = None) -> None:
        """Called by the writer after every transaction it tried to commit (kept across restarts)."""
        now = time.monotonic()
        if ok:
            self.commits.last_ok_at = now
            self.commits.failures_in_a_row = 0
        else:
            self.commits.last_failed_at = now
            self.commits.failures_in_a_row += 1
            self.commits.last_error = f"{type(error).__name__}: {error}"[:200] if error else "unknown"

    def submit(
        self,
        fn: WriteFn,
        *,
        on_done: Callable[[bool, Any], None] | None = None,
        max_wait_s: float | None = None,
        priority: bool = False,
        solo: bool = False,
    ) -> AsyncResult:
        """Queue `fn(conn)` for the writer; raise Overloaded if the tap lane is full.

        `on_done(ok, value)` runs in the writer greenlet after the commit (or the job's failure).
        A job still queued after `max_wait_s` fails with `Expired` instead of running. `priority`
        jobs go to the unbounded lane the writer empties first; `solo` (or a `mark_solo` function)
        runs in a transaction of its own.
        """
        if not self.accepting:
            raise Unavailable("The server is restarting; try again.", code="shutting_down", retry_after=1)
        job = WriteJob(fn, on_done=on_done, solo=solo or is_solo(fn), priority=priority)
        if max_wait_s is not None:
            job.expires_at = job.enqueued_at + max_wait_s
        if priority:
            self._priority.append(job)
        elif len(self._taps) >= self.maxsize:
            raise Overloaded("Too many writes in flight; try again shortly.", retry_after=1)
        else:
            self._taps.append(job)
        self._ready.set()
        return job.result

    def call(self, fn: WriteFn, timeout: float = 10.0, *, priority: bool = False) -> Any:
        """Submit and wait for the committed result (re-raises the job's exception)."""
        return self.submit(fn, priority=priority).get(timeout=timeout)

    def depth(self) -> int:
        """Jobs waiting in the bounded tap lane (what load shedding compares with `maxsize`)."""
        return len(self._taps)

    def priority_depth(self) -> int:
        return len(self._priority)

    def take(self, max_items: int, timeout: float) -> list[WriteJob]:
        """Writer side: wait up to `timeout` for a job, then take whatever else is ready (<= max_items),
        priority jobs first."""
        if not (self._priority or self._taps):
            self._ready.clear()
            self._ready.wait(timeout)
        jobs: list[WriteJob] = []
        for lane in (self._priority, self._taps):
            while lane and len(jobs) < max_items:
                jobs.append(lane.popleft())
        if not (self._priority or self._taps):
            self._ready.clear()
        return jobs
