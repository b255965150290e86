"""Issue 10 item 6: a tap is refused when the quote book, or the price behind it, is older than
TAP_QUOTE_MAX_AGE_S (default 2 s) — in DEGRADED the book is rebuilt every second from the last price,
so its build time alone says nothing about the price."""

from __future__ import annotations

from tests.support.pinned import Desk, desk_fixture, settings_fixture  # noqa: F401 - fixtures


def _tap(desk: Desk, trader, cell: str):
    return trader.bet(cell, "1", "1.01", ts=desk.clock.ms)


def test_fresh_book_is_accepted(desk: Desk) -> None:
    t = desk.trader()
    desk.pin_book(age_s=0.5, tick_age_s=1.0)
    status, body, _ = _tap(desk, t, desk.cell())
    assert status == 202, body


def test_book_built_from_an_old_price_is_refused(desk: Desk) -> None:
    """DEGRADED: the book was rebuilt just now, but from a tick 2.5 s old."""
    t = desk.trader()
    desk.pin_book(age_s=0.0, tick_age_s=2.5)
    assert desk.svc.feed.betting_open()
    status, body, headers = _tap(desk, t, desk.cell())
    assert status == 503, body
    assert body["error"]["code"] == "quotes_stale"
    assert int(headers["Retry-After"]) >= 1


def test_book_not_rebuilt_is_refused(desk: Desk) -> None:
    """A stalled grid publisher: the book (and its tick) are 3 s old."""
    t = desk.trader()
    desk.pin_book(age_s=3.0, tick_age_s=0.0)
    status, body, _ = _tap(desk, t, desk.cell())
    assert status == 503 and body["error"]["code"] == "quotes_stale", body


def test_refused_stale_tap_leaves_no_claim(desk: Desk) -> None:
    """The same signed body is judged afresh once quotes are fresh again (like betting_suspended)."""
    t = desk.trader()
    desk.pin_book(age_s=0.0, tick_age_s=5.0)
    body = t.bet_body(desk.cell(), "1", ts=desk.clock.ms)
    assert t.call("POST", "/api/v1/bets", body)[0] == 503
    desk.pin_book()
    status, out, _ = t.call("POST", "/api/v1/bets", body)
    assert status == 202, out


def test_max_age_is_a_setting(tmp_path, redis_url) -> None:
    from app.config import Settings

    assert Settings.from_env({}, data_dir=tmp_path, redis_url=redis_url).quote_max_age_s == 2.0
    s = Settings.from_env({"TAP_QUOTE_MAX_AGE_S": "0.5"}, data_dir=tmp_path, redis_url=redis_url)
    assert s.quote_max_age_s == 0.5
