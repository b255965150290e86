"""The per-app service objects, built by `create_app` and shared by routes and worker greenlets."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from flask import Flask, current_app

from app.admin.samples import ConsoleSamples
from app.bets.claims import BetClaims
from app.bets.halt import BettingSwitch
from app.bets.notify import BetNotifier
from app.bets.recovery import Recovery
from app.bets.tapstats import TapCounter
from app.config import Settings
from app.market.feed import FeedMonitor
from app.market.grid import GridSpec
from app.market.quotes import QuoteState
from app.metrics import Metrics
from app.realtime.fanout import Fanout
from app.storage.db import ReadPool
from app.storage.redis_batch import ScriptBatcher
from app.storage.writes import WriteQueue


@dataclass
class Services:
    settings: Settings
    redis: redis.Redis
    reads: ReadPool
    writes: WriteQueue
    metrics: Metrics
    fanout: Fanout
    feed: FeedMonitor
    grid: GridSpec
    quotes: QuoteState
    bet_claims: BetClaims
    bet_notifier: BetNotifier
    # Concurrent taps' Redis script calls (rate counter, claim, session lookup) in one round trip.
    redis_batch: ScriptBatcher
    # Rebuilds the bet state from SQLite when Redis has lost it (checked at start and once a second)
    recovery: Recovery
    betting: BettingSwitch = field(default_factory=BettingSwitch)  # the operator's halt switch (copy)
    taps: TapCounter = field(default_factory=TapCounter)  # taps per second by outcome (console)
    console: ConsoleSamples = field(default_factory=ConsoleSamples)  # writer and feed samples (console)
    # When this process built its services (Unix s, the real clock): under gunicorn each worker builds
    # its app after the fork (no preload), so this is the worker's start, and its per-process series
    # (taps, writer) count from here. The console is told (`series_since`): after a SIGHUP the new
    # worker's zeros for earlier seconds are "not measured here", not "no taps".
    started_at: float = field(default_factory=time.time)
    # The wall clock every rule reads (bet freshness, placeable cells, sessions, server_time):
    # timestamps leave the process, so wall time, not monotonic. Tests freeze it with `set_clock`.
    clock: Callable[[], float] = field(default=time.time)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def status_message(self) -> dict:
        """The websocket `status` message: the feed's state, and betting open only while both the
        breaker and the operator's switch allow it. While the operator has halted betting it also
        carries ``"halted": true`` and the operator's ``reason`` (absent otherwise)."""
        msg = self.feed.status_message()
        halt = self.betting.state
        if not halt.open:
            msg.update(betting=False, halted=True, reason=halt.reason)
        return msg


def services(app: Flask | None = None) -> Services:
    """The Services of `app`, or of the current app inside a request or app context."""
    return (app or current_app).extensions["tap"]


def set_clock(app: Flask, clock: Callable[[], float] = time.time) -> None:
    """Replace the app's wall clock (tests: a fixed or shifted time); `time.time` restores it."""
    services(app).clock = clock
