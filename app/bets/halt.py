"""The operator's halt switch (SPEC §8b): betting halted for everyone until reopened.

The switch lives in Redis (``tap:betting:halt``, present while halted, JSON reason/by/at) so every
worker sees it, including both sides of a SIGHUP overlap. Taps read it *inside the claim script*
(`app.bets.claims`): the decision costs no extra round trip and no tap can slip through after the
operator's 200. Each worker also keeps a copy here, for the websocket `status` message: it is updated
at once by the ``betting`` control message the admin route publishes, and re-read every second by
the console worker (`workers/console.py`) in case a message was missed.

The durable record of each action (who, when, why) is the `betting_actions` table (`app.admin.store`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import orjson
import redis

from app.keys import BETTING_HALT_KEY, CHANNEL_CONTROL, betting_message

HALT_RETRY_AFTER_S = 30  # what a refused tap is told; the operator decides when it ends


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

    @property
    def open(self) -> bool:
        return self.state.open

    def refresh(self, r: redis.Redis, now_ms: int) -> HaltState:
        """Re-read the switch from Redis (once a second, and at start). A failure is kept in
        `read_error` (the copy keeps its last state and `read_at`) and raised."""
        try:
            raw = r.get(BETTING_HALT_KEY)
        except redis.RedisError as exc:
            self.read_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            raise
        self.state = decode_halt(cast("bytes | None", raw))
        self.read_at, self.read_error = now_ms, None
        return self.state

    def apply(self, open_: bool, reason: str | None) -> None:
        """A ``betting`` control message: the switch moved (by/at are re-read on the next refresh)."""
        self.state = HaltState() if open_ else HaltState(open=False, reason=reason or "halted")

    def set(self, r: redis.Redis, *, open_: bool, reason: str | None, by: str, at: int) -> HaltState:
        """Halt (`open_` False, with a reason) or reopen, and tell every worker, in one transaction."""
        state = HaltState() if open_ else HaltState(open=False, reason=reason, by=by, at=at)
        pipe = r.pipeline(transaction=True)
        if open_:
            pipe.delete(BETTING_HALT_KEY)
        else:
            pipe.set(BETTING_HALT_KEY, orjson.dumps({"reason": reason, "by": by, "at": at}))
        pipe.publish(CHANNEL_CONTROL, betting_message(open_, reason))
        pipe.execute()
        self.state = state
        self.read_at, self.read_error = at, None  # Redis took it: known as of now
        return state
