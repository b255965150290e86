"""The one SQLite writer (ADR-005): owns the write connection, commits queued jobs in batches.

All of its SQLite calls run on a single native thread (a one-thread gevent ThreadPool): apsw releases
the GIL inside SQLite, so the hub keeps serving requests during a commit's fsync, and the connection
is only ever used from one thread. A batch is one transaction; each job runs in its own SAVEPOINT, so
a job that raises is rolled back alone and reported to its caller, and the others commit. Results
are handed back only after COMMIT has returned.

A *solo* job (the week rollover) splits its batch: what came before it commits first, it runs alone
in a transaction of its own, and what follows goes into a new transaction that re-reads CURRENT
after taking the lock — so nothing commits into a closed week, and the rollover never copies (nor
shares the fate of) another job's uncommitted writes (issue 10 items 1 and 2).

Outcomes are never guessed (issue 10 item 4): if the writer greenlet is killed while its thread is
still inside a transaction, the thread carries on (it cannot be stopped), and the real outcomes are
delivered when it finishes; if they do not arrive within `late_outcome_wait_s`, each job gets
`OutcomeUnknown`. A COMMIT that fails with an I/O error is also `OutcomeUnknown`: the commit record
may be on disk.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import gevent
from gevent.threadpool import ThreadPool

from app.metrics import Metrics
from app.storage.db import attach_history, connect, current_week_file, migrate
from app.storage.writes import Expired, OutcomeUnknown, WriteJob, WriteQueue, is_rerunnable

log = logging.getLogger(__name__)

Outcomes = list[tuple[bool, Any]]


def run_batch(conn: apsw.Connection, jobs: list[WriteJob]) -> Outcomes:
    """Run `jobs` in one IMMEDIATE transaction; (ok, result-or-exception) for each, in order.

    Called on the writer thread. If COMMIT itself fails, everything is rolled back and the exception
    propagates: no job is reported committed.
    """
    conn.execute("BEGIN IMMEDIATE")
    return _run_jobs(conn, jobs, lambda: conn.execute("BEGIN IMMEDIATE"))


def _run_jobs(conn: apsw.Connection, jobs: list[WriteJob], lock_again: Callable[[], object]) -> Outcomes:
    """The body of `run_batch`, inside a transaction already begun; commits it.

    A batch of re-runnable jobs (`mark_rerunnable`: bets) first runs without a SAVEPOINT per job:
    each apsw call releases the GIL and must take it back from a busy hub thread, and SAVEPOINT +
    RELEASE are two of a bet's five such calls (the GIL convoy, BENCHMARKS.md). If any job fails, the
    whole transaction is rolled back and run again the careful way, so the outcomes are the same.
    The rollback releases the write lock: `lock_again` takes it back (the writer's also makes sure
    CURRENT still names its file: a rollover may have taken the lock in between).
    """
    now = time.monotonic()
    if all(is_rerunnable(job.fn) for job in jobs):
        try:
            fast = _run_without_savepoints(conn, jobs, now)
        except BaseException:
            if not conn.getautocommit():
                conn.execute("ROLLBACK")
            raise
        if fast is not None:
            return fast
        lock_again()  # a job failed: rolled back; again, one SAVEPOINT per job
    return _run_with_savepoints(conn, jobs, now)


def _run_without_savepoints(conn: apsw.Connection, jobs: list[WriteJob], now: float) -> Outcomes | None:
    """Every job in one transaction, committed; None (rolled back) as soon as one job raises."""
    outcomes: Outcomes = []
    for job in jobs:
        if job.expires_at is not None and now > job.expires_at:
            outcomes.append((False, Expired(f"waited {now - job.enqueued_at:.1f}s in the write queue")))
            continue
        try:
            value = job.fn(conn)
        except Exception:  # noqa: BLE001 - judged again below, with a SAVEPOINT per job
            conn.execute("ROLLBACK")
            return None
        outcomes.append((True, value))
    _commit_or_unknown(conn)
    return outcomes


def _commit_or_unknown(conn: apsw.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except apsw.IOError as exc:
        # The commit frame may have reached the WAL before the failing write or fsync: SQLite
        # cannot say whether this transaction will be found committed, so neither can we.
        raise OutcomeUnknown(f"COMMIT failed with an I/O error: {exc}") from exc


def _run_with_savepoints(conn: apsw.Connection, jobs: list[WriteJob], now: float) -> Outcomes:
    outcomes: Outcomes = []
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
        _commit_or_unknown(conn)
    except BaseException:
        if not conn.getautocommit():
            conn.execute("ROLLBACK")
        raise
    return outcomes


class _CurrentMoved(Exception):
    """CURRENT, read with the write lock held, no longer names the writer's file (rolled back)."""

    def __init__(self, current: Path | None) -> None:
        super().__init__(f"CURRENT moved to {current}")
        self.current = current


def split_solo(jobs: list[WriteJob]) -> list[list[WriteJob]]:
    """Cut a batch into transactions, in order: every solo job alone, the runs between them together."""
    out: list[list[WriteJob]] = []
    run: list[WriteJob] = []
    for job in jobs:
        if job.solo:
            if run:
                out.append(run)
                run = []
            out.append([job])
        else:
            run.append(job)
    if run:
        out.append(run)
    return out


def _close_quietly(conn: apsw.Connection | None) -> None:
    if conn is not None:
        try:
            conn.close()
        except apsw.Error:
            log.exception("closing the write connection")


def _wal_size(path: Path) -> int:
    try:
        return os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        return 0


def _last_resort_checkpoint(conn: apsw.Connection, path: Path, limit: int) -> None:
    """On the writer thread, between transactions: a PASSIVE checkpoint when the WAL is past `limit`.

    Only while Litestream should own checkpoints (autocheckpoint off) and evidently does not — it
    checkpoints PASSIVE every ~1000 pages and TRUNCATE past ~500 MB, so a WAL this large means it is
    not running. PASSIVE never waits and never restarts the WAL under a reader (Litestream's read lock
    holds), so if Litestream is merely slow nothing is lost on its side either.
    """
    size = _wal_size(path)
    if size <= limit:
        return
    row = conn.execute("PRAGMA main.wal_checkpoint(PASSIVE)").fetchone()  # not the attached weeks
    busy, log_frames, done = row if row is not None else (None, None, None)
    log.warning(
        "WAL of %s is %d MB (Litestream should checkpoint it; is it running?): PASSIVE checkpoint by"
        " the writer, %s of %s frames copied (busy=%s)",
        path.name,
        size >> 20,
        done,
        log_frames,
        busy,
    )


class SqliteWriter:
    name = "sqlite-writer"
    late_outcome_wait_s = 120.0  # a killed writer's thread may still be committing (rollover: longer)
    probe_interval_s = 1.0  # while commits fail, try a tiny one this often so readiness can recover
    # With autocheckpoint off (Litestream replicates): how often the WAL's size is looked at, and the
    # size past which the writer checkpoints by itself (2x Litestream's own TRUNCATE threshold).
    wal_check_interval_s = 10.0
    wal_limit_bytes = 1 << 30
    # Linger (`linger_s`) only when at least LINGER_FROM writes came in while the last transaction
    # ran (the load is high enough for the wait to fill the next one) and fewer than LINGER_UNTIL
    # (the transaction is already large enough to pay for itself).
    LINGER_FROM = 4
    LINGER_UNTIL = 50

    def __init__(
        self,
        queue: WriteQueue,
        db_dir: Path,
        *,
        synchronous: str,
        batch_max: int,
        metrics: Metrics | None = None,
        autocheckpoint: bool = True,
        linger_s: float = 0.0,
    ) -> None:
        self.queue = queue
        self.linger_s = linger_s
        self.db_dir = db_dir
        self.synchronous = synchronous
        self.batch_max = batch_max
        self.metrics = metrics
        self.autocheckpoint = autocheckpoint  # False while Litestream owns checkpoints
        self._last_wal_check = time.monotonic()
        self._pool = ThreadPool(1)
        self._conn: apsw.Connection | None = None
        self._path: Path | None = None
        self._stopping = False
        self._last_probe = 0.0

    def _connect(self, path: Path) -> apsw.Connection:
        """On the writer thread: the write connection to `path`, with the previous weeks attached
        read-only as the read pool has them (w1 newest …), so that a job can look a week back inside
        its transaction — an Idempotency-Key committed just before a rollover (app.ledger.store's
        `move_money`). Attached here, outside any transaction, and again whenever CURRENT moves, so
        a writer (re)started after a rollover has them too.

        The file is brought up to this code's migrations first: gunicorn's master applies them once,
        at its start (`on_starting`), but a reload (`kill -HUP`) runs a new release's workers under the
        old master, and their jobs may need a table the old master never created (a reconciler's
        `lost_bets` mark, for one). `migrate` is one PRAGMA read per migration when there is nothing
        to do, and it takes the write lock before applying one, so two workers cannot both apply it."""
        conn = connect(path, synchronous=self.synchronous, autocheckpoint=self.autocheckpoint)
        try:
            migrate(conn)
            attach_history(conn, self.db_dir, path)
        except BaseException:
            _close_quietly(conn)
            raise
        return conn

    def _open(self) -> tuple[apsw.Connection, Path]:
        path = current_week_file(self.db_dir)
        if path is None:
            raise RuntimeError(f"no current week file in {self.db_dir}; run `flask init-db`")
        return self._pool.apply(self._connect, (path,)), path

    def _execute(
        self, conn: apsw.Connection, path: Path, jobs: list[WriteJob]
    ) -> tuple[apsw.Connection, Path, Outcomes]:
        """On the writer thread: lock the file, make sure it is still CURRENT, run one transaction.

        CURRENT is re-read *after* taking the write lock, every time it is taken (also when a batch
        of bets is rolled back and run again, `_run_jobs`): a week rollover switches CURRENT while it
        holds the old file's lock, so a writer (this one, or the other worker's during a reload, or
        `flask rollover`) can never commit into a week file that has just been closed. Returns the
        connection to keep (another one if CURRENT moved); on failure it closes whatever it holds.
        """
        try:
            while True:
                try:
                    self._lock(conn, path)
                    return conn, path, _run_jobs(conn, jobs, functools.partial(self._lock, conn, path))
                except _CurrentMoved as moved:
                    current = moved.current  # nothing of this batch committed: run it all there
                log.info("CURRENT moved to %s; the writer switches files", current)
                conn.close()
                if current is None:
                    raise RuntimeError(f"CURRENT disappeared from {self.db_dir}")
                conn = self._connect(current)
                path = current
        except BaseException:
            _close_quietly(conn)
            raise

    def _lock(self, conn: apsw.Connection, path: Path) -> None:
        """BEGIN IMMEDIATE on `path`, then CURRENT read with the lock held; `_CurrentMoved` (rolled
        back) if it names another file."""
        conn.execute("BEGIN IMMEDIATE")
        current = current_week_file(self.db_dir)
        if current != path:
            conn.execute("ROLLBACK")
            raise _CurrentMoved(current)

    def run(self) -> None:
        if self._conn is None:
            self._conn, self._path = self._open()
        while True:
            self.queue.beat()
            self._linger()
            jobs = self.queue.take(self.batch_max, timeout=0.5)
            if not jobs:
                if self._stopping:
                    break
                self._probe_if_failing()
                self._check_wal()
                continue
            transactions = split_solo(jobs)
            for i, txn in enumerate(transactions):
                try:
                    self._commit(txn)
                except BaseException:
                    # Those not run yet never touched the file: a known failure, nothing committed.
                    rest = [job for later in transactions[i + 1 :] for job in later]
                    if rest:
                        err = RuntimeError("not run: an earlier transaction of the batch failed")
                        self._deliver(rest, [(False, err)] * len(rest))
                    raise
            self._check_wal()
        self._close()

    def _linger(self) -> None:
        """Under load, wait `linger_s` for more writes before taking them: fewer, larger transactions.

        Every transaction costs the same hand-off to the thread, BEGIN, COMMIT and fsync, results
        back to the hub and one notification round trip, whatever its size. In the mixed run at
        3,000 taps/s the writes that queue while one commits made transactions of ~15 on average;
        waiting 5 ms more made them ~30 and took ~4 % off the CPU per tap (BENCHMARKS.md, issue 12
        sixth pass), for 5 ms more to `bet:confirmed`. Nothing waits when the load is light (fewer
        than LINGER_FROM writes waiting), and the writes stay queued while it waits (a stop loses
        none of them)."""
        if self.linger_s and not self._stopping:
            waiting = self.queue.depth() + self.queue.priority_depth()
            if self.LINGER_FROM <= waiting < self.LINGER_UNTIL:
                gevent.sleep(self.linger_s)

    def _commit(self, jobs: list[WriteJob]) -> None:
        """Run one transaction on the thread and deliver its outcomes; raise if it did not commit."""
        assert self._conn is not None and self._path is not None
        t0 = time.perf_counter()
        conn, self._conn = self._conn, None  # the thread owns it until it answers
        pending = self._pool.spawn(self._execute, conn, self._path, jobs)
        try:
            conn, path, outcomes = pending.get()
        except BaseException as exc:
            if not pending.ready():
                # We were killed (shutdown) or interrupted while the thread is still in the
                # transaction: it will commit or not without us. Deliver what it does, later.
                log.warning(
                    "writer stopped with %d jobs in flight; their outcomes follow the thread", len(jobs)
                )
                gevent.spawn(self._deliver_late, jobs, pending)
                raise
            # BEGIN or COMMIT failed on the thread: rolled back (or unknown), and the connection is
            # closed; the supervisor restarts us with a fresh one.
            self.queue.record_commit(False, exc)
            if self.metrics:
                self.metrics.write_commit_failures.inc()
            log.error("write transaction of %d jobs failed: %r", len(jobs), exc)
            err = exc if isinstance(exc, Exception) else RuntimeError(f"writer stopped: {exc!r}")
            self._deliver(jobs, [(False, err)] * len(jobs))
            raise
        self._conn, self._path = conn, path
        self.queue.record_commit(True)
        if self.metrics:
            self.metrics.write_batch_size.observe(len(jobs))
            self.metrics.write_commit_seconds.observe(time.perf_counter() - t0)
        self._deliver(jobs, outcomes)

    def _check_wal(self) -> None:
        """While Litestream owns checkpoints: every `wal_check_interval_s` (when idle), make sure the WAL
        has not grown past `wal_limit_bytes` — the sign that nobody checkpoints it (see
        `_last_resort_checkpoint`). Runs on the writer thread, between transactions."""
        if self.autocheckpoint or self._conn is None or self._path is None:
            return
        now = time.monotonic()
        if now - self._last_wal_check < self.wal_check_interval_s:
            return
        self._last_wal_check = now
        try:
            self._pool.apply(_last_resort_checkpoint, (self._conn, self._path, self.wal_limit_bytes))
        except apsw.Error as exc:
            log.warning("last-resort WAL checkpoint failed: %r", exc)

    def _deliver_late(self, jobs: list[WriteJob], pending: Any) -> None:
        """After a kill: wait for the thread's transaction and report what really happened."""
        try:
            conn, _, outcomes = pending.get(timeout=self.late_outcome_wait_s)
        except gevent.Timeout:
            log.error(
                "no outcome for %d write jobs after %.0fs: reported unknown",
                len(jobs),
                self.late_outcome_wait_s,
            )
            outcomes = [(False, OutcomeUnknown("the writer stopped before the commit finished"))] * len(jobs)
        except Exception as exc:  # noqa: BLE001 - the thread's own failure: nothing committed (or unknown)
            self.queue.record_commit(False, exc)
            outcomes = [(False, exc)] * len(jobs)
        else:
            self.queue.record_commit(True)
            self._pool.spawn(_close_quietly, conn)
        self._deliver(jobs, outcomes)

    def _probe_if_failing(self) -> None:
        """While the last COMMIT failed, commit a one-row write now and then: readiness stays false
        until a real commit succeeds again, even when no traffic comes (the balancer drained us)."""
        if not self.queue.commits.failing:
            return
        now = time.monotonic()
        if now - self._last_probe < self.probe_interval_s:
            return
        self._last_probe = now
        stamp = str(int(time.time() * 1000))
        probe = WriteJob(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO week_meta (key, value) VALUES ('writer_probe_at', ?)", (stamp,)
            )
        )
        self._commit([probe])
        log.info("writer: commits succeed again")

    def _deliver(self, jobs: list[WriteJob], outcomes: Outcomes) -> None:
        """Hand each job its outcome, then tell the batch listeners; a failing callback is only logged."""
        for job, (ok, value) in zip(jobs, outcomes, strict=True):
            if ok:
                job.result.set(value)
            else:
                if self.metrics:
                    if isinstance(value, OutcomeUnknown):
                        self.metrics.write_outcomes_unknown.inc()
                    else:
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
            self._pool.apply(_close_quietly, (conn,))
