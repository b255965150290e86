"""Watches the feed state and tells every websocket when it changes (the `status` message)."""

from __future__ import annotations

import logging

import gevent
import orjson

from app.fanout import Fanout
from app.feed import FeedMonitor

log = logging.getLogger(__name__)


class FeedWatch:
    name = "feed-watch"
    interval_s = 0.25

    def __init__(self, feed: FeedMonitor, fanout: Fanout) -> None:
        self.feed = feed
        self.fanout = fanout
        self._stopping = False

    def run(self) -> None:
        last = self.feed.state()
        while not self._stopping:
            gevent.sleep(self.interval_s)
            state = self.feed.state()
            if state is not last:
                log.warning("price feed %s -> %s", last.value, state.value)
                last = state
                self.fanout.broadcast(orjson.dumps(self.feed.status_message()).decode())

    def stop(self) -> None:
        self._stopping = True
