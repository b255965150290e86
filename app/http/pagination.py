"""Cursor pagination shared by the history endpoints: opaque cursors, bounded limits, 400 otherwise."""

from __future__ import annotations

import base64
import re

from flask import request

from app.errors import BadRequest


def page_limit(default: int = 50, maximum: int = 200) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}", code="invalid_limit")
    return int(raw)


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
        if version != "v2" or not _WEEK_RE.fullmatch(week) or not value.isdigit() or len(value) > 18:
            raise ValueError
        return week, int(value)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not one this server issued", code="invalid_cursor") from None


def cursor_param() -> tuple[str, int] | None:
    return decode_cursor(request.args.get("cursor"))
