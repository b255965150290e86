"""House risk (SPEC §8b): exposure caps decided with the claim, liability released exactly once.

The in-process pinned desk (tests/pinned.py): real Redis and SQLite writer, a frozen clock and a pinned
quote book, so every figure below is exact. Traders are made directly (a user row with a deposit and a
Redis session), not through SIWE, so that 500 of them cost a second, not a minute.
"""

from __future__ import annotations

import secrets
from collections import Counter

import gevent
import orjson
import pytest
from eth_account import Account

from app.auth.sessions import create_session
from app.bets.claims import REJECT_LUA, release_column
from app.bets.notify import rejection_args
from app.bets.reconcile import reconcile_orphans
from app.bets.store import NewBet
from app.config import Settings
from app.keys import EXPOSURE_COLUMNS, PENDING_INDEX, exposure_bets_key, exposure_key
from app.ledger.store import credit
from app.units import MICRO, parse_money, payout_for
from tests.support.pinned import Desk, desk_fixture  # noqa: F401 - fixtures
from tests.support.traders import Trader

CELL_CAP = 1000  # money
COLUMN_CAP = 3000


@pytest.fixture(name="settings")
def settings_fixture(tmp_path, redis_url) -> Settings:
    return Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        dev_mode=True,
        rate_per_address=0,
        rate_per_ip=0,
        max_cell_payout=CELL_CAP * MICRO,
        max_column_payout=COLUMN_CAP * MICRO,
    )


def make_traders(desk: Desk, n: int, balance: int = 100 * MICRO) -> list[Trader]:
    """`n` traders with `balance` each: user rows and deposits in one writer job, sessions in Redis."""
    svc = desk.svc
    wallets = [Account.create() for _ in range(n)]
    now_ms = desk.clock.ms

    def job(conn) -> list[int]:
        ids = []
        for w in wallets:
            (uid,) = conn.execute(
                "INSERT INTO users (address, balance, created_at) VALUES (?, 0, ?) RETURNING id",
                (w.address.lower(), now_ms),
            ).fetchone()
            credit(conn, uid, balance, "deposit", f"test-{secrets.token_hex(8)}", now_ms)
            ids.append(uid)
        return ids

    ids = svc.writes.call(job, timeout=30)
    traders = []
    for w, uid in zip(wallets, ids, strict=True):
        t = Trader(desk.app.test_client(), svc.settings, wallet=w, key=w, clock=desk.clock)
        t.token, _ = create_session(
            svc.redis,
            address=w.address,
            session_key=None,
            user_id=uid,
            now_ms=now_ms,
            expires_at=now_ms + 3600_000,
        )
        traders.append(t)
    return traders


def liability(desk: Desk, cell: str) -> tuple[int, int]:
    """(the cell's, the column's) open potential payout in Redis, micro-units."""
    t_start, _, row = cell.partition(":")
    h = desk.svc.redis.hgetall(exposure_key(int(t_start)))
    return int(h.get(row.encode(), 0)), int(h.get(b"t", 0))


def counted_bets(desk: Desk, cell: str) -> dict[str, int]:
    t_start = int(cell.partition(":")[0])
    raw = desk.svc.redis.hgetall(exposure_bets_key(t_start))
    return {k.decode(): int(v.decode().partition(":")[2]) for k, v in raw.items()}


def wait_committed(desk: Desk, n: int, timeout: float = 30) -> None:
    with gevent.Timeout(timeout):
        while desk.svc.reads.run(lambda c: c.execute("SELECT count(*) FROM bets").fetchone()[0]) < n:
            gevent.sleep(0.02)


def test_500_concurrent_taps_from_distinct_traders_never_cross_the_cell_cap(desk: Desk) -> None:
    traders = make_traders(desk, 500)
    cell = desk.cell(col=1, row_offset=2)
    mult = desk.svc.quotes.book.quote(*map(int, cell.split(":")))
    payout = payout_for(10 * MICRO, mult)
    bodies = [t.bet_body(cell, "10") for t in traders]  # signed before the race, all 500 at once
    results: list[tuple[int, dict]] = [(0, {})] * 500

    def tap(i: int) -> None:
        status, body, _ = traders[i].call("POST", "/api/v1/bets", bodies[i])
        results[i] = (status, body)

    gevent.joinall([gevent.spawn(tap, i) for i in range(500)], raise_error=True)

    fits = CELL_CAP * MICRO // payout
    assert 0 < fits < 100, (mult, payout)  # the cap, not the balances, decides
    outcomes = Counter(s if s == 202 else (s, b["error"]["code"]) for s, b in results)
    assert outcomes == {202: fits, (422, "exposure_limit"): 500 - fits}, (outcomes, mult)
    refused = [b for s, b in results if s != 202]
    assert all(b["error"]["details"]["scope"] == "cell" for b in refused)
    cell_l, col_l = liability(desk, cell)
    assert cell_l == col_l == fits * payout <= CELL_CAP * MICRO
    # the refused claimed nothing: no cell, no pending record, not counted; their nonces hold only
    # the refusal's trace (another body with one of them would be 409)
    r = desk.svc.redis
    accepted_ids = {b["bet_id"] for s, b in results if s == 202}
    assert set(counted_bets(desk, cell)) == accepted_ids
    assert desk.nonces_with_a_bet() == fits
    assert len(list(r.scan_iter("tap:cell:*", count=1000))) == fits
    assert r.zcard(PENDING_INDEX) <= fits
    wait_committed(desk, fits)
    # a refused trader's very same signed body, retried after the cell was released, goes through
    loser = next(i for i, (s, _) in enumerate(results) if s != 202)
    release_column(r, int(cell.partition(":")[0]))
    status, body = traders[loser].call("POST", "/api/v1/bets", bodies[loser])[:2]
    assert status == 202, body


def test_the_column_cap_counts_every_cell_of_the_column(desk: Desk) -> None:
    traders = make_traders(desk, 80, balance=1000 * MICRO)
    cells = [desk.cell(col=2, row_offset=k) for k in range(-4, 4)]  # 8 cells × 1000 > 3000
    placed = 0
    codes: Counter[tuple[int, str, str]] = Counter()
    for i, t in enumerate(traders):
        status, body, _ = t.bet(cells[i % len(cells)], "50", ts=desk.clock.ms)
        if status == 202:
            placed += parse_money(body["payout"])
        else:
            codes[(status, body["error"]["code"], body["error"]["details"]["scope"])] += 1
    _, col_l = liability(desk, cells[0])
    assert col_l == placed <= COLUMN_CAP * MICRO
    assert codes[(422, "exposure_limit", "column")] > 0, codes
    assert set(codes) <= {(422, "exposure_limit", "column"), (422, "exposure_limit", "cell")}, codes
    assert all(liability(desk, c)[0] <= CELL_CAP * MICRO for c in cells)


def test_a_payout_above_the_cell_cap_is_refused_up_front_and_claims_nothing(desk: Desk) -> None:
    (t,) = make_traders(desk, 1, balance=5000 * MICRO)
    cell = desk.cell(col=0, row_offset=8)  # far: a large multiplier
    status, body, _ = t.bet(cell, "1000", ts=desk.clock.ms)
    assert status == 422 and body["error"]["code"] == "exposure_limit", body
    assert liability(desk, cell) == (0, 0)
    assert desk.nonces_with_a_bet() == 0
    assert list(desk.svc.redis.scan_iter("tap:cell:*")) == []


def test_a_rejected_bet_releases_its_liability_exactly_once(desk: Desk) -> None:
    (poor,) = make_traders(desk, 1, balance=5 * MICRO)
    (rich,) = make_traders(desk, 1)
    cell = desk.cell(col=1)
    status, body, _ = poor.bet(cell, "10", ts=desk.clock.ms)  # accepted; the writer refuses (funds)
    assert status == 202, body
    status, ok, _ = rich.bet(cell, "10", ts=desk.clock.ms)
    assert status == 202
    wait_committed(desk, 1)
    with gevent.Timeout(10):
        while body["bet_id"] in counted_bets(desk, cell):
            gevent.sleep(0.02)
    rich_payout = counted_bets(desk, cell)[ok["bet_id"]]
    assert liability(desk, cell) == (rich_payout, rich_payout)
    # the same rejection again (a retried notification, the reconciler): nothing more is released
    bet = NewBet(
        bet_id=body["bet_id"],
        user_id=0,
        address=poor.address,
        cell=cell,
        t_start=int(cell.split(":")[0]),
        row=int(cell.split(":")[1]),
        min_price=0,
        max_price=0,
        stake=10 * MICRO,
        multiplier=20_000,
        payout=20 * MICRO,
        nonce="x",
        placed_at=desk.clock.ms,
    )
    keys, args = rejection_args(bet, "insufficient_funds")
    script = desk.svc.redis.register_script(REJECT_LUA)
    assert script(keys=keys, args=args) == 0
    assert liability(desk, cell) == (rich_payout, rich_payout)


def test_an_abandoned_claim_releases_its_liability(desk: Desk) -> None:
    (t,) = make_traders(desk, 1)
    cell = desk.cell()
    desk.svc.writes.accepting = False  # the writer refuses the job after the claim
    try:
        status, body, _ = t.bet(cell, "10", ts=desk.clock.ms)
    finally:
        desk.svc.writes.accepting = True
    assert status == 503, body
    assert liability(desk, cell) == (0, 0)
    assert counted_bets(desk, cell) == {}


def test_the_reconciler_releases_the_liability_of_a_lost_bet(desk: Desk) -> None:
    (t,) = make_traders(desk, 1)
    cell = desk.cell()
    r = desk.svc.redis
    bet_id = "lostbet0000000000001"
    t_start, row = map(int, cell.split(":"))
    # a pending bet of a worker that died (no heartbeat), counted in the exposure
    rec = {
        "bet_id": bet_id,
        "address": t.address,
        "status": "pending",
        "cell": cell,
        "stake": 10 * MICRO,
        "multiplier": 20_000,
        "payout": 20 * MICRO,
        "placed_at": desk.clock.ms,
        "owner": "deadbeef",
    }
    r.set(f"tap:bet:{bet_id}", orjson.dumps(rec))
    r.zadd(PENDING_INDEX, {bet_id: desk.clock.ms})
    r.hset(exposure_key(t_start), mapping={str(row): 20 * MICRO, "t": 20 * MICRO})
    r.hset(exposure_bets_key(t_start), bet_id, f"{row}:{20 * MICRO}")
    out = reconcile_orphans(desk.svc, desk.clock.ms, instance="me")
    assert out.rejected == [bet_id]
    assert liability(desk, cell) == (0, 0)
    assert reconcile_orphans(desk.svc, desk.clock.ms, instance="me").rejected == []
    assert liability(desk, cell) == (0, 0)


def test_settlement_releases_the_column_once(desk: Desk) -> None:
    from app.bets.resolution import Outcome

    (t,) = make_traders(desk, 1)
    cell = desk.cell()
    status, _, _ = t.bet(cell, "10", ts=desk.clock.ms)
    assert status == 202
    wait_committed(desk, 1)
    t_start = int(cell.split(":")[0])
    assert liability(desk, cell)[0] > 0 and desk.svc.redis.zscore(EXPOSURE_COLUMNS, t_start) is not None
    res = desk.resolver()
    now_ms = (t_start + 10) * 1000
    assert res.settle_window(t_start, Outcome(void=False, lo=1, hi=2), now_ms) == 1
    assert liability(desk, cell) == (0, 0) and counted_bets(desk, cell) == {}
    assert desk.svc.redis.zscore(EXPOSURE_COLUMNS, t_start) is None
    assert res.settle_window(t_start, Outcome(void=False, lo=1, hi=2), now_ms) == 0  # again: nothing
    # the house's day: one lost bet of 10
    day = desk.svc.reads.run(lambda c: c.execute("SELECT bets, won, staked, paid FROM house_days").fetchall())
    assert day == [(1, 0, 10 * MICRO, 0)]


def test_the_grid_publisher_shades_by_the_live_liability_and_the_tap_pays_the_shaded_quote(
    desk: Desk,
) -> None:
    from app.market.quotes import format_multiplier, grid_message
    from workers.grid_publisher import GridPublisher

    svc, s = desk.svc, desk.svc.settings
    pub = GridPublisher(
        svc.redis,
        svc.grid,
        svc.quotes,
        svc.feed,
        svc.fanout,
        house_edge=s.house_edge,
        prior_vol=0.6,
        cell_cap=s.max_cell_payout,
        column_cap=s.max_column_payout,
    )
    pinned = svc.quotes.book  # the pinned, unshaded book
    traders = make_traders(desk, 30)
    cell = desk.cell(col=1, row_offset=2)
    t_start, row = map(int, cell.split(":"))
    base = svc.quotes.book.quote(t_start, row)
    assert base is not None
    for t in traders[:20]:  # fill the cell part of the way
        status, body, _ = t.bet(cell, "10", ts=desk.clock.ms)
        if status != 202:
            break
    cell_l, _ = liability(desk, cell)
    used = cell_l / s.max_cell_payout
    assert 0.2 < used <= 1.0
    book = pub.reshade(pinned)
    assert book is svc.quotes.book
    shaded = book.quote(t_start, row)
    assert shaded == max(10_100, int(base * (1 - 0.5 * used**2))) < base
    msg = grid_message(book, desk.clock.ms)
    shown = msg["quotes"][msg["columns"].index(t_start)][msg["rows"].index(row)]
    assert shown == format_multiplier(shaded)
    # a trader who still asks for the unshaded quote is refused; one who accepts the grid's gets it
    late = traders[25]
    status, body, _ = late.bet(cell, "1", min_multiplier=format_multiplier(base), ts=desk.clock.ms)
    assert status == 422 and body["error"]["code"] == "multiplier_below_minimum", body
    status, body, _ = late.bet(cell, "1", min_multiplier=shown, ts=desk.clock.ms)
    assert status == 202 and body["multiplier"] == shown, body


def test_the_caps_hold_for_taps_over_the_websocket_too(desk: Desk) -> None:
    """The socket's `bet` message goes through the same claim: concurrent taps from 200 sockets."""
    from app.auth.sessions import lookup_session
    from app.auth.state import auth_state
    from app.realtime.taps import TapSocket

    svc = desk.svc
    traders = make_traders(desk, 200)
    cell = desk.cell(col=3, row_offset=-2)
    with desk.app.app_context():
        limits = auth_state().limits
    answers: dict[str, dict] = {}
    sockets = []
    for i, t in enumerate(traders):
        session = lookup_session(svc.redis, t.token, desk.clock.ms)
        assert session is not None
        s = TapSocket(
            svc,
            svc.fanout.register(),
            session,
            limits,
            send=lambda msg, i=i: answers.__setitem__(str(i), msg),
        )
        sockets.append((s, orjson.dumps({"type": "bet", "req": f"r{i}", **t.bet_body(cell, "10")})))
    gevent.joinall([gevent.spawn(s.handle, raw) for s, raw in sockets], raise_error=True)
    kinds = Counter(
        a["type"] if a["type"] == "bet:accepted" else (a["status"], a["error"]["code"])
        for a in answers.values()
    )
    payout = counted_bets(desk, cell)
    assert kinds[(422, "exposure_limit")] > 0 and kinds["bet:accepted"] == len(payout) > 0, kinds
    assert set(kinds) <= {"bet:accepted", (422, "exposure_limit")}, kinds
    assert liability(desk, cell)[0] == sum(payout.values()) <= CELL_CAP * MICRO
    assert desk.nonces_with_a_bet() == len(payout)


def test_the_caps_are_money_settings_checked_at_start(tmp_path) -> None:
    from app.config import ConfigError

    s = Settings.from_env({"TAP_MAX_CELL_PAYOUT": "2500.5", "TAP_MAX_COLUMN_PAYOUT": "10000"})
    assert (s.max_cell_payout, s.max_column_payout) == (2_500_500_000, 10_000 * MICRO)
    d = Settings.from_env({})
    assert (d.max_cell_payout, d.max_column_payout) == (50_000 * MICRO, 1_000_000 * MICRO)
    for env, name in (
        ({"TAP_MAX_CELL_PAYOUT": "0"}, "TAP_MAX_CELL_PAYOUT"),
        ({"TAP_MAX_CELL_PAYOUT": "1e5"}, "TAP_MAX_CELL_PAYOUT"),
        ({"TAP_MAX_COLUMN_PAYOUT": "-1"}, "TAP_MAX_COLUMN_PAYOUT"),
        ({"TAP_MAX_CELL_PAYOUT": "20", "TAP_MAX_COLUMN_PAYOUT": "10"}, "TAP_MAX_CELL_PAYOUT"),
    ):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env(env)


def test_the_console_index_of_exposed_columns_forgets_columns_whose_keys_expired(desk: Desk) -> None:
    from app.bets.claims import EXPOSURE_GRACE_S, trim_exposure_index

    r = desk.svc.redis
    now = int(desk.clock())
    old, recent = now - EXPOSURE_GRACE_S - 7200, now - 60
    r.zadd(EXPOSURE_COLUMNS, {str(old): old, str(recent): recent})
    trim_exposure_index(r, now)
    assert [int(m) for m in r.zrange(EXPOSURE_COLUMNS, 0, -1)] == [recent]
