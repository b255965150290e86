"""The offline price source `sim`: a BTC-like random walk, a source like any other.

Log price follows a driftless Brownian motion with the configured annualised volatility (the same
model the quotes assume, so calibration can be checked against it), sampled every ~250 ms with a
little jitter (never faster than the aggregator publishes), rounded to cents. `SimSource` offers its
quotes to the aggregator (``workers.aggregator.PriceAggregator``), which publishes while it holds the
feed lease; with ``TAP_PRICE_SOURCES=sim,binance`` the walk is one more source in the median. Each
time this process takes the lease over, the walk re-starts from the last published price, so a
restart or a SIGHUP reload continues the path instead of jumping.

`SimulatedFeed` bundles a SimSource with its own aggregator: a complete stand-alone sim feed for
tools and tests (the runtime builds the parts separately, see ``workers.runtime``).
"""

from __future__ import annotations

import logging
import math
import random

import gevent
import redis

from app.keys import FEED_LEASE_KEY
from app.market.prices import Tick, last_tick
from app.metrics import Metrics
from workers.aggregator import PriceAggregator, Quote
from workers.loop import Stoppable

log = logging.getLogger(__name__)

__all__ = ["FEED_LEASE_KEY", "SECONDS_PER_YEAR", "RandomWalk", "SimSource", "SimulatedFeed"]

SECONDS_PER_YEAR = 365 * 24 * 3600


class RandomWalk:
    """Driftless geometric Brownian motion in integer cents."""

    def __init__(self, price_cents: int, annual_vol: float, rng: random.Random | None = None) -> None:
        if price_cents <= 0:
            raise ValueError("price must be positive")
        self.log_price = math.log(price_cents)
        self.annual_vol = annual_vol
        self.rng = rng or random.Random()

    def step(self, dt_s: float) -> int:
        sigma = self.annual_vol * math.sqrt(dt_s / SECONDS_PER_YEAR)
        self.log_price += sigma * self.rng.gauss(0.0, 1.0)
        return max(1, round(math.exp(self.log_price)))


class SimSource(Stoppable):
    """The ``source-sim`` worker: one quote per tick interval, stamped with the feed's steady clock."""

    name = "source-sim"
    source = "sim"

    def __init__(
        self,
        aggregator: PriceAggregator,
        r: redis.Redis,
        *,
        annual_vol: float,
        tick_ms: int,
        start_price: int,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self.aggregator = aggregator
        self.r = r
        self.annual_vol = annual_vol
        self.tick_s = tick_ms / 1000
        self.start_price = start_price
        self.rng = rng or random.Random()
        self._walk: RandomWalk | None = None
        self._reseed: int | None = None
        aggregator.on_lease_acquired(self._on_lease)

    def next_interval(self) -> float:
        """Seconds until the next quote: the tick interval with ±20 % jitter, but never shorter than
        the aggregator's publish interval (TAP_FEED_PUBLISH_MS).

        The aggregator publishes at most once per interval, so a quote that comes sooner waits for it.
        With both intervals at 250 ms the quotes came exactly as fast as they may be published, and
        the waits added up instead of draining: the published price was 30-140 ms old at the median
        of a run, up to ~240 ms (BENCHMARKS.md, issue 12, fifth pass). Never sooner than the
        aggregator may publish, a quote goes out as soon as it is made."""
        return max(self.aggregator.publish_s, self.tick_s * self.rng.uniform(0.8, 1.2))

    def _on_lease(self, prev: Tick | None) -> None:
        # This process publishes from now on: continue from the last published price.
        self._reseed = prev.price if prev else None
        self._walk = None
        self.aggregator.forget(self.source)

    def _start_walk(self) -> RandomWalk:
        start = self._reseed
        if start is None:
            try:
                prev = last_tick(self.r)
            except redis.RedisError:
                prev = None
            start = prev.price if prev else self.start_price
        self._reseed = None
        return RandomWalk(start, self.annual_vol, self.rng)

    def run(self) -> None:
        clock = self.aggregator.clock
        while not self.stopping:
            if self._walk is None:
                self._walk = self._start_walk()
            dt = self.next_interval()
            if self.wait(dt):
                break
            walk = self._walk
            if walk is None:  # re-seeded while we slept
                continue
            self.aggregator.offer(Quote(self.source, walk.step(dt), clock.wall_ms(), clock.mono()))


class SimulatedFeed:
    """A stand-alone sim feed: a SimSource and a PriceAggregator run together; `lease` is the feed lease."""

    name = "price-sim"

    def __init__(
        self,
        r: redis.Redis,
        *,
        annual_vol: float,
        tick_ms: int,
        start_price: int,
        metrics: Metrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.r = r
        self.aggregator = PriceAggregator(
            r,
            fresh_s=max(2.0, 4 * tick_ms / 1000),
            max_deviation=9_999,  # one source: nothing to be an outlier against
            publish_ms=max(1, tick_ms // 2),  # every simulated tick becomes a published tick
            metrics=metrics,
        )
        self.source = SimSource(
            self.aggregator, r, annual_vol=annual_vol, tick_ms=tick_ms, start_price=start_price, rng=rng
        )
        self.lease = self.aggregator.lease

    def run(self) -> None:
        g = gevent.spawn(self.source.run)
        try:
            self.aggregator.run()
        finally:
            self.source.stop()
            g.join(timeout=2)
            g.kill()

    def stop(self) -> None:
        self.source.stop()
        self.aggregator.stop()
