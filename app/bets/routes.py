"""`POST /api/v1/bets`, `GET /api/v1/bets`, `GET /api/v1/bets/<bet_id>`: HTTP adapters over the bet
rules in `app.bets.placement` (the websocket's `bet` message uses the same ones: app/realtime/taps.py)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from app.auth.decorators import (
    authenticate_despite_limits,
    authenticates_itself,
    current_session,
    login_required,
)
from app.bets.placement import count_refusal, load_bet, parse_bet, place_bet, queue_full
from app.bets.store import bet_row_json, list_bets
from app.errors import BadRequest, NotFound
from app.http.pagination import cursor_param, encode_cursor, page_limit
from app.services import services

bp = Blueprint("bets", __name__, url_prefix="/api/v1")

STATUSES = ("confirmed", "won", "lost", "void")


@bp.post("/bets")
@authenticates_itself
def place() -> tuple[Response, int]:
    """Accept a signed bet and queue it for the writer (the checks, in order: app/bets/placement.py).
    ---
    post:
      tags: [bets]
      summary: Place a signed bet (a tap)
      requestBody:
        required: true
        content: {application/json: {schema: app.bets.schemas.BetRequestSchema}}
      responses:
        202:
          description: >-
            Accepted and queued (status pending); bet:confirmed or bet:rejected follows on the
            websocket. A retry of the same signed body returns the same bet and its current status.
          content: {application/json: {schema: app.bets.schemas.BetAcceptedSchema}}
        400: BadRequest
        401: Unauthorized
        409: Conflict
        422: Unprocessable
        429: RateLimited
        503: Unavailable
    """
    svc = services()
    # SPEC §6's order: the schema, then the session (a malformed body is 400 with or without a
    # token). A rate limit or a full write queue refuses before the signature or the claim cost
    # anything, except to a retry of an accepted nonce: that gets its bet (app.bets.placement).
    req = parse_bet(svc, request.get_json())
    try:
        session, limited = authenticate_despite_limits()
    except Exception as exc:
        count_refusal(svc, exc)
        raise
    refusal = limited or queue_full(svc)
    return jsonify(place_bet(svc, session, req, svc.now_ms(), refusal=refusal).body), 202


@bp.get("/bets/<bet_id>")
@login_required
def get_one(bet_id: str) -> Response:
    """One of the trader's bets, committed or still pending (or rejected before it committed).
    ---
    get:
      tags: [bets]
      summary: One bet, with its status
      responses:
        200: {description: The bet, content: {application/json: {schema: app.bets.schemas.BetSchema}}}
        403: Forbidden
        404: NotFound
    """
    if len(bet_id) > 64 or not bet_id.isalnum():
        raise NotFound("No such bet.", code="bet_not_found")
    return jsonify(load_bet(services(), bet_id, current_session()))


@bp.get("/bets")
@login_required
def list_own() -> Response:
    """The trader's bets, newest first, across the current and the attached weeks.
    ---
    get:
      tags: [bets]
      summary: Own bet history (cursor paginated, filter by status)
      parameters:
        - name: status
          in: query
          schema: {type: string, enum: [confirmed, won, lost, void]}
        - Cursor
        - Limit
      responses:
        200: {description: A page, content: {application/json: {schema: app.bets.schemas.BetPageSchema}}}
        400: BadRequest
    """
    status = request.args.get("status")
    if status is not None and status not in STATUSES:  # an empty ?status= is a bad value, not "all"
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", code="invalid_status")
    limit = page_limit()
    before = cursor_param()
    user_id = current_session().user_id
    # The newest page in index order (bets_by_user; bets_open_by_user for the open ones) runs on the
    # hub: recent rows, in the page cache. A settled status filters the walk row by row (a trader's
    # rare voids may lie far apart), and a cursor may reach weeks no one has read lately: off the hub.
    inline = status in (None, "confirmed") and before is None
    rows = services().reads.run(lambda c: list_bets(c, user_id, status, before, limit + 1), inline=inline)
    more = len(rows) > limit
    rows = rows[:limit]
    return jsonify(
        bets=[bet_row_json(r) for r in rows],
        next_cursor=encode_cursor(rows[-1]["week"], rows[-1]["id"]) if more else None,
    )
