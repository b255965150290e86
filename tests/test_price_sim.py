"""The offline `sim` source: statistics of the walk, what it writes to Redis, and the singleton lease."""

import itertools
import math
import random
import statistics

import gevent
import redis

from app.keys import CHANNEL_PRICE, PRICE_HISTORY_KEY
from app.market.prices import HISTORY_MS, Tick, last_tick, publish_tick, ticks_since
from workers.price_sim import SECONDS_PER_YEAR, RandomWalk, SimulatedFeed


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


def test_only_the_lease_holder_publishes_and_a_successor_takes_over(redis_url):
    r = redis.Redis.from_url(redis_url)
    a, b = _feed(r, 1), _feed(r, 2)
    ga = gevent.spawn(a.run)
    gevent.sleep(0.1)
    gb = gevent.spawn(b.run)
    gevent.sleep(0.3)
    assert a.lease.held and not b.lease.held
    before = r.zcard(PRICE_HISTORY_KEY)
    assert before > 5
    last_of_a = last_tick(r)
    a.stop()
    ga.join(2)
    gevent.sleep(1.0)
    assert b.lease.held
    assert r.zcard(PRICE_HISTORY_KEY) > before
    # the successor continues from the last published price instead of jumping back to the start
    first_of_b = ticks_since(r, last_of_a.ts + 1)[0]
    assert abs(first_of_b.price - last_of_a.price) < 1_000  # within $10 of where A left off
    b.stop()
    gb.join(2)
    assert r.get("tap:lease:feed") is None  # released on a clean stop
