"""The offline `sim` source: statistics of the walk, what it writes to Redis, and the singleton lease."""

import itertools
import math
import random
import statistics

import gevent
import redis

from app.keys import CHANNEL_PRICE, PRICE_HISTORY_KEY
from app.market.prices import HISTORY_MS, Tick, last_tick, publish_tick, ticks_since
from tests.support.waiting import record_results, wait_until
from workers.aggregator import PriceAggregator
from workers.price_sim import SECONDS_PER_YEAR, RandomWalk, SimSource, SimulatedFeed


def test_walk_realises_the_configured_volatility():
    walk = RandomWalk(6_700_000, annual_vol=0.6, rng=random.Random(7))
    dt = 0.25
    prices = [walk.step(dt) for _ in range(40_000)]
    returns = [math.log(b / a) for a, b in itertools.pairwise(prices)]
    realised = statistics.pstdev(returns) / math.sqrt(dt / SECONDS_PER_YEAR)
    assert abs(realised - 0.6) < 0.03
    assert abs(statistics.fmean(returns)) < 3 * statistics.pstdev(returns) / math.sqrt(
        len(returns)
    )  # driftless
    assert all(isinstance(p, int) and p > 0 for p in prices)


def test_tick_encoding_is_the_websocket_message():
    t = Tick(price=6_712_340, ts=1_763_711_990_123)
    assert t.encode() == b'{"type":"price","price":"67123.40","ts":1763711990123}'
    assert Tick.decode(t.encode()) == t


def test_publish_stores_history_last_and_broadcasts(redis_url):
    r = redis.Redis.from_url(redis_url)
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(CHANNEL_PRICE)
    sub.get_message(timeout=1)
    publish_tick(r, Tick(6_700_000, 1_000))
    publish_tick(r, Tick(6_700_100, 2_000))
    assert last_tick(r) == Tick(6_700_100, 2_000)
    assert ticks_since(r, 1_500) == [Tick(6_700_100, 2_000)]
    msg = sub.get_message(timeout=1)
    assert Tick.decode(msg["data"]) == Tick(6_700_000, 1_000)


def test_history_is_trimmed_to_seven_days(redis_url):
    r = redis.Redis.from_url(redis_url)
    now = 10 * HISTORY_MS
    publish_tick(r, Tick(1, now - HISTORY_MS - 1))
    publish_tick(r, Tick(2, now - HISTORY_MS + 1))
    publish_tick(r, Tick(3, now), trim=True)
    assert [t.price for t in ticks_since(r, 0)] == [2, 3]
    assert r.zcard(PRICE_HISTORY_KEY) == 2


def _feed(r, seed):
    return SimulatedFeed(r, annual_vol=0.6, tick_ms=20, start_price=6_700_000, rng=random.Random(seed))


def test_only_the_lease_holder_publishes_and_a_successor_takes_over(redis_url, monkeypatch):
    r = redis.Redis.from_url(redis_url)
    a, b = _feed(r, 1), _feed(r, 2)
    b_tries = record_results(monkeypatch, b.lease, "acquire")
    ga = gevent.spawn(a.run)
    wait_until(lambda: a.lease.held, what="a to take the lease")
    gb = gevent.spawn(b.run)
    # b asks for the lease at start and every 0.5 s; twice refused means it really runs beside a
    wait_until(
        lambda: len(b_tries) >= 2 and r.zcard(PRICE_HISTORY_KEY) > 5, what="b refused twice, a publishing"
    )
    assert not any(b_tries)
    assert a.lease.held and not b.lease.held
    last_of_a = last_tick(r)
    a.stop()
    ga.join(2)
    wait_until(lambda: b.lease.held, timeout=5, what="b to take the lease over")  # at its next poll
    (first_of_b, *_) = wait_until(lambda: ticks_since(r, last_of_a.ts + 1), what="b publishing")
    # the successor continues from the last published price instead of jumping back to the start
    assert abs(first_of_b.price - last_of_a.price) < 1_000  # within $10 of where A left off
    b.stop()
    gb.join(2)
    assert r.get("tap:lease:feed") is None  # released on a clean stop


def test_the_sim_never_quotes_faster_than_the_aggregator_publishes(redis_url):
    """A quote made sooner than the aggregator may publish waits for it, and with both intervals
    equal the waits added up (a price 30-140 ms old at the median): the jitter is floored at the
    aggregator's interval, and left alone when the tick interval is well above it."""
    r = redis.Redis.from_url(redis_url)
    aggregator = PriceAggregator(r, fresh_s=2.0, max_deviation=9_999, publish_ms=250)

    def intervals(tick_ms: int) -> list[float]:
        sim = SimSource(
            aggregator, r, annual_vol=0.6, tick_ms=tick_ms, start_price=6_700_000, rng=random.Random(7)
        )
        return [sim.next_interval() for _ in range(10_000)]

    same = intervals(250)
    assert min(same) == 0.25  # the draws under 250 ms wait for the aggregator, not after a quote
    assert max(same) <= 0.3
    assert sum(x == 0.25 for x in same) > 4_000  # about half of the draws are floored

    slow = intervals(1000)
    assert 0.8 <= min(slow) < 0.81 and 1.19 < max(slow) <= 1.2  # the floor does not touch these
