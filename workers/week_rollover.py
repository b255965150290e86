"""Rolls the read-write week file over when the ISO week changes (see `app.rollover`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from app.db import current_week_file, iso_week, parse_week_filename, week_filename
from app.rollover import RolloverResult, rollover_job
from app.writes import WriteQueue
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
    ) -> None:
        super().__init__()
        self.writes = writes
        self.db_dir = db_dir
        self.synchronous = synchronous
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
        target = self.due()
        if target is None:
            return None
        return self.writes.call(rollover_job(self.db_dir, target, self.synchronous), timeout=300)

    def step(self) -> None:
        self.check()
