"""Normalisation: median of fresh sources, outliers, freshness on both clocks, fenced publishing."""

import gevent
import pytest
import redis

from app.keys import FEED_LEASE_KEY, PRICE_HISTORY_KEY
from app.market.prices import FencedPublisher, Tick, last_tick, publish_tick, ticks_since
from app.metrics import Metrics
from tests.support.waiting import record_results, wait_until
from workers.aggregator import LEASE_TTL_MS, PriceAggregator, Quote, SteadyClock

T0_MS = 1_763_711_990_000


class Clocks:
    """Injected monotonic and wall clocks; the wall one can jump."""

    def __init__(self) -> None:
        self.mono_t = 500.0
        self.wall_t = T0_MS / 1000

    def mono(self) -> float:
        return self.mono_t

    def wall(self) -> float:
        return self.wall_t

    def advance(self, dt: float) -> None:
        self.mono_t += dt
        self.wall_t += dt


@pytest.fixture
def clocks():
    return Clocks()


@pytest.fixture
def r(redis_url):
    return redis.Redis.from_url(redis_url)


def make(r, clocks, metrics=None, **kw):
    kw.setdefault("fresh_s", 2.0)
    kw.setdefault("max_deviation", 100)  # 1 %
    kw.setdefault("publish_ms", 250)
    return PriceAggregator(r, metrics=metrics, clock=SteadyClock(clocks.mono, clocks.wall), **kw)


def q(clocks, source, price, lag_ms=50):
    now_ms = int(clocks.wall_t * 1000)
    return Quote(source, price, now_ms - lag_ms, clocks.mono_t)


def dropped(m, source, reason):
    return (
        m.registry.get_sample_value("tap_feed_source_dropped_total", {"source": source, "reason": reason})
        or 0
    )


def test_median_of_three_fresh_sources_stamped_with_the_newest_exchange_time(r, clocks):
    agg = make(r, clocks)
    agg.offer(q(clocks, "sim", 6_700_000, lag_ms=10))
    agg.offer(q(clocks, "binance", 6_700_300, lag_ms=90))
    agg.offer(q(clocks, "coinbase", 6_700_100, lag_ms=40))
    tick, _ = agg.compute()
    assert tick == Tick(6_700_100, T0_MS - 10)


def test_two_sources_give_the_mean_of_the_two_rounded_down(r, clocks):
    agg = make(r, clocks)
    agg.offer(q(clocks, "binance", 6_700_001))
    agg.offer(q(clocks, "coinbase", 6_700_004))
    assert agg.compute()[0].price == 6_700_002


def test_a_source_not_heard_from_is_left_out_then_the_other_carries_on(r, clocks):
    agg = make(r, clocks)
    agg.offer(q(clocks, "binance", 6_700_000))
    clocks.advance(1.5)
    agg.offer(q(clocks, "coinbase", 6_700_200))
    assert agg.compute()[0].price == 6_700_100  # both fresh
    clocks.advance(0.6)  # binance's last quote is 2.1 s old now: only coinbase counts
    agg.offer(q(clocks, "coinbase", 6_700_400))
    assert agg.compute()[0].price == 6_700_400


def test_exchange_time_outside_the_bounds_is_dropped_and_counted(r, clocks):
    m = Metrics()
    agg = make(r, clocks, metrics=m)
    assert not agg.offer(q(clocks, "binance", 6_700_000, lag_ms=2_500))  # arrives late
    assert not agg.offer(q(clocks, "binance", 6_700_000, lag_ms=-2_500))  # from the future
    assert agg.offer(q(clocks, "binance", 6_700_000, lag_ms=100))
    assert not agg.offer(q(clocks, "binance", 6_700_000, lag_ms=200))  # older than the previous
    assert dropped(m, "binance", "late") == 1
    assert dropped(m, "binance", "future") == 1
    assert dropped(m, "binance", "out_of_order") == 1
    # a quote that was fine on arrival but whose exchange time has aged out is no longer fresh
    clocks.advance(2.0)
    assert agg.compute() is None


def test_an_outlier_among_three_is_dropped_and_counted_once(r, clocks):
    m = Metrics()
    agg = make(r, clocks, metrics=m)
    agg.offer(q(clocks, "sim", 6_700_000))
    agg.offer(q(clocks, "binance", 6_700_500))
    agg.offer(q(clocks, "coinbase", 7_500_000))  # +12 %
    assert agg.compute()[0].price == 6_700_250
    agg.offer(q(clocks, "sim", 6_700_010))
    assert agg.compute()[0].price == 6_700_255
    assert dropped(m, "coinbase", "outlier") == 1  # the same quote is counted once


def test_with_two_sources_the_last_price_decides_which_is_the_outlier(r, clocks):
    m = Metrics()
    agg = make(r, clocks, metrics=m)
    agg.mark_published(Tick(6_700_000, T0_MS - 300), 0, at_mono=clocks.mono_t - 0.3)
    agg.offer(q(clocks, "binance", 6_700_100))
    agg.offer(q(clocks, "coinbase", 6_000_000))  # -10 %
    tick, _ = agg.compute()
    assert tick.price == 6_700_100
    assert dropped(m, "coinbase", "outlier") == 1 and dropped(m, "binance", "outlier") == 0


def test_two_sources_that_disagree_with_nothing_to_arbitrate_publish_nothing(r, clocks):
    m = Metrics()
    agg = make(r, clocks, metrics=m)
    agg.offer(q(clocks, "binance", 6_700_000))
    agg.offer(q(clocks, "coinbase", 6_000_000))
    assert agg.compute() is None  # fail closed: the feed goes stale and the breaker acts
    assert dropped(m, "coinbase", "outlier") == 1 and dropped(m, "binance", "outlier") == 1


def test_nothing_new_is_never_republished_and_ts_strictly_increases(r, clocks):
    agg = make(r, clocks)
    agg.offer(q(clocks, "binance", 6_700_000, lag_ms=0))
    tick1, seq = agg.compute()
    agg.mark_published(tick1, seq)
    assert agg.compute() is None  # no new quote
    agg.offer(q(clocks, "coinbase", 6_700_100, lag_ms=30))  # older exchange time than tick1
    tick2, _ = agg.compute()
    assert tick2.ts == tick1.ts + 1 and tick2.price == 6_700_050


def test_wall_clock_jumps_change_nothing(r, clocks):
    agg = make(r, clocks)
    clocks.advance(1)
    agg.offer(q(clocks, "binance", 6_700_000))
    exchange_now = int(clocks.wall_t * 1000)
    clocks.wall_t += 3600  # the machine's clock jumps an hour ahead …
    assert agg.clock.wall_ms() == exchange_now
    assert abs(agg.clock.system_offset_s() - 3600) < 0.01  # … which is reported, not believed
    assert agg.offer(Quote("coinbase", 6_700_100, exchange_now - 20, clocks.mono_t))
    assert agg.compute()[0].price == 6_700_050
    clocks.wall_t -= 7200  # … and an hour behind
    clocks.mono_t += 0.5
    assert agg.offer(Quote("binance", 6_700_200, exchange_now + 480, clocks.mono_t))
    assert agg.compute()[0].price == 6_700_150


def test_only_the_lease_holder_publishes_and_a_successor_continues_the_stream(r, monkeypatch):
    a = PriceAggregator(r, fresh_s=2, max_deviation=100, publish_ms=20)
    b = PriceAggregator(r, fresh_s=2, max_deviation=100, publish_ms=20)
    b_tries = record_results(monkeypatch, b.lease, "acquire")
    ga = gevent.spawn(a.run)
    wait_until(lambda: a.lease.held, what="a to take the lease")
    gb = gevent.spawn(b.run)
    clock = a.clock
    for i in range(10):
        now = clock.wall_ms()
        a.offer(Quote("binance", 6_700_000 + i, now, clock.mono()))
        b.offer(Quote("binance", 5_000_000 + i, now, clock.mono()))  # would be obvious in the history
        gevent.sleep(0.05)
    # b asks for the lease at start and every 0.5 s; twice refused means it really runs beside a
    wait_until(lambda: len(b_tries) >= 2 and a.published >= 1, what="b refused twice while a publishes")
    assert not any(b_tries)
    assert a.lease.held and not b.lease.held
    assert {t.price // 100_000 for t in ticks_since(r, 0)} == {67}
    # b cannot publish even if it believes it holds the lease: the Lua script checks the token
    assert not FencedPublisher(r, FEED_LEASE_KEY, b.lease.token, LEASE_TTL_MS).publish(
        Tick(1, clock.wall_ms())
    )
    last_a = last_tick(r)
    a.stop()
    ga.join(2)
    assert r.get(FEED_LEASE_KEY) is None  # released on a clean stop
    wait_until(lambda: b.lease.held, timeout=5, what="b to take the lease over")  # at its next poll
    assert b.offer(Quote("coinbase", 6_700_020, last_a.ts - 5, clock.mono()))  # behind a's last
    wait_until(lambda: last_tick(r) != last_a, what="b's first tick")
    newest = last_tick(r)
    assert newest.price == 6_700_020 and newest.ts == last_a.ts + 1  # the stream stays increasing
    b.stop()
    gb.join(2)


def test_history_is_trimmed_by_the_publisher(r, clocks):
    agg = make(r, clocks)
    publish_tick(r, Tick(1, T0_MS - 8 * 24 * 3600 * 1000))  # older than 7 days
    assert agg.lease.acquire()
    assert FencedPublisher(r, FEED_LEASE_KEY, agg.lease.token, LEASE_TTL_MS).publish(
        Tick(2, T0_MS), trim=True
    )
    assert [t.price for t in ticks_since(r, 0)] == [2]
    assert r.zcard(PRICE_HISTORY_KEY) == 1


def test_the_age_of_each_published_price_is_measured(r, clocks):
    """tap_feed_tick_age_seconds: from the price's exchange time to its publication, so an operator
    sees how late traders get the price (a simulated one once waited 30-140 ms at the median)."""
    m = Metrics()
    agg = make(r, clocks, metrics=m)
    g = gevent.spawn(agg.run)
    try:
        agg.offer(q(clocks, "binance", 6_700_000, lag_ms=120))
        wait_until(lambda: m.registry.get_sample_value("tap_feed_tick_age_seconds_count") == 1, timeout=5)
        assert m.registry.get_sample_value("tap_feed_tick_age_seconds_sum") == pytest.approx(0.12)
        assert m.registry.get_sample_value("tap_feed_tick_age_seconds_bucket", {"le": "0.1"}) == 0
        assert m.registry.get_sample_value("tap_feed_tick_age_seconds_bucket", {"le": "0.25"}) == 1
        assert last_tick(r) == Tick(6_700_000, T0_MS - 120)
    finally:
        agg.stop()
        g.join(5)
