"""A trader's events arrive in commit order, so the last `balance` is the one GET /me shows (SPEC §8).

Bets, deposits and withdrawals each commit in the single writer; one sender publishes what each commit
changed, in that order (app.bets.notify). When a deposit's request published its own balance while an
earlier bet's confirmation still waited for the sender, the app showed the older balance last.
"""

from __future__ import annotations

import gevent
import orjson
import pytest

from app.config import Settings
from app.keys import events_key
from app.units import format_money
from tests.support.pinned import Desk, desk_fixture  # noqa: F401 - fixtures
from tests.support.traders import Trader
from tests.support.waiting import wait_until


@pytest.fixture(name="settings")
def settings_fixture(tmp_path, redis_url) -> Settings:
    return Settings.from_env(
        {}, data_dir=tmp_path / "data", redis_url=redis_url, dev_mode=True, rate_per_address=0, rate_per_ip=0
    )


def _events(desk: Desk, address: str) -> list[dict]:
    return [orjson.loads(fields[b"m"]) for _, fields in desk.svc.redis.xrange(events_key(address))]


def _ledger_balances(desk: Desk, address: str) -> list[str]:
    rows = desk.svc.reads.run(
        lambda c: c.execute(
            "SELECT l.balance_after FROM transaction_ledger l JOIN users u ON u.id = l.user_id"
            " WHERE u.address = ? ORDER BY l.id",
            (address,),
        ).fetchall()
    )
    return [format_money(r[0]) for r in rows]


def test_balance_events_follow_the_ledger_while_bets_and_movements_interleave(desk: Desk) -> None:
    # As after a Redis restart: no script is loaded, so the first batches meet NOSCRIPT. (Other tests
    # on the same redis-server would otherwise decide whether this one does.)
    desk.svc.redis.script_flush()
    first = Trader(desk.app.test_client(), desk.svc.settings, clock=desk.clock).login()
    first.deposit("100")
    # the same trader on a second client: its requests run beside the first one's
    second = Trader(
        desk.app.test_client(), desk.svc.settings, wallet=first.wallet, key=first.key, token=first.token
    )
    cells = [desk.cell(col=c, row_offset=o) for c in range(3) for o in range(-5, 5)]

    def bets() -> None:
        for cell in cells:
            status, body, _ = first.call("POST", "/api/v1/bets", first.bet_body(cell, "1"))
            assert status == 202, body

    def movements() -> None:
        for _ in range(10):
            assert second.call("POST", "/api/v1/deposits", {"amount": "3"})[0] == 200
            assert second.call("POST", "/api/v1/withdrawals", {"amount": "2"})[0] == 200

    gevent.joinall([gevent.spawn(bets), gevent.spawn(movements)], raise_error=True)
    rows = 1 + len(cells) + 20  # the first deposit, a debit per bet, the movements
    wait_until(
        lambda: (
            len(_ledger_balances(desk, first.address)) == rows
            and sum(e["type"] == "balance" for e in _events(desk, first.address)) == rows
        ),
        timeout=15,
        what="every commit's balance event",
    )
    events = _events(desk, first.address)
    assert [e["balance"] for e in events if e["type"] == "balance"] == _ledger_balances(desk, first.address)
    assert events[-1]["balance"] == first.call("GET", "/api/v1/me")[1]["balance"]
    # each bet's confirmation comes right before the balance its debit made
    for i, e in enumerate(events):
        if e["type"] == "bet:confirmed":
            assert events[i + 1]["type"] == "balance"
