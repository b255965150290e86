"""Issue 10 item 11: a forced rollover under load moves no money between weeks.

Signed bets and withdrawals flow through the real writer of this process while the week is rolled
over — by `flask rollover` in another process (the supported way), or by the rollover job queued to
the writer among the taps. Afterwards: every user's opening balance in the new week equals their
closing balance in the old, every bet reported confirmed is live in exactly one file and settles
there, every withdrawal reported done is in exactly one file, and integrity-check --all-weeks is clean.
"""

import os
import subprocess
import sys

import apsw
import gevent
import pytest

from app.bets.resolution import Outcome, settle_chunk
from app.bets.store import NewBet, insert_bet
from app.errors import Overloaded
from app.ledger.integrity import check_link
from app.ledger.store import credit, debit
from app.services import services
from app.storage import db
from app.storage.rollover import following_week_file, rollover_job
from tests.support.servers import ROOT
from tests.support.waiting import wait_until
from workers.sqlite_writer import SqliteWriter
from workers.supervisor import Supervisor

USERS = 20
T = 1_900_000_000  # column starts far ahead: every bet is still open at the rollover
FLASK = os.path.join(os.path.dirname(sys.executable), "flask")


def _address(i):
    return "0x" + f"{i + 1:040x}"


def _rows(path, sql, args=()):
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def _flask_rollover(settings):
    env = dict(os.environ)
    env.update(
        TAP_DATA_DIR=str(settings.data_dir),
        TAP_REDIS_URL=settings.redis_url,
        TAP_DEV_MODE="1",
        PYTHONPATH=str(ROOT),
    )
    return subprocess.run(
        [FLASK, "--app", "wsgi", "rollover"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _drained(svc) -> bool:
    """A no-op write queued behind every tap still in the lane has run: all of them were delivered.
    Under a busy core the lane may still be full when the traders stop; then it is tried again."""
    try:
        svc.writes.call(lambda c: None)
    except Overloaded:
        return False
    return True


@pytest.mark.parametrize("how", ["cli", "writer-job"])
def test_a_forced_rollover_under_load_moves_no_money(app, runner, how):
    svc = services(app)
    s = svc.settings
    sup = Supervisor()
    sup.start(
        SqliteWriter(
            svc.writes, s.db_dir, synchronous=s.sqlite_synchronous, batch_max=50, metrics=svc.metrics
        )
    )
    try:

        def signup(conn, i):
            conn.execute("INSERT INTO users (address, balance, created_at) VALUES (?, 0, 0)", (_address(i),))
            uid = conn.last_insert_rowid()
            credit(conn, uid, 1_000_000_000, "deposit", f"dep-{i}", 0)
            return uid

        uids = [svc.writes.call(lambda c, i=i: signup(c, i)) for i in range(USERS)]
        old = db.current_week_file(s.db_dir)
        new = following_week_file(old)
        confirmed: set[str] = set()
        refused: set[str] = set()
        withdrawn: set[str] = set()
        stop = gevent.event.Event()

        counters = [0] * USERS

        def tap(k):
            """One signed bet of trader k, and every third time a withdrawal; refused taps move nothing."""
            counters[k] += 1
            n = counters[k]
            bet_id, ref = f"b{k:02d}x{n:05d}", f"w{k:02d}x{n:05d}"
            t_start = T + 5 * (n % 40)
            bet = NewBet(
                bet_id, uids[k], _address(k), f"{t_start}:{n}", t_start, n, 7000, 8000,
                1_000_000, 20_000, 2_000_000, bet_id, 0,
            )  # fmt: skip
            try:
                svc.writes.submit(
                    insert_bet(bet),
                    on_done=lambda ok, _v, b=bet_id: (confirmed if ok else refused).add(b),
                    max_wait_s=10,
                )
                if n % 3 == 0:
                    svc.writes.submit(
                        lambda c, u=uids[k], r=ref: debit(c, u, 500_000, "withdrawal", r, 0),
                        on_done=lambda ok, _v, r=ref: withdrawn.add(r) if ok else None,
                    )
            except Overloaded:
                pass

        def trader(k):
            while not stop.is_set():
                tap(k)
                gevent.sleep(0.002)

        traders = [gevent.spawn(trader, k) for k in range(USERS)]
        gevent.sleep(0.3)
        if how == "cli":
            done = _flask_rollover(s)  # another process, while the writer keeps committing
            assert done.returncode == 0, done.stderr
            assert f"-> {new.name}" in done.stdout
        else:  # queued among the taps, with a burst right behind it (Monday 00:00 under traffic)
            rolled = svc.writes.submit(rollover_job(s.db_dir, new, s.sqlite_synchronous))
            for k in range(USERS):
                tap(k)
            rolled.get(timeout=60)
        gevent.sleep(0.3)
        stop.set()
        gevent.joinall(traders)
        wait_until(lambda: _drained(svc), timeout=60, what="everything queued before delivered")
        gevent.sleep(0.1)

        assert db.current_week_file(s.db_dir) == new
        assert check_link(old, new) == []  # openings == closings, carried == open, user by user
        old_bets = dict(_rows(old, "SELECT bet_id, status FROM bets"))
        new_bets = {b: (st, c) for b, st, c in _rows(new, "SELECT bet_id, status, carried FROM bets")}
        fresh_in_new = {b for b, (_, c) in new_bets.items() if not c}
        assert old_bets and fresh_in_new, "the load should straddle the rollover"
        assert confirmed == set(new_bets), "every confirmed bet is live in the new week, and only those"
        assert not (refused & (set(old_bets) | set(new_bets)))
        assert set(old_bets) == {b for b, (_, c) in new_bets.items() if c}  # carried, none left behind
        old_w = {
            r for (r,) in _rows(old, "SELECT ref_id FROM transaction_ledger WHERE ref_type = 'withdrawal'")
        }
        new_w = {
            r for (r,) in _rows(new, "SELECT ref_id FROM transaction_ledger WHERE ref_type = 'withdrawal'")
        }
        assert not (old_w & new_w) and old_w | new_w == withdrawn

        # every confirmed bet settles, in the live file
        for t_start in sorted({T + 5 * i for i in range(40)}):
            while svc.writes.call(
                settle_chunk(t_start, Outcome(void=False, lo=7500, hi=7500), 1, 500), priority=True
            ):
                pass
        assert not _rows(new, "SELECT bet_id FROM bets WHERE status = 'confirmed'")
        result = runner.invoke(args=["integrity-check", "--all-weeks"])
        assert result.exit_code == 0, result.output
        assert f"{old.name} -> {new.name}: OK" in result.output
    finally:
        sup.stop()
