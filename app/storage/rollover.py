"""Weekly rollover of the read-write week file (ADR-006), as a job for the single writer.

Runs on the writer's thread inside the old file's write transaction (so no writer, ours or the
other worker's during a reload, can commit into the old file meanwhile). The job is *solo*
(`app.storage.writes.mark_solo`): the writer commits every job taken before it, runs it in a transaction
of its own, and starts a new transaction for the jobs after it, so the copy is made from committed
state only and nothing lands in the old file after it (issue 10 items 1 and 2):

1. create the new week file from scratch (leftovers of a crashed attempt are deleted first);
2. copy every user with its balance, write one ``opening`` ledger row per user (amount = balance
   carried in), copy every still-open bet with ``carried = 1`` and the recent ``lost_bets`` marks (a
   bet declared lost just before the switch must stay refused in the new file: sql/006_lost_bets.sql);
   commit the new file (fsync);
3. switch ``CURRENT`` to the new file (atomic rename + directory fsync);
4. mark the old file closed; the writer's COMMIT of the old transaction follows the job (if that
   COMMIT fails, only the ``closed_at``/``next`` marks are lost: the transaction held nothing else).

A crash before step 3 leaves ``CURRENT`` on the old file, which stays authoritative and complete; the
half-made new file is ignored and rebuilt next time. After step 3 the new file is complete and
durable. Each week file therefore checks on its own: balance = opening row + the week's ledger rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from app.storage.db import (
    connect,
    current_week_file,
    migrate,
    parse_week_filename,
    set_current_week_file,
    week_filename,
)
from app.storage.writes import mark_solo

log = logging.getLogger(__name__)

# The `lost_bets` marks copied to the new week: a bet waits at most seconds in a write queue, so a mark
# older than this can no longer meet its bet's insert (a day leaves room for any clock skew).
LOST_BETS_CARRY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class RolloverResult:
    old: str
    new: str
    users: int
    carried_bets: int
    seconds: float
    already_done: bool = False


def rollover_job(
    db_dir: Path,
    new_path: Path,
    synchronous: str = "FULL",
    now_ms: int | None = None,
    fail_before_switch: bool = False,
    autocheckpoint: bool = True,
):
    """The writer job that rolls the current week file over to `new_path`.

    `fail_before_switch` exists for the crash test: it raises after the new file is written and
    before CURRENT moves, as a crash at the worst moment would.
    """

    def job(old: apsw.Connection) -> RolloverResult:
        t0 = time.perf_counter()
        current = current_week_file(db_dir)
        assert current is not None
        if current == new_path:
            return RolloverResult(current.name, new_path.name, 0, 0, 0.0, already_done=True)
        stamp = int(time.time() * 1000) if now_ms is None else now_ms
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{new_path}{suffix}").unlink(missing_ok=True)
        new = connect(new_path, synchronous=synchronous, autocheckpoint=autocheckpoint)
        try:
            migrate(new)
            week = new_path.stem.removeprefix("bets_")
            new.execute("BEGIN IMMEDIATE")
            new.executemany(
                "INSERT INTO week_meta (key, value) VALUES (?, ?)",
                [("week", week), ("opened_at", str(stamp)), ("previous", current.name)],
            )
            users = old.execute("SELECT id, address, balance, created_at FROM users ORDER BY id").fetchall()
            new.executemany("INSERT INTO users (id, address, balance, created_at) VALUES (?, ?, ?, ?)", users)
            new.executemany(
                "INSERT INTO transaction_ledger"
                " (user_id, amount, balance_after, ref_type, ref_id, created_at)"
                " VALUES (?, ?, ?, 'opening', ?, ?)",
                [(uid, bal, bal, f"{week}:{uid}", stamp) for uid, _, bal, _ in users],
            )
            bets = old.execute(
                "SELECT bet_id, user_id, target_time, row, min_price, max_price, stake, multiplier, payout,"
                " nonce, placed_at FROM bets WHERE status = 'confirmed' ORDER BY id"
            ).fetchall()
            new.executemany(
                "INSERT INTO bets (bet_id, user_id, target_time, row, min_price, max_price, stake,"
                " multiplier, payout, nonce, placed_at, carried) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                bets,
            )
            new.executemany("INSERT INTO lost_bets (bet_id, lost_at) VALUES (?, ?)", _recent_lost(old, stamp))
            new.execute("COMMIT")
        finally:
            new.close()
        if fail_before_switch:
            raise RuntimeError("simulated crash before CURRENT moves")
        set_current_week_file(db_dir, new_path)
        old.executemany(
            "INSERT OR REPLACE INTO week_meta (key, value) VALUES (?, ?)",
            [("closed_at", str(stamp)), ("next", new_path.name)],
        )
        result = RolloverResult(current.name, new_path.name, len(users), len(bets), time.perf_counter() - t0)
        log.info(
            "week rollover %s -> %s: %d users, %d open bets carried, %.2fs",
            result.old,
            result.new,
            result.users,
            result.carried_bets,
            result.seconds,
        )
        return result

    return mark_solo(job)


def _recent_lost(old: apsw.Connection, stamp: int) -> list[tuple[Any, ...]]:
    """The `lost_bets` marks of the old week to carry (`LOST_BETS_CARRY_MS`). None from a file without
    the table: `flask rollover` opens the current file itself, without the writer's migrations, and a
    file from before migration 006 (its server not yet started or reloaded on this release) has no
    marks, since only this release's reconciler writes them."""
    found = old.execute("SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = 'lost_bets'")
    if found.get is None:
        return []
    return old.execute(
        "SELECT bet_id, lost_at FROM main.lost_bets WHERE lost_at >= ?", (stamp - LOST_BETS_CARRY_MS,)
    ).fetchall()


def following_week_file(path: Path) -> Path:
    """The week file after `path` by the ISO calendar (``bets_2026_52.db`` -> ``bets_2026_53.db``)."""
    year, week = parse_week_filename(path.name) or (0, 0)
    monday = dt.date.fromisocalendar(year, week, 1) + dt.timedelta(days=7)
    iso = monday.isocalendar()
    return path.parent / week_filename(iso[0], iso[1])


def force_rollover(
    db_dir: Path,
    new_path: Path | None = None,
    synchronous: str = "FULL",
    lock_wait_ms: int = 60_000,
    autocheckpoint: bool = True,
) -> RolloverResult:
    """Roll CURRENT over now, from any process, while the server runs (`flask rollover`, issue 10 item 11).

    Takes the current file's write lock with BEGIN IMMEDIATE — waiting for the writer's batch in
    flight — and runs the same solo rollover in a transaction of its own. The server's writer takes
    the same lock for each batch and re-reads CURRENT after it, so its next batch lands in the new
    file; nothing can commit into the old one after the copy. `new_path` defaults to the week after
    CURRENT's and must be later than it.
    """
    while True:
        current = current_week_file(db_dir)
        if current is None:
            raise RuntimeError(f"no current week file in {db_dir}")
        target = new_path or following_week_file(current)
        if (parse_week_filename(target.name) or (0, 0)) <= (parse_week_filename(current.name) or (0, 0)):
            if target == current:
                return RolloverResult(current.name, target.name, 0, 0, 0.0, already_done=True)
            raise ValueError(f"{target.name} is not later than the current week file {current.name}")
        conn = connect(current, synchronous=synchronous, autocheckpoint=autocheckpoint)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(lock_wait_ms)}")
            conn.execute("BEGIN IMMEDIATE")
            if current_week_file(db_dir) != current:  # another rollover won while we waited
                conn.execute("ROLLBACK")
                continue
            result = rollover_job(db_dir, target, synchronous, autocheckpoint=autocheckpoint)(conn)
            conn.execute("COMMIT")
            return result
        except BaseException:
            if not conn.getautocommit():
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
