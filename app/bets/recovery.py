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
- The rebuild reads the open bets (status ``confirmed``) of the current week and, in one MULTI that
  fails if another worker finished first (WATCH), replaces every column's exposure hashes, the cell
  claims, and the nonces of bets placed within the nonce's 90 s (as ``*|<bet id>``: the signed text's
  fingerprint is not stored, so a retry is recognised by its cell and stake, `app.bets.placement`;
  a nonce that names a bet is kept, one holding only a refusal's trace is replaced), then sets the key.

A `resume` after `<rebuilt at>` is honest too: the trader's event Stream may have lost events before
it, so a resume from an earlier id answers ``complete: false`` (app.realtime.taps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import apsw
import redis

from app.auth.signatures import NONCE_TTL_S
from app.bets.claims import EXPOSURE_GRACE_S
from app.keys import (
    EXPOSURE_COLUMNS,
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

# Compare-and-delete: forget the key only if it still says what this worker read.
_FORGET = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
# A rebuilt nonce: set unless the key already names a bet (a value that survived, with the signed text's
# fingerprint: better than the rebuilt one). A refusal's trace (`<fingerprint>|`, e.g. a retry answered
# `recovering` meanwhile) is replaced: else the next retry would be judged afresh, as a second bet.
_NONCE = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, -1) ~= '|' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


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


def open_bets(conn: apsw.Connection) -> list[OpenBet]:
    """Every bet not yet settled. The current week holds them all: the weekly rollover carries the
    open ones into the new file (app.storage.rollover)."""
    rows = conn.execute(
        "SELECT b.bet_id, u.address, b.target_time, b.row, b.payout, b.nonce, b.placed_at"
        " FROM bets b JOIN users u ON u.id = b.user_id WHERE b.status = 'confirmed'"
    )
    return [OpenBet(*r) for r in rows]


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

    def __init__(self, r: redis.Redis, read_open_bets: Callable[[], list[OpenBet]], column_s: int) -> None:
        self.r = r
        self.read_open_bets = read_open_bets
        self.column_s = column_s
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
        it first (then the state is known as well). Raises redis.RedisError."""
        bets = self.read_open_bets()
        now_s = now_ms // 1000
        r = self.r
        # Stamped by Redis's clock, as the event ids that `resume` compares with it are (app.realtime.taps)
        sec, usec = r.time()
        stamp = sec * 1000 + usec // 1000
        with r.pipeline(transaction=True) as pipe:
            pipe.watch(REDIS_STATE_KEY)
            if pipe.get(REDIS_STATE_KEY) is not None:
                return False
            stale = [
                *pipe.scan_iter("tap:exp:*", count=1000),
                *pipe.scan_iter("tap:expb:*", count=1000),
                *pipe.scan_iter("tap:cell:*", count=1000),
            ]
            pipe.multi()
            for chunk in range(0, len(stale), 1000):
                pipe.delete(*stale[chunk : chunk + 1000])
            pipe.delete(EXPOSURE_COLUMNS)  # (the scan above also matches it)
            columns: set[int] = set()
            for b in bets:
                ekey, bkey = exposure_key(b.t_start), exposure_bets_key(b.t_start)
                pipe.hincrby(ekey, str(b.row), b.payout)
                pipe.hincrby(ekey, "t", b.payout)
                pipe.hset(bkey, b.bet_id, f"{b.row}:{b.payout}")
                columns.add(b.t_start)
                cell_ttl = b.t_start + self.column_s - now_s + 60  # as the claim sets it
                if cell_ttl > 0:
                    pipe.set(cell_key(b.address, f"{b.t_start}:{b.row}"), b.bet_id, ex=cell_ttl)
                nonce_ttl = b.placed_at // 1000 + NONCE_TTL_S - now_s
                if nonce_ttl > 0:
                    value = f"{UNKNOWN_FINGERPRINT}|{b.bet_id}"
                    pipe.eval(_NONCE, 1, nonce_key(b.address, b.nonce), value, nonce_ttl)
            for t in columns:
                ttl = max(1, t + self.column_s + EXPOSURE_GRACE_S - now_s)
                pipe.expire(exposure_key(t), ttl)
                pipe.expire(exposure_bets_key(t), ttl)
                pipe.zadd(EXPOSURE_COLUMNS, {str(t): t})
            pipe.set(REDIS_STATE_KEY, f"{run_id}|{stamp}")
            try:
                pipe.execute()
            except redis.WatchError:
                return False
        self.missing_since = None
        self.rebuilt += 1
        log.warning(
            "bet state rebuilt from SQLite: %d open bets, %d columns (exposure, cell claims, recent nonces)",
            len(bets),
            len(columns),
        )
        return True
