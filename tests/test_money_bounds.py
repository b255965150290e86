"""Issue 10 item 13: money (and multipliers) past 64 bits are a 400 with a code at parsing, before any
other work — not an OverflowError in the writer or in the pending record's JSON."""

from __future__ import annotations

import pytest

from app.units import UnitError, parse_money, parse_multiplier
from tests.support.pinned import Desk, desk_fixture, settings_fixture  # noqa: F401 - fixtures


def test_parse_money_bounds() -> None:
    assert parse_money("1000000000") == 10**15
    for raw in ("1000000000.000001", "9223372036854.775808", "18446744073709.551616", "999999999999999999"):
        with pytest.raises(UnitError, match="at most"):
            parse_money(raw)
    with pytest.raises(UnitError, match="at most"):
        parse_multiplier("999999999999999999")


def test_withdrawal_past_64_bits_is_400(desk: Desk) -> None:
    t = desk.trader()
    status, body, _ = t.call("POST", "/api/v1/withdrawals", {"amount": "9223372036854.775808"})
    assert status == 400, body
    assert body["error"]["code"] == "invalid_amount"
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == "100"


def test_deposit_past_64_bits_is_400(desk: Desk) -> None:
    t = desk.trader(deposit=None)
    status, body, _ = t.call("POST", "/api/v1/deposits", {"amount": "18446744073709.551616"})
    assert status == 400 and body["error"]["code"] == "invalid_amount", body


def test_signed_bet_with_a_stake_past_64_bits_is_400(desk: Desk) -> None:
    t = desk.trader()
    status, body, _ = t.bet(desk.cell(), "18446744073709.551616", "1.01", ts=desk.clock.ms)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_stake"


def test_signed_bet_with_a_huge_min_multiplier_is_400(desk: Desk) -> None:
    t = desk.trader()
    status, body, _ = t.bet(desk.cell(), "1", "922337203685477.5808", ts=desk.clock.ms)
    assert status == 400, body
    assert body["error"]["code"] == "invalid_min_multiplier"
