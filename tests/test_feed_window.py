"""`window_stats`: the per-column touch data the resolver reads from the 7-day history."""

import pytest
import redis

from app.market.prices import Tick, publish_tick, tick_at_or_before, window_stats

T = 1_763_712_000  # a column start, Unix seconds (multiple of 5)
MS = T * 1000


@pytest.fixture
def r(redis_url):
    return redis.Redis.from_url(redis_url)


def put(r, *ticks):
    for ts, price in ticks:
        publish_tick(r, Tick(price, ts))


def test_open_price_is_the_one_in_force_and_counts_for_lo_hi(r):
    put(r, (MS - 700, 6_700_000), (MS - 200, 6_700_500), (MS + 1000, 6_700_200), (MS + 3000, 6_700_900))
    ws = window_stats(r, T, 5)
    assert ws.open_price == 6_700_500 and ws.open_ts == MS - 200
    assert (ws.lo, ws.hi) == (6_700_200, 6_700_900)
    assert ws.ticks == 2
    assert ws.max_gap_ms == 2000  # 0→1000, 1000→3000, 3000→5000
    assert ws.complete is False  # nothing at or after the window end yet
    put(r, (MS + 5000, 1))  # a tick exactly at the end belongs to the next window
    ws = window_stats(r, T, 5)
    assert ws.complete is True and ws.lo == 6_700_200 and ws.ticks == 2


def test_a_jump_through_the_band_is_seen_via_lo_and_hi(r):
    put(r, (MS - 100, 6_700_000), (MS + 2500, 6_705_000))
    ws = window_stats(r, T, 5)
    band_low, band_high = 6_702_000, 6_703_000  # between the two prices: touched by the continuous path
    assert band_low <= ws.hi and band_high >= ws.lo


def test_tick_exactly_at_the_start_is_both_open_price_and_inside(r):
    put(r, (MS - 1000, 6_600_000), (MS, 6_700_000), (MS + 4999, 6_700_100))
    ws = window_stats(r, T, 5)
    assert ws.open_price == 6_700_000 and ws.open_ts == MS
    assert (ws.lo, ws.hi) == (6_700_000, 6_700_100)
    assert ws.ticks == 2
    assert ws.max_gap_ms == 4999


def test_gaps_count_from_the_window_start_and_to_its_end(r):
    put(r, (MS - 60_000, 6_700_000), (MS + 4_900, 6_700_100))
    ws = window_stats(r, T, 5)
    assert ws.max_gap_ms == 4_900
    assert ws.open_ts == MS - 60_000  # the resolver can see how old the opening price was
    put(r, (MS + 12_000, 6_700_200))
    ws = window_stats(r, T + 5, 5)  # a window with no tick at all
    assert ws.ticks == 0 and ws.max_gap_ms == 5_000
    assert ws.lo == ws.hi == ws.open_price == 6_700_100
    ws = window_stats(r, T, 15)  # a longer column spanning the gap
    assert ws.max_gap_ms == 12_000 - 4_900 and ws.ticks == 2 and ws.complete is False


def test_nothing_known_is_none_and_history_starting_inside_has_no_open_price(r):
    assert window_stats(r, T, 5) is None
    put(r, (MS + 2000, 6_700_000))
    ws = window_stats(r, T, 5)
    assert ws.open_price is None and ws.open_ts is None
    assert ws.lo == ws.hi == 6_700_000 and ws.max_gap_ms == 3000
    assert window_stats(r, T - 5, 5) is None
    with pytest.raises(ValueError):
        window_stats(r, T, 0)


def test_tick_at_or_before(r):
    put(r, (MS - 10, 1), (MS, 2), (MS + 10, 3))
    assert tick_at_or_before(r, MS) == Tick(2, MS)
    assert tick_at_or_before(r, MS - 1) == Tick(1, MS - 10)
    assert tick_at_or_before(r, MS - 11) is None
