"""The trader's account: `GET /api/v1/me`, `GET /api/v1/ledger`, mock `POST /api/v1/deposits`
(dev mode only) and `POST /api/v1/withdrawals`. Money moves through the single writer with the same
conditional deduction and ledger row as a bet (ADR-009/010).

Both take an `Idempotency-Key` (SPEC §7). The key is stored in SQLite in the same savepoint as the
balance change (table money_requests, migration 003), so it is exactly as durable as the money: the
same key with the same body returns the first result and moves money once — also when the retry
arrives while the first attempt is still queued, because the retry's job runs after it in the single
writer and finds the key, in the previous weeks too (the writer attaches them as the read pool does:
the rollover does not copy keys, and it may land between the two jobs). A movement not committed
within TAP_MONEY_WAIT_S answers 202 pending with its ref_id (derived from the key, so every retry names
the same movement); the ledger shows it once committed. Without a key each request is a new movement,
as before.

A rate limit (429) answers every request but the retry of a key whose movement has settled: that
gets its first result (SPEC §7), which the limit is no reason to withhold; the retry still counts."""

from __future__ import annotations

import logging
import re

import gevent
from flask import Blueprint, Response, jsonify, request
from gevent.event import Event

from app.auth.decorators import (
    authenticate_despite_limits,
    authenticates_itself,
    current_session,
    login_required,
)
from app.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from app.http.json import load_json
from app.http.pagination import cursor_param, encode_cursor, page_limit
from app.ledger.schemas import MoneyRequestSchema
from app.ledger.store import (
    Movement,
    Rejected,
    account,
    find_movement_any_week,
    list_ledger,
    move_money,
    movement_ref_id,
    time_ordered_id,
)
from app.realtime.events import balance_event
from app.services import services
from app.units import UnitError, format_money, parse_money

bp = Blueprint("account", __name__, url_prefix="/api/v1")
_money_schema = MoneyRequestSchema()
MAX_DEPOSIT = 1_000_000 * 10**6  # mock rail: one million per deposit
_KEY_RE = re.compile(r"[\x21-\x7e]{1,64}")
_REFUSALS = {
    "insufficient_funds": "The balance does not cover that amount.",
    "unknown_user": "No account for this session.",
}
log = logging.getLogger(__name__)


@bp.get("/me")
@login_required
def me() -> Response:
    """The trader's account: balance, open stakes, session key, admin flag.
    ---
    get:
      tags: [account]
      summary: The trader's account
      responses:
        200: {description: The account, content: {application/json: {schema: app.ledger.schemas.MeSchema}}}
        404: NotFound
    """
    session = current_session()
    acct = services().reads.run(lambda c: account(c, session.user_id), inline=True)  # by key, open bets
    if acct is None:
        raise NotFound("No account for this session.", code="account_not_found")
    return jsonify(
        address=session.checksum_address,
        balance=format_money(acct["balance"]),
        open_stakes=format_money(acct["open_stakes"]),
        open_bets=acct["open_bets"],
        session_key=session.checksum_session_key,
        is_admin=session.address in services().settings.admin_addresses,
    )


@bp.get("/ledger")
@login_required
def ledger() -> Response:
    """The trader's ledger rows, newest first, across the current and the attached weeks.
    ---
    get:
      tags: [account]
      summary: Own ledger rows (cursor paginated)
      parameters:
        - Cursor
        - Limit
      responses:
        200:
          description: A page
          content: {application/json: {schema: app.ledger.schemas.LedgerPageSchema}}
        400: BadRequest
    """
    user_id = current_session().user_id
    limit, before = page_limit(), cursor_param()
    # The newest page runs on the hub (recent rows, in the page cache); a cursor's page may be cold.
    rows = services().reads.run(lambda c: list_ledger(c, user_id, before, limit + 1), inline=before is None)
    more = len(rows) > limit
    rows = rows[:limit]
    return jsonify(
        entries=[
            {
                "id": r["id"],
                "amount": format_money(r["amount"]),
                "balance_after": format_money(r["balance_after"]),
                "ref_type": r["ref_type"],
                "ref_id": r["ref_id"],
                "created_at": r["created_at"],
            }
            for r in rows
        ],
        next_cursor=encode_cursor(rows[-1]["week"], rows[-1]["id"]) if more else None,
    )


def _amount() -> int:
    body = load_json(_money_schema)
    try:
        return parse_money(body["amount"], "amount")
    except UnitError as exc:
        raise BadRequest(str(exc), code="invalid_amount") from None


def _idempotency_key() -> str | None:
    """The `Idempotency-Key` header (SPEC §7): 1–64 visible ASCII characters, or absent."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    if not _KEY_RE.fullmatch(raw):
        raise BadRequest(
            "Idempotency-Key must be 1 to 64 visible ASCII characters (no spaces).",
            code="invalid_idempotency_key",
        )
    return raw


def _answer(m: Movement, kind: str, amount: int) -> Response | tuple[Response, int]:
    """The response for a settled movement: the first result when it was found under its key."""
    if m.replayed and (m.kind != kind or m.amount != amount):
        raise Conflict(
            "That Idempotency-Key was already used for a different request.", code="idempotency_key_conflict"
        )
    if m.status == "rejected":
        raise Unprocessable(_REFUSALS.get(m.reason or "", "The movement was refused."), code=m.reason)
    assert m.balance is not None
    resp = jsonify(
        balance=format_money(m.balance), amount=format_money(m.amount), ref_id=m.ref_id, status="committed"
    )
    if m.replayed:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


ANNOUNCE_WAIT_S = 1.0


def _over_the_limit(kind: str) -> Response | tuple[Response, int] | None:
    """The session (401 as `login_required`). Within its rate limits: None, the request goes on. Over
    one: the answer to the one request a limit does not refuse, the retry of a key whose movement has
    settled, which gets its first result (SPEC §7); anything else is the 429.

    That 429 is decided before the body, the key's form or the dev-mode switch are looked at: past the
    per-IP limit a token that names no session is 429 whatever the request (app.auth.ratelimit), so a
    real session's request must be too, or its 400/403/422 would tell real tokens from guessed ones as
    fast as a client could ask. The retry still counts against the limit."""
    _, limited = authenticate_despite_limits()
    if limited is None:
        return None
    key = request.headers.get("Idempotency-Key")
    svc = services()
    if key is None or not _KEY_RE.fullmatch(key) or (kind == "deposit" and not svc.settings.dev_mode):
        raise limited
    prior = _prior(current_session().user_id, key)
    if prior is None:
        raise limited
    return _answer(prior, kind, _amount())


def _prior(user_id: int, key: str) -> Movement | None:
    """The movement this trader already made under `key`, in any week file attached (SPEC §7)."""
    return services().reads.run(lambda c: find_movement_any_week(c, user_id, key))


def _move(kind: str, amount: int, key: str | None) -> Response | tuple[Response, int]:
    """Queue the movement and wait up to TAP_MONEY_WAIT_S for its commit.

    Never a 500 for an outcome we do not know: the job stays queued and commits (or is refused) later,
    so a wait that runs out answers 202 pending with the movement's ref_id, which the ledger shows once
    committed; a retry with the same key returns the settled result.
    """
    svc, session = services(), current_session()
    now_ms = services().now_ms()
    if key is None:
        ref_id = time_ordered_id(now_ms, prefix=kind[0])
    else:
        ref_id = movement_ref_id(kind, session.user_id, key)
        prior = _prior(session.user_id, key)
        if prior is not None:
            return _answer(prior, kind, amount)
    address, announced = session.address, Event()

    def announce(ok: bool, value: object) -> None:
        """In the writer, right after the commit: the new balance goes out in commit order with the
        trader's other events (app.bets.notify), also when this request has stopped waiting."""
        if ok and isinstance(value, Movement) and value.status == "committed" and not value.replayed:
            svc.bet_notifier.on_commit(address, [balance_event(value.balance or 0)], sent=announced)
        else:
            announced.set()

    result = svc.writes.submit(
        move_money(session.user_id, kind, amount, ref_id, now_ms, key), on_done=announce
    )
    try:
        m: Movement = result.get(timeout=svc.settings.money_wait_s)
    except gevent.Timeout:
        log.warning(
            "%s %s not committed within %.1fs: answered pending", kind, ref_id, svc.settings.money_wait_s
        )
        return _pending(ref_id, kind, amount)
    except Rejected as exc:  # without a key only; a keyed refusal comes back as a Movement
        raise Unprocessable(_REFUSALS.get(exc.reason, "The movement was refused."), code=exc.reason) from None
    except Exception:  # the writer failed the batch: whether it committed is not ours to guess
        log.exception("%s %s: the writer reported a failure; answered pending", kind, ref_id)
        return _pending(ref_id, kind, amount)
    # The balance event is out before the answer, so a client that reads its events after the 200
    # finds it; a Redis that is away only delays this answer by the wait (GET /me is right anyway).
    announced.wait(timeout=ANNOUNCE_WAIT_S)
    return _answer(m, kind, amount)


def _pending(ref_id: str, kind: str, amount: int) -> tuple[Response, int]:
    return jsonify(ref_id=ref_id, status="pending", kind=kind, amount=format_money(amount)), 202


@bp.post("/deposits")
@authenticates_itself
def deposit() -> Response | tuple[Response, int]:
    """Mock payment rail: credits the account. Only with TAP_DEV_MODE=1.
    ---
    post:
      tags: [account]
      parameters: [IdempotencyKey]
      requestBody:
        content: {application/json: {schema: app.ledger.schemas.MoneyRequestSchema}}
      responses:
        403: Forbidden
        200: MovementCommitted
        202: MovementPending
        400: BadRequest
        401: Unauthorized
        409: Conflict
        422: Unprocessable
        503: Unavailable
    """
    replay = _over_the_limit("deposit")
    if replay is not None:
        return replay
    if not services().settings.dev_mode:
        raise Forbidden("Deposits through this endpoint exist only in dev mode.", code="dev_mode_only")
    amount = _amount()
    key = _idempotency_key()
    if amount > MAX_DEPOSIT:
        raise Unprocessable("That deposit is larger than the mock rail allows.", code="amount_too_large")
    return _move("deposit", amount, key)


@bp.post("/withdrawals")
@authenticates_itself
def withdraw() -> Response | tuple[Response, int]:
    """Debits the account with the same conditional deduction as a bet (never below zero).
    ---
    post:
      tags: [account]
      parameters: [IdempotencyKey]
      requestBody:
        content: {application/json: {schema: app.ledger.schemas.MoneyRequestSchema}}
      responses:
        200: MovementCommitted
        202: MovementPending
        400: BadRequest
        401: Unauthorized
        409: Conflict
        422: Unprocessable
        503: Unavailable
    """
    replay = _over_the_limit("withdrawal")
    if replay is not None:
        return replay
    amount = _amount()
    return _move("withdrawal", amount, _idempotency_key())
