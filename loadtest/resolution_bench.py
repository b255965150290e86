"""Resolver and rollover figures (issue 6): bets settled per second for 1M bets in one window, and the
week rollover time with 100k users.

    .venv/bin/python loadtest/resolution_bench.py [--users 100000] [--bets-per-user 10]

Starts its own redis-server on a free loopback port and uses a temp dir under var/; runs the real
resolver (`workers.resolver.Resolver`) and the real single writer (`workers.sqlite_writer`), so the
figure includes the writer thread hop, chunking, ledger rows and notification publishing.
"""

from gevent import monkey

monkey.patch_all()

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import gevent

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.bets.notify import BetNotifier
from app.keys import PRICE_HISTORY_KEY
from app.ledger.integrity import check_file
from app.storage import db
from app.storage.rollover import rollover_job
from app.storage.writes import WriteQueue
from tests.support.servers import RedisServer
from workers.resolver import Resolver
from workers.sqlite_writer import SqliteWriter

T0 = 1_800_000_000
COL = 5


def populate(path: Path, users: int, per_user: int) -> None:
    conn = db.connect(path, synchronous="NORMAL")
    stake = 1_000_000
    with conn:
        conn.executemany(
            "INSERT INTO users (id, address, balance, created_at) VALUES (?, ?, ?, 0)",
            ((u, f"0x{u:040x}", 10**12 - stake * per_user) for u in range(1, users + 1)),
        )
        conn.executemany(
            "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at)"
            " VALUES (?, ?, ?, 'deposit', ?, 0)",
            ((u, 10**12, 10**12, f"d{u}") for u in range(1, users + 1)),
        )
    bal = {}
    with conn:
        rows = []
        for u in range(1, users + 1):
            for k in range(per_user):
                bal[u] = 10**12 - stake * (k + 1)
                bet_id = f"b{u:07d}{k:02d}"
                row = 6695 + k
                rows.append(
                    (bet_id, u, T0, row, row * 1000, (row + 1) * 1000, stake, 30000, 3 * stake, bet_id, 0)
                )
                if len(rows) >= 50_000:
                    _insert(conn, rows, stake)
                    rows = []
        if rows:
            _insert(conn, rows, stake)
    conn.close()


def _insert(conn, rows, stake):
    conn.executemany(
        "INSERT INTO bets (bet_id, user_id, target_time, row, min_price, max_price, stake, multiplier, payout,"
        " nonce, placed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.executemany(
        "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at)"
        " SELECT ?, ?, (SELECT balance_after FROM transaction_ledger WHERE user_id = ? ORDER BY id DESC LIMIT 1) - ?,"
        " 'bet', ?, 0",
        ((r[1], -stake, r[1], stake, r[0]) for r in rows),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--bets-per-user", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=5000)
    ap.add_argument("--pause", type=float, default=0.0, help="the resolver's pause between chunks (s)")
    args = ap.parse_args()
    (ROOT / "var").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="resbench-", dir=ROOT / "var"))
    redis_server = RedisServer(work / "redis")
    redis_server.start()
    try:
        r = redis_server.client()
        path = db.prepare_database(work, T0)
        t = time.perf_counter()
        populate(path, args.users, args.bets_per_user)
        n_bets = args.users * args.bets_per_user
        print(
            f"populated {args.users:,} users and {n_bets:,} bets in one window in {time.perf_counter() - t:.1f}s; "
            f"file {path.stat().st_size / 1e6:.0f} MB"
        )
        r.zadd(
            PRICE_HISTORY_KEY,
            {
                f"{(T0 - 1) * 1000}:6697500": (T0 - 1) * 1000,
                f"{(T0 + 2) * 1000}:6699000": (T0 + 2) * 1000,
                f"{(T0 + 6) * 1000}:6699000": (T0 + 6) * 1000,
            },
        )
        writes = WriteQueue(10_000)
        writer = SqliteWriter(writes, work, synchronous="FULL", batch_max=100)
        g = gevent.spawn(writer.run)
        notifier = BetNotifier(r).attach(writes)
        res = Resolver(r, db.ReadPool(work), writes, column_s=COL, critical_s=10.0, notifier=notifier)
        res.chunk = args.chunk
        res.chunk_pause_s = args.pause  # the raw throughput; the server paces its chunks (Resolver)
        t = time.perf_counter()
        settled = res.resolve_due((T0 + COL + 2) * 1000)
        dt = time.perf_counter() - t
        print(
            f"| resolve one window | {settled:,} bets | {dt:.1f} s | {settled / dt:,.0f} bets/s | chunk {args.chunk} |"
        )
        t = time.perf_counter()
        violations = check_file(path)
        print(f"integrity-check of the file: {len(violations)} violations in {time.perf_counter() - t:.1f}s")
        new = work / db.week_filename(*db.iso_week(T0 + 7 * 86400))
        t = time.perf_counter()
        result = writes.call(rollover_job(work, new, "FULL"), timeout=600)
        print(
            f"| rollover | {result.users:,} users, {result.carried_bets:,} open bets carried |"
            f" {time.perf_counter() - t:.2f} s (inside the writer: {result.seconds:.2f} s) |"
        )
        writer.stop()
        g.join(30)
    finally:
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
