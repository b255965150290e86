"""`GET /api/v1/grid`: settings, server time, current price and the quote matrix (SPEC §7)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.quotes import grid_message
from app.services import services
from app.units import MULTIPLIER_DECIMALS, format_decimal, format_money, format_price

bp = Blueprint("grid", __name__, url_prefix="/api/v1")


@bp.get("/grid")
def grid() -> Response:
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
        feed=svc.feed.status_message(),
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
