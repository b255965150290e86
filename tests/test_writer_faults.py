"""Issue 10, the writer under faults: stopped mid-commit (item 4), settlement under overload
(item 7), readiness while commits fail (item 14). Real SQLite files, real Redis, no mocks."""

import contextlib
import subprocess
import time

import apsw
import gevent
import orjson
import pytest
import redis
from gevent.monkey import get_original

from app.bets.notify import BetNotifier, pending_json
from app.bets.resolution import Outcome
from app.bets.store import NewBet
from app.keys import bet_key, cell_key, user_channel
from app.ledger.store import credit
from app.metrics import Metrics
from app.storage import db
from app.storage.writes import OutcomeUnknown, WriteQueue
from tests.support.waiting import wait_until
from workers.resolver import Resolver
from workers.sqlite_writer import SqliteWriter
from workers.supervisor import Supervisor
from workers.week_rollover import WeekRollover

blocking_sleep = get_original("time", "sleep")
BOB = "0x" + "b0" * 20
T = 1_900_000_000  # a column start


@pytest.fixture
def db_dir(tmp_path):
    db.prepare_database(tmp_path, time.time())
    return tmp_path


def _writer(q, db_dir):
    return SqliteWriter(q, db_dir, synchronous="FULL", batch_max=100, metrics=Metrics())


def _slow_insert(key, seconds):
    def job(conn):
        blocking_sleep(seconds)  # the thread is inside the transaction, as during a long fsync
        conn.execute("INSERT INTO week_meta (key, value) VALUES (?, 'v')", (key,))
        return key

    return job


def _has_key(db_dir, key):
    with db.ReadPool(db_dir).connection() as c:
        return c.execute("SELECT count(*) FROM week_meta WHERE key = ?", (key,)).fetchone()[0] == 1


# ---- item 4: a writer stopped mid-batch -----------------------------------------------------------


def test_a_writer_killed_mid_commit_delivers_the_real_outcome(db_dir):
    q = WriteQueue(10)
    writer = _writer(q, db_dir)
    sup = Supervisor()
    sup.start(writer)
    done = []
    result = q.submit(_slow_insert("slow", 0.6), on_done=lambda ok, v: done.append((ok, v)))
    gevent.sleep(0.1)  # the batch is on the thread now
    sup.stop(timeout=0.05)  # shutdown: join briefly, then kill the writer greenlet
    assert result.get(5) == "slow"  # not "writer stopped": the commit went through and we say so
    assert done == [(True, "slow")]
    assert _has_key(db_dir, "slow")


def test_an_outcome_that_does_not_arrive_in_time_is_unknown_not_failed(db_dir):
    q = WriteQueue(10)
    writer = _writer(q, db_dir)
    writer.late_outcome_wait_s = 0.2
    sup = Supervisor()
    sup.start(writer)
    result = q.submit(_slow_insert("slower", 1.0))
    gevent.sleep(0.1)
    sup.stop(timeout=0.05)
    with pytest.raises(OutcomeUnknown):
        result.get(5)
    wait_until(lambda: _has_key(db_dir, "slower"), what="the late commit")  # "rejected" would have been a lie


def test_an_unknown_bet_outcome_is_not_announced_as_rejected_and_keeps_its_claim(redis_url):
    r = redis.Redis.from_url(redis_url)
    bet = NewBet("bu1", 1, BOB, f"{T}:7", T, 7, 7000, 8000, 10, 20_000, 20, "n1", 0)
    r.set(cell_key(BOB, bet.cell), "bu1")
    r.set(bet_key("bu1"), pending_json(bet))
    sub = r.pubsub()
    sub.subscribe(user_channel(BOB))
    sub.get_message(timeout=1)  # the subscribe confirmation
    notifier = BetNotifier(r, Metrics())
    notifier.on_done(bet, time.monotonic(), False, OutcomeUnknown("writer stopped mid-commit"))
    notifier.flush()
    gevent.sleep(0.2)
    assert sub.get_message(timeout=0.5) is None  # no bet:rejected
    assert r.get(cell_key(BOB, bet.cell)) == b"bu1"  # the cell claim stays
    assert orjson.loads(r.get(bet_key("bu1")))["status"] == "pending"
    sub.close()


# ---- item 7: settlement and rollover under a full tap lane ----------------------------------------


def _user_with_open_bet(db_dir):
    conn = db.connect(db.current_week_file(db_dir))
    conn.execute("INSERT INTO users (id, address, balance, created_at) VALUES (1, ?, 0, 0)", (BOB,))
    credit(conn, 1, 100, "deposit", "dep-1", 0)
    conn.execute(
        "INSERT INTO bets (bet_id, user_id, target_time, row, min_price, max_price, stake, multiplier,"
        " payout, nonce, placed_at) VALUES ('bw', 1, ?, 7, 7000, 8000, 10, 20000, 20, 'n', 0)",
        (T,),
    )
    conn.close()


def _deposit(ref):
    return lambda conn: credit(conn, 1, 1, "deposit", ref, 0)


def test_settlement_and_rollover_are_never_refused_nor_queued_behind_taps(db_dir, redis_url):
    _user_with_open_bet(db_dir)
    q = WriteQueue(3)
    taps = [q.submit(_deposit(f"tap{i}")) for i in range(3)]  # the tap lane is full
    reads = db.ReadPool(db_dir)
    r = redis.Redis.from_url(redis_url)
    resolver = Resolver(r, reads, q, column_s=5, critical_s=10.0, notifier=BetNotifier(r).attach(q))
    next_week = time.time() + 7 * 86400
    roll = WeekRollover(q, db_dir, synchronous="FULL", clock=lambda: next_week)
    settling = gevent.spawn(resolver.settle_window, T, Outcome(void=False, lo=7500, hi=7600), (T + 7) * 1000)
    rolling = gevent.spawn(roll.check)
    gevent.sleep(0.05)
    writer = _writer(q, db_dir)
    g = gevent.spawn(writer.run)
    assert settling.get(5) == 1
    assert rolling.get(5) is not None
    for t in taps:
        t.get(5)
    old = db.list_week_files(db_dir)[0]
    with db.ReadPool(db_dir).connection() as c:  # the taps came after both: they are in the new week
        assert (
            c.execute("SELECT count(*) FROM transaction_ledger WHERE ref_id LIKE 'tap%'").fetchone()[0] == 3
        )
    conn = apsw.Connection(str(old), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT status FROM bets WHERE bet_id = 'bw'").fetchone()[0] == "won"
    assert conn.execute("SELECT count(*) FROM transaction_ledger WHERE ref_id LIKE 'tap%'").fetchone()[0] == 0
    conn.close()
    writer.stop()
    g.join(5)
    reads.close()


def test_the_resolver_and_rollover_survive_a_writer_that_refuses(db_dir, redis_url):
    _user_with_open_bet(db_dir)
    q = WriteQueue(3)
    q.accepting = False  # shutting down: every submit answers Unavailable
    reads = db.ReadPool(db_dir)
    r = redis.Redis.from_url(redis_url)
    resolver = Resolver(r, reads, q, column_s=5, critical_s=10.0, notifier=BetNotifier(r).attach(q))
    assert resolver.settle_window(T, Outcome(void=True), (T + 30) * 1000) == 0  # no crash: next poll
    roll = WeekRollover(q, db_dir, synchronous="FULL", clock=lambda: time.time() + 7 * 86400)
    assert roll.check() is None
    reads.close()


# ---- item 14: readiness while commits fail -------------------------------------------------------


def _poison(conn):
    """Makes the COMMIT itself fail: a deferred foreign-key violation, checked by SQLite at COMMIT."""
    conn.execute("PRAGMA defer_foreign_keys = ON")
    conn.execute(
        "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at)"
        " VALUES (999, 1, 1, 'deposit', 'ghost', 0)"
    )


def _writer_check(client):
    resp = client.get("/readyz")
    return resp.get_json()["checks"]["writer"]


def test_readyz_is_not_ready_after_a_failed_commit_until_one_succeeds(app, client):
    from app.services import services

    svc = services(app)
    writer = SqliteWriter(
        svc.writes, svc.settings.db_dir, synchronous="FULL", batch_max=10, metrics=svc.metrics
    )
    sup = Supervisor(backoff_initial_s=0.05, backoff_max_s=0.1)
    sup.start(writer)
    try:
        svc.writes.call(lambda c: None)
        assert _writer_check(client)["ok"] is True
        with pytest.raises(apsw.ConstraintError):
            svc.writes.call(_poison)
        check = _writer_check(client)
        assert check["ok"] is False and check["commit_failing"] is True
        assert "FOREIGN KEY" in check["last_commit_error"]
        # the restarted writer probes with a real commit; readiness returns without any traffic
        deadline = time.monotonic() + 5
        while not _writer_check(client)["ok"] and time.monotonic() < deadline:
            gevent.sleep(0.1)
        assert _writer_check(client)["ok"] is True
    finally:
        sup.stop()


@contextlib.contextmanager
def _tiny_disk(path, size="2m"):
    path.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False
    ).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_readyz_is_not_ready_while_the_disk_is_full(tmp_path, redis_url):
    from app import create_app
    from app.config import Settings
    from app.services import services

    with _tiny_disk(tmp_path / "disk") as disk:
        settings = Settings.from_env({}, data_dir=disk / "data", redis_url=redis_url, dev_mode=True)
        db.prepare_database(settings.db_dir, time.time())
        app = create_app(settings)
        client = app.test_client()
        svc = services(app)
        writer = SqliteWriter(
            svc.writes, settings.db_dir, synchronous="FULL", batch_max=10, metrics=svc.metrics
        )
        sup = Supervisor(backoff_initial_s=0.05, backoff_max_s=0.2)
        sup.start(writer)
        filler = disk / "filler"
        try:
            svc.writes.call(lambda c: None)
            assert _writer_check(client)["ok"] is True
            with open(filler, "wb") as fh, contextlib.suppress(OSError):  # fill the disk to the last byte
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            blob = b"x" * 200_000
            with pytest.raises(apsw.FullError):
                svc.writes.call(
                    lambda c: c.execute("INSERT INTO week_meta (key, value) VALUES ('big', ?)", (blob.hex(),))
                )
            check = _writer_check(client)
            assert check["ok"] is False and check["commit_failing"] is True
            gevent.sleep(0.5)  # the restarted writer's probes keep failing: still not ready
            assert _writer_check(client)["ok"] is False
            filler.unlink()
            deadline = time.monotonic() + 5
            while not _writer_check(client)["ok"] and time.monotonic() < deadline:
                gevent.sleep(0.1)
            assert _writer_check(client)["ok"] is True
        finally:
            sup.stop()
            svc.reads.close()
