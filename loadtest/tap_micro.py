#!/usr/bin/env python3
"""Micro-measurements behind issue 12's changes (BENCHMARKS.md, "Taps over the websocket").

    .venv/bin/python loadtest/tap_micro.py pool       # CPU per pooled PING: redis-py's pool vs the app's
    .venv/bin/python loadtest/tap_micro.py queue      # hub CPU per queued websocket message, timed get or not
    .venv/bin/python loadtest/tap_micro.py gil        # does coincurve release the GIL; does a thread pool help

Each pins itself to CPU 0 (`gil` uses both CPUs for its first part), is bounded, and stops what it starts
(`pool` runs a private redis-server on a free port).
"""

from __future__ import annotations

import sys

from gevent import monkey

if sys.argv[1:2] != ["gil"]:
    monkey.patch_all()  # `gil` measures real OS threads: not patched

import argparse
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path

import gevent

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pool() -> None:
    import redis

    from app.storage.redis_client import make_redis
    from tests.support.servers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "/usr/bin/redis-server",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        url = f"redis://127.0.0.1:{port}/0"
        app = make_redis(url, pool_size=16, timeout_s=5)
        stock = redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(
                url, max_connections=16, timeout=5, socket_timeout=5, health_check_interval=30
            )
        )
        for name, r in (("redis-py BlockingConnectionPool", stock), ("app (real poll)", app)) * 2:
            for _ in range(200):
                r.ping()
            t = time.process_time()
            for _ in range(5000):
                r.ping()
            print(f"{name}: {(time.process_time() - t) / 5000 * 1e6:.1f} µs CPU per PING")
    finally:
        proc.terminate()
        proc.wait(10)


def queue() -> None:
    from gevent.queue import Queue

    def run(timeout: float | None, n: int = 20000, clients: int = 1000) -> float:
        qs = [Queue(256) for _ in range(clients)]

        def writer(q: Queue) -> None:
            while True:
                q.get(timeout=timeout) if timeout else q.get()

        gs = [gevent.spawn(writer, q) for q in qs]
        gevent.sleep(0.1)
        t = time.process_time()
        rounds = n // clients
        for _ in range(rounds):
            for q in qs:
                q.put_nowait(b"x")
            gevent.sleep(0)
            gevent.sleep(0)
        dt = time.process_time() - t
        gevent.killall(gs)
        return dt / (rounds * clients) * 1e6

    for to in (None, 5.0, None, 5.0):
        print(f"Queue.get({'timeout=5' if to else ''}): {run(to):.1f} µs CPU per message delivered")


def gil() -> None:
    import coincurve
    from Crypto.Hash import keccak
    from gevent.threadpool import ThreadPool

    k = coincurve.PrivateKey()
    msgs = [keccak.new(data=secrets.token_bytes(32), digest_bits=256).digest() for _ in range(500)]
    sigs = [k.sign_recoverable(m, hasher=None) for m in msgs]

    def rec(i: int) -> object:
        return coincurve.PublicKey.from_signature_and_message(sigs[i % 500], msgs[i % 500], hasher=None)

    real_thread, real_event, real_sleep = threading.Thread, threading.Event, time.sleep
    os.sched_setaffinity(0, {0, 1})
    for _ in range(2):  # a real OS thread spins in Python beside a recovery loop
        stop, out = real_event(), []

        def spin(stop=stop, out=out) -> None:
            n = 0
            while not stop.is_set():
                for _ in range(100):
                    n += 1
            out.append(n)

        t = real_thread(target=spin)
        t.start()
        t0 = time.perf_counter()
        for i in range(20000):
            rec(i)
        beside = (time.perf_counter() - t0) / 20000 * 1e6
        stop.set()
        t.join()
        real_sleep(0.1)
        t0 = time.perf_counter()
        for i in range(20000):
            rec(i)
        alone = (time.perf_counter() - t0) / 20000 * 1e6
        print(f"recovery: {alone:.1f} µs alone, {beside:.1f} µs beside a spinning Python thread")
    os.sched_setaffinity(0, {0, 1})
    n = 5000
    for size in (None, 1, 2, None):
        if size is None:
            t0, w0 = time.thread_time(), time.perf_counter()
            for i in range(n):
                rec(i)
            print(
                f"inline: hub CPU {(time.thread_time() - t0) / n * 1e6:.1f} µs, wall {(time.perf_counter() - w0) / n * 1e6:.1f} µs"
            )
            continue
        tp = ThreadPool(size)

        def worker(j: int, tp=tp) -> None:
            for i in range(j, n, 32):
                tp.apply(rec, (i,))

        t0, w0 = time.thread_time(), time.perf_counter()
        gevent.joinall([gevent.spawn(worker, j) for j in range(32)])
        print(
            f"ThreadPool({size}), 32 greenlets: hub CPU {(time.thread_time() - t0) / n * 1e6:.1f} µs, "
            f"wall {(time.perf_counter() - w0) / n * 1e6:.1f} µs"
        )
        tp.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["pool", "queue", "gil"])
    args = ap.parse_args()
    if args.what != "gil":
        os.sched_setaffinity(0, {0})
    {"pool": pool, "queue": queue, "gil": gil}[args.what]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
