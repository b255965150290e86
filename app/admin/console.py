"""What the operator console shows (SPEC §8c), one reader per panel, each cached briefly.

The console refreshes about once a second; several operators may have it open. Every reader is cached
(`Cached`: one computation per period however many requests arrive, concurrent ones wait for it), SQLite
is read only through the read pool (native threads: the hub never blocks on a query) and Redis in one
pipelined round trip per panel. Nothing here runs on a tap's path.

Per-process figures (taps per second, writer latency, websocket clients, the feed as seen here) are
this worker's: gunicorn runs one worker, and in a SIGHUP overlap the answering worker's view is shown
(``worker`` in the overview names its pid, ``series_since`` its start: where its series begin).

The weeks panel's archive listing is the exception: it asks S3, which may take seconds or not answer,
so no request waits for it (`Refreshed`): the panel answers with the last listing, its age and the last
attempt's error, and a listing older than 30 s is redone in the background.

Money is a decimal string, ratios (realised return) a decimal string with 4 decimals, times Unix ms.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import gevent
import gevent.event

from app.admin.store import house_days, recent_betting_actions, utc_day
from app.bets.claims import EXPOSURE_GRACE_S
from app.bets.exposure import column_hashes, exposed_columns
from app.bets.resolution import BUCKETS, oldest_open_window
from app.errors import Unavailable
from app.services import Services
from app.storage.s3 import S3Patience
from app.units import MULT_ONE, format_money, format_multiplier, format_price

T = TypeVar("T")

log = logging.getLogger(__name__)

LARGEST_CELLS = 10
TRANSITIONS_SHOWN = 20
# The weeks panel's S3 requests, in the background listing (`Refreshed`): one attempt of a few seconds,
# not an archive run's patience (5 attempts of up to 120 s each), so the panel's age and error are fresh.
WEEKS_S3 = S3Patience(connect_timeout_s=2.5, read_timeout_s=2.5, attempts=1)
WEEKS_LISTING_TTL_S = 30.0  # a listing attempt at most this often (S3 LIST requests are billed)
LOCAL_WEEKS_TTL_S = 2.0  # this machine's week files: a directory listing and a few stat calls


def _interrupted() -> Unavailable:
    return Unavailable("The figures were being computed by a request that was interrupted; try again.")


class Cached(Generic[T]):
    """A value recomputed at most once per `ttl_s`; callers arriving during a computation wait for it.

    `clock` is the app's wall clock (frozen in tests), so a step back counts as expired: otherwise the
    value would be served, unmarked, until the clock caught up (an hour for an hour's step)."""

    def __init__(
        self, ttl_s: float, fn: Callable[[], T], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.fn = fn
        self.clock = clock
        self._value: T | None = None
        self._at = -1e18
        self._busy: gevent.event.AsyncResult | None = None

    def expire(self) -> None:
        """Recompute on the next `get` (e.g. after an action the panel shows)."""
        self._at = -1e18

    def get(self) -> T:
        # 0 <=: a wall clock stepped back must not keep a value for the length of the step
        if 0 <= self.clock() - self._at < self.ttl_s and self._value is not None:
            return self._value
        if self._busy is not None:
            return self._busy.get()
        self._busy = busy = gevent.event.AsyncResult()
        try:
            value = self.fn()
        except BaseException as exc:
            # Killed (a shutdown), the computing request ends; those waiting for it get a 503 to
            # retry, not its kill, which would end their requests without an answer.
            busy.set_exception(exc if isinstance(exc, Exception) else _interrupted())
            raise
        finally:
            self._busy = None
        self._value, self._at = value, self.clock()
        busy.set(value)
        return value


class RefreshFailed(Exception):
    """An expected failure of a `Refreshed` computation (e.g. S3 unreachable): its message is shown to the
    operator as it is and logged without a traceback."""


@dataclass(frozen=True)
class Snapshot(Generic[T]):
    """What a `Refreshed` holds when read: never computed on the reader's time."""

    value: T | None  # the last successful result; None: none yet
    at: float | None  # when it was obtained (the clock's seconds); None: never
    error: str | None  # why the last finished attempt failed; None: it succeeded, or none has finished
    refreshing: bool  # an attempt is running now


class Refreshed(Generic[T]):
    """A slow value that readers never wait for: `get` answers at once with the last result, its time, the
    last attempt's error and whether an attempt is running, and starts an attempt in a greenlet when the
    last one finished `ttl_s` ago or more (at most one at a time; a failed attempt also waits `ttl_s`, so
    an unreachable S3 is asked twice a minute, not once per poll).

    Why a greenlet spawned by the reading request rather than a worker loop in `workers/`: the listing is
    wanted only while someone looks at the console, so an idle console costs no S3 requests; `app/`
    needs nothing from `workers/`; `create_app()` starts nothing; and the greenlet lives for one attempt
    only (seconds: the S3 client's timeouts bound it). It is kept (`join`), and whatever it raises is
    logged and shown as `error`, never raised into a request. Killed (a worker's shutdown), it just ends:
    it only reads.
    """

    def __init__(self, ttl_s: float, fn: Callable[[], T], what: str, clock: Callable[[], float]) -> None:
        self.ttl_s = ttl_s
        self.fn = fn
        self.what = what
        self.clock = clock
        self._value: T | None = None
        self._at: float | None = None
        self._error: str | None = None
        self._tried_at: float | None = None
        self._greenlet: gevent.Greenlet | None = None

    def get(self) -> Snapshot[T]:
        running = self._greenlet is not None and not self._greenlet.ready()
        if not running and (self._tried_at is None or not 0 <= self.clock() - self._tried_at < self.ttl_s):
            self._greenlet = gevent.spawn(self._refresh)
            running = True
        return Snapshot(self._value, self._at, self._error, running)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the running attempt, if any (tests; a caller that wants the result now). True if
        none is running any more."""
        g = self._greenlet
        if g is None:
            return True
        g.join(timeout)
        return g.ready()

    def _refresh(self) -> None:
        try:
            value = self.fn()
        except RefreshFailed as exc:
            log.warning("console: %s failed: %s", self.what, exc)
            self._error = str(exc)
        except Exception as exc:
            log.exception("console: %s failed unexpectedly", self.what)
            detail = f"{type(exc).__name__}: {str(exc)[:300]}"
            self._error = f"{self.what} failed unexpectedly ({detail}); see the server log"
        else:
            self._value, self._at, self._error = value, self.clock(), None
        finally:
            self._tried_at = self.clock()


def ratio(num: int, den: int) -> str | None:
    """num/den as a decimal string with 4 decimals, floored (None when den is 0)."""
    if den <= 0:
        return None
    return (
        format_multiplier(num * MULT_ONE // den)
        if num >= 0
        else "-" + format_multiplier(-num * MULT_ONE // den)
    )


class Console:
    """The panels. One per app (`app.extensions`), built by `app.admin.routes`."""

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        clock = self._now
        self.resolver = Cached(1.0, self._resolver, clock)
        self.exposure = Cached(1.0, self._exposure, clock)
        self.house = Cached(2.0, self._house, clock)
        self.local_weeks = Cached(LOCAL_WEEKS_TTL_S, self._local_weeks, clock)
        self.archived = Refreshed(WEEKS_LISTING_TTL_S, self._archived, "the archive listing", clock)
        self.actions = Cached(1.0, self._actions, clock)
        self._archiver: Any = None

    def _now(self) -> float:
        """The app's clock, read at each call (`set_clock` may replace it: frozen in tests)."""
        return self.svc.clock()

    # ---- feed and breaker ------------------------------------------------------------------------
    def feed(self, window_s: int) -> dict[str, Any]:
        svc = self.svc
        tick = svc.feed.last_tick
        sources = []
        for s in svc.console.sources:
            sources.append(
                {
                    "source": s["source"],
                    "price": None if s.get("price") is None else format_price(s["price"]),
                    "age_s": None if s.get("age_s") is None else round(s["age_s"], 3),
                    "exchange_ts": s.get("exchange_ts"),
                    "fresh": s["fresh"],
                    "median": None if s.get("median") is None else format_price(s["median"]),
                    "deviation_ppm": s.get("deviation_ppm"),
                }
            )
        return {
            "breaker": svc.feed.snapshot(),
            "last_price": None if tick is None else format_price(tick.price),
            "last_tick_ts": None if tick is None else tick.ts,
            "sources": sources,
            "sources_at": svc.console.sources_at,
            "age_series": svc.console.age_series(window_s),
            "max_deviation": format_multiplier(svc.settings.feed_max_deviation),
            "transitions": list(svc.feed.transitions)[-TRANSITIONS_SHOWN:],
        }

    # ---- betting switch ------------------------------------------------------------------------------
    def betting(self) -> dict[str, Any]:
        svc = self.svc
        switch = svc.betting
        state = switch.state
        read_at = switch.read_at
        return {
            "open": state.open and svc.feed.betting_open(),
            "halted": not state.open,
            "reason": state.reason,
            "by": state.by,
            "at": state.at,
            "breaker_open": svc.feed.betting_open(),
            # The switch as this worker last read it from Redis: `read_error` set (or `read_age_s`
            # growing) means the state above is unconfirmed since `read_at` and may have changed.
            "read_at": read_at,
            "read_age_s": None if read_at is None else round(max(0, svc.now_ms() - read_at) / 1000, 3),
            "read_error": switch.read_error,
            "actions": self.actions.get(),
        }

    def _actions(self) -> list[dict[str, Any]]:
        return self.svc.reads.run(recent_betting_actions)

    # ---- writer and taps ---------------------------------------------------------------------------
    def writer(self, window_s: int) -> dict[str, Any]:
        svc = self.svc
        samples = list(svc.console.writer)[-window_s:]
        return {
            "queue_depth": svc.writes.depth(),
            "queue_max": svc.writes.maxsize,
            "batch_max": svc.settings.batch_max,
            "series": {
                "at": [s.at for s in samples],
                "commits": [s.commits for s in samples],
                "batch_mean": [round(s.items / s.commits, 2) if s.commits else None for s in samples],
                "commit_p50_ms": [s.p50_ms for s in samples],
                "commit_p99_ms": [s.p99_ms for s in samples],
                "queue_depth": [s.queue_depth for s in samples],
            },
        }

    def taps(self, window_s: int) -> dict[str, Any]:
        return self.svc.taps.series(self.svc.clock(), window_s)

    # ---- resolver -------------------------------------------------------------------------------------
    def _resolver(self) -> dict[str, Any]:
        svc = self.svc
        oldest = svc.reads.run(oldest_open_window)
        now_s = svc.clock()
        if oldest is None:
            return {"oldest_open_window": None, "lag_s": 0.0}
        lag = max(0.0, now_s - (oldest + svc.grid.column_seconds))
        return {"oldest_open_window": oldest, "lag_s": round(lag, 3)}

    # ---- exposure -------------------------------------------------------------------------------------
    def _exposure(self) -> dict[str, Any]:
        svc = self.svc
        s = svc.settings
        now_s = svc.clock()
        since = int(now_s) - EXPOSURE_GRACE_S - svc.grid.column_seconds
        cols = sorted(set(exposed_columns(svc.redis, since)) | set(svc.grid.placeable_columns(now_s)))
        hashes = column_hashes(svc.redis, cols)
        columns = []
        cells: list[tuple[int, int, int]] = []
        for t in cols:
            fields = hashes.get(t, {})
            total = fields.get("t", 0)
            col_cells = {int(k): v for k, v in fields.items() if k != "t" and v}
            if not total and not col_cells and t < svc.grid.column_of(now_s):
                continue  # a closed column with nothing open: not worth a line
            cells += [(v, t, row) for row, v in col_cells.items()]
            columns.append(
                {
                    "t_start": t,
                    "placeable": t in svc.grid.placeable_columns(now_s),
                    "closed": t + svc.grid.column_seconds <= now_s,
                    "liability": format_money(total),
                    "used": ratio(total, s.max_column_payout),
                    "cells": {str(row): format_money(v) for row, v in sorted(col_cells.items())},
                }
            )
        cells.sort(reverse=True)
        return {
            "cell_cap": format_money(s.max_cell_payout),
            "column_cap": format_money(s.max_column_payout),
            "total": format_money(sum(fields.get("t", 0) for fields in hashes.values())),
            "columns": columns,
            "largest_cells": [
                {
                    "cell": f"{t}:{row}",
                    "liability": format_money(v),
                    "used": ratio(v, s.max_cell_payout),
                    "band": [format_price(p) for p in svc.grid.band(row)],
                }
                for v, t, row in cells[:LARGEST_CELLS]
            ],
        }

    # ---- the house's result ---------------------------------------------------------------------------
    def _house(self) -> dict[str, Any]:
        svc = self.svc
        today = utc_day(svc.clock())
        rows = svc.reads.run(house_days)
        target = MULT_ONE - svc.settings.house_edge
        return {
            "target_return": format_multiplier(target),
            "today": _summary([r for r in rows if r[0] == today], day=today),
            "week": _summary(rows),
            "days": [_summary([r for r in rows if r[0] == d], day=d) for d in sorted({r[0] for r in rows})],
        }

    # ---- weeks ------------------------------------------------------------------------------------------
    def weeks(self) -> dict[str, Any]:
        """This machine's week files (read at most 2 s ago) and the archived weeks as of the last listing
        of the archive target, with its time (`listed_at`, `age_s`), the last attempt's `error` and
        whether one is running (`refreshing`). A failed attempt keeps the last good listing: the
        operator sees what was archived then and that it could not be checked since."""
        snap = self.archived.get()
        listed = snap.value
        return {
            "local": self.local_weeks.get(),
            "archived": [] if listed is None else listed["archived"],
            "target": None if listed is None else listed["target"],
            "listed_at": None if snap.at is None else int(snap.at * 1000),
            "age_s": None if snap.at is None else round(max(0.0, self.svc.clock() - snap.at), 3),
            "refreshing": snap.refreshing,
            "error": snap.error,
        }

    def _local_weeks(self) -> list[dict[str, Any]]:
        from app.storage.archive import local_listing

        return local_listing(self.svc.settings.db_dir)

    def _archived(self) -> dict[str, Any]:
        """The archive target's listing (in `Refreshed`'s greenlet, never on a request's time)."""
        from app.storage.archive import ArchiveError, Archiver, make_target

        try:
            if self._archiver is None:  # once: an S3 client costs ~0.1 s of CPU to build
                # A listing, not an upload: an unreachable S3 holds this greenlet ~2.5 s (WEEKS_S3).
                self._archiver = Archiver(self.svc.settings, make_target(self.svc.settings, WEEKS_S3))
            listing = self._archiver.listing()
        except ArchiveError as exc:
            raise RefreshFailed(str(exc)) from None
        return {
            "archived": [
                {k: a[k] for k in ("week", "compressed_size", "raw_size", "last_modified", "restored")}
                for a in listing["archived"]
            ],
            "target": listing["target"],
        }

    # ---- everything -------------------------------------------------------------------------------------
    def origin(self) -> dict[str, int]:
        """Which worker answered and where its per-process series (taps, writer) begin: its seconds
        before are 0 because it did not see them (a SIGHUP's new worker), not because nothing happened.
        In the overview and in the taps and writer panels' own routes, so a console polling only those
        can tell too."""
        return {"worker": os.getpid(), "series_since": int(self.svc.started_at * 1000)}

    def overview(self, window_s: int, integrity: dict[str, Any] | None) -> dict[str, Any]:
        svc = self.svc
        return {
            "server_time": svc.now_ms(),
            **self.origin(),
            "feed": self.feed(window_s),
            "betting": self.betting(),
            "writer": self.writer(window_s),
            "taps": self.taps(window_s),
            "websocket": {"clients": len(svc.fanout)},
            "resolver": self.resolver.get(),
            "exposure": self.exposure.get(),
            "house": self.house.get(),
            "weeks": self.weeks(),
            "integrity": integrity,
        }


def _summary(rows: list[tuple], day: str | None = None) -> dict[str, Any]:
    """Totals and per-bucket figures of house_days rows (day, bucket, bets, won, staked, paid, voided,
    refunded): the house's result (staked − paid) and the realised return to players (paid / staked)."""

    def block(rs: list[tuple]) -> dict[str, Any]:
        bets = sum(r[2] for r in rs)
        won = sum(r[3] for r in rs)
        staked = sum(r[4] for r in rs)
        paid = sum(r[5] for r in rs)
        return {
            "bets": bets,
            "won": won,
            "staked": format_money(staked),
            "paid": format_money(paid),
            "house_result": format_money(staked - paid),
            "realised_return": ratio(paid, staked),
            "voided": sum(r[6] for r in rs),
            "refunded": format_money(sum(r[7] for r in rs)),
        }

    out = block(rows)
    out["buckets"] = {name: block([r for r in rows if r[1] == name]) for name, _ in BUCKETS}
    if day is not None:
        out["day"] = day
    return out
