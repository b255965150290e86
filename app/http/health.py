"""Liveness, readiness and metrics: `/healthz`, `/readyz`, `/metrics`."""

from __future__ import annotations

import time
from typing import Any, cast

import gevent
from flask import Blueprint, Response, jsonify

from app.bets.recovery import rebuilt_at
from app.bets.resolution import oldest_open_window
from app.keys import REDIS_STATE_KEY
from app.market.feed import FeedState
from app.services import Services, services

bp = Blueprint("health", __name__)

CHECK_TIMEOUT_S = 1.0
WRITER_STALE_S = 5.0
RESOLVER_LAG_MAX_S = 300.0  # settling more than 5 minutes late means the resolver is stuck


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers. Depends on nothing else on purpose.
    ---
    get:
      tags: [health]
      summary: Liveness
      responses:
        200: {description: 'The process answers: {"status": "ok"}'}
    """
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: SQLite, Redis, the price feed, the write queue and (when on) replication lag; 503 if
    any is not usable.
    ---
    get:
      tags: [health]
      summary: Readiness, with each check's state
      responses:
        200: {description: 'Ready: {"status": "ready", "checks": {…}}'}
        503:
          description: 'Not ready: {"status": "unavailable", "checks": {…}} names the failing check'
          headers: {Retry-After: {schema: {type: integer}}}
    """
    svc = services()
    checks = {
        "sqlite": _timed(_check_sqlite, svc),
        "redis": _timed(_check_redis, svc),
        "feed": _check_feed(svc),
        "writer": _check_writer(svc),
        "resolver": _timed(_check_resolver, svc),
        "replication": _timed(_check_replication, svc),
        "bet_state": _timed(_check_bet_state, svc),
    }
    ok = all(c["ok"] for c in checks.values())
    resp = jsonify(status="ready" if ok else "unavailable", checks=checks)
    if not ok:
        resp.status_code = 503
        resp.headers["Retry-After"] = "2"
    return resp


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus metrics (text exposition format); nginx serves it to loopback only.
    ---
    get:
      tags: [health]
      summary: Prometheus metrics
      responses:
        200: {description: Prometheus text format, content: {text/plain: {schema: {type: string}}}}
    """
    svc = services()
    if svc.settings.replicating:
        _timed(_check_replication, svc)  # tap_replication_lag_seconds is read at scrape time
    return svc.metrics.render()


def _timed(check, svc: Services) -> dict[str, Any]:
    """Run one check under a deadline; any failure becomes {"ok": false, "error": ...}."""
    t0 = time.perf_counter()
    try:
        with gevent.Timeout(CHECK_TIMEOUT_S):
            result = check(svc) or {}
    except gevent.Timeout:
        return {"ok": False, "error": f"no answer within {CHECK_TIMEOUT_S:g}s"}
    except Exception as exc:  # noqa: BLE001 - a readiness probe reports any failure, it does not raise
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"ok": True, "ms": round((time.perf_counter() - t0) * 1000, 2), **result}


def _check_resolver(svc: Services) -> dict[str, Any]:
    """Lag = age of the oldest closed window still holding open bets (0 when all are settled)."""
    oldest = svc.reads.run(oldest_open_window)
    end = None if oldest is None else oldest + svc.settings.column_seconds
    lag = 0.0 if end is None else max(0.0, time.time() - end)
    return {"ok": lag < RESOLVER_LAG_MAX_S, "lag_s": round(lag, 1)}


def _check_replication(svc: Services) -> dict[str, Any]:
    """Litestream's lag on the current week file (issue 15): ok while under TAP_REPLICA_LAG_MAX_S.
    Off (no bucket, or TAP_REPLICATION=OFF) is reported, and ready: the disk alone is then the copy."""
    if not svc.settings.replicating:
        return {"enabled": False}
    from app.storage.replication import lag

    info = lag(svc.settings, svc.reads.current())
    ok = bool(info.get("running")) and info.get("lag_s", 0.0) <= svc.settings.replica_lag_max_s
    svc.metrics.replication_lag.set(info.get("lag_s", -1.0) if info.get("running") else -1.0)
    return {"ok": ok, "enabled": True, "max_s": svc.settings.replica_lag_max_s, **info}


def _check_bet_state(svc: Services) -> dict[str, Any]:
    """Whether Redis holds the bet state (app.bets.recovery): while it does not, every tap is refused
    with 503 `recovering` until a worker rebuilds it from SQLite."""
    at = rebuilt_at(cast("bytes | None", svc.redis.get(REDIS_STATE_KEY)))
    return {"ok": at is not None, "rebuilt_at": at}


def _check_sqlite(svc: Services) -> None:
    svc.reads.run(lambda conn: conn.execute("SELECT count(*) FROM week_meta").fetchone())


def _check_redis(svc: Services) -> None:
    svc.redis.ping()


def _check_feed(svc: Services) -> dict[str, Any]:
    # ok while the feed is not CRITICAL; "betting" stays false while recovering from CRITICAL
    snap = svc.feed.snapshot()
    return {"ok": snap["state"] != FeedState.CRITICAL.value, **snap}


def _check_writer(svc: Services) -> dict[str, Any]:
    """Alive, accepting, not full — and committing: a writer whose last COMMIT failed (disk full,
    I/O error) is restarted every few seconds with a fresh heartbeat, so the heartbeat alone would
    say ready while nothing can be written. Not ready until a commit succeeds again (the writer
    probes with a one-row commit while failing)."""
    writes = svc.writes
    depth = writes.depth()
    beat = writes.heartbeat_age()
    alive = beat is not None and beat < WRITER_STALE_S
    commits = writes.commits
    now = time.monotonic()
    return {
        "ok": alive and writes.accepting and depth < writes.maxsize and not commits.failing,
        "running": alive,
        "depth": depth,
        "max": writes.maxsize,
        "priority_depth": writes.priority_depth(),
        "commit_failing": commits.failing,
        "commit_failures_in_a_row": commits.failures_in_a_row,
        "last_commit_ok_age_s": None if commits.last_ok_at is None else round(now - commits.last_ok_at, 1),
        "last_commit_error": commits.last_error,
    }
