"""The per-app service objects, built by `create_app` and shared by routes and worker greenlets."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask, current_app

from app.config import Settings
from app.db import ReadPool
from app.fanout import Fanout
from app.feed import FeedMonitor
from app.metrics import Metrics
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


def services(app: Flask | None = None) -> Services:
    """The Services of `app`, or of the current app inside a request or app context."""
    return (app or current_app).extensions["tap"]
