"""Ledger integrity of one week file (SPEC §10), used by `flask integrity-check`.

For every user: the ledger's `balance_after` chains without a gap from zero (the week's first row is
the opening balance carried in, or the first deposit), no balance is negative, and `users.balance`
equals the last `balance_after` — so balance = opening balance + the sum of the ledger rows. For every
bet: exactly one debit row of `-stake` (except bets carried in by the rollover, whose debit is in the
previous week's file and whose stake the opening row already reflects); a won bet exactly one payout
row of `payout`, a void bet exactly one refund row of `stake`, and an open or lost bet none. Every
violation names its rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import apsw

from app.db import connect


@dataclass(frozen=True)
class Violation:
    file: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.file}: {self.kind}: {self.detail}"


def check_connection(conn: apsw.Connection, name: str) -> Iterator[Violation]:
    # 1. balance_after chains per user, never negative, and ends at users.balance
    last: dict[int, tuple[int, int]] = {}  # user -> (ledger id, balance_after)
    for lid, uid, amount, after, ref_type, ref_id in conn.execute(
        "SELECT id, user_id, amount, balance_after, ref_type, ref_id FROM transaction_ledger"
        " ORDER BY user_id, id"
    ):
        prev = last.get(uid, (None, 0))[1]
        if prev + amount != after:
            yield Violation(
                name,
                "chain_broken",
                f"ledger row {lid} (user {uid}, {ref_type} {ref_id}): {prev} + {amount} != {after}",
            )
        if after < 0:
            yield Violation(name, "negative_balance", f"ledger row {lid} (user {uid}): balance_after {after}")
        last[uid] = (lid, after)
    for uid, address, balance in conn.execute("SELECT id, address, balance FROM users ORDER BY id"):
        expected = last.get(uid, (None, 0))[1]
        if balance != expected:
            yield Violation(
                name,
                "balance_mismatch",
                f"user {uid} ({address}): balance {balance} but ledger ends at {expected}"
                + (f" (row {last[uid][0]})" if uid in last else " (no ledger rows)"),
            )
        if balance < 0:
            yield Violation(name, "negative_balance", f"user {uid} ({address}): balance {balance}")

    # 2. every bet has its debit; every settled bet its payout/refund, exactly once
    expected_rows = (
        ("bet", "-b.stake", "b.carried = 0", "debit"),  # a carried bet's debit is in the previous week
        ("payout", "b.payout", "b.status = 'won'", "payout"),
        ("refund", "b.stake", "b.status = 'void'", "refund"),
    )
    for ref_type, amount_expr, when, label in expected_rows:
        for bet_id, status, n, amounts in conn.execute(
            f"SELECT b.bet_id, b.status, count(l.id), group_concat(l.id || ':' || l.amount)"  # noqa: S608
            f" FROM bets b LEFT JOIN transaction_ledger l"
            f"  ON l.ref_type = '{ref_type}' AND l.ref_id = b.bet_id"
            f"  AND l.user_id = b.user_id AND l.amount = {amount_expr}"
            f" WHERE {when} GROUP BY b.id HAVING count(l.id) != 1"
        ):
            yield Violation(
                name,
                f"{label}_missing" if n == 0 else f"{label}_duplicated",
                f"bet {bet_id} ({status}) has {n} matching {ref_type} rows ({amounts or 'none'})",
            )
        for lid, ref_id, amount in conn.execute(
            f"SELECT l.id, l.ref_id, l.amount FROM transaction_ledger l"  # noqa: S608
            f" WHERE l.ref_type = '{ref_type}' AND NOT EXISTS (SELECT 1 FROM bets b WHERE b.bet_id = l.ref_id"
            f"  AND b.user_id = l.user_id AND l.amount = {amount_expr} AND {when})"
        ):
            yield Violation(
                name,
                f"orphan_{ref_type}",
                f"ledger row {lid}: {ref_type} {amount} for {ref_id} matches no such bet",
            )


def check_file(path: Path) -> list[Violation]:
    conn = connect(path, readonly=True)
    try:
        conn.execute("BEGIN")  # one consistent snapshot while the writer carries on
        try:
            return list(check_connection(conn, path.name))
        finally:
            conn.execute("COMMIT")
    finally:
        conn.close()
