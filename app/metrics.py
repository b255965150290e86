"""Prometheus metrics, one registry per app (so tests can build many apps in one process)."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric the process exports. Workers receive this object; routes reach it via the app."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "tap_http_requests", "HTTP requests served", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "tap_http_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.write_queue_depth = Gauge(
            "tap_write_queue_depth", "Writes waiting for the SQLite writer", registry=r
        )
        self.write_batch_size = Histogram(
            "tap_write_batch_size",
            "Writes committed per transaction",
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
            registry=r,
        )
        self.redis_batch_size = Histogram(
            "tap_redis_batch_size",
            "Redis script calls sent in one round trip (app.storage.redis_batch)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.write_commit_seconds = Histogram(
            "tap_write_commit_seconds",
            "Time to run and commit one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.write_failures = Counter(
            "tap_write_job_failures", "Write jobs that raised (rolled back alone)", registry=r
        )
        self.write_commit_failures = Counter(
            "tap_write_commit_failures", "Write transactions whose BEGIN or COMMIT failed", registry=r
        )
        self.write_outcomes_unknown = Counter(
            "tap_write_outcomes_unknown",
            "Write jobs whose commit could not be confirmed or denied (reconciled from SQLite)",
            registry=r,
        )
        self.replication_lag = Gauge(
            "tap_replication_lag_seconds",
            "Seconds since Litestream last uploaded the current week file to S3 (-1: not replicating)",
            registry=r,
        )
        self.feed_age = Gauge(
            "tap_feed_age_seconds", "Seconds since the last price tick (monotonic)", registry=r
        )
        self.feed_state = Gauge("tap_feed_state", "Feed state: 0 healthy, 1 degraded, 2 critical", registry=r)
        self.ticks = Counter("tap_price_ticks", "Price ticks received from pub/sub", registry=r)
        self.tick_age = Histogram(
            "tap_feed_tick_age_seconds",
            "Age of a tick's price when it is published: from its exchange (or simulation) time",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ticks_published = Counter(
            "tap_price_ticks_published", "Price ticks published", ["source"], registry=r
        )
        # price ingestion and the breaker (workers/aggregator.py, workers/exchanges/, app/market/feed.py)
        self.feed_betting = Gauge(
            "tap_feed_betting_open",
            "1 while bets are accepted, 0 while the breaker suspends them or an operator halts betting",
            registry=r,
        )
        self.betting_halted = Gauge(
            "tap_betting_halted", "1 while an operator has halted betting (SPEC §8b), else 0", registry=r
        )
        self.feed_transitions = Counter(
            "tap_feed_status_changes", "Changes of the websocket status message", ["feed"], registry=r
        )
        self.source_quotes = Counter(
            "tap_feed_source_quotes", "Quotes accepted from a price source", ["source"], registry=r
        )
        self.source_dropped = Counter(
            "tap_feed_source_dropped",
            "Source messages or quotes dropped "
            "(garbage, outlier, late, future, out_of_order, stale_sequence)",
            ["source", "reason"],
            registry=r,
        )
        self.source_fresh = Gauge(
            "tap_feed_source_fresh",
            "1 if the source's latest quote is fresh enough to count",
            ["source"],
            registry=r,
        )
        self.source_reconnects = Counter(
            "tap_feed_source_reconnects",
            "Exchange websocket (re)connections",
            ["source", "reason"],
            registry=r,
        )
        self.source_gaps = Counter(
            "tap_feed_source_gaps",
            "Messages the exchange says we missed (Coinbase heartbeat)",
            ["source"],
            registry=r,
        )
        self.wall_clock_offset = Gauge(
            "tap_wall_clock_offset_seconds", "System wall clock minus the feed's steady clock", registry=r
        )
        self.ws_private = Counter(
            "tap_ws_private_messages", "Per-user messages relayed from tap:user:* to websockets", registry=r
        )
        self.ws_clients = Gauge("tap_ws_clients", "Connected websocket clients", registry=r)
        self.ws_idle_closed = Counter(
            "tap_ws_idle_closed", "Websockets closed after two pings went unanswered", registry=r
        )
        self.ws_dropped = Counter(
            "tap_ws_dropped", "Websocket clients dropped for not keeping up", registry=r
        )
        self.bets_accepted = Counter("tap_bets_accepted", "Bets accepted (202) and queued", registry=r)
        self.bets_confirmed = Counter("tap_bets_confirmed", "Bets committed", registry=r)
        self.bets_rejected = Counter(
            "tap_bets_rejected", "Bets rejected after acceptance", ["reason"], registry=r
        )
        self.bet_confirm_seconds = Histogram(
            "tap_bet_confirm_seconds", "From acceptance to commit", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.bets_settled = Counter("tap_bets_settled", "Bets settled (won, lost or void)", registry=r)
        self.resolver_lag = Gauge(
            "tap_resolver_lag_seconds",
            "Age of the oldest closed window that still holds open bets",
            registry=r,
        )
        self.worker_restarts = Counter(
            "tap_worker_restarts", "Worker greenlets restarted after a crash", ["worker"], registry=r
        )

    def render(self) -> Response:
        return Response(generate_latest(self.registry), mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask, metrics: Metrics) -> None:
    """Count and time every request by its URL rule (not the raw path: ids would explode cardinality)."""

    @app.before_request
    def _start_timer() -> None:
        g._tap_t0 = time.perf_counter()

    @app.after_request
    def _record(resp: Response) -> Response:
        t0 = g.pop("_tap_t0", None)
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        metrics.requests.labels(route, request.method, str(resp.status_code)).inc()
        if t0 is not None:
            metrics.latency.labels(route).observe(time.perf_counter() - t0)
        return resp
