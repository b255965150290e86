#!/usr/bin/env python3
"""Micro-measurements behind issue 12's changes (BENCHMARKS.md, "Taps over the websocket").

    .venv/bin/python loadtest/tap_micro.py pool       # CPU per pooled PING: redis-py's pool vs the app's
    .venv/bin/python loadtest/tap_micro.py queue      # hub CPU per queued websocket message, timed get or not
    .venv/bin/python loadtest/tap_micro.py gil        # does coincurve release the GIL; does a thread pool help
    .venv/bin/python loadtest/tap_micro.py parse      # CPU per bet body check: marshmallow vs bet_request_fields
    .venv/bin/python loadtest/tap_micro.py keccak     # CPU per keccak-256: pycryptodome vs others installed
    .venv/bin/python loadtest/tap_micro.py recover    # CPU per signature recovery with either keccak
    .venv/bin/python loadtest/tap_micro.py verify     # libsecp256k1 alone: recover vs verify with the key
    .venv/bin/python loadtest/tap_micro.py openbets --n 50000   # /me and the open-bets page, index or not
    .venv/bin/python loadtest/tap_micro.py betspage   # GET /bets?limit=20's rows: SQLite, dicts, JSON
    .venv/bin/python loadtest/tap_micro.py write      # CPU per tap of the websocket writers' sendalls
    .venv/bin/python loadtest/tap_micro.py fanout --n 20   # CPU per broadcast frame to 1,000 idle sockets
    .venv/bin/python loadtest/tap_micro.py pubsub     # CPU per bet:confirmed message: redis-py PubSub vs Subscription
    .venv/bin/python loadtest/tap_micro.py ir parse   # the same, in instructions (valgrind callgrind), per call

`parse` and `keccak` alternate their variants round after round (`--rounds`), so a busy machine slows
each alike; they print every round and the median. `ir WHAT` runs `WHAT --only VARIANT` under callgrind
with --n N and 2N calls and prints the difference per call: instructions, steady on a noisy machine.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
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


_PUBLISHER = """
import sys, time, redis
port, n, burst, pause = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
r = redis.Redis(port=port)
msg = sys.stdin.buffer.read()
time.sleep(0.3)
for i in range(0, n, burst):
    pipe = r.pipeline(transaction=False)
    for j in range(i, min(n, i + burst)):
        pipe.publish(f"tap:user:0x{j % 500:040x}", msg)
    pipe.execute()
    time.sleep(pause)
"""


def pubsub(n: int, rounds: int, only: str | None) -> None:
    """The listener's CPU per `bet:confirmed` message (+ its balance, one pub/sub message), published
    by another process on CPU 1 in bursts of 30 every 10 ms (the notifier's round trips at ~3,000
    taps/s): redis-py's `PubSub.get_message(timeout=0.25)` against `workers.pubsub_listener.Subscription`
    (the listener's own), alternating, round after round."""
    from app.storage.redis_client import make_redis
    from tests.support.servers import free_port
    from workers.pubsub_listener import Subscription

    msg = (
        b'{"id":"1764230000000-0","type":"bet:confirmed","bet_id":"01a24efd1f486df67eff76",'
        b'"status":"confirmed","cell":"1796621555:6702","stake":"1","multiplier":"3.1819",'
        b'"payout":"3.1819"}\n{"id":"1764230000000-1","type":"balance","balance":"80"}'
    )
    port = free_port()
    server = [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--save", ""]
    proc = subprocess.Popen([*server, "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        r = make_redis(f"redis://127.0.0.1:{port}/0", pool_size=2, timeout_s=5)

        def consume(variant: str) -> float:
            pub = subprocess.Popen(
                ["taskset", "-c", "1", sys.executable, "-c", _PUBLISHER, str(port), str(n), "30", "0.01"],
                stdin=subprocess.PIPE,
            )
            got, t0 = 0, 0.0
            if variant == "redis-py PubSub":
                ps = r.pubsub(ignore_subscribe_messages=True)
                ps.psubscribe("tap:user:*")
                assert pub.stdin is not None
                pub.stdin.write(msg)
                pub.stdin.close()
                while got < n:
                    if ps.get_message(timeout=0.25) is not None:
                        t0 = t0 or time.process_time()
                        got += 1
                ps.close()
            else:
                sub = Subscription(r, [], ["tap:user:*"])
                assert pub.stdin is not None
                pub.stdin.write(msg)
                pub.stdin.close()
                while got < n:
                    batch = sub.read(timeout_s=0.25)
                    if batch:
                        t0 = t0 or time.process_time()
                        got += len(batch)
                sub.close()
            spent = time.process_time() - t0
            pub.wait(30)
            return spent / (n - 1) * 1e6

        results: dict[str, list[float]] = {"redis-py PubSub": [], "Subscription": []}
        for i in range(rounds):
            for name, xs in results.items():
                if only is None or name.startswith(only):
                    xs.append(consume(name))
                    print(f"round {i + 1} {name}: {xs[-1]:.2f} µs CPU per message")
        for name, xs in results.items():
            if xs:
                print(
                    f"{name}: median {sorted(xs)[len(xs) // 2]:.2f} µs CPU per message over {len(xs)} rounds"
                )
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


def _alternate(variants: dict[str, Callable[[int], object]], n: int, rounds: int, what: str) -> None:
    """Time each variant's n calls, round after round in turn; CPU (process_time) µs per call."""
    import statistics

    got: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        for i in range(min(n, 200)):
            fn(i)  # warm up
    for _ in range(rounds):
        for name, fn in variants.items():
            t = time.process_time()
            for i in range(n):
                fn(i)
            got[name].append((time.process_time() - t) / n * 1e6)
    for name, xs in got.items():
        rs = " ".join(f"{x:.2f}" for x in xs)
        print(f"{what} {name}: median {statistics.median(xs):.2f} µs CPU per call (rounds: {rs})")


def _bet_bodies(n: int) -> list[dict[str, Any]]:
    ts = int(time.time() * 1000)
    return [
        {
            "cell": "1763712005:6712",
            "stake": "10",
            "min_multiplier": "2.5",
            "nonce": secrets.token_hex(8),
            "ts": ts + i,
            "signature": "0x" + secrets.token_hex(65),
        }
        for i in range(n)
    ]


def parse(n: int, rounds: int, only: str | None) -> None:
    """The bet body check alone, both ways: what `app.bets.placement._parse_bet` ran before and now."""
    from app.bets.schemas import BetRequestSchema, bet_request_fields
    from app.http.json import validate_object

    schema = BetRequestSchema()
    bodies = _bet_bodies(n)
    variants: dict[str, Callable[[int], object]] = {
        "schema (marshmallow)": lambda i: validate_object(schema, bodies[i]),
        "bet_request_fields": lambda i: bet_request_fields(bodies[i]) or validate_object(schema, bodies[i]),
    }
    _alternate(_only(variants, only), n, rounds, "parse")


def keccak(n: int, rounds: int, only: str | None) -> None:
    """keccak-256 of what a tap hashes: the EIP-191 message (~270 bytes) and a 64-byte public key."""
    from Crypto.Hash import keccak as crypto_keccak

    msgs = [secrets.token_bytes(270) for _ in range(64)] + [secrets.token_bytes(64) for _ in range(64)]
    variants: dict[str, Callable[[int], object]] = {
        "pycryptodome": lambda i: crypto_keccak.new(digest_bits=256, data=msgs[i & 127]).digest()
    }
    try:
        from Cryptodome.Hash import keccak as dome_keccak

        variants["pycryptodomex"] = lambda i: dome_keccak.new(digest_bits=256, data=msgs[i & 127]).digest()
    except ImportError:
        print("pycryptodomex not installed: skipped")
    try:
        import sha3  # safe-pysha3

        variants["safe-pysha3"] = lambda i: sha3.keccak_256(msgs[i & 127]).digest()
    except ImportError:
        print("safe-pysha3 not installed: skipped")
    for name, fn in variants.items():  # they must agree before they are compared
        assert fn(5) == variants["pycryptodome"](5), name
    _alternate(_only(variants, only), n, rounds, "keccak")


def recover(n: int, rounds: int, only: str | None) -> None:
    """A whole signature recovery (`recover_personal_sign`: 2 keccaks + coincurve), with each keccak."""
    from Crypto.Hash import keccak as crypto_keccak

    from app.auth import signatures as sig
    from loadtest.lib.signing import Key, bet_text

    key = Key()
    texts = [
        bet_text("localhost", 1, key.address, "1763712005:6712", "10", "2.5", f"n{i:08d}", 1)
        for i in range(256)
    ]
    sigs = [key.personal_sign(t) for t in texts]
    current = sig.keccak256

    def old(data: bytes) -> bytes:
        return crypto_keccak.new(digest_bits=256, data=data).digest()

    def run(hasher: Callable[[bytes], bytes]) -> Callable[[int], object]:
        def one(i: int) -> object:
            sig.keccak256 = hasher
            return sig.recover_personal_sign(texts[i & 255], sigs[i & 255])

        return one

    assert run(old)(3) == run(current)(3) == key.address.lower()
    variants = {"pycryptodome keccak": run(old), "app (safe-pysha3 keccak)": run(current)}
    _alternate(_only(variants, only), n, rounds, "recover")


def verify(n: int, rounds: int, only: str | None) -> None:
    """The curve operation alone, through coincurve's cffi: recovering the key from a 65-byte signature
    (what a tap does) against verifying it with a known key (what it could do, but `v` goes unchecked)."""
    from coincurve import PrivateKey
    from coincurve._libsecp256k1 import ffi, lib
    from coincurve.context import GLOBAL_CONTEXT

    ctx = GLOBAL_CONTEXT.ctx
    key = PrivateKey()
    msgs = [secrets.token_bytes(32) for _ in range(64)]
    sigs = [key.sign_recoverable(m, hasher=None) for m in msgs]
    pub = key.public_key.public_key
    rsig = ffi.new("secp256k1_ecdsa_recoverable_signature *")
    plain = ffi.new("secp256k1_ecdsa_signature *")
    out = ffi.new("secp256k1_pubkey *")

    def recover_one(i: int) -> int:
        s = sigs[i & 63]
        lib.secp256k1_ecdsa_recoverable_signature_parse_compact(ctx, rsig, s[:64], s[64])
        return lib.secp256k1_ecdsa_recover(ctx, out, rsig, msgs[i & 63])

    def verify_one(i: int) -> int:
        lib.secp256k1_ecdsa_signature_parse_compact(ctx, plain, sigs[i & 63][:64])
        return lib.secp256k1_ecdsa_verify(ctx, plain, msgs[i & 63], pub)

    assert recover_one(1) == verify_one(1) == 1
    _alternate(_only({"recover": recover_one, "verify": verify_one}, only), n, rounds, "secp256k1")


def _time_read(
    conn: apsw.Connection, read: Callable[[apsw.Connection], object], rounds: int
) -> tuple[float, int]:
    """Median CPU µs per call of `read(conn)`, and the SQLite VM steps one call takes."""
    import statistics

    from tests.support.sqlite_steps import vm_steps

    read(conn)  # prepares the statements
    steps = vm_steps(conn, lambda: read(conn))
    calls = max(1, min(2000, 200_000 // max(1, steps)))
    xs = []
    for _ in range(rounds):
        t = time.process_time()
        for _ in range(calls):
            read(conn)
        xs.append((time.process_time() - t) / calls * 1e6)
    return statistics.median(xs), steps


def openbets(n: int, rounds: int) -> None:
    """/me's open stakes and the open-bets page for one trader with `n` settled bets and 5 open ones in
    the week, with migration 005's partial index and on a copy of the file without it: CPU per call
    and SQLite VM steps per call (BENCHMARKS.md, "Issue 12, seventh pass")."""
    import tempfile

    from app.bets.store import list_bets
    from app.ledger.store import account
    from app.storage import db

    tmp = Path(tempfile.mkdtemp(prefix="openbets-"))
    try:
        path = db.prepare_database(tmp / "with", time.time(), synchronous="NORMAL")
        conn = db.connect(path, synchronous="NORMAL")
        conn.execute(
            "INSERT INTO users (id, address, balance, created_at) VALUES (1, ?, 0, 0)", ("0x" + "1" * 40,)
        )
        with conn:
            for i in range(n + 5):
                conn.execute(
                    "INSERT INTO bets (bet_id, user_id, target_time, row, min_price, max_price, stake,"
                    " multiplier, payout, status, nonce, placed_at) VALUES (?, 1, ?, ?, 0, 1, 1000, 20000,"
                    " 2000, ?, ?, 0)",
                    (
                        f"b{i}",
                        1000 + i // 20,
                        i % 20,
                        "confirmed" if i >= n else ("won", "lost")[i % 2],
                        f"n{i}",
                    ),
                )
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        (tmp / "without").mkdir()
        shutil.copy(path, tmp / "without" / path.name)
        bare = db.connect(tmp / "without" / path.name)
        bare.execute("DROP INDEX bets_open_by_user")
        bare.close()
        for label, file in (("with the index", path), ("without it", tmp / "without" / path.name)):
            reader = db.connect(file, readonly=True)
            reads: dict[str, Callable[[apsw.Connection], object]] = {
                "account()": lambda c: account(c, 1),
                "list_bets(confirmed)": lambda c: list_bets(c, 1, "confirmed", None, 21),
            }
            for what, read in reads.items():
                us, steps = _time_read(reader, read, rounds)
                print(
                    f"{what} {label}: median {us:,.1f} µs CPU per call, {steps:,} VM steps ({n:,} settled, 5 open)"
                )
            reader.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def betspage(rounds: int) -> None:
    """What `GET /api/v1/bets?limit=20` does with its rows, step by step, for one of 500 traders with 60
    bets each in the week (as in `tap_ceiling.py --mixed` after a run): the rows read, made dicts with
    their week, then the wire's JSON (BENCHMARKS.md, "Issue 12, ninth pass")."""
    import tempfile

    import orjson

    from app.bets.store import BET_COLUMNS, bet_row_json, bet_row_to_dict, list_bets
    from app.storage import db

    tmp = Path(tempfile.mkdtemp(prefix="betspage-"))
    try:
        path = db.prepare_database(tmp, time.time(), synchronous="NORMAL")
        conn = db.connect(path, synchronous="NORMAL")
        with conn:
            for u in range(1, 501):
                conn.execute(
                    "INSERT INTO users (id, address, balance, created_at) VALUES (?, ?, 0, 0)",
                    (u, f"0x{u:040x}"),
                )
            for i in range(30_000):
                conn.execute(
                    "INSERT INTO bets (bet_id, user_id, target_time, row, min_price, max_price, stake,"
                    " multiplier, payout, status, nonce, placed_at) VALUES (?, ?, ?, ?, 0, 1, 1000000, 20000,"
                    " 2000000, 'confirmed', ?, 0)",
                    (f"{i:022x}", 1 + i % 500, 1000 + i // 100, i % 20, f"n{i}"),
                )
        conn.close()
        reader = db.connect(path, readonly=True)
        sql = f"SELECT {BET_COLUMNS} FROM main.bets WHERE user_id = ? ORDER BY id DESC LIMIT ?"
        rows = list_bets(reader, 7, None, None, 21)
        page = [bet_row_json(r) for r in rows[:20]]
        raw = reader.execute(sql, (7, 21)).fetchall()
        steps: dict[str, Callable[[apsw.Connection], object]] = {
            "list_bets(21): the whole read": lambda c: list_bets(c, 7, None, None, 21),
            "  of which the rows alone (execute + fetchall)": lambda c: c.execute(sql, (7, 21)).fetchall(),
            "  of which the rows made dicts (bet_row_to_dict)": lambda c: [bet_row_to_dict(r) for r in raw],
            "bet_row_json x 20": lambda c: [bet_row_json(r) for r in rows[:20]],
            "orjson.dumps of the page": lambda c: orjson.dumps({"bets": page, "next_cursor": None}),
        }
        for what, step in steps.items():
            us, _ = _time_read(reader, step, rounds)
            print(f"{what}: median {us:,.1f} µs CPU per call")
        reader.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


_DRAIN = """
import selectors, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
sel = selectors.DefaultSelector()
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
open_ = n
while open_:
    for key, _ in sel.select():
        try:
            data = key.fileobj.recv(1 << 20)
        except BlockingIOError:
            continue
        if not data:
            sel.unregister(key.fileobj)
            key.fileobj.close()
            open_ -= 1
"""


def write(n: int, rounds: int, only: str | None) -> None:
    """The websocket writer greenlets (`app.realtime.ws._write`) on real loopback sockets, per tap: its
    `bet:accepted` alone, then `bet:confirmed` + `balance` queued together, and a broadcast every two
    taps per socket; one frame per sendall (the loop before) vs what is queued in one sendall (now).
    A child process on CPU 1 reads every socket; this process (CPU 0) counts only the server side."""
    import socket
    from types import SimpleNamespace

    from app.realtime import ws as wsmod
    from app.realtime.fanout import CLOSE, PING, Fanout, text_frame

    def write_each(ws: Any, out: Any, client: Any, taps: Any) -> None:  # the loop before: a frame a sendall
        get = client.queue.get
        while ws.connected:
            frame = get()
            if frame is PING:
                ws.pong_received = False
            elif frame is CLOSE:
                break
            out.sendall(frame)

    per_variant = 200
    variants = {
        "one sendall per frame": write_each,
        "app (queued frames in one sendall)": wsmod._write,
        "app (raw), answers queued": wsmod._write,
        "app (raw), answers written by the reader": wsmod._write,
    }

    class QueuedAnswers(Fanout):
        def reply(self, client: Any, text: str | bytes) -> None:  # before: every answer queued
            self._offer(client, text_frame(text))

    if only:
        variants = {k: v for k, v in variants.items() if k.startswith(only)}
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4096)
    port = lsock.getsockname()[1]
    child = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-c", _DRAIN, str(port), str(per_variant * len(variants))]
    )
    svc = SimpleNamespace(
        status_message=lambda: {"type": "status", "feed": "healthy", "betting": True},
        feed=SimpleNamespace(last_tick=None),
        metrics=None,
    )
    taps = SimpleNamespace(svc=svc)
    setups = {}
    greenlets = []
    for name, fn in variants.items():
        fanout = (QueuedAnswers if "answers queued" in name else Fanout)(queue_max=256, ping_every_s=3600)
        clients = []
        for _ in range(per_variant):
            conn, _ = lsock.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wsmod.SEND_BUFFER_BYTES)
            client = fanout.register()
            if "(raw)" in name:
                client.raw = conn._sock  # as the route sets it: idle writers are written to directly
            ws = SimpleNamespace(connected=True, pong_received=True)
            greenlets.append(gevent.spawn(fn, ws, conn, client, taps))
            clients.append((client, ws, conn))
        setups[name] = (fanout, clients)
    accepted = b'{"type":"bet:accepted","req":"t-42","bet_id":"01JD8X7Q3K5M2N4P6R8T0V","status":"pending","cell":"1763712005:6712","stake":"10","multiplier":"2.5","payout":"25"}'
    confirmed = text_frame(
        b'{"type":"bet:confirmed","id":"1764230000000-0","bet_id":"01JD8X7Q3K5M2N4P6R8T0V","cell":"1763712005:6712","stake":"10","multiplier":"2.5","payout":"25"}'
    )
    balance = text_frame(b'{"type":"balance","id":"1764230000000-1","balance":"1234.5"}')
    price = b'{"type":"price","price":"67123.40","ts":1764230000000}'

    def one_round(name: str, n: int = n) -> float:
        fanout, clients = setups[name]
        t = time.process_time()
        for start in range(0, n, per_variant):
            batch = clients[: min(per_variant, n - start)]
            for client, _, _ in batch:
                fanout.reply(client, accepted)
            gevent.sleep(0)
            for client, _, _ in batch:
                fanout.deliver(client, None, confirmed)
                fanout.deliver(client, None, balance)
            if (start // per_variant) % 2:
                fanout.broadcast(price)
            gevent.sleep(0)
        while any(c.queue.qsize() for c, _, _ in clients):
            gevent.sleep(0)
        return (time.process_time() - t) / n * 1e6

    import statistics

    got: dict[str, list[float]] = {k: [] for k in variants}
    for name in variants:
        one_round(name, 1000)  # warm up
    for _ in range(rounds):
        for name in variants:
            got[name].append(one_round(name))
    for name, xs in got.items():
        rs = " ".join(f"{x:.2f}" for x in xs)
        print(f"write {name}: median {statistics.median(xs):.2f} µs CPU per tap (rounds: {rs})")
    for _, (_, clients) in setups.items():
        for _, ws, conn in clients:
            ws.connected = False
            conn.close()
    gevent.killall(greenlets)
    child.wait(30)


def fanout(n: int, rounds: int, only: str | None) -> None:
    """Broadcasts (price ticks) to 1,000 idle websocket writers (`app.realtime.ws._write`) on loopback,
    CPU per frame delivered: queued for each socket's writer (before) vs written by the broadcasting
    greenlet to an idle writer's socket (now). A child process on CPU 1 reads every socket."""
    import socket
    import statistics
    from types import SimpleNamespace

    from app.realtime import ws as wsmod
    from app.realtime.fanout import Fanout

    per_variant = 1000
    names = ["queued for the writer", "app (written by the broadcaster)"]
    if only:
        names = [k for k in names if k.startswith(only)]
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4096)
    port = lsock.getsockname()[1]
    child = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-c", _DRAIN, str(port), str(per_variant * len(names))]
    )
    svc = SimpleNamespace(
        status_message=lambda: {"type": "status", "feed": "healthy", "betting": True},
        feed=SimpleNamespace(last_tick=None),
        metrics=None,
    )
    taps = SimpleNamespace(svc=svc)
    setups: dict[str, tuple[Fanout, list[Any]]] = {}
    greenlets = []
    for name in names:
        hub_fanout = Fanout(queue_max=256, ping_every_s=3600)
        clients = []
        for _ in range(per_variant):
            conn, _ = lsock.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, wsmod.SEND_BUFFER_BYTES)
            client = hub_fanout.register()
            if name.startswith("app"):
                client.raw = conn._sock  # as the route sets it
            ws = SimpleNamespace(connected=True, pong_received=True)
            greenlets.append(gevent.spawn(wsmod._write, ws, conn, client, taps))
            clients.append((client, ws, conn))
        setups[name] = (hub_fanout, clients)
    gevent.sleep(0.2)
    price = b'{"type":"price","price":"67123.40","ts":1764230000000}'

    def one_round(name: str, n: int = n) -> float:
        hub_fanout, clients = setups[name]
        t = time.process_time()
        for _ in range(n):
            hub_fanout.broadcast(price)
            while any(c.queue.qsize() for c, _, _ in clients) or not all(c.idle for c, _, _ in clients):
                gevent.sleep(0)
        return (time.process_time() - t) / (n * per_variant) * 1e6

    got: dict[str, list[float]] = {k: [] for k in names}
    for name in names:
        one_round(name, 5)  # warm up
    for _ in range(rounds):
        for name in names:
            got[name].append(one_round(name))
    for name, xs in got.items():
        rs = " ".join(f"{x:.2f}" for x in xs)
        print(f"fanout {name}: median {statistics.median(xs):.2f} µs CPU per frame sent (rounds: {rs})")
    for _, (_, clients) in setups.items():
        for _, ws, conn in clients:
            ws.connected = False
            conn.close()
    gevent.killall(greenlets)
    child.wait(30)


def _only(
    variants: dict[str, Callable[[int], object]], only: str | None
) -> dict[str, Callable[[int], object]]:
    if only is None:
        return variants
    picked = {k: v for k, v in variants.items() if k.startswith(only)}
    if not picked:
        raise SystemExit(f"--only {only}: none of {list(variants)}")
    return picked


def ir(what: str, only: list[str], n: int) -> None:
    """Instructions per call of `what --only V`: callgrind runs with n and 2n calls, one round each."""
    import re

    for variant in only:
        counts = []
        for calls in (n, 2 * n):
            cmd = [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                __file__,
                what,
                "--only",
                variant,
                "--n",
                str(calls),
                "--rounds",
                "1",
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            m = re.search(r"Collected : (\d+)", res.stderr)
            assert m, res.stderr[-2000:]
            counts.append(int(m.group(1)))
        print(f"{what} {variant}: {(counts[1] - counts[0]) / n:,.0f} instructions per call")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "what",
        choices=[
            "pool",
            "queue",
            "gil",
            "parse",
            "keccak",
            "recover",
            "verify",
            "openbets",
            "betspage",
            "write",
            "fanout",
            "pubsub",
            "ir",
        ],
    )
    ap.add_argument("target", nargs="?", help="for ir: parse or keccak")
    ap.add_argument("--n", type=int, default=20000, help="calls per round (parse, keccak)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--only", action="append", help="a variant's name (or its start); ir: repeat")
    args = ap.parse_args()
    if args.what != "gil":
        os.sched_setaffinity(0, {0})
    if args.what == "openbets":
        openbets(args.n, args.rounds)
    elif args.what == "betspage":
        betspage(args.rounds)
    elif args.what in ("parse", "keccak", "recover", "verify", "write", "fanout", "pubsub"):
        only = args.only[0] if args.only else None
        fn = {
            "parse": parse,
            "keccak": keccak,
            "recover": recover,
            "verify": verify,
            "write": write,
            "fanout": fanout,
            "pubsub": pubsub,
        }[args.what]
        fn(args.n, args.rounds, only)
    elif args.what == "ir":
        ir(args.target, args.only or ["schema", "bet_request_fields"], min(args.n, 2000))
    else:
        {"pool": pool, "queue": queue, "gil": gil}[args.what]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
