"""Cursor pagination shared by the history endpoints: opaque cursors, bounded limits, 400 otherwise."""

from __future__ import annotations

import base64
import re

from flask import request

from app.errors import BadRequest
from app.http.params import whole_number


def page_limit(default: int = 50, maximum: int = 200) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    limit = whole_number(raw)
    if limit is None or not 1 <= limit <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}", code="invalid_limit")
    return limit


_WEEK_RE = re.compile(r"[0-9]{4}_[0-9]{2}")


def encode_cursor(week: str, row_id: int) -> str:
    """Where the next page starts: below row `row_id` of week file `week` (history spans weeks)."""
    return base64.urlsafe_b64encode(f"v2:{week}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> tuple[str, int] | None:
    """(week, row id) from a cursor this server issued; None for the first page; 400 otherwise."""
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        version, week, value = text.split(":")
        row_id = whole_number(value)
        if version != "v2" or not _WEEK_RE.fullmatch(week) or row_id is None:
            raise ValueError
        return week, row_id
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not one this server issued", code="invalid_cursor") from None


def cursor_param() -> tuple[str, int] | None:
    return decode_cursor(request.args.get("cursor"))
