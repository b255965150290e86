"""Rolls the read-write week file over when the ISO week changes (see `app.storage.rollover`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import gevent

from app.errors import ApiError
from app.storage.db import current_week_file, iso_week, parse_week_filename, week_filename
from app.storage.rollover import RolloverResult, rollover_job
from app.storage.writes import OutcomeUnknown, WriteQueue
from workers.loop import LoopWorker

log = logging.getLogger(__name__)


class WeekRollover(LoopWorker):
    name = "week-rollover"
    interval_s = 5.0

    def __init__(
        self,
        writes: WriteQueue,
        db_dir: Path,
        *,
        synchronous: str = "FULL",
        clock: Callable[[], float] = time.time,
        autocheckpoint: bool = True,
    ) -> None:
        super().__init__()
        self.writes = writes
        self.db_dir = db_dir
        self.synchronous = synchronous
        self.autocheckpoint = autocheckpoint
        self.clock = clock

    def due(self) -> Path | None:
        """The new week file to roll over to, if the calendar has moved past CURRENT's week."""
        current = current_week_file(self.db_dir)
        if current is None:
            return None
        now_week = iso_week(self.clock())
        if now_week <= (parse_week_filename(current.name) or now_week):
            return None
        return self.db_dir / week_filename(*now_week)

    def check(self) -> RolloverResult | None:
        """Roll over if due, through the writer's priority lane (the job is solo: it runs alone).

        A writer that refuses or does not answer in time is logged, not raised: the rollover is
        idempotent (a repeat finds CURRENT already moved) and the next check tries again.
        """
        target = self.due()
        if target is None:
            return None
        try:
            return self.writes.call(
                rollover_job(self.db_dir, target, self.synchronous, autocheckpoint=self.autocheckpoint),
                timeout=300,
                priority=True,
            )
        except (ApiError, OutcomeUnknown, gevent.Timeout) as exc:
            log.warning("week rollover to %s not done now (%r); retried at the next check", target.name, exc)
            return None

    def step(self) -> None:
        self.check()
