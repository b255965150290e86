"""The console worker: once a second, what the operator console needs from inside this process.

- the operator's halt switch re-read from Redis (`Services.betting`), in case a `betting` control
  message was missed (a reconnecting pub/sub listener, a worker started meanwhile);
- whether Redis still holds the bet state, rebuilt from SQLite when it has lost it (`app.bets.recovery`);
- one second of the SQLite writer: commits, mean batch size, commit latency p50/p99 (from the
  Prometheus histograms, so the writer itself is not touched) and the queue depth;
- the health of each price source as this process's aggregator sees it: last price, its age, whether
  it is fresh, and its deviation from the median of the fresh ones. Every worker runs every source
  (the lease only decides who publishes), so each worker can answer for them.

Samples live in `Services.console` (`app.admin.samples`); the admin routes read them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from app.admin.store import recent_betting_actions
from app.services import Services
from workers.aggregator import PriceAggregator, median_cents
from workers.loop import LoopWorker

log = logging.getLogger(__name__)


class ConsoleWorker(LoopWorker):
    name = "console"
    interval_s = 1.0

    def __init__(
        self,
        svc: Services,
        aggregator: PriceAggregator | None,
        sources: tuple[str, ...],
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.svc = svc
        self.aggregator = aggregator
        self.sources = sources
        self.wall = wall
        # Whether this worker has compared the newest recorded action with the one Redis last took
        # (`restore_switch`): once at start, then when Redis has forgotten the switch altogether or has
        # lost the bet state (app.bets.recovery: a restart that kept all but its last second, too).
        self._switch_checked = False

    def step(self) -> None:
        svc = self.svc
        now = self.wall()
        try:
            svc.betting.refresh(svc.redis, int(now * 1000))
            if not svc.betting.remembered or not self._switch_checked:
                self._switch_checked = self.restore_switch(int(now * 1000))
        except redis.RedisError as exc:  # the claim script is what refuses taps; this is the display
            # kept in svc.betting too: the console says the state shown is unconfirmed since read_at
            log.warning("console: cannot read the halt switch (%s)", exc)
        losses = svc.recovery.losses
        try:
            svc.recovery.check(int(now * 1000))
        except Exception as exc:  # noqa: BLE001 - Redis or SQLite away: the next second tries again
            log.warning("console: cannot check or rebuild the bet state (%s: %s)", type(exc).__name__, exc)
        if svc.recovery.losses != losses:
            # Redis restarted or lost its data while this worker runs: a halt of its last second may be
            # gone while the marker of an earlier action stayed (app.bets.halt), which `remembered` does
            # not show. Compared again next second, well before the bet state's rebuild reopens taps.
            self._switch_checked = False
        svc.console.sample_writer(svc.metrics, int(now), svc.writes.depth())
        if self.aggregator is not None:
            svc.console.set_sources(self.source_health(), int(now * 1000))

    def restore_switch(self, now_ms: int) -> bool:
        """At start, and whenever Redis has lost the halt switch's state (app.bets.halt): put back the
        newest recorded action if Redis has not taken it and it is a halt. False if the actions log
        could not be read (a rollover, say): the next second tries again."""
        svc = self.svc
        try:
            newest = svc.reads.run(lambda c: recent_betting_actions(c, limit=1))
        except Exception:
            log.exception("console: cannot read the actions log to check the halt switch")
            return False
        restored = svc.betting.restore(svc.redis, newest[0] if newest else None, now_ms)
        if restored is not None:
            log.warning(
                "betting HALTED again: Redis had lost the switch; the newest recorded action is the halt"
                " by %s at %s: %s",
                restored.by,
                restored.at,
                restored.reason,
            )
        return True

    def source_health(self) -> list[dict[str, Any]]:
        agg = self.aggregator
        assert agg is not None
        now_mono = agg.clock.mono()
        now_ms = agg.clock.wall_ms()
        rows: list[dict[str, Any]] = []
        for name in self.sources:
            q = agg.latest(name)
            if q is None:
                rows.append({"source": name, "price": None, "age_s": None, "fresh": False})
                continue
            age = max(0.0, now_mono - q.recv_mono)
            fresh = age <= agg.fresh_s and abs(now_ms - q.exch_ts) <= agg.fresh_s * 1000
            rows.append(
                {"source": name, "price": q.price, "exchange_ts": q.exch_ts, "age_s": age, "fresh": fresh}
            )
        fresh_prices = [r["price"] for r in rows if r["fresh"]]
        median = median_cents(fresh_prices) if fresh_prices else None
        for r in rows:
            r["median"] = median
            r["deviation_ppm"] = (
                None if median is None or r["price"] is None else (r["price"] - median) * 1_000_000 // median
            )
        return rows
