"""A recording tap client for the disaster-recovery drill and the fault suite (issue 15).

Traders log in with SIWE (tests/support/traders.py), then tap over HTTP with fast signatures (coincurve,
loadtest/lib/signing.py) at a target total rate, each on its own keep-alive connection, while a
websocket per trader listens for what the server *tells* them: `bet:confirmed`, `bet:resolved`.
Everything a trader was told is recorded with the time it was heard; `reconcile` asks
`GET /bets/<id>` for every accepted bet until it is final, and `compare` holds the record against the
SQLite week files: nothing told confirmed may be missing, nothing may be there twice, nothing may stay
pending, and no answer may be a 500 or a hang.
"""

from __future__ import annotations

import http.client
import json
import random
import secrets
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import gevent
import websocket

from app.storage.db import list_week_files
from loadtest.lib.signing import Key
from tests.support.client import bet_text
from tests.support.traders import HttpClient, Trader

FINAL = {"confirmed", "rejected", "won", "lost", "void"}
SETTLED = {"won", "lost", "void"}
HANG_S = 10.0  # an answer later than this is a hang


@dataclass
class Record:
    accepted: dict[str, float] = field(default_factory=dict)  # bet_id -> when 202 was heard
    owner: dict[str, int] = field(default_factory=dict)  # bet_id -> trader index
    told_confirmed: dict[str, float] = field(default_factory=dict)  # bet_id -> first time told
    told_settled: dict[str, tuple[str, float]] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)  # after reconcile
    statuses: Counter = field(default_factory=Counter)  # HTTP status (or "conn"/"hang") of every tap
    codes: Counter = field(default_factory=Counter)  # error codes of non-202 answers
    money: dict[str, tuple[str, int, float]] = field(default_factory=dict)  # ref_id -> (kind, status, t)
    money_statuses: Counter = field(default_factory=Counter)
    bad: list[str] = field(default_factory=list)  # 500s and hangs, with what and when
    last_answer: dict[str, str] = field(default_factory=dict)  # bet_id -> last GET /bets/<id> answer


class _Conn:
    """One keep-alive HTTP/1.1 connection, reopened after any error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.c: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        if self.c is None:
            self.c = http.client.HTTPConnection(self.host, self.port, timeout=HANG_S)
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **headers} if data is not None else headers
        try:
            self.c.request(method, path, body=data, headers=hdrs)
            resp = self.c.getresponse()
            raw = resp.read()
        except BaseException:
            self.c.close()
            self.c = None
            raise
        if resp.will_close:
            self.c.close()
            self.c = None
        try:
            return resp.status, json.loads(raw or b"null")
        except ValueError:
            return resp.status, {"raw": raw[:200].decode(errors="replace")}


class TapLoad:
    """`n_traders` traders tapping `rate` bets/s in total against `base` (http://host:port)."""

    def __init__(self, base: str, settings: Any, n_traders: int = 10, rate: float = 300.0, seed: int = 1):
        self.base = base
        hostport = base.split("//", 1)[1]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.settings = settings
        self.rate = rate
        self.rng = random.Random(seed)
        self.rec = Record()
        self.traders: list[Trader] = []
        self.keys: list[Key] = []
        self.grid: dict[str, Any] | None = None
        self._greenlets: list[gevent.Greenlet] = []
        self._tapping = False
        self._running = False
        self._inflight = 0
        self.n_traders = n_traders
        self.columns = (3, None)  # which of the grid's columns to tap (the drill taps near ones: settles)

    # ---- set-up -------------------------------------------------------------------------------
    def login(self, deposit: str = "100000") -> TapLoad:
        for _ in range(self.n_traders):
            t = Trader(HttpClient(self.base), self.settings).login()
            t.deposit(deposit)
            self.traders.append(t)
            self.keys.append(Key(bytes(t.key.key)))
        return self

    # ---- the load -----------------------------------------------------------------------------
    def start(self, *, taps: bool = True) -> None:
        self._running = True
        self._tapping = taps
        self._greenlets = [gevent.spawn(self._grid_loop)]
        self._greenlets += [gevent.spawn(self._listen, i) for i in range(len(self.traders))]
        self._greenlets += [gevent.spawn(self._tap_loop, i) for i in range(len(self.traders))]

    def stop(self) -> None:
        self._running = False
        gevent.joinall(self._greenlets, timeout=HANG_S + 5)
        gevent.killall([g for g in self._greenlets if not g.dead], timeout=2)

    def pause(self) -> None:
        """Stop tapping and wait (bounded) until every tap in flight has its answer."""
        self._tapping = False
        deadline = time.monotonic() + HANG_S + 2
        while self._inflight and time.monotonic() < deadline:
            gevent.sleep(0.02)

    def taps_answered(self) -> int:
        return sum(self.rec.statuses.values())

    def wait_flowing(self, n: int = 50, timeout: float = 20.0) -> None:
        """Until `n` more taps were accepted (service is up and taking bets)."""
        target = len(self.rec.accepted) + n
        deadline = time.monotonic() + timeout
        while len(self.rec.accepted) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"taps not flowing: {dict(self.rec.statuses)} {dict(self.rec.codes)}")
            gevent.sleep(0.05)

    def _grid_loop(self) -> None:
        conn = _Conn(self.host, self.port)
        token = self.traders[0].token
        while self._running:
            try:
                status, body = conn.call("GET", "/api/v1/grid", None, {"Authorization": f"Bearer {token}"})
                if status == 200:
                    self.grid = body
            except (OSError, http.client.HTTPException):
                pass
            gevent.sleep(0.5)

    def _cells(self, used: set[str]) -> list[str]:
        grid = self.grid
        if not grid:
            return []
        rows = grid["rows"]
        mid = len(rows) // 2
        # Columns 3 and later: still placeable while the request is in flight, whatever the stall.
        first, last = self.columns
        cols = grid["columns"][first:last]
        cells = [f"{c}:{r}" for c in cols for r in rows[max(0, mid - 12) : mid + 13]]
        return [c for c in cells if c not in used]

    def bet_body(self, i: int, cell: str, stake: str = "1") -> dict[str, Any]:
        key, t = self.keys[i], self.traders[i]
        nonce, ts = secrets.token_hex(8), int(time.time() * 1000)
        text = bet_text(
            self.settings.siwe_domain, self.settings.chain_id, t.address, cell, stake, "1.01", nonce, ts
        )
        return {
            "cell": cell,
            "stake": stake,
            "min_multiplier": "1.01",
            "nonce": nonce,
            "ts": ts,
            "signature": key.personal_sign(text),
        }

    def _answer(self, what: str, status: int | str, body: Any, t0: float) -> None:
        if status == 500 or status == "hang":
            self.rec.bad.append(f"{what}: {status} after {time.monotonic() - t0:.1f}s: {str(body)[:160]}")

    def _tap_loop(self, i: int) -> None:
        conn = _Conn(self.host, self.port)
        auth = {"Authorization": f"Bearer {self.traders[i].token}"}
        used: set[str] = set()
        per_trader = self.rate / max(1, len(self.traders))
        next_at = time.monotonic() + self.rng.random() / per_trader
        while self._running:
            if not self._tapping:
                gevent.sleep(0.05)
                next_at = time.monotonic()
                continue
            wait = next_at - time.monotonic()
            if wait > 0:
                gevent.sleep(wait)
            next_at = max(next_at + 1 / per_trader, time.monotonic() - 1.0)  # no burst after a stall
            cells = self._cells(used)
            if not cells:
                gevent.sleep(0.05)
                continue
            cell = self.rng.choice(cells)
            used.add(cell)
            t0 = time.monotonic()
            self._inflight += 1
            try:
                status, body = conn.call("POST", "/api/v1/bets", self.bet_body(i, cell), auth)
            except TimeoutError:
                self.rec.statuses["hang"] += 1
                self._answer("tap", "hang", "", t0)
                continue
            except (OSError, http.client.HTTPException):
                self.rec.statuses["conn"] += 1  # the worker was killed / restarting: refused or reset
                gevent.sleep(0.02)
                continue
            finally:
                self._inflight -= 1
            self.rec.statuses[status] += 1
            if status == 202:
                self.rec.accepted.setdefault(body["bet_id"], time.time())
                self.rec.owner[body["bet_id"]] = i
            else:
                code = (body or {}).get("error", {}).get("code", "?") if isinstance(body, dict) else "?"
                self.rec.codes[f"{status}:{code}"] += 1
                self._answer("tap", status, body, t0)

    def _listen(self, i: int) -> None:
        url = self.base.replace("http", "ws", 1) + "/ws"
        while self._running:
            try:
                ws = websocket.create_connection(url, timeout=2)
            except (OSError, websocket.WebSocketException):
                gevent.sleep(0.2)
                continue
            try:
                ws.send(json.dumps({"type": "auth", "token": self.traders[i].token}))
                while self._running:
                    try:
                        raw = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    if not raw:
                        break
                    msg = json.loads(raw)
                    kind = msg.get("type")
                    if kind == "bet:confirmed":
                        self.rec.told_confirmed.setdefault(msg["bet_id"], time.time())
                    elif kind == "bet:resolved":
                        self.rec.told_settled.setdefault(msg["bet_id"], (msg["status"], time.time()))
            except (OSError, websocket.WebSocketException, ValueError):
                pass
            finally:
                ws.close()
            gevent.sleep(0.1)

    # ---- money movements ----------------------------------------------------------------------
    def move(self, i: int, kind: str, amount: str, deadline_s: float = 30.0) -> tuple[int, str | None]:
        """A deposit or withdrawal with an Idempotency-Key, retried with the same key through 503s and
        dropped connections until the server gives a definite answer (200, 202 pending, 4xx)."""
        key = uuid.uuid4().hex
        conn = _Conn(self.host, self.port)
        auth = {"Authorization": f"Bearer {self.traders[i].token}", "Idempotency-Key": key}
        path = "/api/v1/deposits" if kind == "deposit" else "/api/v1/withdrawals"
        deadline = time.monotonic() + deadline_s
        while True:
            t0 = time.monotonic()
            try:
                status, body = conn.call("POST", path, {"amount": amount}, auth)
            except TimeoutError:
                self._answer(kind, "hang", "", t0)
                status, body = 0, None
            except (OSError, http.client.HTTPException):
                status, body = 0, None
            if status:
                self.rec.money_statuses[f"{kind}:{status}"] += 1
                self._answer(kind, status, body, t0)
            if status in (200, 202):
                ref = body["ref_id"]
                self.rec.money[ref] = (kind, status, time.time())
                return status, ref
            if 400 <= status < 500:
                return status, None
            if time.monotonic() > deadline:
                return status, None
            gevent.sleep(0.2)

    # ---- afterwards ---------------------------------------------------------------------------
    def reconcile(self, timeout: float = 45.0) -> list[str]:
        """Ask `GET /bets/<id>` about every accepted bet until each is final; the ids still pending."""
        width = 50
        conns = [_Conn(self.host, self.port) for _ in range(width)]  # one per concurrent question
        todo = [b for b in self.rec.accepted if b not in self.rec.final]
        deadline = time.monotonic() + timeout

        def ask(bet_id: str, conn: _Conn) -> None:
            token = self.traders[self.rec.owner[bet_id]].token
            try:
                status, body = conn.call(
                    "GET", f"/api/v1/bets/{bet_id}", None, {"Authorization": f"Bearer {token}"}
                )
            except (OSError, http.client.HTTPException):
                return
            self.rec.last_answer[bet_id] = (
                f"{status}:{body.get('status') if isinstance(body, dict) else body}"
            )
            if status == 200 and body["status"] in FINAL:
                self.rec.final[bet_id] = body["status"]

        while todo and time.monotonic() < deadline:
            for chunk in range(0, len(todo), width):
                batch = todo[chunk : chunk + width]
                gevent.joinall([gevent.spawn(ask, b, conns[k]) for k, b in enumerate(batch)], timeout=HANG_S)
            todo = [b for b in todo if b not in self.rec.final]
            if todo:
                gevent.sleep(0.5)
        return todo


def db_state(db_dir: Path) -> tuple[dict[str, list[str]], Counter, Counter]:
    """Across every week file: bet_id -> statuses seen (carried copies included), the count of each
    (ref_type, ref_id) ledger row, and the count of each bet's debit row."""
    bets: dict[str, list[str]] = {}
    ledger: Counter = Counter()
    for path in list_week_files(db_dir):
        conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
        try:
            for bet_id, status in conn.execute("SELECT bet_id, status FROM bets"):
                bets.setdefault(bet_id, []).append(status)
            for ref_type, ref_id, n in conn.execute(
                "SELECT ref_type, ref_id, count(*) FROM transaction_ledger WHERE ref_type != 'opening'"
                " GROUP BY ref_type, ref_id"
            ):
                ledger[(ref_type, ref_id)] += n
        finally:
            conn.close()
    debits = Counter({ref: n for (kind, ref), n in ledger.items() if kind == "bet"})
    return bets, ledger, debits


def compare(rec: Record, db_dir: Path, *, before: float | None = None) -> dict[str, Any]:
    """Hold what the traders were told against the week files. `before`: only what was told before
    this time must be there (the drill: the disk was lost at `before + 1 s`)."""
    bets, ledger, debits = db_state(db_dir)

    def due(t: float) -> bool:
        return before is None or t < before

    confirmed = {b for b, t in rec.told_confirmed.items() if due(t)}
    confirmed |= {b for b, s in rec.final.items() if s != "rejected" and before is None}
    lost = sorted(b for b in confirmed if b not in bets)
    settled_lost = sorted(
        b
        for b, (_, t) in rec.told_settled.items()
        if due(t)
        and ("payout", b) not in ledger
        and ("refund", b) not in ledger
        and rec.told_settled[b][0] != "lost"
    )
    dup_debits = sorted(b for b, n in debits.items() if n > 1)
    dup_money = sorted(r for r, n in ledger.items() if n > 1)
    rejected_but_there = sorted(b for b, s in rec.final.items() if s == "rejected" and b in debits)
    money_lost = sorted(
        ref
        for ref, (kind, status, t) in rec.money.items()
        if status == 200 and due(t) and (kind, ref) not in ledger
    )
    return {
        "accepted": len(rec.accepted),
        "told_confirmed": len(confirmed),
        "told_settled": len(rec.told_settled),
        "money_movements": len(rec.money),
        "lost": lost,
        "settled_lost": settled_lost,
        "money_lost": money_lost,
        "duplicated": dup_debits + [f"{k}:{r}" for k, r in dup_money],
        "rejected_but_committed": rejected_but_there,
    }
