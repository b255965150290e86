#!/usr/bin/env python3
"""The GIL convoy: how long the SQLite writer's batch takes while the hub thread is busy.

    .venv/bin/python loadtest/writer_convoy.py                   # every setting, 100 bets a batch
    .venv/bin/python loadtest/writer_convoy.py --switch 5 1 0.5 --batch 100 --batches 60

The worker's shape, without the network: this process is pinned to one CPU (the server's core); the
main thread spins in pure Python (a saturated hub: it never blocks, so it gives the GIL up only when
the switch interval asks it to), while a second thread runs the writer's real `run_batch` on real bet
jobs (`app.bets.store.insert_bet`: the conditional UPDATE, the ledger row, the bet row) against a
fresh week file (`synchronous=FULL`). For each `sys.setswitchinterval` and each way of running a batch
(one SAVEPOINT per job, as before; or the re-runnable fast path), it prints the batch time
(p50/p99/max) and how much of the CPU the busy thread kept. Bounded: `--batches` per setting.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.bets.store import NewBet, insert_bet
from app.storage import db
from app.storage.writes import WriteJob
from workers.sqlite_writer import run_batch

USERS = 1000


def bets(start: int, n: int, careful: bool) -> list[WriteJob]:
    jobs = []
    for i in range(start, start + n):
        fn = insert_bet(
            NewBet(
                bet_id=f"b{i:020d}",
                user_id=i % USERS + 1,
                address="0x" + f"{i % USERS + 1:040x}",
                cell=f"{1_800_000_000 + 5 * (i // USERS)}:{i % 20}",
                t_start=1_800_000_000 + 5 * (i // USERS),
                row=i % 20,
                min_price=6_700_000,
                max_price=6_701_000,
                stake=1_000_000,
                multiplier=25_000,
                payout=2_500_000,
                nonce=f"n{i}",
                placed_at=i,
            )
        )
        jobs.append(WriteJob(_unmarked(fn) if careful else fn))
    return jobs


def _unmarked(fn):
    """The same job without the re-runnable mark: one SAVEPOINT per job, as before."""

    def job(conn):
        return fn(conn)

    return job


def measure(switch_ms: float, careful: bool, batch: int, batches: int, root: Path) -> dict:
    d = Path(tempfile.mkdtemp(dir=root))
    conn = db.connect(db.prepare_database(d, time.time(), "FULL"), synchronous="FULL")
    with conn:
        conn.executemany(
            "INSERT INTO users (id, address, balance, created_at) VALUES (?, ?, ?, 0)",
            [(u, "0x" + f"{u:040x}", 10**15) for u in range(1, USERS + 1)],
        )
    sys.setswitchinterval(switch_ms / 1000)
    stop = threading.Event()
    spins = [0]

    def busy() -> None:  # the saturated hub
        n = 0
        while not stop.is_set():
            for _ in range(1000):
                n += 1
        spins[0] = n

    times = []
    # quiet reference: how fast the busy loop runs alone for 1 s
    t = threading.Thread(target=busy)
    t.start()
    time.sleep(1.0)
    stop.set()
    t.join()
    alone = spins[0]
    stop.clear()
    t = threading.Thread(target=busy)
    t.start()
    t0 = time.perf_counter()
    for k in range(batches):
        jobs = bets(k * batch, batch, careful)
        s = time.perf_counter()
        run_batch(conn, jobs)
        times.append((time.perf_counter() - s) * 1000)
    wall = time.perf_counter() - t0
    stop.set()
    t.join()
    conn.close()
    times.sort()
    return {
        "switch_ms": switch_ms,
        "mode": "SAVEPOINT per job" if careful else "re-runnable (no SAVEPOINT)",
        "p50": statistics.median(times),
        "p99": times[min(len(times) - 1, int(0.99 * len(times)))],
        "max": times[-1],
        "bets_per_s": batch * batches / wall,
        "busy_kept": spins[0] / wall / alone,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--switch", type=float, nargs="+", default=[5, 1, 0.5, 0.2])
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--batches", type=int, default=40)
    args = ap.parse_args()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {0})
    root = Path(tempfile.mkdtemp(prefix="convoy-"))
    print("| switch interval | batch mode | batch ms p50 / p99 / max | bets/s | busy thread kept |")
    print("|---:|---|---|---:|---:|")
    for sw in args.switch:
        for careful in (True, False):
            r = measure(sw, careful, args.batch, args.batches, root)
            print(
                f"| {r['switch_ms']:g} ms | {r['mode']} | {r['p50']:.1f} / {r['p99']:.1f} / {r['max']:.1f} | "
                f"{r['bets_per_s']:.0f} | {r['busy_kept'] * 100:.0f}% |",
                flush=True,
            )
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
