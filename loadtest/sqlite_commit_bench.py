"""SQLite write-path micro-benchmark: the bet transaction shape, synchronous FULL vs NORMAL.

    .venv/bin/python loadtest/sqlite_commit_bench.py [--bets 20000] [--batch 1 10 100]

Each bet is the ADR-009/010 triple run through the project's own writer code path
(`workers.sqlite_writer.run_batch`, one SAVEPOINT per bet): conditional balance UPDATE, ledger INSERT,
bet INSERT. Prints bets/s and commits/s per (synchronous, batch size). Uses a temp dir on the same disk
as the data directory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.storage import db
from app.storage.writes import WriteJob
from workers.sqlite_writer import run_batch

USERS = 1000


def bet_job(i: int):
    uid = i % USERS + 1
    stake = 1_000_000

    def fn(conn):
        conn.execute(
            "UPDATE users SET balance = balance - ? WHERE id = ? AND balance >= ?", (stake, uid, stake)
        )
        if conn.changes() == 0:
            raise ValueError("insufficient_funds")
        (bal,) = conn.execute("SELECT balance FROM users WHERE id = ?", (uid,)).fetchone()
        conn.execute(
            "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at) "
            "VALUES (?, ?, ?, 'bet', ?, ?)",
            (uid, -stake, bal, f"b{i}", i),
        )
        conn.execute(
            "INSERT INTO bets (bet_id, user_id, target_time, row, min_price, max_price, stake, multiplier, payout,"
            " nonce, placed_at) VALUES (?, ?, ?, ?, ?, ?, ?, 25000, ?, ?, ?)",
            (
                f"b{i}",
                uid,
                1_800_000_000 + 5 * (i // USERS),
                i % 20,
                6_700_000,
                6_701_000,
                stake,
                stake * 25 // 10,
                f"n{i}",
                i,
            ),
        )

    return fn


def run(sync: str, batch: int, bets: int, root: Path) -> tuple[float, float]:
    d = Path(tempfile.mkdtemp(dir=root))
    conn = db.connect(db.prepare_database(d, time.time(), sync), synchronous=sync)
    with conn:
        conn.executemany(
            "INSERT INTO users (id, address, balance, created_at) VALUES (?, ?, ?, 0)",
            [(u, "0x" + f"{u:040x}", 10**15) for u in range(1, USERS + 1)],
        )
    t0 = time.perf_counter()
    for start in range(0, bets, batch):
        run_batch(conn, [WriteJob(bet_job(i)) for i in range(start, min(bets, start + batch))])
    dt = time.perf_counter() - t0
    conn.close()
    return bets / dt, (bets / batch) / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bets", type=int, default=20000)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--dir", default=str(Path(__file__).resolve().parent.parent / "var"))
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    print("| synchronous | batch | bets/s | commits/s |\n|---|---|---|---|")
    for sync in ("FULL", "NORMAL"):
        for batch in args.batch:
            n = min(args.bets, 2000) if batch == 1 else args.bets
            bps, cps = run(sync, batch, n, root)
            print(f"| {sync} | {batch} | {bps:,.0f} | {cps:,.0f} |")


if __name__ == "__main__":
    main()
