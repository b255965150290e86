"""Multipliers from a driftless Brownian model of log price (SPEC §4).

``multiplier = (1 − house_edge) / P(touch)``, rounded down to 4 decimals and clamped to [1.01, 100].

P(touch) for a band [a, b] and a window [t1, t2] seen from now (t1 > 0). The window opens on the price
of the tick in force at t1, on average half a tick interval Δt older than t1, so its log x is normal
around today's with spread s = σ√(t1 − Δt/2). From a start x inside the band the bet has won already
(SPEC §3 counts the price in force when the window opens): a certain touch, whatever the ticks do
next. From below, the bet wins iff the path reaches log a during the window; for a continuously watched
path the reflection principle gives P = 2·Q(d/v) with d = log a − x and v = σ√(t2 − t1); symmetrically
from above. P(touch) is the expectation of that over x: the inside in closed form, each side integrated
numerically (Simpson).

Ticks are discrete, and the touch rule joins consecutive ticks with straight lines, so what counts is
the highest (lowest) tick: an excursion between two ticks that comes back is not seen. A level d away
is reached by m = (t2 − t1)/Δt discrete steps about as often as a continuous path reaches
d·(1 − γ/m) + β·σ√Δt: β = 0.5826 is the Broadie–Glasserman continuity correction; γ = 0.133 its
second-order term, fitted to the exact tail of the maximum of an m-step Gaussian random walk (computed
numerically through the Lindley recursion): with β alone the crossing probability is 1–4 % low at 4–10
tick standard deviations for m = 20, enough to overpay far cells by about a point; with γ it is within
0.6 % at m = 20 up to 14 tick standard deviations (0.2 % at m = 40, 1.2 % at m = 10 up to 10).
Within half a tick standard deviation of the band both overstate the crossing, by up to 2.5 %: about
0.1–0.2 point of return in the house's favour (BENCHMARKS.md, quote calibration). The correction
applies to the distance from outside the band only, never to the band itself: moving the band's edges
inward (as this module once did) turns starts just inside the band, certain touches, into likely misses
and overpays 1–10× cells.

A cell whose fair multiplier would be below 1.01 (a near-certain touch) gets no quote rather than a
multiplier that would hand the player an edge; cells that rare get the 100× cap.

**Quotes lean against exposure** (SPEC §8b). With ``u`` the larger of the cell's open potential
payout over ``TAP_MAX_CELL_PAYOUT`` and its column's over ``TAP_MAX_COLUMN_PAYOUT`` (clamped to
[0, 1]), the quoted multiplier is

    shaded = max(1.01, floor(m × (1 − SHADE_K · u^SHADE_P)))   and never above m,

with m the model's multiplier above, ``SHADE_K`` = 0.5 and ``SHADE_P`` = 2: nothing for an empty book
(the calibration above holds as is), −3 % at a quarter of the cap, −12.5 % at half, −50 % at the
cap (where the claim script refuses anything more anyway). Quadratic, so that small books are not
penalised, and steep near the cap, so the last room left in a cell goes at a price that pays the
house for the risk. Float arithmetic is fine here: the result is floored to an integer in 1e-4 units.
The grid publisher shades the book from a snapshot of the liability it reads each quarter second
(`Exposure`), and the bet path charges the quote of that same book, so the trader pays what the grid
showed; the caps themselves are enforced exactly, in the claim script.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from app.market.grid import GridSpec
from app.units import MULT_ONE, format_multiplier, format_price

MIN_MULTIPLIER = 10_100  # 1.01
MAX_MULTIPLIER = 1_000_000  # 100
BG_BETA = 0.5826  # Broadie–Glasserman: -zeta(1/2)/sqrt(2*pi)
BG_GAMMA = 0.133  # second-order term: a distance d counts as d·(1 − γ/m) for m ticks a window
SECONDS_PER_YEAR = 365 * 24 * 3600
_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SIMPSON_N = 24  # intervals per side (even), at least
_MIN_CACHED_RATIO = 0.25  # below, per-column nodes on [0, 8/ratio] would be too many (see side_integral)
SHADE_K = 0.5  # the share of the multiplier taken away at the cap
SHADE_P = 2  # the curve's power: gentle while the book is small


def _phi_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


@functools.lru_cache(maxsize=64)
def _side_nodes(ratio: float, offset: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Nodes u_i and weights of `side_integral`'s Simpson rule, with the window factor 2Q(u_i·ratio + offset)
    and 1/√(2π) folded into the weights.

    They depend only on the column (σ, lead time, window, tick interval), not on the row, so a book
    computes them once per column: the erfc calls leave the per-cell loop. The range [0, 8/ratio] ends
    where 2Q(8) ≈ 1e-15; the step stays ≤ 1/3 of the start spread so φ(za − u) is resolved too.
    """
    upper = 8.0 / ratio
    n = max(_SIMPSON_N, 2 * math.ceil(1.5 * upper))
    h = upper / n
    nodes, weights = [], []
    for i in range(n + 1):
        u = i * h
        simpson = 1 if i in (0, n) else (4 if i % 2 else 2)
        nodes.append(u)
        weights.append(simpson * h / 3.0 * _INV_SQRT_2PI * math.erfc((u * ratio + offset) / _SQRT2))
    return tuple(nodes), tuple(weights)


def side_integral(za: float, ratio: float, offset: float) -> float:
    """∫_{u≥0} φ(za − u) · 2Q(u·ratio + offset) du: P(start beyond a barrier `za`, then reach it).

    In units of the start spread s: `za` is the barrier, u ≥ 0 how far beyond it the window starts (u = 0
    is the band's own edge; the inside is a certain touch, counted by the caller). `ratio` is s / v times
    the discrete-monitoring stretch, `offset` the discrete-monitoring shift in units of v.
    """
    if ratio <= 0 or za <= -8.0:  # opening beyond the barrier is itself rarer than φ(8)
        return 0.0
    exp = math.exp
    if ratio >= _MIN_CACHED_RATIO:
        nodes, weights = _side_nodes(ratio, offset)
        return sum(w * exp(-0.5 * (za - u) ** 2) for u, w in zip(nodes, weights, strict=True))
    # A window opening very soon (s ≪ v): [0, 8/ratio] would need too many nodes, so integrate this cell
    # over where φ(za − u) lives, [za − 8, za + 8] within [0, 8/ratio], erfc at each node.
    lo, hi = max(0.0, za - 8.0), min(8.0 / ratio, za + 8.0)
    if hi <= lo:
        return 0.0
    n = 2 * _SIMPSON_N
    h = (hi - lo) / n
    total = 0.0
    for i in range(n + 1):
        u = lo + i * h
        f = exp(-0.5 * (za - u) ** 2) * math.erfc((u * ratio + offset) / _SQRT2)
        total += f if i in (0, n) else (4 * f if i % 2 else 2 * f)
    return total * h / 3.0 * _INV_SQRT_2PI


def touch_probability(
    price: int, band_lo: int, band_hi: int, t1: float, window: float, sigma: float, tick_interval: float = 0.0
) -> float:
    """P(the price path touches [band_lo, band_hi] during [now + t1, now + t1 + window]).

    `price` and the band in cents, times in seconds, `sigma` the volatility of log price per √second,
    `tick_interval` the feed's mean tick interval (0: a continuously watched path).
    """
    if band_lo <= 0 or price <= 0:
        raise ValueError("prices must be positive")
    x0 = math.log(price)
    la, lb = math.log(band_lo), math.log(band_hi)
    v = sigma * math.sqrt(window)
    # discrete monitoring: from outside, a distance d counts as d·stretch + shift (module docstring)
    shift = BG_BETA * sigma * math.sqrt(tick_interval) if tick_interval > 0 else 0.0
    stretch = max(0.5, 1.0 - BG_GAMMA * tick_interval / window) if window > 0 else 1.0
    s = sigma * math.sqrt(max(t1 - 0.5 * tick_interval, 0.0))  # the opening tick is ~Δt/2 before t1
    if s < 1e-12:  # the window opens now: the start price is known
        if la <= x0 <= lb:
            return 1.0
        d = (la - x0) if x0 < la else (x0 - lb)
        return math.erfc((d * stretch + shift) / (v * _SQRT2)) if v > 0 else 0.0
    za = (la - x0) / s
    zb = (lb - x0) / s
    p_in = _phi_cdf(zb) - _phi_cdf(za)  # opens inside the band: a certain touch
    ratio = s / v * stretch if v > 0 else 0.0
    offset = shift / v if v > 0 else 0.0
    p_below = side_integral(za, ratio, offset)  # opens below a, rises to it
    p_above = side_integral(-zb, ratio, offset)  # opens above b, falls to it (mirror image)
    return min(1.0, max(0.0, p_in + p_below + p_above))


def multiplier_for(probability: float, house_edge_units: int) -> int | None:
    """Multiplier in 1e-4 units, floored, capped at 100; None when the fair value is below 1.01."""
    if probability * MAX_MULTIPLIER <= MULT_ONE - house_edge_units:  # fair value at or above the cap
        return MAX_MULTIPLIER
    raw = (MULT_ONE - house_edge_units) / probability  # in 1e-4 units, still real-valued
    if raw < MIN_MULTIPLIER:
        return None
    return math.floor(raw)


def shade(multiplier: int | None, used: float) -> int | None:
    """The multiplier leaning against exposure: `used` is the share of the cap taken (module docstring).

    >>> shade(30_000, 0.0), shade(30_000, 0.5), shade(30_000, 1.0), shade(10_200, 1.0)
    (30000, 26250, 15000, 10100)
    """
    if multiplier is None or used <= 0.0:
        return multiplier
    u = min(1.0, used)
    shaded = math.floor(multiplier * (1.0 - SHADE_K * u**SHADE_P))
    return min(multiplier, max(MIN_MULTIPLIER, shaded))


@dataclass(frozen=True)
class Exposure:
    """A snapshot of the open potential payout (micro-units) per cell and per column, and the caps."""

    cell_cap: int
    column_cap: int
    cells: dict[tuple[int, int], int] = field(default_factory=dict)
    columns: dict[int, int] = field(default_factory=dict)

    def used(self, t_start: int, row: int) -> float:
        """The share of its caps a cell has used: the larger of the cell's and its column's."""
        cell = self.cells.get((t_start, row), 0) / self.cell_cap if self.cell_cap > 0 else 0.0
        column = self.columns.get(t_start, 0) / self.column_cap if self.column_cap > 0 else 0.0
        return max(cell, column)


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
    quotes: dict[tuple[int, int], int | None] = field(default_factory=dict)  # shaded: what is charged
    # When the price the book was built from arrived, in Unix ms on the book's clock (`now`'s): the
    # publisher places it there from the tick's age on the monotonic clock (workers/grid_publisher.py)
    tick_ts: int | None = None
    base: dict[tuple[int, int], int | None] = field(default_factory=dict)  # the model's, unshaded
    exposure: Exposure | None = None  # the liability the quotes were shaded by (None: none)
    _matrix: tuple[list[int], list[int], list[list[str | None]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def matrix(self, now: float | None = None) -> tuple[list[int], list[int], list[list[str | None]]]:
        """The columns placeable at `now` (wall seconds; default and at the earliest the build time),
        rows and formatted multipliers of `grid_message`, built once per book and column set
        (read-only: shared). The book is replaced, never changed, up to four times a second, while
        GET /api/v1/grid and the publisher's broadcast ask for it far more often; formatting every
        cell was ~110 µs a request.

        Placeability is judged at `now`, as a tap is (SPEC §3): a book built just before a column
        boundary and served after it lists the column that just opened (quoted by `quote`, what a tap
        there is charged) instead of one that no longer takes bets."""
        at = self.now if now is None else max(now, self.now)
        columns = self.spec.placeable_columns(at)
        cached = self._matrix
        if cached is not None and cached[0][:1] == list(columns[:1]):
            return cached
        rows = list(self.spec.placeable_rows(self.current_row))
        quotes = []
        for t in columns:
            line = []
            for r in rows:
                m = self.quote(t, r)
                line.append(None if m is None else format_multiplier(m))
            quotes.append(line)
        built = (list(columns), rows, quotes)
        self._matrix = built
        return built

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
        book.base = book.quotes
        return book

    def with_exposure(self, exposure: Exposure | None) -> QuoteBook:
        """A copy of this book with its quotes shaded by `exposure` (cheap: no probability is computed)."""
        if exposure is None:
            return dataclasses.replace(self, quotes=self.base, exposure=None)
        quotes = {(t, r): shade(m, exposure.used(t, r)) for (t, r), m in self.base.items()}
        return dataclasses.replace(self, quotes=quotes, exposure=exposure)

    def quote(self, t_start: int, row: int) -> int | None:
        """The multiplier charged for a cell: the book's (shaded) quote, computed if not in the book."""
        cached = self.quotes.get((t_start, row), 0)
        if cached != 0:
            return cached
        lo, hi = self.spec.band(row)
        p = touch_probability(
            self.price, lo, hi, t_start - self.now, self.spec.column_seconds, self.sigma, self.tick_interval
        )
        m = multiplier_for(p, self.house_edge)
        return m if self.exposure is None else shade(m, self.exposure.used(t_start, row))


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
    columns, rows, quotes = book.matrix(now_ms / 1000)
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
