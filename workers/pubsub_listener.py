"""The one Redis pub/sub listener of the process: fans messages out to the websocket queues.

Never share a PubSub object between greenlets: this greenlet owns it. It subscribes to

- ``tap:price`` — normalised ticks (already the websocket ``price`` message): recorded in the feed
  monitor (freshness is measured here, at the consumer, on the monotonic clock) and broadcast;
- ``tap:public`` — any other message for every client (e.g. ``grid``), relayed as is;
- ``tap:user:*`` (pattern) — private messages: a publisher sends the exact websocket JSON text
  (``{"type":"bet:confirmed",…}``, ``{"type":"balance",…}``; several, one per line, each with the
  ``id`` of its entry in the trader's event Stream: app.realtime.events) on
  ``tap:user:<lowercase 0x address>`` and it goes to that address's authenticated connections only.

Before the first tick it replays the recent price history into the monitor (`FeedMonitor.bootstrap`),
so a reloaded worker inherits the breaker state instead of starting blind. If Redis goes away it
reconnects every second by itself.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable

import redis

from app.auth.decorators import WS_CLOSE_INVALID_SESSION
from app.keys import (
    CHANNEL_CONTROL,
    CHANNEL_PRICE,
    CHANNEL_PUBLIC,
    USER_PATTERN,
    USER_PREFIX,
    betting_change,
    ended_session,
)
from app.market.feed import FeedMonitor
from app.market.prices import Tick, tick_at_or_before, ticks_since
from app.metrics import Metrics
from app.realtime.fanout import Fanout
from workers.loop import Stoppable

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024  # a relayed message larger than this is a bug upstream: dropped
_ADDRESS_RE = re.compile(rb"0x[0-9a-f]{40}")


class PubSubListener(Stoppable):
    name = "pubsub-listener"

    def __init__(
        self,
        r: redis.Redis,
        fanout: Fanout,
        feed: FeedMonitor,
        metrics: Metrics | None = None,
        *,
        wall: Callable[[], float] = time.time,
        on_betting: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        super().__init__()
        self.on_betting = on_betting  # the operator halted or reopened betting (a control message)
        self.r = r
        self.fanout = fanout
        self.feed = feed
        self.metrics = metrics
        self._wall = wall
        self._price = CHANNEL_PRICE.encode()
        self._public = CHANNEL_PUBLIC.encode()
        self._control = CHANNEL_CONTROL.encode()
        self._user_prefix = USER_PREFIX.encode()

    def run(self) -> None:
        while not self.stopping:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(CHANNEL_PRICE, CHANNEL_PUBLIC, CHANNEL_CONTROL)
                pubsub.psubscribe(USER_PATTERN)
                self._bootstrap()
                while not self.stopping:
                    msg = pubsub.get_message(timeout=0.25)  # bounds how long stop() waits
                    if msg is not None:
                        self._dispatch(msg)
            except redis.RedisError as exc:
                log.warning("pub/sub listener: redis unavailable (%s); reconnecting in 1s", exc)
                self.wait(1.0)
            finally:
                with contextlib.suppress(redis.RedisError):
                    pubsub.close()

    def _bootstrap(self) -> None:
        """Replay the last critical+recovery seconds of history (and the tick before them)."""
        if self.feed.last_tick is not None:
            return
        now_ms = int(self._wall() * 1000)
        since = now_ms - int((self.feed.recovery_s + self.feed.critical_s) * 1000)
        history = ticks_since(self.r, since, limit=100_000)
        before = tick_at_or_before(self.r, since - 1)
        if before is not None:
            history.insert(0, before)
        n = self.feed.bootstrap(history, now_ms)
        if n:
            log.info("feed monitor: replayed %d ticks of history; feed %s", n, self.feed.state().value)

    def _dispatch(self, msg: dict) -> None:
        channel, data = msg["channel"], msg["data"]
        if not isinstance(data, bytes) or len(data) > MAX_MESSAGE_BYTES:
            log.warning("dropping oversized or non-bytes pub/sub message on %r", channel)
            return
        if channel == self._price:
            try:
                tick = Tick.decode(data)
            except (ValueError, KeyError, TypeError):
                log.warning("dropping malformed tick %r", data[:200])
                return
            self.feed.record(tick)
            if self.metrics:
                self.metrics.ticks.inc()
            self.fanout.broadcast(data)
        elif channel == self._public:
            text = _text(data)
            if text is not None:
                self.fanout.broadcast(text)
        elif channel == self._control:
            session_key = ended_session(data)
            if session_key is not None:  # logged out: its sockets are closed with 4401 (SPEC §8)
                self.fanout.end_session(session_key, WS_CLOSE_INVALID_SESSION, "invalid_session")
            elif (change := betting_change(data)) is not None and self.on_betting is not None:
                self.on_betting(*change)  # feed-watch tells the sockets within 100 ms
        elif channel.startswith(self._user_prefix):
            address = channel[len(self._user_prefix) :]
            if _text(data) is None or not _ADDRESS_RE.fullmatch(address):
                log.warning("dropping private message on bad channel %r", channel[:80])
                return
            self.fanout.send_to(address.decode(), data)  # one or more events, one per line
            if self.metrics:
                self.metrics.ws_private.inc()


def _text(data: bytes) -> str | None:
    try:
        return data.decode()
    except UnicodeDecodeError:
        log.warning("dropping a pub/sub message that is not UTF-8 text")
        return None
