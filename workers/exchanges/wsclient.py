"""A reconnecting websocket client for exchange feeds, one greenlet per connection.

Built on websocket-client (blocking API; cooperative once gevent has patched the process). What it
adds on top:

- **Reconnect with jittered exponential backoff** ("equal jitter": half the step fixed, half random,
  so a fleet never reconnects in lock-step, yet never hammers at ~0 s): 0.5 s, 1 s, 2 s … capped at
  15 s; reset once a connection has delivered data for 10 s. Binance allows 300 connections per
  5 minutes per IP; this stays far below.
- **Ping/pong.** websocket-client answers every server ping with a pong carrying its payload
  (Binance pings every 20 s and disconnects without a pong within a minute).
- **Idle detection.** No data frame for ``TAP_FEED_IDLE_S`` → the connection is presumed dead
  (half-open TCP, a stuck server) and replaced. Pings do not count as data.
- **Proactive rotation** (`max_age_s`, used for Binance's 24 h limit) and on request from the
  subclass (`Rotate`, e.g. Binance's ``serverShutdown`` event): make-before-break — the new
  connection is opened and subscribed before the old one is closed, so no gap opens in the feed.

Subclasses implement `on_open(conn)` (send subscriptions) and `on_message(raw, recv_mono)`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable

import websocket
from websocket import ABNF, WebSocketException, WebSocketTimeoutException

from app.metrics import Metrics
from workers.loop import Stoppable

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 15.0
STABLE_AFTER_S = 10.0
CONNECT_TIMEOUT_S = 10.0
POLL_S = 0.5
ROTATE_RETRY_S = 30.0


class Rotate(Exception):
    """Raised by `on_message`: open a fresh connection now (make-before-break)."""


class Reconnect(Exception):
    """Raised by `on_message`: this connection is unusable; drop it and reconnect with backoff."""


class Backoff:
    """Exponential backoff with equal jitter: step d = min(max, initial·2ⁿ), delay ∈ [d/2, d]."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        step = min(self.max_s, self.initial_s * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return step / 2 + self.rng.uniform(0, step / 2)

    def reset(self) -> None:
        self.attempt = 0


class ReconnectingClient(Stoppable):
    """Keeps one websocket to `url` open; see the module docstring. A supervisor-style worker."""

    source = "exchange"  # label in metrics and logs; set by subclasses

    def __init__(
        self,
        url: str,
        *,
        idle_s: float,
        metrics: Metrics | None = None,
        max_age_s: float | None = None,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.url = url
        self.idle_s = idle_s
        self.metrics = metrics
        self.max_age_s = max_age_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff = Backoff(backoff_initial_s, backoff_max_s, rng)
        self._clock = clock
        self._conn: websocket.WebSocket | None = None
        self._opened = self._last_data = 0.0
        self._stable = False
        self._switched = False
        self._next_rotate: float | None = None
        self.connections = 0  # successful connections so far (tests and logs)
        self._last_warn: dict[str, float] = {}

    @property
    def name(self) -> str:
        return f"source-{self.source}"

    # ---- for subclasses ---------------------------------------------------------------------------
    def on_open(self, conn: websocket.WebSocket) -> None:
        """Called once per new connection, before any message is read (send subscriptions here)."""

    def on_message(self, raw: bytes, recv_mono: float) -> bool:
        """Handle one text/binary message; return True if it carried usable data (a price/heartbeat)."""
        raise NotImplementedError

    def warn_rarely(self, key: str, msg: str, *args: object, every_s: float = 10.0) -> None:
        """A warning at most once per `every_s` per key: a stream of garbage must not flood the log."""
        now = self._clock()
        if now - self._last_warn.get(key, -1e9) >= every_s:
            self._last_warn[key] = now
            log.warning(msg, *args)

    # ---- the worker -------------------------------------------------------------------------------
    def run(self) -> None:
        reason = "start"
        while not self.stopping:
            try:
                conn = self._open(reason)
            except (OSError, WebSocketException) as exc:
                self._count("connect_failed")
                self.warn_rarely("connect", "%s: cannot connect to %s (%s)", self.source, self.url, exc)
                self._pause(self.backoff.next())
                reason = "retry"
                continue
            reason = self._pump(conn)
            if self._conn is not None:
                self._close(self._conn)
            if self.stopping:
                break
            self._pause(self.backoff.next())

    def stop(self) -> None:
        super().stop()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.abort()  # wakes the reader greenlet out of recv

    # ---- internals --------------------------------------------------------------------------------
    def _open(self, reason: str) -> websocket.WebSocket:
        conn = websocket.create_connection(
            self.url,
            timeout=self.connect_timeout_s,
            skip_utf8_validation=True,  # orjson validates UTF-8 strictly when it parses
            enable_multithread=False,  # this greenlet is the only reader and writer
        )
        try:
            self.on_open(conn)
            conn.settimeout(POLL_S)
        except BaseException:
            self._close(conn)
            raise
        self.connections += 1
        self._count(reason)
        log.info("%s: connected to %s (%s)", self.source, self.url, reason)
        return conn

    def _adopt(self, conn: websocket.WebSocket) -> None:
        self._conn = conn
        self._opened = self._last_data = self._clock()
        self._stable = False
        self._switched = False  # opened by `_switch` (True), or by `run` after a reconnect (False)
        self._next_rotate = self._opened + self.max_age_s if self.max_age_s else None

    def _pump(self, conn: websocket.WebSocket) -> str:
        """Read until the connection ends; return why ("idle", "closed", "error", "reconnect")."""
        self._adopt(conn)
        while not self.stopping:
            now = self._clock()
            if now - self._last_data >= self.idle_s:
                self.warn_rarely(
                    "idle", "%s: no data for %.1fs; reconnecting", self.source, now - self._last_data
                )
                return "idle"
            if self._next_rotate is not None and now >= self._next_rotate:
                self._switch("max_age")
                continue
            try:
                opcode, data = self._conn.recv_data()  # type: ignore[union-attr]
            except WebSocketTimeoutException:
                continue
            except (OSError, WebSocketException) as exc:
                if not self.stopping:
                    self.warn_rarely("lost", "%s: connection lost (%s); reconnecting", self.source, exc)
                return "error"
            if opcode == ABNF.OPCODE_CLOSE:
                self.warn_rarely("closed", "%s: server closed the connection; reconnecting", self.source)
                return "closed"
            outcome = self._handle(data)
            if outcome is not None:
                return outcome
        return "stopped"

    def _handle(self, data: bytes) -> str | None:
        recv = self._clock()
        try:
            useful = self.on_message(data, recv)
        except Rotate as exc:
            if self._switched and not self._stable:
                # Told to move again before the connection we moved to settled: a draining server that
                # still accepts connections. Back off as after any failure, not as fast as handshakes
                # complete (Binance allows 300 connections per 5 minutes per IP).
                self.warn_rarely(
                    "rotate", "%s: %s again, right after switching; backing off", self.source, exc
                )
                return "reconnect"
            log.info("%s: %s; switching to a new connection", self.source, exc)
            return None if self._switch("rotate") else "closed"
        except Reconnect as exc:
            self.warn_rarely("reconnect", "%s: %s; reconnecting", self.source, exc)
            return "reconnect"
        if useful:
            self._last_data = recv
            if not self._stable and recv - self._opened >= STABLE_AFTER_S:
                self._stable = True
                self.backoff.reset()
        return None

    def _switch(self, reason: str) -> bool:
        """Open a new connection, then close the current one (make-before-break)."""
        try:
            fresh = self._open(reason)
        except (OSError, WebSocketException) as exc:
            self._count("connect_failed")
            log.warning("%s: could not open a replacement connection (%s)", self.source, exc)
            self._next_rotate = self._clock() + ROTATE_RETRY_S
            return False
        old = self._conn
        self._adopt(fresh)
        self._switched = True
        if old is not None:
            self._close(old)
        return True

    def _close(self, conn: websocket.WebSocket) -> None:
        if not self.stopping:  # a polite close frame, unless we are in a hurry
            with contextlib.suppress(Exception):
                conn.settimeout(1.0)
                conn.close(timeout=0.5)
        with contextlib.suppress(Exception):
            conn.shutdown()
        if self._conn is conn:
            self._conn = None

    def _pause(self, seconds: float) -> None:
        self.wait(seconds)

    def _count(self, reason: str) -> None:
        if self.metrics:
            self.metrics.source_reconnects.labels(self.source, reason).inc()
