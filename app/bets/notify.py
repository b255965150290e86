"""After each committed batch: tell traders what happened to their bets, in one Redis round trip.

The writer calls `on_done` for every bet job as soon as the batch has committed (or the job failed),
then `flush` once per batch; `flush` sends everything collected in one pipeline from a separate
greenlet, so the writer can start the next batch at once. Per-user messages go to the Redis channel
``tap:user:<address>``, from which the websocket listener of whichever worker holds the trader's
connection delivers them. A Redis failure here loses only notifications: the bet is committed and
`GET /bets/<id>` answers from SQLite.
"""

from __future__ import annotations

import logging
import time

import gevent
import orjson
import redis

from app.bets.claims import PENDING_TTL_S, bet_key, cell_key
from app.bets.store import NewBet, Rejected
from app.metrics import Metrics
from app.units import format_money, format_multiplier
from app.writes import Expired, OutcomeUnknown

log = logging.getLogger(__name__)


def user_channel(address: str) -> str:
    return f"tap:user:{address}"


def rejection_reason(exc: BaseException) -> str:
    if isinstance(exc, Rejected):
        return exc.reason
    if isinstance(exc, Expired):
        return "timeout"
    return "internal_error"


class BetNotifier:
    def __init__(self, r: redis.Redis, metrics: Metrics | None = None) -> None:
        self.r = r
        self.metrics = metrics
        self._ops: list[tuple] = []

    def on_done(self, bet: NewBet, accepted_at: float, ok: bool, value: object) -> None:
        """Called by the writer after the commit. `value` is the new balance, or the exception."""
        if ok:
            assert isinstance(value, int)
            self._ops.append(
                (
                    "publish",
                    user_channel(bet.address),
                    orjson.dumps(
                        {
                            "type": "bet:confirmed",
                            "bet_id": bet.bet_id,
                            "status": "confirmed",
                            "cell": bet.cell,
                            "stake": format_money(bet.stake),
                            "multiplier": format_multiplier(bet.multiplier),
                            "payout": format_money(bet.payout),
                        }
                    ),
                )
            )
            self._ops.append(
                (
                    "publish",
                    user_channel(bet.address),
                    orjson.dumps({"type": "balance", "balance": format_money(value)}),
                )
            )
            self._ops.append(("delete", bet_key(bet.bet_id)))
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
            record = _pending_record(bet) | {"status": "rejected", "reason": reason}
            self._ops.append(("set", bet_key(bet.bet_id), orjson.dumps(record)))
            self._ops.append(("delete", cell_key(bet.address, bet.cell)))
            self._ops.append(
                (
                    "publish",
                    user_channel(bet.address),
                    orjson.dumps(
                        {"type": "bet:rejected", "bet_id": bet.bet_id, "cell": bet.cell, "reason": reason}
                    ),
                )
            )
            if self.metrics:
                self.metrics.bets_rejected.labels(reason).inc()

    def flush(self) -> None:
        if self._ops:
            ops, self._ops = self._ops, []
            gevent.spawn(self._send, ops)

    def _send(self, ops: list[tuple]) -> None:
        pipe = self.r.pipeline(transaction=False)
        for op in ops:
            if op[0] == "publish":
                pipe.publish(op[1], op[2])
            elif op[0] == "delete":
                pipe.delete(op[1])
            else:
                pipe.set(op[1], op[2], ex=PENDING_TTL_S)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not publish %d bet notifications: %s", len(ops), exc)


def _pending_record(bet: NewBet) -> dict:
    return {
        "bet_id": bet.bet_id,
        "address": bet.address,
        "status": "pending",
        "cell": bet.cell,
        "stake": bet.stake,
        "multiplier": bet.multiplier,
        "payout": bet.payout,
        "placed_at": bet.placed_at,
    }


def pending_json(bet: NewBet) -> bytes:
    return orjson.dumps(_pending_record(bet))
