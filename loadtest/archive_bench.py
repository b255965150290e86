"""Archive throughput and peak memory for a large closed week file (issue 6).

    .venv/bin/python loadtest/archive_bench.py --size-mb 1024 [--targets local s3] [--keep]

1. Generates a closed week file of realistic rows (users, bets, transaction_ledger with balance chains
   that pass `flask integrity-check`) of at least ``--size-mb`` MiB in a temp dir on this disk
   (``--workdir``, default the system temp dir), plus a CURRENT week file and four newer closed weeks,
   so the big one is eligible for archival exactly as in production.
2. For each target, runs ``flask --app wsgi archive run`` in a child process (the real CLI, progress on),
   and measures wall time and the child's peak RSS (``wait4`` rusage, i.e. VmHWM), then restores the week
   the same way (``flask archive restore``). The s3 target is a local ``moto_server`` on 127.0.0.1.
3. Prints a Markdown table; deletes the temp dir unless ``--keep``.

`fill_week` is also used by tests/test_archive*.py to make small synthetic week files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.storage import db

PRESETS = (1_000_000, 5_000_000, 10_000_000, 25_000_000, 100_000_000)  # micro-units
COLUMN_S = 5
PRICE_STEP = 1000  # cents


def _address(rng: random.Random) -> str:
    return "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(40))


def fill_week(
    path: Path,
    *,
    week: tuple[int, int],
    bets: int,
    users: int = 200,
    seed: int = 1,
    batch: int = 20_000,
    fast: bool = False,
) -> dict[str, int]:
    """Create (or extend nothing: `path` must not exist) a week file with `bets` realistic bets.

    Every user gets a deposit, then bets spread over the week's 5-second columns (one bet per user per
    cell), each with its debit row; three columns later it is settled (won → payout row, void → refund
    row, lost → none), so the file passes `app.ledger.integrity.check_file`. Returns the row counts.
    `fast` turns off fsync while generating (benchmarks only; the file is checkpointed at the end).
    """
    if path.exists():
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    conn = db.connect(path)
    try:
        db.migrate(conn)
        if fast:
            conn.execute("PRAGMA synchronous = OFF")
        monday = dt.datetime.combine(dt.date.fromisocalendar(week[0], week[1], 1), dt.time(), tzinfo=dt.UTC)
        t0 = int(monday.timestamp())
        columns = 7 * 86400 // COLUMN_S
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO week_meta (key, value) VALUES (?, ?)",
            [("week", f"{week[0]:04d}_{week[1]:02d}"), ("opened_at", str(t0 * 1000))],
        )
        balances = {}
        ledger: list[tuple] = []
        for uid in range(1, users + 1):
            deposit = rng.choice((1000, 5000, 20000, 100000)) * 1_000_000_000  # enough to never go broke
            conn.execute(
                "INSERT INTO users (id, address, balance, created_at) VALUES (?, ?, 0, ?)",
                (uid, _address(rng), t0 * 1000),
            )
            balances[uid] = deposit
            ledger.append((uid, deposit, deposit, "deposit", f"dep-{week[0]}{week[1]:02d}-{uid}", t0 * 1000))
        per_column = max(1, min(users, -(-bets // columns)))
        bet_rows: list[tuple] = []
        settle_rows: list[tuple] = []  # (status, settled_at, bet_id)
        pending: dict[int, list[tuple]] = {}
        made = 0
        col = 0
        price = 6_700_000  # cents

        def flush() -> None:
            conn.executemany(
                "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                ledger,
            )
            conn.executemany(
                "INSERT INTO bets (bet_id, user_id, target_time, row, min_price, max_price, stake, multiplier,"
                " payout, status, nonce, placed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'confirmed', ?, ?)",
                bet_rows,
            )
            conn.executemany("UPDATE bets SET status = ?, settled_at = ? WHERE bet_id = ?", settle_rows)
            ledger.clear()
            bet_rows.clear()
            settle_rows.clear()

        def settle(items: list[tuple]) -> None:
            for bet_id, uid, stake, payout, multiplier, t_start in items:
                settled_at = (t_start + COLUMN_S) * 1000 + rng.randrange(50, 900)
                r = rng.random()
                if r < 0.005:
                    balances[uid] += stake
                    ledger.append((uid, stake, balances[uid], "refund", bet_id, settled_at))
                    settle_rows.append(("void", settled_at, bet_id))
                elif r < 9500 / multiplier:
                    balances[uid] += payout
                    ledger.append((uid, payout, balances[uid], "payout", bet_id, settled_at))
                    settle_rows.append(("won", settled_at, bet_id))
                else:
                    settle_rows.append(("lost", settled_at, bet_id))

        while made < bets:
            t_start = t0 + (col % columns) * COLUMN_S
            if col >= columns:  # more bets than a week of full columns: reuse columns with other rows
                t_start += 0
            price += rng.randint(-400, 400)
            base_row = price // PRICE_STEP
            n = min(per_column, bets - made)
            column_bets = []
            for uid in rng.sample(range(1, users + 1), n):
                row = base_row + rng.randint(-10, 10) + (col // columns) * 100
                stake = rng.choice(PRESETS)
                multiplier = rng.randint(11_000, 400_000)
                payout = stake * multiplier // 10_000
                placed_ms = (t_start - rng.randint(10, 60)) * 1000 + rng.randrange(1000)
                bet_id = f"{placed_ms:012x}{rng.getrandbits(40):010x}"
                balances[uid] -= stake
                ledger.append((uid, -stake, balances[uid], "bet", bet_id, placed_ms))
                bet_rows.append(
                    (
                        bet_id,
                        uid,
                        t_start,
                        row,
                        row * PRICE_STEP,
                        (row + 1) * PRICE_STEP,
                        stake,
                        multiplier,
                        payout,
                        f"{rng.getrandbits(128):032x}",
                        placed_ms,
                    )
                )
                column_bets.append((bet_id, uid, stake, payout, multiplier, t_start))
            pending[col] = column_bets
            if col - 3 in pending:
                settle(pending.pop(col - 3))
            made += n
            col += 1
            if len(bet_rows) >= batch:
                flush()
                conn.execute("COMMIT")
                conn.execute("BEGIN")
        for key in sorted(pending):
            settle(pending.pop(key))
        flush()
        conn.executemany("UPDATE users SET balance = ? WHERE id = ?", [(b, u) for u, b in balances.items()])
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("users", "bets", "transaction_ledger")
        }
    finally:
        conn.close()


# ---- benchmark ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_RUSAGE_HELPER = r"""
import os, resource, sys
pid = os.fork()
if pid == 0:
    os.execvpe(sys.argv[1], sys.argv[1:], os.environ)
_, status, ru = os.wait4(pid, 0)
sys.stderr.write(f"@@rusage maxrss_kib={ru.ru_maxrss} cpu_s={ru.ru_utime + ru.ru_stime:.2f}\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_measured(cmd: list[str], env: dict[str, str], log_path: Path) -> dict:
    """Run `cmd`, stream its output to the terminal and `log_path`; wall time, CPU and peak RSS.

    The peak RSS (the child's VmHWM, from wait4) is taken by a small intermediate Python that forks the
    command: a child forked straight from this process would start with this process's RSS (a few
    hundred MiB after generating the file) as its high-water mark, which survives exec.
    """
    t0 = time.perf_counter()
    helper = [sys.executable, "-S", "-c", _RUSAGE_HELPER, *cmd]
    rusage: dict[str, float] = {}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(helper, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, b""):
            if line.startswith(b"@@rusage "):
                rusage = {k: float(v) for k, v in (kv.split("=") for kv in line.decode().split()[1:])}
                continue
            log.write(line)
            sys.stderr.buffer.write(b"    " + line)
            sys.stderr.flush()
        proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with {proc.returncode}; see {log_path}")
    return {"wall_s": wall, "peak_rss_mib": rusage["maxrss_kib"] / 1024, "cpu_s": rusage["cpu_s"]}


def _start_moto() -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except Exception:
            time.sleep(0.05)
    return proc, url


PHASE_RE = re.compile(r"^([a-z]+) \S+: (.*) in ([0-9.]+) s", re.M)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1024, help="size of the week file to archive (MiB)")
    ap.add_argument("--targets", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    ap.add_argument("--workdir", type=Path, default=None, help="temp dir parent (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="extra args for `archive run`")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tap-archive-bench-", dir=args.workdir))
    moto = None
    try:
        data = tmp / "data"
        db_dir = data / "db"
        big_week = (2026, 40)
        big = db_dir / db.week_filename(*big_week)
        # ~350 bytes per bet on disk (bet row + debit row + payout/refund rows + indexes, as the seed says)
        print(f"generating {big.name} (~{args.size_mb} MiB) in {tmp} …", file=sys.stderr)
        t0 = time.perf_counter()
        n_bets = args.size_mb * 1024 * 1024 // 340
        counts = fill_week(big, week=big_week, bets=n_bets, users=5000, seed=40, batch=50_000, fast=True)
        gen_s = time.perf_counter() - t0
        raw_size = big.stat().st_size
        print(f"  {raw_size / 2**20:.0f} MiB, {counts} in {gen_s:.0f}s", file=sys.stderr)
        # CURRENT = 47; closed 46, 45, 44, 41 are the four attached ones; 40 is the only eligible week
        for w in (41, 44, 45, 46, 47):
            fill_week(db_dir / db.week_filename(2026, w), week=(2026, w), bets=100, users=10)
        db.set_current_week_file(db_dir, db_dir / db.week_filename(2026, 47))
        pristine = tmp / "pristine.db"
        os.link(big, pristine)  # same inode: re-linked for the next target instead of regenerating

        flask = str(Path(sys.executable).parent / "flask")
        base_env = {
            **os.environ,
            "TAP_DATA_DIR": str(data),
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "PYTHONUNBUFFERED": "1",
        }
        baseline = _run_measured([flask, "--app", "wsgi", "archive", "list"], base_env, tmp / "baseline.log")
        results = []
        for target in args.targets:
            env = dict(base_env)
            if target == "s3":
                import boto3

                moto, url = _start_moto()
                boto3.client(
                    "s3",
                    endpoint_url=url,
                    region_name="us-east-1",
                    aws_access_key_id="bench",
                    aws_secret_access_key="bench",
                ).create_bucket(Bucket="tap-bench")
                env |= {"TAP_S3_BUCKET": "tap-bench", "TAP_S3_ENDPOINT_URL": url}
            else:
                env |= {"TAP_ARCHIVE_DIR": str(tmp / "archive")}
            if not big.exists():
                os.link(pristine, big)
            print(f"archive run → {target}", file=sys.stderr)
            run = _run_measured(
                [flask, "--app", "wsgi", "archive", "run", *args.extra], env, tmp / f"run-{target}.log"
            )
            assert not big.exists(), "the week file should be gone after a verified archive"
            phases = {m[0]: float(m[2]) for m in PHASE_RE.findall((tmp / f"run-{target}.log").read_text())}
            entry = json.loads((db_dir / "archive-index.json").read_text())["weeks"]["2026_40"]
            print(f"archive restore ← {target}", file=sys.stderr)
            restore = _run_measured(
                [flask, "--app", "wsgi", "archive", "restore", "2026_40"], env, tmp / f"restore-{target}.log"
            )
            restored = db_dir / "restored" / big.name
            assert restored.stat().st_size == raw_size
            restored.chmod(0o644)
            restored.unlink()
            results.append(
                {
                    "target": target,
                    "raw_mib": raw_size / 2**20,
                    "zst_mib": entry["compressed_size"] / 2**20,
                    "run": run,
                    "restore": restore,
                    "phases": phases,
                }
            )
            if moto is not None:
                moto.terminate()
                moto.wait(timeout=10)
                moto = None

        print()
        print(
            f"week file: {raw_size / 2**20:.0f} MiB, {counts['bets']:,} bets, "
            f"{counts['transaction_ledger']:,} ledger rows, {counts['users']:,} users (generated in {gen_s:.0f} s); "
            f"flask CLI baseline peak RSS (`archive list`): {baseline['peak_rss_mib']:.0f} MiB"
        )
        print()
        print(
            "| target | compressed | ratio | `archive run` wall | MiB/s (raw) | peak RSS | CPU s "
            "| `archive restore` wall | MiB/s (raw) | peak RSS |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(
                f"| {r['target']} | {r['zst_mib']:.0f} MiB | {r['raw_mib'] / r['zst_mib']:.2f} "
                f"| {r['run']['wall_s']:.1f} s | {r['raw_mib'] / r['run']['wall_s']:.0f} "
                f"| {r['run']['peak_rss_mib']:.0f} MiB | {r['run']['cpu_s']:.0f} "
                f"| {r['restore']['wall_s']:.1f} s | {r['raw_mib'] / r['restore']['wall_s']:.0f} "
                f"| {r['restore']['peak_rss_mib']:.0f} MiB |"
            )
        print()
        phases = ["snapshot", "integrity", "contents", "compress", "upload", "verify"]
        print("| target | " + " | ".join(phases) + " |")
        print("|---|" + "---:|" * len(phases))
        for r in results:
            print(f"| {r['target']} | " + " | ".join(f"{r['phases'].get(k, 0):.1f} s" for k in phases) + " |")
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
