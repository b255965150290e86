"""Which week files exist and which may be archived: CURRENT, the attached history, the eligible rest."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from app.storage.db import (
    HISTORY_WEEKS,
    current_week_file,
    history_files,
    list_week_files,
    parse_week_filename,
)

STAGING_DIR = ".archive-staging"
RESTORED_DIR = "restored"
INDEX_FILE = "archive-index.json"
RUN_LOCK = ".archive-run.lock"
MANIFEST_FORMAT = 1
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
_WEEK_ARG = re.compile(r"(\d{4})[_-]W?(\d{1,2})")


class ArchiveError(Exception):
    """An expected failure (no such week, missing bucket, hash mismatch …): one line, no traceback."""

    def __init__(self, message: str) -> None:
        one_line = " ".join(str(message).split())  # SQLite and botocore messages may span lines
        super().__init__(one_line if len(one_line) <= 2000 else one_line[:1997] + "…")


# ---- weeks --------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Week:
    year: int
    week: int

    @classmethod
    def parse(cls, text: str) -> Week:
        """``2026_40`` (also ``2026-W40``, ``2026-40``) → Week; ArchiveError if no such ISO week."""
        m = _WEEK_ARG.fullmatch(text.strip())
        if not m:
            raise ArchiveError(f"{text!r} is not a week: use YYYY_WW, e.g. 2026_40")
        year, week = int(m.group(1)), int(m.group(2))
        try:
            dt.date.fromisocalendar(year, week, 1)
        except ValueError:
            raise ArchiveError(f"{text!r}: ISO year {year} has no week {week}") from None
        return cls(year, week)

    @classmethod
    def of(cls, path: Path) -> Week:
        yw = parse_week_filename(path.name)
        if yw is None:
            raise ValueError(f"{path.name} is not a week file name")
        return cls(*yw)

    def __str__(self) -> str:
        return f"{self.year:04d}_{self.week:02d}"

    @property
    def filename(self) -> str:
        return f"bets_{self}.db"

    @property
    def object_name(self) -> str:
        return f"bets_{self}.db.zst"

    @property
    def manifest_name(self) -> str:
        return f"bets_{self}.manifest.json"

    @property
    def monday(self) -> dt.date:
        return dt.date.fromisocalendar(self.year, self.week, 1)

    def weeks_before(self, other: Week) -> int:
        """How many ISO weeks `self` starts before `other` (negative if after)."""
        return (other.monday - self.monday).days // 7


@dataclass(frozen=True)
class LocalWeek:
    week: Week
    path: Path
    size: int
    state: str  # current | attached | eligible | newer | kept

    @property
    def eligible(self) -> bool:
        return self.state == "eligible"


def classify(db_dir: Path) -> list[LocalWeek]:
    """Every local week file with its state, oldest first. Raises ArchiveError without CURRENT."""
    current = current_week_file(db_dir)
    if current is None:
        raise ArchiveError(f"no CURRENT pointer in {db_dir}: refusing to decide which week files are closed")
    cur = Week.of(current)
    attached = {p.name for p in history_files(db_dir, current)}
    out = []
    for path in list_week_files(db_dir):
        wk = Week.of(path)
        if path.name == current.name:
            state = "current"
        elif path.name in attached:
            state = "attached"
        elif wk > cur:
            state = "newer"  # e.g. a rollover that crashed before switching CURRENT: not closed history
        elif wk.weeks_before(cur) > HISTORY_WEEKS:
            state = "eligible"
        else:
            state = "kept"  # cannot happen with the rules above; kept for safety
        out.append(LocalWeek(wk, path, file_size(path), state))
    return out


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def fingerprint(path: Path) -> dict[str, int]:
    """What must not change between the snapshot and the removal of a week file."""
    st = path.stat()
    wal = Path(f"{path}-wal")
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "inode": st.st_ino,
        "wal_size": wal.stat().st_size if wal.exists() else 0,
    }
