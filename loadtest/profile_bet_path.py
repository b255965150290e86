#!/usr/bin/env python3
"""Where the microseconds of a bet go: two views of the bet path (one file: both explain one figure).

1. ``analyze``: read a py-spy raw (folded) profile of the gunicorn worker taken under load by
   ``loadtest/bet_ceiling.py --profile FILE`` and turn sample counts into CPU µs per request:

       .venv/bin/python loadtest/profile_bet_path.py analyze /tmp/bet.pyspy --requests 60000 --rate 500

   (`--requests`: requests served while py-spy ran, `--rate`: py-spy's sampling rate.) Prints the
   inclusive µs per request of the bet path's stages (auth lookup, schema, signature, claim script,
   writer, notify, gunicorn/gevent plumbing, ...) and the top self-time frames.

2. ``stages``: time each stage of `place_bet` in isolation, in-process, against a private Redis
   (no gunicorn, no load), with the project's own functions:

       .venv/bin/python loadtest/profile_bet_path.py stages [--n 5000]

py-spy samples every thread at a fixed rate and (without --idle) keeps only samples of threads that
are running, so samples / rate ≈ CPU seconds; divided by the requests served that is CPU µs per
request. With the worker at 100 % of its core, 1e6 / (µs per request) is the ceiling.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (label, predicate over the frame list of one sample) — inclusive, first match wins for the
# "stage" breakdown, so order matters: the most specific first.
STAGES: list[tuple[str, str]] = [
    (
        "sqlite writer thread (BEGIN/SAVEPOINT/INSERT/COMMIT)",
        r"run_batch \(workers/sqlite_writer|_run_jobs \(workers/sqlite_writer|_WorkerGreenlet\.__run_task",
    ),
    ("websocket: /ws greenlets (send to clients)", r"stream \(app/realtime/ws\.py"),
    ("pub/sub listener (tap:user:*, ticks) → fan-out", r"PubSubListener\.run"),
    ("bet notifier: publish pipeline after commit", r"BetNotifier\._send"),
    ("writer greenlet: deliver results + on_done", r"SqliteWriter\._deliver"),
    ("grid publisher / quotes", r"grid_publisher|GridPublisher"),
    ("price sim / feed", r"price_sim|PriceSim|feed_watch|FeedWatch"),
    ("auth: session lookup (Lua, 1 Redis round trip)", r"SessionLookup\.(__call__|lookup)"),
    ("auth: other (parse bearer, client_ip)", r"authenticate \(app/auth"),
    ("schema: load_json (marshmallow)", r"load_json \(app/auth/schemas"),
    ("units: parse stake / multiplier", r"parse_money|parse_multiplier"),
    ("signature: recover (keccak + coincurve)", r"recover_personal_sign \(|verify_signer"),
    ("signed text + fingerprint", r"bet_signing_text|request_fingerprint"),
    ("claim: nonce+cell+pending (Lua, 1 Redis round trip)", r"BetClaims\.claim"),
    ("pending record JSON", r"pending_json"),
    ("grid: check_placeable / quote", r"check_placeable|QuoteBook\.quote|parse_cell"),
    ("writes.submit", r"WriteQueue\.submit"),
    ("response: jsonify", r"jsonify \(flask"),
    ("place_bet: rest of the view", r"place_bet \(app/bets/routes"),
    ("metrics: before/after request", r"_start_timer|_record \(app/metrics"),
    ("Flask: request context, dispatch, response", r"Flask\.wsgi_app|Flask\.full_dispatch_request"),
    ("YieldFirst: gevent.sleep(0)", r"YieldFirst\.__call__"),
    ("gunicorn: parse request", r"Parser\.__next__|Request\.__init__ \(gunicorn"),
    ("gunicorn: write response", r"Response\.write|Response\.close|Response\.send_headers|sendall"),
    ("gunicorn: handle_request (rest)", r"handle_request \(gunicorn"),
    ("gunicorn: connection loop (rest)", r"AsyncWorker\.handle|GeventWorker\.handle"),
    ("gevent hub / other", r".*"),
]


def parse_folded(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        out.append((stack.split(";"), int(count)))
    return out


# Samples that are waits, not work: gevent threadpool threads parked on their task queue (py-spy in
# blocking mode counts them as running) and the hub's own loop with nothing under it.
IDLE = re.compile(r"_WorkerGreenlet\.run \(gevent/threadpool\.py:\d+\);Queue\.get \(gevent/_threading")


def analyze(
    path: Path, requests: int, rate: int, top: int, total_us: float | None = None, main_only: bool = False
) -> None:
    samples = [(f, c) for f, c in parse_folded(path) if not IDLE.search(";".join(f))]
    if main_only:  # the hub thread (the one with the most samples): requests, Redis, websockets, ...
        per: collections.Counter[str] = collections.Counter()
        for f, c in samples:
            per[f[0]] += c
        main = per.most_common(1)[0][0]
        samples = [(f, c) for f, c in samples if f[0] == main]
    total = sum(c for _, c in samples)
    by_thread: collections.Counter[str] = collections.Counter()
    for frames, c in samples:
        by_thread[frames[0]] += c
    sampled_us = total / rate / max(1, requests) * 1e6
    scale = (total_us / sampled_us) if total_us else 1.0
    us = lambda c: c / rate / max(1, requests) * 1e6 * scale  # noqa: E731 - CPU µs per request
    print(
        f"{path}: {total} samples = {total / rate:.2f} s of running threads at {rate} Hz over {requests} requests "
        f"→ {sampled_us:.0f} µs per request sampled"
        + (
            f"; scaled to the measured {total_us:.0f} µs of worker CPU per request (×{scale:.2f})"
            if total_us
            else ""
        )
        + "\n"
    )
    print("threads:")
    for t, c in by_thread.most_common():
        print(f"  {t:40s} {c:7d} samples  {us(c):7.1f} µs/request")

    compiled = [(label, re.compile(rx)) for label, rx in STAGES]
    stage: collections.Counter[str] = collections.Counter()
    for frames, c in samples:
        joined = ";".join(frames)
        for label, rx in compiled:
            if rx.search(joined):
                stage[label] += c
                break
    print("\nstages (each sample counted once, in the first matching stage; µs of CPU per request):")
    print("| stage | µs/request | share |")
    print("|---|---:|---:|")
    for label, _ in STAGES:
        if stage[label]:
            print(f"| {label} | {us(stage[label]):.1f} | {stage[label] / total * 100:.1f}% |")

    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    for frames, c in samples:
        self_t[_short(frames[-1])] += c
        for fr in set(frames[1:]):
            incl[_short(fr)] += c
    print(f"\ntop {top} self-time frames:")
    print("| frame | µs/request | share |")
    print("|---|---:|---:|")
    for fr, c in self_t.most_common(top):
        print(f"| `{fr}` | {us(c):.1f} | {c / total * 100:.1f}% |")
    print(f"\ntop {top} inclusive frames:")
    print("| frame | µs/request | share |")
    print("|---|---:|---:|")
    for fr, c in incl.most_common(top):
        print(f"| `{fr}` | {us(c):.1f} | {c / total * 100:.1f}% |")


def _short(frame: str) -> str:
    m = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    fn, file = m.groups()
    file = re.sub(r".*site-packages/", "", file)
    return f"{fn} ({file})"


# ---- stages in isolation -------------------------------------------------------------------------------


def stages(n: int) -> None:
    """Each step of place_bet timed alone, in this process, against a private redis-server.

    The process is monkey-patched by gevent first, as the gunicorn worker is, so redis-py's sockets
    and pool locks are gevent's (that is where much of a Redis call's cost comes from)."""
    from gevent import monkey

    monkey.patch_all()
    import os
    import shutil
    import tempfile

    sys.path.insert(0, str(ROOT))
    from tests.support.servers import RedisServer

    tmp = Path(tempfile.mkdtemp(prefix="bet-stages-"))
    redis_server = RedisServer(tmp / "redis")
    redis_server.start()
    port = redis_server.port
    try:
        r = redis_server.client()
        os.environ.update(
            {
                "TAP_DATA_DIR": str(tmp / "data"),
                "TAP_REDIS_URL": f"redis://127.0.0.1:{port}/0",
                "TAP_DEV_MODE": "1",
                "TAP_RATE_PER_IP": "0",
                "TAP_RATE_PER_ADDRESS": "0",
            }
        )
        _stages(n, r)
    finally:
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _stages(n: int, r) -> None:
    import secrets
    import time

    import orjson
    import redis

    from app.auth.ratelimit import Limits, SessionLookup
    from app.auth.sessions import create_session
    from app.auth.signatures import bet_signing_text, recover_personal_sign, request_fingerprint
    from app.bets.claims import BetClaims
    from app.bets.schemas import BetRequestSchema
    from app.config import Settings
    from app.storage.redis_client import make_redis
    from app.units import parse_money, parse_multiplier
    from loadtest.lib.signing import Key, bet_text

    s = Settings.from_env()
    app_r = make_redis(s.redis_url, pool_size=s.redis_pool_size, timeout_s=s.redis_timeout_s)
    r = app_r
    key, wallet = Key(), Key()
    token, _ = create_session(
        r,
        address=wallet.address,
        session_key=key.address,
        user_id=1,
        now_ms=int(time.time() * 1000),
        expires_at=int(time.time() * 1000) + 3_600_000,
    )
    lookup = SessionLookup(r, Limits(0, 0, 0))
    lookup_rl = SessionLookup(r, Limits(0, 1_000_000, 1_000_000))
    claims = BetClaims(r)
    schema = BetRequestSchema()
    ts = int(time.time() * 1000)
    nonces = [secrets.token_hex(8) for _ in range(n)]
    texts = [
        bet_text(s.siwe_domain, s.chain_id, wallet.address, "1763712005:6712", "10", "2.5", x, ts)
        for x in nonces
    ]
    sigs = [key.personal_sign(t) for t in texts]
    bodies = [
        orjson.dumps(
            {
                "cell": "1763712005:6712",
                "stake": "10",
                "min_multiplier": "2.5",
                "nonce": x,
                "ts": ts,
                "signature": g,
            }
        )
        for x, g in zip(nonces, sigs, strict=True)
    ]
    docs = [orjson.loads(b) for b in bodies]
    pending = orjson.dumps(
        {
            "bet_id": "x" * 22,
            "address": wallet.address,
            "status": "pending",
            "cell": "1763712005:6712",
            "stake": 10_000_000,
            "multiplier": 25_000,
            "payout": 25_000_000,
            "placed_at": ts,
        }
    )

    def timeit(label: str, fn) -> None:
        fn(0)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            fn(i)
        wall, cpu = (time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6
        print(f"| {label} | {wall:.1f} | {cpu:.1f} |")

    print(
        f"| stage (in-process, gevent-patched, no load, {n} calls each) | wall µs per call | CPU µs per call |"
    )
    print("|---|---:|---:|")
    timeit("orjson.loads(body)", lambda i: orjson.loads(bodies[i]))
    timeit("BetRequestSchema().load(doc) (marshmallow)", lambda i: schema.load(docs[i]))
    timeit(
        "parse_money + parse_multiplier", lambda i: (parse_money("10", "stake"), parse_multiplier("2.5", "m"))
    )
    timeit(
        "bet_signing_text",
        lambda i: bet_signing_text(
            s,
            address=wallet.address,
            cell="1763712005:6712",
            stake="10",
            min_multiplier="2.5",
            nonce=nonces[i],
            ts=ts,
        ),
    )
    timeit(
        "recover_personal_sign (keccak + coincurve + keccak)",
        lambda i: recover_personal_sign(texts[i], sigs[i]),
    )
    timeit("request_fingerprint (sha256)", lambda i: request_fingerprint(texts[i]))
    timeit("Redis: session lookup Lua, limits off", lambda i: lookup(token, "127.0.0.1", ts))
    timeit("Redis: session lookup Lua, per-IP + per-address on", lambda i: lookup_rl(token, "127.0.0.1", ts))
    timeit(
        "Redis: claim Lua (nonce + cell + pending)",
        lambda i: claims.claim(
            address=wallet.address,
            nonce=nonces[i],
            fingerprint="f" * 32,
            bet_id=f"b{i:021d}",
            cell=f"{1763712005 + 5 * (i % 1000)}:{i}",
            proceed=True,
            cell_ttl_s=60,
            pending_json=pending,
        ),
    )
    timeit("Redis: PING through redis-py (BlockingConnectionPool, as the app)", lambda i: app_r.ping())
    pool = app_r.connection_pool
    timeit("  of which pool get_connection + release (no I/O)", lambda i: pool.release(pool.get_connection()))
    import socket as gsock  # gevent's, once patched

    raw = gsock.create_connection(("127.0.0.1", r.connection_pool.connection_kwargs["port"]))
    raw.setsockopt(gsock.IPPROTO_TCP, gsock.TCP_NODELAY, 1)

    def raw_ping(i: int) -> None:
        raw.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert raw.recv(64) == b"+PONG\r\n"

    timeit("Redis: PING on a bare gevent socket (the floor of one round trip)", raw_ping)
    _pool_what_ifs(timeit, s)

    # the pub/sub listener's share: one per-user message published and received (as workers/pubsub_listener)
    ps = app_r.pubsub(ignore_subscribe_messages=True)
    ps.psubscribe("tap:user:*")
    while ps.get_message(timeout=0.2) is not None:
        pass
    pub = redis.Redis(port=r.connection_pool.connection_kwargs["port"])
    msg = b'{"type":"balance","balance":"999"}'

    def pubsub_one(i: int) -> None:
        pub.publish("tap:user:0x" + "ab" * 20, msg)

    t_pub = []

    def recv_one(i: int) -> None:
        t0 = time.process_time()
        m = ps.get_message(timeout=1.0)
        t_pub.append(time.process_time() - t0)
        assert m is not None

    timeit("Redis: PUBLISH one per-user message (redis-py, separate client)", pubsub_one)
    timeit("Redis: PubSub.get_message() of one tap:user:* message (the listener, per message)", recv_one)
    ps.close()
    _flask_stages(n, s, token, key, wallet, r)


def _pool_what_ifs(timeit, s) -> None:
    """What a leaner connection pool would save per Redis call (proposals, not the app's code)."""
    import gevent.lock
    import redis

    class NoReadCheckPool(redis.BlockingConnectionPool):
        """BlockingConnectionPool without the per-checkout `can_read()` poll (and its bookkeeping)."""

        def get_connection(self, *args, **kwargs):
            conn = self.pool.get(block=True, timeout=self.timeout)
            if conn is None:
                conn = self.make_connection()
            conn.connect()
            return conn

    class LifoGreenPool(redis.ConnectionPool):
        """A list of idle connections behind a gevent semaphore: no Condition, no Timeout object, no poll."""

        def __init__(self, max_connections: int, **kw) -> None:
            super().__init__(max_connections=max_connections, **kw)
            self._sem = gevent.lock.BoundedSemaphore(max_connections)
            self._idle: list = []

        def get_connection(self, *args, **kwargs):
            if not self._sem.acquire(timeout=2.0):
                raise redis.ConnectionError("no connection available")
            try:
                conn = self._idle.pop() if self._idle else self.make_connection()
                conn.connect()
            except BaseException:
                self._sem.release()
                raise
            return conn

        def release(self, connection) -> None:
            self._idle.append(connection)
            self._sem.release()

    kw = {"host": "127.0.0.1", "port": int(s.redis_url.rsplit(":", 1)[1].split("/")[0]), "socket_timeout": 2}
    for label, pool in (
        (
            "what if: BlockingConnectionPool without the can_read() check",
            NoReadCheckPool(max_connections=64, timeout=2, **kw),
        ),
        ("what if: list + gevent semaphore pool", LifoGreenPool(64, **kw)),
    ):
        rc = redis.Redis(connection_pool=pool)
        timeit(f"Redis: PING, {label}", lambda i, rc=rc: rc.ping())


def _flask_stages(n: int, s, token: str, key, wallet, r) -> None:
    """The whole view through the Flask test client (no gunicorn), and the same app serving /healthz."""
    import time

    from app import create_app

    app = create_app()
    c = app.test_client()

    def timeit(label: str, fn) -> None:
        fn()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        wall, cpu = (time.perf_counter() - t0) / n * 1e6, (time.process_time() - c0) / n * 1e6
        print(f"| {label} | {wall:.1f} | {cpu:.1f} |")

    from werkzeug.test import EnvironBuilder

    def wsgi_call(method: str, path: str, body: bytes = b"", headers: dict | None = None):
        import io

        env0 = EnvironBuilder(
            path=path,
            method=method,
            data=body,
            headers=headers or {},
            content_type="application/json" if body else None,
        ).get_environ()

        def call() -> str:
            env = dict(env0)
            env["wsgi.input"] = io.BytesIO(body)
            status = []
            out = app(env, lambda st, h, exc=None: status.append(st))
            b"".join(out)
            if hasattr(out, "close"):
                out.close()
            return status[0]

        return call

    timeit("Flask test client: GET /healthz", lambda: c.get("/healthz"))
    timeit(
        "WSGI call (no server): GET /healthz (Flask + metrics hooks + YieldFirst)",
        wsgi_call("GET", "/healthz"),
    )

    def bare(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "15")])
        return [b'{"status":"ok"}']

    from flask import Flask, jsonify

    plain = Flask("plain")
    plain.get("/healthz")(lambda: jsonify(status="ok"))

    def plain_call():
        out = plain(dict(env0), lambda st, h, exc=None: None)
        b"".join(out)
        out.close()

    env0 = EnvironBuilder(path="/healthz").get_environ()
    timeit("WSGI call (no server): a plain Flask app, one route returning jsonify (no hooks)", plain_call)
    inner = app.wsgi_app.wsgi_app if hasattr(app.wsgi_app, "wsgi_app") else app.wsgi_app  # without YieldFirst

    def no_yield_call():
        out = inner(dict(env0), lambda st, h, exc=None: None)
        b"".join(out)
        out.close()

    timeit("WSGI call (no server): the app's /healthz without YieldFirst's gevent.sleep(0)", no_yield_call)
    timeit(
        "WSGI call (no server): a bare WSGI function, same answer (the floor without Flask)",
        lambda: b"".join(bare(dict(env0), lambda st, h: None)),
    )
    from loadtest.lib.signing import bet_text

    old_ts = int(time.time() * 1000) - 120_000  # refused at the freshness check, after the signature
    text = bet_text(
        s.siwe_domain, s.chain_id, wallet.address, "1763712005:6712", "10", "2.5", "a1b2c3d4e5f60718", old_ts
    )
    body = {
        "cell": "1763712005:6712",
        "stake": "10",
        "min_multiplier": "2.5",
        "nonce": "a1b2c3d4e5f60718",
        "ts": old_ts,
        "signature": key.personal_sign(text),
    }
    hdr = {"Authorization": f"Bearer {token}"}
    assert c.post("/api/v1/bets", json=body, headers=hdr).status_code == 401
    import orjson

    call = wsgi_call("POST", "/api/v1/bets", orjson.dumps(body), hdr)
    assert call().startswith("401")
    timeit(
        "WSGI call (no server): POST /api/v1/bets up to the ts check (auth, schema, signature) → 401", call
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("analyze")
    a.add_argument("profile", type=Path)
    a.add_argument("--requests", type=int, required=True, help="requests served while py-spy ran")
    a.add_argument("--rate", type=int, default=500, help="py-spy sampling rate (Hz)")
    a.add_argument("--top", type=int, default=25)
    a.add_argument(
        "--main-only",
        action="store_true",
        help="only the hub thread (pass its own CPU µs per request as --total-us)",
    )
    a.add_argument(
        "--total-us",
        type=float,
        help="scale the shares to this measured worker CPU µs per request "
        "(py-spy does not sample threads while they are inside syscalls)",
    )
    b = sub.add_parser("stages")
    b.add_argument("--n", type=int, default=5000)
    args = ap.parse_args()
    if args.cmd == "analyze":
        analyze(args.profile, args.requests, args.rate, args.top, args.total_us, args.main_only)
    else:
        stages(args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
