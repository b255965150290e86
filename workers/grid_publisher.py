"""Keeps the process's QuoteBook current and sends the `grid` message every second.

The book is rebuilt whenever a new tick arrives (and at least every second, as time moves the
columns), so the multiplier charged at acceptance is computed from the same inputs the trader's grid
showed. Volatility is re-estimated from the Redis price history every few seconds.

Quotes lean against exposure (SPEC §8b, `app.market.quotes.shade`): at each rebuild, and every
`shade_every_s` in between, the open liability of the placeable columns is read from Redis (one
pipelined round trip) and the book is re-shaded from it — no probability is recomputed for that. The
book the bet path charges is always a shaded one; if Redis cannot be read, the last snapshot stays.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
import redis

from app.bets.exposure import read_exposure
from app.market.feed import FeedMonitor
from app.market.grid import GridSpec
from app.market.prices import ticks_since
from app.market.quotes import Exposure, QuoteBook, QuoteState, estimate_sigma, grid_message
from app.realtime.fanout import Fanout
from workers.loop import LoopWorker

log = logging.getLogger(__name__)

VOL_WINDOW_MS = 5 * 60 * 1000


class GridPublisher(LoopWorker):
    name = "grid-publisher"
    interval_s = 0.05
    broadcast_every_s = 1.0
    sigma_every_s = 5.0
    shade_every_s = 0.25

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
        cell_cap: int = 0,
        column_cap: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.clock = clock  # the wall clock the bet path judges cells and quote age by (svc.clock)
        self.r = r
        self.spec = spec
        self.quotes = quotes
        self.feed = feed
        self.fanout = fanout
        self.house_edge = house_edge
        self.prior_vol = prior_vol
        self.cell_cap = cell_cap
        self.column_cap = column_cap
        self._last_tick: object = None
        self._last_build = self._last_broadcast = self._last_sigma = self._last_shade = 0.0
        self._base: QuoteBook | None = None  # the latest unshaded book
        self._exposure: Exposure | None = None

    def refresh_sigma(self) -> None:
        """σ from the last VOL_WINDOW_MS of the price stream, counted back from the newest tick: tick
        times are the exchanges' (checked against the feed's steady clock), so a window ending at the
        machine's wall clock, stepped forward by more than its length, would hold no tick and price
        every quote on the prior volatility for as long as the step lasted."""
        tick = self.feed.last_tick
        end_ms = tick.ts if tick is not None else int(self.clock() * 1000)
        ticks = [(t.ts, t.price) for t in ticks_since(self.r, end_ms - VOL_WINDOW_MS, limit=20_000)]
        self.quotes.sigma, self.quotes.tick_interval = estimate_sigma(ticks, self.prior_vol)

    def rebuild(self) -> QuoteBook | None:
        tick = self.feed.last_tick
        arrived_s = self.feed.age()
        if tick is None or arrived_s is None or self.quotes.sigma is None:
            return None
        now = self.clock()
        # The price's time on the book's own (wall) clock: now, less how long ago the tick arrived on
        # the monotonic clock. Not `tick.ts`: that is on the publishing aggregator's steady clock (the
        # wall clock read once at its start), which a later step of the machine's wall clock leaves
        # behind, so a step forward of more than TAP_QUOTE_MAX_AGE_S would have refused every tap as
        # quotes_stale while the feed was healthy. How fresh the price was when published is the
        # aggregator's rule (quotes older than fresh_s are never published).
        book = QuoteBook.build(
            self.spec,
            tick.price,
            self.quotes.sigma,
            self.quotes.tick_interval,
            self.house_edge,
            now=now,
            tick_ts=int((now - arrived_s) * 1000),
        )
        self._base = book
        return self.reshade()

    def reshade(self, base: QuoteBook | None = None) -> QuoteBook | None:
        """Read the placeable columns' liability and publish the base book shaded by it.

        `base` replaces the last unshaded book first (a book pinned by a test or a replay); by default
        the last one `rebuild` made is shaded again with fresh liability."""
        if base is not None:
            self._base = base
        base = self._base
        if base is None:
            return None
        if self.cell_cap > 0 and self.column_cap > 0:
            try:
                self._exposure = read_exposure(
                    self.r,
                    self.spec.placeable_columns(base.now),
                    cell_cap=self.cell_cap,
                    column_cap=self.column_cap,
                )
            except redis.RedisError as exc:
                log.warning("grid-publisher: cannot read the exposure (%s); keeping the last", exc)
        book = base.with_exposure(self._exposure)
        self.quotes.book = book
        self._last_shade = time.monotonic()
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
                self.fanout.broadcast(orjson.dumps(grid_message(book, int(self.clock() * 1000))))
                self._last_broadcast = now
        elif now - self._last_shade >= self.shade_every_s:
            self.reshade()
