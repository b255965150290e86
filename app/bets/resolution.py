"""Settling a column's bets (SPEC §3), as jobs for the single writer.

A column is settled set-wise through the covering index ``(target_time, min_price, max_price)``: one
UPDATE marks every open bet of the window won or lost from the window's lowest and highest price, in
chunks so a huge window never holds the writer for long. Each winner is credited ``payout`` with its
ledger row in the same transaction; a voided window refunds the stake. The status guard
(``status = 'confirmed'``) and the ledger's ``UNIQUE (ref_type, ref_id)`` make every bet settle
exactly once, whichever resolver gets there first and however often a crashed run is repeated.

The same transaction adds the chunk to ``house_days`` (the house's result per UTC day and multiplier
bucket, migration 004), so the operator console never sums a day of bets: it is exactly as durable,
and counts each bet exactly once, as the settlement itself.
"""

from __future__ import annotations

import datetime as dt
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
        # (bet_id, user_id, status, stake-or-payout, stake, multiplier), SQLite types
        rows: list[tuple[str, int, str, int, int, int]]
        if outcome.void:
            rows = conn.execute(
                "UPDATE bets SET status = 'void', settled_at = :now WHERE id IN"
                " (SELECT id FROM bets WHERE target_time = :t AND status = 'confirmed' LIMIT :n)"
                " RETURNING bet_id, user_id, status, stake, stake, multiplier",
                {"t": t_start, "n": limit, "now": now_ms},
            ).fetchall()  # type: ignore[assignment]  # apsw types rows loosely
        else:
            rows = conn.execute(
                "UPDATE bets SET settled_at = :now,"
                " status = CASE WHEN min_price <= :hi AND max_price >= :lo THEN 'won' ELSE 'lost' END"
                " WHERE id IN (SELECT id FROM bets WHERE target_time = :t AND status = 'confirmed' LIMIT :n)"
                " RETURNING bet_id, user_id, status, payout, stake, multiplier",
                {"t": t_start, "n": limit, "now": now_ms, "lo": outcome.lo, "hi": outcome.hi},
            ).fetchall()  # type: ignore[assignment]
        if not rows:
            return []
        user_ids = sorted({r[1] for r in rows})
        marks = ",".join("?" * len(user_ids))
        addresses = dict(conn.execute(f"SELECT id, address FROM users WHERE id IN ({marks})", user_ids))  # noqa: S608
        add_to_house_days(conn, now_ms, [(r[2], r[3], r[4], r[5]) for r in rows])
        out = []
        for bet_id, user_id, status, amount, _stake, _mult in rows:
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


BUCKETS = (("1-2", 20_000), ("2-5", 50_000), ("5-10", 100_000), ("10-30", 300_000), ("30-100", None))


def bucket_of(multiplier: int) -> str:
    """The multiplier bucket (SPEC §4's calibration buckets) of a multiplier in 1e-4 units."""
    for name, below in BUCKETS:
        if below is None or multiplier < below:
            return name
    raise AssertionError("unreachable")


def add_to_house_days(conn: apsw.Connection, now_ms: int, rows: list[tuple[str, int, int, int]]) -> None:
    """Add settled bets — (status, payout-or-refund, stake, multiplier) — to today's ``house_days``."""
    if not rows:
        return
    day = dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.UTC).date().isoformat()
    sums: dict[str, list[int]] = {}
    for status, amount, stake, multiplier in rows:
        s = sums.setdefault(bucket_of(multiplier), [0, 0, 0, 0, 0, 0])  # bets won staked paid voided refunded
        if status == "void":
            s[4] += 1
            s[5] += amount
        else:
            s[0] += 1
            s[2] += stake
            if status == "won":
                s[1] += 1
                s[3] += amount
    conn.executemany(
        "INSERT INTO house_days (day, bucket, bets, won, staked, paid, voided, refunded)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, bucket) DO UPDATE SET"
        " bets = bets + excluded.bets, won = won + excluded.won, staked = staked + excluded.staked,"
        " paid = paid + excluded.paid, voided = voided + excluded.voided,"
        " refunded = refunded + excluded.refunded",
        [(day, b, *v) for b, v in sums.items()],
    )


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
