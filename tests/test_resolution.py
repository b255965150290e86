"""The resolver on scripted price paths, exactly-once settlement, and the weekly rollover."""

import datetime as dt
import time

import apsw
import gevent
import pytest
import redis

from app.bets.notify import BetNotifier
from app.bets.store import NewBet, insert_bet
from app.keys import PRICE_HISTORY_KEY
from app.ledger.integrity import check_file
from app.ledger.store import credit
from app.storage import db
from app.storage.rollover import rollover_job
from app.storage.writes import WriteQueue
from tests.support.waiting import wait_until
from workers.aggregator import SteadyClock
from workers.resolver import Resolver
from workers.sqlite_writer import SqliteWriter
from workers.week_rollover import WeekRollover

COL = 5
T0 = 1_800_000_000  # a column start (multiple of 5), in the future of any real clock drift
CRITICAL_S = 10.0


class World:
    """A week file, the single writer, a read pool and a Redis price history: the resolver's inputs."""

    def __init__(self, db_dir, redis_url):
        self.db_dir = db_dir
        self.r = redis.Redis.from_url(redis_url)
        self.writes = WriteQueue(10_000)
        self.notifier = BetNotifier(self.r).attach(self.writes)
        self.writer = SqliteWriter(self.writes, db_dir, synchronous="NORMAL", batch_max=100)
        self.g = gevent.spawn(self.writer.run)
        self.reads = db.ReadPool(db_dir)
        self.users: dict[str, int] = {}
        self.n = 0

    def resolver(self):
        return Resolver(
            self.r,
            self.reads,
            self.writes,
            column_s=COL,
            critical_s=CRITICAL_S,
            grace_s=1.0,
            notifier=self.notifier,
        )

    def user(self, name: str, funds: int = 1_000_000_000) -> int:
        address = "0x" + name.encode().hex().ljust(40, "0")[:40]

        def job(conn):
            conn.execute("INSERT INTO users (address, balance, created_at) VALUES (?, 0, 0)", (address,))
            uid = conn.last_insert_rowid()
            credit(conn, uid, funds, "deposit", f"dep-{name}", 0)
            return uid

        self.users[name] = self.writes.call(job)
        return self.users[name]

    def bet(self, user: str, row: int, t_start: int = T0, stake: int = 10_000_000, mult: int = 30_000) -> str:
        self.n += 1
        bet_id = f"bet{self.n:06d}"
        uid = self.users[user]
        bet = NewBet(
            bet_id,
            uid,
            "0x",
            f"{t_start}:{row}",
            t_start,
            row,
            row * 1000,
            (row + 1) * 1000,
            stake,
            mult,
            stake * mult // 10_000,
            f"n{self.n}",
            0,
        )
        self.writes.call(insert_bet(bet))
        return bet_id

    def ticks(self, *points):
        """(seconds offset from T0, price in cents) pairs into the price history."""
        self.r.zadd(
            PRICE_HISTORY_KEY, {f"{int((T0 + s) * 1000)}:{p}": int((T0 + s) * 1000) for s, p in points}
        )

    def status(self, bet_id):
        with self.reads.connection() as c:
            return c.execute("SELECT status FROM bets WHERE bet_id = ?", (bet_id,)).fetchone()[0]

    def balance(self, user):
        with self.reads.connection() as c:
            return c.execute("SELECT balance FROM users WHERE id = ?", (self.users[user],)).fetchone()[0]

    def ledger(self, ref_type):
        with self.reads.connection() as c:
            return c.execute(
                "SELECT ref_id, amount FROM transaction_ledger WHERE ref_type = ? ORDER BY id", (ref_type,)
            ).fetchall()

    def close(self):
        self.writer.stop()
        self.g.join(10)
        self.reads.close()


@pytest.fixture
def world(tmp_path, redis_url):
    db.prepare_database(tmp_path, T0)
    w = World(tmp_path, redis_url)
    w.r.flushall()
    yield w
    w.close()


def _settle(world, at_s=T0 + COL + 2):
    return world.resolver().resolve_due(int(at_s * 1000))


def test_touch_inside_the_band_wins_and_pays_once(world):
    world.user("alice")
    won = world.bet("alice", 6700)  # band 67000.00-67010.00
    lost = world.bet("alice", 6702)
    world.ticks((-0.5, 6_699_500), (1, 6_700_500), (2, 6_699_900), (4, 6_699_800), (5.5, 6_699_000))
    assert _settle(world) == 2
    assert world.status(won) == "won" and world.status(lost) == "lost"
    assert world.ledger("payout") == [(won, 30_000_000)]
    assert world.balance("alice") == 1_000_000_000 - 20_000_000 + 30_000_000
    assert _settle(world, T0 + 60) == 0  # nothing left; no second payout
    assert world.ledger("payout") == [(won, 30_000_000)]


def test_a_jump_across_the_band_between_two_ticks_is_a_touch(world):
    world.user("bob")
    jumped = world.bet("bob", 6705)  # 67050-67060: never printed, but crossed
    world.ticks((-0.1, 6_700_000), (2, 6_700_000), (2.25, 6_710_000), (5.2, 6_710_000))
    _settle(world)
    assert world.status(jumped) == "won"


def test_the_price_in_force_at_the_window_start_counts(world):
    world.user("carol")
    opening = world.bet("carol", 6700)
    world.ticks((-1, 6_700_500), (0.5, 6_720_000), (5.1, 6_720_000))  # leaves the band right after it opens
    _settle(world)
    assert world.status(opening) == "won"


def test_band_edges_are_inclusive(world):
    world.user("dave")
    top_edge = world.bet("dave", 6710)  # band 67100.00-67110.00: the path's high is exactly 67100.00
    above = world.bet("dave", 6711)  # band 67110.00-67120.00
    bottom_edge = world.bet("dave", 6689)  # band 66890.00-66900.00: the path's low is exactly 66900.00
    world.ticks((-0.2, 6_705_000), (1, 6_710_000), (2, 6_705_000), (4, 6_690_000), (5.3, 6_705_000))
    _settle(world)
    assert world.status(top_edge) == "won"
    assert world.status(bottom_edge) == "won"
    assert world.status(above) == "lost"


def test_a_miss_by_one_cent(world):
    world.user("erin")
    miss = world.bet("erin", 6711)  # band 67110.00-67120.00
    world.ticks((-0.2, 6_705_000), (2, 6_710_999), (5.3, 6_705_000))  # highest 67109.99
    _settle(world)
    assert world.status(miss) == "lost"


def test_a_feed_gap_inside_the_window_voids_and_refunds(world):
    world.user("frank")
    gap = world.bet("frank", 6700, t_start=T0 + 30)
    world.ticks((29, 6_700_500), (30.5, 6_700_500), (41.5, 6_700_500))  # nothing from 30.5 s to 41.5 s
    before = world.balance("frank")
    world.resolver().resolve_due(int((T0 + 42) * 1000))
    assert world.status(gap) == "void"
    assert world.ledger("refund") == [(gap, 10_000_000)]
    assert world.balance("frank") == before + 10_000_000


def test_waits_for_late_ticks_then_voids_a_dead_feed(world):
    world.user("gina")
    pending = world.bet("gina", 6700)
    world.ticks((-0.5, 6_700_500), (3, 6_700_500))  # the feed stops inside the window
    assert world.resolver().resolve_due(int((T0 + COL + 2) * 1000)) == 0  # incomplete: wait
    assert world.status(pending) == "confirmed"
    world.resolver().resolve_due(int((T0 + COL + CRITICAL_S + 1) * 1000))
    assert world.status(pending) == "void"


def test_a_wall_clock_stepped_forward_voids_no_window_the_feed_covers(world):
    """The resolver's clock is the feed's steady clock: a window still being ticked through when the
    machine's wall clock jumps 12 s ahead is settled on its prices, not voided for a 12 s "gap"."""
    mono, wall = [0.0], [T0 - 1.0]
    steady = SteadyClock(lambda: mono[0], lambda: wall[0])
    resolver = Resolver(
        world.r,
        world.reads,
        world.writes,
        column_s=COL,
        critical_s=CRITICAL_S,
        grace_s=1.0,
        notifier=world.notifier,
        now_ms=steady.wall_ms,
    )
    world.user("ivan")
    bet = world.bet("ivan", 6700)
    world.ticks((-0.5, 6_699_000), (1, 6_699_500), (2, 6_699_900), (3, 6_699_800), (4.75, 6_699_700))
    wall[0] += 12.0  # NTP steps the machine's clock
    mono[0] = 5.9  # on the feed's clock: just before the window's end
    resolver.step()
    assert world.status(bet) == "confirmed"  # not over yet: no verdict
    world.ticks((5.25, 6_699_600))  # the window's first tick after its end: complete
    mono[0] = 7.5
    resolver.step()
    assert world.status(bet) == "lost"


def test_two_resolvers_racing_pay_each_winner_exactly_once(world):
    world.user("hal")
    bets = [world.bet("hal", 6690 + k) for k in range(20)]
    world.ticks((-0.5, 6_695_000), (2, 6_700_000), (5.5, 6_700_000))
    r1, r2 = world.resolver(), world.resolver()
    at = int((T0 + COL + 2) * 1000)
    g = [gevent.spawn(r1.resolve_due, at), gevent.spawn(r2.resolve_due, at), gevent.spawn(r1.resolve_due, at)]
    gevent.joinall(g, raise_error=True)
    assert sum(x.value for x in g) == 20  # every bet settled by exactly one of them
    payouts = world.ledger("payout")
    assert len(payouts) == len({b for b, _ in payouts})
    assert {b for b, _ in payouts} == {b for b in bets if world.status(b) == "won"}
    assert check_file(db.current_week_file(world.db_dir)) == []


def test_a_huge_window_is_settled_in_chunks(world):
    world.user("ivy")
    for i in range(12):
        world.user(f"u{i}")
    ids = [world.bet(f"u{i % 12}", 6690 + (i // 12)) for i in range(240)]
    world.ticks((-0.5, 6_695_000), (2, 6_700_000), (5.5, 6_700_000))
    res = world.resolver()
    res.chunk = 50
    assert res.resolve_due(int((T0 + COL + 2) * 1000)) == 240
    assert all(world.status(b) in ("won", "lost") for b in ids)
    assert check_file(db.current_week_file(world.db_dir)) == []


# ---- weekly rollover ----------------------------------------------------------------------------


def _week_of(ts):
    return db.iso_week(ts)


def test_rollover_carries_balances_and_open_bets_and_each_week_checks_alone(world):
    world.user("jo")
    world.user("kim", funds=50_000_000)
    settled = world.bet("jo", 6700)
    world.ticks((-0.5, 6_700_500), (5.5, 6_700_500))
    _settle(world)
    open_bet = world.bet("jo", 6701, t_start=T0 + 3600)
    old = db.current_week_file(world.db_dir)
    next_week = dt.datetime.fromtimestamp(T0, tz=dt.UTC) + dt.timedelta(days=7)
    roll = WeekRollover(world.writes, world.db_dir, synchronous="NORMAL", clock=next_week.timestamp)
    result = roll.check()
    new = db.current_week_file(world.db_dir)
    assert new != old and new.name == db.week_filename(*_week_of(next_week.timestamp()))
    assert result.users == 2 and result.carried_bets == 1
    assert roll.check() is None  # done: nothing more to do this week

    assert check_file(old) == [] and check_file(new) == []
    conn = apsw.Connection(str(new), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT bet_id, status, carried FROM bets").fetchall() == [(open_bet, "confirmed", 1)]
    balances = dict(conn.execute("SELECT id, balance FROM users"))
    openings = dict(conn.execute("SELECT user_id, amount FROM transaction_ledger WHERE ref_type = 'opening'"))
    assert openings == balances
    assert balances[world.users["kim"]] == 50_000_000
    conn.close()

    # the writer follows CURRENT: new writes land in the new week, the open bet settles there
    later = world.bet("kim", 6700, t_start=T0 + 3600)
    world.ticks((3599, 6_700_500), (3605.5, 6_700_500))
    world.resolver().resolve_due(int((T0 + 3600 + COL + 2) * 1000))
    assert world.status(open_bet) == "lost" and world.status(later) == "won"
    assert check_file(new) == []
    conn = apsw.Connection(str(old), flags=apsw.SQLITE_OPEN_READONLY)
    assert conn.execute("SELECT count(*) FROM bets WHERE bet_id = ?", (later,)).fetchone()[0] == 0
    assert conn.execute("SELECT status FROM bets WHERE bet_id = ?", (settled,)).fetchone()[0] == "won"
    conn.close()


def test_a_crash_in_the_middle_of_rollover_leaves_the_old_file_authoritative(world):
    world.user("lee")
    open_bet = world.bet("lee", 6700, t_start=T0 + 3600)
    old = db.current_week_file(world.db_dir)
    new = world.db_dir / db.week_filename(*_week_of(T0 + 7 * 86400))
    with pytest.raises(RuntimeError, match="simulated crash"):
        world.writes.call(rollover_job(world.db_dir, new, "NORMAL", fail_before_switch=True))
    assert db.current_week_file(world.db_dir) == old
    assert new.exists()  # half-made, ignored
    more = world.bet("lee", 6701, t_start=T0 + 3600)  # the old file keeps working
    assert world.status(more) == "confirmed"
    result = world.writes.call(rollover_job(world.db_dir, new, "NORMAL"))
    assert result.carried_bets == 2 and db.current_week_file(world.db_dir) == new
    assert check_file(old) == [] and check_file(new) == []
    assert {world.status(open_bet), world.status(more)} == {"confirmed"}


def test_history_pages_across_the_current_and_previous_weeks(tmp_path, redis_url):
    """Through the API: bets and ledger rows of last week are listed after this week's."""
    from app import create_app
    from app.config import Settings
    from tests.support.traders import Trader
    from workers import runtime

    s = Settings.from_env(
        {},
        data_dir=tmp_path / "d",
        redis_url=redis_url,
        dev_mode=True,
        rate_per_address=0,
        rate_per_ip=0,
        quote_max_age_s=30,  # a busy machine may stall the in-process sim feed for a moment
    )
    db.prepare_database(s.db_dir, time.time())
    app = create_app(s)
    runtime.start(app)
    try:
        from app.services import services

        svc = services(app)
        deadline = time.monotonic() + 10
        while svc.quotes.book is None and time.monotonic() < deadline:
            gevent.sleep(0.05)
        t = Trader(app.test_client(), s).login()
        t.deposit("50")
        _, grid, _ = t.call("GET", "/api/v1/grid")

        def placed(col: int, stake: str) -> str:
            status, body, _ = t.bet(f"{grid['columns'][col]}:{grid['rows'][10]}", stake)
            assert status == 202, body
            wait_until(lambda: t.call("GET", f"/api/v1/bets/{body['bet_id']}")[1]["status"] == "confirmed")
            return body["bet_id"]

        first = placed(5, "2")
        new = s.db_dir / db.week_filename(*db.iso_week(time.time() + 7 * 86400))
        svc.writes.call(rollover_job(s.db_dir, new, s.sqlite_synchronous))
        second = placed(6, "3")
        _, page1, _ = t.call("GET", "/api/v1/bets?limit=1")
        _, page2, _ = t.call("GET", f"/api/v1/bets?limit=1&cursor={page1['next_cursor']}")
        assert [b["bet_id"] for b in page1["bets"] + page2["bets"]] == [second, first]
        assert page2["next_cursor"] is None  # the copy in last week's file is not listed twice
        _, got, _ = t.call("GET", f"/api/v1/bets/{first}")
        assert got["status"] == "confirmed"
        entries, cursor = [], None
        while True:
            _, page, _ = t.call("GET", "/api/v1/ledger?limit=2" + (f"&cursor={cursor}" if cursor else ""))
            entries += [(e["ref_type"], e["amount"]) for e in page["entries"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert entries == [("bet", "-3"), ("opening", "48"), ("bet", "-2"), ("deposit", "50")]
        _, me, _ = t.call("GET", "/api/v1/me")
        assert me["balance"] == "45" and me["open_bets"] == 2
    finally:
        runtime.stop(app)


_CRASHY_RESOLVER = """
import sys, time
from gevent import monkey; monkey.patch_all()
import gevent, redis
from pathlib import Path
from app.storage import db
from app.storage.writes import WriteQueue
from workers.resolver import Resolver
from workers.sqlite_writer import SqliteWriter
db_dir, url, at_ms = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
writes = WriteQueue(1000)
gevent.spawn(SqliteWriter(writes, db_dir, synchronous="FULL", batch_max=1).run)
class Slow(Resolver):
    chunk = 25
    def _notify(self, rows):
        time.sleep(0.05)  # give the test time to kill us between two committed chunks
from app.bets.notify import BetNotifier
r = redis.Redis.from_url(url)
res = Slow(r, db.ReadPool(db_dir), writes, column_s=5, critical_s=10.0, notifier=BetNotifier(r).attach(writes))
print("ready", flush=True)
res.resolve_due(at_ms)
print("finished", flush=True)
"""


def test_kill_9_mid_resolution_then_rerun_pays_each_winner_once(world, redis_url):
    import os
    import signal
    import subprocess
    import sys

    from tests.support.servers import ROOT, wait_until

    for i in range(10):
        world.user(f"k{i}")
    bets = [world.bet(f"k{i % 10}", 6680 + i // 10) for i in range(400)]
    world.ticks((-0.5, 6_695_000), (2, 6_700_000), (5.5, 6_700_000))
    at_ms = int((T0 + COL + 2) * 1000)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHY_RESOLVER, str(world.db_dir), redis_url, str(at_ms)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )

    def settled():
        with world.reads.connection() as c:
            return c.execute("SELECT count(*) FROM bets WHERE status != 'confirmed'").fetchone()[0]

    try:
        wait_until(lambda: settled() >= 100, timeout=30, what="some chunks committed")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    partly = settled()
    assert 100 <= partly < 400, "the crash should land mid-window"
    world.resolver().resolve_due(at_ms)
    assert settled() == 400
    payouts = world.ledger("payout")
    winners = [b for b in bets if world.status(b) == "won"]
    assert sorted(b for b, _ in payouts) == sorted(winners)  # each winner exactly once
    assert check_file(db.current_week_file(world.db_dir)) == []


def test_integrity_check_names_a_tampered_ledger_row_and_a_double_payout(world):
    world.user("mo")
    won = world.bet("mo", 6700)
    world.ticks((-0.5, 6_700_500), (5.5, 6_700_500))
    _settle(world)
    path = db.current_week_file(world.db_dir)
    assert check_file(path) == []
    conn = db.connect(path)
    conn.execute("DROP TRIGGER ledger_no_update")  # what an attacker with file access could do
    conn.execute("UPDATE transaction_ledger SET amount = amount + 1 WHERE ref_type = 'payout'")
    conn.execute(
        "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at)"
        " SELECT user_id, amount, balance_after + amount, 'refund', ref_id, 0 FROM transaction_ledger"
        " WHERE ref_type = 'payout'"
    )
    conn.close()
    kinds = {v.kind for v in check_file(path)}
    assert {"chain_broken", "payout_missing", "orphan_payout", "orphan_refund", "balance_mismatch"} <= kinds
    assert any(won in v.detail for v in check_file(path))
