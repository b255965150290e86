"""The queue in front of the single SQLite writer (ADR-005).

Routes and workers never touch the write connection. They hand the writer a *job*, a function of
the connection, and get an `AsyncResult` that is set only after the transaction containing the job
has committed (or with the job's own exception if it failed). The writer (``workers.sqlite_writer``)
takes up to `batch_max` jobs at a time, runs each inside its own SAVEPOINT so one failure never fails
the others, and commits them together.

The queue is bounded: when it is full, `submit` raises `Overloaded` (503 with Retry-After) at once,
so overload is refused up front instead of piling up as latency.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apsw
from gevent.event import AsyncResult
from gevent.queue import Empty, Full, Queue

from app.errors import Overloaded, Unavailable

WriteFn = Callable[[apsw.Connection], Any]


class Expired(Exception):
    """The job waited longer than its deadline and was not run (so it can never commit late)."""


@dataclass(slots=True)
class WriteJob:
    fn: WriteFn
    result: AsyncResult = field(default_factory=AsyncResult)
    on_done: Callable[[bool, Any], None] | None = None
    expires_at: float | None = None  # monotonic
    enqueued_at: float = field(default_factory=time.monotonic)


class WriteQueue:
    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._queue: Queue = Queue(maxsize)
        self.accepting = True
        self._heartbeat: float | None = None
        # Called by the writer after each committed batch (e.g. to publish results in one round trip).
        self.batch_listeners: list[Callable[[], None]] = []

    def beat(self) -> None:
        """Called by the writer on every loop so readiness can tell that it is alive."""
        self._heartbeat = time.monotonic()

    def heartbeat_age(self) -> float | None:
        return None if self._heartbeat is None else time.monotonic() - self._heartbeat

    def submit(
        self,
        fn: WriteFn,
        *,
        on_done: Callable[[bool, Any], None] | None = None,
        max_wait_s: float | None = None,
    ) -> AsyncResult:
        """Queue `fn(conn)` for the writer; raise Overloaded if the queue is full.

        `on_done(ok, value)` runs in the writer greenlet after the commit (or the job's failure).
        A job still queued after `max_wait_s` fails with `Expired` instead of running.
        """
        if not self.accepting:
            raise Unavailable("The server is restarting; try again.", code="shutting_down", retry_after=1)
        job = WriteJob(fn, on_done=on_done)
        if max_wait_s is not None:
            job.expires_at = job.enqueued_at + max_wait_s
        try:
            self._queue.put_nowait(job)
        except Full:
            raise Overloaded("Too many writes in flight; try again shortly.", retry_after=1) from None
        return job.result

    def call(self, fn: WriteFn, timeout: float = 10.0) -> Any:
        """Submit and wait for the committed result (re-raises the job's exception)."""
        return self.submit(fn).get(timeout=timeout)

    def depth(self) -> int:
        return self._queue.qsize()

    def take(self, max_items: int, timeout: float) -> list[WriteJob]:
        """Writer side: wait up to `timeout` for a job, then take whatever else is ready (<= max_items)."""
        try:
            jobs = [self._queue.get(timeout=timeout)]
        except Empty:
            return []
        while len(jobs) < max_items:
            try:
                jobs.append(self._queue.get_nowait())
            except Empty:
                break
        return jobs
