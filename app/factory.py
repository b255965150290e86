"""The application factory proper (see `app.create_app`)."""

from __future__ import annotations

import logging

from flask import Flask

from app import admin, auth, errors, metrics
from app.auth.decorators import WS_CLOSE_INVALID_SESSION
from app.bets.claims import BetClaims
from app.bets.notify import BetNotifier
from app.bets.recovery import Recovery, open_bets
from app.bets.routes import bp as bets_bp
from app.cli import register_cli
from app.config import Settings
from app.http import openapi
from app.http.health import bp as health_bp
from app.http.json import ApiRequest, OrjsonProvider
from app.http.middleware import YieldFirst
from app.ledger.routes import bp as ledger_bp
from app.market.feed import FeedMonitor
from app.market.grid import GridSpec
from app.market.quotes import QuoteState
from app.market.routes import bp as market_bp
from app.metrics import Metrics
from app.realtime.fanout import Fanout
from app.realtime.ws import NoReaderThread, sock
from app.services import Services
from app.storage.db import ReadPool
from app.storage.redis_batch import ScriptBatcher
from app.storage.redis_client import make_redis
from app.storage.writes import WriteQueue


def build_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    _configure_logging(settings.log_level)

    app = Flask(__name__, static_folder=None)
    # No 308 to a merged-slash path: werkzeug builds its Location from the Host header (behind nginx:
    # plain http, no port) and answers in HTML. Set before any route is added; "//x" is a JSON 404.
    app.url_map.merge_slashes = False
    app.request_class = ApiRequest
    app.json = OrjsonProvider(app)
    app.config.update(
        MAX_CONTENT_LENGTH=64 * 1024,
        SOCK_SERVER_OPTIONS={
            # simple-websocket does the opening handshake only: no ping thread (the socket's writer
            # greenlet sends the pings, so one greenlet writes to each socket) and no reader thread
            # (app.realtime.ws reads and parses the frames itself, and enforces the message size).
            "ping_interval": None,
            "thread_class": NoReaderThread,
        },
    )

    m = Metrics()
    redis_client = make_redis(
        settings.redis_url, pool_size=settings.redis_pool_size, timeout_s=settings.redis_timeout_s
    )
    redis_batch = ScriptBatcher(
        redis_client,
        window_s=settings.redis_batch_window_ms / 1000,
        max_batch=settings.redis_batch_max,
        observe=m.redis_batch_size.observe,
    )
    reads = ReadPool(settings.db_dir)
    svc = Services(
        settings=settings,
        redis=redis_client,
        reads=reads,
        writes=WriteQueue(settings.write_queue_max),
        metrics=m,
        fanout=Fanout(
            settings.ws_queue_max,
            on_drop=m.ws_dropped.inc,
            ping_every_s=settings.ws_ping_s,
            on_expired=(WS_CLOSE_INVALID_SESSION, "invalid_session"),
        ),
        feed=FeedMonitor(settings.feed_degraded_s, settings.feed_critical_s, settings.feed_recovery_s),
        grid=GridSpec.from_settings(settings),
        quotes=QuoteState(),
        bet_claims=BetClaims(redis_client, redis_batch),
        bet_notifier=BetNotifier(redis_client, m),
        redis_batch=redis_batch,
        recovery=Recovery(
            redis_client, lambda since: reads.run(lambda c: open_bets(c, since)), settings.column_seconds
        ),
    )
    svc.bet_notifier.attach(svc.writes)
    svc.fanout.wall_ms = svc.now_ms  # sessions expire on the app's clock (tests shift it)
    app.extensions["tap"] = svc
    m.write_queue_depth.set_function(svc.writes.depth)
    m.ws_clients.set_function(lambda: len(svc.fanout))
    m.feed_age.set_function(lambda: svc.feed.age() or -1.0)
    m.feed_state.set_function(svc.feed.level)
    m.betting_halted.set_function(lambda: 0 if svc.betting.open else 1)

    errors.init_app(app)
    metrics.init_app(app, m)

    app.register_blueprint(health_bp)
    auth.init_app(app)
    admin.init_app(app)
    app.register_blueprint(bets_bp)
    app.register_blueprint(ledger_bp)
    app.register_blueprint(market_bp)
    openapi.init_app(app)
    sock.init_app(app)
    register_cli(app)

    app.wsgi_app = YieldFirst(app.wsgi_app)  # type: ignore[method-assign]
    return app


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root.setLevel(level)
