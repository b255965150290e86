"""The one Redis pub/sub listener of the process: fans messages out to the websocket queues.

Never share its `Subscription` (one Redis connection, read in bulk) between greenlets: this greenlet
owns it. It subscribes to

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
import socket
import time
from collections.abc import Callable
from typing import Any

import hiredis
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
READ_BYTES = 64 * 1024  # what one read of the subscription takes at most (many messages under load)
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
            sub: Subscription | None = None
            try:
                sub = Subscription(self.r, [CHANNEL_PRICE, CHANNEL_PUBLIC, CHANNEL_CONTROL], [USER_PATTERN])
                self._bootstrap()
                while not self.stopping:
                    for channel, data in sub.read(timeout_s=0.25):  # the timeout bounds stop()'s wait
                        self._dispatch(channel, data)
            except (redis.RedisError, OSError) as exc:
                log.warning("pub/sub listener: redis unavailable (%s); reconnecting in 1s", exc)
                self.wait(1.0)
            finally:
                if sub is not None:
                    sub.close()

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

    def _dispatch(self, channel: bytes, data: bytes) -> None:
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


class Subscription:
    """One connection subscribed to Redis channels and patterns, its messages read in bulk: what one
    `recv` brings in is parsed by hiredis and every message in it handed over without another syscall.

    Why not redis-py's `PubSub`: every `get_message(timeout)` on an empty buffer polls the socket with
    a timeout (a gevent timer and watcher), peeks for a closed peer, sets the socket timeout twice and
    builds a dict, and a `bet:confirmed` is one message per bet. Replacing it took ~3 % of the worker's
    CPU per tap off the mixed run at 3,000 taps/s (BENCHMARKS.md, issue 12 sixth pass).

    Connects with the client's own settings: host, port, username and password, client name, the
    connect and read timeouts, TCP keepalive (pub/sub ignores the db). A Redis that goes away, refuses
    the AUTH or sends what is not RESP raises `redis.ConnectionError`; the listener then reconnects.
    As redis-py's health check does, a connection silent for `health_check_interval` (30 s) is sent a
    PING, and one that does not answer within the read timeout is given up as dead: a half-open TCP
    connection would otherwise leave the listener deaf until the kernel gives up on it.
    """

    def __init__(self, r: redis.Redis, channels: list[str], patterns: list[str]) -> None:
        kw = r.connection_pool.connection_kwargs
        address = (kw.get("host", "localhost"), kw.get("port", 6379))
        self._sock = socket.create_connection(address, timeout=kw.get("socket_connect_timeout"))
        self._reader = hiredis.Reader()
        self._health_s = kw.get("health_check_interval") or 30.0
        self._answer_s = kw.get("socket_timeout") or 5.0
        self._heard = time.monotonic()  # when bytes last came in
        self._pinged: float | None = None  # when an unanswered PING went out
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if kw.get("socket_keepalive"):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            commands: list[tuple[Any, ...]] = []
            if kw.get("password"):
                user = (kw["username"],) if kw.get("username") else ()
                commands.append(("AUTH", *user, kw["password"]))
            if kw.get("client_name"):
                commands.append(("CLIENT", "SETNAME", kw["client_name"]))
            replies = len(commands) + len(channels) + len(patterns)  # one confirmation per name
            commands += [cmd for cmd in (("SUBSCRIBE", *channels), ("PSUBSCRIBE", *patterns)) if len(cmd) > 1]
            self._sock.sendall(b"".join(hiredis.pack_command(c) for c in commands))
            self._sock.settimeout(kw.get("socket_timeout"))
            for _ in range(replies):
                self._next()
        except BaseException:
            self.close()
            raise

    def read(self, timeout_s: float) -> list[tuple[bytes, bytes]]:
        """The messages (channel, data) that one read brings within `timeout_s`; [] if none came."""
        self._sock.settimeout(timeout_s)
        try:
            self._fill()
        except TimeoutError:
            self._check_health()
            return []
        out = []
        while (reply := self._gets()) is not False:
            kind = reply[0]
            if kind == b"pmessage":
                out.append((reply[2], reply[3]))
            elif kind == b"message":
                out.append((reply[1], reply[2]))
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def _next(self) -> Any:
        while (reply := self._gets()) is False:
            self._fill()
        return reply

    def _gets(self) -> Any:
        try:
            reply = self._reader.gets()
        except hiredis.ProtocolError as exc:
            raise redis.ConnectionError(f"pub/sub: not a Redis reply ({exc})") from None
        if isinstance(reply, hiredis.ReplyError):
            raise redis.ConnectionError(f"pub/sub: {reply}")
        return reply

    def _fill(self) -> None:
        data = self._sock.recv(READ_BYTES)
        if not data:
            raise redis.ConnectionError("pub/sub: Redis closed the connection")
        self._reader.feed(data)
        self._heard, self._pinged = time.monotonic(), None  # any bytes answer a PING (its reply is skipped)

    def _check_health(self) -> None:
        now = time.monotonic()
        if self._pinged is not None:
            if now - self._pinged > self._answer_s:
                raise redis.ConnectionError(f"pub/sub: no answer to a PING in {self._answer_s:g} s")
        elif now - self._heard >= self._health_s:
            self._sock.sendall(hiredis.pack_command(("PING",)))
            self._pinged = now
