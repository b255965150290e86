"""Websocket fan-out benchmark: N connected clients, ticks at R/s, delivery lag and the worker's CPU/RSS.

    .venv/bin/python loadtest/ws_fanout.py --clients 1000 5000 --seconds 30 --rate 4

What runs (loopback only, bounded in time):

- a private redis-server and the project's gunicorn (``gunicorn -c gunicorn.conf.py``: one gevent
  worker, worker_connections 10000), gunicorn pinned to CPU 0 with ``taskset``;
- this process, pinned to CPU 1, is the load generator: it opens N raw-socket websocket clients to
  ``/ws`` (a minimal RFC 6455 frame reader, so the generator's own cost stays small), then publishes
  R ticks/s on ``tap:price`` exactly as the price feed does (``app.market.prices.publish_tick``: history,
  last price, PUBLISH), a random walk stamped with the publish time in ms;
- the worker's own price sources are pointed at a closed port (``TAP_PRICE_SOURCES=binance``), so
  the benchmark is the only publisher. Everything else in the worker runs as in production (the
  pub/sub listener, the breaker, the grid publisher broadcasting ``grid`` every second).

Delivery lag = client receive time − tick ts (same machine clock, ms resolution), over every
(client, tick) pair of the measurement window. Worker CPU = its user+system CPU time over the window
divided by the window (1.0 = one core); RSS sampled every second. Results as JSON on stdout.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse
import base64
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

import gevent
import gevent.lock
import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.market.prices import Tick, publish_tick
from tests.support.servers import RedisServer, free_port, http_get, wait_until

_TS = re.compile(rb'\{"type":"price","price":"[0-9.]+","ts":([0-9]+)')


class Stats:
    def __init__(self) -> None:
        self.lags = array("d")
        self.measuring = False
        self.received = 0
        self.other = 0
        self.closed = 0
        self.connected = 0


def client(port: int, stats: Stats, gate: gevent.lock.Semaphore) -> None:
    """A websocket client that reads every frame and timestamps price messages."""
    gate.acquire()  # bounds concurrent handshakes, released once this one is done
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        gate.release()
        stats.closed += 1
        return
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            gate.release()
            stats.closed += 1
            return
        buf += chunk
    gate.release()
    head, _, buf = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        stats.closed += 1
        return
    stats.connected += 1
    try:
        while True:
            # parse every complete frame in buf (server frames are unmasked)
            while len(buf) >= 2:
                n = buf[1] & 0x7F
                off = 2
                if n == 126:
                    if len(buf) < 4:
                        break
                    n = int.from_bytes(buf[2:4], "big")
                    off = 4
                elif n == 127:
                    if len(buf) < 10:
                        break
                    n = int.from_bytes(buf[2:10], "big")
                    off = 10
                if len(buf) < off + n:
                    break
                payload = buf[off : off + n]
                opcode = buf[0] & 0x0F
                buf = buf[off + n :]
                if opcode == 0x9:  # ping → pong (masked, empty payload is fine to echo)
                    s.sendall(b"\x8a\x80" + b"\x00\x00\x00\x00")
                    continue
                if opcode == 0x8:
                    stats.closed += 1
                    return
                m = _TS.match(payload)
                if m is not None:
                    if stats.measuring:
                        stats.lags.append(time.time() * 1000 - int(m.group(1)))
                        stats.received += 1
                else:
                    stats.other += 1
            chunk = s.recv(65536)
            if not chunk:
                stats.closed += 1
                return
            buf += chunk
    finally:
        s.close()


def metric(url: str, name: str) -> float:
    _, body = http_get(url + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p))]


def bet_load(url: str, port: int, rate: float, seconds: float):
    """Signed bets at `rate`/s for `seconds`, offered open-loop during the measured window (the
    loadtest/bet_ceiling.py machinery: SIWE traders with session keys, bodies signed just before).
    Returns a function that starts the load and returns a greenlet with its RunResult."""
    from loadtest.lib.cells import cells_per_trader_estimate, plan_cells, sign_bodies
    from loadtest.lib.openloop import open_loop
    from loadtest.lib.rawhttp import Api, login_trader

    api = Api("127.0.0.1", port)
    n = int(rate * seconds)
    cells_each = cells_per_trader_estimate(seconds, 5.0)
    traders = [login_trader(api, "localhost:8443", 1, index=i) for i in range((n // max(1, cells_each)) + 2)]
    _, grid = api.call("GET", "/api/v1/grid")
    now = time.time()
    cells = plan_cells(grid, now, now + seconds + 5, row_margin=6)
    reqs, _ = sign_bodies(
        traders, cells, n, "localhost:8443", 1, int((now + seconds / 2) * 1000), f"127.0.0.1:{port}", "1"
    )
    return lambda: gevent.spawn(open_loop, "127.0.0.1", port, reqs, rate, 32, 5.0)


def run_size(
    url: str,
    port: int,
    r: redis.Redis,
    worker: psutil.Process,
    n: int,
    seconds: float,
    rate: float,
    bets: float = 0.0,
    profile: Path | None = None,
):
    stats = Stats()
    gate = gevent.lock.Semaphore(200)  # at most 200 handshakes in flight
    greenlets = [gevent.spawn(client, port, stats, gate) for _ in range(n)]
    wait_until(lambda: stats.connected + stats.closed >= n, timeout=120, what=f"{n} handshakes")
    wait_until(lambda: metric(url, "tap_ws_clients") >= n, timeout=120, what=f"{n} clients")
    price = 6_700_000
    rng = random.Random(1)

    step = 200 if bets else 500  # a calmer walk under bet load, so pre-signed cells stay placeable

    def publish(count: int) -> None:
        nonlocal price
        next_at = time.monotonic()
        for _ in range(count):
            price = max(1, price + rng.randint(-step, step))
            publish_tick(r, Tick(price, int(time.time() * 1000)))
            next_at += 1 / rate
            gevent.sleep(max(0.0, next_at - time.monotonic()))

    publish(int(rate * 3))  # warm-up: 3 s of ticks, not measured
    start_bets = None
    if bets:
        warm = gevent.spawn(publish, int(rate * 15))  # keep the feed healthy while traders log in
        start_bets = bet_load(url, port, bets, seconds)
        warm.kill()
    gevent.sleep(0.5)
    cpu0 = worker.cpu_times()
    t0 = time.monotonic()
    rss = []
    sampler = gevent.spawn(
        lambda: [rss.append(worker.memory_info().rss) or gevent.sleep(1) for _ in iter(int, 1)]
    )
    spy = None
    if profile is not None:  # py-spy on the worker during the window (raw folded stacks, CPU 1)
        spy = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--pid", str(worker.pid), "--rate", "200",
             "--threads", "--nonblocking", "--format", "raw", "--duration", str(int(seconds) + 30),
             "-o", str(profile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    stats.measuring = True
    ticks = int(rate * seconds)
    bet_run = start_bets() if start_bets else None
    publish(ticks)
    gevent.sleep(1.0)  # let the last tick reach everyone
    stats.measuring = False
    cpu1 = worker.cpu_times()
    wall = time.monotonic() - t0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    sampler.kill()
    dropped = metric(url, "tap_ws_dropped_total")
    lags = sorted(stats.lags)
    result = {
        "clients": n,
        "connected": stats.connected,
        "rate_per_s": rate,
        "ticks": ticks,
        "deliveries": stats.received,
        "expected": ticks * n,
        "lag_ms_p50": round(pct(lags, 0.50), 1),
        "lag_ms_p99": round(pct(lags, 0.99), 1),
        "lag_ms_max": round(lags[-1], 1) if lags else None,
        "worker_cpu": round((cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall, 3),
        "worker_rss_mib": round(max(rss) / 2**20, 1) if rss else None,
        "other_messages": stats.other,
        "dropped_clients": dropped,
        "closed_clients": stats.closed,
    }
    if bet_run is not None:
        from loadtest.lib.openloop import latency_summary

        bet_res = bet_run.get(timeout=60)
        accepted = sum(1 for x in bet_res.status if x == 202)
        result["bets_offered_per_s"] = bets
        result["bets_accepted_per_s"] = round(accepted / seconds, 1)
        result["bets_http"] = latency_summary(bet_res, ok_status=202)
    gevent.killall(greenlets, timeout=10)
    wait_until(lambda: metric(url, "tap_ws_clients") == 0, timeout=60, what="clients gone")
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--rate", type=float, default=4)
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument(
        "--bets", type=float, default=0, help="also offer this many signed bets/s during the window"
    )
    ap.add_argument("--profile", type=Path, help="py-spy raw profile of the worker (largest size only)")
    ap.add_argument("--env", action="append", default=[], help="extra KEY=VALUE for the server")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max(args.clients) + 1000
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, need)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        sys.exit(f"raise the file-descriptor limit: ulimit -n {need}")

    tmp = Path(tempfile.mkdtemp(prefix="tap-wsbench-"))
    (tmp / "redis").mkdir()
    redis_srv = RedisServer(tmp / "redis")
    redis_srv.start()
    port = free_port()
    env = {
        **os.environ,
        "TAP_DATA_DIR": str(tmp / "data"),
        "TAP_REDIS_URL": redis_srv.url,
        "TAP_BIND": f"127.0.0.1:{port}",
        "TAP_PRICE_SOURCES": "binance",  # pointed at a closed port: the benchmark is the only publisher
        "TAP_BINANCE_WS_URL": f"ws://127.0.0.1:{free_port()}/ws/btcusdt@aggTrade",
        "TAP_LOG_LEVEL": "WARNING",
    }
    env.update(dict(kv.split("=", 1) for kv in args.env))
    if args.bets:  # load from one IP, mock deposits
        env.update(TAP_DEV_MODE="1", TAP_RATE_PER_IP="0", TAP_RATE_PER_ADDRESS="0", TAP_RATE_AUTH_PER_IP="0")
    log = open(tmp / "gunicorn.log", "wb")  # noqa: SIM115
    taskset = shutil.which("taskset")
    cmd = [str(ROOT / ".venv" / "bin" / "gunicorn"), "-c", "gunicorn.conf.py"]
    gunicorn = subprocess.Popen(
        ([taskset, "-c", args.server_cpu] if taskset else []) + cmd, cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        wait_until(lambda: http_get(url + "/healthz")[0] == 200, timeout=30, what="gunicorn")
        workers = psutil.Process(gunicorn.pid).children()
        assert len(workers) == 1, workers
        worker = workers[0]
        if taskset:
            os.sched_setaffinity(0, {args.client_cpu})
        r = redis.Redis.from_url(redis_srv.url)
        for n in args.clients:
            prof = args.profile if n == max(args.clients) else None
            res = run_size(url, port, r, worker, n, args.seconds, args.rate, args.bets, prof)
            print(json.dumps(res), flush=True)
            results.append(res)
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gunicorn.kill()
        redis_srv.stop()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"summary": results, "cpus": os.cpu_count(), "worker_connections": 10000}))


if __name__ == "__main__":
    main()
