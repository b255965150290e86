"""Watches the feed monitor and tells every websocket when its status changes.

The websocket `status` message (``{"type":"status","feed":…,"betting":…,"halted":…,"reason":…}``,
`Services.status_message`) goes out on connect (app/realtime/ws.py) and from here on every change of
any field — e.g. CRITICAL→recovering changes the feed from "critical" to "degraded" while betting
stays false, recovery flips betting to true, and the operator's halt switch flips it with its reason.
Each change is also kept in `FeedMonitor.transitions` for the operator console.
Polling every 100 ms also drives the time-based edges of the state machine (a stall is noticed
without waiting for the next tick) and keeps the betting gauge current.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson

from app.market.feed import FeedMonitor
from app.metrics import Metrics
from app.realtime.fanout import Fanout
from workers.loop import LoopWorker

log = logging.getLogger(__name__)


class FeedWatch(LoopWorker):
    name = "feed-watch"
    interval_s = 0.1

    def __init__(
        self,
        feed: FeedMonitor,
        fanout: Fanout,
        metrics: Metrics | None = None,
        *,
        status: Callable[[], dict] | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.feed = feed
        self.fanout = fanout
        self.metrics = metrics
        self.status = status or feed.status_message
        self.wall = wall
        self._last: dict | None = None

    def step(self) -> None:
        status = self.status()
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
            self.feed.transitions.append(
                {k: v for k, v in status.items() if k != "type"} | {"at": int(self.wall() * 1000)}
            )
            if self.metrics:
                self.metrics.feed_transitions.labels(status["feed"]).inc()
            self.fanout.broadcast(orjson.dumps(status))

    def _gauge(self, status: dict) -> None:
        if self.metrics:
            self.metrics.feed_betting.set(1 if status["betting"] else 0)
