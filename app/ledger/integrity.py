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

from app.storage.db import connect


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


def _meta(conn: apsw.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM week_meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def previous_week_file(path: Path) -> Path | None:
    """The week file `path` was rolled over from (``week_meta.previous``), if it is still local."""
    conn = connect(path, readonly=True)
    try:
        name = _meta(conn, "previous")
    finally:
        conn.close()
    if name is None:
        return None
    prev = path.parent / name
    return prev if prev.exists() else None


def check_link(prev: Path, nxt: Path) -> list[Violation]:
    """Violations of the carry from `prev` (closed) into `nxt` (the week rolled over to)."""
    name = f"{prev.name} -> {nxt.name}"
    a = connect(prev, readonly=True)
    b = connect(nxt, readonly=True)
    try:
        a.execute("BEGIN")
        b.execute("BEGIN")
        return [
            *_link_balances(a, b, name, prev.name, nxt.name),
            *_link_bets(a, b, name, prev.name, nxt.name),
        ]
    finally:
        for conn in (a, b):
            if not conn.getautocommit():
                conn.execute("COMMIT")
            conn.close()


def _link_balances(
    a: apsw.Connection, b: apsw.Connection, name: str, prev: str, nxt: str
) -> Iterator[Violation]:
    """Closing balance in `prev` == opening row in `nxt`, user by user."""
    closing = {
        uid: (address, bal) for uid, address, bal in a.execute("SELECT id, address, balance FROM users")
    }
    opening: dict[int, tuple[int, int]] = {}
    for lid, uid, amount in b.execute(
        "SELECT id, user_id, amount FROM transaction_ledger WHERE ref_type = 'opening' ORDER BY id"
    ):
        if uid in opening:
            yield Violation(
                name, "opening_duplicated", f"user {uid}: opening rows {opening[uid][0]} and {lid}"
            )
        opening[uid] = (lid, amount)
    addresses = dict(b.execute("SELECT id, address FROM users"))
    for uid, (address, bal) in sorted(closing.items()):
        if uid not in opening:
            yield Violation(
                name,
                "opening_missing",
                f"user {uid} ({address}) closes at {bal} in {prev}; no opening row in {nxt}",
            )
            continue
        lid, amount = opening[uid]
        if amount != bal:
            yield Violation(
                name,
                "opening_mismatch",
                f"user {uid} ({address}) closes at {bal} in {prev} but opens at {amount} in {nxt}"
                f" (ledger row {lid}): {amount - bal:+d}",
            )
        if addresses.get(uid) != address:
            yield Violation(
                name, "user_mismatch", f"user {uid} is {address} in {prev}, {addresses.get(uid)} in {nxt}"
            )
    for uid in sorted(set(opening) - set(closing)):
        yield Violation(
            name,
            "opening_unknown",
            f"user {uid}: opening row {opening[uid][0]} in {nxt}, no such user in {prev}",
        )


def _link_bets(a: apsw.Connection, b: apsw.Connection, name: str, prev: str, nxt: str) -> Iterator[Violation]:
    """Carried into `nxt` == open at the close of `prev`; no bet in both otherwise."""
    cols = "bet_id, user_id, target_time, row, stake, payout"
    before = {r[0]: r for r in a.execute(f"SELECT {cols}, status FROM bets")}  # noqa: S608
    carried = {r[0]: r for r in b.execute(f"SELECT {cols}, status FROM bets WHERE carried = 1")}  # noqa: S608
    fresh = {r[0] for r in b.execute("SELECT bet_id FROM bets WHERE carried = 0")}
    for bet_id, row in sorted(before.items()):
        status = row[-1]
        if status == "confirmed" and bet_id not in carried:
            yield Violation(
                name,
                "carried_bet_missing",
                f"bet {bet_id} is open at the close of {prev} but not carried into {nxt}",
            )
        if bet_id in fresh:
            yield Violation(
                name, "bet_in_both_weeks", f"bet {bet_id} ({status} in {prev}) is also a new bet of {nxt}"
            )
    for bet_id, row in sorted(carried.items()):
        prior = before.get(bet_id)
        if prior is None:
            yield Violation(
                name,
                "carried_bet_unknown",
                f"bet {bet_id} is carried into {nxt} but does not exist in {prev}",
            )
        elif prior[-1] != "confirmed":
            kind = "settled_in_both" if row[-1] != "confirmed" else "carried_bet_settled_before"
            yield Violation(
                name, kind, f"bet {bet_id} is {prior[-1]} in {prev} and carried into {nxt} ({row[-1]} there)"
            )
        elif prior[:-1] != row[:-1]:
            yield Violation(
                name, "carried_bet_changed", f"bet {bet_id}: {prior[:-1]} in {prev}, {row[:-1]} in {nxt}"
            )
