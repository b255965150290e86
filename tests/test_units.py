import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.units import (
    UnitError,
    format_money,
    format_price,
    parse_money,
    parse_multiplier,
    parse_price,
    payout_for,
)


@pytest.mark.parametrize(
    ("wire", "micro"),
    [("10", 10_000_000), ("2.5", 2_500_000), ("0.000001", 1), ("123456.123456", 123_456_123_456)],
)
def test_money_round_trip(wire, micro):
    assert parse_money(wire) == micro
    assert format_money(micro) == wire


@pytest.mark.parametrize(
    "bad",
    [10, 2.5, None, "", "-1", "+1", "1e3", "01", "1.", ".5", "0", "0.0", "1.0000001", " 1", "1 ", "NaN", "٣"],
)
def test_money_rejects_anything_but_a_plain_positive_decimal_string(bad):
    with pytest.raises(UnitError):
        parse_money(bad)


def test_prices_have_two_decimals_on_the_wire():
    assert parse_price("67123.45") == 6_712_345
    assert format_price(6_712_340) == "67123.40"
    assert format_price(6_700_000) == "67000.00"
    with pytest.raises(UnitError):
        parse_price("1.234")


def test_payout_is_floored_in_micro_units():
    stake = parse_money("0.000003")
    mult = parse_multiplier("3.3333")
    assert payout_for(stake, mult) == 9  # 3 * 3.3333 = 9.9999 -> 9
    assert payout_for(parse_money("10"), parse_multiplier("2.5")) == 25_000_000


@given(st.integers(min_value=1, max_value=10**15))
def test_money_format_parse_inverse(micro):
    assert parse_money(format_money(micro)) == micro
