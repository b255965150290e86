#!/usr/bin/env python3
"""Signed-bet ceiling: constant offered rates of pre-signed `POST /api/v1/bets`, open loop, one core.

    .venv/bin/python loadtest/bet_ceiling.py                       # 1k, 2k, 3k bets/s, 20 s each
    .venv/bin/python loadtest/bet_ceiling.py --rates 3000 --duration 20 --profile /tmp/bet.pyspy
    .venv/bin/python loadtest/bet_ceiling.py --url http://127.0.0.1:8000 ...   # an existing server

What it does (everything on 127.0.0.1, every step bounded in time, everything it starts is stopped):

1. Starts a private redis-server (CPU 1) and gunicorn (`-c gunicorn.conf.py`, CPU 0) on free ports
   with TAP_DATA_DIR=<tmp>, TAP_DEV_MODE=1 and the app's own rate limits off (all load comes from
   one IP: TAP_RATE_PER_IP=0, TAP_RATE_PER_ADDRESS=0, TAP_RATE_AUTH_PER_IP=0), and the exposure caps
   raised out of the way (TAP_MAX_CELL_PAYOUT/TAP_MAX_COLUMN_PAYOUT = 10^9). The grid settings stay
   at their defaults; the simulated feed's volatility is lowered (TAP_SIM_VOLATILITY, default here
   0.15) so the price row drifts less during a run and the pre-chosen cells stay placeable. This
   process pins itself to CPU 1.
2. Logs in enough traders for the largest run, SIWE with a session key bound, signed with coincurve
   (not eth-account: ~40 µs a signature), and deposits for each. A few bets are placed and checked
   first (202, then `confirmed`), and the fast signer is cross-checked against eth-account.
3. Measures the bare `/healthz` ceiling with wrk (closed loop, CPU 1), and `/healthz` at the largest
   offered rate through this generator (the generator's own floor).
4. For each rate R: picks the cells placeable during the whole run (default grid: columns
   `now_col + 2·5 ≤ t_start < now_col + 12·5`, rows near the current price row and quoted), gives each
   trader distinct cells, signs R × duration bodies with ts = the middle of the run (valid ±30 s),
   opens `/ws?token=` for a sample of traders, then sends the bodies open loop: request i is due at
   t0 + i/R and its latency is counted from that instant (no coordinated omission), on a pool of
   keep-alive connections (64, like nginx's upstream keepalive). Afterwards it waits for the writer
   to drain, reads /metrics and checks a sample of bets with `GET /api/v1/bets/<id>`.
5. Prints one markdown row per run and writes everything to --json.

With ``--console-poll S`` an operator session (an admin wallet made up for the run, put in
TAP_ADMIN_ADDRESSES) polls ``GET /api/v1/admin/overview`` every S seconds during each run, on its own
connection, as the operator console does (``--console-window 10``: with ``?window=10``, as the web
console at /admin does after its first load); its latencies are reported beside the taps' (issue 14: the
console must not slow the trader path).

"Time to bet:confirmed" is measured on the traders' websockets from the instant the bet was due
(a tap) to the `bet:confirmed` frame; the server's own histogram `tap_bet_confirm_seconds`
(acceptance → commit) is reported beside it.

The machinery it shares with the other load scripts lives in loadtest/lib/ (signing, raw HTTP, the
server stack, CPU sampling, /metrics, the open-loop sender, cell planning). What stays here is this
benchmark's own job — one measured run per rate, the generator-only sink, the report — kept in one
file so the whole procedure reads top to bottom.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from the repo root
from loadtest.lib.cells import cells_per_trader_estimate, plan_cells, sign_bodies
from loadtest.lib.console import (
    ConsolePoller,
    add_console_args,
    check_console_args,
    console_table,
    login_admin,
)
from loadtest.lib.cpu import CpuWindow, loadavg, wait_quiet
from loadtest.lib.metrics import hist_quantiles, metric_delta, rejected_by_reason, scrape
from loadtest.lib.openloop import WsListeners, latency_summary, open_loop, pct
from loadtest.lib.rawhttp import Api, Trader, build_request, login_trader
from loadtest.lib.signing import Key, bet_text
from loadtest.lib.stack import VENV_BIN, Stack, free_port, log, tcp_ok

# ---- one measured run


def measure_bets(
    api: Api,
    stack_pids: dict,
    host: str,
    port: int,
    traders: list[Trader],
    rate: int,
    duration: float,
    conns: int,
    ws_sample: int,
    row_margin: int,
    domain: str,
    chain_id: int,
    profile: Path | None,
    worker_pid: int | None,
    quiet: tuple[float, float] | None = None,
    console: ConsolePoller | None = None,
) -> dict:
    import gevent

    n = int(rate * duration)
    sample = [t for t in traders[:: max(1, len(traders) // ws_sample)][:ws_sample]] if ws_sample else []
    ws = WsListeners(host, port, sample)
    if sample:
        ws.start()  # before the idle sample: connected websockets are part of the idle cost
    idle = wait_quiet(stack_pids, *quiet) if quiet else {}
    status, grid = api.call("GET", "/api/v1/grid")
    assert status == 200 and grid["price"], grid
    sign_est = n * 60e-6 + 0.5  # signing time (~45 µs each)
    start = time.time() + sign_est + 0.3
    end = start + duration + 3.0  # + the last requests' latency
    cells = plan_cells(grid, start - 0.5, end, row_margin)
    random.shuffle(cells)
    run_traders = traders  # assign_pairs spreads the bets over every trader with unused cells
    ts = int((start + end) / 2 * 1000)  # valid from end − 30 s to start + 30 s
    assert end - start < 58, "run too long for one signed batch (ts must stay within ±30 s)"

    t_sign = time.monotonic()
    reqs, owner = sign_bodies(run_traders, cells, n, domain, chain_id, ts, f"{host}:{port}", "1")
    sign_s = time.monotonic() - t_sign
    log(
        f"rate {rate}/s: {n} bodies signed in {sign_s:.1f}s ({sign_s / n * 1e6:.0f} µs each); "
        f"{len(cells)} cells × {len(run_traders)} traders; ws on {len(sample)} traders; load {loadavg()}"
    )
    wait = start - time.time()
    if wait > 0:
        time.sleep(wait)
    if time.time() > start + 2:
        log(f"warning: signing overran the plan by {time.time() - start:.1f}s")

    before = scrape(api)
    spy = None
    if profile is not None and worker_pid is not None:
        spy = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                str(VENV_BIN / "py-spy"),
                "record",
                "--pid",
                str(worker_pid),
                "--rate",
                os.environ.get("BET_CEILING_PYSPY_RATE", "200"),
                *(["--nonblocking"] if os.environ.get("BET_CEILING_PYSPY_NONBLOCKING") == "1" else []),
                "--threads",
                "--format",
                "raw",
                "--duration",
                str(int(duration) + 60),
                "-o",
                str(profile),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        time.sleep(0.5)
    win = CpuWindow(stack_pids)
    if console is not None:
        console.start()
    res = open_loop(host, port, reqs, rate, conns, grace_s=10.0)
    console_stats = console.stop() if console is not None else None
    cpu = win.end()
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    summary = latency_summary(res, ok_status=202)
    served = sum(1 for x in res.status if x > 0)
    accepted = [i for i in range(n) if res.status[i] == 202]

    # drain: the writer commits what was accepted; then collect the websocket frames
    deadline = time.monotonic() + 20
    after = scrape(api)
    while time.monotonic() < deadline:
        settled = metric_delta(before, after, "tap_bets_confirmed_total") + sum(
            rejected_by_reason(before, after).values()
        )
        if settled >= len(accepted) and after.get("tap_write_queue_depth", 0) == 0:
            break
        gevent.sleep(0.25)
        after = scrape(api)
    gevent.sleep(1.0)
    if sample:
        ws.stop()

    # time to bet:confirmed on the websockets, from the instant the bet was due (the tap)
    sample_idx = {t.index for t in sample}
    ws_bets = [i for i in accepted if run_traders[owner[i]].index in sample_idx]
    ttc = [
        (ws.confirmed[res.body[i]] - res.intended[i]) * 1000 for i in ws_bets if res.body[i] in ws.confirmed
    ]
    ttc_after_202 = [
        (ws.confirmed[res.body[i]] - res.done[i]) * 1000 for i in ws_bets if res.body[i] in ws.confirmed
    ]

    # a sample of GET /bets/<id>
    check = random.sample(accepted, min(200, len(accepted)))
    got: dict[str, int] = {}
    for i in check:
        s, b = api.call("GET", f"/api/v1/bets/{res.body[i]}", token=run_traders[owner[i]].token)
        k = b.get("status", str(s)) if isinstance(b, dict) else str(s)
        got[k] = got.get(k, 0) + 1

    confirmed = int(metric_delta(before, after, "tap_bets_confirmed_total"))
    worker_cores = cpu.get("worker_cores", float("nan"))
    out = {
        "kind": "bets",
        "rate": rate,
        "duration_s": duration,
        "conns": conns,
        "traders": len(set(owner)),
        "cells_per_trader": len(cells),
        "sign_us": sign_s / n * 1e6,
        **summary,
        "accepted": len(accepted),
        "accepted_per_s": len(accepted) / summary["send_span_s"] if summary["send_span_s"] else float("nan"),
        "confirmed": confirmed,
        "rejected_after_accept": rejected_by_reason(before, after),
        "server_accepted_metric": int(metric_delta(before, after, "tap_bets_accepted_total")),
        "confirm_hist": hist_quantiles(before, after, "tap_bet_confirm_seconds"),
        "batch_hist": hist_quantiles(before, after, "tap_write_batch_size", qs=(0.5, 0.99), seconds=False),
        "commit_hist": hist_quantiles(before, after, "tap_write_commit_seconds"),
        "ws_traders": len(sample),
        "ws_bets": len(ws_bets),
        "ws_confirmed": len(ttc),
        "ws_errors": ws.errors[:5],
        "ttc_p50_ms": pct(ttc, 0.5),
        "ttc_p99_ms": pct(ttc, 0.99),
        "ttc_max_ms": max(ttc) if ttc else float("nan"),
        "ttc_after_202_p50_ms": pct(ttc_after_202, 0.5),
        "ttc_after_202_p99_ms": pct(ttc_after_202, 0.99),
        "get_sample": got,
        "cpu": cpu,
        "served": served,
        "served_per_s": served / cpu["wall_s"],
        "worker_us_per_request": worker_cores * cpu["wall_s"] / max(1, served) * 1e6,
        "idle": idle,
        # the worker's CPU per bet request beyond what it burns idle (price sim, quotes, websockets)
        "worker_marginal_us_per_bet": (worker_cores - idle.get("worker_cores", 0.0))
        * cpu["wall_s"]
        / max(1, served)
        * 1e6
        if idle
        else None,
        "loadavg": loadavg(),
        "console": console_stats,
    }
    if profile is not None:
        threads = sorted(cpu.get("worker_threads_cores", {}).values(), reverse=True)
        hub_us = threads[0] * cpu["wall_s"] / max(1, served) * 1e6 if threads else float("nan")
        out["profile_hint"] = (
            f"{VENV_BIN / 'python'} loadtest/profile_bet_path.py analyze {profile} --requests {served} "
            f"--rate {os.environ.get('BET_CEILING_PYSPY_RATE', '200')} --main-only --total-us {hub_us:.0f}"
        )
        log(f"profile written; analyse the hub thread with:\n    {out['profile_hint']}")
    return out


def measure_healthz_open(host: str, port: int, rate: int, duration: float, conns: int, pids: dict) -> dict:
    reqs = [build_request("GET", "/healthz", f"{host}:{port}")] * int(rate * duration)
    win = CpuWindow(pids)
    res = open_loop(host, port, reqs, rate, conns, grace_s=10.0, parse=False)
    cpu = win.end()
    return {
        "kind": "healthz-open",
        "rate": rate,
        "duration_s": duration,
        "conns": conns,
        **latency_summary(res),
        "cpu": cpu,
        "loadavg": loadavg(),
    }


def measure_healthz_wrk(port: int, duration: int, conns: int, pids: dict) -> dict:
    win = CpuWindow(pids)
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "timeout",
            str(duration + 30),
            "wrk",
            "-t",
            "2",
            "-c",
            str(conns),
            "-d",
            f"{duration}s",
            "--timeout",
            "10s",
            "--latency",
            f"http://127.0.0.1:{port}/healthz",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    cpu = win.end()

    def ms(v: str) -> float:
        n = float(re.match(r"[0-9.]+", v).group(0))
        return n / 1000 if v.endswith("us") else n * 1000 if v.endswith("s") and not v.endswith("ms") else n

    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    return {
        "kind": "healthz-wrk",
        "conns": conns,
        "duration_s": duration,
        "req_per_s": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non2xx": re.search(r"Non-2xx.*?(\d+)", out).group(1) if "Non-2xx" in out else "0",
        "cpu": cpu,
        "loadavg": loadavg(),
    }


def run_sink(rates: list[int], duration: float, conns: int) -> list[dict]:
    """The generator's own capacity: signed bet requests, offered open loop to an nginx on CPU 0 that
    answers 202 at once (nginx serves far more than these rates, so the generator is the limit)."""
    tmp = Path(tempfile.mkdtemp(prefix="bet-sink-"))
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(f"""daemon off; master_process off; worker_processes 1;
error_log {tmp}/error.log; pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{port}; keepalive_requests 10000000; keepalive_timeout 120;
    location / {{ default_type application/json;
      return 202 '{{"bet_id":"0123456789abcdef012345","status":"pending"}}'; }}
  }}
}}
""")
    proc = subprocess.Popen(
        ["taskset", "-c", "0", shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(tmp), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    out = []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                tcp_ok(port)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"nginx sink did not start; see {tmp}/error.log") from None
                time.sleep(0.1)
        traders = [Trader(Key(), Key(), secrets.token_urlsafe(32), i) for i in range(200)]
        for rate in rates:
            n = int(rate * duration)
            reqs = _sink_bodies(traders, n, port)
            win = CpuWindow({"nginx": proc.pid})
            res = open_loop("127.0.0.1", port, reqs, rate, conns, grace_s=10.0)
            cpu = win.end()
            r = {
                "kind": "sink",
                "rate": rate,
                "duration_s": duration,
                "conns": conns,
                **latency_summary(res, 202),
                "cpu": cpu,
                "loadavg": loadavg(),
            }
            out.append(r)
            log(
                f"sink {rate}/s: sent {r['sent_per_s']:.0f}/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.1f} ms, "
                f"generator {cpu['generator_cores'] * 100:.0f}% of a core, statuses {r['statuses']}"
            )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _sink_bodies(traders: list[Trader], n: int, port: int) -> list[bytes]:
    """n distinct signed bet requests (real signatures over real texts; the sink does not check them)."""
    ts = int(time.time() * 1000)
    reqs = []
    for i in range(n):
        tr = traders[i % len(traders)]
        cell = f"{1763712005 + 5 * (i // len(traders) % 10)}:{6700 + i // (10 * len(traders))}"
        nonce = secrets.token_hex(8)
        sig = tr.session_key.personal_sign(
            bet_text("localhost:8443", 1, tr.address, cell, "1", "1.01", nonce, ts)
        )
        body = orjson.dumps(
            {"cell": cell, "stake": "1", "min_multiplier": "1.01", "nonce": nonce, "ts": ts, "signature": sig}
        )
        reqs.append(build_request("POST", "/api/v1/bets", f"127.0.0.1:{port}", body, tr.token))
    return reqs


# ---- setup and self-check ------------------------------------------------------------------------------


def setup_traders(host: str, port: int, count: int, domain: str, chain_id: int) -> list[Trader]:
    import gevent
    from gevent.pool import Pool

    traders: list[Trader | None] = [None] * count
    pool = Pool(32)
    apis: list[Api] = []

    def one(i: int) -> None:
        api = apis.pop() if apis else Api(host, port)
        try:
            traders[i] = login_trader(api, domain, chain_id, "1000", index=i)
        finally:
            apis.append(api)

    t0 = time.monotonic()
    for i in range(count):
        pool.spawn(one, i)
    pool.join(timeout=300, raise_error=True)
    missing = sum(t is None for t in traders)
    if missing:
        raise RuntimeError(f"{missing} traders failed to log in")
    log(f"{count} traders logged in (SIWE + session key) and funded in {time.monotonic() - t0:.1f}s")
    gevent.sleep(0)
    return traders  # type: ignore[return-value]


def self_check(api: Api, trader: Trader, domain: str, chain_id: int) -> None:
    """The fast signer agrees with eth-account, and a few signed bets are accepted and then confirmed."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    text = bet_text(domain, chain_id, trader.address, "1:1", "1", "1.01", "abc", 1)
    assert (
        Account.recover_message(
            encode_defunct(text=text), signature=trader.session_key.personal_sign(text)
        ).lower()
        == trader.session_key.address
    )
    _, grid = api.call("GET", "/api/v1/grid")
    now = time.time()
    cells = plan_cells(grid, now, now + 5, 3)[:3]
    ids = []
    for cell in cells:
        nonce, ts = secrets.token_hex(8), int(time.time() * 1000)
        sig = trader.session_key.personal_sign(
            bet_text(domain, chain_id, trader.address, cell, "1", "1.01", nonce, ts)
        )
        status, body = api.call(
            "POST",
            "/api/v1/bets",
            {
                "cell": cell,
                "stake": "1",
                "min_multiplier": "1.01",
                "nonce": nonce,
                "ts": ts,
                "signature": sig,
            },
            trader.token,
        )
        assert status == 202, (status, body)
        ids.append(body["bet_id"])
        trader.used_cells.add(cell)
    deadline = time.monotonic() + 10
    for bet_id in ids:
        while True:
            status, body = api.call("GET", f"/api/v1/bets/{bet_id}", token=trader.token)
            if body.get("status") == "confirmed":
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.05)
    log(f"self-check: signer matches eth-account; {len(ids)} signed bets accepted and confirmed")


def wait_betting_open(api: Api, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            status, grid = api.call("GET", "/api/v1/grid")
            if status == 200 and grid.get("price") and grid["feed"]["betting"] and grid["quotes"]:
                return grid
        if time.monotonic() > deadline:
            raise TimeoutError("betting did not open (feed/quotes)")
        time.sleep(0.25)


# ---- report -------------------------------------------------------------------------------------------


def f(v, fmt="{:.1f}") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def print_table(results: list[dict]) -> None:
    print(
        "| run | offered/s | sent/s | accepted (202)/s | confirmed | p50 ms | p99 ms | max ms | "
        "tap→bet:confirmed p50 / p99 ms (ws) | server accept→commit p99 | worker CPU (idle) | worker µs/bet "
        "| CPU0 / CPU1 busy | others | non-202 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---|---:|---|")
    for r in results:
        cpu = r.get("cpu", {})
        busy = f"{f(cpu.get('cpu0_busy', float('nan')) * 100, '{:.0f}')}% / {f(cpu.get('cpu1_busy', float('nan')) * 100, '{:.0f}')}%"
        if r["kind"] == "healthz-wrk":
            print(
                f"| /healthz wrk closed loop, {r['conns']} conns | max | | {f(r['req_per_s'], '{:.0f}')} (200s) | | "
                f"{f(r['p50_ms'], '{:.2f}')} | {f(r['p99_ms'], '{:.1f}')} | | | | {f(cpu.get('worker_cores', 0) * 100, '{:.0f}')}% "
                f"| {f(cpu.get('worker_cores', 0) / r['req_per_s'] * 1e6, '{:.0f}')} µs/req | {busy} | {f(cpu.get('others_cores', 0), '{:.2f}')} | non-2xx {r['non2xx']} |"
            )
            continue
        non = {k: v for k, v in r["statuses"].items() if k not in ("202", "200")}
        if r["kind"] == "healthz-open":
            print(
                f"| /healthz open loop | {r['rate']} | {f(r['sent_per_s'], '{:.0f}')} | "
                f"{r['statuses'].get('200', 0) / r['send_span_s']:.0f} (200s) | | {f(r['p50_ms'], '{:.2f}')} | "
                f"{f(r['p99_ms'])} | {f(r['max_ms'])} | | | {f(cpu.get('worker_cores', 0) * 100, '{:.0f}')}% | | {busy} | "
                f"{f(cpu.get('others_cores', 0), '{:.2f}')} | {non or 'none'} |"
            )
            continue
        print(
            f"| bets {r['duration_s']:.0f} s | {r['rate']} | {f(r['sent_per_s'], '{:.0f}')} | {f(r['accepted_per_s'], '{:.0f}')} | "
            f"{r['confirmed']}/{r['accepted']} | {f(r['p50_ms'], '{:.2f}')} | {f(r['p99_ms'])} | {f(r['max_ms'])} | "
            f"{f(r['ttc_p50_ms'])} / {f(r['ttc_p99_ms'])} (n={r['ws_confirmed']}) | {r['confirm_hist'].get('p99')} | "
            f"{f(cpu.get('worker_cores', 0) * 100, '{:.0f}')}% ({f(r['idle'].get('worker_cores', float('nan')) * 100, '{:.0f}')}%) | "
            f"{f(r['worker_marginal_us_per_bet'], '{:.0f}')} | {busy} | {f(cpu.get('others_cores', 0), '{:.2f}')} | "
            f"{non or 'none'} |"
        )
    console_table(results, lambda r: f"bets {r['duration_s']:.0f} s")


# ---- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="1000,2000,3000", help="offered bets/s, comma list")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per rate (≤ 45)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per rate")
    ap.add_argument(
        "--conns", type=int, default=64, help="keep-alive connections (nginx upstream keepalive: 64)"
    )
    ap.add_argument(
        "--traders", type=int, default=0, help="traders to log in (default: enough for the largest run)"
    )
    ap.add_argument("--ws-traders", type=int, default=100, help="traders listening on /ws (0: none)")
    ap.add_argument("--row-margin", type=int, default=6, help="use rows within this many of the current row")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up at 1/4 of the first rate")
    ap.add_argument("--healthz", type=int, default=10, help="seconds of /healthz (wrk + open loop); 0: skip")
    ap.add_argument(
        "--profile", type=Path, help="py-spy raw profile of the worker during one run (see --profile-rate)"
    )
    ap.add_argument(
        "--profile-rate", type=int, help="the rate whose first run is profiled (default: the largest)"
    )
    ap.add_argument(
        "--healthz-rate", type=int, default=2000, help="offered rate of the open-loop /healthz run"
    )
    ap.add_argument(
        "--sink",
        action="store_true",
        help="generator check: offer signed bet requests at --rates to an nginx sink on CPU 0 "
        "(answers 202 at once) and report the achieved rate and this process's CPU",
    )
    ap.add_argument("--url", help="use this running server (http://127.0.0.1:PORT) instead of starting one")
    ap.add_argument("--sim-volatility", default="0.15", help="TAP_SIM_VOLATILITY for the started server")
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the started server")
    ap.add_argument(
        "--serve",
        type=float,
        default=0,
        help="only start the stack, print its URL, keep it up this many seconds, stop it (for locust)",
    )
    add_console_args(ap)
    ap.add_argument("--json", type=Path, help="write all results here")
    ap.add_argument("--logs", type=Path, help="keep the gunicorn and redis logs here")
    ap.add_argument(
        "--max-others",
        type=float,
        default=0.15,
        help="wait before a run until other processes use at most this many cores, and repeat a run "
        "(once) if they used more during it",
    )
    ap.add_argument("--attempts", type=int, default=3, help="most runs per rate while others interfere")
    ap.add_argument(
        "--quiet-timeout", type=float, default=90, help="longest wait for a quiet machine per run"
    )
    args = ap.parse_args(argv)
    check_console_args(ap, args)

    from gevent import monkey

    monkey.patch_all()
    import gevent

    rates = [int(r) for r in args.rates.split(",")]
    if args.duration > 45:
        ap.error("--duration must be ≤ 45 s (signed ts must stay within ±30 s of server time)")
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {1})

    stack = None
    results: list[dict] = []
    if args.sink:
        results = run_sink(rates, args.duration, args.conns)
        print()
        print(
            "| generator check (nginx sink) | offered/s | sent/s | 202/s | p50 ms | p99 ms | generator CPU |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(
                f"| signed bets, {r['conns']} conns | {r['rate']} | {r['sent_per_s']:.0f} | "
                f"{r['statuses'].get('202', 0) / r['send_span_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.1f} | "
                f"{r['cpu']['generator_cores'] * 100:.0f}% |"
            )
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
        return 0

    api: Api | None = None
    admin_key = Key()
    console: ConsolePoller | None = None
    main_greenlet = gevent.getcurrent()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # under gevent a handler runs in the hub: throw into the main greenlet so `finally` stops the stack
        gevent.signal_handler(sig, lambda sig=sig: main_greenlet.throw(SystemExit(128 + sig)))
    try:
        if args.url:
            m = re.match(r"http://([^:/]+):(\d+)", args.url)
            host, port = m.group(1), int(m.group(2))
            pids: dict[str, int] = {}
            worker = None
        else:
            env = dict(kv.split("=", 1) for kv in args.env)
            env.setdefault("TAP_SIM_VOLATILITY", args.sim_volatility)
            # Thousands of bets of 1 on a few dozen cells, far cells at 100× with the calm sim feed: the
            # default exposure caps (SPEC §8b) would refuse part of them. Out of the way, as before them.
            env.setdefault("TAP_MAX_CELL_PAYOUT", "1000000000")
            env.setdefault("TAP_MAX_COLUMN_PAYOUT", "1000000000")
            if args.console_poll:
                env["TAP_ADMIN_ADDRESSES"] = admin_key.checksum_address
            stack = Stack(env, args.logs)
            stack.start()
            host, port = "127.0.0.1", stack.port
            log(
                f"redis :{stack.redis_port} (CPU 1), gunicorn :{port} (CPU 0), data {stack.tmp}; "
                f"overrides: rate limits off, TAP_SIM_VOLATILITY={env['TAP_SIM_VOLATILITY']}"
                + (f", {args.env}" if args.env else "")
            )
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
        if args.serve:
            wait_betting_open(api)
            print(f"http://{host}:{port}", flush=True)
            log(f"serving http://{host}:{port} for {args.serve:.0f}s (betting open); Ctrl-C stops it")
            time.sleep(args.serve)
            return 0
        if stack is not None:
            worker = stack.worker_pid()
            pids = {"worker": worker, "master": stack.gunicorn.pid, "redis": stack.redis_server.proc.pid}
        grid = wait_betting_open(api)
        st = grid["settings"]
        domain, chain_id = st["siwe_domain"], st["chain_id"]
        log(
            f"betting open; price {grid['price']}; grid {st['columns_ahead']} columns ahead, lead "
            f"{st['min_lead_columns']}, ±{st['rows_each_side']} rows; domain {domain}, chain {chain_id}"
        )

        per_trader = cells_per_trader_estimate(
            args.duration,
            5.0,
            st["column_seconds"],
            st["min_lead_columns"],
            st["columns_ahead"],
            args.row_margin,
        )
        per_trader = max(1, int(per_trader * 0.7))  # unquoted cells near the price, rounding
        count = args.traders or max(args.ws_traders, math.ceil(max(rates) * args.duration / per_trader))
        traders = setup_traders(host, port, count, domain, chain_id)
        self_check(api, traders[0], domain, chain_id)
        if args.console_poll:
            token = login_admin(api, admin_key, domain, chain_id)
            console = ConsolePoller(host, port, token, args.console_poll, args.console_window)

        if args.warmup > 0:
            r = measure_bets(
                api,
                pids,
                host,
                port,
                traders,
                max(100, rates[0] // 4),
                args.warmup,
                args.conns,
                0,
                args.row_margin,
                domain,
                chain_id,
                None,
                None,
            )
            log(f"warm-up: {r['accepted']}/{r['offered']} accepted, p99 {r['p99_ms']:.1f} ms")

        if args.healthz:
            if pids:
                wait_quiet(pids, args.max_others, args.quiet_timeout)
            log(f"load before /healthz: {loadavg()}")
            results.append(measure_healthz_wrk(port, args.healthz, args.conns, pids))
            log(f"/healthz wrk: {results[-1]['req_per_s']:.0f} req/s, p99 {results[-1]['p99_ms']:.1f} ms")
            results.append(
                measure_healthz_open(host, port, args.healthz_rate, args.healthz, args.conns, pids)
            )
            log(
                f"/healthz open loop at {args.healthz_rate}/s: p50 {results[-1]['p50_ms']:.2f} p99 {results[-1]['p99_ms']:.1f} ms"
            )

        profiled = False
        for rate in rates:
            for rep in range(args.repeat):
                for attempt in range(args.attempts):
                    log(f"load before rate {rate} (run {rep + 1}): {loadavg()}")
                    prof_rate = args.profile_rate or max(rates)
                    prof = (
                        args.profile
                        if (args.profile and rate == prof_rate and rep == 0 and not profiled)
                        else None
                    )
                    r = measure_bets(
                        api,
                        pids,
                        host,
                        port,
                        traders,
                        rate,
                        args.duration,
                        args.conns,
                        args.ws_traders,
                        args.row_margin,
                        domain,
                        chain_id,
                        prof,
                        worker,
                        quiet=(args.max_others, args.quiet_timeout) if pids else None,
                        console=console,
                    )
                    r["attempt"] = attempt + 1
                    r["profiled"] = prof is not None
                    profiled = profiled or prof is not None
                    results.append(r)
                    others = r["cpu"].get("others_cores", 0)
                    log(
                        f"rate {rate}: accepted {r['accepted_per_s']:.0f}/s, p50 {r['p50_ms']:.2f} ms, p99 "
                        f"{r['p99_ms']:.1f} ms, tap→confirmed p99 {r['ttc_p99_ms']:.1f} ms (ws n={r['ws_confirmed']}), "
                        f"worker {r['cpu'].get('worker_cores', 0) * 100:.0f}% CPU, others {others:.2f} cores, "
                        f"statuses {r['statuses']}"
                    )
                    if others <= args.max_others:
                        break
                    if attempt + 1 < args.attempts:
                        log(f"other processes used {others:.2f} cores during the run: repeating it")
                    else:
                        log(f"other processes used {others:.2f} cores during the run: the row says so")
        return 0
    finally:
        if api is not None:
            api.http.close()  # an open keep-alive connection would hold gunicorn's graceful stop for 20 s
        if stack is not None:
            stack.stop()
        if results:
            print()
            print_table(results)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
