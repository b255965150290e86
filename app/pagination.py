"""Cursor pagination shared by the history endpoints: opaque cursors, bounded limits, 400 otherwise."""

from __future__ import annotations

import base64

from flask import request

from app.errors import BadRequest


def page_limit(default: int = 50, maximum: int = 200) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}", code="invalid_limit")
    return int(raw)


def encode_cursor(row_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> int | None:
    """The row id to continue below, from a cursor this server issued (None for the first page)."""
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        version, _, value = text.partition(":")
        if version != "v1" or not value.isdigit() or len(value) > 18:
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not one this server issued", code="invalid_cursor") from None


def cursor_param() -> int | None:
    return decode_cursor(request.args.get("cursor"))
