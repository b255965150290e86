"""Taps per second by outcome, over the last 15 minutes, in process memory (the operator console).

Counting is a dict increment on the tap path: no Redis, no lock (one gevent hub). Each worker keeps
its own; gunicorn runs one worker, and during a SIGHUP overlap the console shows the worker that
answered it. The outcome is ``accepted`` (queued), ``retry`` (a retried nonce answered with its bet)
or the error code of the refusal (``exposure_limit``, ``betting_halted``, ``invalid_signature``, …).
Counted from the schema check on (`app.bets.placement`), on both transports; a request refused before
it is a tap (no session, a per-IP rate limit) is not counted here.
"""

from __future__ import annotations

from collections import Counter

WINDOW_S = 900  # what the console plots


class TapCounter:
    def __init__(self, window_s: int = WINDOW_S) -> None:
        self.window_s = window_s
        self._seconds: dict[int, Counter[str]] = {}
        self._oldest = 0

    def record(self, outcome: str, now_s: float) -> None:
        sec = int(now_s)
        bucket = self._seconds.get(sec)
        if bucket is None:
            bucket = self._seconds[sec] = Counter()
            self._trim(sec)
        bucket[outcome] += 1

    def _trim(self, now_s: int) -> None:
        floor = now_s - self.window_s
        if self._oldest >= floor:
            return
        for sec in [s for s in self._seconds if s <= floor]:
            del self._seconds[sec]
        self._oldest = min(self._seconds, default=now_s)

    def series(self, now_s: float, window_s: int | None = None) -> dict[str, object]:
        """Per-second counts for the last `window_s` seconds up to `now_s` (inclusive), by outcome:
        ``{"start": s, "seconds": n, "by_outcome": {outcome: [count per second]}, "totals": {…}}``."""
        n = min(window_s or self.window_s, self.window_s)
        end = int(now_s)
        start = end - n + 1
        outcomes = sorted({o for s, c in self._seconds.items() if start <= s <= end for o in c})
        by = {o: [0] * n for o in outcomes}
        for sec, counts in self._seconds.items():
            if start <= sec <= end:
                for o, k in counts.items():
                    by[o][sec - start] = k
        return {
            "start": start,
            "seconds": n,
            "by_outcome": by,
            "totals": {o: sum(v) for o, v in by.items()},
        }
