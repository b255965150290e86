"""Watches the feed monitor and tells every websocket when its status changes.

The websocket `status` message (``{"type":"status","feed":…,"betting":…}``) goes out on connect
(app/ws.py) and from here on every change of either field — e.g. CRITICAL→recovering changes the
feed from "critical" to "degraded" while betting stays false, and recovery flips betting to true.
Polling every 100 ms also drives the time-based edges of the state machine (a stall is noticed
without waiting for the next tick) and keeps the betting gauge current.
"""

from __future__ import annotations

import logging

import gevent
import orjson

from app.fanout import Fanout
from app.feed import FeedMonitor
from app.metrics import Metrics

log = logging.getLogger(__name__)


class FeedWatch:
    name = "feed-watch"
    interval_s = 0.1

    def __init__(self, feed: FeedMonitor, fanout: Fanout, metrics: Metrics | None = None) -> None:
        self.feed = feed
        self.fanout = fanout
        self.metrics = metrics
        self._stopping = False

    def run(self) -> None:
        last = self.feed.status_message()
        self._gauge(last)
        while not self._stopping:
            gevent.sleep(self.interval_s)
            status = self.feed.status_message()
            if status != last:
                log.warning(
                    "price feed %s/%s -> %s/%s",
                    last["feed"],
                    "betting" if last["betting"] else "suspended",
                    status["feed"],
                    "betting" if status["betting"] else "suspended",
                )
                last = status
                self._gauge(status)
                if self.metrics:
                    self.metrics.feed_transitions.labels(status["feed"]).inc()
                self.fanout.broadcast(orjson.dumps(status))

    def _gauge(self, status: dict) -> None:
        if self.metrics:
            self.metrics.feed_betting.set(1 if status["betting"] else 0)

    def stop(self) -> None:
        self._stopping = True
