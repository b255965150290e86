"""Start and stop the worker greenlets of one process (called from gunicorn hooks and tests)."""

from __future__ import annotations

import logging

from flask import Flask

from app.services import services
from workers.feed_watch import FeedWatch
from workers.price_sim import SimulatedFeed
from workers.pubsub_listener import PubSubListener
from workers.sqlite_writer import SqliteWriter
from workers.supervisor import Supervisor, Worker

log = logging.getLogger(__name__)

_KEY = "tap.supervisor"


def build_workers(app: Flask) -> list[Worker]:
    """The workers of this process, in start order (stopped in reverse: the writer last)."""
    svc = services(app)
    s = svc.settings
    workers: list[Worker] = [
        SqliteWriter(
            svc.writes, s.db_dir, synchronous=s.sqlite_synchronous, batch_max=s.batch_max, metrics=svc.metrics
        ),
        PubSubListener(svc.redis, svc.fanout, svc.feed, svc.metrics),
        FeedWatch(svc.feed, svc.fanout),
    ]
    for source in s.price_sources:
        if source == "sim":
            workers.append(
                SimulatedFeed(
                    svc.redis,
                    annual_vol=s.sim_volatility / 10_000,
                    tick_ms=s.sim_tick_ms,
                    start_price=s.sim_start_price,
                    metrics=svc.metrics,
                )
            )
        else:
            raise RuntimeError(f"TAP_PRICE_SOURCES: source {source!r} is not available in this build")
    return workers


def start(app: Flask) -> Supervisor:
    svc = services(app)
    if _KEY in app.extensions:
        raise RuntimeError("workers already started for this app")
    supervisor = Supervisor(on_restart=lambda name: svc.metrics.worker_restarts.labels(name).inc())
    app.extensions[_KEY] = supervisor
    svc.writes.accepting = True
    for worker in build_workers(app):
        supervisor.start(worker)
    log.info("workers started: %s", ", ".join(supervisor.names))
    return supervisor


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
