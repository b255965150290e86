"""Issue 10 item 6: a tap is refused when the quote book, or the price behind it, is older than
TAP_QUOTE_MAX_AGE_S (default 2 s) — in DEGRADED the book is rebuilt every second from the last price,
so its build time alone says nothing about the price."""

from __future__ import annotations

from app.market.feed import FeedMonitor
from app.market.prices import Tick
from tests.support.auth import FakeClock
from tests.support.pinned import PRICE, Desk, desk_fixture, settings_fixture  # noqa: F401 - fixtures
from workers.grid_publisher import GridPublisher


def _tap(desk: Desk, trader, cell: str):
    return trader.bet(cell, "1", "1.01", ts=desk.clock.ms)


def test_fresh_book_is_accepted(desk: Desk) -> None:
    t = desk.trader()
    desk.pin_book(age_s=0.5, tick_age_s=1.0)
    status, body, _ = _tap(desk, t, desk.cell())
    assert status == 202, body


def test_book_built_from_an_old_price_is_refused(desk: Desk) -> None:
    """DEGRADED: the book was rebuilt just now, but from a tick 2.5 s old."""
    t = desk.trader()
    desk.pin_book(age_s=0.0, tick_age_s=2.5)
    assert desk.svc.feed.betting_open()
    status, body, headers = _tap(desk, t, desk.cell())
    assert status == 503, body
    assert body["error"]["code"] == "quotes_stale"
    assert int(headers["Retry-After"]) >= 1


def test_book_not_rebuilt_is_refused(desk: Desk) -> None:
    """A stalled grid publisher: the book (and its tick) are 3 s old."""
    t = desk.trader()
    desk.pin_book(age_s=3.0, tick_age_s=0.0)
    status, body, _ = _tap(desk, t, desk.cell())
    assert status == 503 and body["error"]["code"] == "quotes_stale", body


def test_refused_stale_tap_leaves_no_claim(desk: Desk) -> None:
    """The same signed body is judged afresh once quotes are fresh again (like betting_suspended)."""
    t = desk.trader()
    desk.pin_book(age_s=0.0, tick_age_s=5.0)
    body = t.bet_body(desk.cell(), "1", ts=desk.clock.ms)
    assert t.call("POST", "/api/v1/bets", body)[0] == 503
    desk.pin_book()
    status, out, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 202, out


def test_a_forward_step_of_the_wall_clock_leaves_a_fresh_price_fresh(desk: Desk) -> None:
    """Ticks are stamped on the aggregator's steady clock: the wall clock read at its start, then
    advanced by the monotonic clock. After the machine's wall clock steps 5 s forward (an NTP step, a
    VM restored from a snapshot), a tick that has just arrived carries a `ts` 5 s behind the wall
    clock. The published book counts the price's age from its arrival (monotonic), so taps are taken;
    and once that price has waited longer than TAP_QUOTE_MAX_AGE_S, they are refused as before."""
    svc, s = desk.svc, desk.svc.settings
    mono = FakeClock(start=1_000.0)
    svc.feed = FeedMonitor(s.feed_degraded_s, s.feed_critical_s, s.feed_recovery_s, clock=mono)
    svc.quotes.sigma = desk.pin_book().sigma
    pub = GridPublisher(
        svc.redis, svc.grid, svc.quotes, svc.feed, svc.fanout, house_edge=s.house_edge, prior_vol=0.6,
        clock=desk.clock,
    )  # fmt: skip
    t = desk.trader()
    svc.feed.record(Tick(price=PRICE, ts=desk.clock.ms - 5_000))  # arrived just now, stamped 5 s "ago"
    assert pub.rebuild() is svc.quotes.book
    status, body, _ = _tap(desk, t, desk.cell())
    assert status == 202, body
    mono.advance(2.5)  # no tick since: DEGRADED rebuilds from the same price, still betting
    desk.clock.advance(2.5)
    pub.rebuild()
    assert svc.feed.betting_open()
    status, body, _ = _tap(desk, t, desk.cell())
    assert status == 503 and body["error"]["code"] == "quotes_stale", body


def test_max_age_is_a_setting(tmp_path, redis_url) -> None:
    from app.config import Settings

    assert Settings.from_env({}, data_dir=tmp_path, redis_url=redis_url).quote_max_age_s == 2.0
    s = Settings.from_env({"TAP_QUOTE_MAX_AGE_S": "0.5"}, data_dir=tmp_path, redis_url=redis_url)
    assert s.quote_max_age_s == 0.5
