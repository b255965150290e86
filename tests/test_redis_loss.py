"""Redis losing its data while the app keeps running (a restart without persistence, a `FLUSHALL`,
the last second of the append-only file, a disaster-recovery restore): the bet state it held is
rebuilt from SQLite before another tap is accepted (app.bets.recovery).

The pinned desk (tests/support/pinned.py): real Redis and SQLite writer, a frozen clock. The loss is
`FLUSHALL` on the live Redis; the worker's once-a-second loop is `ConsoleWorker.step`.
"""

from __future__ import annotations

import time

import gevent
import orjson
import pytest
import redis

from app.auth.sessions import lookup_session
from app.auth.state import auth_state
from app.bets.reconcile import beat
from app.bets.recovery import DRAIN_S, OpenBet, Recovery
from app.keys import EXPOSURE_COLUMNS, REDIS_STATE_KEY, events_key, exposure_bets_key, exposure_key
from app.realtime.taps import TapSocket
from app.units import MICRO, MULT_ONE, parse_money, payout_for
from tests.support.pinned import Desk, desk_fixture  # noqa: F401 - fixtures
from tests.support.traders import Trader
from tests.test_house_risk import (  # noqa: F401 - the settings fixture: the same caps
    CELL_CAP,
    make_traders,
    settings_fixture,
    wait_committed,
)
from workers import runtime
from workers.console import ConsoleWorker


def lose_redis(desk: Desk, traders: list[Trader]) -> ConsoleWorker:
    """FLUSHALL, then what a trader does: sign in again (the sessions went with the data)."""
    desk.svc.redis.flushall()
    for t in traders:
        t.login()
    return ConsoleWorker(desk.svc, None, (), wall=desk.clock)


def rebuild(desk: Desk, worker: ConsoleWorker) -> None:
    """The worker's loop notices the loss, waits for every bet queued before it, and rebuilds."""
    worker.step()
    desk.clock.advance(DRAIN_S)
    desk.pin_book()
    worker.step()
    assert desk.svc.redis.exists(REDIS_STATE_KEY)


def open_payouts(desk: Desk) -> int:
    return desk.svc.reads.run(
        lambda c: c.execute(
            "SELECT coalesce(sum(payout), 0) FROM bets WHERE status = 'confirmed'"
        ).fetchone()[0]
    )


def test_open_liability_that_redis_lost_still_counts_against_the_caps(desk: Desk) -> None:
    """Before: after a FLUSHALL the exposure counters started from zero while the bets were still open
    in SQLite, so the same cell took a second cap's worth of payouts (the house's risk doubled)."""
    traders = make_traders(desk, 30, balance=1000 * MICRO)
    cell = desk.cell(col=5)  # still placeable after the rebuild's wait
    placed = 0
    for t in traders:
        status, body, _ = t.bet(cell, "50", ts=desk.clock.ms)
        if status != 202:
            assert body["error"]["code"] == "exposure_limit", body
            break
        placed += 1
    wait_committed(desk, placed)
    full = open_payouts(desk)
    assert 0 < full <= CELL_CAP * MICRO

    r = desk.svc.redis
    t_start = int(cell.partition(":")[0])
    built = {k: r.hgetall(k) for k in (exposure_key(t_start), exposure_bets_key(t_start))}
    columns = r.zrange(EXPOSURE_COLUMNS, 0, -1, withscores=True)
    claims = {k: r.get(k) for k in r.scan_iter("tap:cell:*")}
    worker = lose_redis(desk, traders)
    worker.step()
    status, body, _ = traders[-1].bet(cell, "50", ts=desk.clock.ms)  # refused while nothing is known
    assert status == 503 and body["error"]["code"] == "recovering", body
    desk.clock.advance(DRAIN_S)
    book = desk.pin_book()
    worker.step()
    # what the claims had built, exactly
    assert {k: r.hgetall(k) for k in built} == built
    assert r.zrange(EXPOSURE_COLUMNS, 0, -1, withscores=True) == columns
    assert {k: r.get(k) for k in r.scan_iter("tap:cell:*")} == claims

    # The smallest stake whose payout is above the room left (the multiplier moved with the clock: a
    # fixed stake's payout may fit the room, and an accepted bet would then be right).
    room = CELL_CAP * MICRO - full
    multiplier = book.quote(t_start, int(cell.partition(":")[2]))
    assert multiplier is not None
    stake = -(-(room + 1) * MULT_ONE // multiplier // MICRO)  # whole units, rounded up
    assert room < payout_for(stake * MICRO, multiplier) <= CELL_CAP * MICRO  # fits an empty cell
    status, body, _ = traders[-1].bet(cell, str(stake), ts=desk.clock.ms)
    assert status == 422 and body["error"]["code"] == "exposure_limit", body
    assert body["error"]["details"]["scope"] == "cell"
    assert parse_money(body["error"]["details"]["available_payout"]) == room
    assert open_payouts(desk) == full


def test_a_tap_before_the_rebuild_is_refused_503_recovering_with_retry_after(desk: Desk) -> None:
    (t,) = make_traders(desk, 1)
    worker = lose_redis(desk, [t])
    worker.step()
    resp = t.client.post(
        "/api/v1/bets", json=t.bet_body(desk.cell(col=2), "1"), headers={"Authorization": f"Bearer {t.token}"}
    )
    assert resp.status_code == 503 and resp.json["error"]["code"] == "recovering", resp.json
    assert resp.headers["Retry-After"] == "5"
    # an operator's probe says why taps are refused
    bet_state = t.client.get("/readyz").get_json()["checks"]["bet_state"]
    assert (bet_state["ok"], bet_state["rebuilt_at"]) == (False, None), bet_state


def test_a_retry_of_a_bet_accepted_before_the_loss_gets_that_bet_not_a_second(desk: Desk) -> None:
    """Before: the nonce and the cell claim went with Redis, so the same signed body (still within its
    30 s) was accepted again as a new bet (202, another bet id), which SQLite's one-bet-per-cell then
    rejected: the trader was told its tap failed while its first bet stood."""
    (t,) = make_traders(desk, 1)
    body = t.bet_body(desk.cell(col=5), "10", ts=desk.clock.ms)
    status, first, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 202, first
    wait_committed(desk, 1)
    rebuild(desk, lose_redis(desk, [t]))

    status, again, _ = t.call("POST", "/api/v1/bets", body)  # 12 s later: within the 30 s of its ts
    assert status == 202 and again["bet_id"] == first["bet_id"], again
    assert again["status"] == "confirmed"
    other = t.bet_body(body["cell"], "11", nonce=body["nonce"], ts=body["ts"])  # same nonce, other body
    status, out, _ = t.call("POST", "/api/v1/bets", other)
    assert status == 409 and out["error"]["code"] == "nonce_conflict", out
    fresh = t.bet_body(body["cell"], "10", ts=desk.clock.ms)  # a new tap on the same cell
    status, out, _ = t.call("POST", "/api/v1/bets", fresh)
    assert status == 409 and out["error"]["code"] == "duplicate_cell", out
    gevent.sleep(0.2)
    count = desk.svc.reads.run(lambda c: c.execute("SELECT count(*) FROM bets").fetchone()[0])
    assert count == 1


def test_a_retry_refused_while_recovering_still_gets_its_bet_after_the_rebuild(desk: Desk) -> None:
    """A client retries its tap while the state is being rebuilt (503 `recovering`, Retry-After 5): that
    refusal leaves its trace on the nonce. The rebuild did not overwrite it (it set nonces only where
    none was), so the next retry was judged afresh and refused as a second bet on its own cell."""
    (t,) = make_traders(desk, 1)
    body = t.bet_body(desk.cell(col=5), "10", ts=desk.clock.ms)
    status, first, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 202, first
    wait_committed(desk, 1)
    worker = lose_redis(desk, [t])
    worker.step()
    status, out, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 503 and out["error"]["code"] == "recovering", out
    desk.clock.advance(DRAIN_S)
    desk.pin_book()
    worker.step()
    status, again, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 202 and again["bet_id"] == first["bet_id"], again


def test_a_redis_restarted_since_the_rebuild_is_caught_by_its_run_id(desk: Desk) -> None:
    """The last second of the append-only file lost in a crash: the key survives, but names the Redis
    server that built the state. A different server's key means the state may miss that second."""
    (t,) = make_traders(desk, 1)
    r = desk.svc.redis
    r.set(REDIS_STATE_KEY, "0123456789abcdef|1")  # what a restarted Redis holds: another run_id
    worker = ConsoleWorker(desk.svc, None, (), wall=desk.clock)
    worker.step()
    assert not r.exists(REDIS_STATE_KEY)
    status, body, _ = t.bet(desk.cell(col=5), "1", ts=desk.clock.ms)
    assert status == 503 and body["error"]["code"] == "recovering", body
    desk.clock.advance(DRAIN_S)
    desk.pin_book()
    worker.step()
    status, body, _ = t.bet(desk.cell(col=5), "1", ts=desk.clock.ms)
    assert status == 202, body


def _socket(desk: Desk, trader: Trader) -> tuple[TapSocket, list[dict]]:
    session = lookup_session(desk.svc.redis, trader.token, desk.clock.ms)
    assert session is not None
    with desk.app.app_context():
        limits = auth_state().limits
    answers: list[dict] = []
    return TapSocket(desk.svc, desk.svc.fanout.register(), session, limits, send=answers.append), answers


def _tap_and_hear(desk: Desk, t: Trader, col: int) -> tuple[TapSocket, list[dict], bytes]:
    """A tap over a socket of `t`'s, committed, and the id of the newest event in `t`'s Stream."""
    sock, answers = _socket(desk, t)
    sock.handle(
        orjson.dumps({"type": "bet", "req": "a", **t.bet_body(desk.cell(col=col), "1", ts=desk.clock.ms)})
    )
    assert answers[-1]["type"] == "bet:accepted", answers[-1]
    wait_committed(desk, 1)
    r = desk.svc.redis
    with gevent.Timeout(10):
        while not r.xlen(events_key(t.address)):
            gevent.sleep(0.02)
    ((seen, _),) = r.xrevrange(events_key(t.address), count=1)
    return sock, answers, seen


def test_a_resume_from_before_the_loss_says_it_is_incomplete(desk: Desk) -> None:
    """Before: the trader's event Stream went with the data; a socket resuming from an id it saw before
    the loss was told `complete: true` (no Stream, or a new one with nothing trimmed) and never re-read
    its bets, though events after its id were lost."""
    (t,) = make_traders(desk, 1)
    _, _, seen = _tap_and_hear(desk, t, col=5)
    rebuild(desk, lose_redis(desk, [t]))

    sock, answers = _socket(desk, t)
    sock.handle(
        orjson.dumps({"type": "bet", "req": "b", **t.bet_body(desk.cell(col=4), "1", ts=desk.clock.ms)})
    )
    assert answers[-1]["type"] == "bet:accepted", answers[-1]
    wait_committed(desk, 2)
    r = desk.svc.redis
    with gevent.Timeout(10):
        while not r.xlen(events_key(t.address)):
            gevent.sleep(0.02)
    sock.handle(orjson.dumps({"type": "resume", "after": seen.decode()}))
    resumed = next(a for a in answers if a["type"] == "resumed")
    assert resumed["complete"] is False, resumed


def test_a_worker_starting_while_another_runs_waits_for_its_queued_bets(desk: Desk) -> None:
    """A SIGHUP reload starts the new worker while the old one still drains its write queue. Before: a
    new worker that found the state missing rebuilt it at once ("nothing of this process is in
    flight"), so a bet in the old worker's queue, claimed before the loss and committed after that
    rebuild, was never counted against the caps. Another worker's heartbeat now means: wait as the
    running workers do."""
    (t,) = make_traders(desk, 1)
    r = desk.svc.redis
    lose_redis(desk, [t])
    beat(r, "the-old-worker")  # its bet reconciler beats again within a second of the loss
    runtime.recover_at_start(desk.app)
    assert not r.exists(REDIS_STATE_KEY)
    status, body, _ = t.bet(desk.cell(col=5), "1", ts=desk.clock.ms)
    assert status == 503 and body["error"]["code"] == "recovering", body

    worker = ConsoleWorker(desk.svc, None, (), wall=desk.clock)
    desk.clock.advance(DRAIN_S)
    desk.pin_book()
    worker.step()
    status, body, _ = t.bet(desk.cell(col=5), "1", ts=desk.clock.ms)
    assert status == 202, body


def test_a_worker_starting_alone_rebuilds_at_once(desk: Desk) -> None:
    """Nothing else runs (a first start, the whole machine restarted): no wait."""
    (t,) = make_traders(desk, 1)
    lose_redis(desk, [t])
    runtime.recover_at_start(desk.app)
    status, body, _ = t.bet(desk.cell(col=5), "1", ts=desk.clock.ms)
    assert status == 202, body


def test_a_resume_from_an_event_after_the_rebuild_is_complete(desk: Desk) -> None:
    """The rebuild's time is compared with event ids, which Redis stamps with its own clock. Before: the
    rebuild was stamped with the app's clock, so an app clock ahead of Redis's (here: frozen, then moved
    on by the drain) made a resume from an event sent after the rebuild `complete: false` as well."""
    (t,) = make_traders(desk, 1)
    rebuild(desk, lose_redis(desk, [t]))
    sock, answers, seen = _tap_and_hear(desk, t, col=4)
    sock.handle(orjson.dumps({"type": "resume", "after": seen.decode()}))
    resumed = next(a for a in answers if a["type"] == "resumed")
    assert resumed["complete"] is True, resumed


def test_a_redis_user_without_info_gets_an_error_that_says_what_to_allow(redis_server) -> None:
    """The run_id comes from INFO: a Redis user whose ACL leaves INFO out could never mark the state
    known, and every tap stayed 503 `recovering` with only NoPermissionError in the log, which named
    neither the consequence nor the fix."""
    admin = redis_server.client()
    admin.execute_command("ACL", "SETUSER", "tap-noinfo", "on", ">pw", "~*", "&*", "+@all", "-info")
    try:
        url = redis_server.url.replace("redis://", "redis://tap-noinfo:pw@", 1)
        recovery = Recovery(redis.Redis.from_url(url), lambda _since: [], 5)
        with pytest.raises(redis.RedisError, match=r"every tap is refused .*ACL \+info"):
            recovery.check(1_700_000_000_000, at_start=True)
    finally:
        admin.execute_command("ACL", "DELUSER", "tap-noinfo")


def _many_open_bets(n: int, now_ms: int) -> list[OpenBet]:
    t0 = now_ms // 1000 // 5 * 5 + 60
    return [
        OpenBet(f"b{i:08d}", f"0x{i:040x}", t0 + 5 * (i % 20), i % 30, 2 * MICRO, f"n{i}", now_ms - 1000)
        for i in range(n)
    ]


def test_a_rebuild_of_many_open_bets_lets_the_worker_serve_meanwhile(redis_server) -> None:
    """Before: one MULTI of every open bet's commands, built on the hub: 100,000 open bets (a busy
    minute) froze every socket of the worker for seconds, and Redis for a second at its EXEC."""
    r = redis_server.client()
    r.flushall()
    now_ms = int(r.time()[0]) * 1000
    bets = _many_open_bets(50_000, now_ms)
    gaps: list[float] = []

    def ticker() -> None:
        last = time.monotonic()
        while True:
            gevent.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    g = gevent.spawn(ticker)
    try:
        assert Recovery(r, lambda _since: bets, 5).rebuild(str(r.info("server")["run_id"]), now_ms)
    finally:
        g.kill()
    assert len(gaps) > 10 and max(gaps) < 0.5, (len(gaps), max(gaps, default=0))
    t0 = bets[0].t_start
    assert int(r.hget(exposure_key(t0), "t")) == 2 * MICRO * 50_000 // 20
    assert r.hlen(exposure_bets_key(t0)) == 50_000 // 20


def test_two_workers_rebuilding_at_once_count_each_bet_once(redis_server) -> None:
    r = redis_server.client()
    r.flushall()
    now_ms = int(r.time()[0]) * 1000
    bets = _many_open_bets(5_000, now_ms)
    run_id = str(r.info("server")["run_id"])
    a, b = Recovery(r, lambda _since: bets, 5), Recovery(r, lambda _since: bets, 5)
    done = [gevent.spawn(a.rebuild, run_id, now_ms), gevent.spawn(b.rebuild, run_id, now_ms)]
    gevent.joinall(done, raise_error=True)
    assert sorted(g.value for g in done) == [False, True]
    t0 = bets[0].t_start
    assert int(r.hget(exposure_key(t0), "t")) == 2 * MICRO * 5_000 // 20
    assert r.exists(REDIS_STATE_KEY)


def test_a_retry_of_a_bet_settled_before_the_rebuild_gets_that_bet(desk: Desk) -> None:
    """A bet on a near column can be settled within its nonce's 90 s. Before: only open bets' nonces
    were rebuilt, so a retry of a settled one (still within the 30 s of its ts) was judged afresh and
    refused (its column had started) instead of getting its bet (SPEC §6: a retry returns the same bet)."""
    from app.bets.resolution import Outcome

    (t,) = make_traders(desk, 1)
    body = t.bet_body(desk.cell(), "10", ts=desk.clock.ms)
    status, first, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 202, first
    wait_committed(desk, 1)
    t_start = int(body["cell"].partition(":")[0])
    assert desk.resolver().settle_window(t_start, Outcome(void=False, lo=1, hi=2), (t_start + 10) * 1000) == 1
    rebuild(desk, lose_redis(desk, [t]))

    status, again, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 202 and again["bet_id"] == first["bet_id"], again
    assert again["status"] == "lost"
