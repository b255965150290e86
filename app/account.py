"""The trader's account: `GET /api/v1/me`, `GET /api/v1/ledger`, mock `POST /api/v1/deposits`
(dev mode only) and `POST /api/v1/withdrawals`. Money moves through the single writer with the same
conditional deduction and ledger row as a bet (ADR-009/010)."""

from __future__ import annotations

import time

import orjson
from flask import Blueprint, Response, jsonify

from app.auth.decorators import current_session, login_required
from app.auth.schemas import load_json
from app.bets.notify import user_channel
from app.bets.schemas import MoneyRequestSchema
from app.bets.store import Rejected, account, credit, debit, list_ledger, time_ordered_id
from app.errors import BadRequest, Forbidden, NotFound, Unprocessable
from app.pagination import cursor_param, encode_cursor, page_limit
from app.services import services
from app.units import UnitError, format_money, parse_money

bp = Blueprint("account", __name__, url_prefix="/api/v1")
_money_schema = MoneyRequestSchema()
MAX_DEPOSIT = 1_000_000 * 10**6  # mock rail: one million per deposit


@bp.get("/me")
@login_required
def me() -> Response:
    session = current_session()
    acct = services().reads.run(lambda c: account(c, session.user_id))
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
    user_id = current_session().user_id
    limit, before = page_limit(), cursor_param()
    rows = services().reads.run(lambda c: list_ledger(c, user_id, before, limit + 1))
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


def _move(kind: str, amount: int) -> Response:
    svc, session = services(), current_session()
    now_ms = int(time.time() * 1000)
    ref_id = time_ordered_id(now_ms, prefix=kind[0])
    if kind == "deposit":
        job = lambda conn: credit(conn, session.user_id, amount, "deposit", ref_id, now_ms)  # noqa: E731
    else:
        job = lambda conn: debit(conn, session.user_id, amount, "withdrawal", ref_id, now_ms)  # noqa: E731
    try:
        balance = svc.writes.call(job)
    except Rejected as exc:
        raise Unprocessable("The balance does not cover that amount.", code=exc.reason) from None
    svc.redis.publish(
        user_channel(session.address), orjson.dumps({"type": "balance", "balance": format_money(balance)})
    )
    return jsonify(balance=format_money(balance), amount=format_money(amount), ref_id=ref_id)


@bp.post("/deposits")
@login_required
def deposit() -> Response:
    """Mock payment rail: credits the account. Only with TAP_DEV_MODE=1."""
    if not services().settings.dev_mode:
        raise Forbidden("Deposits through this endpoint exist only in dev mode.", code="dev_mode_only")
    amount = _amount()
    if amount > MAX_DEPOSIT:
        raise Unprocessable("That deposit is larger than the mock rail allows.", code="amount_too_large")
    return _move("deposit", amount)


@bp.post("/withdrawals")
@login_required
def withdraw() -> Response:
    """Debits the account with the same conditional deduction as a bet (never below zero)."""
    return _move("withdrawal", _amount())
