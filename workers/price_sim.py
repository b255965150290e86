"""The offline price source `sim`: a BTC-like random walk published as normalised ticks.

Log price follows a driftless Brownian motion with the configured annualised volatility (the same
model the quotes assume, so calibration can be checked against it), sampled every ~250 ms with a
little jitter, rounded to cents. It continues from the last published price after a restart or
reload, and only the holder of the feed lease publishes, so two overlapping workers never both do.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time

import gevent
import redis

from app.metrics import Metrics
from app.prices import Tick, last_tick, publish_tick
from workers.lease import RedisLease

log = logging.getLogger(__name__)

SECONDS_PER_YEAR = 365 * 24 * 3600
LEASE_KEY = "tap:lease:feed"
LEASE_TTL_MS = 3000
TRIM_EVERY = 240  # ticks between history trims (~1 min)


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


class SimulatedFeed:
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
        self.annual_vol = annual_vol
        self.tick_s = tick_ms / 1000
        self.start_price = start_price
        self.metrics = metrics
        self.rng = rng or random.Random()
        self._stopping = False
        self.lease = RedisLease(r, LEASE_KEY, LEASE_TTL_MS)

    def run(self) -> None:
        walk: RandomWalk | None = None
        count = 0
        last_renew = 0.0
        while not self._stopping:
            try:
                if not self.lease.held:
                    if not self.lease.acquire():
                        gevent.sleep(0.5)
                        continue
                    prev = last_tick(self.r)
                    walk = RandomWalk(prev.price if prev else self.start_price, self.annual_vol, self.rng)
                    last_renew = time.monotonic()
                    log.info(
                        "price-sim holds the feed lease; starting at %s cents",
                        round(math.exp(walk.log_price)),
                    )
                assert walk is not None
                dt = self.tick_s * self.rng.uniform(0.8, 1.2)
                gevent.sleep(dt)
                if self._stopping:
                    break
                tick = Tick(price=walk.step(dt), ts=int(time.time() * 1000))
                count += 1
                publish_tick(self.r, tick, trim=count % TRIM_EVERY == 0)
                if self.metrics:
                    self.metrics.ticks_published.labels("sim").inc()
                if time.monotonic() - last_renew >= 1.0:
                    last_renew = time.monotonic()
                    if not self.lease.renew():
                        log.warning("price-sim lost the feed lease")
            except redis.RedisError as exc:
                log.warning("price-sim: redis unavailable (%s); retrying in 1s", exc)
                self.lease.held = False
                gevent.sleep(1.0)
        with contextlib.suppress(redis.RedisError):  # if Redis is gone the lease expires by itself
            self.lease.release()

    def stop(self) -> None:
        self._stopping = True
