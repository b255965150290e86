"""Announces bets lost with a dead worker's write queue (`app.bets.reconcile`), and keeps this
process's heartbeat so that its own queued bets are never taken for lost."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from app.bets.reconcile import DRAIN_COVER_S, HEARTBEAT_EVERY_S, beat, reconcile_orphans
from app.services import Services
from workers.loop import LoopWorker

log = logging.getLogger(__name__)


class BetReconciler(LoopWorker):
    """This instance's heartbeat plus `reconcile_orphans`, at start and every second."""

    name = "bet-reconciler"
    interval_s = HEARTBEAT_EVERY_S

    def __init__(self, svc: Services, now_ms: Callable[[], int]) -> None:
        super().__init__()
        self.svc = svc
        self.now_ms = now_ms
        self.instance = svc.bet_claims.instance

    def step(self) -> None:
        try:
            if not self.stopping:  # never shorten the heartbeat stop() stretched
                beat(self.svc.redis, self.instance)
            reconcile_orphans(self.svc, self.now_ms(), self.instance)
        except redis.RedisError as exc:
            log.warning("bet-reconciler: redis unavailable (%s)", exc)
        except Exception:  # the read pool during a rollover, say: next pass
            log.exception("bet-reconciler pass failed")

    def stop(self) -> None:
        """Stretch the heartbeat over the writer's drain, then stop: queued bets are not lost yet."""
        super().stop()
        try:
            beat(self.svc.redis, self.instance, DRAIN_COVER_S)
        except redis.RedisError as exc:
            log.warning("bet-reconciler: could not stretch the heartbeat (%s)", exc)
