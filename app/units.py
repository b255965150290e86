"""Wire ⇄ integer conversions for money, prices and multipliers (SPEC §2).

Money never touches a float: every value on the wire is a decimal *string*, parsed with a regex
into an integer count of the smallest unit. Anything else (a JSON number, an exponent, too many
decimals, a sign where none is allowed, a value past its bound) is refused with `UnitError`, which the
API turns into a 400.
"""

from __future__ import annotations

import re

MONEY_DECIMALS = 6  # micro-units
PRICE_DECIMALS = 2  # cents
MULTIPLIER_DECIMALS = 4  # 1e-4 units

MICRO = 10**MONEY_DECIMALS
CENT = 10**PRICE_DECIMALS
MULT_ONE = 10**MULTIPLIER_DECIMALS

# Upper bounds at parsing, far below 2**63 so that every product the server forms from them (a
# payout = stake × a quoted multiplier of at most 100, a balance plus a deposit) still fits SQLite's
# and orjson's signed 64-bit integers. Anything larger is refused as bad input (400) before any other
# work, instead of an OverflowError deep in the writer or in a pending record's JSON (issue 10 item 13).
MAX_MONEY = 10**9 * MICRO  # one billion per value: stakes, deposits, withdrawals, limits
MAX_PRICE = 10**13 * CENT  # prices in cents
MAX_MULTIPLIER = 10**6 * MULT_ONE  # a client's minimum multiplier; quotes never exceed 100

_DECIMAL_RE = re.compile(r"(0|[1-9][0-9]{0,17})(?:\.([0-9]+))?")


class UnitError(ValueError):
    """A wire value that is not a well-formed decimal string of the expected precision."""


def parse_decimal(
    value: object,
    decimals: int,
    what: str = "value",
    *,
    allow_zero: bool = False,
    max_scaled: int | None = None,
) -> int:
    """Parse a non-negative decimal string into an integer scaled by 10**decimals.

    Strict by design: no leading '+', no exponent, no whitespace, no leading zeros, at most
    `decimals` fractional digits. Zero is refused unless `allow_zero`; more than `max_scaled` too.
    """
    if not isinstance(value, str):
        raise UnitError(f'{what} must be a decimal string, e.g. "10" or "2.5"')
    m = _DECIMAL_RE.fullmatch(value)
    if m is None:
        raise UnitError(f"{what} must be a plain non-negative decimal string, got {value[:40]!r}")
    whole, frac = m.group(1), m.group(2) or ""
    if m.group(2) is not None and frac == "":
        raise UnitError(f"{what} has a trailing decimal point")
    if len(frac) > decimals:
        raise UnitError(f"{what} has more than {decimals} decimals")
    scaled = int(whole) * 10**decimals + (int(frac.ljust(decimals, "0")) if frac else 0)
    if scaled == 0 and not allow_zero:
        raise UnitError(f"{what} must be greater than zero")
    if max_scaled is not None and scaled > max_scaled:
        raise UnitError(f"{what} must be at most {format_decimal(max_scaled, decimals)}")
    return scaled


def format_decimal(scaled: int, decimals: int, *, min_decimals: int = 0) -> str:
    """Format an integer scaled by 10**decimals, trimming trailing zeros down to `min_decimals`."""
    if not isinstance(scaled, int) or isinstance(scaled, bool):
        raise TypeError("format_decimal takes an int")
    sign = "-" if scaled < 0 else ""
    whole, frac = divmod(abs(scaled), 10**decimals)
    frac_s = str(frac).rjust(decimals, "0").rstrip("0")
    frac_s = frac_s.ljust(min_decimals, "0")
    return f"{sign}{whole}.{frac_s}" if frac_s else f"{sign}{whole}"


def parse_money(value: object, what: str = "amount") -> int:
    """Micro-units, at most `MAX_MONEY`."""
    return parse_decimal(value, MONEY_DECIMALS, what, max_scaled=MAX_MONEY)


def format_money(micro: int) -> str:
    return format_decimal(micro, MONEY_DECIMALS)


def parse_price(value: object, what: str = "price") -> int:
    """Cents, at most `MAX_PRICE`."""
    return parse_decimal(value, PRICE_DECIMALS, what, max_scaled=MAX_PRICE)


def format_price(cents: int) -> str:
    """Prices always carry exactly two decimals on the wire: "67123.40"."""
    return format_decimal(cents, PRICE_DECIMALS, min_decimals=PRICE_DECIMALS)


def parse_multiplier(value: object, what: str = "multiplier") -> int:
    """1e-4 units, at most `MAX_MULTIPLIER`."""
    return parse_decimal(value, MULTIPLIER_DECIMALS, what, max_scaled=MAX_MULTIPLIER)


def format_multiplier(units: int) -> str:
    return format_decimal(units, MULTIPLIER_DECIMALS)


def payout_for(stake_micro: int, multiplier_units: int) -> int:
    """Payout = floor(stake × multiplier) in micro-units (SPEC §2)."""
    return stake_micro * multiplier_units // MULT_ONE
