"""Whole numbers in query parameters: ASCII digits only, bounded in length, before `int()` sees them.

`str.isdigit` is not that check: it is also true of "²" and "①", which `int()` refuses, and of other
scripts' digits ("٣"), which `int()` reads; and `int()` refuses more than 4,300 digits. Each of those
reached a route as a ValueError, a 500, where the caller deserves its 400.
"""

from __future__ import annotations


def whole_number(raw: str, max_digits: int = 18) -> int | None:
    """The value of `raw` if it is 1 to `max_digits` ASCII digits; None otherwise."""
    if not raw or len(raw) > max_digits or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)
