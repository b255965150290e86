"""`GET /api/v1/prices?since=<ms>`: recent ticks for chart back-fill."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request

from app.errors import BadRequest
from app.prices import HISTORY_MS, ticks_since
from app.services import services
from app.units import format_price

bp = Blueprint("prices", __name__, url_prefix="/api/v1")

DEFAULT_WINDOW_MS = 5 * 60 * 1000
MAX_TICKS = 5000


@bp.get("/prices")
def prices() -> Response:
    now_ms = int(time.time() * 1000)
    raw = request.args.get("since")
    if raw is None:
        since = now_ms - DEFAULT_WINDOW_MS
    else:
        if not raw.isdigit() or len(raw) > 15:
            raise BadRequest("since must be Unix milliseconds (a non-negative integer)", code="invalid_since")
        since = max(int(raw), now_ms - HISTORY_MS)
    ticks = ticks_since(services().redis, since, limit=MAX_TICKS + 1)
    truncated = len(ticks) > MAX_TICKS
    return jsonify(
        prices=[{"price": format_price(t.price), "ts": t.ts} for t in ticks[:MAX_TICKS]],
        truncated=truncated,
    )
