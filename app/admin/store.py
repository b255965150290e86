"""The SQL of the operator console: the betting actions log and the house's result (migration 004)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import apsw

from app.storage.db import week_schemas


def record_betting_action(*, at: int, address: str, action: str, reason: str | None, ip: str | None):
    """A writer job: one row of `betting_actions`; returns its id."""

    def job(conn: apsw.Connection) -> int:
        row = conn.execute(
            "INSERT INTO betting_actions (at, address, action, reason, ip) VALUES (?, ?, ?, ?, ?)"
            " RETURNING id",
            (at, address, action, reason, ip),
        ).fetchone()
        assert row is not None
        return int(row[0])

    return job


def recent_betting_actions(conn: apsw.Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` halts and reopens, across the current and the attached weeks."""
    out: list[dict[str, Any]] = []
    for schema, week in week_schemas(conn):
        if len(out) >= limit:
            break
        rows = conn.execute(
            f"SELECT at, address, action, reason, ip FROM {schema}.betting_actions"  # noqa: S608
            " ORDER BY id DESC LIMIT ?",
            (limit - len(out),),
        )
        out += [
            {"at": at, "address": addr, "action": action, "reason": reason, "ip": ip, "week": week}
            for at, addr, action, reason, ip in rows
        ]
    return out


def house_days(conn: apsw.Connection, since_day: str | None = None) -> list[tuple]:
    """Rows (day, bucket, bets, won, staked, paid, voided, refunded) of the current week file."""
    sql = "SELECT day, bucket, bets, won, staked, paid, voided, refunded FROM house_days"
    if since_day is None:
        return list(conn.execute(sql + " ORDER BY day, bucket"))
    return list(conn.execute(sql + " WHERE day >= ? ORDER BY day, bucket", (since_day,)))


def utc_day(now_s: float) -> str:
    return dt.datetime.fromtimestamp(now_s, tz=dt.UTC).date().isoformat()
