"""The one Redis pub/sub listener of the process: fans ticks out to every websocket queue.

Never share a PubSub object between greenlets: this greenlet owns it. Every tick also refreshes the
in-process feed monitor, so feed freshness is measured where it matters, at the consumer. If Redis
goes away it reconnects every second by itself.
"""

from __future__ import annotations

import contextlib
import logging

import gevent
import redis

from app.fanout import Fanout
from app.feed import FeedMonitor
from app.metrics import Metrics
from app.prices import CHANNEL_PRICE, Tick

log = logging.getLogger(__name__)


class PubSubListener:
    name = "pubsub-listener"

    def __init__(
        self, r: redis.Redis, fanout: Fanout, feed: FeedMonitor, metrics: Metrics | None = None
    ) -> None:
        self.r = r
        self.fanout = fanout
        self.feed = feed
        self.metrics = metrics
        self._stopping = False

    def run(self) -> None:
        while not self._stopping:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANNEL_PRICE)
                while not self._stopping:
                    msg = pubsub.get_message(timeout=1.0)
                    if msg is not None:
                        self._dispatch(msg)
            except redis.RedisError as exc:
                log.warning("pub/sub listener: redis unavailable (%s); reconnecting in 1s", exc)
                gevent.sleep(1.0)
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()

    def _dispatch(self, msg: dict) -> None:
        channel, data = msg["channel"], msg["data"]
        if channel == CHANNEL_PRICE.encode():
            try:
                tick = Tick.decode(data)
            except (ValueError, KeyError, TypeError):
                log.warning("dropping malformed tick %r", data[:200])
                return
            self.feed.record(tick)
            if self.metrics:
                self.metrics.ticks.inc()
            self.fanout.broadcast(data.decode())

    def stop(self) -> None:
        self._stopping = True
