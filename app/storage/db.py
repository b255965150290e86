"""SQLite through apsw: week files, pragmas, migrations and the read pool (ADR-001, ADR-006).

Layout under ``<data dir>/db``::

    bets_2026_47.db     one file per ISO week: users + bets + transaction_ledger
    CURRENT             the name of the read-write week file (switched atomically by rollover)

The current file is named by ``CURRENT`` rather than by today's date, so that a week rollover is one
atomic rename: a crash half-way leaves the old file authoritative.

Writes go through exactly one connection, owned by the writer greenlet (``workers.sqlite_writer``).
Reads use this module's `ReadPool`. Both run their SQLite calls on native threads of a gevent
threadpool: apsw releases the GIL inside SQLite, and the hub keeps serving other greenlets.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

import apsw
import gevent
from gevent.queue import Queue

from app.storage.files import write_atomic

log = logging.getLogger(__name__)

# The migrations ship as package data of the top-level `sql` package, so an installed wheel (not only
# a checkout) finds them.
SQL_DIR: Traversable = importlib.resources.files("sql")
CURRENT_POINTER = "CURRENT"
_WEEK_RE = re.compile(r"bets_(\d{4})_(\d{2})\.db")
_MIGRATION_RE = re.compile(r"(\d{3})_[a-z0-9_]+\.sql")

T = TypeVar("T")

# Pragmas, and why (figures in BENCHMARKS.md):
#  journal_mode=WAL    readers never block the writer and vice versa; one fsync per commit, not two.
#  synchronous=FULL    this is money: a commit reported to a trader must survive power loss, not just a
#                      process crash. NORMAL is available through TAP_SQLITE_SYNCHRONOUS and measured.
#  busy_timeout        during a SIGHUP reload two writers (old and new worker) overlap; they wait, not fail.
#  foreign_keys=ON     a bet or ledger row for a user that does not exist is a bug; refuse it.
#  cache_size          64 MiB page cache for the writer (hot users and index pages stay resident).
#  temp_store=MEMORY   sorts for history pages never touch the disk.
#  journal_size_limit  truncate the WAL back to 64 MiB after checkpoints so it cannot grow without bound.
#  wal_autocheckpoint  SQLite's default (1000 pages) unless Litestream replicates the file (issue 15):
#                      then 0, because Litestream must own checkpoints — a checkpoint taken by the app
#                      between two of Litestream's can restart the WAL under it, which costs a full
#                      snapshot upload. Litestream checkpoints PASSIVE every ~1000 pages / 1 min and
#                      TRUNCATE past ~500 MB; the writer keeps a last-resort checkpoint for a WAL far
#                      beyond that (Litestream not running), see workers/sqlite_writer.py.
_COMMON_PRAGMAS = (
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
    "PRAGMA temp_store = MEMORY",
)
_WRITER_PRAGMAS = (
    "PRAGMA cache_size = -65536",
    "PRAGMA journal_size_limit = 67108864",
)
_READER_PRAGMAS = (
    "PRAGMA cache_size = -16384",
    "PRAGMA mmap_size = 268435456",
    "PRAGMA query_only = 1",
)


# ---- week files ---------------------------------------------------------------------------------


def iso_week(when: dt.datetime | float) -> tuple[int, int]:
    """ISO (year, week) of a UTC datetime or Unix seconds."""
    if not isinstance(when, dt.datetime):
        when = dt.datetime.fromtimestamp(when, tz=dt.UTC)
    year, week, _ = when.isocalendar()
    return year, week


def week_filename(year: int, week: int) -> str:
    return f"bets_{year:04d}_{week:02d}.db"


def parse_week_filename(name: str) -> tuple[int, int] | None:
    m = _WEEK_RE.fullmatch(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def list_week_files(db_dir: Path) -> list[Path]:
    """Every week file in `db_dir`, oldest first."""
    if not db_dir.is_dir():
        return []
    files = [p for p in db_dir.iterdir() if parse_week_filename(p.name)]
    return sorted(files, key=lambda p: parse_week_filename(p.name) or (0, 0))


def current_week_file(db_dir: Path) -> Path | None:
    """The read-write week file named by CURRENT, or None before the first start."""
    try:
        name = (db_dir / CURRENT_POINTER).read_text().strip()
    except FileNotFoundError:
        return None
    if not parse_week_filename(name):
        raise RuntimeError(f"{db_dir / CURRENT_POINTER} names {name!r}, which is not a week file")
    return db_dir / name


def set_current_week_file(db_dir: Path, path: Path) -> None:
    """Point CURRENT at `path` atomically and durably: a crash leaves the old or the new name."""
    write_atomic(db_dir / CURRENT_POINTER, (path.name + "\n").encode())


def prepare_database(
    db_dir: Path, now: float, synchronous: str = "FULL", autocheckpoint: bool = True
) -> Path:
    """Make sure the current week file exists and carries every migration; return its path.

    Run once per start (gunicorn's master in ``on_starting``, ``flask init-db``, test fixtures),
    never on a request path.
    """
    db_dir.mkdir(parents=True, exist_ok=True)
    path = current_week_file(db_dir)
    created = path is None
    if path is None:
        path = db_dir / week_filename(*iso_week(now))
    conn = connect(path, synchronous=synchronous, autocheckpoint=autocheckpoint)
    try:
        migrate(conn)
        conn.execute("INSERT OR IGNORE INTO week_meta (key, value) VALUES ('week', ?)", (path.stem[5:],))
    finally:
        conn.close()
    if created:
        set_current_week_file(db_dir, path)
        log.info("created week file %s", path)
    return path


# ---- connections and migrations ----------------------------------------------------------------


def connect(
    path: Path, *, readonly: bool = False, synchronous: str = "FULL", autocheckpoint: bool = True
) -> apsw.Connection:
    """Open a connection with the project's pragmas. `readonly` connections refuse writes (query_only).

    `autocheckpoint=False` for every writing connection while Litestream replicates (it owns the
    checkpoints; see the pragma notes above)."""
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_URI
    if not readonly:
        flags |= apsw.SQLITE_OPEN_CREATE
    elif not path.exists():
        raise FileNotFoundError(path)
    conn = apsw.Connection(str(path), flags=flags)
    for pragma in _COMMON_PRAGMAS:
        conn.execute(pragma)
    if readonly:
        for pragma in _READER_PRAGMAS:
            conn.execute(pragma)
    else:
        mode = conn.execute("PRAGMA journal_mode = WAL").get
        if mode != "wal":
            raise RuntimeError(f"{path}: could not switch to WAL (got {mode})")
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        for pragma in _WRITER_PRAGMAS:
            conn.execute(pragma)
        if not autocheckpoint:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def migrations(sql_dir: Traversable = SQL_DIR) -> list[tuple[int, Traversable]]:
    """(version, file) for every ``NNN_name.sql`` in `sql_dir`, in order; versions must be 1..n."""
    found = []
    for p in sql_dir.iterdir():
        m = _MIGRATION_RE.fullmatch(p.name)
        if m:
            found.append((int(m.group(1)), p))
    found.sort(key=lambda vp: vp[0])
    for expected, (version, p) in enumerate(found, start=1):
        if version != expected:
            raise RuntimeError(f"migration {p.name}: expected version {expected:03d}")
    return found


def schema_version(conn: apsw.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").get)


def migrate(conn: apsw.Connection, sql_dir: Traversable = SQL_DIR) -> list[int]:
    """Apply every migration newer than ``user_version``, each in its own IMMEDIATE transaction.

    Idempotent: running it again applies nothing. Returns the versions applied.
    """
    applied = []
    for version, path in migrations(sql_dir):
        if version <= schema_version(conn):
            continue
        script = path.read_text()
        # IMMEDIATE takes the write lock before re-reading the version, so two processes starting
        # together (a SIGHUP overlap) cannot both apply the same migration.
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) >= version:
                conn.execute("ROLLBACK")
                continue
            conn.execute(script)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            if not conn.getautocommit():
                conn.execute("ROLLBACK")
            raise
        applied.append(version)
        log.info("applied migration %s", path.name)
    return applied


# ---- reads -------------------------------------------------------------------------------------

HISTORY_WEEKS = 4  # closed weeks kept local and attached read-only (older ones are archived)


def history_files(db_dir: Path, current: Path) -> list[Path]:
    """The closed week files attached for history: the `HISTORY_WEEKS` newest before `current`."""
    cur = parse_week_filename(current.name)
    older = [p for p in list_week_files(db_dir) if (parse_week_filename(p.name) or (0, 0)) < (cur or (0, 0))]
    return list(reversed(older))[:HISTORY_WEEKS]


def attach_history(conn: apsw.Connection, db_dir: Path, current: Path) -> list[str]:
    """ATTACH the previous weeks read-only as w1 (newest) … w4; returns the schema names."""
    names = []
    for i, path in enumerate(history_files(db_dir, current), start=1):
        conn.execute(f"ATTACH DATABASE ? AS w{i}", (f"file:{path}?mode=ro",))
        names.append(f"w{i}")
    return names


def week_schemas(conn: apsw.Connection) -> list[tuple[str, str]]:
    """(schema, week) for the current file (``main``) and every attached week, newest first."""
    out = []
    for _, name, _ in conn.execute("PRAGMA database_list"):
        if name == "main" or re.fullmatch(r"w[0-9]+", name):
            row = conn.execute(f"SELECT value FROM {name}.week_meta WHERE key = 'week'").fetchone()  # noqa: S608
            out.append((name, row[0] if row else name))
    return sorted(out, key=lambda item: (item[0] != "main", item[0]))


class ReadPool:
    """A few read-only connections to the current week file, used on the hub's threadpool.

    `run(fn)` checks out a connection (waiting cooperatively if all are busy), runs ``fn(conn)`` on a
    native thread (or on the hub, for a read an index bounds: `run`'s `inline`) and returns its
    result. Connections open lazily and re-open when CURRENT changes.

    CURRENT is checked when a connection is *taken* (issue 10 item 9): an idle connection opened
    before a rollover would otherwise answer one more read from the closed week. The check is one
    ``stat`` of CURRENT (~1 µs): the rollover replaces the file by rename, so its inode changes, and
    the file is only read again when it did.
    """

    def __init__(self, db_dir: Path, size: int = 4) -> None:
        self.db_dir = db_dir
        self.size = size
        self._idle: Queue = Queue()
        self._created = 0
        self._pointer_id: tuple[int, int, int] | None = None
        self._current: Path | None = None

    def current(self) -> Path:
        """The week file CURRENT names now, re-read only when CURRENT was replaced since last time."""
        try:
            st = os.stat(self.db_dir / CURRENT_POINTER)
        except FileNotFoundError:
            raise FileNotFoundError(f"no current week file in {self.db_dir}") from None
        pointer_id = (st.st_ino, st.st_mtime_ns, st.st_size)
        if pointer_id != self._pointer_id or self._current is None:
            path = current_week_file(self.db_dir)
            if path is None:
                raise FileNotFoundError(f"no current week file in {self.db_dir}")
            self._pointer_id, self._current = pointer_id, path
        return self._current

    def _open(self, path: Path) -> tuple[apsw.Connection, Path]:
        self._created += 1
        try:
            conn = connect(path, readonly=True)
            attach_history(conn, self.db_dir, path)
            return conn, path
        except BaseException:
            self._created -= 1
            raise

    def _checkout(self) -> tuple[apsw.Connection, Path]:
        current = self.current()
        while True:
            if self._idle.empty() and self._created < self.size:
                return self._open(current)
            conn, path = self._idle.get()
            if path == current:
                return conn, path
            conn.close()  # opened on a week that has been closed since
            self._created -= 1

    def _checkin(self, item: tuple[apsw.Connection, Path], broken: bool) -> None:
        conn, _ = item
        if broken:
            conn.close()
            self._created -= 1
        else:
            self._idle.put(item)

    @contextmanager
    def connection(self) -> Iterator[apsw.Connection]:
        """Check out a connection for inline use (CLI, tests). Greenlet code should prefer `run`."""
        item = self._checkout()
        broken = False
        try:
            yield item[0]
        except apsw.Error:
            broken = True
            raise
        finally:
            self._checkin(item, broken)

    def run(self, fn: Callable[[apsw.Connection], T], *, inline: bool = False) -> T:
        """``fn(conn)`` on a checked-out connection: on the hub's threadpool, or here if `inline`.

        `inline` is for a read that an index bounds and that finds its pages in the page cache (a
        trader's account and open bets, the newest page of a trader's rows): such a query costs SQLite
        5–70 µs, about what the thread hop costs the worker (an async watcher, the thread's wake-up,
        the GIL's hand-offs on one core). /me and /bets inline took 55–80 µs less of the worker's CPU a
        read on average, and answered sooner (BENCHMARKS.md, "Issue 12, seventh pass"). On the hub a
        read from disk would stall every socket, so anything that may be cold (a cursor's page, a bet
        by id from any week) or whose cost grows with the data (the console's sums, the resolver's
        scans, a filter no index serves) stays on the threadpool, where SQLite runs without the GIL
        and the hub goes on serving.
        """
        item = self._checkout()
        broken = False
        try:
            if inline:
                return fn(item[0])
            return gevent.get_hub().threadpool.apply(fn, (item[0],))
        except apsw.Error:
            broken = True
            raise
        finally:
            self._checkin(item, broken)

    def close(self) -> None:
        while not self._idle.empty():
            conn, _ = self._idle.get()
            conn.close()
            self._created -= 1


Cursor = tuple[str, int] | None  # (week, row id) to continue below


def across_weeks(conn: apsw.Connection, cursor: Cursor, limit: int, query) -> list[dict[str, Any]]:
    """Fill a page newest-first from the current week, then the attached ones; each row gets its week.

    `query(schema, is_current, before_id, n)` returns up to n row dicts of one week file.
    """
    schemas = week_schemas(conn)
    start, before = 0, None
    if cursor is not None:
        weeks = [w for _, w in schemas]
        if cursor[0] not in weeks:
            return []  # that week has been archived meanwhile: the history ends here
        start, before = weeks.index(cursor[0]), cursor[1]
    out: list[dict[str, Any]] = []
    for i, (schema, week) in enumerate(schemas[start:], start=start):
        rows = query(schema, schema == "main", before if i == start else None, limit - len(out))
        out += [r | {"week": week} for r in rows]
        if len(out) >= limit:
            break
    return out
