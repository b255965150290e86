"""The single Redis round trip of a bet: claim its nonce, claim its cell, record it as pending.

One Lua script, so these happen atomically and cost one round trip on the hot path:

- ``tap:bn:<address>:<nonce>`` = ``<fingerprint>|<bet id>`` for 90 s (ADR-007) when the bet is
  accepted; a nonce that was accepted once answers every retry with that same bet. A request refused
  by a later check (SPEC §6 steps 6 and 7: halt, breaker, cell, stake, quote, one bet per cell,
  exposure) leaves ``<fingerprint>|`` instead: the nonce is used (SPEC §6, "SET NX" at step 5), so
  another body with it is 409 `nonce_conflict`, while the same signed body can be retried (e.g. after
  a 503 `betting_suspended` and its Retry-After) and is judged afresh.
- ``tap:cell:<address>:<cell>`` = bet id, until the column has ended: the fast answer to a second tap
  on the same cell (the database's UNIQUE constraint is the final word). Freed if the bet is rejected.
- ``tap:bet:<bet id>`` = the pending bet as JSON (with ``owner``, the process instance that queued
  it), so `GET /bets/<id>` and a retry can see it before the batch commits.
- ``tap:pending`` (sorted set, score = placed_at ms) indexes the pending records, so that a worker can
  find the bets a dead worker's queue took with it (`app.bets.reconcile`) without scanning keys.

The same script enforces the house's risk limits (SPEC §8b), so they cost no extra round trip and
concurrent taps cannot overshoot them (a Lua script runs alone):

- ``tap:state:known`` absent (Redis has lost its data and the bet state is not rebuilt from SQLite
  yet, `app.bets.recovery`): nothing is claimed, as for a halt; 503 `recovering`.
- ``tap:betting:halt`` present (an operator halted betting): nothing is claimed (the nonce keeps only
  its refusal trace); 503 `betting_halted`.
- exposure: ``tap:exp:<t_start>`` holds the open potential payout of the column (field ``t``) and of
  each cell (field ``<row>``). A bet whose payout would take its cell above `TAP_MAX_CELL_PAYOUT` or
  its column above `TAP_MAX_COLUMN_PAYOUT` is refused (422 `exposure_limit`) before anything but
  the nonce's refusal trace is written: no cell claim, no liability. An accepted bet adds its payout
  to both fields and records itself in ``tap:expb:<t_start>`` (bet id → ``<row>:<payout>``); every
  release (the writer's rejection, the reconciler, an abandoned claim) goes through that record,
  deleting it as it subtracts, so a bet's liability is released at most once however often a release
  is repeated.
  Settlement releases a whole column at once (`release_column`, called by the resolver): once a
  column has started nothing can be placed on it, so its liability matters only to the console.
  Both hashes expire `EXPOSURE_GRACE_S` after the column ends, whatever happens.

A claim whose bet is never queued must not dangle (issue 10 items 5 and 15): when the claim's reply
is lost (a Redis timeout after the script ran) or the writer refuses the job afterwards, the route
calls `abandon`, which releases the claim now — compare-and-delete, so it only ever removes this
bet's own keys — or, if Redis is unreachable, keeps retrying in the background. A retry of the same
nonce that meets such a claim releases it first and is then judged afresh.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import cast

import gevent
import orjson
import redis

from app.auth.signatures import NONCE_TTL_S
from app.keys import (
    BETTING_HALT_KEY,
    EXPOSURE_COLUMNS,
    PENDING_INDEX,
    REDIS_STATE_KEY,
    bet_key,
    cell_key,
    events_key,
    exposure_bets_key,
    exposure_key,
    nonce_key,
    user_channel,
)
from app.realtime.events import EMIT_LUA, rejected_event
from app.storage.redis_batch import ScriptBatcher, batched

log = logging.getLogger(__name__)

ScriptArg = bytes | str | int  # what redis-py's Script accepts as one argument

# KEYS: nonce, cell claim, bet record, pending index, halt switch, column exposure, its bets, columns,
#       the state marker (app.bets.recovery: absent, Redis has lost what it held: nothing is claimed)
# ARGV: 1 nonce value, 2 nonce ttl, 3 proceed, 4 bet id, 5 cell ttl, 6 record, 7 record ttl,
#       8 placed_at, 9 payout, 10 row, 11 cell cap, 12 column cap, 13 exposure ttl, 14 t_start
# Sums stay below 2^53 (each term is at most a cap, itself at most 1e15 micro-units): exact in Lua.
_CLAIM = """
local old = redis.call('GET', KEYS[1])
local held = string.match(ARGV[1], '^[^|]*') .. '|'
if old and old ~= held then return {0, old} end
local function refused(...)
  redis.call('SET', KEYS[1], held, 'EX', ARGV[2])
  return {...}
end
if redis.call('EXISTS', KEYS[9]) == 0 then return refused(6, '') end
local halt = redis.call('GET', KEYS[5])
if halt then return refused(4, halt) end
if ARGV[3] == '0' then return refused(1, '') end
local owner = redis.call('GET', KEYS[2])
if owner then return refused(2, owner) end
local payout = tonumber(ARGV[9])
local cell = tonumber(redis.call('HGET', KEYS[6], ARGV[10]) or '0')
if cell + payout > tonumber(ARGV[11]) then return refused(5, 'cell', tonumber(ARGV[11]) - cell) end
local col = tonumber(redis.call('HGET', KEYS[6], 't') or '0')
if col + payout > tonumber(ARGV[12]) then return refused(5, 'column', tonumber(ARGV[12]) - col) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[5])
redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[4])
redis.call('HINCRBY', KEYS[6], ARGV[10], payout)
redis.call('HSET', KEYS[7], ARGV[4], ARGV[10] .. ':' .. ARGV[9])
if redis.call('HINCRBY', KEYS[6], 't', payout) == payout then
  -- the column's first open bet (its hashes are new): their TTL, and the console's index
  redis.call('EXPIRE', KEYS[6], ARGV[13])
  redis.call('EXPIRE', KEYS[7], ARGV[13])
  redis.call('ZADD', KEYS[8], ARGV[14], ARGV[14])
end
return {3, ''}
"""

# Release one bet's liability (a Lua fragment; E1 = its column's exposure hash, E2 = that column's
# bets hash, B = the bet id): only if the bet is still counted, and then never again.
_RELEASE_EXPOSURE = """
local counted = redis.call('HGET', {E2}, {B})
if counted then
  redis.call('HDEL', {E2}, {B})
  local sep = string.find(counted, ':', 1, true)
  local p = tonumber(string.sub(counted, sep + 1))
  if redis.call('EXISTS', {E1}) == 1 then
    redis.call('HINCRBY', {E1}, string.sub(counted, 1, sep - 1), -p)
    redis.call('HINCRBY', {E1}, 't', -p)
  end
end
"""


def _release_exposure(e1: str, e2: str, bet: str) -> str:
    return _RELEASE_EXPOSURE.replace("{E1}", e1).replace("{E2}", e2).replace("{B}", bet)


EXPOSURE_GRACE_S = 3600  # a column's exposure keys outlive its end by this much (settled or not)

# Undo the claim of a bet that was never queued. Compare-and-delete: only this bet's nonce value and
# cell claim are removed (the nonce keeps its refusal trace "<fingerprint>|", as a refused claim leaves
# it: the same body may come again, another is 409); its record, if still pending, becomes rejected
# "not_queued" and the trader is told `bet:rejected` (KEYS[7] its event Stream, ARGV[5] its channel,
# ARGV[6] the event): a retry may have been answered with this bet meanwhile, from another worker
# during a reload, which knows nothing of the release. Told once: a record no longer pending is left.
_RELEASE = (
    EMIT_LUA
    + """
local n = 0"""
    + _release_exposure("KEYS[5]", "KEYS[6]", "ARGV[2]")
    + """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], string.match(ARGV[1], '^[^|]*') .. '|', 'KEEPTTL'); n = n + 1
end
if redis.call('GET', KEYS[2]) == ARGV[2] then redis.call('DEL', KEYS[2]); n = n + 1 end
local rec = redis.call('GET', KEYS[3])
if rec and cjson.decode(rec)['status'] == 'pending' then
  redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4]); n = n + 1
  emit(KEYS[7], ARGV[5], {ARGV[6]})
end
redis.call('ZREM', KEYS[4], ARGV[2])
return n
"""
)

# A bet is rejected (by the writer, or found lost by the reconciler): mark its record, free its cell
# (only if the cell still holds this bet), unindex it and tell the trader — once: a record already
# settled (rejected) is left alone, so a retried or duplicated call publishes nothing twice.
# Its liability is released with the cell (idempotently: see _RELEASE_EXPOSURE). The trader hears it
# through `emit` (app.realtime.events): kept in its event Stream (KEYS[6]) with an id. ARGV[6], ARGV[7]
# (optional): the notifier's token and retry window (`EMIT_LUA`).
REJECT_LUA = (
    EMIT_LUA
    + """
local rec = redis.call('GET', KEYS[1])
if redis.call('GET', KEYS[2]) == ARGV[3] then redis.call('DEL', KEYS[2]) end"""
    + _release_exposure("KEYS[4]", "KEYS[5]", "ARGV[3]")
    + """
redis.call('ZREM', KEYS[3], ARGV[3])
if rec and cjson.decode(rec)['status'] ~= 'pending' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
emit(KEYS[6], ARGV[4], {ARGV[5]}, ARGV[6], ARGV[7])
return 1
"""
)

# A bet committed: drop its pending record and index entry, tell the trader. The writer's own
# notification always publishes (ARGV[5] = '1': Redis may have lost the record); the reconciler only
# when the record was still there, so it never repeats what the writer already said.
# bet:confirmed and the new balance: two events (two ids), one pub/sub message (app.realtime.events).
# ARGV[6], ARGV[7] (optional): the notifier's token and retry window (`EMIT_LUA`): a writer notification
# retried after a lost reply is not published twice.
CONFIRM_LUA = (
    EMIT_LUA
    + """
local rec = redis.call('GET', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not rec and ARGV[5] ~= '1' then return 0 end
redis.call('DEL', KEYS[1])
local msgs = {ARGV[3]}
if ARGV[4] ~= '' then msgs[2] = ARGV[4] end
emit(KEYS[3], ARGV[2], msgs, ARGV[6], ARGV[7])
return 1
"""
)

# What a nonce holds now (KEYS[1]): a script, not a GET, so that it can share a round trip with
# concurrent taps' calls (app.storage.redis_batch).
_HELD = "return redis.call('GET', KEYS[1])"

PENDING_TTL_S = 24 * 3600
RETRY_EVERY_S = 0.5


class Claim(IntEnum):
    NONCE_USED = 0  # detail: "<fingerprint>|<bet id>" stored by the first request
    REFUSED = 1  # an earlier check refused the bet: only "<fingerprint>|" stored with the nonce
    CELL_TAKEN = 2  # detail: the bet id holding the cell
    ACCEPTED = 3
    HALTED = 4  # detail: the halt record (JSON: reason, by, at); only "<fingerprint>|" stored
    EXPOSURE = 5  # detail: "cell" or "column"; `room` the payout still available; as HALTED
    RECOVERING = 6  # Redis has lost the bet state, not rebuilt yet (app.bets.recovery); as HALTED


@dataclass(frozen=True, slots=True)
class Limits:
    """The exposure caps and the bet's own numbers the claim script needs (micro-units)."""

    payout: int
    row: int
    t_start: int
    cell_cap: int
    column_cap: int
    column_end: int  # Unix seconds: the exposure keys expire EXPOSURE_GRACE_S after it


def column_of(cell: str) -> int:
    """The column start of a cell id ``"<t_start>:<row>"`` (already validated when the bet was parsed)."""
    return int(cell.partition(":")[0])


@dataclass(frozen=True, slots=True)
class _Abandoned:
    address: str
    nonce: str
    fingerprint: str
    cell: str
    bet_id: str
    record: bytes  # the rejected record to leave behind
    until: float  # monotonic: give up once every key it could hold has expired


class BetClaims:
    def __init__(
        self, r: redis.Redis, batch: ScriptBatcher | None = None, *, retry_every_s: float = RETRY_EVERY_S
    ) -> None:
        self.r = r
        self.retry_every_s = retry_every_s  # how often abandoned claims are retried in the background
        self.instance = secrets.token_hex(8)  # this process's id in the records it queues
        # With a batcher, concurrent claims share one round trip (app.storage.redis_batch); the
        # script and what each caller gets back are the same.
        self._script = batched(r.register_script(_CLAIM), batch)
        self._release = r.register_script(_RELEASE)
        self._held = batched(r.register_script(_HELD), batch)
        self._abandoned: dict[str, _Abandoned] = {}
        self._retrier: gevent.Greenlet | None = None

    def claim(
        self,
        *,
        address: str,
        nonce: str,
        fingerprint: str,
        bet_id: str,
        cell: str,
        proceed: bool,
        cell_ttl_s: int,
        pending_json: bytes,
        limits: Limits,
        placed_at: int = 0,
    ) -> tuple[Claim, str, int]:
        """Run the claim script: (outcome, detail, room). With `proceed` False it only looks the nonce
        and the halt switch up (a check already failed). `room` is the payout still available when
        the outcome is EXPOSURE."""
        t_start = limits.t_start
        exposure_ttl = max(1, limits.column_end + EXPOSURE_GRACE_S - placed_at // 1000)
        res = self._script(
            keys=[
                nonce_key(address, nonce),
                cell_key(address, cell),
                bet_key(bet_id),
                PENDING_INDEX,
                BETTING_HALT_KEY,
                exposure_key(t_start),
                exposure_bets_key(t_start),
                EXPOSURE_COLUMNS,
                REDIS_STATE_KEY,
            ],
            args=[
                f"{fingerprint}|{bet_id}",
                NONCE_TTL_S,
                "1" if proceed else "0",
                bet_id,
                max(1, cell_ttl_s),
                pending_json,
                PENDING_TTL_S,
                placed_at,
                limits.payout,
                limits.row,
                limits.cell_cap,
                limits.column_cap,
                exposure_ttl,
                t_start,
            ],
        )
        detail = res[1].decode() if isinstance(res[1], bytes) else str(res[1])
        room = int(res[2]) if len(res) > 2 else 0
        return Claim(int(res[0])), detail, room

    def accepted(self, address: str, nonce: str) -> tuple[str, str] | None:
        """(fingerprint, bet id) when `nonce` was accepted for a bet, else None (unused, or only a
        refusal's trace). Read-only: for a tap refused before the claim (load), whose retry of an
        accepted nonce must still get its bet (app.bets.placement)."""
        raw = self._held(keys=[nonce_key(address, nonce)], args=[])
        if raw is None:
            return None
        fingerprint, _, bet_id = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition("|")
        return (fingerprint, bet_id) if bet_id else None

    # ---- claims whose bet was never queued --------------------------------------------------------
    def abandon(
        self,
        *,
        address: str,
        nonce: str,
        fingerprint: str,
        cell: str,
        bet_id: str,
        record: bytes,
        ttl_s: int,
        now: bool = True,
    ) -> None:
        """Release a claim whose bet this process never queued (its reply was lost, or the writer
        refused the job). Never raises: if Redis cannot be reached now (or `now` is False: it just
        timed out, and a second wait would double the trader's), the release is retried in the
        background until it succeeds or every key it could hold has expired (`ttl_s`)."""
        item = _Abandoned(address, nonce, fingerprint, cell, bet_id, record, time.monotonic() + max(ttl_s, 1))
        try:
            if not now:
                raise redis.TimeoutError("Redis just failed; releasing in the background")
            self._release_one(item)
        except redis.RedisError as exc:
            log.warning("claim of bet %s not released yet (%s); retrying in the background", bet_id, exc)
            self._abandoned[bet_id] = item
            if self._retrier is None or self._retrier.dead:
                self._retrier = gevent.spawn(self._retry_releases)

    def abandoned(self, bet_id: str) -> bool:
        """True if `bet_id` was claimed by this process, never queued, and is not released yet."""
        return bet_id in self._abandoned

    def release_abandoned(self, bet_id: str) -> None:
        """Release an abandoned claim now (a retry of its nonce is waiting); raises RedisError."""
        item = self._abandoned.get(bet_id)
        if item is not None:
            self._release_one(item)
            self._abandoned.pop(bet_id, None)

    def _release_one(self, item: _Abandoned) -> None:
        t_start = column_of(item.cell)
        self._release(
            keys=[
                nonce_key(item.address, item.nonce),
                cell_key(item.address, item.cell),
                bet_key(item.bet_id),
                PENDING_INDEX,
                exposure_key(t_start),
                exposure_bets_key(t_start),
                events_key(item.address),
            ],
            args=[
                f"{item.fingerprint}|{item.bet_id}",
                item.bet_id,
                item.record,
                PENDING_TTL_S,
                user_channel(item.address),
                rejected_event(item.bet_id, item.cell, "not_queued"),
            ],
        )

    def _retry_releases(self) -> None:
        while self._abandoned:
            gevent.sleep(self.retry_every_s)
            now = time.monotonic()
            for bet_id, item in list(self._abandoned.items()):
                if now > item.until:
                    log.error("gave up releasing the claim of bet %s: its keys have expired", bet_id)
                    self._abandoned.pop(bet_id, None)
                    continue
                try:
                    self._release_one(item)
                except redis.RedisError:
                    break  # still down: try again later
                self._abandoned.pop(bet_id, None)
                log.info("released the claim of bet %s, which was never queued", bet_id)

    def pending(self, bet_id: str) -> bytes | None:
        return cast("bytes | None", self.r.get(bet_key(bet_id)))  # decode_responses is off: bytes


def reject_args(
    *, bet_id: str, address: str, cell: str, record: bytes, message: bytes
) -> tuple[list[str], list[ScriptArg]]:
    """keys, args of REJECT_LUA (`record`: the rejected record; `message`: the bet:rejected JSON)."""
    t_start = column_of(cell)
    keys = [
        bet_key(bet_id),
        cell_key(address, cell),
        PENDING_INDEX,
        exposure_key(t_start),
        exposure_bets_key(t_start),
        events_key(address),
    ]
    return keys, [record, PENDING_TTL_S, bet_id, user_channel(address), message]


def confirm_args(
    *, bet_id: str, address: str, message: bytes, balance_message: bytes = b"", always: bool = False
) -> tuple[list[str], list[ScriptArg]]:
    """keys, args of CONFIRM_LUA (`message`: the bet:confirmed JSON; then the balance, if any).
    `always`: publish even if the pending record is gone (the writer's own notification)."""
    keys = [bet_key(bet_id), PENDING_INDEX, events_key(address)]
    return keys, [bet_id, user_channel(address), message, balance_message, "1" if always else "0"]


def release_column(r: redis.Redis, t_start: int) -> None:
    """Settlement: the column's bets are settled, none of its liability is open any more. One DEL of
    both hashes (idempotent; a rejection arriving later finds no record and releases nothing)."""
    pipe = r.pipeline(transaction=False)
    pipe.delete(exposure_key(t_start), exposure_bets_key(t_start))
    pipe.zrem(EXPOSURE_COLUMNS, t_start)
    pipe.execute()


def trim_exposure_index(r: redis.Redis, now_s: int) -> None:
    """Forget columns in ``tap:exp:cols`` whose exposure keys have expired (a column whose bets were all
    rejected is never settled, so nothing else would remove it)."""
    r.zremrangebyscore(EXPOSURE_COLUMNS, "-inf", now_s - EXPOSURE_GRACE_S - 3600)


def rejected_record(pending: bytes, reason: str) -> bytes:
    """The pending record JSON turned into a rejected one."""
    return orjson.dumps(orjson.loads(pending) | {"status": "rejected", "reason": reason})
