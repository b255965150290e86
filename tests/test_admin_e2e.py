"""The halt switch and the console against a real gunicorn (SPEC §8b, §8c): the operator halts, a
trader's socket is told with the reason and its taps are refused on both transports, the operator
reopens and the tap goes through; the console's panels see the sim source, the taps and the exposure."""

from __future__ import annotations

import pytest
from eth_account import Account

from tests.support.servers import Gunicorn, wait_until
from tests.support.traders import HttpClient, Trader
from tests.support.wsclient import Settings, Socket, placeable_cells, tap

pytestmark = pytest.mark.e2e

ADMIN = Account.create()


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_redis_url):
    tmp = tmp_path_factory.mktemp("admin")
    env = {
        "TAP_DATA_DIR": str(tmp / "data"),
        "TAP_REDIS_URL": module_redis_url,
        "TAP_SIWE_DOMAIN": "localhost:8443",
        "TAP_DEV_MODE": "1",
        "TAP_RATE_PER_ADDRESS": "0",
        "TAP_RATE_PER_IP": "0",
        "TAP_QUOTE_MAX_AGE_S": "30",
        "TAP_ADMIN_ADDRESSES": ADMIN.address,
    }
    g = Gunicorn(env, tmp / "gunicorn.log")
    g.start()
    yield g
    assert g.stop() == 0
    assert "Traceback" not in g.log(), g.log()


def test_halt_tells_the_sockets_refuses_taps_on_both_transports_and_reopens(server):
    admin = Trader(HttpClient(server.url), Settings(), wallet=ADMIN).login()
    trader = Trader(HttpClient(server.url), Settings()).login()
    trader.deposit("100")
    sock = Socket(server.url.replace("http", "ws") + "/ws")
    try:
        sock.send({"type": "auth", "token": trader.token})
        sock.next(lambda m: m["type"] == "auth:ok")
        sock.next(lambda m: m["type"] == "status" and m["betting"] is True)
        cells = placeable_cells(trader, 3)

        status, out, _ = admin.call("POST", "/api/v1/admin/betting", {"open": False, "reason": "maintenance"})
        assert status == 200 and out["halted"] is True and out["recorded"] is True, out
        told = sock.next(lambda m: m["type"] == "status" and m["betting"] is False)
        assert told["halted"] is True and told["reason"] == "maintenance"

        sock.send(tap(trader.bet_body(cells[0], "1"), "h-1"))
        refused = sock.answer("h-1")
        assert refused["type"] == "bet:error" and refused["status"] == 503, refused
        assert refused["error"]["code"] == "betting_halted" and "maintenance" in refused["error"]["message"]
        assert refused["retry_after"] == 30
        status, body, headers = trader.bet(cells[1], "1")
        assert status == 503 and body["error"]["code"] == "betting_halted" and headers["Retry-After"] == "30"

        status, out, _ = admin.call("POST", "/api/v1/admin/betting", {"open": True})
        assert status == 200 and out["open"] is True, out
        back = sock.next(lambda m: m["type"] == "status" and m["betting"] is True)
        assert "reason" not in back
        body = trader.bet_body(cells[0], "1")
        sock.send(tap(body, "h-2"))
        assert sock.answer("h-2")["type"] == "bet:accepted"

        # the console: the actions, the taps by code, the exposure of the accepted bet, the sim source
        status, state, _ = admin.call("GET", "/api/v1/admin/betting")
        assert [a["action"] for a in state["actions"]][:2] == ["reopen", "halt"]
        assert (
            state["actions"][1]["address"] == admin.address and state["actions"][1]["reason"] == "maintenance"
        )

        def overview() -> dict:
            return admin.call("GET", "/api/v1/admin/overview?window=60")[1]

        wait_until(lambda: overview()["exposure"]["largest_cells"], what="the exposure in the console")
        view = overview()
        assert view["exposure"]["largest_cells"][0]["cell"] == cells[0]
        assert view["taps"]["totals"]["betting_halted"] == 2 and view["taps"]["totals"]["accepted"] >= 1
        # The console samples the sources once a second; on a busy machine one sample can catch the
        # sim between two quotes older than its freshness bound, which the console rightly shows.
        (sim,) = wait_until(
            lambda: [s for s in overview()["feed"]["sources"] if s["fresh"]],
            what="a sample of the sim, fresh",
        )
        assert sim["source"] == "sim" and sim["deviation_ppm"] == 0
        assert len(overview()["feed"]["sources"]) == 1
        assert view["websocket"]["clients"] >= 1
        assert any(t.get("halted") for t in view["feed"]["transitions"])
        assert view["writer"]["queue_max"] > 0
        # the console worker's first writer sample is only a baseline: the series starts a second later
        wait_until(lambda: overview()["writer"]["series"]["at"], what="a second of the writer sampled")
        assert view["weeks"]["local"][0]["state"] == "current"

        status, out, _ = trader.call("GET", "/api/v1/admin/overview")
        assert status == 403
    finally:
        sock.close()
