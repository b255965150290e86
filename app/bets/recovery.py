"""Redis losing its data while the app runs: what the bet path keeps there is rebuilt from SQLite.

Redis holds the fast side of the bet rules (`app.bets.claims`): each column's open liability (the
exposure caps of SPEC §8b), each trader's claim on a cell (one bet per cell), each signed bet's nonce
(a retry gets its bet). SQLite holds the bets themselves. A Redis that loses its data — restarted
without persistence, a `FLUSHALL`, the last second of its append-only file lost in a crash, a new
machine after a disaster-recovery restore (docs/OPERATIONS.md) — forgets the liability of bets that
are still open in SQLite, and the caps would then let the house take up to twice the risk it allows.

``tap:state:known`` = ``<Redis run_id>|<rebuilt at, Unix ms by Redis's clock>`` says that this Redis
holds that state, rebuilt (or first built) by the Redis server whose run_id it names. The claim script
refuses every tap while the key is missing (503 `recovering`): one EXISTS inside the script, no extra
round trip.

- Each worker's console loop (once a second) and a server process's start, before its workers
  (`workers.runtime.recover_at_start`), call `Recovery.check`. A key naming
  another run_id means Redis restarted since: whatever its last second held may be lost (appendfsync
  everysec), so the key is deleted (compare-and-delete) and taps are refused from then on.
- A worker that finds the key missing waits `DRAIN_S` (the write queue's deadline, QUEUE_MAX_WAIT_S,
  and a margin) before rebuilding: a bet claimed before the loss may still be in some worker's
  write queue, and its liability must be in SQLite when the rebuild reads it. No bet can be claimed
  meanwhile, so after the wait SQLite holds every bet that will ever commit from before the loss.
  At process start there is nothing of this process in flight and the rebuild runs at once, unless
  another worker's heartbeat (``tap:worker:*``, `app.bets.reconcile`) says a process is running: the
  old worker of a SIGHUP reload still drains its queue, so the new one waits as the running ones do.
- The rebuild reads the open bets (status ``confirmed``) of the current week, and those placed in
  the last 90 s, and, holding ``tap:state:rebuild`` (one worker at a time; in steps of `CHUNK` bets,
  `Recovery.rebuild`), replaces every column's exposure hashes and the cell claims (open bets), and
  the nonces of bets placed within the nonce's 90 s, settled or not (as ``*|<bet id>``: the signed
  text's fingerprint is not stored, so a retry is recognised by its cell and stake,
  `app.bets.placement`; a nonce that names a bet is kept, one holding only a refusal's trace is
  replaced), then sets the key.

A `resume` after `<rebuilt at>` is honest too: the trader's event Stream may have lost events before
it, so a resume from an earlier id answers ``complete: false`` (app.realtime.taps).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import apsw
import gevent
import orjson
import redis

from app.auth.signatures import NONCE_TTL_S
from app.bets.claims import EXPOSURE_GRACE_S
from app.keys import (
    EXPOSURE_COLUMNS,
    REBUILD_LOCK_KEY,
    REDIS_STATE_KEY,
    cell_key,
    exposure_bets_key,
    exposure_key,
    heartbeat_key,
    nonce_key,
)

log = logging.getLogger(__name__)

# A bet not committed by then is rejected ("timeout"), never committed late (app.bets.placement).
QUEUE_MAX_WAIT_S = 10.0
DRAIN_S = QUEUE_MAX_WAIT_S + 2.0  # a bet claimed before the loss is committed or expired by then
UNKNOWN_FINGERPRINT = "*"  # a rebuilt nonce: the bet is known, the signed text's fingerprint is not

CHUNK = 500  # bets (or stale keys) per step of a rebuild
REBUILD_LOCK_MS = 10_000  # one worker rebuilds; each step extends the lock by this much

# One step of a rebuild, only while this worker holds the lock (KEYS[1] = ARGV[1]), which it extends.
# KEYS: the lock, the state key, the columns index. ARGV: token, what, JSON items, run_id, lock ms.
# "del": the stale keys to delete; "bets": per bet [exposure hash ('' if settled), its bets hash, row,
# payout, bet id, cell claim ('' if settled or its column has ended), its ttl, nonce key ('' if older
# than its 90 s), nonce value, its ttl] as the claim script builds them; "done": per column [hashes,
# ttl, t_start], then the state key = run_id|Redis's time. Keys not in KEYS: Redis is one instance,
# never a cluster (app.keys).
_CHUNK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local items = cjson.decode(ARGV[3])
if ARGV[2] == 'del' then
  for _, k in ipairs(items) do redis.call('DEL', k) end
elseif ARGV[2] == 'bets' then
  for _, b in ipairs(items) do
    if b[1] ~= '' then
      redis.call('HINCRBY', b[1], b[3], b[4])
      redis.call('HINCRBY', b[1], 't', b[4])
      redis.call('HSET', b[2], b[5], b[3] .. ':' .. b[4])
    end
    if b[6] ~= '' then redis.call('SET', b[6], b[5], 'EX', b[7]) end
    if b[8] ~= '' then
      local v = redis.call('GET', b[8])
      -- a value naming a bet survived (with the signed text's fingerprint: better than this one); a
      -- refusal's trace (e.g. a retry answered `recovering` meanwhile) is replaced
      if not v or string.sub(v, -1) == '|' then redis.call('SET', b[8], b[9], 'EX', b[10]) end
    end
  end
else
  redis.call('DEL', KEYS[3])
  for _, c in ipairs(items) do
    redis.call('EXPIRE', c[1], c[3])
    redis.call('EXPIRE', c[2], c[3])
    redis.call('ZADD', KEYS[3], c[4], c[4])
  end
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], ARGV[4] .. '|' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
end
return 1
"""
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

# Compare-and-delete: forget the key only if it still says what this worker read.
_FORGET = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class StateUnverifiable(redis.RedisError):
    """Redis does not say which server it is (INFO refused, or no run_id): the state is never marked
    known and taps stay refused until an operator fixes the Redis setup."""


@dataclass(frozen=True, slots=True)
class OpenBet:
    bet_id: str
    address: str
    t_start: int
    row: int
    payout: int
    nonce: str
    placed_at: int  # ms
    open: bool = True  # not settled yet (else only its nonce is rebuilt)


def open_bets(conn: apsw.Connection, placed_since_ms: int) -> list[OpenBet]:
    """Every bet not yet settled, and those placed since `placed_since_ms` (their nonces: a bet on a
    near column is settled within its nonce's 90 s, and a retry must still get it). The current week
    holds every open one: the weekly rollover carries them into the new file (app.storage.rollover)."""
    rows = conn.execute(
        "SELECT b.bet_id, u.address, b.target_time, b.row, b.payout, b.nonce, b.placed_at,"
        " b.status = 'confirmed' FROM bets b JOIN users u ON u.id = b.user_id"
        " WHERE b.status = 'confirmed' OR b.placed_at >= ?",
        (placed_since_ms,),
    )
    return [OpenBet(b, a, t, row, payout, n, at, open=bool(o)) for b, a, t, row, payout, n, at, o in rows]


def rebuilt_at(raw: bytes | None) -> int | None:
    """When the state in `raw` (the key's value) was rebuilt, Unix ms; None if Redis does not know it."""
    if raw is None:
        return None
    try:
        return int(raw.partition(b"|")[2])
    except ValueError:
        return None


class Recovery:
    """One process's watch over ``tap:state:known`` (module docstring)."""

    def __init__(self, r: redis.Redis, read_open_bets: Callable[[int], list[OpenBet]], column_s: int) -> None:
        self.r = r
        self.read_open_bets = read_open_bets
        self.column_s = column_s
        self.chunk = CHUNK
        self.missing_since: int | None = None  # Unix ms: when this process first found the key missing
        self.rebuilt = 0  # rebuilds this process made (tests, logs)
        # Losses this process noticed (the key missing, or naming another run_id): whatever else Redis
        # held may be gone or a second old too, e.g. the operator's halt (the console re-checks it)
        self.losses = 0

    def check(self, now_ms: int, *, at_start: bool = False) -> bool:
        """True when Redis knows the state (perhaps just rebuilt here). Raises redis.RedisError."""
        raw = cast("bytes | None", self.r.get(REDIS_STATE_KEY))
        run_id = self._run_id()
        if raw is not None:
            if raw.partition(b"|")[0].decode(errors="replace") == run_id:
                self.missing_since = None
                return True
            # Redis restarted since the rebuild: the last second before its crash may be lost.
            self.r.eval(_FORGET, 1, REDIS_STATE_KEY, raw)
            log.error(
                "Redis restarted (run_id %s, state built by %s): bets refused until the bet state is"
                " rebuilt from SQLite",
                run_id,
                raw.partition(b"|")[0].decode(errors="replace"),
            )
        if at_start and self._others_running():
            at_start = False  # another process may still commit bets claimed before the loss
        if self.missing_since is None:
            self.missing_since = now_ms
            self.losses += 1
            if not at_start:
                log.error(
                    "Redis has lost the bet state (exposure, cell claims, nonces): bets refused; rebuilding"
                    " from SQLite in %.0f s, once every bet queued before the loss has committed or expired",
                    DRAIN_S,
                )
        if not at_start and now_ms - self.missing_since < DRAIN_S * 1000:
            return False
        return self.rebuild(run_id, now_ms)

    def _chunk(self, token: str, what: str, items: list, run_id: str = "") -> bool:
        """One step of the rebuild (`_CHUNK`); False if this worker no longer holds the lock."""
        payload = orjson.dumps([x.decode() if isinstance(x, bytes) else x for x in items])
        return bool(
            self.r.eval(
                _CHUNK,
                3,
                REBUILD_LOCK_KEY,
                REDIS_STATE_KEY,
                EXPOSURE_COLUMNS,
                token,
                what,
                payload,
                run_id,
                REBUILD_LOCK_MS,
            )
        )

    def _run_id(self) -> str:
        """The Redis server's run_id (INFO server). Without it a restart cannot be told apart and the
        state is never marked known, so every tap is refused: the error says what to change."""
        try:
            run_id = self.r.info("server").get("run_id")
        except redis.ResponseError as exc:  # an ACL without INFO (NoPermissionError), a renamed INFO
            raise StateUnverifiable(
                f"INFO server refused ({exc}): the bet state cannot be checked, so every tap is refused"
                " (503 recovering); allow INFO to the app's Redis user (ACL +info)"
            ) from exc
        if not run_id:
            raise StateUnverifiable(
                "INFO server has no run_id (not a plain Redis server?): the bet state cannot be checked,"
                " so every tap is refused (503 recovering)"
            )
        return str(run_id)

    def _others_running(self) -> bool:
        """Whether another process beats (its reconciler refreshes its heartbeat every second, also
        after a loss). Called at start only, before this process's own heartbeat exists."""
        return next(iter(self.r.scan_iter(heartbeat_key("*"), count=1000)), None) is not None

    def rebuild(self, run_id: str, now_ms: int) -> bool:
        """Put back the state from SQLite's open bets and mark it known. False if another worker did
        it first or is doing it (then the state is, or will be, known as well). Raises redis.RedisError.

        In chunks of `CHUNK` bets, each one script run that first checks that this worker still holds
        ``tap:state:rebuild``, yielding between them: one MULTI of 100,000 open bets blocked Redis for
        a second and this worker's hub for four (building it), and a chunk is atomic with the lock's
        check, so a worker that lost the lock (it expired) writes nothing more, and whatever it wrote
        before is deleted by the worker that took it over. Taps are refused until the last step sets
        the key, so nothing reads the half-built state."""
        bets = self.read_open_bets(now_ms - NONCE_TTL_S * 1000)
        now_s = now_ms // 1000
        r = self.r
        token = secrets.token_hex(8)
        if not r.set(REBUILD_LOCK_KEY, token, nx=True, px=REBUILD_LOCK_MS):
            return False
        try:
            if r.exists(REDIS_STATE_KEY):
                return False
            stale: list[bytes] = []
            for pattern in ("tap:exp:*", "tap:expb:*", "tap:cell:*"):  # (the first matches tap:exp:cols)
                stale.extend(r.scan_iter(pattern, count=1000))
            for i in range(0, len(stale), self.chunk):
                if not self._chunk(token, "del", stale[i : i + self.chunk]):
                    return False
                gevent.sleep(0)
            columns: set[int] = set()
            for i in range(0, len(bets), self.chunk):
                ops: list[list[str]] = []
                for b in bets[i : i + self.chunk]:
                    if b.open:
                        columns.add(b.t_start)
                    cell_ttl = b.t_start + self.column_s - now_s + 60  # as the claim sets it
                    nonce_ttl = b.placed_at // 1000 + NONCE_TTL_S - now_s
                    ops.append(
                        [
                            exposure_key(b.t_start) if b.open else "",
                            exposure_bets_key(b.t_start),
                            str(b.row),
                            str(b.payout),
                            b.bet_id,
                            cell_key(b.address, f"{b.t_start}:{b.row}") if b.open and cell_ttl > 0 else "",
                            str(cell_ttl),
                            nonce_key(b.address, b.nonce) if nonce_ttl > 0 else "",
                            f"{UNKNOWN_FINGERPRINT}|{b.bet_id}",
                            str(nonce_ttl),
                        ]
                    )
                if not self._chunk(token, "bets", ops):
                    return False
                gevent.sleep(0)
            marks = [
                [
                    exposure_key(t),
                    exposure_bets_key(t),
                    str(max(1, t + self.column_s + EXPOSURE_GRACE_S - now_s)),
                    str(t),
                ]
                for t in sorted(columns)
            ]
            # the key is stamped by Redis's clock, as are the event ids `resume` compares with it
            if not self._chunk(token, "done", marks, run_id):
                return False
        finally:
            r.eval(_UNLOCK, 1, REBUILD_LOCK_KEY, token)
        self.missing_since = None
        self.rebuilt += 1
        log.warning(
            "bet state rebuilt from SQLite: %d open bets, %d columns (exposure, cell claims, recent nonces)",
            sum(1 for b in bets if b.open),
            len(columns),
        )
        return True
