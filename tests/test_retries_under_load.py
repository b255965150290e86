"""A retry of an accepted bet gets that bet back, also while the server refuses new taps for load
(SPEC §6: "The same nonce with the same body again (a retry) returns the same bet and status";
SPEC §8a: "over either transport").

SPEC §6 puts the nonce check (step 5) before "queued to the batcher", and it places neither the
per-wallet/per-IP rate limit nor the socket's in-flight cap (SPEC §8a) before it: a retry adds no bet,
no debit and no write, so none of these refusals is the retry's to get. Before the fix each of them
answered a retry before its nonce was looked up — an outside client that retried after a lost answer
(exactly when a server is busy) was told 429/503 about a bet it already had.

One case table, both transports (`POST /api/v1/bets` and a socket's `bet` message, through the same
`app.bets.placement.place_bet`); the in-flight cap exists on the socket only, the per-IP limit on
HTTP only. For each case: a bet accepted first; then, under the refusal, its retry is the same bet, a
fresh tap still gets the refusal, another body under the same nonce still gets it too, and the same
signed text with someone else's signature is 401 (a retry is answered only once its signature holds).

On the pinned desk (frozen clock, pinned quote book): nothing but the case's refusal changes between
the first tap and the retry.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from eth_account import Account

from app.auth.sessions import lookup_session
from app.auth.state import auth_state
from app.bets.store import get_bet
from app.config import Settings
from app.realtime.taps import MAX_IN_FLIGHT, TapSocket
from tests.support.pinned import Desk, desk_fixture, desk_settings  # noqa: F401 - fixtures
from tests.support.traders import Trader
from tests.support.waiting import wait_until
from tests.test_money_idempotency import stalled_writer

QUEUE_MAX = 2
LIMIT = 5


@dataclass
class Answer:
    status: int  # 202 for an accepted bet (bet:accepted on the socket)
    code: str | None
    bet_id: str | None


class Transport:
    """Places a signed bet body over one transport and tells the answer in HTTP terms."""

    name: str

    def place(self, body: dict) -> Answer:
        raise NotImplementedError


class Http(Transport):
    name = "http"

    def __init__(self, trader: Trader) -> None:
        self.trader = trader

    def place(self, body: dict) -> Answer:
        status, out, _ = self.trader.call("POST", "/api/v1/bets", body)
        if status == 202:
            return Answer(status, None, out["bet_id"])
        return Answer(status, out["error"]["code"], None)


class Ws(Transport):
    name = "ws"

    def __init__(self, desk: Desk, trader: Trader) -> None:
        session = lookup_session(desk.svc.redis, trader.token, desk.clock.ms)
        assert session is not None
        with desk.app.app_context():
            limits = auth_state().limits
        self.answers: list[dict] = []
        self.sock = TapSocket(desk.svc, desk.svc.fanout.register(), session, limits, send=self.answers.append)

    def place(self, body: dict) -> Answer:
        req = secrets.token_hex(4)
        self.sock.handle(orjson.dumps({"type": "bet", "req": req, **body}))
        out = self.answers[-1]
        assert out["req"] == req, out
        if out["type"] == "bet:accepted":
            return Answer(202, None, out["bet_id"])
        assert out["type"] == "bet:error", out
        return Answer(out["status"], out["error"]["code"], None)


def _full_write_queue(desk: Desk, trader: Trader, transport: Transport) -> AbstractContextManager[None]:
    @contextmanager
    def full() -> Iterator[None]:
        with stalled_writer(desk.svc):  # the writer holds one job; the queue behind it fills up
            while desk.svc.writes.depth() < desk.svc.writes.maxsize:
                desk.svc.writes.submit(lambda _conn: None)
            yield

    return full()


def _wallet_limit_spent(desk: Desk, trader: Trader, transport: Transport) -> AbstractContextManager[None]:
    # The clock is frozen: the window never ends. GET /me counts against the wallet's limit, which
    # HTTP requests and taps share (app.auth.ratelimit).
    for _ in range(LIMIT + 1):
        if trader.call("GET", "/api/v1/me")[0] == 429:
            break
    assert trader.call("GET", "/api/v1/me")[0] == 429
    return nullcontext()


def _ip_limit_spent(desk: Desk, trader: Trader, transport: Transport) -> AbstractContextManager[None]:
    other = desk.trader(deposit=None)  # another wallet behind the same IP spends the IP's limit
    for _ in range(LIMIT + 1):
        if other.call("GET", "/api/v1/me")[0] == 429:
            break
    status, body, _ = trader.call("GET", "/api/v1/me")
    assert (status, body["error"]["code"]) == (429, "rate_limited") and "IP" in body["error"]["message"]
    return nullcontext()


def _in_flight_cap_reached(desk: Desk, trader: Trader, transport: Transport) -> AbstractContextManager[None]:
    assert isinstance(transport, Ws)
    transport.sock.in_flight = MAX_IN_FLIGHT  # as many taps waiting for their commit as a socket may have
    return nullcontext()


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    code: str
    enter: Callable[[Desk, Trader, Transport], AbstractContextManager[None]]
    transports: tuple[str, ...] = ("http", "ws")
    settings: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("write_queue_full", 503, "overloaded", _full_write_queue, settings={"write_queue_max": QUEUE_MAX}),
    Case("wallet_rate_limit", 429, "rate_limited", _wallet_limit_spent, settings={"rate_per_address": LIMIT}),
    Case("ip_rate_limit", 429, "rate_limited", _ip_limit_spent, ("http",), settings={"rate_per_ip": LIMIT}),
    Case("in_flight_cap", 429, "too_many_in_flight", _in_flight_cap_reached, ("ws",)),
]


@pytest.fixture
def settings(request, tmp_path, redis_url) -> Settings:
    case: Case | None = getattr(request, "param", None)
    return desk_settings(tmp_path, redis_url, **(case.settings if case else {"rate_per_address": LIMIT}))


def _params() -> list[Any]:
    return [
        pytest.param(case, transport, id=f"{case.name}-{transport}")
        for case in CASES
        for transport in case.transports
    ]


@pytest.mark.parametrize(("settings", "transport_name"), _params(), indirect=["settings"])
def test_a_retry_under_a_load_refusal_returns_the_accepted_bet(
    desk: Desk, settings: Settings, transport_name: str, request
) -> None:
    case: Case = request.node.callspec.params["settings"]
    trader = desk.trader(deposit="50")
    transport: Transport = Http(trader) if transport_name == "http" else Ws(desk, trader)
    first = trader.bet_body(desk.cell(col=1), "1", ts=desk.clock.ms)
    accepted = transport.place(first)
    assert accepted.status == 202, accepted
    wait_until(  # read without HTTP: under a rate limit every request counts
        lambda: desk.svc.reads.run(lambda c: get_bet(c, accepted.bet_id)), what="the first bet committed"
    )

    with case.enter(desk, trader, transport):
        in_flight = transport.sock.in_flight if isinstance(transport, Ws) else 0
        retry = transport.place(first)
        assert (retry.status, retry.bet_id) == (202, accepted.bet_id), retry
        if isinstance(transport, Ws):
            assert transport.sock.in_flight == in_flight  # a retry reserves no room for a commit

        fresh = transport.place(trader.bet_body(desk.cell(col=2), "1", ts=desk.clock.ms))
        assert (fresh.status, fresh.code) == (case.status, case.code), fresh

        other_body = transport.place(
            trader.bet_body(desk.cell(col=3), "1", nonce=first["nonce"], ts=first["ts"])
        )
        assert (other_body.status, other_body.code) == (case.status, case.code), other_body

        forged = trader.bet_body(
            first["cell"],
            first["stake"],
            first["min_multiplier"],
            nonce=first["nonce"],
            ts=first["ts"],
            signer=Account.create(),
        )  # the very same signed text, signed by a key that is neither the session's nor the wallet's
        assert {k: v for k, v in forged.items() if k != "signature"} == {
            k: v for k, v in first.items() if k != "signature"
        }
        refused = transport.place(forged)
        assert (refused.status, refused.code) == (401, "wrong_signer"), refused

    desk.clock.advance(1.0)  # the next rate-limit window
    status, me, _ = trader.call("GET", "/api/v1/me")
    assert status == 200, me
    assert me["balance"] == "49" and me["open_bets"] == 1  # one bet, one debit


def _money(trader: Trader, path: str, amount: str, key: str | None) -> tuple[int, dict, dict]:
    headers = {"Authorization": f"Bearer {trader.token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    resp = trader.client.post(path, json={"amount": amount}, headers=headers)
    return resp.status_code, resp.get_json(), dict(resp.headers)


def test_a_money_retry_over_the_wallet_limit_returns_the_first_result(desk: Desk) -> None:
    """SPEC §7: "the same key with the same body returns the first result and moves money once" —
    also once the wallet is over its rate limit; a new key, or none, is still 429."""
    trader = desk.trader(deposit=None)
    first = {
        path: _money(trader, path, amount, key)
        for path, amount, key in (("/api/v1/deposits", "10", "dep-1"), ("/api/v1/withdrawals", "4", "wd-1"))
    }
    assert [status for status, _, _ in first.values()] == [200, 200], first
    _wallet_limit_spent(desk, trader, Http(trader))

    for path, amount, key in (("/api/v1/deposits", "10", "dep-1"), ("/api/v1/withdrawals", "4", "wd-1")):
        status, body, headers = _money(trader, path, amount, key)
        assert (status, body) == (200, first[path][1]), body
        assert headers.get("Idempotent-Replayed") == "true"
        for other_key in ("new-key", None):
            status, body, headers = _money(trader, path, amount, other_key)
            assert (status, body["error"]["code"]) == (429, "rate_limited"), body
            assert int(headers["Retry-After"]) >= 1

    desk.clock.advance(1.0)  # the next rate-limit window
    status, me, _ = trader.call("GET", "/api/v1/me")
    assert (status, me["balance"]) == (200, "6"), me  # each movement once


@pytest.mark.parametrize("settings", [CASES[2]], indirect=True, ids=["ip_rate_limit"])
@pytest.mark.parametrize("dev_mode", [True, False], ids=["dev", "prod"])
def test_over_the_ip_limit_a_keyed_money_request_does_not_tell_whether_its_session_exists(
    desk: Desk, dev_mode: bool, monkeypatch
) -> None:
    """The per-IP limit comes before the session (app.auth.ratelimit): past it, a token that names no
    session is 429 whatever the request. A keyed deposit or withdrawal of a session that does exist was
    judged on its body, its key and the dev-mode switch before the limit (400, 403, 422), so past the
    limit its answer still told a real token from a guessed one, as fast as the client could ask. Only
    the retry of a committed key is answered over the limit (SPEC §7); anything else is the same 429."""
    monkeypatch.setattr(desk.svc, "settings", dataclasses.replace(desk.svc.settings, dev_mode=dev_mode))
    trader = desk.trader(deposit=None)
    stranger = Trader(trader.client, trader.settings)
    stranger.token = secrets.token_urlsafe(32)  # well formed, names no session
    _ip_limit_spent(desk, trader, Http(trader))

    requests = [
        ("/api/v1/withdrawals", {"amount": "not money"}, "k-1"),  # 400 invalid_amount
        ("/api/v1/withdrawals", {"amount": "1"}, "has space"),  # 400 invalid_idempotency_key
        ("/api/v1/deposits", {"amount": "1"}, "k-2"),  # 403 dev_mode_only when not in dev mode
        ("/api/v1/deposits", {"amount": "2000000"}, "k-3"),  # 422 amount_too_large
    ]
    for path, body, key in requests:
        answers = []
        for who in (stranger, trader):
            resp = who.client.post(
                path, json=body, headers={"Authorization": f"Bearer {who.token}", "Idempotency-Key": key}
            )
            answers.append((resp.status_code, resp.get_json()["error"]["code"]))
        assert answers == [(429, "rate_limited")] * 2, (path, body, key, answers)
