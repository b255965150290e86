"""How fresh the price feed is, as this process sees it (monotonic clock only).

Every tick the pub/sub listener receives is recorded here; `/readyz`, `/metrics` and the websocket
`status` message read the state. Ages are measured on `time.monotonic()`, so a wall-clock jump
changes nothing.
"""

from __future__ import annotations

import time
from enum import StrEnum

from app.prices import Tick


class FeedState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"


_LEVEL = {FeedState.HEALTHY: 0, FeedState.DEGRADED: 1, FeedState.CRITICAL: 2}


class FeedMonitor:
    def __init__(self, degraded_s: float, critical_s: float, clock=time.monotonic) -> None:
        self.degraded_s = degraded_s
        self.critical_s = critical_s
        self._clock = clock
        self._last_seen: float | None = None
        self.last_tick: Tick | None = None

    def record(self, tick: Tick) -> None:
        self._last_seen = self._clock()
        self.last_tick = tick

    def age(self) -> float | None:
        """Seconds since the last tick arrived, or None if none has arrived yet."""
        return None if self._last_seen is None else self._clock() - self._last_seen

    def state(self) -> FeedState:
        age = self.age()
        if age is None or age >= self.critical_s:
            return FeedState.CRITICAL
        if age >= self.degraded_s:
            return FeedState.DEGRADED
        return FeedState.HEALTHY

    def level(self) -> int:
        return _LEVEL[self.state()]

    def betting_open(self) -> bool:
        return self.state() is not FeedState.CRITICAL

    def status_message(self) -> dict:
        return {"type": "status", "feed": self.state().value, "betting": self.betting_open()}
