#!/usr/bin/env python3
"""Tap ceiling: constant offered rates of pre-signed taps over websockets (SPEC §8a), open loop, one core.

    .venv/bin/python loadtest/tap_ceiling.py                                  # 1k..5k taps/s, 10 s each
    .venv/bin/python loadtest/tap_ceiling.py --rates 3000 --profile /tmp/tap.pyspy
    .venv/bin/python loadtest/tap_ceiling.py --rates 3000 --mixed             # + 1,000 watchers + 200 reads/s
    .venv/bin/python loadtest/tap_ceiling.py --rates 3000 --mixed --console-poll 1 --console-window 10
    .venv/bin/python loadtest/tap_ceiling.py --rates 3000 --duration 30 --settle   # bets settle meanwhile

What it does (127.0.0.1 only, every step bounded, everything it starts is stopped):

1. The stack of `bet_ceiling.py` (loadtest/lib/stack.py): a private redis-server (CPU 1) and
   `gunicorn -c gunicorn.conf.py` (one gevent worker, CPU 0), rate limits off (one IP), dev mode,
   TAP_SIM_VOLATILITY lowered. This generator pins itself to CPU 1.
2. Logs in --sockets traders (≥ 500 by default; SIWE, session key bound, deposit) and opens one `/ws`
   per trader, authenticated with a first `auth` message, as the SPA does.
3. `/healthz` ceiling (wrk, closed loop) on the same server, the same run.
4. For each rate R: signs R × duration taps (distinct (trader, cell) pairs, spread over every socket,
   `ts` = middle of the run), pre-frames them, waits for a quiet machine, and writes tap i on its
   trader's socket at t0 + i/R (loadtest/lib/wstaps.py). Measured from that instant: tap → `bet:accepted`
   (the answer) and tap → `bet:confirmed` (after the writer's commit), for every tap. Then it waits for
   the writer to drain and checks that every accepted tap was confirmed on its socket and is a row in
   the SQLite week file. Redis's counters (INFO) before and after give its work per accepted tap:
   commands, EVALSHAs, read events (one per batch of the worker's commands read at once), bytes.
5. `--mixed`: the same, plus 1,000 unauthenticated watching sockets (price lag measured) and 200 HTTP
   reads/s (`/grid`, `/me`, `/bets`) open loop, all at once. `--read-paths /api/v1/me` reads one path
   only: with `--rates 100 --watchers 1 --reads 600`, the worker's CPU against `--read-paths /healthz`
   is what that read costs beyond the HTTP request itself.
6. `--console-poll S` (issue 14): an operator session (a wallet made up for the run, put in
   TAP_ADMIN_ADDRESSES) polls `GET /api/v1/admin/overview` every S seconds during each measured run,
   on its own connection, as the console at /admin does (`--console-window 10`: `?window=10`, what the
   web console polls after its first load); its latencies are printed beside the taps' (the console
   must not slow the trader path). The operator code is loadtest/lib/console.py, shared with
   bet_ceiling.py.
7. `--settle`: the taps due in each column's seconds bet on the nearest columns placeable then (each
   slice signed with its own `ts`), so the first columns settle while the run goes on and each tap
   also costs its settlement and its `bet:resolved` + `balance` events: the steady state. Plain runs
   bet on columns that start after the run; in a ladder (several rates) those columns settle during
   the next rates' runs, which then carry that load too. `resolved_heard` in the JSON ("settled
   meanwhile" in the table) counts the settlements heard during each run: compare rows with it.
8. `--replicate` (issue 15): `make run`'s replication with a bucket set — a moto S3 server (CPU 1, in
   place of S3 across the network) and `litestream replicate` (unpinned, as on the VM) streaming the
   week file while the taps are committed, the writer at wal_autocheckpoint=0. After the runs it
   reports how far behind the last commit the replica was. Compare with the same command without it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the repo root

from loadtest.bet_ceiling import (
    measure_healthz_wrk,
    self_check,
    setup_traders,
    wait_betting_open,
)
from loadtest.lib.cells import plan_cells
from loadtest.lib.console import (
    ConsolePoller,
    add_console_args,
    check_console_args,
    console_line,
    console_table,
    login_admin,
)
from loadtest.lib.cpu import CpuWindow, loadavg, wait_quiet
from loadtest.lib.metrics import hist_quantiles, metric_delta, rejected_by_reason, scrape
from loadtest.lib.openloop import latency_summary, open_loop, pct
from loadtest.lib.rawhttp import Api, Trader, build_request
from loadtest.lib.signing import Key
from loadtest.lib.stack import VENV_BIN, Stack, log
from loadtest.lib.wstaps import TapSocket, connect_all, open_loop_taps, sign_taps

_PRICE_TS = re.compile(rb'\{"type":"price","price":"[0-9.]+","ts":([0-9]+)')


class Watchers:
    """N public sockets (no token) that time each `price` frame: lag = receive − tick ts."""

    def __init__(self, host: str, port: int, n: int) -> None:
        self.host, self.port, self.n = host, port, n
        self.lags: list[float] = []
        self.measuring = False
        self.socks: list[TapSocket] = []

    def start(self) -> None:
        from gevent.pool import Pool

        outer = self

        class W(TapSocket):
            def _message(self, payload: bytes) -> None:
                if outer.measuring:
                    m = _PRICE_TS.match(payload)
                    if m is not None:
                        outer.lags.append(time.time() * 1000 - int(m.group(1)))

        dummy = Trader(None, None, "", 0)  # type: ignore[arg-type]
        self.socks = [W(self.host, self.port, dummy) for _ in range(self.n)]
        pool = Pool(64)
        for s in self.socks:
            pool.spawn(s.connect, False)
        pool.join(timeout=120, raise_error=True)

    def stop(self) -> None:
        for s in self.socks:
            s.close()


def _sign_by_column(
    socks: list[TapSocket],
    grid: dict,
    start: float,
    duration: float,
    rate: int,
    row_margin: int,
    domain: str,
    chain_id: int,
) -> tuple[list[bytes], list[int], list[str]]:
    """--settle: the taps due in each column's seconds bet on the nearest columns placeable then, so
    the columns of the run's first seconds settle while it goes on: the steady state, where every
    bet also costs its settlement and its `bet:resolved` (the plain run bets on columns that start
    after it ends). Each slice's `ts` is its own middle."""
    cs = grid["settings"]["column_seconds"]
    frames: list[bytes] = []
    owner: list[int] = []
    used: set[str] = set()  # for the log line: each cell once, though two slices share a column
    t = start
    while t < start + duration - 1e-9:
        end = min(t + cs, start + duration)
        n = round((end - start) * rate) - len(frames)
        cells = plan_cells(grid, t - 0.5, end + 3.0, row_margin)
        lo = min(int(c.split(":")[0]) for c in cells)
        cells = [c for c in cells if int(c.split(":")[0]) <= lo + cs]  # the two nearest columns
        random.shuffle(cells)
        f, o = sign_taps(socks, cells, n, domain, chain_id, int((t + end) / 2 * 1000), "1", len(frames))
        frames += f
        owner += o
        used.update(cells)
        t = end
    return frames, owner, sorted(used)


def _p99_by_second(run, accepted: list[int]) -> list[float]:
    """tap → bet:accepted p99 (ms) of the taps due in each second of the run."""
    if not accepted:
        return []
    t0 = run.intended[0]
    by_s: dict[int, list[float]] = {}
    for i in accepted:
        by_s.setdefault(int(run.intended[i] - t0), []).append((run.accepted[i] - run.intended[i]) * 1000)
    return [round(pct(by_s.get(sec, []), 0.99), 1) for sec in range(max(by_s) + 1)]


READ_PATHS = ("/api/v1/grid", "/api/v1/me", "/api/v1/bets?limit=20")


def read_requests(
    host: str, port: int, traders: list[Trader], n: int, paths: tuple[str, ...] = READ_PATHS
) -> list[bytes]:
    """n authenticated GETs of `paths` in turn (by default /grid, /me, /bets), for random traders."""
    return [
        build_request("GET", paths[i % len(paths)], f"{host}:{port}", None, random.choice(traders).token)
        for i in range(n)
    ]


def redis_counts(port: int) -> dict[str, int]:
    """The private Redis's running totals: commands (all, and EVALSHA), read and write events, bytes.

    Read before and after a measured run, they give Redis's work per accepted tap: how many taps share a
    round trip (a read event is one batch of the worker's commands read at once). Two INFO calls a run.
    """
    import redis  # after the monkey patch, like everything that opens sockets here

    r = redis.Redis(port=port, socket_timeout=5)
    try:
        stats = r.info("stats")
        evalsha = r.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    finally:
        r.close()
    return {
        "commands": stats["total_commands_processed"],
        "evalsha": evalsha,
        "read_events": stats["total_reads_processed"],
        "write_events": stats["total_writes_processed"],
        "bytes_in": stats["total_net_input_bytes"],
        "bytes_out": stats["total_net_output_bytes"],
    }


def bets_in_sqlite(db_dir: Path, bet_ids: list[str]) -> int:
    """How many of `bet_ids` are rows of the current week file (read-only, after the run)."""
    import apsw

    from app.storage.db import current_week_file

    path = current_week_file(db_dir)
    conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        found = 0
        for k in range(0, len(bet_ids), 500):
            chunk = bet_ids[k : k + 500]
            q = f"SELECT count(*) FROM bets WHERE bet_id IN ({','.join('?' * len(chunk))})"
            found += next(iter(conn.execute(q, chunk)))[0]
        return found
    finally:
        conn.close()


def measure_taps(
    api: Api,
    pids: dict,
    socks: list[TapSocket],
    rate: int,
    duration: float,
    row_margin: int,
    domain: str,
    chain_id: int,
    db_dir: Path | None,
    profile: Path | None,
    quiet: tuple[float, float] | None,
    mixed: tuple[Watchers, list[Trader], int, tuple[str, ...]] | None = None,
    console: ConsolePoller | None = None,
    settle: bool = False,
    redis_port: int | None = None,
) -> dict:
    import gevent

    n = int(rate * duration)
    idle = wait_quiet(pids, *quiet) if quiet and pids else {}
    status, grid = api.call("GET", "/api/v1/grid")
    assert status == 200 and grid["price"], grid
    start = time.time() + n * 60e-6 + 0.8
    t_sign = time.monotonic()
    if settle:
        frames, owner, cells = _sign_by_column(
            socks, grid, start, duration, rate, row_margin, domain, chain_id
        )
        n = len(frames)
    else:
        end = start + duration + 3.0
        cells = plan_cells(grid, start - 0.5, end, row_margin)
        random.shuffle(cells)
        ts = int((start + end) / 2 * 1000)
        frames, owner = sign_taps(socks, cells, n, domain, chain_id, ts, "1")
    sign_s = time.monotonic() - t_sign
    log(
        f"rate {rate}/s: {n} taps signed in {sign_s:.1f}s; {len(cells)} cells × {len(socks)} sockets; "
        f"load {loadavg()}"
    )
    wait = start - time.time()
    if wait > 0:
        time.sleep(wait)
    for s in socks:
        s.confirmed.clear()
        s.rejected.clear()
        s.resolved = 0
    before = scrape(api)
    spy = None
    if profile is not None and pids.get("worker"):
        spy = subprocess.Popen(
            [
                "taskset", "-c", "1", str(VENV_BIN / "py-spy"), "record", "--pid", str(pids["worker"]),
                "--rate", os.environ.get("BET_CEILING_PYSPY_RATE", "200"), "--threads", "--format", "raw",
                *([] if os.environ.get("BET_CEILING_PYSPY_NONBLOCKING", "1") == "0" else ["--nonblocking"]),
                "--duration", str(int(duration) + 60), "-o", str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        time.sleep(0.5)
    reads = None
    if mixed is not None:
        watchers, traders, read_rate, read_paths = mixed
        watchers.measuring = True
        reqs = read_requests(api.http.host, api.http.port, traders, int(read_rate * duration), read_paths)
        reads = gevent.spawn(open_loop, api.http.host, api.http.port, reqs, read_rate, 16, 10.0)
    if console is not None:
        console.start()
    redis0 = redis_counts(redis_port) if redis_port else None
    win = CpuWindow(pids)
    run = open_loop_taps(socks, frames, owner, rate, grace_s=10.0)
    cpu = win.end()
    redis1 = redis_counts(redis_port) if redis_port else None
    console_stats = console.stop() if console is not None else None
    read_res = reads.get() if reads is not None else None
    if mixed is not None:
        mixed[0].measuring = False
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()

    accepted = [i for i in range(n) if run.accepted[i]]
    # drain: every accepted tap confirmed (or rejected) on its socket
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        heard = sum(
            1
            for i in accepted
            if run.bet_id[i] in socks[owner[i]].confirmed or run.bet_id[i] in socks[owner[i]].rejected
        )
        if heard >= len(accepted):
            break
        gevent.sleep(0.25)
    after = scrape(api)
    t_acc = [(run.accepted[i] - run.intended[i]) * 1000 for i in accepted]
    t_conf = [
        (socks[owner[i]].confirmed[run.bet_id[i]] - run.intended[i]) * 1000
        for i in accepted
        if run.bet_id[i] in socks[owner[i]].confirmed
    ]
    errors: dict[str, int] = {}
    for i in range(n):
        if run.error[i]:
            errors[run.error[i]] = errors.get(run.error[i], 0) + 1
    unanswered = sum(1 for i in range(n - run.not_sent) if not run.accepted[i] and not run.error[i])
    ids = [run.bet_id[i] for i in accepted]
    in_db = bets_in_sqlite(db_dir, ids) if db_dir is not None else None
    span = (run.intended[-1] - run.intended[0]) if n > 1 else float("nan")
    acc_times = sorted(run.accepted[i] for i in accepted)
    worker_cores = cpu.get("worker_cores", float("nan"))
    out = {
        "kind": "mixed" if mixed else "taps",
        "rate": rate,
        "duration_s": duration,
        "sockets": len(socks),
        "offered": n,
        "accepted": len(accepted),
        # accepted per second over the span in which the answers arrived (a server that falls behind
        # answers over a longer span than the schedule, so this is what it sustained)
        "accepted_per_s": len(accepted) / max(span, acc_times[-1] - acc_times[0])
        if len(acc_times) > 1
        else 0,
        "errors": errors,
        "unanswered": unanswered,
        "not_sent": run.not_sent,
        "acc_p50_ms": pct(t_acc, 0.5),
        "acc_p99_ms": pct(t_acc, 0.99),
        "acc_max_ms": max(t_acc) if t_acc else float("nan"),
        "conf_p50_ms": pct(t_conf, 0.5),
        "conf_p99_ms": pct(t_conf, 0.99),
        "conf_max_ms": max(t_conf) if t_conf else float("nan"),
        "confirmed_heard": len(t_conf),
        "resolved_heard": sum(s.resolved for s in socks),  # settled during the run (--settle, a ladder)
        # p99 of tap → bet:accepted per second of the schedule: a p99 made of one stall and one
        # made of a steady queue look alike as a single figure
        "acc_p99_by_s": _p99_by_second(run, accepted),
        "rejected_heard": sum(1 for i in accepted if run.bet_id[i] in socks[owner[i]].rejected),
        "confirmed_metric": int(metric_delta(before, after, "tap_bets_confirmed_total")),
        "rejected_after_accept": rejected_by_reason(before, after),
        "in_sqlite": in_db,
        "confirm_hist": hist_quantiles(before, after, "tap_bet_confirm_seconds"),
        "batch_hist": hist_quantiles(before, after, "tap_write_batch_size", qs=(0.5, 0.99), seconds=False),
        "commit_hist": hist_quantiles(before, after, "tap_write_commit_seconds"),
        "cpu": cpu,
        "idle": idle,
        "worker_us_per_tap": (worker_cores - idle.get("worker_cores", 0.0)) * cpu["wall_s"] / max(1, n) * 1e6
        if idle
        else worker_cores * cpu["wall_s"] / max(1, n) * 1e6,
        "closed_sockets": sum(1 for s in socks if s.closed),
        "loadavg": loadavg(),
        "console": console_stats,
        "redis_per_tap": {
            k: round((v - redis0.get(k, 0)) / max(1, len(accepted)), 3) for k, v in redis1.items()
        }
        if redis0 is not None and redis1 is not None
        else None,
    }
    if mixed is not None:
        lags = mixed[0].lags
        out["watch_lag_p50_ms"] = pct(lags, 0.5)
        out["watch_lag_p99_ms"] = pct(lags, 0.99)
        out["watch_frames"] = len(lags)
        lags.clear()
        out["reads"] = latency_summary(read_res) if read_res is not None else None
    if profile is not None:
        threads = sorted(cpu.get("worker_threads_cores", {}).values(), reverse=True)
        hub_us = threads[0] * cpu["wall_s"] / max(1, n) * 1e6 if threads else float("nan")
        out["profile_hint"] = (
            f"{VENV_BIN / 'python'} loadtest/profile_bet_path.py analyze {profile} --requests {n} "
            f"--rate {os.environ.get('BET_CEILING_PYSPY_RATE', '200')} --main-only --total-us {hub_us:.0f}"
        )
        log(f"profile written; analyse the hub thread with:\n    {out['profile_hint']}")
    return out


def f(v, fmt="{:.1f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def print_table(results: list[dict]) -> None:
    print(
        "| run | offered/s | accepted/s | tap→accepted p50 / p99 ms | tap→confirmed p50 / p99 ms | confirmed / "
        "accepted / in SQLite | settled meanwhile | worker CPU (idle) | worker µs/tap | batch p50/p99 | others | "
        "refusals |"
    )
    print("|---|---:|---:|---|---|---|---:|---|---:|---|---:|---|")
    for r in results:
        cpu = r.get("cpu", {})
        if r["kind"] == "healthz-wrk":
            print(
                f"| /healthz wrk, {r['conns']} conns | max | {f(r['req_per_s'], '{:.0f}')} req/s | "
                f"{f(r['p50_ms'], '{:.2f}')} / {f(r['p99_ms'])} | | | | {f(cpu.get('worker_cores', 0) * 100, '{:.0f}')}% | | | "
                f"{f(cpu.get('others_cores', 0), '{:.2f}')} | |"
            )
            continue
        extra = ""
        if r["kind"].startswith("mixed"):
            rd = r.get("reads") or {}
            extra = (
                f" watchers lag p50/p99 {f(r['watch_lag_p50_ms'])}/{f(r['watch_lag_p99_ms'])} ms; "
                f"reads {f(rd.get('sent_per_s'), '{:.0f}')}/s p50/p99 {f(rd.get('p50_ms'))}/{f(rd.get('p99_ms'))} ms "
                f"{rd.get('statuses')}"
            )
        c = r.get("console")
        console = (
            f"; console overview p50/p99 {f(c['p50_ms'])}/{f(c['p99_ms'])} ms ({c['polls']} polls)"
            if c
            else ""
        )
        print(
            f"| {r['kind']} {r['duration_s']:.0f} s, {r['sockets']} sockets | {r['rate']} | {f(r['accepted_per_s'], '{:.0f}')} | "
            f"{f(r['acc_p50_ms'])} / {f(r['acc_p99_ms'])} | {f(r['conf_p50_ms'])} / {f(r['conf_p99_ms'])} | "
            f"{r['confirmed_heard']} / {r['accepted']} / {r['in_sqlite']} | {r['resolved_heard']} | "
            f"{f(cpu.get('worker_cores', 0) * 100, '{:.0f}')}% ({f(r['idle'].get('worker_cores', float('nan')) * 100, '{:.0f}')}%) | "
            f"{f(r['worker_us_per_tap'], '{:.0f}')} | {r['batch_hist'].get('p50')}/{r['batch_hist'].get('p99')} | "
            f"{f(cpu.get('others_cores', 0), '{:.2f}')} | {r['errors'] or 'none'}"
            f"{'; unanswered ' + str(r['unanswered']) if r['unanswered'] else ''}"
            f"{'; not sent ' + str(r['not_sent']) if r['not_sent'] else ''}{extra}{console} |"
        )
    console_table(results, lambda r: f"{r['kind']} {r['duration_s']:.0f} s, {r['sockets']} sockets")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,2000,3000,4000,5000", help="offered taps/s, comma list")
    ap.add_argument(
        "--duration", type=float, default=10.0, help="seconds per rate (≤ 20; ≤ 40 with --settle)"
    )
    ap.add_argument(
        "--settle",
        action="store_true",
        help="bet on the nearest columns, so bets settle during the run (steady state with settlement)",
    )
    ap.add_argument("--sockets", type=int, default=0, help="traders/sockets (default: ≥ 500, enough cells)")
    ap.add_argument("--row-margin", type=int, default=9, help="rows within this many of the current row")
    ap.add_argument("--healthz", type=int, default=10, help="seconds of /healthz wrk; 0: skip")
    ap.add_argument("--profile", type=Path, help="py-spy raw profile of the worker during --profile-rate")
    ap.add_argument("--profile-rate", type=int, help="the rate profiled (default: the largest)")
    ap.add_argument("--mixed", action="store_true", help="+ --watchers public sockets + --reads HTTP reads/s")
    ap.add_argument("--watchers", type=int, default=1000)
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument(
        "--read-paths",
        default=",".join(READ_PATHS),
        help="the reads' paths, requested in turn (comma list; e.g. /api/v1/me alone to cost one read)",
    )
    add_console_args(ap)
    ap.add_argument(
        "--replicate", action="store_true", help="Litestream streams the week file to a local moto S3 server"
    )
    ap.add_argument("--sim-volatility", default="0.15")
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the started server")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--logs", type=Path, help="keep the gunicorn and redis logs here")
    ap.add_argument("--max-others", type=float, default=0.15)
    ap.add_argument("--attempts", type=int, default=2)
    ap.add_argument("--quiet-timeout", type=float, default=90)
    args = ap.parse_args(argv)
    check_console_args(ap, args)
    if args.duration > (40 if args.settle else 20):
        ap.error("--duration must be ≤ 20 s, 40 with --settle (cells placeable, ts within ±30 s)")

    from gevent import monkey

    monkey.patch_all()
    import resource

    import gevent

    from tests.support.servers import Litestream, MotoServer  # after the patch: it imports redis, boto3

    rates = [int(r) for r in args.rates.split(",")]
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))

    results: list[dict] = []
    stack: Stack | None = None
    api: Api | None = None
    socks: list[TapSocket] = []
    watchers: Watchers | None = None
    admin_key = Key()
    console: ConsolePoller | None = None
    moto = None
    litestream = None
    main_greenlet = gevent.getcurrent()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, lambda sig=sig: main_greenlet.throw(SystemExit(128 + sig)))
    try:
        env = dict(kv.split("=", 1) for kv in args.env)
        env.setdefault("TAP_SIM_VOLATILITY", args.sim_volatility)
        # The house's exposure caps (SPEC §8b) out of the way, as bet_ceiling.py does: this measures
        # the tap path, and hundreds of traders on the same few cells would otherwise hit the caps.
        env.setdefault("TAP_MAX_CELL_PAYOUT", "1000000000")
        env.setdefault("TAP_MAX_COLUMN_PAYOUT", "1000000000")
        if args.console_poll:
            env["TAP_ADMIN_ADDRESSES"] = admin_key.checksum_address
        if args.replicate:
            moto_dir = Path(tempfile.mkdtemp(prefix="tap-ceiling-moto-"))
            moto = MotoServer(moto_dir)
            moto.start()
            os.sched_setaffinity(moto.proc.pid, {1})  # S3 is across the network in production
            aws = {
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
            }
            os.environ.update(aws)  # moto's bucket creation (boto3) and the server's env alike
            env |= aws | {"TAP_S3_BUCKET": moto.create_bucket("tap-ceiling"), "TAP_S3_ENDPOINT_URL": moto.url}
        stack = Stack(env, args.logs)
        stack.start()
        host, port = "127.0.0.1", stack.port
        log(f"redis :{stack.redis_port} (CPU 1), gunicorn :{port} (CPU 0), data {stack.tmp}; {args.env}")
        if args.replicate:
            litestream = Litestream(
                {k: v for k, v in stack.env.items() if k.startswith(("TAP_", "AWS_"))},
                stack.tmp / "litestream.log",
            )
            with contextlib.suppress(OSError):  # unpinned (it inherits the affinity it starts with)
                os.sched_setaffinity(0, {0, 1})
            litestream.start()
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {1})
            deadline = time.monotonic() + 30
            while (stack.tmp / "data" / "db" / "CURRENT").exists() is False or litestream.lag().get(
                "status"
            ) in (None, "waiting"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"litestream did not start replicating: {litestream.log()[-2000:]}")
                time.sleep(0.2)
            log(f"litestream replicates {stack.tmp / 'data' / 'db'} to {moto.url if moto else '?'}")
        api = Api(host, port)
        deadline = time.monotonic() + 60
        while True:
            try:
                if api.call("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                api = Api(host, port)
            if time.monotonic() > deadline:
                raise TimeoutError("server not ready")
            time.sleep(0.2)
        worker = stack.worker_pid()
        pids = {"worker": worker, "master": stack.gunicorn.pid, "redis": stack.redis_server.proc.pid}
        grid = wait_betting_open(api)
        st = grid["settings"]
        domain, chain_id = st["siwe_domain"], st["chain_id"]
        cols = (
            st["columns_ahead"]
            - st["min_lead_columns"]
            - math.ceil((args.duration + 5) / st["column_seconds"])
            - 1
        )
        per_trader = max(1, int(cols * (2 * args.row_margin + 1) * 0.6))
        if args.settle:  # each column's seconds: about one new column of cells per trader
            per_trader = max(1, int((2 * args.row_margin + 1) * 0.8 * args.duration / st["column_seconds"]))
        count = args.sockets or max(500, math.ceil(max(rates) * args.duration / per_trader))
        traders = setup_traders(host, port, count, domain, chain_id)
        self_check(api, traders[0], domain, chain_id)
        if args.console_poll:
            token = login_admin(api, admin_key, domain, chain_id)
            console = ConsolePoller(host, port, token, args.console_poll, args.console_window)
            log(
                f"operator session: overview every {args.console_poll:g} s"
                f"{f' with ?window={args.console_window}' if args.console_window else ''}"
            )
        socks = connect_all(host, port, traders)
        log(f"{len(socks)} sockets authenticated (first message auth)")
        if args.mixed:
            watchers = Watchers(host, port, args.watchers)
            watchers.start()
            log(f"{args.watchers} watching sockets connected")
        # warm-up
        measure_taps(
            api, {}, socks, max(200, rates[0] // 4), 3, args.row_margin, domain, chain_id, None, None, None
        )
        if args.healthz:
            wait_quiet(pids, args.max_others, args.quiet_timeout)
            results.append(measure_healthz_wrk(port, args.healthz, 64, pids))
            log(f"/healthz wrk: {results[-1]['req_per_s']:.0f} req/s, p99 {results[-1]['p99_ms']:.1f} ms")
        profiled = False
        for rate in rates:
            for attempt in range(args.attempts):
                prof = (
                    args.profile
                    if args.profile and rate == (args.profile_rate or max(rates)) and not profiled
                    else None
                )
                r = measure_taps(
                    api,
                    pids,
                    socks,
                    rate,
                    args.duration,
                    args.row_margin,
                    domain,
                    chain_id,
                    stack.tmp / "data" / "db",
                    prof,
                    (args.max_others, args.quiet_timeout),
                    (watchers, traders, args.reads, tuple(args.read_paths.split(","))) if watchers else None,
                    console,
                    args.settle,
                    stack.redis_port,
                )
                profiled = profiled or prof is not None
                r["attempt"] = attempt + 1
                if litestream is not None:
                    r["kind"] += " + Litestream"
                results.append(r)
                others = r["cpu"].get("others_cores", 0)
                log(
                    f"rate {rate}: accepted {r['accepted_per_s']:.0f}/s, tap→accepted p50/p99 "
                    f"{r['acc_p50_ms']:.1f}/{r['acc_p99_ms']:.1f} ms, tap→confirmed {r['conf_p50_ms']:.1f}/"
                    f"{r['conf_p99_ms']:.1f} ms, heard {r['confirmed_heard']}/{r['accepted']}, sqlite "
                    f"{r['in_sqlite']}, worker {r['cpu'].get('worker_cores', 0) * 100:.0f}%, "
                    f"{r['worker_us_per_tap']:.0f} µs/tap, resolved {r['resolved_heard']}, others {others:.2f}, "
                    f"errors {r['errors']}" + (f"; {console_line(r['console'])}" if r["console"] else "")
                )
                if r["redis_per_tap"]:
                    log(f"redis per accepted tap: {r['redis_per_tap']}")
                if others <= args.max_others:
                    break
                if attempt + 1 < args.attempts:
                    log(f"other processes used {others:.2f} cores during the run: repeating it")
                else:
                    log(f"other processes used {others:.2f} cores during the run: the row says so")
        if litestream is not None:
            time.sleep(2)  # two sync intervals
            info = litestream.lag()
            log(f"replica after the runs: {info}")
            if results:
                results[-1]["replica"] = info
        return 0
    finally:
        for s in socks:
            s.close()
        if watchers is not None:
            watchers.stop()
        if api is not None:
            api.http.close()
        if litestream is not None:
            litestream.stop()
        if stack is not None:
            stack.stop()
        if moto is not None:
            moto.stop()
        if results:
            print()
            print_table(results)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
