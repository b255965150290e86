"""The machine's wall clock stepped after the price feed started (an NTP step, a VM restored from a
snapshot): the ticks keep the exchanges' time, the bet path reads the wall clock. Nothing the step
does may sell a window whose outcome the price stream already shows."""

from __future__ import annotations

from app.keys import PRICE_HISTORY_KEY
from app.market.prices import Tick
from app.market.quotes import estimate_sigma
from tests.support.pinned import PRICE, Desk, desk_fixture, settings_fixture  # noqa: F401 - fixtures
from workers.grid_publisher import GridPublisher


def _tap(desk: Desk, trader, cell: str):
    return trader.bet(cell, "1", "1.01", ts=desk.clock.ms)


def _cell_at(desk: Desk, now_s: float, col: int = 0) -> str:
    cols = list(desk.svc.grid.placeable_columns(now_s))
    return f"{cols[col]}:{desk.svc.grid.row_of(desk.svc.quotes.book.price)}"


def test_a_wall_clock_stepped_back_does_not_sell_a_window_the_prices_have_opened(desk: Desk) -> None:
    """Wall clock 11 s behind the ticks: the first column placeable by the wall clock starts at most
    10 s after it, so the price stream is already inside that window (or past it)."""
    t = desk.trader()
    desk.pin_book(tick_age_s=-11.0)  # the newest tick is 11 s later than the wall clock says
    wall = desk.clock()
    cell = _cell_at(desk, wall)
    assert int(cell.split(":")[0]) <= wall + 11  # the window has opened on the prices' clock
    status, body, _ = _tap(desk, t, cell)
    assert status == 422 and body["error"]["code"] == "cell_too_soon", body


def test_after_a_step_back_the_lead_is_counted_on_the_prices_clock(desk: Desk) -> None:
    """A step of a few seconds: a column placeable by the wall clock, not yet by the prices' time, is
    refused; the first column placeable on both clocks is sold as usual."""
    t = desk.trader()
    step = desk.svc.grid.column_seconds - (desk.clock() % desk.svc.grid.column_seconds) + 0.5
    desk.pin_book(tick_age_s=-step)  # the prices' time is past the next column boundary
    wall, prices = desk.clock(), desk.clock() + step
    assert desk.svc.grid.placeable_columns(wall)[0] < desk.svc.grid.placeable_columns(prices)[0]
    status, body, _ = _tap(desk, t, _cell_at(desk, wall))
    assert status == 422 and body["error"]["code"] == "cell_too_soon", body
    status, body, _ = _tap(desk, t, _cell_at(desk, prices))
    assert status == 202, body


def test_ticks_behind_the_wall_clock_change_nothing(desk: Desk) -> None:
    """The usual case (ticks arrive a moment after their exchange time): the wall clock decides."""
    t = desk.trader()
    desk.pin_book(tick_age_s=1.0)
    status, body, _ = _tap(desk, t, _cell_at(desk, desk.clock()))
    assert status == 202, body


def test_after_a_step_forward_the_volatility_still_comes_from_the_recent_ticks(desk: Desk) -> None:
    """Wall clock 10 minutes ahead of the ticks (someone set it forward; the feed's steady clock kept
    the exchanges' time, so quotes still flow): the volatility window is the last five minutes of the
    price stream, not the five minutes before the wall clock, which hold no tick at all (the quotes
    were then priced on the prior volatility for as long as the step lasted)."""
    svc, s = desk.svc, desk.svc.settings
    newest_ms = desk.clock.ms - 600_000
    ticks = [(newest_ms - 250 * i, PRICE + (40 if i % 2 else 0) + 3 * (i % 7)) for i in range(200, -1, -1)]
    svc.redis.zadd(PRICE_HISTORY_KEY, {f"{ts}:{price}": ts for ts, price in ticks})
    svc.feed.record(Tick(price=ticks[-1][1], ts=newest_ms))
    prior = 0.6
    pub = GridPublisher(
        svc.redis, svc.grid, svc.quotes, svc.feed, svc.fanout, house_edge=s.house_edge, prior_vol=prior,
        clock=desk.clock,
    )  # fmt: skip
    pub.refresh_sigma()
    assert svc.quotes.sigma == estimate_sigma(ticks, prior)[0]
    assert svc.quotes.sigma != estimate_sigma([], prior)[0]  # not the prior


def test_the_workers_are_wired_to_the_clocks_these_rules_need(desk: Desk, monkeypatch) -> None:
    """The tests above inject each clock; this checks the process's own wiring (workers.runtime): the
    grid publisher builds books on the app's wall clock (the bet path's), while the resolver and the
    aggregator share the feed's steady clock, which a later step of the wall clock does not move."""
    import time

    from app.services import set_clock
    from workers.aggregator import PriceAggregator
    from workers.resolver import Resolver
    from workers.runtime import build_workers

    built = build_workers(desk.app)  # built, not started
    pub = next(w for w in built if isinstance(w, GridPublisher))
    res = next(w for w in built if isinstance(w, Resolver))
    agg = next(w for w in built if isinstance(w, PriceAggregator))
    real = time.time()
    stepped = real + 600  # the wall clock set 10 minutes forward after the start
    set_clock(desk.app, lambda: stepped)
    assert pub.clock() == stepped
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: stepped)  # the machine's clock itself, for the workers' defaults
        resolver_now, steady = res.now_ms(), agg.clock.wall_ms()
    assert abs(resolver_now - steady) < 1_000
    assert abs(steady - real * 1000) < 60_000  # not the stepped clock
