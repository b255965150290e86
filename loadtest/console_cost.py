"""What the operator console costs the worker (issue 14): CPU per `GET /api/v1/admin/overview`.

    .venv/bin/python loadtest/console_cost.py [--polls 200] [--columns 12] [--rows 21] [--bets 20000]

The console polls the overview once a second; every poll runs on the worker's one hub, so its CPU is
taken from the taps. This measures that CPU directly (process CPU time, not wall time, so a busy
machine does not inflate it): an app in process with its own redis-server and SQLite, a book with
exposure on every placeable cell (`--columns` × `--rows` cells), 15 minutes of per-second tap and
writer samples, `--bets` settled bets in `house_days` and a betting-actions log. Two figures:

- *cold*: every panel's cache expired before each poll (the worst case: one operator polling after
  each cache period, or several operators out of step), and
- *warm*: polls within the cache period (several operators at once: only the uncached panels).

CPU of the read pool's native threads is included (process CPU time). Prints a markdown table.
"""

from gevent import monkey

monkey.patch_all()

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from eth_account import Account

from app import create_app
from app.admin.routes import admin_state
from app.bets.resolution import add_to_house_days
from app.config import Settings
from app.keys import EXPOSURE_COLUMNS, exposure_key
from app.services import services
from app.storage.db import prepare_database
from tests.support.servers import RedisServer
from tests.support.traders import Trader
from workers.sqlite_writer import SqliteWriter
from workers.supervisor import Supervisor


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--polls", type=int, default=200)
    ap.add_argument("--columns", type=int, default=12)
    ap.add_argument("--rows", type=int, default=21)
    ap.add_argument("--bets", type=int, default=20_000)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="console-cost-"))
    redis_server = RedisServer(tmp / "redis")
    redis_server.start()
    sup = Supervisor()
    try:
        admin = Account.create()
        s = Settings.from_env(
            {},
            data_dir=tmp / "data",
            redis_url=redis_server.url,
            dev_mode=True,
            admin_addresses=frozenset({admin.address.lower()}),
            rate_per_address=0,
            rate_per_ip=0,
        )
        prepare_database(s.db_dir, time.time(), s.sqlite_synchronous)
        app = create_app(s)
        svc = services(app)
        sup.start(SqliteWriter(svc.writes, s.db_dir, synchronous=s.sqlite_synchronous, batch_max=s.batch_max))

        # the state a busy console shows
        now = time.time()
        col0 = int(now) // s.column_seconds * s.column_seconds
        pipe = svc.redis.pipeline(transaction=False)
        for c in range(args.columns):
            t = col0 + c * s.column_seconds
            fields = {str(6700 + r): 1_000_000 * (r + 1) for r in range(args.rows)}
            fields["t"] = sum(fields.values())
            pipe.hset(exposure_key(t), mapping=fields)
            pipe.zadd(EXPOSURE_COLUMNS, {str(t): t})
        pipe.execute()
        codes = ("accepted", "exposure_limit", "duplicate_cell", "multiplier_below_minimum", "betting_halted")
        for sec in range(int(now) - 900, int(now) + 1):
            for i, code in enumerate(codes):
                for _ in range(3 - min(i, 2)):
                    svc.taps.record(code, sec)
        for sec in range(int(now) - 900, int(now)):
            svc.metrics.write_batch_size.observe(25)
            svc.metrics.write_commit_seconds.observe(0.004)
            svc.console.sample_writer(svc.metrics, sec, 3)
        rows = [
            ("won" if i % 3 == 0 else "lost", 2_000_000, 1_000_000, 20_000 + i % 900_000)
            for i in range(args.bets)
        ]
        svc.writes.call(lambda c: add_to_house_days(c, int(now * 1000), rows), timeout=60)
        trader = Trader(app.test_client(), s, wallet=admin).login()
        for i in range(20):
            trader.call("POST", "/api/v1/admin/betting", {"open": i % 2 == 1, "reason": f"drill {i}"})

        with app.app_context():
            state = admin_state()
        panels = [state.console.resolver, state.console.exposure, state.console.house, state.console.actions]
        sizes = {}
        for path in ("/api/v1/admin/overview", "/api/v1/admin/overview?window=10", "/api/v1/admin/whoami"):
            resp = app.test_client().get(path, headers={"Authorization": f"Bearer {trader.token}"})
            assert resp.status_code == 200, resp.get_json()
            sizes[path] = len(resp.data)

        def measure(cold: bool, path: str = "/api/v1/admin/overview") -> list[float]:
            out = []
            for _ in range(args.polls):
                if cold:
                    for p in [*panels, state.console.local_weeks]:  # the archive listing: never on a poll
                        p.expire()
                c0 = time.process_time()
                status, _, _ = trader.call("GET", path)
                out.append((time.process_time() - c0) * 1e6)
                assert status == 200
            return out

        measure(True)  # warm the code paths
        cold = measure(True)
        warm = measure(False)
        short = measure(False, "/api/v1/admin/overview?window=10")
        whoami = measure(False, "/api/v1/admin/whoami")
        print()
        print(
            f"exposure {args.columns} columns × {args.rows} cells, 15 min of samples, {args.bets} settled bets"
        )
        print(
            "| overview | polls | CPU µs p50 | CPU µs p90 | CPU µs max | share of one core at 1 poll/s | body |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        full, ten, who = sizes.values()
        for name, xs, size in (
            ("cold (every cache expired)", cold, full),
            ("warm (within the cache period)", warm, full),
            ("warm, `?window=10` (series: the last 10 s only)", short, ten),
            ("for scale: `GET /admin/whoami` (request + session lookup)", whoami, who),
        ):
            xs.sort()
            p50, p90 = statistics.median(xs), xs[int(len(xs) * 0.9)]
            print(
                f"| {name} | {len(xs)} | {p50:.0f} | {p90:.0f} | {xs[-1]:.0f} | {p50 / 1e4:.2f} % | {size / 1024:.1f} KiB |"
            )
        return 0
    finally:
        sup.stop(timeout=5)
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
