"""Settling a column's bets (SPEC §3), as jobs for the single writer.

A column is settled set-wise through the covering index ``(target_time, min_price, max_price)``: one
UPDATE marks every open bet of the window won or lost from the window's lowest and highest price, in
chunks so a huge window never holds the writer for long. Each winner is credited ``payout`` with its
ledger row in the same transaction; a voided window refunds the stake. The status guard
(``status = 'confirmed'``) and the ledger's ``UNIQUE (ref_type, ref_id)`` make every bet settle
exactly once, whichever resolver gets there first and however often a crashed run is repeated.
"""

from __future__ import annotations

from dataclasses import dataclass

import apsw

from app.ledger.store import credit


@dataclass(frozen=True, slots=True)
class Settled:
    bet_id: str
    address: str
    status: str  # won | lost | void
    paid: int  # micro-units credited (payout, refund or 0)
    balance: int | None  # the trader's balance after this row, None if unchanged


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a window ends: `void`, or touched between `lo` and `hi` (cents)."""

    void: bool
    lo: int = 0
    hi: int = 0


def settle_chunk(t_start: int, outcome: Outcome, now_ms: int, limit: int):
    """A writer job settling up to `limit` open bets of the window; returns the `Settled` rows."""

    def job(conn: apsw.Connection) -> list[Settled]:
        rows: list[tuple[str, int, str, int]]  # (bet_id, user_id, status, stake-or-payout), SQLite types
        if outcome.void:
            rows = conn.execute(
                "UPDATE bets SET status = 'void', settled_at = :now WHERE id IN"
                " (SELECT id FROM bets WHERE target_time = :t AND status = 'confirmed' LIMIT :n)"
                " RETURNING bet_id, user_id, status, stake",
                {"t": t_start, "n": limit, "now": now_ms},
            ).fetchall()  # type: ignore[assignment]  # apsw types rows loosely
        else:
            rows = conn.execute(
                "UPDATE bets SET settled_at = :now,"
                " status = CASE WHEN min_price <= :hi AND max_price >= :lo THEN 'won' ELSE 'lost' END"
                " WHERE id IN (SELECT id FROM bets WHERE target_time = :t AND status = 'confirmed' LIMIT :n)"
                " RETURNING bet_id, user_id, status, payout",
                {"t": t_start, "n": limit, "now": now_ms, "lo": outcome.lo, "hi": outcome.hi},
            ).fetchall()  # type: ignore[assignment]
        if not rows:
            return []
        user_ids = sorted({r[1] for r in rows})
        marks = ",".join("?" * len(user_ids))
        addresses = dict(conn.execute(f"SELECT id, address FROM users WHERE id IN ({marks})", user_ids))  # noqa: S608
        out = []
        for bet_id, user_id, status, amount in rows:
            if status == "won":
                balance = credit(conn, user_id, amount, "payout", bet_id, now_ms)
            elif status == "void":
                balance = credit(conn, user_id, amount, "refund", bet_id, now_ms)
            else:
                out.append(Settled(bet_id, addresses[user_id], status, 0, None))
                continue
            out.append(Settled(bet_id, addresses[user_id], status, amount, balance))
        return out

    return job


def open_windows(conn: apsw.Connection, before_s: int, limit: int = 100) -> list[int]:
    """Start times of windows that still hold open bets and started before `before_s` (partial index)."""
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT target_time FROM bets WHERE status = 'confirmed' AND target_time < ?"
            " ORDER BY target_time LIMIT ?",
            (before_s, limit),
        )
    ]


def oldest_open_window(conn: apsw.Connection) -> int | None:
    row = conn.execute("SELECT min(target_time) FROM bets WHERE status = 'confirmed'").fetchone()
    return row[0] if row else None
