"""The per-app service objects, built by `create_app` and shared by routes and worker greenlets."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, current_app

from app.bets.claims import BetClaims
from app.bets.notify import BetNotifier
from app.config import Settings
from app.db import ReadPool
from app.fanout import Fanout
from app.feed import FeedMonitor
from app.grid import GridSpec
from app.metrics import Metrics
from app.quotes import QuoteState
from app.writes import WriteQueue


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


def services(app: Flask | None = None) -> Services:
    """The Services of `app`, or of the current app inside a request or app context."""
    return (app or current_app).extensions["tap"]
