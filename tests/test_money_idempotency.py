"""Issue 10 item 3 / SPEC §7: deposits and withdrawals take an `Idempotency-Key`; one the server cannot
settle in time answers 202 pending (never a 500) and still happens exactly once.

Reproduced with the real writer held inside a job (a stalled disk, a long batch): before the fix the
route's wait raised gevent.Timeout (a BaseException) past every error handler — a bare 500 — and the
debit committed later; the client's retry debited a second time."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
import pytest
from gevent import monkey

from app.services import Services
from tests.support.pinned import Desk, desk_fixture, settings_fixture  # noqa: F401 - fixtures

RealEvent = monkey.get_original("threading", "Event")  # the writer's job runs on a native thread


def short_money_wait(desk: Desk, monkeypatch) -> None:
    """Deposits and withdrawals answer 202 pending after 0.3 s instead of 5 s: only where the writer is
    held (`stalled_writer`), so that a slow commit elsewhere never turns an expected 200 into 202."""
    monkeypatch.setattr(desk.svc, "settings", dataclasses.replace(desk.svc.settings, money_wait_s=0.3))


@contextmanager
def stalled_writer(svc: Services) -> Iterator[None]:
    """Hold the single writer inside a job until the block ends; later jobs wait in the queue."""
    inside, release = RealEvent(), RealEvent()

    def hold(_conn):
        inside.set()
        release.wait(20)

    svc.writes.submit(hold)
    deadline = time.monotonic() + 5
    while not inside.is_set():
        assert time.monotonic() < deadline, "the writer never picked the job up"
        gevent.sleep(0.01)
    try:
        yield
    finally:
        release.set()


def post(trader, path: str, amount: str, key: str | None):
    headers = {"Authorization": f"Bearer {trader.token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    resp = trader.client.post(path, json={"amount": amount}, headers=headers)
    return resp.status_code, resp.get_json()


def ledger(trader) -> list[dict]:
    status, body, _ = trader.call("GET", "/api/v1/ledger")
    assert status == 200
    return body["entries"]


def wait_ledger(trader, ref_id: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for e in ledger(trader):
            if e["ref_id"] == ref_id:
                return e
        gevent.sleep(0.05)
    pytest.fail(f"{ref_id} never reached the ledger")


def test_withdrawal_not_settled_in_time_is_202_pending_and_moves_money_once(desk: Desk, monkeypatch) -> None:
    t = desk.trader()
    short_money_wait(desk, monkeypatch)
    with stalled_writer(desk.svc):
        s1, b1 = post(t, "/api/v1/withdrawals", "30", "wd-0001")
        assert s1 == 202, b1
        assert b1["status"] == "pending" and b1["ref_id"]
        # the client retries while the first is still queued: same movement, same id, still pending
        s2, b2 = post(t, "/api/v1/withdrawals", "30", "wd-0001")
        assert s2 == 202 and b2["ref_id"] == b1["ref_id"], b2
    row = wait_ledger(t, b1["ref_id"])
    assert (row["ref_type"], row["amount"], row["balance_after"]) == ("withdrawal", "-30", "70")
    s3, b3 = post(t, "/api/v1/withdrawals", "30", "wd-0001")  # after the commit: the first result
    assert s3 == 200, b3
    assert b3["ref_id"] == b1["ref_id"] and b3["balance"] == "70" and b3["status"] == "committed"
    assert [e["ref_type"] for e in ledger(t)].count("withdrawal") == 1
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == "70"


def test_withdrawal_without_a_key_is_pending_not_500(desk: Desk, monkeypatch) -> None:
    t = desk.trader()
    short_money_wait(desk, monkeypatch)
    with stalled_writer(desk.svc):
        status, body = post(t, "/api/v1/withdrawals", "10", None)
    assert status == 202, body
    assert body["status"] == "pending"
    assert wait_ledger(t, body["ref_id"])["amount"] == "-10"


def test_same_key_same_body_returns_the_first_result(desk: Desk) -> None:
    t = desk.trader()
    s1, b1 = post(t, "/api/v1/withdrawals", "5", "k-same")
    s2, b2 = post(t, "/api/v1/withdrawals", "5", "k-same")
    assert s1 == s2 == 200, (b1, b2)
    assert b1 == b2 and b1["balance"] == "95"
    s3, b3 = post(t, "/api/v1/deposits", "7", "k-dep")
    s4, b4 = post(t, "/api/v1/deposits", "7", "k-dep")
    assert s3 == s4 == 200 and b3 == b4 and b4["balance"] == "102"
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == "102"


def test_same_key_other_body_is_409(desk: Desk) -> None:
    t = desk.trader()
    assert post(t, "/api/v1/withdrawals", "5", "k-1")[0] == 200
    status, body = post(t, "/api/v1/withdrawals", "6", "k-1")
    assert status == 409 and body["error"]["code"] == "idempotency_key_conflict", body
    status, body = post(t, "/api/v1/deposits", "5", "k-1")  # another endpoint is another body
    assert status == 409 and body["error"]["code"] == "idempotency_key_conflict", body
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == "95"


def test_keys_are_per_user(desk: Desk) -> None:
    a, b = desk.trader(), desk.trader()
    assert post(a, "/api/v1/withdrawals", "5", "shared-key")[0] == 200
    status, body = post(b, "/api/v1/withdrawals", "5", "shared-key")
    assert status == 200 and body["balance"] == "95", body


def test_refused_withdrawal_is_remembered_under_its_key(desk: Desk) -> None:
    t = desk.trader()
    status, body = post(t, "/api/v1/withdrawals", "500", "too-much")
    assert status == 422 and body["error"]["code"] == "insufficient_funds", body
    t.deposit("1000")
    status, body = post(t, "/api/v1/withdrawals", "500", "too-much")  # the first result, not a new try
    assert status == 422 and body["error"]["code"] == "insufficient_funds", body
    assert post(t, "/api/v1/withdrawals", "500", "a-new-key")[0] == 200


@pytest.mark.parametrize("key", ["", "x" * 65, "has space", "tab\there", "é"])
def test_bad_key_is_400(desk: Desk, key: str) -> None:
    t = desk.trader()
    status, body = post(t, "/api/v1/withdrawals", "1", key)
    assert status == 400 and body["error"]["code"] == "invalid_idempotency_key", body


def test_longest_key_is_accepted(desk: Desk) -> None:
    t = desk.trader()
    assert post(t, "/api/v1/withdrawals", "1", "k" * 64)[0] == 200
