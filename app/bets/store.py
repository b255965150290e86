"""SQL of a bet. `insert_bet` is a job for the single writer: it runs inside the writer's transaction
(in its own savepoint), so the stake's conditional deduction, its ledger row and the bet row commit
together or not at all (ADR-009/010: one transaction, one file). Amounts are integer micro-units.
The reads run on the read pool, across the current and the attached weeks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apsw

from app.ledger.store import Rejected, debit
from app.storage.db import Cursor, across_weeks, week_schemas
from app.storage.writes import mark_rerunnable
from app.units import format_money, format_multiplier

LOST_BET_ERROR = "bet_declared_lost"  # the trigger of sql/006_lost_bets.sql refuses such a bet's insert


@dataclass(frozen=True, slots=True)
class NewBet:
    bet_id: str
    user_id: int
    address: str
    cell: str
    t_start: int
    row: int
    min_price: int
    max_price: int
    stake: int
    multiplier: int
    payout: int
    nonce: str
    placed_at: int  # ms


def insert_bet(bet: NewBet):
    """The writer job for one accepted bet: debit the stake, ledger row, bet row. Returns the balance.

    Raises `Rejected("not_committed")` if a reconciler declared the bet lost before this job ran
    (`declare_lost`): one outcome per bet, decided under SQLite's write lock."""

    def job(conn: apsw.Connection) -> int:
        balance = debit(conn, bet.user_id, bet.stake, "bet", bet.bet_id, bet.placed_at)
        try:
            conn.execute(
                "INSERT INTO bets (bet_id, user_id, target_time, row, min_price, max_price, stake,"
                " multiplier, payout, nonce, placed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    bet.bet_id,
                    bet.user_id,
                    bet.t_start,
                    bet.row,
                    bet.min_price,
                    bet.max_price,
                    bet.stake,
                    bet.multiplier,
                    bet.payout,
                    bet.nonce,
                    bet.placed_at,
                ),
            )
        except apsw.ConstraintError as exc:
            if "bets.user_id, bets.target_time, bets.row" in str(exc):
                raise Rejected("duplicate_cell") from None
            if LOST_BET_ERROR in str(exc):
                # A reconciler declared this bet lost first and told the trader `not_committed`
                # (app.bets.reconcile): the same answer, and the stake's debit rolls back with the job.
                raise Rejected("not_committed") from None
            raise
        return balance

    return mark_rerunnable(job)  # SQL only: the writer may run it without a SAVEPOINT of its own


def declare_lost(bet_ids: list[str], now_ms: int):
    """The writer job of a reconciler that found `bet_ids` pending with no queue left to commit them:
    returns those already committed (any attached week); every other one is recorded in `lost_bets`,
    whose trigger then refuses its insert for good. Deciding under the write lock is what makes the
    reconciler's `not_committed` and a live writer's commit exclude each other (sql/006_lost_bets.sql):
    reading SQLite first and rejecting in Redis after left a window in which both happened."""

    def job(conn: apsw.Connection) -> set[str]:
        committed = committed_bet_ids(conn, bet_ids)
        lost = [(bet_id, now_ms) for bet_id in bet_ids if bet_id not in committed]
        if lost:
            conn.executemany("INSERT OR IGNORE INTO lost_bets (bet_id, lost_at) VALUES (?, ?)", lost)
        return committed

    return mark_rerunnable(job)  # SQL only, and idempotent


def committed_bet_ids(conn: apsw.Connection, bet_ids: list[str]) -> set[str]:
    """Which of `bet_ids` are in SQLite (the current week or an attached one)."""
    found: set[str] = set()
    if not bet_ids:
        return found
    marks = ", ".join("?" * len(bet_ids))
    for schema, _week in week_schemas(conn):
        rows = conn.execute(f"SELECT bet_id FROM {schema}.bets WHERE bet_id IN ({marks})", bet_ids)  # noqa: S608
        found.update(r[0] for r in rows)
    return found


# ---- reads (run on the read pool) ---------------------------------------------------------------

BET_KEYS = (
    "id",
    "bet_id",
    "user_id",
    "target_time",
    "row",
    "min_price",
    "max_price",
    "stake",
    "multiplier",
    "payout",
    "status",
    "placed_at",
    "settled_at",
)
BET_COLUMNS = ", ".join(BET_KEYS)  # a constant: the f-strings below interpolate no input


def bet_row_to_dict(r: tuple) -> dict[str, Any]:
    return dict(zip(BET_KEYS, r, strict=True))


def get_bet(conn: apsw.Connection, bet_id: str) -> dict[str, Any] | None:
    """The bet from the current week, else from the attached previous weeks (newest first)."""
    for schema, week in week_schemas(conn):
        r = conn.execute(f"SELECT {BET_COLUMNS} FROM {schema}.bets WHERE bet_id = ?", (bet_id,)).fetchone()  # noqa: S608
        if r:
            return bet_row_to_dict(r) | {"week": week}
    return None


def list_bets(
    conn: apsw.Connection, user_id: int, status: str | None, cursor: Cursor, limit: int
) -> list[dict[str, Any]]:
    def query(schema: str, is_current: bool, before_id: int | None, n: int) -> list[dict[str, Any]]:
        sql = f"SELECT {BET_COLUMNS} FROM {schema}.bets WHERE user_id = ?"  # noqa: S608
        args: list[Any] = [user_id]
        if status == "confirmed":
            sql += " AND status = 'confirmed'"  # a literal, so the planner can take bets_open_by_user
        elif status:
            sql += " AND status = ?"
            args.append(status)
        if not is_current:
            sql += " AND status != 'confirmed'"  # still open at rollover: listed from the newer week
        if before_id is not None:
            sql += " AND id < ?"
            args.append(before_id)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(n)
        return [bet_row_to_dict(r) for r in conn.execute(sql, args)]

    return across_weeks(conn, cursor, limit, query)


def bet_row_json(r: dict[str, Any]) -> dict[str, Any]:
    """A committed bet row as the API shows it (`payout`: what a win pays, or what was paid)."""
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
