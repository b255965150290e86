"""Grid rules (SPEC §3) and the quote model (SPEC §4), including calibration on simulated paths."""

import itertools
import math
import random

import pytest

from app.errors import ApiError
from app.grid import GridSpec, check_placeable, parse_cell
from app.quotes import (
    MAX_MULTIPLIER,
    SECONDS_PER_YEAR,
    QuoteBook,
    estimate_sigma,
    multiplier_for,
    touch_probability,
)
from app.units import MULT_ONE

SPEC = GridSpec(column_seconds=5, price_step=1000, min_lead_columns=2, columns_ahead=12, rows_each_side=10)
SIGMA = 0.6 / math.sqrt(SECONDS_PER_YEAR)


@pytest.mark.parametrize("cell", ["1763712005:6712", "5:0"])
def test_parse_cell(cell):
    t, r = parse_cell(cell, SPEC)
    assert f"{t}:{r}" == cell


@pytest.mark.parametrize(
    "cell",
    [
        1763712005,
        "1763712003:6712",
        "1763712005:-1",
        "x:1",
        "01763712005:1",
        "1763712005:06712",
        "1763712005:6712:1",
        "",
        "1763712005",
    ],
)
def test_parse_cell_rejects(cell):
    with pytest.raises(ApiError) as err:
        parse_cell(cell, SPEC)
    assert err.value.status == 400 and err.value.code == "invalid_cell"


@pytest.mark.parametrize(
    ("offset_cols", "row_off", "code"),
    [
        (-1, 0, "cell_too_soon"),
        (0, 0, "cell_too_soon"),
        (1, 0, "cell_too_soon"),
        (2, 0, None),
        (11, 0, None),
        (12, 0, "cell_too_far"),
        (5, 10, None),
        (5, -10, None),
        (5, 11, "row_out_of_range"),
        (5, -11, "row_out_of_range"),
    ],
)
def test_placeable_window(offset_cols, row_off, code):
    now = 1_000_002.5  # inside the column starting at 1_000_000
    t = 1_000_000 + offset_cols * 5
    if code is None:
        check_placeable(t, 6700 + row_off, now, 6700, SPEC)
    else:
        with pytest.raises(ApiError) as err:
            check_placeable(t, 6700 + row_off, now, 6700, SPEC)
        assert err.value.code == code and err.value.status == 422


def test_probability_is_monotone_in_distance_and_symmetric():
    p = [
        touch_probability(6_700_500, 6_700_000 + k * 1000, 6_701_000 + k * 1000, 10, 5, SIGMA)
        for k in range(6)
    ]
    assert all(a > b for a, b in itertools.pairwise(p))
    down = [
        touch_probability(6_700_500, 6_700_000 - k * 1000, 6_701_000 - k * 1000, 10, 5, SIGMA)
        for k in range(6)
    ]
    assert all(abs(a - b) < 0.002 for a, b in zip(p, down, strict=False))
    assert p[0] > 0.5  # the band containing the price is likely touched


def test_probability_matches_monte_carlo_of_continuous_brownian_motion():
    rng = random.Random(5)
    dt, t1, window = 0.01, 7.5, 5.0
    x0, lo, hi = 6_700_000, 6_702_000, 6_703_000
    hits, n = 0, 3000
    sd = SIGMA * math.sqrt(dt)
    for _ in range(n):
        x = math.log(x0)
        for _ in range(int(t1 / dt)):
            x += sd * rng.gauss(0, 1)
        touched = math.log(lo) <= x <= math.log(hi)
        for _ in range(int(window / dt)):
            if touched:
                break
            x += sd * rng.gauss(0, 1)
            touched = math.log(lo) <= x <= math.log(hi)
        hits += touched
    p_model = touch_probability(x0, lo, hi, t1, window, SIGMA, tick_interval=dt)
    se = math.sqrt(p_model * (1 - p_model) / n)
    assert abs(hits / n - p_model) < 4 * se


def test_multiplier_rounding_and_clamps():
    assert multiplier_for(0.5, 500) == 19000  # 0.95 / 0.5 = 1.9
    assert multiplier_for(0.3, 500) == 31666  # 3.16666… rounded down to 4 decimals
    assert multiplier_for(0.0001, 500) == MAX_MULTIPLIER
    assert multiplier_for(0.0, 500) == MAX_MULTIPLIER
    assert multiplier_for(1e-320, 500) == MAX_MULTIPLIER  # no overflow on a frozen or absurd feed
    assert multiplier_for(0.99, 500) is None  # fair value 0.96 < 1.01: not offered


def test_sigma_estimate_recovers_known_volatility():
    rng = random.Random(3)
    ticks, x, t = [], math.log(6_700_000), 0
    for _ in range(1200):
        ticks.append((t, round(math.exp(x))))
        x += SIGMA * math.sqrt(0.25) * rng.gauss(0, 1)
        t += 250
    sigma, interval = estimate_sigma(ticks, prior=0.3)
    assert abs(sigma / SIGMA - 1) < 0.08
    assert interval == pytest.approx(0.25)
    assert estimate_sigma(ticks[:5], prior=0.3)[0] == pytest.approx(0.3 / math.sqrt(SECONDS_PER_YEAR))


def _simulate_returns(seed: int, points: int) -> tuple[float, float, int]:
    """Bets on every quoted cell (multiplier ≤ 10) at random instants of a simulated GBM path with 250 ms
    ticks, resolved with SPEC §3's rule. Returns (payout/stake, standard error, bets)."""
    rng = random.Random(seed)
    dt = 0.25
    sd = SIGMA * math.sqrt(dt)
    logp, t = math.log(6_700_000), 0.0
    per_point, stake_total, paid_total = [], 0, 0.0
    for _ in range(points):
        for _ in range(int((30 + rng.random() * 5) / dt)):  # decorrelate decision points
            logp += sd * rng.gauss(0, 1)
            t += dt
        price = round(math.exp(logp))
        book = QuoteBook.build(SPEC, price, SIGMA, dt, 500, now=t)
        end = max(ts for ts, _ in book.quotes) + SPEC.column_seconds
        ticks, lp, tt = [(t, price)], logp, t
        while tt < end:
            lp += sd * rng.gauss(0, 1)
            tt += dt
            ticks.append((tt, round(math.exp(lp))))
        stakes = paid = 0
        for (ts, row), m in book.quotes.items():
            if m is None or m > 10 * MULT_ONE:
                continue
            in_force = max((x for x in ticks if x[0] <= ts), key=lambda x: x[0])[1]
            inside = [p for x, p in ticks if ts <= x < ts + SPEC.column_seconds]
            lo, hi = min([in_force, *inside]), max([in_force, *inside])
            band_lo, band_hi = SPEC.band(row)
            stakes += 1
            if band_lo <= hi and band_hi >= lo:
                paid += m / MULT_ONE
        per_point.append(paid / stakes)
        stake_total += stakes
        paid_total += paid
    mean = sum(per_point) / len(per_point)
    se = math.sqrt(sum((x - mean) ** 2 for x in per_point) / (len(per_point) - 1) / len(per_point))
    return paid_total / stake_total, se, stake_total


def test_calibration_realised_return_is_one_minus_house_edge():
    """SPEC §4: on paths of known volatility the players' realised return is within ±1.5 points of 0.95."""
    ret, se, bets = _simulate_returns(seed=11, points=1500)
    assert bets > 150_000
    assert se < 0.006  # enough bets for the ±1.5-point bound to mean something
    assert abs(ret - 0.95) <= 0.015, f"realised return {ret:.4f} ± {se:.4f}"
