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

from app.ledger.integrity import check_file
from app.ledger.store import credit, move_money, movement_ref_id
from app.services import Services
from app.storage import db
from app.storage.rollover import following_week_file, rollover_job
from app.storage.writes import WriteQueue
from tests.support.pinned import Desk, desk_fixture, settings_fixture  # noqa: F401 - fixtures
from workers.sqlite_writer import SqliteWriter

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


# ---- a retry that straddles the week rollover ---------------------------------------------------
#
# The rollover does not copy money_requests into the new week (migration 003). A retry whose job was
# queued before the first attempt committed (so the route's look-up found nothing) and that runs after
# a rollover must still find the key in the previous week, inside the writer's transaction.


class Hold:
    """A writer job that holds the writer from the moment it runs until `release()`: the jobs taken in
    the same batch before it have run but are not committed, and later ones wait in the queue."""

    def __init__(self) -> None:
        self.inside, self.released = RealEvent(), RealEvent()

    def __call__(self, _conn) -> None:
        self.inside.set()
        self.released.wait(20)

    def wait_inside(self) -> None:
        deadline = time.monotonic() + 5
        while not self.inside.is_set():
            assert time.monotonic() < deadline, "the writer never picked the job up"
            gevent.sleep(0.01)

    def release(self) -> None:
        self.released.set()


def wait_queued(svc: Services, n: int) -> None:
    deadline = time.monotonic() + 5
    while svc.writes.depth() < n:
        assert time.monotonic() < deadline, "the request never queued its job"
        gevent.sleep(0.01)


def first_attempt_in_flight(desk: Desk, monkeypatch, t, path: str, amount: str, key: str) -> tuple[Hold, str]:
    """The first attempt answered 202 and sits in the writer's open transaction, run, not committed;
    returns the hold and the 202's ref_id."""
    short_money_wait(desk, monkeypatch)
    held = Hold()
    with stalled_writer(desk.svc):
        status, body = post(t, path, amount, key)
        assert status == 202, body
        desk.svc.writes.submit(held)  # taken in one batch with the first attempt, after it
    held.wait_inside()
    return held, body["ref_id"]


def roll_over_then_release(desk: Desk, held: Hold) -> None:
    """Queue the week rollover (priority lane: it runs before the queued retry) and let the writer go;
    returns once everything queued so far has run."""
    db_dir = desk.svc.settings.db_dir
    new = following_week_file(db.current_week_file(db_dir))
    rolled = desk.svc.writes.submit(rollover_job(db_dir, new, now_ms=desk.clock.ms), priority=True)
    held.release()
    assert rolled.get(timeout=10).new == new.name
    desk.svc.writes.call(lambda _conn: None)  # queued after the retry: it has run when this returns
    assert db.current_week_file(db_dir) == new


def test_retry_answered_pending_across_a_rollover_moves_money_once(desk: Desk, monkeypatch) -> None:
    """The reviewer's reproduction: the retry is queued while the first attempt is uncommitted, the
    rollover runs between them, and the retry ran in the new week (which has no keys) — it debited a
    second time (/me 40, two withdrawal rows in two week files)."""
    t = desk.trader()
    held, ref_id = first_attempt_in_flight(desk, monkeypatch, t, "/api/v1/withdrawals", "30", "wd-roll")
    status, body = post(t, "/api/v1/withdrawals", "30", "wd-roll")  # the route's look-up finds nothing
    assert status == 202, body
    roll_over_then_release(desk, held)
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == "70"
    assert [e["ref_id"] for e in ledger(t) if e["ref_type"] == "withdrawal"] == [ref_id]
    status, body = post(t, "/api/v1/withdrawals", "30", "wd-roll")  # the first result
    assert status == 200, body
    assert body == {"balance": "70", "amount": "30", "ref_id": ref_id, "status": "committed"}


@pytest.mark.parametrize(
    ("path", "balance"), [("/api/v1/withdrawals", "70"), ("/api/v1/deposits", "130")], ids=["wd", "dep"]
)
def test_retry_waiting_across_a_rollover_gets_the_first_result(
    desk: Desk, monkeypatch, path: str, balance: str
) -> None:
    t = desk.trader()
    held, ref_id = first_attempt_in_flight(desk, monkeypatch, t, path, "30", "k-roll")
    monkeypatch.setattr(desk.svc, "settings", dataclasses.replace(desk.svc.settings, money_wait_s=10))
    retry = gevent.spawn(post, t, path, "30", "k-roll")  # waits for its own job's outcome
    wait_queued(desk.svc, 1)
    roll_over_then_release(desk, held)
    status, body = retry.get(timeout=10)
    assert status == 200, body
    assert body == {"balance": balance, "amount": "30", "ref_id": ref_id, "status": "committed"}
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == balance
    assert [e["ref_id"] for e in ledger(t)].count(ref_id) == 1


def test_other_amount_under_the_same_key_across_a_rollover_is_409(desk: Desk, monkeypatch) -> None:
    t = desk.trader()
    held, _ = first_attempt_in_flight(desk, monkeypatch, t, "/api/v1/withdrawals", "30", "k-other")
    monkeypatch.setattr(desk.svc, "settings", dataclasses.replace(desk.svc.settings, money_wait_s=10))
    other = gevent.spawn(post, t, "/api/v1/withdrawals", "20", "k-other")
    wait_queued(desk.svc, 1)
    roll_over_then_release(desk, held)
    status, body = other.get(timeout=10)
    assert status == 409 and body["error"]["code"] == "idempotency_key_conflict", body
    status, body = post(t, "/api/v1/withdrawals", "20", "k-other")  # and so does a later retry of it
    assert status == 409 and body["error"]["code"] == "idempotency_key_conflict", body
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == "70"
    assert [e["amount"] for e in ledger(t) if e["ref_type"] == "withdrawal"] == ["-30"]


def test_other_amount_answered_pending_across_a_rollover_settles_as_409(desk: Desk, monkeypatch) -> None:
    """A 202 promises nothing about the body: a retry with the same key answers the settled result,
    which for another amount is the conflict, and no money moved for it."""
    t = desk.trader()
    held, _ = first_attempt_in_flight(desk, monkeypatch, t, "/api/v1/withdrawals", "30", "k-other")
    status, body = post(t, "/api/v1/withdrawals", "20", "k-other")
    assert status == 202, body
    roll_over_then_release(desk, held)
    status, body = post(t, "/api/v1/withdrawals", "20", "k-other")
    assert status == 409 and body["error"]["code"] == "idempotency_key_conflict", body
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == "70"


def test_writer_restarted_after_a_rollover_still_finds_the_key(tmp_path) -> None:
    """The writer's knowledge of the previous week must come from the files, not from its memory of
    the rollover: a writer (re)started on the new week finds a key committed in the old one."""
    db.prepare_database(tmp_path, 1_800_000_000)  # week 2027_02
    conn = db.connect(db.current_week_file(tmp_path))
    conn.execute(
        "INSERT INTO users (id, address, balance, created_at) VALUES (1, ?, 0, 0)", ("0x" + "a1" * 20,)
    )
    credit(conn, 1, 100_000_000, "deposit", "dep-1", 0)
    conn.close()
    ref = movement_ref_id("withdrawal", 1, "k")

    def run(*jobs):
        q = WriteQueue(100)
        writer = SqliteWriter(q, tmp_path, synchronous="FULL", batch_max=100)
        g = gevent.spawn(writer.run)
        try:
            return [q.call(job) for job in jobs]
        finally:
            writer.stop()
            g.join(5)

    first, _ = run(
        move_money(1, "withdrawal", 30_000_000, ref, 0, "k"),
        rollover_job(tmp_path, following_week_file(db.current_week_file(tmp_path)), now_ms=0),
    )
    assert first.status == "committed" and first.balance == 70_000_000 and not first.replayed
    (again,) = run(move_money(1, "withdrawal", 30_000_000, ref, 0, "k"))  # a new writer, the new week
    assert again.replayed and again.balance == 70_000_000
    assert [check_file(p) for p in db.list_week_files(tmp_path)] == [[], []]
    conn = db.connect(db.current_week_file(tmp_path), readonly=True)
    assert conn.execute("SELECT balance FROM users WHERE id = 1").fetchone()[0] == 70_000_000
    conn.close()
