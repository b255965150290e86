"""A bet desk with nothing left to chance: only the SQLite writer runs, the app's clock is frozen, the
feed has one tick (and a monitor that never ages it) and the quote book is pinned by the test (no sim
feed, no grid publisher racing it). Used by the bet-path fault tests (issue 10: items 3, 5, 6, 12, 13, 15, 16)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app.config import Settings
from app.market.feed import FeedMonitor
from app.market.prices import Tick
from app.market.quotes import SECONDS_PER_YEAR, QuoteBook
from app.services import Services, services, set_clock
from tests.support.auth import FakeClock
from tests.support.traders import Trader
from workers.resolver import Resolver
from workers.sqlite_writer import SqliteWriter
from workers.supervisor import Supervisor

PRICE = 6_700_005  # cents: the middle of row 6700 with the default 10.00 step


@dataclass
class Desk:
    app: Flask
    svc: Services
    clock: FakeClock

    def pin_book(self, *, age_s: float = 0.0, tick_age_s: float = 0.0, price: int = PRICE) -> QuoteBook:
        """A book built `age_s` ago (app clock) from a tick `tick_age_s` older than that build."""
        s = self.svc.settings
        built = self.clock() - age_s
        sigma = s.quote_prior_vol / 10_000 / math.sqrt(SECONDS_PER_YEAR)
        tick_ts = int((built - tick_age_s) * 1000)
        self.svc.feed.record(Tick(price=price, ts=tick_ts))
        book = QuoteBook.build(self.svc.grid, price, sigma, 0.25, s.house_edge, now=built, tick_ts=tick_ts)
        self.svc.quotes.book = book
        return book

    def cell(self, col: int = 0, row_offset: int = 0) -> str:
        """A placeable cell: column `col` of the placeable ones, `row_offset` rows from the price."""
        cols = list(self.svc.grid.placeable_columns(self.clock()))
        return f"{cols[col]}:{self.svc.grid.row_of(PRICE) + row_offset}"

    def resolver(self, column_s: int = 5, critical_s: float = 10) -> Resolver:
        """A resolver on this desk's services (not started: call `settle_window` or `resolve_due`)."""
        svc = self.svc
        return Resolver(
            svc.redis,
            svc.reads,
            svc.writes,
            column_s=column_s,
            critical_s=critical_s,
            notifier=svc.bet_notifier,
        )

    def nonces_with_a_bet(self) -> int:
        """Nonce keys that name an accepted bet (``<fingerprint>|<bet id>``); a refusal after the nonce
        step leaves ``<fingerprint>|`` (app.bets.claims)."""
        r = self.svc.redis
        return sum(1 for k in r.scan_iter("tap:bn:*", count=1000) if not (r.get(k) or b"|").endswith(b"|"))

    def trader(self, deposit: str | None = "100") -> Trader:
        t = Trader(self.app.test_client(), self.svc.settings).login()
        if deposit:
            t.deposit(deposit)
        return t


def frozen_feed(s: Settings) -> FeedMonitor:
    """A feed monitor whose time stands still: the desk's one tick never ages into DEGRADED (3 s) or
    CRITICAL (10 s, which latches and refuses every bet), however long a test takes on a slow machine.
    Tests of the breaker itself use their own monitor (test_feed_breaker.py)."""
    return FeedMonitor(s.feed_degraded_s, s.feed_critical_s, s.feed_recovery_s, clock=lambda: 0.0)


def desk_settings(tmp_path: Path, redis_url: str, **overrides: Any) -> Settings:
    """The desk's settings, with a module's own `overrides`. Rate limits off unless overridden: the
    frozen clock puts every request in the same second."""
    return Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        dev_mode=True,
        **{"rate_per_address": 0, "rate_per_ip": 0, **overrides},
    )


@pytest.fixture(name="settings")
def settings_fixture(tmp_path, redis_url) -> Settings:
    return desk_settings(tmp_path, redis_url)


@pytest.fixture(name="desk")
def desk_fixture(app: Flask) -> Desk:
    svc = services(app)
    clock = FakeClock()
    set_clock(app, clock)
    sup = Supervisor()
    s = svc.settings
    sup.start(SqliteWriter(svc.writes, s.db_dir, synchronous=s.sqlite_synchronous, batch_max=s.batch_max))
    svc.feed = frozen_feed(s)
    d = Desk(app, svc, clock)
    d.pin_book()
    yield d
    sup.stop(timeout=5)
