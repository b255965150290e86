"""After each committed batch: tell traders what happened to their bets, in one Redis round trip.

The writer calls `on_done` for every bet job as soon as the batch has committed (or the job failed),
then `flush` once per batch; `flush` sends everything collected in one pipeline from a separate
greenlet, so the writer can start the next batch at once. Per-user messages go to the Redis channel
``tap:user:<address>``, from which the websocket listener of whichever worker holds the trader's
connection delivers them. A Redis failure here loses only notifications: the bet is committed and
`GET /bets/<id>` answers from SQLite. A failed pipeline is sent again a few times (every op is
idempotent); after that `app.bets.reconcile` repairs what is left (a pending record past its queue
deadline), so a rejected bet's cell claim is always freed in the end.
"""

from __future__ import annotations

__all__ = ["BetNotifier", "confirmed_json", "pending_json", "rejection_args"]

import logging
import time

import gevent
import orjson
import redis

from app.bets.claims import (
    CONFIRM_LUA,
    REJECT_LUA,
    ScriptArg,
    confirm_args,
    reject_args,
)
from app.bets.store import NewBet
from app.ledger.store import Rejected
from app.metrics import Metrics
from app.storage.writes import Expired, OutcomeUnknown
from app.units import format_money, format_multiplier

log = logging.getLogger(__name__)


def rejection_reason(exc: BaseException) -> str:
    if isinstance(exc, Rejected):
        return exc.reason
    if isinstance(exc, Expired):
        return "timeout"
    return "internal_error"


class BetNotifier:
    MAX_RETRY_OPS = 50_000  # beyond this, failed notifications are dropped (the reconciler repairs)
    RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 15)

    def __init__(self, r: redis.Redis, metrics: Metrics | None = None) -> None:
        self.r = r
        self.metrics = metrics
        self._ops: list[tuple] = []
        self._reject = r.register_script(REJECT_LUA)
        self._confirm = r.register_script(CONFIRM_LUA)
        self._retrying = 0  # ops waiting for a retry

    def on_done(self, bet: NewBet, accepted_at: float, ok: bool, value: object) -> None:
        """Called by the writer after the commit. `value` is the new balance, or the exception."""
        if ok:
            assert isinstance(value, int)
            self._ops.append(
                (
                    "confirm",
                    *confirm_args(
                        bet_id=bet.bet_id,
                        address=bet.address,
                        message=confirmed_json(bet),
                        balance_message=orjson.dumps({"type": "balance", "balance": format_money(value)}),
                        always=True,
                    ),
                )
            )
            if self.metrics:
                self.metrics.bets_confirmed.inc()
                self.metrics.bet_confirm_seconds.observe(time.monotonic() - accepted_at)
        elif isinstance(value, OutcomeUnknown):
            # The writer cannot tell whether the bet committed (stopped mid-commit): say nothing we do
            # not know. The pending record and the cell claim stay; GET /bets/<id> reconciles from
            # SQLite (confirmed if the row is there, `not_committed` once the queue deadline passed).
            log.warning("bet %s: outcome unknown (%s); left pending for reconciliation", bet.bet_id, value)
            if self.metrics:
                self.metrics.bets_rejected.labels("unknown").inc()
        else:
            reason = rejection_reason(value)  # type: ignore[arg-type]
            if reason == "internal_error":
                log.error("bet %s failed in the writer: %r", bet.bet_id, value)
            self._ops.append(("reject", *rejection_args(bet, reason)))
            if self.metrics:
                self.metrics.bets_rejected.labels(reason).inc()

    def flush(self) -> None:
        if self._ops:
            ops, self._ops = self._ops, []
            gevent.spawn(self._send, ops)

    def _send(self, ops: list[tuple], attempt: int = 0) -> None:
        """One pipeline for the batch. On a Redis failure the same ops are sent again later: they are
        idempotent (compare-and-delete, publish once), and a rejection that never reached Redis would
        leave the trader's cell claimed until the column ends (issue 10 item 5)."""
        pipe = self.r.pipeline(transaction=False)
        for op in ops:
            script = self._confirm if op[0] == "confirm" else self._reject
            script(keys=op[1], args=op[2], client=pipe)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            if attempt >= len(self.RETRY_DELAYS_S) or self._retrying + len(ops) > self.MAX_RETRY_OPS:
                log.error("dropped %d bet notifications after %d attempts: %s", len(ops), attempt + 1, exc)
                return
            log.warning("could not send %d bet notifications (%s); retrying", len(ops), exc)
            self._retrying += len(ops)
            try:
                gevent.sleep(self.RETRY_DELAYS_S[attempt])
            finally:
                self._retrying -= len(ops)
            self._send(ops, attempt + 1)


def confirmed_json(bet: NewBet) -> bytes:
    return orjson.dumps(
        {
            "type": "bet:confirmed",
            "bet_id": bet.bet_id,
            "status": "confirmed",
            "cell": bet.cell,
            "stake": format_money(bet.stake),
            "multiplier": format_multiplier(bet.multiplier),
            "payout": format_money(bet.payout),
        }
    )


def rejection_args(bet: NewBet, reason: str, owner: str | None = None) -> tuple[list[str], list[ScriptArg]]:
    """keys, args of the reject script for `bet`."""
    record = orjson.dumps(_pending_record(bet, owner) | {"status": "rejected", "reason": reason})
    message = orjson.dumps({"type": "bet:rejected", "bet_id": bet.bet_id, "cell": bet.cell, "reason": reason})
    return reject_args(bet_id=bet.bet_id, address=bet.address, cell=bet.cell, record=record, message=message)


def _pending_record(bet: NewBet, owner: str | None = None) -> dict:
    return {
        "bet_id": bet.bet_id,
        "address": bet.address,
        "status": "pending",
        "cell": bet.cell,
        "stake": bet.stake,
        "multiplier": bet.multiplier,
        "payout": bet.payout,
        "placed_at": bet.placed_at,
        "owner": owner,
    }


def pending_json(bet: NewBet, owner: str | None = None) -> bytes:
    """The pending record; `owner` is the instance whose write queue holds the bet."""
    return orjson.dumps(_pending_record(bet, owner))
