"""A full write queue (SPEC §6 step 8): the bets it cannot take are refused with 503 `overloaded`,
nothing of them is written, and their nonce and cell are free for a retry.

On the pinned desk (frozen clock, pinned quote book): every cell the test taps stays placeable and
quoted however slow the machine is, so the only refusals are the queue's.
"""

from __future__ import annotations

import pytest

from app.config import Settings
from tests.support.pinned import Desk, desk_fixture, desk_settings  # noqa: F401 - fixtures
from tests.support.traders import Trader
from tests.support.waiting import wait_until
from tests.test_money_idempotency import stalled_writer

QUEUE_MAX = 3


@pytest.fixture
def settings(tmp_path, redis_url) -> Settings:
    return desk_settings(tmp_path, redis_url, write_queue_max=QUEUE_MAX)


def _status(t: Trader, bet_id: str) -> str:
    status, body, _ = t.call("GET", f"/api/v1/bets/{bet_id}")
    assert status == 200, body
    return body["status"]


def test_full_queue_answers_503_and_writes_nothing_half(desk: Desk):
    t = desk.trader(deposit="50")
    cells = [desk.cell(col=c, row_offset=2) for c in range(8)]
    with stalled_writer(desk.svc):  # the writer holds one job; the queue behind it takes QUEUE_MAX
        results = [t.bet(cell, "1", ts=desk.clock.ms) for cell in cells]
    codes = [status for status, _, _ in results]
    assert codes == [202] * QUEUE_MAX + [503] * (len(cells) - QUEUE_MAX), results
    for _, body, headers in results[QUEUE_MAX:]:
        assert body["error"]["code"] == "overloaded" and int(headers["Retry-After"]) >= 1
    accepted = [body["bet_id"] for _, body, _ in results[:QUEUE_MAX]]
    for bet_id in accepted:
        wait_until(lambda b=bet_id: _status(t, b) in ("confirmed", "rejected"), what=f"{bet_id} settled")
        assert _status(t, bet_id) == "confirmed"
    _, me, _ = t.call("GET", "/api/v1/me")
    assert me["balance"] == str(50 - QUEUE_MAX)
    _, ledger, _ = t.call("GET", "/api/v1/ledger")
    assert len(ledger["entries"]) == 1 + QUEUE_MAX  # the deposit and the accepted bets, nothing else
    # a refused request can simply be retried: its nonce and cell were released
    status, body, _ = t.bet(cells[QUEUE_MAX], "1", ts=desk.clock.ms)
    assert status == 202, body
