"""After each commit: tell traders what happened to their money, in commit order, one pipeline at a time.

The writer calls `on_done` for every bet job as soon as the batch has committed (or the job failed),
`on_commit` for every other committed change a trader must hear of (a deposit, a withdrawal, a
settlement), then `flush` once per batch. One sender greenlet (spawned when there is something to
send, gone when there is not) publishes the batches in the order the writer committed them: a
trader's `balance` events therefore arrive oldest first, and the last one is the balance `GET /me`
shows. Publishing from the request or the resolver's own greenlet could overtake a batch still
waiting to be sent, and the app would then show an older balance after a newer one.

Per-user messages go to the Redis channel ``tap:user:<address>`` (and the trader's event Stream,
app.realtime.events), from which the websocket listener of whichever worker holds the trader's
connection delivers them. A Redis failure here loses only notifications: the bet is committed and
`GET /bets/<id>` answers from SQLite. A failed pipeline is sent again a few times (every op is
idempotent), the batches behind it waiting so the order holds; after that `app.bets.reconcile`
repairs what is left (a pending record past its queue deadline), so a rejected bet's cell claim is
always freed in the end.

A retry never tells a trader anything twice: each op's first event is stored in the trader's Stream
with a token of this notifier's (`EMIT_LUA`), and a retried op first looks for its token among the
trader's latest events. What Redis ran before a failed reply or a lost connection is therefore not
published again; the one case left is a first attempt that Redis runs only after the retry (a stall
longer than the client's Redis timeout plus the retry delay, the request still in its socket buffer).
"""

from __future__ import annotations

__all__ = ["BetNotifier", "confirmed_json", "pending_json", "rejection_args"]

import itertools
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Sequence

import gevent
import orjson
import redis
from gevent.event import Event
from redis.commands.core import Script

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
from app.realtime.events import Events, balance_event, rejected_event
from app.storage.redis_batch import evalsha, send_commands
from app.storage.writes import Expired, OutcomeUnknown, WriteQueue
from app.units import format_money, format_multiplier

log = logging.getLogger(__name__)

# An op: (script, keys, head, token, tail, sent); its args: [*head, token, again, *tail] (`_commands`).
# Every notifier script's last key is the trader's event Stream, where a retry looks for the token.
Op = tuple[Script, list, list, str, list, Event | None]


def rejection_reason(exc: BaseException) -> str:
    if isinstance(exc, Rejected):
        return exc.reason
    if isinstance(exc, Expired):
        return "timeout"
    return "internal_error"


class BetNotifier:
    MAX_BACKLOG_OPS = 50_000  # beyond this, waiting notifications are dropped (the reconciler repairs)
    RETRY_DELAYS_S = (0.5, 1, 2, 4, 8, 15)
    SEND_MAX_OPS = 2_000  # at most this many ops per round trip (a backlog after an outage goes in parts)

    def __init__(self, r: redis.Redis, metrics: Metrics | None = None) -> None:
        self.r = r
        self.metrics = metrics
        self._ops: list[Op] = []  # this batch's, until `flush`
        self._backlog: deque[list[Op]] = deque()  # flushed batches not sent yet, oldest first
        self._backlog_ops = 0
        self._sender: gevent.Greenlet | None = None
        self._reject = r.register_script(REJECT_LUA)
        self._confirm = r.register_script(CONFIRM_LUA)
        self._events = Events(r)
        self._token_prefix = secrets.token_hex(6) + ":"  # this notifier's; tokens never repeat
        self._seq = itertools.count()

    def attach(self, queue: WriteQueue) -> BetNotifier:
        """Flush at the end of each of `queue`'s writer batches."""
        queue.batch_listeners.append(self.flush)
        return self

    def on_commit(self, address: str, messages: Sequence[bytes], sent: Event | None = None) -> None:
        """Called in the writer greenlet right after a commit that changed `address`'s money: its
        events (JSON objects as text) are sent with this batch, after everything committed before.
        `sent` is set once they are out (or given up on), for a request that answers only then."""
        if messages:
            keys, head = self._events.keys_args(address)
            self._ops.append((self._events.script, keys, head, self._token(), list(messages), sent))
        elif sent is not None:
            sent.set()

    def on_done(self, bet: NewBet, accepted_at: float, ok: bool, value: object) -> None:
        """Called by the writer after the commit. `value` is the new balance, or the exception."""
        if ok:
            assert isinstance(value, int)
            keys, head = confirm_args(
                bet_id=bet.bet_id,
                address=bet.address,
                message=confirmed_json(bet),
                balance_message=balance_event(value),
                always=True,
            )
            self._ops.append((self._confirm, keys, head, self._token(), [], None))
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
            keys, head = rejection_args(bet, reason)
            self._ops.append((self._reject, keys, head, self._token(), [], None))
            if self.metrics:
                self.metrics.bets_rejected.labels(reason).inc()

    def flush(self) -> None:
        """End of a writer batch: queue its notifications behind the earlier ones and make sure the
        sender runs."""
        if not self._ops:
            return
        ops, self._ops = self._ops, []
        if self._backlog_ops + len(ops) > self.MAX_BACKLOG_OPS:
            log.error("notification backlog full (Redis away?): dropped %d bet notifications", len(ops))
            _mark_sent(ops)
            return
        self._backlog.append(ops)
        self._backlog_ops += len(ops)
        if self._sender is None:
            self._sender = gevent.spawn(self._drain)
            self._sender.link_exception(lambda g: log.error("bet notifier failed", exc_info=g.exc_info))

    def _drain(self) -> None:
        """Send the backlog, oldest first, what is waiting in one round trip (up to SEND_MAX_OPS), and
        exit when it is empty. No yield between the last empty check and clearing `_sender`, so a
        flush never strands a batch."""
        try:
            while self._backlog:
                ops: list[Op] = []
                while self._backlog and len(ops) < self.SEND_MAX_OPS:
                    batch = self._backlog.popleft()
                    self._backlog_ops -= len(batch)
                    ops.extend(batch)
                try:
                    self._send(ops)
                finally:
                    _mark_sent(ops)
        finally:
            self._sender = None

    def _token(self) -> str:
        return self._token_prefix + str(next(self._seq))

    def _send(self, ops: list[Op]) -> None:
        """All of `ops` in one round trip (`send_commands`), sent again after a Redis failure: a
        rejection that never reached Redis would leave the trader's cell claimed until the column
        ends (issue 10 item 5). Later batches wait, so each trader's events keep their order.

        What is sent again: after error replies (e.g. NOREPLICAS, READONLY), the ops from the first
        failed one on, since those before it ran; after a connection error, all of them. Either way
        some of them may have run, so the retry carries `again` and an op whose token is already in
        its trader's Stream does nothing (`EMIT_LUA`); the rest of each script is idempotent
        (compare-and-delete). Sending only the failed ops would put a trader's events out of order.

        The scripts are loaded first in the same round trip (`SCRIPT LOAD` of a loaded script only
        hashes it): Redis that restarted and lost them would refuse one EVALSHA with NOSCRIPT and run
        the ones after it, and a trader's events would go out of commit order (a withdrawal's balance
        before the confirmation of a bet committed earlier: tests/test_event_order.py)."""
        pending, again = ops, False
        for attempt in range(len(self.RETRY_DELAYS_S) + 1):
            try:
                loads, commands = self._commands(pending, again)
                replies = send_commands(self.r, loads + commands)[len(loads) :]
                failed = [i for i, reply in enumerate(replies) if isinstance(reply, redis.RedisError)]
                if not failed:
                    if attempt:
                        log.info("sent %d bet notifications at attempt %d", len(pending), attempt + 1)
                    return
                pending = pending[failed[0] :]
                raise replies[failed[0]]
            except redis.RedisError as exc:
                if attempt == len(self.RETRY_DELAYS_S):
                    log.error(
                        "dropped %d bet notifications after %d attempts: %s", len(pending), attempt + 1, exc
                    )
                    return
                log.warning("could not send %d bet notifications (%s); retrying", len(pending), exc)
                again = True
                gevent.sleep(self.RETRY_DELAYS_S[attempt])

    @staticmethod
    def _commands(ops: list[Op], again: bool) -> tuple[list[tuple], list[tuple]]:
        """The `SCRIPT LOAD`s and the EVALSHAs of `ops`. With `again`, each op looks for its token
        among as many of its trader's latest events as `ops` hold for that trader, plus a margin for
        other publishers (the reconciler)."""
        window: Counter[str] = Counter()
        if again:
            for _, keys, _, _, tail, _ in ops:
                window[keys[-1]] += len(tail) or 2
        loads = [("SCRIPT", "LOAD", script.script) for script in dict.fromkeys(op[0] for op in ops)]
        commands = [
            evalsha(script, keys, [*head, token, window[keys[-1]] + 64 if again else 0, *tail])
            for script, keys, head, token, tail, _ in ops
        ]
        return loads, commands


def _mark_sent(ops: list[Op]) -> None:
    for op in ops:
        if op[5] is not None:
            op[5].set()


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
    message = rejected_event(bet.bet_id, bet.cell, reason)
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
