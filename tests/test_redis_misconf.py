"""Issue 10 item 12: a Redis that answers with an error (MISCONF when out of disk, NOREPLICAS, ...)
is a dependency failure like a dropped connection: 503 `dependency_unavailable` with Retry-After on
every route, never a 500. Reproduced with a real Redis refusing writes (min-replicas-to-write 1)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pinned import Desk, desk_fixture, settings_fixture  # noqa: F401 - fixtures


@pytest.fixture
def refusing_writes(redis_server) -> Iterator[None]:
    r = redis_server.client()
    r.config_set("min-replicas-to-write", 1)  # every write now fails: NOREPLICAS (a ResponseError)
    try:
        yield
    finally:
        r.config_set("min-replicas-to-write", 0)


def _assert_503(status: int, body: dict, headers: dict) -> None:
    assert status == 503, body
    assert body["error"]["code"] == "dependency_unavailable"
    assert int(headers["Retry-After"]) >= 1


def test_bet_claim_refused_by_redis_is_503(desk: Desk, redis_server) -> None:
    t = desk.trader()
    body = t.bet_body(desk.cell(), "1", ts=desk.clock.ms)
    r = redis_server.client()
    r.config_set("min-replicas-to-write", 1)
    try:
        _assert_503(*t.call("POST", "/api/v1/bets", body))
    finally:
        r.config_set("min-replicas-to-write", 0)
    status, out, _ = t.call("POST", "/api/v1/bets", body)  # nothing was claimed: the retry goes through
    assert status == 202, out


def test_login_nonce_refused_by_redis_is_503(desk: Desk, refusing_writes) -> None:
    c = desk.app.test_client()
    resp = c.get("/api/v1/auth/nonce")
    assert resp.status_code == 503, resp.data
    assert resp.get_json()["error"]["code"] == "dependency_unavailable"
    assert resp.headers["Retry-After"]


def test_withdrawal_when_redis_refuses_writes_is_not_500(desk: Desk, redis_server) -> None:
    """The money moved (SQLite is the authority); only the balance notification failed: still 200."""
    t = desk.trader()
    r = redis_server.client()
    r.config_set("min-replicas-to-write", 1)
    try:
        status, body, _ = t.call("POST", "/api/v1/withdrawals", {"amount": "1"})
    finally:
        r.config_set("min-replicas-to-write", 0)
    assert status == 200, body
    assert body["balance"] == "99"
