"""The single SQLite writer: batching, isolation of failing jobs, back-pressure, flush on stop."""

import datetime as dt
import itertools
import time

import apsw
import gevent
import pytest
from gevent.monkey import get_original

from app.bets.store import NewBet, declare_lost, insert_bet
from app.errors import Overloaded, Unavailable
from app.ledger.integrity import check_file, check_link
from app.ledger.store import Rejected, credit, debit
from app.metrics import Metrics
from app.storage import db
from app.storage.rollover import force_rollover, rollover_job
from app.storage.writes import WriteQueue, mark_rerunnable
from tests.support.waiting import wait_until
from workers.sqlite_writer import SqliteWriter

blocking_sleep = get_original("time", "sleep")


@pytest.fixture
def db_dir(tmp_path):
    db.prepare_database(tmp_path, time.time())
    return tmp_path


def _start(queue, db_dir, batch_max=100):
    writer = SqliteWriter(queue, db_dir, synchronous="FULL", batch_max=batch_max, metrics=Metrics())
    return writer, gevent.spawn(writer.run)


def _put(key):
    def job(conn):
        conn.execute("INSERT INTO week_meta (key, value) VALUES (?, 'v')", (key,))
        return key

    return job


def _count(db_dir, prefix):
    with db.ReadPool(db_dir).connection() as c:
        return c.execute("SELECT count(*) FROM week_meta WHERE key LIKE ?", (prefix + "%",)).fetchone()[0]


def test_result_arrives_after_commit_and_is_visible_to_readers(db_dir):
    q = WriteQueue(100)
    writer, g = _start(q, db_dir)
    reads = db.ReadPool(db_dir)
    assert q.call(_put("k1")) == "k1"
    assert reads.run(lambda c: c.execute("SELECT value FROM week_meta WHERE key='k1'").fetchone()) == ("v",)
    writer.stop()
    g.join(5)
    assert g.successful()


def test_failing_job_is_rolled_back_alone(db_dir):
    q = WriteQueue(100)

    def boom(conn):
        conn.execute("INSERT INTO week_meta (key, value) VALUES ('half', 'written')")
        raise ValueError("business rule")

    results = [q.submit(_put("a1")), q.submit(boom), q.submit(_put("a2"))]
    writer, g = _start(q, db_dir)  # all three land in one batch
    assert results[0].get(5) == "a1"
    with pytest.raises(ValueError, match="business rule"):
        results[1].get(5)
    assert results[2].get(5) == "a2"
    assert _count(db_dir, "a") == 2
    assert _count(db_dir, "half") == 0
    writer.stop()
    g.join(5)


@pytest.mark.parametrize("rerunnable", [False, True])
def test_failing_job_is_rolled_back_alone_whether_or_not_jobs_are_rerunnable(db_dir, rerunnable):
    """Re-runnable jobs run without a SAVEPOINT each; when one fails, the batch is rolled back and run
    again one SAVEPOINT per job: the same outcomes, nothing of the failed job left, nothing twice."""
    q = WriteQueue(100)
    mark = mark_rerunnable if rerunnable else (lambda f: f)

    def boom(conn):
        conn.execute("INSERT INTO week_meta (key, value) VALUES ('half', 'written')")
        raise ValueError("business rule")

    results = [q.submit(mark(_put("r1"))), q.submit(mark(boom)), q.submit(mark(_put("r2")))]
    writer, g = _start(q, db_dir)
    assert results[0].get(5) == "r1"
    with pytest.raises(ValueError, match="business rule"):
        results[1].get(5)
    assert results[2].get(5) == "r2"
    assert _count(db_dir, "r") == 2
    assert _count(db_dir, "half") == 0
    fast = [q.submit(mark_rerunnable(_put(f"f{i}"))) for i in range(5)]  # and without a failure
    assert [r.get(5) for r in fast] == [f"f{i}" for i in range(5)]
    assert _count(db_dir, "f") == 5
    writer.stop()
    g.join(5)


def test_constraint_violation_fails_only_that_job(db_dir):
    q = WriteQueue(100)
    first, dup = q.submit(_put("same")), q.submit(_put("same"))
    writer, g = _start(q, db_dir)
    assert first.get(5) == "same"
    with pytest.raises(apsw.ConstraintError):
        dup.get(5)
    writer.stop()
    g.join(5)


def test_jobs_are_grouped_into_batches(db_dir):
    q = WriteQueue(1000)
    results = [q.submit(_put(f"b{i}")) for i in range(250)]
    writer, g = _start(q, db_dir, batch_max=100)
    for r in results:
        r.get(5)
    assert _batches(writer) == (3, 250)  # 100 + 100 + 50
    writer.stop()
    g.join(5)


def _batches(writer):
    """(transactions, writes) the writer has committed, from its batch-size histogram."""
    sizes = writer.metrics.write_batch_size.collect()[0].samples
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    total = next(s.value for s in sizes if s.name.endswith("_sum"))
    return count, total


@pytest.mark.parametrize(("linger_s", "batches"), [(0.0, (2, 8)), (1.0, (1, 8))])
def test_under_load_the_writer_lingers_for_a_fuller_transaction(db_dir, linger_s, batches):
    """Five writes waiting (at least LINGER_FROM): with a linger the writer waits for more first, so the
    three that arrive meanwhile share the transaction; without one they make a second transaction."""
    assert SqliteWriter.LINGER_FROM <= 5 < SqliteWriter.LINGER_UNTIL
    q = WriteQueue(100)
    results = [q.submit(_put(f"l{i}")) for i in range(5)]
    writer = SqliteWriter(q, db_dir, synchronous="FULL", batch_max=100, metrics=Metrics(), linger_s=linger_s)
    g = gevent.spawn(writer.run)
    wait_until(lambda: q.heartbeat_age() is not None, what="the writer's loop")  # it has looked
    results += [q.submit(_put(f"l{i}")) for i in range(5, 8)]
    for r in results:
        r.get(5)
    assert _batches(writer) == batches
    writer.stop()
    g.join(5)


def test_a_lone_write_is_committed_without_lingering(db_dir):
    q = WriteQueue(100)
    writer = SqliteWriter(q, db_dir, synchronous="FULL", batch_max=100, metrics=Metrics(), linger_s=60.0)
    g = gevent.spawn(writer.run)
    assert q.call(_put("alone"), timeout=5) == "alone"  # far sooner than the 60 s linger
    writer.stop()
    g.join(5)


def test_full_queue_refuses_with_overloaded(db_dir):
    q = WriteQueue(3)
    for i in range(3):
        q.submit(_put(f"f{i}"))
    with pytest.raises(Overloaded) as err:
        q.submit(_put("f3"))
    assert err.value.status == 503 and err.value.retry_after
    writer, g = _start(q, db_dir)
    writer.stop()
    g.join(5)
    assert _count(db_dir, "f") == 3  # the accepted ones were all committed, the refused one never


def test_stop_commits_everything_queued_then_refuses(db_dir):
    q = WriteQueue(1000)
    writer, g = _start(q, db_dir, batch_max=10)
    results = [q.submit(_put(f"s{i}")) for i in range(95)]
    writer.stop()
    with pytest.raises(Unavailable):
        q.submit(_put("late"))
    g.join(10)
    assert g.dead
    assert all(r.successful() for r in results)
    assert _count(db_dir, "s") == 95


def test_hub_keeps_running_during_a_slow_write(db_dir):
    """SQLite runs on the writer's native thread: other greenlets are not blocked meanwhile."""
    q = WriteQueue(10)
    writer, g = _start(q, db_dir)

    def slow(conn):
        blocking_sleep(0.4)  # a real blocking call, as a long SQLite statement would be
        conn.execute("INSERT INTO week_meta (key, value) VALUES ('slow', '1')")

    ticks = []

    def ticker():
        for _ in range(30):
            ticks.append(time.monotonic())
            gevent.sleep(0.01)

    t = gevent.spawn(ticker)
    result = q.submit(slow)
    result.get(5)
    t.join(5)
    assert len(ticks) == 30
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 0.2, f"hub was blocked for {max(gaps):.3f}s"
    writer.stop()
    g.join(5)


def test_commit_failure_reports_every_job_and_writer_recovers(db_dir):
    q = WriteQueue(10)
    _, g = _start(q, db_dir)

    def breaks_transaction(conn):
        conn.execute("COMMIT")  # ends the batch's transaction under the writer's feet

    r1 = q.submit(breaks_transaction)
    with pytest.raises(apsw.Error):
        r1.get(5)
    g.join(5)
    assert g.dead and not g.successful()  # crashed: the supervisor restarts it
    writer2, g2 = _start(q, db_dir)
    assert q.call(_put("after")) == "after"
    writer2.stop()
    g2.join(5)


# ---- issue 10: a week rollover inside a writer batch (items 1 and 2) -----------------------------

ALICE = "0x" + "a1" * 20


def _next_week_file(db_dir):
    """The file a rollover from CURRENT to the following ISO week would create."""
    year, week = db.parse_week_filename(db.current_week_file(db_dir).name)
    monday = dt.date.fromisocalendar(year, week, 1) + dt.timedelta(days=7)
    return db_dir / db.week_filename(*monday.isocalendar()[:2])


def _user_with_balance(db_dir, balance):
    conn = db.connect(db.current_week_file(db_dir))
    conn.execute("INSERT INTO users (id, address, balance, created_at) VALUES (1, ?, 0, 0)", (ALICE,))
    credit(conn, 1, balance, "deposit", "dep-1", 0)
    conn.close()


def _new_bet(bet_id, stake, t_start=1_900_000_000):
    return NewBet(
        bet_id, 1, ALICE, f"{t_start}:7", t_start, 7, 7000, 8000, stake, 20_000, 2 * stake, bet_id, 0
    )


def _withdraw(amount, ref):
    return lambda conn: debit(conn, 1, amount, "withdrawal", ref, 0)


def _file_state(path):
    """(balance of user 1, {ledger ref_id: amount}, {bet_id: (status, carried)}) of one week file."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        balance = conn.execute("SELECT balance FROM users WHERE id = 1").fetchone()[0]
        ledger = dict(conn.execute("SELECT ref_id, amount FROM transaction_ledger WHERE user_id = 1"))
        bets = {b: (s, c) for b, s, c in conn.execute("SELECT bet_id, status, carried FROM bets")}
        meta = dict(conn.execute("SELECT key, value FROM week_meta"))
    finally:
        conn.close()
    return balance, ledger, bets, meta


def test_jobs_after_a_rollover_in_the_same_batch_land_in_the_new_week(db_dir):
    """Issue 10 item 1: balance 100, one batch [rollover, withdraw 50, bet 10]."""
    _user_with_balance(db_dir, 100)
    old, new = db.current_week_file(db_dir), _next_week_file(db_dir)
    q = WriteQueue(100)
    rolled = q.submit(rollover_job(db_dir, new, "FULL"))
    withdrawn = q.submit(_withdraw(50, "w1"))
    bet = q.submit(insert_bet(_new_bet("bet1", 10)))
    writer, g = _start(q, db_dir)  # all three are taken as one batch
    assert rolled.get(5).new == new.name
    assert withdrawn.get(5) == 50 and bet.get(5) == 40
    assert db.current_week_file(db_dir) == new

    old_balance, old_ledger, old_bets, old_meta = _file_state(old)
    assert old_balance == 100 and old_ledger == {"dep-1": 100} and old_bets == {}
    assert old_meta["next"] == new.name
    new_balance, new_ledger, new_bets, _ = _file_state(new)
    assert new_balance == 40
    assert new_ledger == {f"{new.stem[5:]}:1": 100, "w1": -50, "bet1": -10}
    assert new_bets == {"bet1": ("confirmed", 0)}
    assert check_file(old) == [] and check_file(new) == []

    with pytest.raises(Rejected, match="insufficient_funds"):  # no second 100 to pay out
        q.call(_withdraw(100, "w2"))
    writer.stop()
    g.join(5)


def test_a_batch_of_bets_run_again_after_a_refusal_lands_in_the_week_current_names(db_dir):
    """A batch of bets runs first without a SAVEPOINT per bet; when one is refused, the batch is rolled
    back, which releases the write lock, and run again. A rollover by another process in that gap
    (`flask rollover`, the other worker's writer during a reload) must not leave the second run
    committing into the week file it has just closed."""
    _user_with_balance(db_dir, 100)
    old, new = db.current_week_file(db_dir), _next_week_file(db_dir)

    def too_big(conn):
        def rollover_at_the_next_begin(_cursor, sql, _bindings):
            if sql.lstrip().upper().startswith("BEGIN"):  # the batch is rolled back: the lock is free
                conn.exec_trace = None
                force_rollover(db_dir, new)  # another connection, as `flask rollover` would
            return True

        conn.exec_trace = rollover_at_the_next_begin  # apsw: called before each statement
        return debit(conn, 1, 1000, "bet", "too-big", 0)  # insufficient funds: the fast run fails

    q = WriteQueue(100)
    bet = q.submit(insert_bet(_new_bet("bet1", 10)))
    refused = q.submit(mark_rerunnable(too_big))
    writer, g = _start(q, db_dir)  # both are taken as one batch
    assert bet.get(5) == 90
    with pytest.raises(Rejected, match="insufficient_funds"):
        refused.get(5)
    assert db.current_week_file(db_dir) == new
    new_balance, _, new_bets, _ = _file_state(new)
    assert new_balance == 90 and new_bets == {"bet1": ("confirmed", 0)}
    old_balance, _, old_bets, _ = _file_state(old)
    assert old_balance == 100 and old_bets == {}
    assert check_file(old) == [] and check_file(new) == [] and check_link(old, new) == []
    writer.stop()
    g.join(5)


def test_a_bet_declared_lost_is_never_committed_after_even_across_a_rollover(db_dir):
    """A reconciler's `declare_lost` and the bet's own insert exclude each other under the write lock
    (app.bets.reconcile): whichever runs second loses. The lost mark must outlive a week rollover that
    falls between them, or the bet's writer would commit it into the new week after the trader was
    told `not_committed`."""
    _user_with_balance(db_dir, 100)
    old, new = db.current_week_file(db_dir), _next_week_file(db_dir)
    now_ms = int(time.time() * 1000)
    q = WriteQueue(100)
    writer, g = _start(q, db_dir)
    assert q.call(insert_bet(_new_bet("kept", 10))) == 90
    assert q.call(declare_lost(["kept", "lost", "gone"], now_ms)) == {"kept"}  # committed first: kept
    with pytest.raises(Rejected, match="not_committed"):
        q.call(insert_bet(_new_bet("lost", 10, t_start=1_900_000_005)))
    assert q.call(rollover_job(db_dir, new, "FULL", now_ms=now_ms)).new == new.name
    with pytest.raises(Rejected, match="not_committed"):  # marked lost in the old week
        q.call(insert_bet(_new_bet("gone", 10, t_start=1_900_000_010)))
    assert q.call(declare_lost(["kept", "gone"], now_ms)) == {"kept"}  # found in either week
    writer.stop()
    g.join(5)
    old_balance, _, old_bets, _ = _file_state(old)
    new_balance, _, new_bets, _ = _file_state(new)
    assert old_balance == 90 and old_bets == {"kept": ("confirmed", 0)}
    assert new_balance == 90 and new_bets == {"kept": ("confirmed", 1)}
    assert check_file(old) == [] and check_file(new) == [] and check_link(old, new) == []


def _week_before_migration_006(data, name: str):
    """A data directory whose current week file `name` carries migrations 001-005 only: a file made by
    the release before `lost_bets`."""
    old_release = data.parent / "sql-005"
    old_release.mkdir()
    for version, path in db.migrations():
        if version <= 5:
            (old_release / path.name).write_text(path.read_text())
    data.mkdir()
    week = data / name
    conn = db.connect(week)
    assert db.migrate(conn, old_release) == [1, 2, 3, 4, 5]
    conn.close()
    db.set_current_week_file(data, week)
    return week


def test_a_writer_brings_the_week_file_up_to_its_own_migrations(tmp_path):
    """A reload (SIGHUP) runs a new release's workers under the old master, which applied only the
    migrations it knew at its start: the writer applies the rest before its first job, or the new
    code's jobs fail on a missing table (here the reconciler's `lost_bets`, migration 006)."""
    data = tmp_path / "data"
    _week_before_migration_006(data, db.week_filename(*db.iso_week(time.time())))
    q = WriteQueue(100)
    writer, g = _start(q, data)
    assert q.call(declare_lost(["lost"], int(time.time() * 1000))) == set()
    assert q.call(db.schema_version) == db.migrations()[-1][0]
    writer.stop()
    g.join(5)


def test_flask_rollover_rolls_a_week_file_from_before_the_lost_bets_migration(tmp_path):
    """`flask rollover` (`force_rollover`) opens the current file itself, without the writer's
    migrations: run by a release with migration 006 before its server has started or reloaded (the
    file still at 005), the copy of the `lost_bets` marks failed on the missing table ("no such table:
    lost_bets") and the week could not be rolled over. A file without the table has no marks to copy."""
    data = tmp_path / "data"
    week = _week_before_migration_006(data, db.week_filename(2026, 10))
    result = force_rollover(data)
    assert (result.old, result.new) == (week.name, db.week_filename(2026, 11))
    new = db.current_week_file(data)
    assert new is not None and new.name == result.new
    conn = db.connect(new, readonly=True)
    try:
        assert db.schema_version(conn) == db.migrations()[-1][0]
        assert conn.execute("SELECT count(*) FROM lost_bets").get == 0
    finally:
        conn.close()


def _poison(conn):
    """A job whose effect makes the COMMIT itself fail: a deferred foreign-key violation.

    SQLite checks deferred foreign keys at COMMIT, which then fails and leaves the transaction to be
    rolled back: a real commit failure, deterministic, with no mocking.
    """
    conn.execute("PRAGMA defer_foreign_keys = ON")
    conn.execute(
        "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at)"
        " VALUES (999, 1, 1, 'deposit', 'ghost', 0)"
    )


def test_a_failed_commit_never_leaves_its_effects_in_the_week_named_by_current(db_dir):
    """Issue 10 item 2: the rollover must not copy a transaction that then fails to commit."""
    _user_with_balance(db_dir, 100)
    old, new = db.current_week_file(db_dir), _next_week_file(db_dir)
    q = WriteQueue(100)
    bet = q.submit(insert_bet(_new_bet("bet1", 10)))
    rolled = q.submit(rollover_job(db_dir, new, "FULL"))
    poisoned = q.submit(_poison)
    _, g = _start(q, db_dir)
    with pytest.raises(apsw.ConstraintError):
        poisoned.get(5)
    g.join(5)  # the writer crashed on the failed COMMIT (the supervisor would restart it)
    live = db.current_week_file(db_dir)
    balance, ledger, bets, _ = _file_state(live)
    if bet.successful():  # reported committed: it is in the live file, its debit in the week that made it
        assert bets["bet1"][0] == "confirmed" and balance == 90
        assert "bet1" in ledger or "bet1" in _file_state(old)[1]
    else:  # reported failed: no trace of it anywhere, the money is where it was
        assert "bet1" not in bets and balance == 100
        assert all("bet1" not in _file_state(p)[2] for p in (old, new) if p.exists())
    assert rolled.successful() == (live == new)
    assert check_file(old) == [] and check_file(live) == []
