"""The market over HTTP (SPEC §7): `GET /api/v1/grid` (settings, server time, current price and the
quote matrix) and `GET /api/v1/prices?since=<ms>` (recent ticks for chart back-fill)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from app.errors import BadRequest
from app.http.params import whole_number
from app.market.prices import HISTORY_MS, ticks_since
from app.market.quotes import grid_message
from app.services import services
from app.units import MULTIPLIER_DECIMALS, format_decimal, format_money, format_price

bp = Blueprint("market", __name__, url_prefix="/api/v1")

DEFAULT_WINDOW_MS = 5 * 60 * 1000
MAX_TICKS = 5000


@bp.get("/grid")
def grid() -> Response:
    """Settings, server time, the current price and the quote matrix of the placeable cells.
    ---
    get:
      tags: [market]
      summary: The grid and its quotes
      responses:
        200: {description: The grid, content: {application/json: {schema: app.market.schemas.GridSchema}}}
    """
    svc = services()
    s = svc.settings
    now_ms = svc.now_ms()  # the clock the bet checks use, so server_time agrees with them
    book = svc.quotes.book
    body = (
        grid_message(book, now_ms)
        if book is not None
        else {"price": None, "columns": [], "rows": [], "quotes": []}
    )
    body.pop("type", None)
    body.update(
        server_time=now_ms,
        feed=svc.status_message(),
        settings={
            "column_seconds": s.column_seconds,
            "price_step": format_price(s.price_step),
            "columns_ahead": s.columns_ahead,
            "min_lead_columns": s.min_lead_columns,
            "rows_each_side": s.rows_each_side,
            "house_edge": format_decimal(s.house_edge, MULTIPLIER_DECIMALS),
            "stake_presets": [format_money(p) for p in s.stake_presets],
            "min_stake": format_money(s.min_stake),
            "max_stake": format_money(s.max_stake),
            "chain_id": s.chain_id,
            "siwe_domain": s.siwe_domain,
        },
    )
    return jsonify(body)


@bp.get("/prices")
def prices() -> Response:
    """Recent ticks for chart back-fill (at most 5,000; 7 days are kept).
    ---
    get:
      tags: [market]
      summary: Recent prices
      parameters:
        - name: since
          in: query
          schema: {type: integer, minimum: 0}
          description: Unix ms (default 5 minutes ago)
      responses:
        200:
          description: Ticks, oldest first
          content: {application/json: {schema: app.market.schemas.PricesSchema}}
        400: BadRequest
        503: Unavailable
    """
    now_ms = services().now_ms()
    raw = request.args.get("since")
    if raw is None:
        since = now_ms - DEFAULT_WINDOW_MS
    else:
        asked = whole_number(raw, max_digits=15)
        if asked is None:
            raise BadRequest("since must be Unix milliseconds (a non-negative integer)", code="invalid_since")
        since = max(asked, now_ms - HISTORY_MS)
    ticks = ticks_since(services().redis, since, limit=MAX_TICKS + 1)
    truncated = len(ticks) > MAX_TICKS
    return jsonify(
        prices=[{"price": format_price(t.price), "ts": t.ts} for t in ticks[:MAX_TICKS]],
        truncated=truncated,
    )
