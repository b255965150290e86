"""Start and stop the worker greenlets of one process (called from gunicorn hooks and tests)."""

from __future__ import annotations

import logging

from flask import Flask

from app.services import services
from workers.aggregator import PriceAggregator, SteadyClock
from workers.bet_reconciler import BetReconciler
from workers.console import ConsoleWorker
from workers.exchanges import BinanceSource, CoinbaseSource
from workers.feed_watch import FeedWatch
from workers.grid_publisher import GridPublisher
from workers.price_sim import SimSource
from workers.pubsub_listener import PubSubListener
from workers.resolver import Resolver
from workers.sqlite_writer import SqliteWriter
from workers.supervisor import Supervisor, Worker
from workers.week_rollover import WeekRollover

log = logging.getLogger(__name__)

_KEY = "tap.supervisor"


def build_workers(app: Flask) -> list[Worker]:
    """The workers of this process, in start order (stopped in reverse: the writer last)."""
    svc = services(app)
    s = svc.settings
    # The feed's clock: tick times are checked against it, and the resolver judges windows on it.
    steady = SteadyClock()
    workers: list[Worker] = [
        SqliteWriter(
            svc.writes,
            s.db_dir,
            synchronous=s.sqlite_synchronous,
            batch_max=s.batch_max,
            metrics=svc.metrics,
            autocheckpoint=not s.replicating,
            linger_s=s.writer_linger_ms / 1000,
        ),
        # Right after the writer, so it stops just before the writer drains (its heartbeat covers that).
        BetReconciler(svc, svc.now_ms),
        PubSubListener(svc.redis, svc.fanout, svc.feed, svc.metrics, on_betting=svc.betting.apply),
        FeedWatch(svc.feed, svc.fanout, svc.metrics, status=svc.status_message),
        GridPublisher(
            svc.redis,
            svc.grid,
            svc.quotes,
            svc.feed,
            svc.fanout,
            house_edge=s.house_edge,
            prior_vol=s.quote_prior_vol / 10_000,
            cell_cap=s.max_cell_payout,
            column_cap=s.max_column_payout,
            clock=lambda: svc.clock(),  # noqa: PLW0108 - late-bound: set_clock swaps svc.clock
        ),
        Resolver(
            svc.redis,
            svc.reads,
            svc.writes,
            column_s=s.column_seconds,
            critical_s=s.feed_critical_s,
            notifier=svc.bet_notifier,
            metrics=svc.metrics,
            now_ms=steady.wall_ms,
        ),
        WeekRollover(
            svc.writes, s.db_dir, synchronous=s.sqlite_synchronous, autocheckpoint=not s.replicating
        ),
    ]
    # Price ingestion: every source feeds one aggregator, which publishes while it holds the lease.
    aggregator = PriceAggregator(
        svc.redis,
        fresh_s=s.feed_source_fresh_s,
        max_deviation=s.feed_max_deviation,
        publish_ms=s.feed_publish_ms,
        metrics=svc.metrics,
        clock=steady,
    )
    for source in s.price_sources:
        if source == "sim":
            workers.append(
                SimSource(
                    aggregator,
                    svc.redis,
                    annual_vol=s.sim_volatility / 10_000,
                    tick_ms=s.sim_tick_ms,
                    start_price=s.sim_start_price,
                )
            )
        elif source == "binance":
            workers.append(
                BinanceSource(s.binance_ws_url, aggregator, idle_s=s.feed_idle_s, metrics=svc.metrics)
            )
        elif source == "coinbase":
            workers.append(
                CoinbaseSource(s.coinbase_ws_url, aggregator, idle_s=s.feed_idle_s, metrics=svc.metrics)
            )
        else:  # pragma: no cover - Settings refuses unknown sources
            raise RuntimeError(f"TAP_PRICE_SOURCES: unknown source {source!r}")
    workers.append(ConsoleWorker(svc, aggregator, s.price_sources))
    workers.append(aggregator)  # stopped first: no tick is published once shutdown begins
    return workers


def start(app: Flask) -> Supervisor:
    svc = services(app)
    if _KEY in app.extensions:
        raise RuntimeError("workers already started for this app")
    supervisor = Supervisor(on_restart=lambda name: svc.metrics.worker_restarts.labels(name).inc())
    app.extensions[_KEY] = supervisor
    svc.writes.accepting = True
    recover_at_start(app)
    for worker in build_workers(app):
        supervisor.start(worker)
    log.info("workers started: %s", ", ".join(supervisor.names))
    return supervisor


def recover_at_start(app: Flask) -> None:
    """A Redis without the bet state (a new one, or one that lost its data) refuses every tap until
    the state is rebuilt from SQLite (app.bets.recovery): nothing of this new process is in flight, so
    it is rebuilt now, before the workers start (here, not in create_app, which opens no connection
    and also serves the flask CLI). Best effort: with Redis or the database not reachable yet, the
    console worker tries again every second."""
    svc = services(app)
    try:
        svc.recovery.check(svc.now_ms(), at_start=True)
    except Exception as exc:  # noqa: BLE001 - never stops a start; logged, retried every second
        log.warning("bet state not checked at start (%s: %s); the console retries", type(exc).__name__, exc)


def begin_shutdown(app: Flask) -> None:
    """First step of a graceful stop: close websockets so the worker can exit promptly."""
    services(app).fanout.close_all()


def stop(app: Flask, timeout: float = 10.0) -> None:
    """Stop every worker; the writer commits whatever is queued before it returns. Idempotent."""
    supervisor: Supervisor | None = app.extensions.pop(_KEY, None)
    if supervisor is None:
        return
    begin_shutdown(app)
    supervisor.stop(timeout=timeout)
    log.info("workers stopped")
