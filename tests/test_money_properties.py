"""Money is never lost, duplicated or misreported, whatever order the operations come in.

A stateful property test (hypothesis) drives the real app — real Redis, real SQLite, the real writer —
on the pinned desk (tests/support/pinned.py: frozen clock, pinned quote book) through random sequences
of what traders and the system do: keyed and unkeyed deposits and withdrawals and their retries (same
body, another body), signed bets over HTTP and over the websocket's `bet` message, retries of the same
signed body and reuses of its nonce, bets refused for balance, stake, quote or exposure, clock jumps
with window settlement through the resolver (by a given outcome, or from a price path in the history as
its loop settles, in chunks), the bet reconciler, a forced week rollover.

After every step, once the writer has drained, it checks what a trader and an operator can see:

- each trader's `GET /me` balance is the newest ledger row's `balance_after`, the ledger chains row by
  row (across weeks through the `opening` rows), and the last `balance` event in Redis says the same;
- every accepted bet is in SQLite exactly once (in `GET /bets`), or rejected with no money moved;
  each has exactly one debit row, and each settled one the payout/refund its window's outcome gives;
- `open_stakes`/`open_bets` of `/me` match the open bets, and the Redis exposure of an unsettled column
  is the sum of its open bets' payouts;
- money is conserved: deposits − withdrawals − stakes + payouts + refunds == the sum of balances, and
  the console's house result (`house_days`) is this week's settled bets;
- integrity-check's own checks (every week file, every carry) are clean; no request ever answers 500.

Every example runs on a fresh desk (its own week files, a flushed Redis). `derandomize` makes the run
the same every time (8 sequences of up to 40 steps, ~15 s). For a longer local run:
TAP_MONEY_EXAMPLES=300 (how many), TAP_MONEY_RANDOM=1 (other sequences each run), TAP_MONEY_NO_SHRINK=1
(report the first failure as found), TAP_MONEY_STATS=1 (print what the sequences did), with `-n0 -s
--timeout=1800`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import orjson
from gevent import monkey
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from app import create_app
from app.admin.store import house_days
from app.auth.sessions import lookup_session
from app.auth.state import auth_state
from app.bets.reconcile import reconcile_orphans
from app.bets.resolution import Outcome
from app.keys import events_key, exposure_key
from app.ledger.integrity import check_file, check_link, previous_week_file
from app.market.prices import Tick, publish_tick, window_stats
from app.realtime.taps import TapSocket
from app.services import services, set_clock
from app.storage import db
from app.storage.rollover import following_week_file, rollover_job
from app.units import MONEY_DECIMALS, format_money, parse_decimal
from tests.support.auth import FakeClock
from tests.support.pinned import PRICE, Desk, desk_settings, frozen_feed
from tests.support.traders import Trader
from tests.support.waiting import wait_until
from workers import runtime
from workers.resolver import decide
from workers.sqlite_writer import SqliteWriter
from workers.supervisor import Supervisor

SEEN: Counter[str] = Counter()  # answers by transport, status and code (TAP_MONEY_STATS)
FINAL: dict[str, str] = {}  # bet id -> its last status seen (TAP_MONEY_STATS)
RealEvent = monkey.get_original("threading", "Event")  # the writer's job runs on a native thread
MICRO = 10**6
CELL_CAP = 400  # money: small, so that the exposure limit is met now and then
EXAMPLES = int(os.environ.get("TAP_MONEY_EXAMPLES", "8"))
STEPS = 40
STAKES = ("1", "2.5", "7.000001", "40", "150", "0.5", "1000.5")  # the last two: below min, above max
AMOUNTS = ("1", "3.5", "25", "100", "250.000001")
PICK = st.integers(0, 1000)  # an index into what exists by then (modulo): draws never depend on timing
OK_BET = {202}
REFUSED_BET = {400, 401, 409, 422, 429, 503}


def micro(text: str) -> int:
    """Money on the wire (a balance may be 0, a ledger amount negative) in micro-units."""
    value = parse_decimal(text.removeprefix("-"), MONEY_DECIMALS, "money", allow_zero=True)
    return -value if text.startswith("-") else value


@contextmanager
def fresh_desk(root: Path, redis_server) -> Iterator[Desk]:
    """The pinned desk of tests/support/pinned.py, built afresh for one example."""
    redis_server.client().flushall()
    s = desk_settings(Path(tempfile.mkdtemp(dir=root)), redis_server.url, max_cell_payout=CELL_CAP * MICRO)
    db.prepare_database(s.db_dir, time.time(), s.sqlite_synchronous)
    app = create_app(s)
    app.testing = True
    runtime.recover_at_start(app)  # as a server process does: the flushed Redis holds no bet state yet
    svc = services(app)
    clock = FakeClock()
    set_clock(app, clock)
    sup = Supervisor()
    sup.start(SqliteWriter(svc.writes, s.db_dir, synchronous=s.sqlite_synchronous, batch_max=s.batch_max))
    svc.feed = frozen_feed(s)
    desk = Desk(app, svc, clock)
    desk.pin_book()
    try:
        yield desk
    finally:
        sup.stop(timeout=5)
        runtime.stop(app)
        svc.reads.close()


@dataclass
class Sent:
    """A signed bet body as sent, and what became of it."""

    trader: int
    body: dict
    bet_id: str | None = None  # set once accepted


@dataclass
class Totals:
    """What the traders' accounts add up to, for the checks across them."""

    balances: int = 0
    moved_in: int = 0  # deposits - withdrawals - stakes + payouts + refunds
    # as the columns of house_days: bets won staked paid voided refunded
    house: list[int] = field(default_factory=lambda: [0] * 6)
    open_payout: Counter[int] = field(default_factory=Counter)  # column -> open bets' potential payouts

    def add_settled(self, status: str, stake: int, payout: int) -> None:
        if status == "void":
            self.house[4] += 1
            self.house[5] += stake
        else:
            self.house[0] += 1
            self.house[1] += status == "won"
            self.house[2] += stake
            self.house[3] += payout if status == "won" else 0


@dataclass(repr=False)
class Account:
    trader: Trader
    socket: TapSocket | None = None
    answers: list[dict] = field(default_factory=list)
    deposited: int = 0
    withdrawn: int = 0
    keys: dict[str, tuple[str, int, int, dict]] = field(default_factory=dict)  # kind, amount, status, body
    counted: dict[str, bool] = field(default_factory=dict)  # keys whose movement the model has counted
    pending: list[tuple[str, int, str, str | None]] = field(default_factory=list)  # answered 202

    def __repr__(self) -> str:
        return f"Account({self.trader.address})"


class MoneyMachine(RuleBasedStateMachine):
    desk: Desk

    def __init__(self) -> None:
        super().__init__()
        self.accounts: list[Account] = []
        self.sent: list[Sent] = []
        self.bets: dict[str, Sent] = {}  # accepted bet id -> the body
        self.outcomes: dict[int, Outcome] = {}  # settled windows
        self.settled_in: dict[int, int] = {}  # settled window -> rollovers before its settlement
        self.rollovers = 0
        self.last_tick_ms = 0  # the price history's newest tick (ticks_and_resolve)
        self.price = PRICE

    def open_desk(self, root: Path, redis_server) -> None:
        self._stack = ExitStack()
        self.desk = self._stack.enter_context(fresh_desk(root, redis_server))
        self.last_tick_ms = self.desk.clock.ms - 1000

    def teardown(self) -> None:
        self._stack.close()

    # ---- helpers ---------------------------------------------------------------------------------
    def call(self, acct: Account, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
        h = {"Authorization": f"Bearer {acct.trader.token}", **(headers or {})}
        resp = acct.trader.client.open(path, method=method, json=body, headers=h)
        assert resp.status_code < 500, (method, path, body, resp.status_code, resp.get_json())
        return resp.status_code, resp.get_json()

    def socket(self, acct: Account) -> TapSocket:
        if acct.socket is None:
            acct.socket = self.new_socket(acct, acct.answers)
        return acct.socket

    def new_socket(self, acct: Account, answers: list[dict]) -> TapSocket:
        """Another socket of the trader's (another tab): a socket reads its messages one at a time."""
        svc = self.desk.svc
        session = lookup_session(svc.redis, acct.trader.token, self.desk.clock.ms)
        assert session is not None
        with self.desk.app.app_context():
            limits = auth_state().limits
        return TapSocket(svc, svc.fanout.register(), session, limits, send=answers.append)

    def send_bet(self, sent: Sent, transport: str, own_socket: bool = False) -> tuple[int, dict]:
        acct = self.accounts[sent.trader]
        if transport == "http":
            status, out = self.call(acct, "POST", "/api/v1/bets", sent.body)
        else:
            answers: list[dict] = [] if own_socket else acct.answers
            sock = self.new_socket(acct, answers) if own_socket else self.socket(acct)
            before = len(answers)
            sock.handle(orjson.dumps({"type": "bet", "req": f"r{len(self.sent)}", **sent.body}))
            assert len(answers) == before + 1, answers[before:]  # exactly one answer per bet
            ans = answers[-1]
            assert ans["type"] in ("bet:accepted", "bet:error"), ans
            status, out = (202, ans) if ans["type"] == "bet:accepted" else (ans["status"], ans)
        assert status in OK_BET | REFUSED_BET, (status, out)
        SEEN[f"{transport}:{status}:{out.get('error', {}).get('code', '')}"] += 1
        if status == 202:
            if sent.bet_id is not None:
                assert out["bet_id"] == sent.bet_id, "a retry of an accepted body named another bet"
            sent.bet_id = out["bet_id"]
            self.bets[sent.bet_id] = sent
        return status, out

    def drain(self) -> None:
        """Everything queued so far has been committed (or refused) by the writer."""
        self.desk.svc.writes.call(lambda _c: None, priority=False)

    # ---- rules -----------------------------------------------------------------------------------
    @initialize(funds=st.lists(st.sampled_from(["0", "30", "500", "500"]), min_size=1, max_size=3))
    def traders(self, funds: list[str]) -> None:
        for amount in funds:
            t = Trader(self.desk.app.test_client(), self.desk.svc.settings, clock=self.desk.clock).login()
            acct = Account(t)
            self.accounts.append(acct)
            if amount != "0":
                self.move_once(acct, "deposit", amount, None)

    @rule(pick=PICK, kind=st.sampled_from(["deposit", "withdrawal"]), amount=st.sampled_from(AMOUNTS),
          keyed=st.booleans(), retry=st.sampled_from(["none", "same", "other"]))  # fmt: skip
    def move(self, pick, kind: str, amount: str, keyed: bool, retry: str) -> None:
        acct = self.accounts[pick % len(self.accounts)]
        path = "/api/v1/deposits" if kind == "deposit" else "/api/v1/withdrawals"
        key = secrets.token_hex(6) if keyed else None
        headers = {"Idempotency-Key": key} if key else {}
        status, out = self.call(acct, "POST", path, {"amount": amount}, headers)
        assert status in (200, 422), (status, out)  # 202 only when the writer stalls (5 s)
        units = micro(amount)
        if status == 200:
            assert out["amount"] == format_money(units)
            if kind == "deposit":
                acct.deposited += units
            else:
                acct.withdrawn += units
        else:
            assert kind == "withdrawal" and out["error"]["code"] == "insufficient_funds", out
        if key is None:
            return
        acct.keys[key] = (kind, units, status, out)
        if retry == "same":
            again_status, again = self.call(acct, "POST", path, {"amount": amount}, headers)
            assert (again_status, again) == (status, out), "a retry with the same key got another result"
        elif retry == "other":
            other = format_money(units + MICRO)
            again_status, again = self.call(acct, "POST", path, {"amount": other}, headers)
            assert again_status == 409 and again["error"]["code"] == "idempotency_key_conflict", again

    @rule(pick=PICK, other_endpoint=st.booleans())
    def reuse_key(self, pick: int, other_endpoint: bool) -> None:
        """A key used earlier, again: the first result, or 409 on the other endpoint; no money moves."""
        used = [(a, k) for a in self.accounts for k in a.keys]
        if not used:
            return
        acct, key = used[pick % len(used)]
        kind, units, status, out = acct.keys[key]
        if other_endpoint:
            kind = "withdrawal" if kind == "deposit" else "deposit"
        path = "/api/v1/deposits" if kind == "deposit" else "/api/v1/withdrawals"
        again_status, again = self.call(
            acct, "POST", path, {"amount": format_money(units)}, {"Idempotency-Key": key}
        )
        if other_endpoint:
            assert again_status == 409, (again_status, again)
        else:
            assert (again_status, again) == (status, out)

    @rule(bets=st.lists(st.tuples(st.integers(0, 2), st.sampled_from(["http", "ws"]), st.integers(0, 9),
          st.integers(-3, 3), st.sampled_from(STAKES), st.sampled_from(["1.01", "1.01", "1.01", "90"])),
          min_size=1, max_size=5))  # fmt: skip
    def bet(self, bets) -> None:
        for who, transport, col, row, stake, min_mult in bets:
            i = who % len(self.accounts)
            body = self.accounts[i].trader.bet_body(self.desk.cell(col=col, row_offset=row), stake, min_mult)
            sent = Sent(i, body)
            self.sent.append(sent)
            self.send_bet(sent, transport)

    @rule(pick=PICK, transport=st.sampled_from(["http", "ws"]))
    def retry_bet(self, pick: int, transport: str) -> None:
        """The same signed body again: the same bet if it was accepted (never a second one)."""
        if not self.sent:
            return
        sent = self.sent[pick % len(self.sent)]
        accepted = sent.bet_id
        status, out = self.send_bet(sent, transport)
        if accepted is not None:
            # accepted once: that bet, or refused for the time that passed (ts) — never another bet
            assert status == 202 or out["error"]["code"] == "ts_out_of_window", (status, out)

    @rule(pick=PICK, transport=st.sampled_from(["http", "ws"]))
    def reuse_nonce(self, pick: int, transport: str) -> None:
        """An accepted bet's nonce under another body: 409, no second bet."""
        accepted = [s for s in self.sent if s.bet_id]
        if not accepted:
            return
        sent = accepted[pick % len(accepted)]
        acct = self.accounts[sent.trader]
        b = sent.body
        body = acct.trader.bet_body(
            b["cell"], "3" if b["stake"] != "3" else "4", b["min_multiplier"], nonce=b["nonce"]
        )
        other = Sent(sent.trader, body)
        status, out = self.send_bet(other, transport)
        assert status in (401, 409), (status, out)  # 401: the clock moved past its `ts` window

    @rule(
        columns=st.sampled_from([0, 1, 3, 6, 12]),
        void=st.booleans(),
        lo=st.integers(-4, 4),
        span=st.integers(0, 3),
    )
    def advance_and_settle(self, columns: int, void: bool, lo: int, span: int) -> None:
        """Time passes; every window that has ended is settled through the resolver."""
        desk = self.desk
        col_s = desk.svc.grid.column_seconds
        desk.clock.advance(columns * col_s)
        desk.pin_book()
        self.drain()
        now_s = desk.clock()
        resolver = desk.resolver(column_s=col_s)
        low = PRICE + lo * desk.svc.grid.price_step
        outcome = Outcome(void=True) if void else Outcome(void=False, lo=low, hi=low + span * 1000)
        for t_start in sorted({int(s.body["cell"].split(":")[0]) for s in self.bets.values()}):
            if t_start + col_s <= now_s and t_start not in self.outcomes:
                self.outcomes[t_start] = outcome
                self.settled_in[t_start] = self.rollovers  # the week file it settles in
                resolver.settle_window(t_start, outcome, desk.clock.ms)

    @rule(columns=st.sampled_from([1, 3, 6, 12]), seed=st.integers(0, 2**16), chunk=st.integers(1, 3))
    def ticks_and_resolve(self, columns: int, seed: int, chunk: int) -> None:
        """Time passes with a price path (a tick a second, wandering over the rows); the resolver settles
        what it can from the price history, as its loop does, in chunks of `chunk` bets."""
        desk = self.desk
        col_s, step = desk.svc.grid.column_seconds, desk.svc.grid.price_step
        desk.clock.advance(columns * col_s)
        rnd = random.Random(seed)
        while self.last_tick_ms + 1000 <= desk.clock.ms:
            self.last_tick_ms += 1000
            self.price = max(step, self.price + rnd.choice((-1, 0, 0, 1)) * rnd.randint(0, step))
            publish_tick(desk.svc.redis, Tick(price=self.price, ts=self.last_tick_ms))
        desk.pin_book(price=PRICE)
        self.drain()
        now_ms, s = desk.clock.ms, desk.svc.settings
        resolver = desk.resolver(column_s=col_s, critical_s=s.feed_critical_s)
        resolver.chunk = chunk
        for t_start in sorted({int(x.body["cell"].split(":")[0]) for x in self.bets.values()}):
            if t_start + col_s > now_ms / 1000 or t_start in self.outcomes:
                continue
            stats = window_stats(desk.svc.redis, t_start, col_s)
            if stats is None:
                overdue = now_ms >= (t_start + col_s + s.feed_critical_s) * 1000
                outcome = Outcome(void=True) if overdue else None
            else:
                outcome = decide(stats, now_ms, s.feed_critical_s, resolver.grace_s)
            if outcome is not None:
                self.outcomes[t_start] = outcome
                self.settled_in[t_start] = self.rollovers
            SEEN[f"resolve:{'wait' if outcome is None else 'void' if outcome.void else 'touch'}"] += 1
        resolver.resolve_due(now_ms)

    @rule(actions=st.lists(st.tuples(
        st.sampled_from(["deposit", "withdrawal", "bet", "reconcile", "rollover"]),
        st.integers(0, 2), st.booleans(), st.integers(1, 2), st.integers(0, 9), st.integers(-2, 2),
        st.sampled_from(STAKES + AMOUNTS)), min_size=2, max_size=6), stall=st.booleans())  # fmt: skip
    def burst(self, actions, stall: bool) -> None:
        """Several things at once (one greenlet each, as concurrent requests): copies of one keyed
        movement or one signed bet race each other, bets race withdrawals for the same balance, the
        reconciler judges bets still in the writer's queue, a rollover lands among them. With `stall`
        the writer is held in a job meanwhile (a slow disk), so that everything queues behind it."""
        release = self.hold_writer() if stall else None
        svc = self.desk.svc
        settings_before = svc.settings
        if stall:  # a movement waits at most this long for its commit, then answers 202 pending
            svc.settings = dataclasses.replace(settings_before, money_wait_s=0.02)
        jobs = []
        for what, who, flag, copies, col, row, amount in actions:
            i = who % len(self.accounts)
            acct = self.accounts[i]
            if what in ("deposit", "withdrawal"):
                key = secrets.token_hex(6) if flag else None
                money = amount if amount in AMOUNTS else "2"
                for _ in range(copies if key else 1):
                    jobs.append(gevent.spawn(self.move_once, acct, what, money, key))
            elif what == "bet":
                body = acct.trader.bet_body(self.desk.cell(col=col, row_offset=row), amount, "1.01")
                sent = Sent(i, body)
                self.sent.append(sent)
                for k in range(copies):
                    transport = "ws" if (flag ^ bool(k)) else "http"
                    jobs.append(gevent.spawn(self.send_bet, sent, transport, True))
            elif what == "reconcile":
                jobs.append(gevent.spawn(reconcile_orphans, self.desk.svc, self.desk.clock.ms + 31_000))
            elif self.rollovers < 2:
                self.rollovers += 1
                jobs.append(gevent.spawn(self.rollover_now))
        if release is not None:
            gevent.sleep(0.05)  # every request has queued its write (or is waiting for it)
            release.set()
        try:
            gevent.joinall(jobs, raise_error=True)
        finally:
            svc.settings = settings_before

    def hold_writer(self):
        """Hold the single writer inside a job until the returned event is set."""
        inside, release = RealEvent(), RealEvent()

        def hold(_conn) -> None:
            inside.set()
            release.wait(20)

        self.desk.svc.writes.submit(hold, priority=True)
        wait_until(inside.is_set, timeout=5, what="the writer holds")
        return release

    def move_once(self, acct: Account, kind: str, amount: str, key: str | None) -> None:
        """One deposit or withdrawal request. Copies of a keyed one get the first answer and move the
        money once; one the writer does not settle in time is 202 pending, resolved by `resolve_pending`."""
        path = "/api/v1/deposits" if kind == "deposit" else "/api/v1/withdrawals"
        status, out = self.call(
            acct, "POST", path, {"amount": amount}, {"Idempotency-Key": key} if key else {}
        )
        assert status in (200, 202, 422), (status, out)
        SEEN[f"move:{kind}:{status}:{'keyed' if key else ''}"] += 1
        units = micro(amount)
        if status == 202:
            assert out["status"] == "pending" and out["kind"] == kind, out
            if key is not None:
                first = acct.keys.setdefault(key, (kind, units, status, out))
                assert first[2] != 200 or first[3]["ref_id"] == out["ref_id"], (first, out)
            acct.pending.append((kind, units, out["ref_id"], key))
            return
        if key is not None:
            first = acct.keys.get(key)
            if first is None or first[2] == 202:
                acct.keys[key] = (kind, units, status, out)
            else:
                assert first[2:] == (status, out), f"two answers for one key: {first[2:]} and {(status, out)}"
            if acct.counted.get(key):
                return
            acct.counted[key] = True
        if status == 200:
            if kind == "deposit":
                acct.deposited += units
            else:
                acct.withdrawn += units

    def resolve_pending(self, acct: Account, rows: dict[tuple[str, str], list[int]]) -> None:
        """Movements answered 202: the ledger shows the committed ones; a retry of a keyed one answers
        its settled result, and counts it if no answer did yet."""
        for kind, units, ref_id, key in acct.pending:
            committed = (kind, ref_id) in rows
            if key is None:
                assert committed or kind == "withdrawal", (kind, ref_id)
                if committed:
                    self.count(acct, kind, units)
                continue
            path = "/api/v1/deposits" if kind == "deposit" else "/api/v1/withdrawals"
            status, out = self.call(
                acct, "POST", path, {"amount": format_money(units)}, {"Idempotency-Key": key}
            )
            assert status == (200 if committed else 422), (status, out, committed)
            if status == 200:
                assert out["ref_id"] == ref_id, (out, ref_id)
            acct.keys[key] = (kind, units, status, out)
            if not acct.counted.get(key):
                acct.counted[key] = True
                if committed:
                    self.count(acct, kind, units)
        acct.pending.clear()

    @staticmethod
    def count(acct: Account, kind: str, units: int) -> None:
        if kind == "deposit":
            acct.deposited += units
        else:
            acct.withdrawn += units

    def rollover_now(self) -> None:
        s = self.desk.svc.settings
        new = following_week_file(db.current_week_file(s.db_dir))
        self.desk.svc.writes.call(rollover_job(s.db_dir, new, s.sqlite_synchronous), priority=True)

    @rule(late=st.booleans())
    def reconcile(self, late: bool) -> None:
        """The bet reconciler's pass; `late`: as if the pending bets were past their queue deadline."""
        reconcile_orphans(self.desk.svc, self.desk.clock.ms + (31_000 if late else 0))

    @rule()
    def rollover(self) -> None:
        if self.rollovers >= 2:
            return
        self.rollovers += 1
        self.rollover_now()

    # ---- invariants ------------------------------------------------------------------------------
    @invariant()
    def money_adds_up(self) -> None:
        if not self.accounts:
            return
        self.drain()
        total = Totals()
        for acct in self.accounts:
            self.check_trader(acct, total)
        assert total.balances == total.moved_in, "money was created or lost"
        days = self.desk.svc.reads.run(house_days)
        assert [sum(r[k] for r in days) for k in range(2, 8)] == total.house, days  # the console's result
        self.check_exposure(total.open_payout)
        self.check_integrity()

    def check_trader(self, acct: Account, total: Totals) -> None:
        status, me = self.call(acct, "GET", "/api/v1/me")
        assert status == 200, me
        balance = micro(me["balance"])
        ledger = self.pages(acct, "/api/v1/ledger", "entries")
        bets = self.pages(acct, "/api/v1/bets", "bets")
        rows = self.check_ledger(ledger, balance)
        self.resolve_pending(acct, rows)
        by_type: Counter[str] = Counter()
        for (kind, _), (amount,) in rows.items():
            by_type[kind] += amount
        assert (by_type["deposit"], -by_type["withdrawal"]) == (acct.deposited, acct.withdrawn), by_type
        open_stakes, open_bets = self.check_bets(bets, rows, total)
        assert (micro(me["open_stakes"]), me["open_bets"]) == (open_stakes, open_bets), me
        ids = {b["bet_id"] for b in bets}
        for kind, ref in rows:  # no bet money for a bet the trader cannot see
            assert kind in ("deposit", "withdrawal") or ref in ids, (kind, ref)
        # accepted but not in SQLite: rejected (no money moved), never pending once the writer drained
        for bid in {bid for bid, s in self.bets.items() if self.accounts[s.trader] is acct} - ids:
            status, one = self.call(acct, "GET", f"/api/v1/bets/{bid}")
            assert status == 200 and one["status"] == "rejected", (bid, status, one)
            FINAL[bid] = f"rejected:{one['reason']}"
        total.balances += balance
        total.moved_in += (
            acct.deposited - acct.withdrawn + by_type["bet"] + by_type["payout"] + by_type["refund"]
        )
        self.wait_balance_event(acct, balance)

    @staticmethod
    def check_ledger(ledger: list[dict], balance: int) -> dict[tuple[str, str], list[int]]:
        """The newest row's balance_after is the balance; the rows chain back, across weeks through the
        `opening` rows; each movement has one row. Returns (ref_type, ref_id) -> amounts."""
        assert (micro(ledger[0]["balance_after"]) if ledger else 0) == balance, ledger[:1]
        for newer, older in itertools.pairwise(ledger):
            step = micro(newer["amount"]) if newer["ref_type"] != "opening" else 0
            assert micro(older["balance_after"]) + step == micro(newer["balance_after"]), (older, newer)
        rows: dict[tuple[str, str], list[int]] = {}
        for e in ledger:
            if e["ref_type"] != "opening":
                rows.setdefault((e["ref_type"], e["ref_id"]), []).append(micro(e["amount"]))
        assert all(len(v) == 1 for v in rows.values()), rows
        return rows

    def check_bets(
        self, bets: list[dict], rows: dict[tuple[str, str], list[int]], total: Totals
    ) -> tuple[int, int]:
        """Each bet listed once, accepted by this trader, with its debit and the settlement its window's
        outcome gives. Returns the open stakes and the number of open bets."""
        ids = [b["bet_id"] for b in bets]
        assert len(ids) == len(set(ids)), ids
        assert set(ids) <= set(self.bets), set(ids) - set(self.bets)
        open_stakes = open_bets = 0
        for b in bets:
            FINAL[b["bet_id"]] = b["status"]
            stake, potential = micro(b["stake"]), micro(b["potential_payout"])
            assert rows.get(("bet", b["bet_id"])) == [-stake], b
            t_start, row = (int(x) for x in b["cell"].split(":"))
            outcome = self.outcomes.get(t_start)
            expected = "confirmed" if outcome is None else self.settles_as(row, outcome)
            assert b["status"] == expected, (b, outcome)
            assert rows.get(("payout", b["bet_id"])) == ([potential] if expected == "won" else None), b
            assert rows.get(("refund", b["bet_id"])) == ([stake] if expected == "void" else None), b
            if expected == "confirmed":
                open_stakes += stake
                open_bets += 1
                total.open_payout[t_start] += potential
            elif self.settled_in[t_start] == self.rollovers:  # settled in the current week file
                total.add_settled(expected, stake, potential)
        return open_stakes, open_bets

    def settles_as(self, row: int, outcome: Outcome) -> str:
        lo, hi = self.desk.svc.grid.band(row)
        if outcome.void:
            return "void"
        return "won" if lo <= outcome.hi and hi >= outcome.lo else "lost"

    def pages(self, acct: Account, path: str, key: str) -> list[dict]:
        out: list[dict] = []
        cursor = None
        while True:
            status, page = self.call(
                acct, "GET", path + (f"?limit=7&cursor={cursor}" if cursor else "?limit=7")
            )
            assert status == 200, page
            out.extend(page[key])
            cursor = page["next_cursor"]
            if cursor is None:
                return out

    def wait_balance_event(self, acct: Account, balance: int) -> None:
        """The newest `balance` event in the trader's Redis event Stream is the balance in SQLite."""
        r, key = self.desk.svc.redis, events_key(acct.trader.address)

        def last() -> str | None:
            for _id, fields in r.xrevrange(key, count=200):
                event = orjson.loads(fields[b"m"])
                if event["type"] == "balance":
                    return event["balance"]
            return None

        want = format_money(balance)
        if balance or last() is not None:
            wait_until(lambda: last() == want, timeout=5, what=f"balance event {want}, last {last()}")

    def check_exposure(self, open_payout: Counter[int]) -> None:
        """The open liability Redis counts for a column is its open bets' payouts (SPEC §8b)."""
        r = self.desk.svc.redis
        columns = {int(s.body["cell"].split(":")[0]) for s in self.bets.values()}

        def counted(t: int) -> int:
            return int(r.hget(exposure_key(t), "t") or 0)

        for t in columns - set(self.outcomes):
            want = open_payout[t]
            wait_until(
                lambda t=t, want=want: counted(t) == want, timeout=5, what=f"column {t}: exposure {want}"
            )

    def check_integrity(self) -> None:
        s = self.desk.svc.settings
        for path in db.list_week_files(s.db_dir):
            assert check_file(path) == [], path
            prev = previous_week_file(path)
            if prev is not None:
                assert check_link(prev, path) == []


def test_money_is_conserved_through_random_sequences(tmp_path, redis_url, redis_server) -> None:
    """`redis_url`: the session's redis-server is running (each example flushes it itself)."""

    def machine() -> MoneyMachine:
        m = MoneyMachine()
        m.open_desk(tmp_path, redis_server)
        return m

    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            derandomize=not os.environ.get("TAP_MONEY_RANDOM"),
            phases=[Phase.explicit, Phase.generate] if os.environ.get("TAP_MONEY_NO_SHRINK") else list(Phase),
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
    if os.environ.get("TAP_MONEY_STATS"):
        print(sorted(SEEN.items()), sorted(Counter(FINAL.values()).items()))
