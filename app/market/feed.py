"""Price health monitor and stale-price circuit breaker (ADR-008), on a monotonic clock.

Every tick the pub/sub listener receives is recorded here: freshness is judged where it matters,
at the consumer, on `time.monotonic()` (injectable), so a wall-clock jump changes nothing.
`/readyz`, `/metrics`, the websocket `status` message and the bet endpoint read it.

State machine (``age`` = time since the last tick arrived, ``gap`` = time between two ticks)::

    state      betting  entered when                          left when
    HEALTHY    open     recovered (below)                     age ≥ degraded_s → DEGRADED
    DEGRADED   open     age ≥ degraded_s, or a tick after a   age ≥ critical_s → CRITICAL;
                        gap ≥ degraded_s                      recovery_s of stable ticks → HEALTHY
    CRITICAL   closed   age ≥ critical_s (also: no tick yet)  a tick → RECOVERING
    RECOVERING closed   a tick after CRITICAL (reported as    recovery_s of stable ticks → HEALTHY;
                        feed "degraded", betting false)       age ≥ critical_s → CRITICAL

"Stable" means no gap of degraded_s or more: such a gap restarts the recovery period, so a feed that
flaps (say 5 s on, 5 s off) never reopens betting. Both the HEALTHY→DEGRADED and the →CRITICAL
edges are also detected from the gap when the next tick arrives, so the outcome does not depend on
anyone polling during the stall.

Start-up: before the first tick the state is CRITICAL (no price, betting closed) without the
recovery latch. `bootstrap()` replays the recent history from Redis, so a restarted or reloaded
worker (SIGHUP) inherits the right state — healthy if the history shows recovery_s of stable
ticks, latched if it shows a stall. An empty history (a fresh Redis: nothing to be unstable
against) is a cold start: the first tick opens betting.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from enum import StrEnum

from app.market.prices import Tick


class FeedState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"


_LEVEL = {FeedState.HEALTHY: 0, FeedState.DEGRADED: 1, FeedState.CRITICAL: 2}
TRANSITIONS_KEPT = 50


class FeedMonitor:
    def __init__(
        self,
        degraded_s: float,
        critical_s: float,
        recovery_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < degraded_s < critical_s:
            raise ValueError("need 0 < degraded_s < critical_s")
        self.degraded_s = degraded_s
        self.critical_s = critical_s
        self.recovery_s = recovery_s
        self._clock = clock
        self._last_seen: float | None = None  # monotonic time the last tick arrived
        self._stable_since: float | None = None  # start of the current run without a gap ≥ degraded_s
        self._impaired = False  # degraded or worse since the last recovery
        self._suspended = False  # critical since the last recovery: betting closed
        self.last_tick: Tick | None = None
        # The recent changes of the websocket status (appended by workers/feed_watch.py), newest last:
        # {"at": Unix ms, "feed": …, "betting": …}, for the operator console.
        self.transitions: deque[dict] = deque(maxlen=TRANSITIONS_KEPT)

    # ---- inputs ----------------------------------------------------------------------------------
    def record(self, tick: Tick, at: float | None = None) -> None:
        """A tick arrived (now, or at monotonic time `at` when replaying history)."""
        now = self._clock() if at is None else at
        if self._last_seen is not None and now < self._last_seen:
            now = self._last_seen  # replayed/out-of-order times never move the clock back
        cold = self._last_seen is None
        self._advance(now)  # judge the gap that just ended before accepting the tick
        if cold or now - self._last_seen >= self.degraded_s:  # type: ignore[operator]
            self._stable_since = now  # a run of stable ticks starts (again) here
        self._last_seen = now
        self.last_tick = tick
        self._advance(now)

    def bootstrap(self, history: Iterable[Tick], now_wall_ms: int) -> int:
        """Replay recent history (oldest first, wall-clock `ts`) as if the ticks had arrived live.

        Only before the first live tick; returns how many ticks were replayed. Wall time is used
        here once, to place the history on the monotonic axis; everything after is monotonic.
        """
        if self._last_seen is not None:
            return 0
        now = self._clock()
        n = 0
        for tick in history:
            age_s = max(0, now_wall_ms - tick.ts) / 1000
            self.record(tick, at=now - age_s)
            n += 1
        return n

    # ---- outputs ---------------------------------------------------------------------------------
    def age(self) -> float | None:
        """Seconds since the last tick arrived, or None if none has arrived yet."""
        return None if self._last_seen is None else max(0.0, self._clock() - self._last_seen)

    def state(self) -> FeedState:
        now = self._clock()
        self._advance(now)
        if self._last_seen is None or self._age(now) >= self.critical_s:
            return FeedState.CRITICAL
        return FeedState.DEGRADED if self._impaired else FeedState.HEALTHY

    def betting_open(self) -> bool:
        """False in CRITICAL and while recovering from it (the bet endpoint answers 503)."""
        return self.state() is not FeedState.CRITICAL and not self._suspended

    def recovering(self) -> bool:
        """Ticks are flowing again but the recovery period has not passed yet."""
        now = self._clock()
        self._advance(now)
        return self._impaired and self._age(now) < self.degraded_s

    def recovery_left(self) -> float | None:
        """Seconds of stable ticks still needed before HEALTHY, or None if not recovering."""
        if not self.recovering() or self._stable_since is None:
            return None
        return max(0.0, self.recovery_s - (self._clock() - self._stable_since))

    def level(self) -> int:
        return _LEVEL[self.state()]

    def status_message(self) -> dict:
        return {"type": "status", "feed": self.state().value, "betting": self.betting_open()}

    def snapshot(self) -> dict:
        """For /readyz: state, betting flag, age and recovery progress."""
        age = self.age()
        left = self.recovery_left()
        return {
            "state": self.state().value,
            "betting": self.betting_open(),
            "age_s": None if age is None else round(age, 3),
            "recovering": left is not None,
            "recovery_left_s": None if left is None else round(left, 3),
        }

    # ---- the machine -----------------------------------------------------------------------------
    def _age(self, now: float) -> float:
        return math.inf if self._last_seen is None else now - self._last_seen

    def _advance(self, now: float) -> None:
        """Apply the time-driven edges at monotonic time `now` (idempotent)."""
        if self._last_seen is None:
            return  # waiting for the first tick: CRITICAL, but nothing to recover from yet
        age = now - self._last_seen
        if age >= self.critical_s:
            self._impaired = self._suspended = True
        elif age >= self.degraded_s:
            self._impaired = True
        elif (
            self._impaired and self._stable_since is not None and now - self._stable_since >= self.recovery_s
        ):
            self._impaired = self._suspended = False
