"""`POST /api/v1/bets` (the hot path), `GET /api/v1/bets`, `GET /api/v1/bets/<bet_id>`."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis
from flask import Blueprint, Response, jsonify, request

from app.auth.decorators import current_session, login_required
from app.auth.schemas import load_json
from app.auth.signatures import (
    NONCE_TTL_S,
    NonceRecord,
    bet_signing_text,
    check_timestamp,
    request_fingerprint,
    same_request_or_conflict,
    verify_signer,
)
from app.auth.state import auth_state
from app.bets.claims import Claim, rejected_record
from app.bets.notify import pending_json
from app.bets.schemas import BetRequestSchema
from app.bets.store import NewBet, get_bet, insert_bet, list_bets, time_ordered_id
from app.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Overloaded,
    Unavailable,
    Unprocessable,
)
from app.grid import check_placeable, parse_cell
from app.pagination import cursor_param, encode_cursor, page_limit
from app.services import services
from app.units import UnitError, format_money, format_multiplier, parse_money, parse_multiplier, payout_for

bp = Blueprint("bets", __name__, url_prefix="/api/v1")

_bet_schema = BetRequestSchema()
QUEUE_MAX_WAIT_S = 10.0  # a bet not committed by then is rejected ("timeout"), never committed late
LOST_AFTER_MS = 30_000  # a pending bet older than this that is not in SQLite will never commit
STATUSES = ("confirmed", "won", "lost", "void")


@bp.post("/bets")
@login_required
def place_bet() -> tuple[Response, int]:  # noqa: PLR0912, PLR0915 - the hot path, top to bottom
    """Accept a signed bet and queue it for the writer. Checks in SPEC §6 order, one code each."""
    svc = services()
    s = svc.settings
    if svc.writes.depth() >= svc.writes.maxsize:  # shed load before doing any work
        raise Overloaded("Too many bets in flight; try again shortly.", retry_after=1)

    # 1. schema (and units: a number where a string is expected, too many decimals, zero → 400)
    body = load_json(_bet_schema)
    try:
        stake = parse_money(body["stake"], "stake")
    except UnitError as exc:
        raise BadRequest(str(exc), code="invalid_stake") from None
    try:
        min_multiplier = parse_multiplier(body["min_multiplier"], "min_multiplier")
    except UnitError as exc:
        raise BadRequest(str(exc), code="invalid_min_multiplier") from None
    spec = svc.grid
    t_start, row = parse_cell(body["cell"], spec)

    # 2. session (login_required), 3. signature, 4. freshness
    session = current_session()
    text = bet_signing_text(
        s,
        address=session.address,
        cell=body["cell"],
        stake=body["stake"],
        min_multiplier=body["min_multiplier"],
        nonce=body["nonce"],
        ts=body["ts"],
    )
    verify_signer(session, text, body["signature"])
    now_ms = auth_state().now_ms()
    check_timestamp(body["ts"], now_ms)

    # 6./7. breaker and business rules, decided now but reported after the nonce check (step 5)
    refusal: ApiError | None = None
    book = svc.quotes.book
    multiplier = None
    if not svc.feed.betting_open() or book is None:
        refusal = Unavailable(
            "Betting is suspended: the price feed is stale.", code="betting_suspended", retry_after=5
        )
    elif book.age_s(now_ms / 1000) > s.quote_max_age_s:
        # DEGRADED keeps betting open and the book is rebuilt every second from the last price; a
        # stalled publisher or feed must not sell bands the market has already moved toward.
        refusal = Unavailable(
            "The quotes are out of date; try again in a moment.", code="quotes_stale", retry_after=1
        )
    else:
        try:
            check_placeable(t_start, row, now_ms / 1000, book.current_row, spec)
            if stake < s.min_stake:
                raise Unprocessable(
                    f"The smallest stake is {format_money(s.min_stake)}.", code="stake_too_small"
                )
            if stake > s.max_stake:
                raise Unprocessable(
                    f"The largest stake is {format_money(s.max_stake)}.", code="stake_too_large"
                )
            multiplier = book.quote(t_start, row)
            if multiplier is None:
                raise Unprocessable("That cell is too likely to win to be offered.", code="cell_not_quoted")
            if multiplier < min_multiplier:
                raise Unprocessable(
                    f"The multiplier is now {format_multiplier(multiplier)}, below your minimum.",
                    code="multiplier_below_minimum",
                    details={"multiplier": format_multiplier(multiplier)},
                )
        except ApiError as exc:
            refusal = exc

    lo, hi = spec.band(row)
    bet_id = time_ordered_id(now_ms)
    bet = NewBet(
        bet_id=bet_id,
        user_id=session.user_id,
        address=session.address,
        cell=body["cell"],
        t_start=t_start,
        row=row,
        min_price=lo,
        max_price=hi,
        stake=stake,
        multiplier=multiplier or 0,
        payout=payout_for(stake, multiplier or 0),
        nonce=body["nonce"],
        placed_at=now_ms,
    )

    # 5. nonce (+ cell claim + pending record): one Redis round trip
    fingerprint = request_fingerprint(text)
    cell_ttl_s = t_start + spec.column_seconds - now_ms // 1000 + 60
    record = pending_json(bet, svc.bet_claims.instance)

    def abandon(now: bool = True) -> None:
        """The claim may have gone through but this bet will never be queued: release it."""
        svc.bet_claims.abandon(
            address=session.address,
            nonce=body["nonce"],
            fingerprint=fingerprint,
            cell=body["cell"],
            bet_id=bet_id,
            record=rejected_record(record, "not_queued"),
            ttl_s=max(cell_ttl_s, NONCE_TTL_S),
            now=now,
        )

    for _ in range(2):
        try:
            outcome, detail = svc.bet_claims.claim(
                address=session.address,
                nonce=body["nonce"],
                fingerprint=fingerprint,
                bet_id=bet_id,
                cell=body["cell"],
                proceed=refusal is None,
                cell_ttl_s=cell_ttl_s,
                pending_json=record,
                placed_at=now_ms,
            )
        except redis.RedisError as exc:
            if refusal is None:  # the script may have run and only its reply been lost
                abandon(now=not isinstance(exc, redis.ConnectionError | redis.TimeoutError))
            raise  # 503 dependency_unavailable
        if outcome is not Claim.NONCE_USED:
            break
        # a retry (same signed text) gets the same bet; else 409
        stored_fp, _, first_bet_id = detail.partition("|")
        same_request_or_conflict(NonceRecord(stored_fp, first_bet_id), fingerprint)
        if not svc.bet_claims.abandoned(first_bet_id):
            return jsonify(_load_bet(first_bet_id, session.user_id)), 202
        # our own earlier attempt claimed it but never queued the bet: release, then judge afresh
        svc.bet_claims.release_abandoned(first_bet_id)
    else:  # released, yet the nonce is taken again: another attempt of the same body won the race
        raise Conflict("That request is already being processed; retry it.", code="nonce_conflict")
    if refusal is not None:
        raise refusal
    if outcome is Claim.CELL_TAKEN:
        raise Conflict("You already have a bet on that cell.", code="duplicate_cell")

    # 8. queue to the writer; the trader hears `bet:confirmed` / `bet:rejected` after the commit
    accepted_at = time.monotonic()
    try:
        svc.writes.submit(
            insert_bet(bet),
            on_done=lambda ok, v: svc.bet_notifier.on_done(bet, accepted_at, ok, v),
            max_wait_s=QUEUE_MAX_WAIT_S,
        )
    except ApiError:
        abandon()  # e.g. overloaded: the client may retry the same body, judged afresh
        raise
    svc.metrics.bets_accepted.inc()
    return jsonify(
        bet_id=bet_id,
        status="pending",
        cell=bet.cell,
        stake=format_money(stake),
        multiplier=format_multiplier(bet.multiplier),
        payout=format_money(bet.payout),
    ), 202


@bp.get("/bets/<bet_id>")
@login_required
def get_one(bet_id: str) -> Response:
    if len(bet_id) > 64 or not bet_id.isalnum():
        raise NotFound("No such bet.", code="bet_not_found")
    return jsonify(_load_bet(bet_id, current_session().user_id))


@bp.get("/bets")
@login_required
def list_own() -> Response:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", code="invalid_status")
    limit = page_limit()
    before = cursor_param()
    user_id = current_session().user_id
    rows = services().reads.run(lambda c: list_bets(c, user_id, status, before, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return jsonify(
        bets=[_bet_json(r) for r in rows],
        next_cursor=encode_cursor(rows[-1]["week"], rows[-1]["id"]) if more else None,
    )


# ---- helpers ------------------------------------------------------------------------------------


def _load_bet(bet_id: str, user_id: int) -> dict[str, Any]:
    """The bet as committed in SQLite, else its pending/rejected record in Redis.

    Redis is read *first*: the pending record is deleted only after the commit, so "no record" means
    SQLite already has the bet (or it never existed). Reading SQLite first could miss a commit that
    lands between the two reads and then find the record already gone.
    """
    svc = services()
    raw = svc.bet_claims.pending(bet_id)
    row = svc.reads.run(lambda c: get_bet(c, bet_id))
    if row is not None:
        if row["user_id"] != user_id:
            raise Forbidden("That bet belongs to someone else.", code="not_your_bet")
        return _bet_json(row)
    if raw is None:
        raise NotFound("No such bet.", code="bet_not_found")
    rec = orjson.loads(raw)
    if rec["address"] != current_session().address:
        raise Forbidden("That bet belongs to someone else.", code="not_your_bet")
    status = rec["status"]
    reason = rec.get("reason")
    if status == "pending" and auth_state().now_ms() - rec["placed_at"] > LOST_AFTER_MS:
        status, reason = "rejected", "not_committed"  # the queue deadline has passed: it never will
    out = {
        "bet_id": rec["bet_id"],
        "status": status,
        "cell": rec["cell"],
        "stake": format_money(rec["stake"]),
        "multiplier": format_multiplier(rec["multiplier"]),
        "payout": format_money(rec["payout"]),
        "potential_payout": format_money(rec["payout"]),
        "placed_at": rec["placed_at"],
        "settled_at": None,
    }
    if status == "rejected":
        out["reason"] = reason
    return out


def _bet_json(r: dict[str, Any]) -> dict[str, Any]:
    status = r["status"]
    paid = {"won": r["payout"], "lost": 0, "void": r["stake"]}.get(status, r["payout"])
    return {
        "bet_id": r["bet_id"],
        "status": status,
        "cell": f"{r['target_time']}:{r['row']}",
        "stake": format_money(r["stake"]),
        "multiplier": format_multiplier(r["multiplier"]),
        "payout": format_money(paid),
        "potential_payout": format_money(r["payout"]),
        "placed_at": r["placed_at"],
        "settled_at": r["settled_at"],
    }
