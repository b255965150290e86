"""Multipliers from a driftless Brownian model of log price (SPEC §4).

``multiplier = (1 − house_edge) / P(touch)``, rounded down to 4 decimals and clamped to [1.01, 100].

P(touch) for a band [a, b] and a window [t1, t2] seen from now (t1 > 0): the log price at the window
start is normal around today's log price with spread s = σ√t1; from a start x inside the band the bet
has won already (the price in force when the window opens counts); from below, the reflection principle
gives P(max over the window ≥ log a) = 2·Q((log a − x)/v) with v = σ√(t2 − t1), and symmetrically from
above. P(touch) is the expectation of that over x, integrated numerically (Simpson) on each side.

Ticks are discrete: the touch rule joins consecutive ticks with a straight line, so an excursion
between two ticks that comes back is not seen. The model corrects for it by moving the barriers
inward by 0.5826·σ·√Δt (Broadie–Glasserman continuity correction), Δt being the feed's tick interval.

A cell whose fair multiplier would be below 1.01 (a near-certain touch) gets no quote rather than a
multiplier that would hand the player an edge; cells that rare get the 100× cap.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.grid import GridSpec
from app.units import MULT_ONE, format_multiplier, format_price

MIN_MULTIPLIER = 10_100  # 1.01
MAX_MULTIPLIER = 1_000_000  # 100
BG_BETA = 0.5826  # Broadie–Glasserman: -zeta(1/2)/sqrt(2*pi)
SECONDS_PER_YEAR = 365 * 24 * 3600
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SIMPSON_N = 24  # intervals per side (even)


def _phi_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def _side(za: float, ratio: float) -> float:
    """∫_{u≥0} φ(za − u) · 2Q(u·ratio) du: reaching a barrier `za` (in start-spread units) from beyond it.

    `ratio` = s / v (spread at window start over spread during the window).
    """
    if ratio <= 0:
        return 0.0
    upper = min(8.0 / ratio, za + 8.0)
    if upper <= 0:
        return 0.0
    h = upper / _SIMPSON_N
    total = 0.0
    for i in range(_SIMPSON_N + 1):
        u = i * h
        z = za - u
        f = _INV_SQRT_2PI * math.exp(-0.5 * z * z) * math.erfc(u * ratio / _SQRT2)
        total += f if i in (0, _SIMPSON_N) else (4 * f if i % 2 else 2 * f)
    return total * h / 3.0


def touch_probability(
    price: int, band_lo: int, band_hi: int, t1: float, window: float, sigma: float, tick_interval: float = 0.0
) -> float:
    """P(the price path touches [band_lo, band_hi] during [now + t1, now + t1 + window]).

    `price` and the band in cents, times in seconds, `sigma` the volatility of log price per √second.
    """
    if band_lo <= 0 or price <= 0:
        raise ValueError("prices must be positive")
    x0 = math.log(price)
    shift = BG_BETA * sigma * math.sqrt(tick_interval) if tick_interval > 0 else 0.0
    la = math.log(band_lo) + shift
    lb = math.log(band_hi) - shift
    if la > lb:  # band narrower than the correction: treat it as a single level
        la = lb = 0.5 * (la + lb)
    s = sigma * math.sqrt(max(t1, 0.0))
    v = sigma * math.sqrt(window)
    if s < 1e-12:  # the window starts now: the start price is known
        if la <= x0 <= lb:
            return 1.0
        d = (la - x0) if x0 < la else (x0 - lb)
        return math.erfc(d / (v * _SQRT2)) if v > 0 else 0.0
    za = (la - x0) / s
    zb = (lb - x0) / s
    p_in = _phi_cdf(zb) - _phi_cdf(za)
    ratio = s / v if v > 0 else 0.0
    p_below = _side(za, ratio)  # start below la, rise to it
    p_above = _side(-zb, ratio)  # start above lb, fall to it (mirror image)
    return min(1.0, max(0.0, p_in + p_below + p_above))


def multiplier_for(probability: float, house_edge_units: int) -> int | None:
    """Multiplier in 1e-4 units, floored, capped at 100; None when the fair value is below 1.01."""
    if probability * MAX_MULTIPLIER <= MULT_ONE - house_edge_units:  # fair value at or above the cap
        return MAX_MULTIPLIER
    raw = (MULT_ONE - house_edge_units) / probability  # in 1e-4 units, still real-valued
    if raw < MIN_MULTIPLIER:
        return None
    return math.floor(raw)


def estimate_sigma(
    ticks: Sequence[tuple[int, int]],
    prior: float,
    min_returns: int = 30,
    bounds: tuple[float, float] = (0.05, 5.0),
) -> tuple[float, float]:
    """(σ per √second, mean tick interval in seconds) from (ts_ms, price_cents) ticks, oldest first.

    Realised variance over elapsed time; with too few ticks the prior (annualised) is used. The
    annualised result is clamped to `bounds` so a frozen or wild feed cannot quote absurd prices.
    """
    prior_s = prior / math.sqrt(SECONDS_PER_YEAR)
    if len(ticks) < min_returns + 1:
        return prior_s, 0.25
    var = 0.0
    for (_, p0), (_, p1) in itertools.pairwise(ticks):
        r = math.log(p1 / p0)
        var += r * r
    elapsed = (ticks[-1][0] - ticks[0][0]) / 1000.0
    if elapsed <= 0:
        return prior_s, 0.25
    sigma = math.sqrt(var / elapsed)
    lo, hi = (b / math.sqrt(SECONDS_PER_YEAR) for b in bounds)
    return min(hi, max(lo, sigma)), elapsed / (len(ticks) - 1)


@dataclass
class QuoteBook:
    """The quote matrix for one (price, σ, instant). Built by the grid publisher every tick/second and
    read by the bet path, so a trader is charged exactly what the grid showed at that moment."""

    spec: GridSpec
    price: int
    sigma: float
    tick_interval: float
    house_edge: int
    now: float
    current_row: int = 0
    quotes: dict[tuple[int, int], int | None] = field(default_factory=dict)
    tick_ts: int | None = None  # Unix ms of the tick whose price the book was built from

    def age_s(self, now_s: float) -> float:
        """How old the quotes are at `now_s` (wall seconds): the older of the build and its tick.

        In DEGRADED the publisher rebuilds the book every second from the last price, so the build
        time alone would look fresh; the bet path refuses quotes older than TAP_QUOTE_MAX_AGE_S.
        """
        built = now_s - self.now
        if self.tick_ts is None:
            return max(0.0, built)
        return max(0.0, built, now_s - self.tick_ts / 1000.0)

    @classmethod
    def build(
        cls,
        spec: GridSpec,
        price: int,
        sigma: float,
        tick_interval: float,
        house_edge: int,
        now: float | None = None,
        tick_ts: int | None = None,
    ) -> QuoteBook:
        now = time.time() if now is None else now
        book = cls(spec, price, sigma, tick_interval, house_edge, now, spec.row_of(price), tick_ts=tick_ts)
        for t_start, row in spec.cells(now, book.current_row):
            book.quotes[(t_start, row)] = book.quote(t_start, row)
        return book

    def quote(self, t_start: int, row: int) -> int | None:
        cached = self.quotes.get((t_start, row), 0)
        if cached != 0:
            return cached
        lo, hi = self.spec.band(row)
        p = touch_probability(
            self.price, lo, hi, t_start - self.now, self.spec.column_seconds, self.sigma, self.tick_interval
        )
        return multiplier_for(p, self.house_edge)


class QuoteState:
    """The process's current QuoteBook (replaced whole, never mutated, so readers need no lock)."""

    def __init__(self) -> None:
        self.book: QuoteBook | None = None
        self.sigma: float | None = None
        self.tick_interval: float = 0.25


def grid_message(book: QuoteBook, now_ms: int) -> dict:
    """The `grid` websocket message and the body of GET /api/v1/grid: a compact quote matrix.

    ``quotes[i][j]`` is the multiplier of cell ``"<columns[i]>:<rows[j]>"`` (null: not offered).
    """
    columns = list(book.spec.placeable_columns(book.now))
    rows = list(book.spec.placeable_rows(book.current_row))
    quotes = []
    for t in columns:
        line = []
        for r in rows:
            m = book.quotes.get((t, r))
            line.append(None if m is None else format_multiplier(m))
        quotes.append(line)
    return {
        "type": "grid",
        "ts": now_ms,
        "price": format_price(book.price),
        "current_row": book.current_row,
        "column_seconds": book.spec.column_seconds,
        "price_step": format_price(book.spec.price_step),
        "columns": columns,
        "rows": rows,
        "quotes": quotes,
    }
