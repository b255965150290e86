"""Keeps the process's QuoteBook current and sends the `grid` message every second.

The book is rebuilt whenever a new tick arrives (and at least every second, as time moves the
columns), so the multiplier charged at acceptance is computed from the same inputs the trader's grid
showed. Volatility is re-estimated from the Redis price history every few seconds.
"""

from __future__ import annotations

import logging
import time

import orjson
import redis

from app.market.feed import FeedMonitor
from app.market.grid import GridSpec
from app.market.prices import ticks_since
from app.market.quotes import QuoteBook, QuoteState, estimate_sigma, grid_message
from app.realtime.fanout import Fanout
from workers.loop import LoopWorker

log = logging.getLogger(__name__)

VOL_WINDOW_MS = 5 * 60 * 1000


class GridPublisher(LoopWorker):
    name = "grid-publisher"
    interval_s = 0.05
    broadcast_every_s = 1.0
    sigma_every_s = 5.0

    def __init__(
        self,
        r: redis.Redis,
        spec: GridSpec,
        quotes: QuoteState,
        feed: FeedMonitor,
        fanout: Fanout,
        *,
        house_edge: int,
        prior_vol: float,
    ) -> None:
        super().__init__()
        self.r = r
        self.spec = spec
        self.quotes = quotes
        self.feed = feed
        self.fanout = fanout
        self.house_edge = house_edge
        self.prior_vol = prior_vol
        self._last_tick: object = None
        self._last_build = self._last_broadcast = self._last_sigma = 0.0

    def refresh_sigma(self) -> None:
        now_ms = int(time.time() * 1000)
        ticks = [(t.ts, t.price) for t in ticks_since(self.r, now_ms - VOL_WINDOW_MS, limit=20_000)]
        self.quotes.sigma, self.quotes.tick_interval = estimate_sigma(ticks, self.prior_vol)

    def rebuild(self) -> QuoteBook | None:
        tick = self.feed.last_tick
        if tick is None or self.quotes.sigma is None:
            return None
        book = QuoteBook.build(
            self.spec,
            tick.price,
            self.quotes.sigma,
            self.quotes.tick_interval,
            self.house_edge,
            tick_ts=tick.ts,
        )
        self.quotes.book = book
        return book

    def step(self) -> None:
        now = time.monotonic()
        try:
            if now - self._last_sigma >= self.sigma_every_s or self.quotes.sigma is None:
                self.refresh_sigma()
                self._last_sigma = now
        except redis.RedisError as exc:
            log.warning("grid-publisher: cannot read price history (%s)", exc)
            self._last_sigma = now
        tick = self.feed.last_tick
        if tick is not self._last_tick or now - self._last_build >= 1.0:
            book = self.rebuild()
            self._last_tick, self._last_build = tick, now
            if book is not None and now - self._last_broadcast >= self.broadcast_every_s:
                self.fanout.broadcast(orjson.dumps(grid_message(book, int(time.time() * 1000))))
                self._last_broadcast = now
