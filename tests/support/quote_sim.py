"""Calibration of the quotes (SPEC §4) on simulated paths that look like the live feed.

Shared by the calibration test (tests/test_grid_quotes.py) and the measurement script
(loadtest/quote_calibration.py). Pure Python: numpy is not a dependency of the project.

The feed: as the `sim` price source (workers/price_sim.py), log price is a driftless Brownian motion
sampled by ticks `tick_ms` × U(0.8, 1.2) apart, each tick's price rounded to cents, ticks not aligned
with column boundaries. A book is built at the instant of a tick from that tick's price, as the grid
publisher does on every tick, with the true σ and tick interval; every quoted cell gets a unit stake.
A bet is resolved as the resolver does it (SPEC §3, app/market/prices.py `window_stats`): `lo`/`hi` over the
price in force when the window opens and every tick inside ``[t_start, t_start + column_seconds)``, and
the band ``[row × step, (row + 1) × step]`` wins iff ``band_low ≤ hi and band_high ≥ lo``.

How the touch is computed. For one column, write the log price at the opening tick (the one in force at
`t_start`, τ seconds after the book's tick) as x0 + X, and the window's ticks relative to it, so the
window's lowest/highest log price is X + m and X + M (m ≤ 0 ≤ M, from the simulated ticks). X is the sum
of the independent Gaussian tick moves before the window, so X ~ N(0, σ²τ) exactly, independent of m and
M. Rounding to cents included, the bet wins iff ``lb − m ≥ X ≥ la − M`` with ``la = log(band_low − ½) − x0``
and ``lb = log(band_high + ½) − x0``. The simulation therefore draws, for every column of every path, the
tick times and the window's own ticks (m, M), and then

- *realised*: draws X and resolves every cell by the rule above (in cents, as SPEC §3 words it);
- *expected*: takes the expectation over X in closed form, P(win | m, M) = Φ((lb − m)/s) − Φ((la − M)/s)
  with s = σ√τ (conditional Monte Carlo). Unbiased for the same quantity as the realised figure, with
  most of its variance gone: a 50× cell wins about once in 50 paths, while its conditional probability
  is known on every path. This is what makes ±1.5 points in the 30–100× bucket affordable in seconds.

Windows of different columns use disjoint ticks, so within a path columns are independent given the
tick times; rows of one column are not (touched rows are contiguous). Standard errors treat each book
(its `paths` continuations) as one cluster of the ratio estimator Σ paid / Σ staked, which covers both.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add, mul, sub

from app.market.grid import GridSpec
from app.market.quotes import MAX_MULTIPLIER, SECONDS_PER_YEAR, QuoteBook
from app.units import MULT_ONE

# (label, lowest multiplier, highest multiplier excluded), 1e-4 units. The clamp (exactly 100) is separate.
BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("1–2", 0, 20_000),
    ("2–5", 20_000, 50_000),
    ("5–10", 50_000, 100_000),
    ("10–30", 100_000, 300_000),
    ("30–100", 300_000, MAX_MULTIPLIER),
)
CLAMP = "100 (clamp)"
LABELS: tuple[str, ...] = (*(b[0] for b in BUCKETS), CLAMP)

SPEC = GridSpec(column_seconds=5, price_step=1000, min_lead_columns=2, columns_ahead=12, rows_each_side=10)

_SQRT1_2 = math.sqrt(0.5)


def bucket_index(multiplier: int) -> int:
    """Index into LABELS of a quoted multiplier (1e-4 units)."""
    if multiplier >= MAX_MULTIPLIER:
        return len(BUCKETS)
    for i, (_, lo, hi) in enumerate(BUCKETS):
        if lo <= multiplier < hi:
            return i
    raise ValueError(multiplier)


def _ratio_se(clusters: list[tuple[int, float]], total_bets: int, ratio: float) -> float:
    """Standard error of Σy/Σn with one (n, y) per independent cluster (linearised ratio estimator)."""
    k = len(clusters)
    if k < 2 or not total_bets:
        return math.inf
    ss = sum((y - ratio * n) ** 2 for n, y in clusters)
    return math.sqrt(ss * k / (k - 1)) / total_bets


@dataclass
class BucketResult:
    """Unit-stake bets in one multiplier bucket: return to players (Σ paid / Σ staked) and standard errors."""

    label: str
    bets: int = 0
    expected_paid: float = 0.0  # Σ multiplier × P(win | the window's ticks)
    realised_paid: float = 0.0  # Σ multiplier of the bets that won
    wins: int = 0
    multiplier_sum: float = 0.0
    clusters: list[tuple[int, float, float]] = field(default_factory=list, repr=False)  # (bets, exp, real)

    @property
    def ret(self) -> float:
        """Expected return to players (conditional Monte Carlo): the figure the calibration bound is on."""
        return self.expected_paid / self.bets if self.bets else math.nan

    @property
    def se(self) -> float:
        return _ratio_se([(n, e) for n, e, _ in self.clusters], self.bets, self.ret)

    @property
    def realised(self) -> float:
        """Realised return to players on the same paths (one draw of the opening price per window)."""
        return self.realised_paid / self.bets if self.bets else math.nan

    @property
    def realised_se(self) -> float:
        return _ratio_se([(n, r) for n, _, r in self.clusters], self.bets, self.realised)

    @property
    def mean_multiplier(self) -> float:
        return self.multiplier_sum / self.bets if self.bets else math.nan

    def line(self) -> str:
        return (
            f"{self.label:>12}: {self.ret:.4f} ± {self.se:.4f}  realised {self.realised:.4f} ± "
            f"{self.realised_se:.4f}  ({self.bets} bets, {self.wins} won, mean ×{self.mean_multiplier:.2f})"
        )


def table(results: list[BucketResult]) -> str:
    return "\n".join(r.line() for r in results)


def simulate(
    annual_vol: float,
    *,
    seed: int,
    books: int,
    paths: int,
    spec: GridSpec = SPEC,
    house_edge: int = 500,
    tick_ms: int = 250,
    jitter: float = 0.2,
    price: int = 6_700_000,
) -> list[BucketResult]:
    """Return to players per bucket (LABELS order) over `books` × `paths` simulated futures."""
    rng = random.Random(seed)
    gauss, rand = rng.gauss, rng.random
    exp, sqrt, erfc = math.exp, math.sqrt, math.erfc
    sigma = annual_vol / sqrt(SECONDS_PER_YEAR)  # per √second
    tick = tick_ms / 1000
    step, width = spec.price_step, spec.column_seconds
    results = [BucketResult(label) for label in LABELS]
    t0 = 1_763_712_000  # a column start (Unix seconds)
    for _ in range(books):
        now = t0 + rand() * width  # the book's tick, anywhere in the current column
        start = price + rng.randrange(step)  # anywhere in its row
        x0 = math.log(start)
        book = QuoteBook.build(spec, start, sigma, tick, house_edge, now=now)
        # per column: {row: (multiplier, bucket)} for the touch rule, and per bucket the multipliers
        # and −la, −lb of its cells (module docstring) for the expectation
        cells: dict[int, dict[int, tuple[int, int]]] = {}
        groups: dict[int, dict[int, tuple[list[int], list[float], list[float]]]] = {}
        stakes = [0] * len(LABELS)
        for (ts, row), m in book.quotes.items():
            if m is None:
                continue
            b = bucket_index(m)
            lo, hi = spec.band(row)
            cells.setdefault(ts, {})[row] = (m, b)
            ms, neg_la, neg_lb = groups.setdefault(ts, {}).setdefault(b, ([], [], []))
            ms.append(m)
            neg_la.append(x0 - math.log(lo - 0.5))
            neg_lb.append(x0 - math.log(hi + 0.5))
            stakes[b] += paths
            results[b].multiplier_sum += m * paths / MULT_ONE
        if not cells:
            continue
        end = max(cells) + width
        n_ticks = int((end - now) / tick * 1.05) + 8
        expected = [0.0] * len(LABELS)
        realised = [0.0] * len(LABELS)
        wins = [0] * len(LABELS)
        for _ in range(paths):
            # tick k arrives dt_k after tick k-1 (tick 0 is the book's) and moves log price by N(0, σ²·dt_k)
            dts = [tick * (1 - jitter + 2 * jitter * rand()) for _ in range(n_ticks)]
            times = list(accumulate(dts, initial=now))
            while times[-1] < end:  # rare: not enough ticks drawn
                more = [tick * (1 - jitter + 2 * jitter * rand()) for _ in range(8)]
                dts += more
                times += list(accumulate(more, initial=times[-1]))[1:]
            sds = [sigma * sqrt(dt) for dt in dts]
            for ts, column in cells.items():
                i0 = bisect_right(times, ts) - 1  # the tick in force at the window's open
                i1 = bisect_left(times, ts + width)  # the first tick at or after the window's end
                steps = map(gauss, repeat(0.0, i1 - 1 - i0), sds[i0 : i1 - 1])
                walk = list(accumulate(steps, initial=0.0))
                low, high = min(walk), max(walk)
                s = sigma * sqrt(times[i0] - now)  # spread of the opening log price around x0
                k = _SQRT1_2 / s
                for b, (ms, neg_la, neg_lb) in groups[ts].items():
                    # P(win) = Φ((lb − low)/s) − Φ((la − high)/s) = ½·[erfc((low − lb)·k) − erfc((high − la)·k)]
                    e_lb = map(erfc, map(mul, map(add, neg_lb, repeat(low)), repeat(k)))
                    e_la = map(erfc, map(mul, map(add, neg_la, repeat(high)), repeat(k)))
                    expected[b] += 0.5 * sum(map(mul, ms, map(sub, e_lb, e_la)))
                x = x0 + s * gauss(0.0, 1.0)
                lo_c, hi_c = round(exp(x + low)), round(exp(x + high))
                for row in range(-(-lo_c // step) - 1, hi_c // step + 1):  # band_low ≤ hi and band_high ≥ lo
                    cell = column.get(row)
                    if cell is not None:
                        realised[cell[1]] += cell[0]
                        wins[cell[1]] += 1
        for b, res in enumerate(results):
            if stakes[b]:
                res.bets += stakes[b]
                res.expected_paid += expected[b] / MULT_ONE
                res.realised_paid += realised[b] / MULT_ONE
                res.wins += wins[b]
                res.clusters.append((stakes[b], expected[b] / MULT_ONE, realised[b] / MULT_ONE))
    return results
