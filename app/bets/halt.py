"""The operator's halt switch (SPEC §8b): betting halted for everyone until reopened.

The switch lives in Redis (``tap:betting:halt``, present while halted, JSON reason/by/at) so every
worker sees it, including both sides of a SIGHUP overlap. Taps read it *inside the claim script*
(`app.bets.claims`): the decision costs no extra round trip and no tap can slip through after the
operator's 200. Each worker also keeps a copy here, for the websocket `status` message: it is updated
at once by the ``betting`` control message the admin route publishes, and re-read every second by
the console worker (`workers/console.py`) in case a message was missed.

The durable record of each action (who, when, why) is the `betting_actions` table (`app.admin.store`).

A Redis that loses its data (a new machine after a disaster-recovery restore, a Redis without
persistence restarted, the last second of an append-only file) would forget a halt, and betting would
reopen without anyone deciding it. ``tap:betting:known`` says this Redis holds the switch's state and
holds the time (`at`, Unix ms) of the newest action it took (set with every operator action, and by
`BettingSwitch.restore`). The console worker restores the switch from the newest `betting_actions` row
when a worker's once-a-second re-read finds the marker missing (all data lost), and once when the
worker starts or finds that Redis lost the bet state (`app.bets.recovery`, which also sees a restarted
Redis by its run_id), if that row is newer than the marker (the last second lost in a crash: the marker
of an earlier action survived): a halt there is set again (never a reopen: only a halt is restored, so
a doubt fails closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import orjson
import redis

from app.keys import BETTING_HALT_KEY, BETTING_KNOWN_KEY, CHANNEL_CONTROL, betting_message

HALT_RETRY_AFTER_S = 30  # what a refused tap is told; the operator decides when it ends

# KEYS: the known marker, the halt key. ARGV: the newest recorded action's `at` (0: none), the halt to
# restore ('' for none), the control channel, its `betting` message, the marker as this worker read it
# ('' for missing). The marker must be unchanged since that read (else another worker or an operator
# was first) and older than the action; the one worker that moves it restores the halt (unless one is
# already set) and tells every worker. 0: another was first; 1: nothing to restore; 2: the halt was
# restored.
RESTORE_LUA = """
local known = redis.call('GET', KEYS[1]) or ''
if known ~= ARGV[5] then return 0 end
if known ~= '' and (tonumber(known) or 0) >= tonumber(ARGV[1]) then return 1 end
redis.call('SET', KEYS[1], ARGV[1])
if ARGV[2] == '' or redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 2
"""


@dataclass(frozen=True, slots=True)
class HaltState:
    open: bool = True
    reason: str | None = None
    by: str | None = None  # the operator's address
    at: int | None = None  # Unix ms

    def to_json(self) -> dict[str, object]:
        return {"open": self.open, "reason": self.reason, "by": self.by, "at": self.at}


def decode_halt(raw: bytes | str | None) -> HaltState:
    """The state stored in ``tap:betting:halt`` (absent: open). A garbled value still halts."""
    if raw is None:
        return HaltState()
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return HaltState(open=False, reason="halted")
    if not isinstance(d, dict):
        return HaltState(open=False, reason="halted")
    reason = d.get("reason")
    return HaltState(
        open=False,
        reason=reason if isinstance(reason, str) else "halted",
        by=d.get("by") if isinstance(d.get("by"), str) else None,
        at=d.get("at") if isinstance(d.get("at"), int) else None,
    )


class BettingSwitch:
    """This worker's copy of the switch, and the two operator actions.

    The copy is only as good as its last read: `read_at` says when that was (None: never, so the
    default "open" is a guess) and `read_error` why the latest attempt failed. The console shows both,
    so an operator is not shown a state that Redis could not confirm as if it were current."""

    def __init__(self) -> None:
        self.state = HaltState()
        self.read_at: int | None = None  # Unix ms of the last successful read (or set) of the switch
        self.read_error: str | None = None  # why the latest read failed; None once one succeeds
        # False when the last read found Redis without the switch's state (`restore` puts it back)
        self.remembered = True
        self.known: str | None = None  # the marker as last read: the newest action's `at` Redis took

    @property
    def open(self) -> bool:
        return self.state.open

    def refresh(self, r: redis.Redis, now_ms: int) -> HaltState:
        """Re-read the switch from Redis (once a second, and at start). A failure is kept in
        `read_error` (the copy keeps its last state and `read_at`) and raised."""
        try:
            raw, known = cast("list[bytes | None]", r.mget(BETTING_HALT_KEY, BETTING_KNOWN_KEY))
        except redis.RedisError as exc:
            self.read_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            raise
        self.state = decode_halt(raw)
        self.read_at, self.read_error = now_ms, None
        self.remembered = known is not None or raw is not None
        self.known = None if known is None else known.decode(errors="replace")
        return self.state

    def restore(self, r: redis.Redis, last_action: dict[str, object] | None, now_ms: int) -> HaltState | None:
        """Redis may have forgotten the switch (module docstring): unless the marker read by the last
        `refresh` has moved since, or names the newest recorded action
        (`app.admin.store.recent_betting_actions`'s first row) or a later one, set the marker to that
        action and, when it is a halt, set that halt again and tell every worker. Returns the halt
        restored, or None. Raises redis.RedisError."""
        halt = ""
        state = None
        action_at = last_action.get("at") if last_action is not None else None
        if last_action is not None and last_action.get("action") == "halt":
            reason, by, at = last_action.get("reason"), last_action.get("address"), action_at
            state = HaltState(
                open=False,
                reason=reason if isinstance(reason, str) and reason else "halted",
                by=by if isinstance(by, str) else None,
                at=at if isinstance(at, int) else None,
            )
            halt = orjson.dumps({"reason": state.reason, "by": state.by, "at": state.at}).decode()
        message = betting_message(False, state.reason if state else None)
        done = r.eval(
            RESTORE_LUA,
            2,
            BETTING_KNOWN_KEY,
            BETTING_HALT_KEY,
            action_at if isinstance(action_at, int) else 0,
            halt,
            CHANNEL_CONTROL,
            message,
            self.known or "",
        )
        self.remembered = True
        if done != 2:
            return None
        self.state, self.read_at, self.read_error = cast("HaltState", state), now_ms, None
        return state

    def apply(self, open_: bool, reason: str | None) -> None:
        """A ``betting`` control message: the switch moved (by/at are re-read on the next refresh)."""
        self.state = HaltState() if open_ else HaltState(open=False, reason=reason or "halted")

    def set(self, r: redis.Redis, *, open_: bool, reason: str | None, by: str, at: int) -> HaltState:
        """Halt (`open_` False, with a reason) or reopen, and tell every worker, in one transaction."""
        state = HaltState() if open_ else HaltState(open=False, reason=reason, by=by, at=at)
        pipe = r.pipeline(transaction=True)
        pipe.set(BETTING_KNOWN_KEY, at)
        if open_:
            pipe.delete(BETTING_HALT_KEY)
        else:
            pipe.set(BETTING_HALT_KEY, orjson.dumps({"reason": reason, "by": by, "at": at}))
        pipe.publish(CHANNEL_CONTROL, betting_message(open_, reason))
        pipe.execute()
        self.state = state
        self.read_at, self.read_error = at, None  # Redis took it: known as of now
        return state
