"""Bets lost with a dead worker's write queue are announced at once (issue 10 item 16).

A bet answered 202 lives in its worker's in-memory write queue until the batch commits. If that
worker is killed (OOM, kill -9, a crash) the queue dies with it: no money moved, but the trader's
pending record stays in Redis and nobody tells them — `GET /bets/<id>` said `rejected: not_committed`
only 30 s later, and the websocket said nothing.

Every worker runs the `bet-reconciler` loop (`workers/bet_reconciler.py`). It keeps a heartbeat key
per process instance (``tap:worker:<instance>``, a few seconds' TTL) and, at start and then every
second, looks through the pending index (``tap:pending``) for records that can no longer commit:

- the record's owner (the instance whose queue took it) has no heartbeat: that process is gone; or
- the record is older than `LOST_AFTER_MS` (past the queue deadline by a wide margin): whoever owns it
  has expired the job — this also repairs a rejection whose notification never reached Redis.

For each, SQLite decides, in one job of this worker's writer (`declare_lost`): a bet already committed
(current or attached weeks) gets its record dropped and `bet:confirmed` (the dead worker may have
committed without telling); any other is recorded in ``lost_bets`` and gets `bet:rejected` reason
``not_committed``, its record marked rejected and its cell claim freed. The Redis side is one
idempotent script per bet, so two workers reconciling together (a SIGHUP overlap) announce once.

"No heartbeat" does not prove the owner dead. A Redis outage of a few seconds during a SIGHUP overlap
(or a Redis restart without persistence, which forgets every heartbeat) lets a live worker's heartbeat
lapse while its queue still holds bets it answered 202; `stop()` stretching the heartbeat over the
drain (`DRAIN_COVER_S`) fails too if Redis is away just then. Such a bet is taken for lost while its
writer is about to commit it. Reading SQLite first and rejecting in Redis afterwards therefore told the
trader `bet:rejected` (and released the cell and its liability) for a bet the writer then committed,
stake and all. Deciding inside the writer's transaction closes that: the lost mark and the bet's
insert serialise on SQLite's write lock, whichever comes second is refused (the trigger of
sql/006_lost_bets.sql; the writer then reports the same `not_committed`), and each bet has exactly one
outcome, the one the trader is told.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

import gevent
import orjson
import redis

from app.bets.claims import CONFIRM_LUA, REJECT_LUA, confirm_args, reject_args
from app.bets.placement import LOST_AFTER_MS  # the rule GET /bets/<id> applies too
from app.bets.store import declare_lost
from app.keys import PENDING_INDEX, bet_key, heartbeat_key
from app.services import Services
from app.units import format_money, format_multiplier

log = logging.getLogger(__name__)

HEARTBEAT_TTL_S = 5  # a killed worker's bets are announced within about this long
HEARTBEAT_EVERY_S = 1.0
DRAIN_COVER_S = 30  # on a graceful stop: the heartbeat outlives the writer's drain
SCAN_LIMIT = 2_000  # records looked at per pass (oldest first)
# How long a pass waits for its writer's decision. Well under HEARTBEAT_TTL_S - HEARTBEAT_EVERY_S: the
# pass runs between two of this process's own beats, which must not lapse while it waits.
DECIDE_WAIT_S = 2.0


@dataclass(frozen=True)
class ReconcileResult:
    rejected: list[str]
    confirmed: list[str]


def reconcile_orphans(svc: Services, now_ms: int, instance: str | None = None) -> ReconcileResult:
    """One pass: announce the pending bets that can no longer commit (see the module docstring).

    `instance` is the caller's own id: its records are judged by age only (its queue is alive).
    Raises redis.RedisError if Redis is unreachable, or the writer's error if SQLite could not decide
    (the caller retries on its next pass; every step is idempotent).
    """
    me = instance if instance is not None else svc.bet_claims.instance
    lost = find_lost(svc.redis, now_ms, me)
    out = ReconcileResult([], [])
    if not lost:
        return out
    try:
        committed = svc.writes.call(declare_lost(list(lost), now_ms), timeout=DECIDE_WAIT_S, priority=True)
    except gevent.Timeout:
        # The writer is busy or restarting: decide on a later pass (the job may still run; it is
        # idempotent, and the bets it marks lost are refused by their writer, which says so itself).
        log.warning("reconciler: the writer did not decide %d pending bets in time; next pass", len(lost))
        return out
    reject = svc.redis.register_script(REJECT_LUA)
    confirm = svc.redis.register_script(CONFIRM_LUA)
    for bet_id, rec in lost.items():
        if bet_id in committed:
            keys, args = confirm_args(bet_id=bet_id, address=rec["address"], message=_confirmed(rec))
            if confirm(keys=keys, args=args):
                out.confirmed.append(bet_id)
        else:
            record = orjson.dumps(rec | {"status": "rejected", "reason": "not_committed"})
            message = orjson.dumps(
                {"type": "bet:rejected", "bet_id": bet_id, "cell": rec["cell"], "reason": "not_committed"}
            )
            keys, args = reject_args(
                bet_id=bet_id, address=rec["address"], cell=rec["cell"], record=record, message=message
            )
            if reject(keys=keys, args=args):
                out.rejected.append(bet_id)
    if out.rejected or out.confirmed:
        log.warning(
            "reconciled pending bets no queue will commit: %d rejected (not_committed), %d confirmed late",
            len(out.rejected),
            len(out.confirmed),
        )
        for _ in out.rejected:
            svc.metrics.bets_rejected.labels("not_committed").inc()
    return out


def find_lost(r: redis.Redis, now_ms: int, me: str) -> dict[str, dict]:
    """The pending records (bet id → record) whose owner is gone or that are past LOST_AFTER_MS."""
    ids = [b.decode() for b in cast("list[bytes]", r.zrange(PENDING_INDEX, 0, SCAN_LIMIT - 1))]
    if not ids:
        return {}
    records: dict[str, dict] = {}
    gone: list[str] = []
    for bet_id, raw in zip(ids, r.mget([bet_key(i) for i in ids]), strict=True):
        rec = orjson.loads(raw) if raw else None
        if rec is None or rec.get("status") != "pending":
            gone.append(bet_id)  # settled or expired: only the index entry is left
        else:
            records[bet_id] = rec
    if gone:
        r.zrem(PENDING_INDEX, *gone)
    owners = sorted({o for rec in records.values() if (o := rec.get("owner")) and o != me})
    alive: dict[str, bool] = {}
    if owners:
        pipe = r.pipeline(transaction=False)
        for o in owners:
            pipe.exists(heartbeat_key(o))
        alive = dict(zip(owners, (bool(n) for n in pipe.execute()), strict=True))
    lost = {}
    for bet_id, rec in records.items():
        owner: str | None = rec.get("owner")
        too_old = now_ms - int(rec["placed_at"]) > LOST_AFTER_MS
        owner_dead = bool(owner) and owner != me and not alive.get(owner or "", False)
        if too_old or owner_dead:
            lost[bet_id] = rec
    return lost


def _confirmed(rec: dict) -> bytes:
    return orjson.dumps(
        {
            "type": "bet:confirmed",
            "bet_id": rec["bet_id"],
            "status": "confirmed",
            "cell": rec["cell"],
            "stake": format_money(rec["stake"]),
            "multiplier": format_multiplier(rec["multiplier"]),
            "payout": format_money(rec["payout"]),
        }
    )


def beat(r: redis.Redis, instance: str, ttl_s: int = HEARTBEAT_TTL_S) -> None:
    """This process instance is alive (and its queued bets are not lost) for `ttl_s` more seconds."""
    r.set(heartbeat_key(instance), b"1", ex=ttl_s)
