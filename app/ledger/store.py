"""SQL of the ledger (SPEC §1, §7, §10): every balance change is a row written in the same transaction
as the change. Write functions are jobs for the single writer, run inside its transaction in their own
savepoint; `debit` is the conditional deduction (``UPDATE … WHERE balance >= ?``), so a balance can
never go below zero however many jobs race (ADR-009/010). Amounts are integer micro-units.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

import apsw

from app.storage.db import Cursor, across_weeks, week_schemas


def time_ordered_id(now_ms: int, prefix: str = "") -> str:
    """Time-ordered and unguessable: 12 hex of Unix ms + 10 random hex (B-tree inserts stay appends)."""
    return f"{prefix}{now_ms:012x}{secrets.token_hex(5)}"


class Rejected(Exception):
    """A business refusal decided inside the transaction (rolled back alone); `reason` is the wire code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def debit(conn: apsw.Connection, user_id: int, amount: int, ref_type: str, ref_id: str, now_ms: int) -> int:
    """Conditional deduction + its ledger row; returns the new balance. `Rejected("insufficient_funds")`
    when the balance does not cover it: the WHERE clause is the check, so no race can overdraw."""
    row = conn.execute(
        "UPDATE users SET balance = balance - ?1 WHERE id = ?2 AND balance >= ?1 RETURNING balance",
        (amount, user_id),
    ).fetchone()
    if row is None:
        raise Rejected("insufficient_funds")
    conn.execute(
        "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (user_id, -amount, row[0], ref_type, ref_id, now_ms),
    )
    return row[0]


def credit(conn: apsw.Connection, user_id: int, amount: int, ref_type: str, ref_id: str, now_ms: int) -> int:
    """Credit + its ledger row; returns the new balance."""
    row = conn.execute(
        "UPDATE users SET balance = balance + ? WHERE id = ? RETURNING balance", (amount, user_id)
    ).fetchone()
    if row is None:
        raise Rejected("unknown_user")
    conn.execute(
        "INSERT INTO transaction_ledger (user_id, amount, balance_after, ref_type, ref_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (user_id, amount, row[0], ref_type, ref_id, now_ms),
    )
    return row[0]


# ---- deposits and withdrawals (SPEC §7) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Movement:
    """The outcome of one deposit or withdrawal, as stored under its Idempotency-Key."""

    kind: str  # deposit | withdrawal
    amount: int
    ref_id: str
    status: str  # committed | rejected
    reason: str | None = None
    balance: int | None = None
    replayed: bool = False  # found under its key: an earlier request moved (or refused) it


def movement_ref_id(kind: str, user_id: int, key: str) -> str:
    """The ledger ref_id of a keyed movement, derived from (user, key) so that every retry — even one
    answered 202 before the first attempt committed — names the same movement."""
    digest = hashlib.sha256(f"{user_id}\x00{key}".encode()).hexdigest()
    return f"{kind[0]}k{digest[:21]}"


_MOVEMENT_COLUMNS = "kind, amount, ref_id, status, reason, balance"


def find_movement(conn: apsw.Connection, user_id: int, key: str, schema: str = "main") -> Movement | None:
    """The movement stored under (user, key) in one week file's schema, if any."""
    try:
        r = conn.execute(
            f"SELECT {_MOVEMENT_COLUMNS} FROM {schema}.money_requests WHERE user_id = ? AND idem_key = ?",  # noqa: S608
            (user_id, key),
        ).fetchone()
    except apsw.SQLError as exc:  # a week file from before migration 003
        if "no such table" in str(exc):
            return None
        raise
    if r is None:
        return None
    kind, amount, ref_id, status, reason, balance = r
    return Movement(kind, amount, ref_id, status, reason, balance, replayed=True)


def find_movement_any_week(conn: apsw.Connection, user_id: int, key: str) -> Movement | None:
    """Look a key up in the current week and the attached previous ones (the read pool's and the
    writer's connections both attach them): the rollover does not carry keys over, and a retry may
    straddle it."""
    for schema, _week in week_schemas(conn):
        found = find_movement(conn, user_id, key, schema)
        if found is not None:
            return found
    return None


def move_money(user_id: int, kind: str, amount: int, ref_id: str, now_ms: int, key: str | None):
    """The writer job of a deposit or withdrawal; returns a `Movement`.

    With a key the job first looks it up — a retry queued behind the first attempt finds its outcome
    and moves nothing — and stores its own outcome in the same savepoint as the balance change, a
    refusal included. Without a key a refusal raises `Rejected` as before.

    The look-up covers the previous weeks the writer's connection attaches, not only this week's
    file: the rollover does not copy keys, and a retry queued before the first attempt committed
    (the route's look-up found nothing) may run after a rollover that landed between the two.
    """
    if kind not in ("deposit", "withdrawal"):
        raise ValueError(kind)

    def job(conn: apsw.Connection) -> Movement:
        if key is not None:
            prior = find_movement_any_week(conn, user_id, key)
            if prior is not None:
                return prior
        try:
            if kind == "deposit":
                balance = credit(conn, user_id, amount, kind, ref_id, now_ms)
            else:
                balance = debit(conn, user_id, amount, kind, ref_id, now_ms)
            out = Movement(kind, amount, ref_id, "committed", None, balance)
        except Rejected as exc:  # nothing was changed: the UPDATE matched no row
            if key is None:
                raise
            out = Movement(kind, amount, ref_id, "rejected", exc.reason)
        if key is not None:
            conn.execute(
                "INSERT INTO money_requests (user_id, idem_key, kind, amount, ref_id, status, reason,"
                " balance, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (user_id, key, kind, amount, ref_id, out.status, out.reason, out.balance, now_ms),
            )
        return out

    return job


LEDGER_KEYS = ("id", "amount", "balance_after", "ref_type", "ref_id", "created_at")


def list_ledger(conn: apsw.Connection, user_id: int, cursor: Cursor, limit: int) -> list[dict[str, Any]]:
    def query(schema: str, _is_current: bool, before_id: int | None, n: int) -> list[dict[str, Any]]:
        sql = f"SELECT {', '.join(LEDGER_KEYS)} FROM {schema}.transaction_ledger WHERE user_id = ?"  # noqa: S608
        args: list[Any] = [user_id]
        if before_id is not None:
            sql += " AND id < ?"
            args.append(before_id)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(n)
        return [dict(zip(LEDGER_KEYS, r, strict=True)) for r in conn.execute(sql, args)]

    return across_weeks(conn, cursor, limit, query)


def account(conn: apsw.Connection, user_id: int) -> dict[str, Any] | None:
    r = conn.execute(
        "SELECT u.address, u.balance, u.created_at,"
        " (SELECT coalesce(sum(stake), 0) FROM bets WHERE user_id = u.id AND status = 'confirmed'),"
        " (SELECT count(*) FROM bets WHERE user_id = u.id AND status = 'confirmed')"
        " FROM users u WHERE u.id = ?",
        (user_id,),
    ).fetchone()
    if r is None:
        return None
    return {"address": r[0], "balance": r[1], "created_at": r[2], "open_stakes": r[3], "open_bets": r[4]}
