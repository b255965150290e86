"""Watches the feed monitor and tells every websocket when its status changes.

The websocket `status` message (``{"type":"status","feed":…,"betting":…}``) goes out on connect
(app/realtime/ws.py) and from here on every change of either field — e.g. CRITICAL→recovering changes the
feed from "critical" to "degraded" while betting stays false, and recovery flips betting to true.
Polling every 100 ms also drives the time-based edges of the state machine (a stall is noticed
without waiting for the next tick) and keeps the betting gauge current.
"""

from __future__ import annotations

import logging

import orjson

from app.market.feed import FeedMonitor
from app.metrics import Metrics
from app.realtime.fanout import Fanout
from workers.loop import LoopWorker

log = logging.getLogger(__name__)


class FeedWatch(LoopWorker):
    name = "feed-watch"
    interval_s = 0.1

    def __init__(self, feed: FeedMonitor, fanout: Fanout, metrics: Metrics | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.fanout = fanout
        self.metrics = metrics
        self._last: dict | None = None

    def step(self) -> None:
        status = self.feed.status_message()
        last, self._last = self._last, status
        if last is None:  # first round (or a restart): the gauge only; clients got status on connect
            self._gauge(status)
            return
        if status != last:
            log.warning(
                "price feed %s/%s -> %s/%s",
                last["feed"],
                "betting" if last["betting"] else "suspended",
                status["feed"],
                "betting" if status["betting"] else "suspended",
            )
            self._gauge(status)
            if self.metrics:
                self.metrics.feed_transitions.labels(status["feed"]).inc()
            self.fanout.broadcast(orjson.dumps(status))

    def _gauge(self, status: dict) -> None:
        if self.metrics:
            self.metrics.feed_betting.set(1 if status["betting"] else 0)
