"""Quote calibration by multiplier bucket (SPEC §4, issue 10 item 10) and the cost of `QuoteBook.build`.

    .venv/bin/python loadtest/quote_calibration.py [--vols 0.3,0.6,1.5] [--rows 10,10,20]
                                                   [--books 400] [--paths 25] [--seed 7] [--builds 200]

For each annualised volatility: the return to players per bucket on simulated paths that mirror the
sim feed (see tests/quote_sim.py for the path, the touch rule and the estimator), as a Markdown table,
on the default grid (5 s columns, $10 rows, 2 to 12 columns ahead) with `--rows` rows each side per
volatility: at σ = 1.5 the ±10 rows offer nothing above about 15×, so ±20 rows show the upper buckets.
Then the build time of one book on the default grid (±10 rows: 10 columns × 21 rows = 210 cells) over
`--builds` builds at varied prices and instants. One process, one core; no servers.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.market.quotes import SECONDS_PER_YEAR, QuoteBook
from tests.support.quote_sim import LABELS, SPEC, simulate


def build_times(annual_vol: float, runs: int) -> tuple[list[float], float]:
    """(wall seconds per `QuoteBook.build`, CPU seconds per build on average), at prices and instants
    spread over a row and a column. The CPU figure is the steadier one on a shared machine."""
    sigma = annual_vol / math.sqrt(SECONDS_PER_YEAR)
    out = []
    cpu = time.process_time()
    for i in range(runs):
        price = 6_700_000 + (i * 379) % SPEC.price_step
        now = 1_763_712_000 + (i * 0.37) % SPEC.column_seconds
        t = time.perf_counter()
        QuoteBook.build(SPEC, price, sigma, 0.25, 500, now=now)
        out.append(time.perf_counter() - t)
    return out, (time.process_time() - cpu) / runs


def calibration(vols: list[float], rows: list[int], books: int, paths: int, seed: int) -> None:
    """Print the per-bucket table (expected return ± SE), then each run's realised figures and counts."""
    print(f"return to players by bucket, {books} books × {paths} paths each, seed {seed}")
    print("| σ | rows | " + " | ".join(LABELS) + " |")
    print("|---|---|" + "---:|" * len(LABELS))
    runs = {}
    for vol, n_rows in zip(vols, rows, strict=True):
        spec = dataclasses.replace(SPEC, rows_each_side=n_rows)
        t = time.process_time()
        runs[vol] = res = simulate(vol, seed=seed, books=books, paths=paths, spec=spec)
        took = time.process_time() - t
        cells = [f"{r.ret:.4f} ± {r.se:.4f}" if r.bets else "–" for r in res]
        print(f"| {vol} | ±{n_rows} | " + " | ".join(cells) + f" |  <!-- {took:.1f} s CPU -->")
    print()
    print("realised (one draw per window) and bets, same runs:")
    for vol, res in runs.items():
        print(f"σ = {vol}")
        for r in res:
            print("  " + r.line())
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vols", default="0.3,0.6,1.5")
    ap.add_argument("--rows", default="10,10,20", help="rows each side, one per volatility")
    ap.add_argument("--books", type=int, default=400)
    ap.add_argument("--paths", type=int, default=25)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--builds", type=int, default=200)
    ap.add_argument("--builds-only", action="store_true", help="skip the calibration runs")
    args = ap.parse_args()
    vols = [float(v) for v in args.vols.split(",")]
    rows = [int(r) for r in args.rows.split(",")]
    if len(rows) != len(vols):
        ap.error("--rows needs one value per volatility")

    if not args.builds_only:
        calibration(vols, rows, args.books, args.paths, args.seed)
    print(f"QuoteBook.build, {args.builds} builds each (ms): wall median / p90 / max, CPU mean")
    for vol in vols:
        wall, cpu = build_times(vol, args.builds)
        ts = sorted(wall)
        med, p90 = statistics.median(ts), ts[int(0.9 * (len(ts) - 1))]
        print(f"  σ = {vol}: {med * 1e3:.2f} / {p90 * 1e3:.2f} / {ts[-1] * 1e3:.2f}, CPU {cpu * 1e3:.2f}")


if __name__ == "__main__":
    main()
