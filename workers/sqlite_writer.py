"""The one SQLite writer (ADR-005): owns the write connection, commits queued jobs in batches.

All of its SQLite calls run on a single native thread (a one-thread gevent ThreadPool): apsw releases
the GIL inside SQLite, so the hub keeps serving requests during a commit's fsync, and the connection
is only ever used from one thread. A batch is one transaction; each job runs in its own SAVEPOINT, so
a job that raises is rolled back alone and reported to its caller, and the others commit. Results
are handed back only after COMMIT has returned.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import apsw
from gevent.threadpool import ThreadPool

from app.db import connect, current_week_file
from app.metrics import Metrics
from app.writes import Expired, WriteJob, WriteQueue

log = logging.getLogger(__name__)


def run_batch(conn: apsw.Connection, jobs: list[WriteJob]) -> list[tuple[bool, Any]]:
    """Run `jobs` in one IMMEDIATE transaction; (ok, result-or-exception) for each, in order.

    Called on the writer thread. If COMMIT itself fails, everything is rolled back and the exception
    propagates: no job is reported committed.
    """
    conn.execute("BEGIN IMMEDIATE")
    return _run_jobs(conn, jobs)


def _run_jobs(conn: apsw.Connection, jobs: list[WriteJob]) -> list[tuple[bool, Any]]:
    """The body of `run_batch`, inside a transaction already begun; commits it."""
    outcomes: list[tuple[bool, Any]] = []
    now = time.monotonic()
    try:
        for job in jobs:
            if job.expires_at is not None and now > job.expires_at:
                outcomes.append((False, Expired(f"waited {now - job.enqueued_at:.1f}s in the write queue")))
                continue
            conn.execute("SAVEPOINT job")
            try:
                value = job.fn(conn)
            except Exception as exc:  # noqa: BLE001 - the job's own failure goes back to its caller
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((False, exc))
            else:
                conn.execute("RELEASE job")
                outcomes.append((True, value))
        conn.execute("COMMIT")
    except BaseException:
        if not conn.getautocommit():
            conn.execute("ROLLBACK")
        raise
    return outcomes


class SqliteWriter:
    name = "sqlite-writer"

    def __init__(
        self,
        queue: WriteQueue,
        db_dir: Path,
        *,
        synchronous: str,
        batch_max: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.queue = queue
        self.db_dir = db_dir
        self.synchronous = synchronous
        self.batch_max = batch_max
        self.metrics = metrics
        self._pool = ThreadPool(1)
        self._conn: apsw.Connection | None = None
        self._path: Path | None = None
        self._stopping = False

    def _open(self) -> apsw.Connection:
        path = current_week_file(self.db_dir)
        if path is None:
            raise RuntimeError(f"no current week file in {self.db_dir}; run `flask init-db`")
        self._path = path
        return self._pool.apply(connect, (path,), {"synchronous": self.synchronous})

    def _execute(self, jobs: list[WriteJob]) -> list[tuple[bool, Any]]:
        """On the writer thread: lock the file, make sure it is still CURRENT, run the batch.

        CURRENT is re-read *after* taking the write lock: a week rollover switches CURRENT while it
        holds the old file's lock, so a writer (this one, or the other worker's during a reload) can
        never commit into a week file that has just been closed.
        """
        assert self._conn is not None
        while True:
            self._conn.execute("BEGIN IMMEDIATE")
            current = current_week_file(self.db_dir)
            if current == self._path:
                return _run_jobs(self._conn, jobs)
            self._conn.execute("ROLLBACK")
            log.info("CURRENT moved to %s; the writer switches files", current)
            self._conn.close()
            self._conn = connect(current, synchronous=self.synchronous)  # type: ignore[arg-type]
            self._path = current

    def run(self) -> None:
        if self._conn is None:
            self._conn = self._open()
        while True:
            self.queue.beat()
            jobs = self.queue.take(self.batch_max, timeout=0.5)
            if not jobs:
                if self._stopping:
                    break
                continue
            t0 = time.perf_counter()
            try:
                outcomes = self._pool.apply(self._execute, (jobs,))
            except BaseException as exc:
                # Nothing of this batch committed: tell every caller, then let the supervisor restart
                # us with a fresh connection.
                err = exc if isinstance(exc, Exception) else RuntimeError("writer stopped")
                self._deliver(jobs, [(False, err)] * len(jobs))
                self._close()
                raise
            if self.metrics:
                self.metrics.write_batch_size.observe(len(jobs))
                self.metrics.write_commit_seconds.observe(time.perf_counter() - t0)
            self._deliver(jobs, outcomes)
        self._close()

    def _deliver(self, jobs: list[WriteJob], outcomes: list[tuple[bool, Any]]) -> None:
        """Hand each job its outcome, then tell the batch listeners; a failing callback is only logged."""
        for job, (ok, value) in zip(jobs, outcomes, strict=True):
            if ok:
                job.result.set(value)
            else:
                if self.metrics:
                    self.metrics.write_failures.inc()
                job.result.set_exception(value)
            if job.on_done is not None:
                try:
                    job.on_done(ok, value)
                except Exception:
                    log.exception("on_done callback of a write job failed")
        for listener in self.queue.batch_listeners:
            try:
                listener()
            except Exception:
                log.exception("write batch listener failed")

    def stop(self) -> None:
        """Refuse new writes, commit what is queued, then return from run()."""
        self.queue.accepting = False
        self._stopping = True

    def _close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                self._pool.apply(conn.close)
            except apsw.Error:
                log.exception("closing the write connection")
