"""Bet placement through the real app in-process (writer, sim feed and grid publisher running)."""

import time

import gevent
import pytest
from flask import Flask

from app.config import Settings
from app.services import services, set_clock
from tests.support.traders import Trader


@pytest.fixture
def settings(tmp_path, redis_url):
    # quote_max_age_s: on a starved test machine the in-process sim feed can stall for seconds, and a
    # tap would rightly get 503 quotes_stale; staleness has its own tests (test_quote_staleness.py).
    return Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        redis_url=redis_url,
        dev_mode=True,
        rate_per_address=0,
        rate_per_ip=0,
        quote_max_age_s=30,
    )


@pytest.fixture
def live(running_app: Flask) -> Flask:
    """The running app with its clock frozen two columns after the first quote book's instant.

    The grid lists the columns placeable at the frozen clock (the publisher builds its books on the
    app's clock, so on this one from then on), and the placeable check uses it too: a cell the test
    read from the grid stays placeable however long the machine takes to send it, so no test races a
    column boundary. Frozen ahead of the sim's ticks, not at them: a tap is also judged at the newest
    tick's time when that is later than the clock (a wall clock stepped back), which the sim's
    ticks become only once the real time has passed the frozen one, at least ten seconds on.
    """
    svc = services(running_app)
    deadline = time.monotonic() + 10
    while svc.quotes.book is None and time.monotonic() < deadline:
        gevent.sleep(0.05)
    book = svc.quotes.book
    assert book is not None, "no quote book: is the sim feed running?"
    frozen = book.now + 2 * svc.grid.column_seconds
    set_clock(running_app, lambda: frozen)
    return running_app


@pytest.fixture
def trader(live, settings) -> Trader:
    t = Trader(live.test_client(), settings, clock=services(live).clock).login()
    t.deposit("100")
    return t


def _grid(trader):
    status, grid, _ = trader.call("GET", "/api/v1/grid")
    assert status == 200
    return grid


def _cell(grid, col=0, row_offset=0):
    rows = grid["rows"]
    return f"{grid['columns'][col]}:{rows[len(rows) // 2 + row_offset]}"


def _wait_status(trader, bet_id, want=("confirmed", "rejected"), timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = trader.call("GET", f"/api/v1/bets/{bet_id}")
        assert status == 200, body
        if body["status"] in want:
            return body
        gevent.sleep(0.02)
    pytest.fail(f"bet {bet_id} still {body['status']}")


def test_accepted_bet_is_pending_then_confirmed_with_ledger_row(trader):
    grid = _grid(trader)
    cell = _cell(grid, col=1, row_offset=3)
    status, body, _ = trader.bet(cell, "10", "1.01")
    assert status == 202, body
    assert body["status"] == "pending" and body["cell"] == cell and body["stake"] == "10"
    mult = body["multiplier"]
    assert int(body["payout"].split(".")[0]) >= 10
    confirmed = _wait_status(trader, body["bet_id"])
    assert confirmed["status"] == "confirmed" and confirmed["multiplier"] == mult
    _, me, _ = trader.call("GET", "/api/v1/me")
    assert me["balance"] == "90" and me["open_stakes"] == "10" and me["open_bets"] == 1
    _, ledger, _ = trader.call("GET", "/api/v1/ledger")
    assert [(e["ref_type"], e["amount"], e["balance_after"]) for e in ledger["entries"]] == [
        ("bet", "-10", "90"),
        ("deposit", "100", "100"),
    ]
    assert ledger["entries"][0]["ref_id"] == body["bet_id"]


def test_quote_comes_from_the_grid_the_trader_saw(trader):
    grid = _grid(trader)
    i, j = 3, 14
    cell = f"{grid['columns'][i]}:{grid['rows'][j]}"
    shown = grid["quotes"][i][j]
    status, body, _ = trader.bet(cell, "1", "1.01")
    assert status == 202, body
    # the book may have been rebuilt on a newer tick in between; it is the same function of the same feed
    assert abs(float(body["multiplier"]) - float(shown)) / float(shown) < 0.5


def test_second_tap_on_a_cell_is_refused(trader):
    cell = _cell(_grid(trader), col=2)
    assert trader.bet(cell, "1")[0] == 202
    status, body, _ = trader.bet(cell, "1")
    assert status == 409 and body["error"]["code"] == "duplicate_cell"


def test_same_nonce_same_body_is_the_same_bet(trader):
    cell = _cell(_grid(trader), col=3)
    body = trader.bet_body(cell, "2")
    s1, b1, _ = trader.call("POST", "/api/v1/bets", body)
    s2, b2, _ = trader.call("POST", "/api/v1/bets", body)
    assert s1 == s2 == 202
    assert b2["bet_id"] == b1["bet_id"]
    _wait_status(trader, b1["bet_id"])
    s3, b3, _ = trader.call("POST", "/api/v1/bets", body)
    assert s3 == 202 and b3["bet_id"] == b1["bet_id"] and b3["status"] == "confirmed"
    _, me, _ = trader.call("GET", "/api/v1/me")
    assert me["balance"] == "98"  # charged once


def test_same_nonce_different_body_is_409(trader):
    grid = _grid(trader)
    first = trader.bet_body(_cell(grid, col=4), "1", nonce="fixednonce1")
    assert trader.call("POST", "/api/v1/bets", first)[0] == 202
    second = trader.bet_body(_cell(grid, col=5), "1", nonce="fixednonce1")
    status, body, _ = trader.call("POST", "/api/v1/bets", second)
    assert status == 409 and body["error"]["code"] == "nonce_conflict"


def test_a_nonce_refused_after_the_nonce_step_is_used_for_its_body_only(trader):
    """SPEC §6: the nonce is taken at step 5, before the business rules. A bet they refuse may be sent
    again as it was (judged afresh); the same nonce on another body is 409."""
    grid = _grid(trader)
    small = trader.bet_body(_cell(grid, col=4, row_offset=1), "0.000001", nonce="refusednonce1")
    status, body, _ = trader.call("POST", "/api/v1/bets", small)
    assert status == 422 and body["error"]["code"] == "stake_too_small", body
    other = trader.bet_body(_cell(grid, col=4, row_offset=1), "1", nonce="refusednonce1")
    status, body, _ = trader.call("POST", "/api/v1/bets", other)
    assert status == 409 and body["error"]["code"] == "nonce_conflict", body
    status, body, _ = trader.call("POST", "/api/v1/bets", small)
    assert status == 422 and body["error"]["code"] == "stake_too_small", body
    fresh = trader.bet_body(_cell(grid, col=4, row_offset=1), "1")  # a new nonce: nothing was held
    assert trader.call("POST", "/api/v1/bets", fresh)[0] == 202


def test_insufficient_funds_is_rejected_after_acceptance_and_frees_the_cell(trader):
    cell = _cell(_grid(trader), col=6)
    status, body, _ = trader.bet(cell, "500")
    assert status == 202
    rejected = _wait_status(trader, body["bet_id"])
    assert rejected["status"] == "rejected" and rejected["reason"] == "insufficient_funds"
    _, me, _ = trader.call("GET", "/api/v1/me")
    assert me["balance"] == "100"
    gevent.sleep(0.1)  # the rejection has freed the cell
    status, body, _ = trader.bet(cell, "5")
    assert status == 202, body


@pytest.mark.parametrize(
    ("stake", "min_mult", "code", "http"),
    [
        (10, "1.01", "invalid_request", 400),  # a number where a string is expected
        ("10.0000001", "1.01", "invalid_stake", 400),
        ("-1", "1.01", "invalid_stake", 400),
        ("0", "1.01", "invalid_stake", 400),
        ("1e2", "1.01", "invalid_stake", 400),
        ("10", "1.00001", "invalid_min_multiplier", 400),
        ("10", 2, "invalid_request", 400),
        ("0.5", "1.01", "stake_too_small", 422),
        ("1000.000001", "1.01", "stake_too_large", 422),
        ("10", "100.0000", "multiplier_below_minimum", 422),
    ],
)
def test_bad_amounts(trader, stake, min_mult, code, http):
    cell = _cell(_grid(trader), col=7)
    body = trader.bet_body(cell, str(stake), str(min_mult))
    body["stake"], body["min_multiplier"] = stake, min_mult
    status, resp, _ = trader.call("POST", "/api/v1/bets", body)
    assert (status, resp["error"]["code"]) == (http, code), resp


@pytest.mark.parametrize(
    ("col_offset", "row_offset", "code"),
    [
        (-3, 0, "cell_too_soon"),
        (0, 0, "cell_too_soon"),
        (1, 0, "cell_too_soon"),
        (12, 0, "cell_too_far"),
        (4, 15, "row_out_of_range"),  # 5 bands past the edge: a tick moving the price cannot change it
        (4, -15, "row_out_of_range"),
    ],
)
def test_non_placeable_cells(trader, live, col_offset, row_offset, code):
    spec = services(live).grid
    now_col = spec.column_of(services(live).clock())
    row = services(live).quotes.book.current_row + row_offset
    status, body, _ = trader.bet(f"{now_col + col_offset * spec.column_seconds}:{row}", "1")
    assert status == 422 and body["error"]["code"] == code, body


def test_checks_run_in_spec_order(trader, live, monkeypatch):
    """A bad signature wins over a bad cell; a reused nonce wins over a suspended feed."""
    grid = _grid(trader)
    body = trader.bet_body("5:1", "1")  # a past cell
    body["signature"] = trader.bet_body("5:1", "2")["signature"]
    status, resp, _ = trader.call("POST", "/api/v1/bets", body)
    assert status == 401
    ok = trader.bet_body(_cell(grid, col=8), "1")
    assert trader.call("POST", "/api/v1/bets", ok)[0] == 202
    monkeypatch.setattr(services(live).feed, "betting_open", lambda: False)  # the breaker is open
    status, resp, headers = trader.call("POST", "/api/v1/bets", ok)
    assert status == 202  # the retry is answered from the nonce before the breaker
    status, resp, headers = trader.bet(_cell(grid, col=9), "1")
    assert status == 503 and resp["error"]["code"] == "betting_suspended" and headers["Retry-After"]


def test_the_schema_is_checked_before_the_session(trader, live):
    """SPEC §6: schema → session. A malformed body is 400 with or without a token; a well-formed one
    without a token is 401."""
    bad = {"cell": 5, "stake": "1"}
    for headers in ({}, {"Authorization": "Bearer " + "a" * 43}):
        resp = trader.client.post("/api/v1/bets", json=bad, headers=headers)
        assert resp.status_code == 400, resp.get_json()
    good = trader.bet_body(_cell(_grid(trader), col=8), "1")
    resp = trader.client.post("/api/v1/bets", json=good)
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (401, "missing_authorization")


def test_other_peoples_bets(trader, live, settings):
    cell = _cell(_grid(trader), col=5, row_offset=-2)
    _, body, _ = trader.bet(cell, "1")
    other = Trader(live.test_client(), settings, clock=services(live).clock).login()
    status, resp, _ = other.call("GET", f"/api/v1/bets/{body['bet_id']}")
    assert status == 403 and resp["error"]["code"] == "not_your_bet"
    status, resp, _ = other.call("GET", "/api/v1/bets/ffffffffffffffffffffff")
    assert status == 404 and resp["error"]["code"] == "bet_not_found"


def test_history_pages_with_a_cursor_and_filters(trader):
    grid = _grid(trader)
    ids = []
    for col in range(5):
        status, body, _ = trader.bet(_cell(grid, col=col, row_offset=-5), "1")
        assert status == 202, body
        ids.append(body["bet_id"])
    for bet_id in ids:
        _wait_status(trader, bet_id)
    _, page1, _ = trader.call("GET", "/api/v1/bets?limit=2")
    _, page2, _ = trader.call("GET", f"/api/v1/bets?limit=2&cursor={page1['next_cursor']}")
    _, page3, _ = trader.call("GET", f"/api/v1/bets?limit=2&cursor={page2['next_cursor']}")
    seen = [b["bet_id"] for p in (page1, page2, page3) for b in p["bets"]]
    assert seen == list(reversed(ids)) and page3["next_cursor"] is None
    _, won, _ = trader.call("GET", "/api/v1/bets?status=won")
    assert won["bets"] == []
    for query, code in (
        ("status=maybe", "invalid_status"),
        ("status=", "invalid_status"),  # empty is a bad value, not "every status"
        ("cursor=zzz", "invalid_cursor"),
        ("limit=0", "invalid_limit"),
        ("limit=x", "invalid_limit"),
        ("limit=%C2%B2", "invalid_limit"),  # "²": str.isdigit() says yes, int() says no
        ("limit=%D9%A3", "invalid_limit"),  # "٣": int() reads 3
        ("limit=" + "9" * 5000, "invalid_limit"),  # past int()'s 4,300 digits
    ):
        status, resp, _ = trader.call("GET", f"/api/v1/bets?{query}")
        assert status == 400 and resp["error"]["code"] == code


def test_withdrawal_is_a_conditional_deduction(trader):
    status, body, _ = trader.call("POST", "/api/v1/withdrawals", {"amount": "30.5"})
    assert status == 200 and body["balance"] == "69.5"
    status, body, _ = trader.call("POST", "/api/v1/withdrawals", {"amount": "69.500001"})
    assert status == 422 and body["error"]["code"] == "insufficient_funds"
    status, body, _ = trader.call("POST", "/api/v1/withdrawals", {"amount": 5})
    assert status == 400
    _, ledger, _ = trader.call("GET", "/api/v1/ledger")
    assert [e["amount"] for e in ledger["entries"]] == ["-30.5", "100"]


def test_deposits_need_dev_mode(tmp_path, redis_url):
    from app import create_app
    from app.storage.db import prepare_database
    from workers import runtime

    s = Settings.from_env({}, data_dir=tmp_path / "prod", redis_url=redis_url, dev_mode=False)
    prepare_database(s.db_dir, time.time())
    app = create_app(s)
    runtime.start(app)
    try:
        t = Trader(app.test_client(), s).login()
        status, body, _ = t.call("POST", "/api/v1/deposits", {"amount": "10"})
        assert status == 403 and body["error"]["code"] == "dev_mode_only"
    finally:
        runtime.stop(app)


def test_integrity_check_passes_after_activity_and_names_tampered_rows(trader, live, runner):
    grid = _grid(trader)
    for col in range(3):
        _, body, _ = trader.bet(_cell(grid, col=col, row_offset=4), "3")
        _wait_status(trader, body["bet_id"])
    result = runner.invoke(args=["integrity-check"])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output
    services(live).writes.call(lambda conn: conn.execute("UPDATE users SET balance = balance + 1"))
    result = runner.invoke(args=["integrity-check"])
    assert result.exit_code == 1
    assert "balance_mismatch" in result.output and trader.address in result.output


def test_a_refused_request_can_be_retried_with_the_same_signature(trader, live, monkeypatch):
    """503 betting_suspended says "retry after": the same signed body is judged afresh, and accepted
    once betting reopens; a nonce that was *accepted* can never produce a second bet."""
    grid = _grid(trader)
    body = trader.bet_body(_cell(grid, col=7, row_offset=2), "1")
    feed = services(live).feed
    with monkeypatch.context() as m:
        m.setattr(feed, "betting_open", lambda: False)  # the breaker is open for this one request
        status, resp, _ = trader.call("POST", "/api/v1/bets", body)
        assert status == 503 and resp["error"]["code"] == "betting_suspended"
    status, first, _ = trader.call("POST", "/api/v1/bets", body)
    assert status == 202, first
    status, again, _ = trader.call("POST", "/api/v1/bets", body)
    assert status == 202 and again["bet_id"] == first["bet_id"]
