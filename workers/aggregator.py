"""Normalisation: quotes from every configured source → one tick stream, published by one process.

Sources (``workers.price_sim.SimSource``, ``workers.exchanges.BinanceSource`` / ``CoinbaseSource``)
hand `Quote`s to `PriceAggregator.offer()`. The aggregator keeps the latest quote of each source and,
at most once per ``TAP_FEED_PUBLISH_MS`` (250 ms → 4 ticks/s), publishes one normalised tick:

1. **Fresh sources only.** A quote counts while both its exchange time and its local receive time
   are within ``TAP_FEED_SOURCE_FRESH_S`` of now (exchange time also not that far in the future).
   Receive age is monotonic; "now" for exchange time is a `SteadyClock` (the wall clock read once
   at start, advanced by the monotonic clock), so a jump of the machine's wall clock changes nothing.
2. **Outliers dropped.** Reference = the median of the fresh quotes. With an even number of them
   (two sources) the median alone cannot say which one is wrong, and a lone source has nothing to
   be compared with, so in those cases the last published price joins the vote when it is itself
   recent (within the freshness bound). A quote further than ``TAP_FEED_MAX_DEVIATION`` (a
   fraction) from the reference is dropped and counted once
   (``tap_feed_source_dropped{reason="outlier"}``). Two sources that disagree with no recent price
   to arbitrate publish nothing: fail closed. A lone source's jump of more than twice the deviation
   is held back until the previous price has aged out of the freshness bound (2 s): a spike that
   reverts within that time never reaches the stream, a real move arrives 2 s late.
3. **Price** = the median of the kept quotes; with an even count the mean of the middle two,
   rounded down to the cent.
4. **ts** = the exchange time of the newest kept quote (for `sim`, its generation time), raised to
   one millisecond after the previous tick when needed, so tick times are strictly increasing (the
   resolver's windows rely on that). It is exchange time rather than publish time because it says
   when the price was traded; it is bounded by the freshness check, so it stays within
   ``TAP_FEED_SOURCE_FRESH_S`` of our clock.
5. A tick is published only when at least one kept quote is new since the previous tick: the
   stream never repeats a price to look alive.

Publishing is fenced by the Redis feed lease ``tap:lease:feed`` (``app.market.prices.FencedPublisher``):
during a SIGHUP reload two workers run sources side by side, but only the lease holder writes, in
the same Lua step that checks and renews the lease. On taking the lease over, the aggregator
continues from the last published tick (its price arbitrates, its ts keeps the stream increasing).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
import gevent.event
import redis

from app.keys import FEED_LEASE_KEY
from app.market.prices import FencedPublisher, Tick, last_tick
from app.metrics import Metrics
from workers.lease import RedisLease
from workers.loop import Stoppable

log = logging.getLogger(__name__)

LEASE_TTL_MS = 3000
RENEW_EVERY_S = 1.0
TRIM_EVERY = 240  # ticks between history trims (~1 min at 4 ticks/s)


# ---- exchange price strings → integer cents -------------------------------------------------------
_PRICE_RE = re.compile(r"(0|[1-9][0-9]{0,11})(?:\.([0-9]{1,18}))?")


class PriceFormatError(ValueError):
    """An exchange price that is not a plain positive decimal string."""


def parse_price_cents(value: object) -> int:
    """Parse an exchange price string into integer cents, never through a float.

    Strict: a JSON string of digits with an optional fraction ("67123.45000000"); no sign,
    exponent, whitespace, leading zeros or empty parts; at most 12 integer digits. Sub-cent digits
    are rounded half up to the nearest cent ("0.005" → 1, "67123.454999" → 6712345). BTC-USD and
    BTCUSDT trade in whole cents, so in practice those digits are zeros. Zero is refused.
    """
    if not isinstance(value, str):
        raise PriceFormatError(f"price must be a string, got {type(value).__name__}")
    m = _PRICE_RE.fullmatch(value)
    if m is None:
        raise PriceFormatError(f"not a plain decimal price: {value[:40]!r}")
    whole, frac = m.group(1), m.group(2) or ""
    cents = int(whole) * 100 + int(frac[:2].ljust(2, "0"))
    if len(frac) > 2 and frac[2] >= "5":
        cents += 1
    if cents <= 0:
        raise PriceFormatError("price must be positive")
    return cents


def median_cents(values: list[int]) -> int:
    """Median of integer cents; an even count gives the mean of the middle two, rounded down."""
    if not values:
        raise ValueError("median of nothing")
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2


# ---- clocks ---------------------------------------------------------------------------------------
class SteadyClock:
    """Monotonic seconds, and wall-clock milliseconds that never jump.

    `wall_ms()` is the wall clock read once at construction plus the monotonic time elapsed since
    (Linux slews CLOCK_MONOTONIC with NTP, so it keeps the rate of real time without its steps).
    Both sources are injectable for tests. `system_offset_s()` reports how far the machine's wall
    clock has moved away from it (exported as a metric; a large value means someone set the clock).
    """

    def __init__(
        self, mono: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self._mono = mono
        self._wall = wall
        self._anchor_mono = mono()
        self._anchor_wall_ms = wall() * 1000

    def mono(self) -> float:
        return self._mono()

    def wall_ms(self) -> int:
        return int(self._anchor_wall_ms + (self._mono() - self._anchor_mono) * 1000)

    def system_offset_s(self) -> float:
        return (self._wall() * 1000 - self.wall_ms()) / 1000


# ---- quotes -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Quote:
    source: str  # "sim", "binance", "coinbase"
    price: int  # cents
    exch_ts: int  # Unix ms, the exchange's time for this price
    recv_mono: float  # monotonic seconds when it arrived here


class _SourceState:
    __slots__ = ("outlier_counted", "quote", "seq")

    def __init__(self, quote: Quote, seq: int) -> None:
        self.quote = quote
        self.seq = seq  # global arrival number: "is this quote newer than the last tick?"
        self.outlier_counted = False


class PriceAggregator(Stoppable):
    """The ``price-feed`` worker: median of fresh sources, published while holding the feed lease."""

    name = "price-feed"

    def __init__(
        self,
        r: redis.Redis,
        *,
        fresh_s: float,
        max_deviation: int,
        publish_ms: int,
        metrics: Metrics | None = None,
        clock: SteadyClock | None = None,
        lease_key: str = FEED_LEASE_KEY,
        lease_ttl_ms: int = LEASE_TTL_MS,
    ) -> None:
        self.r = r
        self.fresh_s = fresh_s
        self.max_deviation = max_deviation  # 1e-4 units: 100 = 1 %
        self.publish_s = publish_ms / 1000
        self.metrics = metrics
        super().__init__()
        self.clock = clock or SteadyClock()
        self.lease = RedisLease(r, lease_key, lease_ttl_ms)
        self._publisher = FencedPublisher(r, lease_key, self.lease.token, lease_ttl_ms)
        self._states: dict[str, _SourceState] = {}
        self._seq = itertools.count(1)
        self._last_seq = 0  # newest quote seq offered
        self._done_seq = 0  # newest quote seq already considered for a tick
        self._used_seq = 0  # newest quote seq that went into a published tick
        self._wake = gevent.event.Event()
        self._lease_listeners: list[Callable[[Tick | None], None]] = []
        self.last_published: Tick | None = None
        self._last_pub_mono: float | None = None
        self._next_at = 0.0
        self._last_renew = 0.0
        self.published = 0

    # ---- called by sources ----------------------------------------------------------------------
    def on_lease_acquired(self, callback: Callable[[Tick | None], None]) -> None:
        """`callback(last_published_tick)` runs each time this process becomes the publisher."""
        self._lease_listeners.append(callback)

    def offer(self, quote: Quote) -> bool:
        """A source's new quote. False (and counted) if it is too old, from the future or out of order."""
        now_ms = self.clock.wall_ms()
        bound_ms = self.fresh_s * 1000
        if now_ms - quote.exch_ts > bound_ms:
            self.count_dropped(quote.source, "late")
            return False
        if quote.exch_ts - now_ms > bound_ms:
            self.count_dropped(quote.source, "future")
            return False
        prev = self._states.get(quote.source)
        if prev is not None and quote.exch_ts < prev.quote.exch_ts:
            self.count_dropped(quote.source, "out_of_order")
            return False
        seq = next(self._seq)
        self._states[quote.source] = _SourceState(quote, seq)
        self._last_seq = seq
        if self.metrics:
            self.metrics.source_quotes.labels(quote.source).inc()
        self._wake.set()
        return True

    def latest(self, source: str) -> Quote | None:
        """The newest quote accepted from `source` (fresh or not), for health views and tests."""
        st = self._states.get(source)
        return None if st is None else st.quote

    def forget(self, source: str) -> None:
        """Discard a source's latest quote (the simulator after it re-seeds)."""
        self._states.pop(source, None)

    def count_dropped(self, source: str, reason: str) -> None:
        if self.metrics:
            self.metrics.source_dropped.labels(source, reason).inc()

    # ---- the normalisation ------------------------------------------------------------------------
    def compute(self) -> tuple[Tick, int] | None:
        """The tick to publish now and the newest quote seq in it, or None (nothing fresh/new)."""
        now_mono = self.clock.mono()
        now_ms = self.clock.wall_ms()
        bound_ms = self.fresh_s * 1000
        fresh = [
            st
            for st in self._states.values()
            if now_mono - st.quote.recv_mono <= self.fresh_s and abs(now_ms - st.quote.exch_ts) <= bound_ms
        ]
        if self.metrics:
            for name, st in self._states.items():
                self.metrics.source_fresh.labels(name).set(1 if st in fresh else 0)
        if not fresh:
            return None
        prices = [st.quote.price for st in fresh]
        ref_values = list(prices)
        anchor = self._anchor(now_mono)
        if anchor is not None and (len(prices) < 3 or len(prices) % 2 == 0):
            ref_values.append(anchor)
        ref = median_cents(ref_values)
        kept = []
        for st in fresh:
            if abs(st.quote.price - ref) * 10_000 > self.max_deviation * ref:
                if not st.outlier_counted:
                    st.outlier_counted = True
                    self.count_dropped(st.quote.source, "outlier")
                    log.warning(
                        "price source %s is an outlier: %d cents vs reference %d; ignored",
                        st.quote.source,
                        st.quote.price,
                        ref,
                    )
            else:
                kept.append(st)
        if not kept:
            return None
        newest_seq = max(st.seq for st in kept)
        if newest_seq <= self._used_seq:
            return None  # nothing new among the quotes we trust
        price = median_cents([st.quote.price for st in kept])
        ts = max(st.quote.exch_ts for st in kept)
        if self.last_published is not None and ts <= self.last_published.ts:
            ts = self.last_published.ts + 1
        return Tick(price=price, ts=ts), newest_seq

    def mark_published(self, tick: Tick, newest_seq: int, at_mono: float | None = None) -> None:
        """Record `tick` as published at `at_mono` (now by default), built from quotes up to `newest_seq`.

        The last published price anchors the outlier check while it is fresh, and a quote already used
        is never republished. The publish round calls this after a fenced publish succeeds; a test
        calls it to set the stage without a Redis round."""
        self._used_seq = newest_seq
        self.last_published = tick
        self._last_pub_mono = self.clock.mono() if at_mono is None else at_mono

    def _anchor(self, now_mono: float) -> int | None:
        if self.last_published is None or self._last_pub_mono is None:
            return None
        if now_mono - self._last_pub_mono > self.fresh_s:
            return None
        return self.last_published.price

    # ---- the worker -------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.stopping:
                try:
                    self._step()
                except redis.RedisError as exc:
                    log.warning("price feed: redis unavailable (%s); retrying in 1s", exc)
                    self.lease.held = False
                    self._sleep(1.0)
        finally:
            with contextlib.suppress(redis.RedisError):  # if Redis is gone the lease expires by itself
                self.lease.release()

    def _step(self) -> None:
        if not self.lease.held:
            if not self.lease.acquire():
                self._sleep(0.5)
                return
            self._took_lease()
            self._last_renew = self.clock.mono()
        now = self.clock.mono()
        if self._last_seq > self._done_seq:
            delay = self._next_at - now
            if delay > 0:
                self._sleep(min(delay, RENEW_EVERY_S))
            else:
                self._publish_round(now)
        else:
            self._wake.clear()
            if self._last_seq <= self._done_seq and not self.stopping:
                self._wake.wait(timeout=RENEW_EVERY_S)
        now = self.clock.mono()
        if self.lease.held and now - self._last_renew >= RENEW_EVERY_S:
            self._last_renew = now
            if not self.lease.renew():
                log.warning("price feed lost the feed lease; another worker publishes now")
            if self.metrics:
                self.metrics.wall_clock_offset.set(self.clock.system_offset_s())

    def _took_lease(self) -> None:
        prev = last_tick(self.r)
        self.last_published = prev
        self._last_pub_mono = None
        if prev is not None:
            age_s = max(0, self.clock.wall_ms() - prev.ts) / 1000
            self._last_pub_mono = self.clock.mono() - age_s
        self._used_seq = 0
        log.info(
            "price feed holds the feed lease; continuing after %s",
            f"{prev.price} cents at {prev.ts}" if prev else "an empty history",
        )
        for callback in self._lease_listeners:
            try:
                callback(prev)
            except Exception:
                log.exception("lease listener failed")

    def _publish_round(self, now: float) -> None:
        self._done_seq = self._last_seq
        result = self.compute()
        if result is None:
            return
        tick, newest_seq = result
        trim = (self.published + 1) % TRIM_EVERY == 0
        if not self._publisher.publish(tick, trim=trim):
            self.lease.held = False
            log.warning("price feed lost the feed lease before publishing; standing by")
            return
        self.published += 1
        self._last_renew = now  # the fenced publish renewed the lease
        self.mark_published(tick, newest_seq, now)
        self._next_at = now + self.publish_s
        if self.metrics:
            self.metrics.ticks_published.labels("normalised").inc()
            # How late traders see the price: network, the freshness rules and the pacing above. A
            # simulated price once waited 30-140 ms at the median here (price_sim.SimSource.next_interval).
            self.metrics.tick_age.observe(max(0, self.clock.wall_ms() - tick.ts) / 1000)

    def _sleep(self, seconds: float) -> None:
        # ends early on stop(); a new quote does not shorten a pacing sleep
        self.wait(seconds)

    def stop(self) -> None:
        super().stop()
        self._wake.set()
