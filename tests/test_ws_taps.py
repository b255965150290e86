"""Taps over the websocket (SPEC §8a) against a real gunicorn: the same rules, codes and idempotency
as `POST /api/v1/bets`, one answer per `bet` message, auth as a first message, logout closes 4401."""

from __future__ import annotations

import json
import time

import pytest
import websocket

from tests.support.servers import Gunicorn, Nginx, free_port, wait_until
from tests.support.traders import HttpClient, Trader
from tests.support.wsclient import Settings, Socket, placeable_cells, server_env, tap
from tests.test_frames import client_frame

pytestmark = pytest.mark.e2e


class Front:
    """Where a test talks to the server: gunicorn directly, or nginx in front of it."""

    def __init__(self, url: str, env: dict) -> None:
        self.url, self.env = url, env


@pytest.fixture(scope="module", params=["direct", "nginx"])
def server(request, tmp_path_factory, redis_server):
    """Every test of this module runs against gunicorn directly and through nginx."""
    tmp = tmp_path_factory.mktemp("taps")
    env = server_env(tmp, redis_server)
    g = Gunicorn(env, tmp / "gunicorn.log")
    g.start()
    nginx = None
    try:
        if request.param == "nginx":
            from app.config import Settings as AppSettings

            settings = AppSettings.from_env(
                {
                    **env,
                    "TAP_BIND": f"127.0.0.1:{g.port}",
                    "TAP_HTTP_PORT": str(free_port()),
                    "TAP_HTTPS_PORT": str(free_port()),
                }
            )
            nginx = Nginx(settings)
            nginx.start()
            yield Front(f"http://127.0.0.1:{settings.http_port}", env)
        else:
            yield Front(g.url, env)
    finally:
        if nginx is not None:
            nginx.stop()
    assert g.stop() == 0
    assert "Traceback" not in g.log(), g.log()


@pytest.fixture
def trader(server):
    t = Trader(HttpClient(server.url), Settings()).login()
    t.deposit("100")
    return t


@pytest.fixture
def sock(server, trader):
    s = Socket(server.url.replace("http", "ws") + "/ws")
    s.send({"type": "auth", "token": trader.token})
    assert s.next(lambda m: m["type"] == "auth:ok")["address"].lower() == trader.address
    yield s
    s.close()


def test_a_tap_is_accepted_then_confirmed_and_its_retry_is_the_same_bet_on_both_transports(sock, trader):
    body = trader.bet_body(placeable_cells(trader, 1)[0], "10", "1.01")
    sock.send(tap(body, "t-1"))
    accepted = sock.answer("t-1")
    assert accepted["type"] == "bet:accepted" and accepted["status"] == "pending"
    assert accepted["cell"] == body["cell"] and accepted["stake"] == "10"
    bet_id = accepted["bet_id"]
    confirmed = sock.next(lambda m: m["type"] == "bet:confirmed" and m["bet_id"] == bet_id)
    assert confirmed["multiplier"] == accepted["multiplier"]
    sock.send(tap(body, "t-2"))  # the same signed body again, over the socket
    again = sock.answer("t-2")
    assert again["type"] == "bet:accepted" and again["bet_id"] == bet_id and again["status"] == "confirmed"
    status, http_again, _ = trader.call("POST", "/api/v1/bets", body)  # and over HTTP
    assert status == 202 and http_again["bet_id"] == bet_id
    _, me, _ = trader.call("GET", "/api/v1/me")
    assert me["balance"] == "90" and me["open_bets"] == 1


def test_refusals_are_bet_errors_with_the_http_status_and_code(sock, trader):
    cells = placeable_cells(trader, 4)
    cases = [
        (dict(trader.bet_body(cells[0], "1"), stake=1), 400, "invalid_request"),
        (trader.bet_body(cells[0], "10.0000001"), 400, "invalid_stake"),
        (trader.bet_body(cells[0], "0.5"), 422, "stake_too_small"),
        (trader.bet_body(cells[0], "1", ts=int(time.time() * 1000) - 120_000), 401, "ts_out_of_window"),
        (
            dict(trader.bet_body(cells[0], "1"), signature=trader.bet_body(cells[1], "1")["signature"]),
            401,
            None,
        ),
        (trader.bet_body("5:1", "1"), 422, "cell_too_soon"),
    ]
    for i, (body, status, code) in enumerate(cases):
        sock.send(tap(body, f"e-{i}"))
        err = sock.answer(f"e-{i}")
        assert err["type"] == "bet:error" and err["status"] == status, err
        if code is not None:
            assert err["error"]["code"] == code, err
    first = trader.bet_body(cells[2], "1")
    sock.send(tap(first, "d-1"))
    assert sock.answer("d-1")["type"] == "bet:accepted"
    sock.send(tap(trader.bet_body(cells[2], "2"), "d-2"))  # one bet per cell
    dup = sock.answer("d-2")
    assert (dup["status"], dup["error"]["code"]) == (409, "duplicate_cell")
    sock.send(tap(trader.bet_body(cells[3], "1", nonce=first["nonce"]), "d-3"))  # nonce reused
    assert sock.answer("d-3")["status"] == 409


def test_a_socket_without_a_session_answers_401_and_malformed_messages_end_in_1008(server, trader):
    s = Socket(server.url.replace("http", "ws") + "/ws")
    try:
        s.send(tap(trader.bet_body(placeable_cells(trader, 1)[0], "1"), "n-1"))
        err = s.answer("n-1")
        assert (err["type"], err["status"], err["error"]["code"]) == ("bet:error", 401, "invalid_session")
        for raw in (
            "not json",
            json.dumps({"type": "dance"}),
            json.dumps({"type": "bet", "req": "bad req!"}),
        ):
            s.send(raw)
        errors = [s.next(lambda m: m["type"] == "error") for _ in range(2)]
        assert [e["error"]["code"] for e in errors] == ["invalid_json", "unknown_type"]
        assert s.close_code() == 1008
    finally:
        s.close()


def test_an_oversized_message_is_an_error_not_a_dropped_socket(server):
    s = Socket(server.url.replace("http", "ws") + "/ws")
    try:
        s.send(json.dumps({"type": "auth", "token": "x" * 5000}))
        assert s.next(lambda m: m["type"] == "error")["error"]["code"] == "message_too_large"
        s.send(json.dumps({"type": "auth", "token": "x" * 43}))  # then a bad token: 4401
        assert s.close_code() == 4401
    finally:
        s.close()


def test_logout_closes_the_trader_s_sockets_with_4401(server, trader, sock):
    status, _, _ = trader.call("POST", "/api/v1/auth/logout")
    assert status == 200
    t0 = time.monotonic()
    assert sock.close_code(timeout=5) == 4401
    assert time.monotonic() - t0 < 2.0  # SPEC §8: within 1 s (a wide margin for a busy machine)


def test_an_expiring_session_closes_its_socket(server, trader):
    """The socket knows its session's expiry and closes itself with 4401 when it comes."""
    import redis

    from app.auth.sessions import decode_session, encode_session, session_key_for

    r = redis.Redis.from_url(server.env["TAP_REDIS_URL"])
    key = session_key_for(trader.token)
    now_ms = int(time.time() * 1000)
    session = decode_session(r.get(key), key, now_ms)
    # the session ends in 4 s: time for a loaded machine to connect and authenticate (through nginx too)
    ends = now_ms + 4000
    r.set(key, encode_session(session.address, session.session_key, session.user_id, ends), px=4000)
    s = Socket(server.url.replace("http", "ws") + "/ws")
    try:
        s.send({"type": "auth", "token": trader.token})
        s.next(lambda m: m["type"] == "auth:ok")
        assert s.close_code(timeout=10) == 4401
    finally:
        s.close()


def test_concurrent_taps_over_many_sockets_never_overspend(server):
    """Double spend over the socket: 40 taps of 10 on 40 cells, balance 100 → exactly 10 confirmed."""
    t = Trader(HttpClient(server.url), Settings()).login()
    t.deposit("100")
    cells = placeable_cells(t, 40)
    socks = [Socket(server.url.replace("http", "ws") + "/ws") for _ in range(8)]
    try:
        for s in socks:
            s.send({"type": "auth", "token": t.token})
        for s in socks:
            s.next(lambda m: m["type"] == "auth:ok")
        for i, cell in enumerate(cells):
            socks[i % 8].send(tap(t.bet_body(cell, "10"), f"x-{i}"))
        answers = [socks[i % 8].answer(f"x-{i}") for i in range(len(cells))]
        accepted = {a["bet_id"] for a in answers if a["type"] == "bet:accepted"}
        assert len(accepted) == len(cells), answers
        wait_until(
            lambda: all(t.call("GET", f"/api/v1/bets/{b}")[1]["status"] != "pending" for b in accepted),
            timeout=15,
            what="every tap committed or rejected",
        )
        statuses = [t.call("GET", f"/api/v1/bets/{b}")[1]["status"] for b in accepted]
        assert statuses.count("confirmed") == 10 and statuses.count("rejected") == 30
        _, me, _ = t.call("GET", "/api/v1/me")
        assert me["balance"] == "0"
    finally:
        for s in socks:
            s.close()


def _all_cells(trader, n: int) -> list[str]:
    """Up to `n` distinct quoted cells well inside the placeable window (columns 4.., rows ±6)."""
    _, grid, _ = trader.call("GET", "/api/v1/grid")
    out = []
    mid = len(grid["rows"]) // 2
    for ci, c in enumerate(grid["columns"]):
        if ci < 4:
            continue
        for ri, r in enumerate(grid["rows"]):
            if abs(ri - mid) <= 6 and grid["quotes"][ci][ri] is not None:  # away from the ±10 edge
                out.append(f"{c}:{r}")
    return out[:n]


def _connect(server, token: str, n: int) -> list[Socket]:
    socks = [Socket(server.url.replace("http", "ws") + "/ws") for _ in range(n)]
    for s in socks:
        s.send({"type": "auth", "token": token})
    for s in socks:
        s.next(lambda m: m["type"] == "auth:ok")
    return socks


def test_double_spend_with_200_concurrent_taps_over_200_sockets(server):
    """200 taps of 10 at once on 200 sockets of one trader with 100: each distinct signed body is one
    bet (a body sent on two sockets is the same bet), exactly 10 confirmed, the balance ends at 0."""
    t = Trader(HttpClient(server.url), Settings()).login()
    t.deposit("100")
    cells = _all_cells(t, 100)
    assert len(cells) >= 40, cells
    bodies = [t.bet_body(c, "10") for c in cells]
    socks = _connect(server, t.token, 200)
    try:
        sent = [bodies[i % len(bodies)] for i in range(200)]  # the first bodies twice, on other sockets
        for i, s in enumerate(socks):
            s.send(tap(sent[i], f"s-{i}"))
        answers = [s.answer(f"s-{i}") for i, s in enumerate(socks)]
        assert all(a["type"] == "bet:accepted" for a in answers), [a for a in answers if "error" in a][:3]
        by_body: dict[str, set[str]] = {}
        for body, a in zip(sent, answers, strict=True):
            by_body.setdefault(body["nonce"], set()).add(a["bet_id"])
        assert all(len(ids) == 1 for ids in by_body.values()), "a retried body became two bets"
        bets = {next(iter(ids)) for ids in by_body.values()}
        assert len(bets) == len(bodies)
        wait_until(
            lambda: all(t.call("GET", f"/api/v1/bets/{b}")[1]["status"] != "pending" for b in bets),
            timeout=30,
            what="every tap committed or rejected",
        )
        statuses = [t.call("GET", f"/api/v1/bets/{b}")[1]["status"] for b in bets]
        assert statuses.count("confirmed") == 10
        assert statuses.count("rejected") == len(bets) - 10
        _, me, _ = t.call("GET", "/api/v1/me")
        assert me["balance"] == "0"
    finally:
        for s in socks:
            s.close()


def _events_until_resumed(s: Socket) -> tuple[list[dict], dict]:
    events = []
    while True:
        m = s.next(lambda m: m["type"] in ("resumed", "balance") or m["type"].startswith("bet:"))
        if m["type"] == "resumed":
            return events, m
        events.append(m)


def _key(event_id: str) -> tuple[int, int]:
    ms, seq = event_id.split("-")
    return int(ms), int(seq)


def test_a_reconnected_socket_resumes_and_gets_every_missed_event_once(server, trader):
    first = Socket(server.url.replace("http", "ws") + "/ws")
    first.send({"type": "auth", "token": trader.token})
    first.next(lambda m: m["type"] == "auth:ok")
    cells = placeable_cells(trader, 3)
    first.send(tap(trader.bet_body(cells[0], "1"), "r-1"))
    bet1 = first.answer("r-1")["bet_id"]
    confirmed = first.next(lambda m: m["type"] == "bet:confirmed" and m["bet_id"] == bet1)
    balance = first.next(lambda m: m["type"] == "balance")
    assert _key(confirmed["id"]) < _key(balance["id"])  # every trader event carries its id
    last_seen = balance["id"]
    first.close()

    # while no socket is open: two bets over HTTP and a deposit (3 balance events, 2 confirmations)
    missed_bets = []
    for cell in cells[1:]:
        status, body, _ = trader.call("POST", "/api/v1/bets", trader.bet_body(cell, "1"))
        assert status == 202, body
        missed_bets.append(body["bet_id"])
    wait_until(
        lambda: all(trader.call("GET", f"/api/v1/bets/{b}")[1]["status"] == "confirmed" for b in missed_bets),
        timeout=15,
        what="the missed bets confirmed",
    )
    trader.deposit("5")

    second = Socket(server.url.replace("http", "ws") + "/ws")
    try:
        second.send({"type": "auth", "token": trader.token})
        second.next(lambda m: m["type"] == "auth:ok")
        second.send({"type": "resume", "after": last_seen})
        events, done = _events_until_resumed(second)
        assert done["complete"] is True
        ids = [_key(e["id"]) for e in events]
        assert ids == sorted(set(ids)) and all(i > _key(last_seen) for i in ids)  # in order, once each
        assert sorted(e["bet_id"] for e in events if e["type"] == "bet:confirmed") == sorted(missed_bets)
        assert [e["balance"] for e in events if e["type"] == "balance"][-1] == trader.call(
            "GET", "/api/v1/me"
        )[1]["balance"]
        assert sum(e["type"] == "balance" for e in events) == 3
        assert done["last"] == events[-1]["id"]

        # resuming again from the same point replays nothing this socket already has
        second.send({"type": "resume", "after": last_seen})
        again, done2 = _events_until_resumed(second)
        assert again == [] and done2["last"] == done["last"]
        # and live events still arrive, once
        trader.deposit("1")
        live = second.next(lambda m: m["type"] == "balance")
        assert _key(live["id"]) > _key(done["last"])
        second.send({"type": "resume", "after": done["last"]})
        third, _ = _events_until_resumed(second)
        assert third == []
    finally:
        second.close()


def test_resume_refuses_a_bad_id_and_needs_a_session(server, trader):
    s = Socket(server.url.replace("http", "ws") + "/ws")
    try:
        s.send({"type": "resume", "after": "1-0"})
        assert s.next(lambda m: m["type"] == "error")["error"]["code"] == "invalid_session"
        s.send({"type": "resume", "after": "yesterday"})
        assert s.next(lambda m: m["type"] == "error")["error"]["code"] == "invalid_resume"
    finally:
        s.close()


def test_the_server_answers_a_client_ping_and_echoes_a_close(sock):
    sock.ws.ping(b"are you there")
    deadline = time.monotonic() + 10
    while True:
        assert time.monotonic() < deadline, "no pong"
        opcode, data = sock.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_PONG:
            assert data == b"are you there"
            break
    sock.ws.send_close(1000, b"bye")
    while True:
        opcode, data = sock.ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            assert int.from_bytes(data[:2], "big") == 1000
            break


def test_a_fragmented_message_with_a_ping_inside_is_read_whole_and_the_ping_answered(server):
    s = Socket(server.url.replace("http", "ws") + "/ws")
    try:
        s.ws.sock.sendall(
            client_frame(0x1, b'{"type":', fin=False)
            + client_frame(0x9, b"inside")
            + client_frame(0x0, b' "nonsense"', fin=False)
            + client_frame(0x0, b"}")
        )
        pong = error = None
        deadline = time.monotonic() + 10
        while pong is None or error is None:
            assert time.monotonic() < deadline, (pong, error)
            opcode, data = s.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_PONG:
                pong = data
            elif opcode == websocket.ABNF.OPCODE_TEXT and json.loads(data)["type"] == "error":
                error = json.loads(data)
        assert pong == b"inside"
        assert error["error"]["code"] == "unknown_type"  # the three fragments were one message
    finally:
        s.close()


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (client_frame(0x1, b"{}", masked=False), 1002),
        (client_frame(0x1, b"{}", rsv=4), 1002),
        (client_frame(0x0, b"{}"), 1002),
        (client_frame(0x1, b'{"type": "\xff"}'), 1007),
        (client_frame(0x2, b"x" * (16 * 4096 + 1)), 1009),
    ],
    ids=["unmasked", "rsv1", "lone-continuation", "bad-utf8", "too-big"],
)
def test_a_protocol_violation_closes_the_socket_with_its_code(server, wire, code):
    s = Socket(server.url.replace("http", "ws") + "/ws")
    try:
        s.ws.sock.sendall(wire)
        assert s.close_code() == code
    finally:
        s.close()


def test_permessage_deflate_is_declined(server):
    ws = websocket.create_connection(
        server.url.replace("http", "ws") + "/ws",
        timeout=10,
        header=["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
    )
    try:
        assert "sec-websocket-extensions" not in {k.lower() for k in ws.getheaders()}
        ws.send(json.dumps({"type": "resume", "after": "1-0"}))  # sent uncompressed, read as such
        while True:
            msg = json.loads(ws.recv())
            if msg["type"] == "error":
                assert msg["error"]["code"] == "invalid_session"
                break
    finally:
        ws.close()


@pytest.fixture(scope="module")
def fast_ping_server(tmp_path_factory, redis_server):
    tmp = tmp_path_factory.mktemp("pings")
    g = Gunicorn(server_env(tmp, redis_server, TAP_WS_PING_S="1"), tmp / "gunicorn.log")
    g.start()
    yield g
    assert g.stop() == 0
    assert "Traceback" not in g.log(), g.log()


def _idle_closed(url: str) -> float:
    from tests.support.servers import http_get

    _, body = http_get(url + "/metrics")
    for line in body.decode().splitlines():
        if line.startswith("tap_ws_idle_closed_total "):
            return float(line.split()[1])
    return 0.0


def test_a_socket_that_never_answers_pings_is_closed_after_two_intervals_and_counted(fast_ping_server):
    url = fast_ping_server.url
    before = _idle_closed(url)
    silent = websocket.create_connection(url.replace("http", "ws") + "/ws", timeout=10)
    alive = Socket(url.replace("http", "ws") + "/ws")  # reads, so websocket-client answers each ping
    try:
        t0 = time.monotonic()
        # answering its pings (a pause of ~2 s in this process would miss two); silent: pings at 1,
        # 2, 3 s → closed by ~3 s
        _read_for(alive, 4.0)
        frames = []
        while True:  # what the silent socket was sent meanwhile: pings, then a close
            silent.settimeout(5)
            opcode, data = _raw_frame(silent)
            frames.append(opcode)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                assert int.from_bytes(data[:2], "big") == 1008
                break
            assert time.monotonic() - t0 < 10
        assert frames.count(websocket.ABNF.OPCODE_PING) >= 2
        assert _idle_closed(url) == before + 1
        # the socket that answers is still open and still served
        _read_for(alive, 2.5)
        assert alive.ws.connected
    finally:
        silent.close()
        alive.close()


def _read_for(s: Socket, seconds: float) -> None:
    """Read (and so answer pings) for `seconds`; the socket must stay open."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        s.ws.settimeout(left)
        try:
            opcode, _ = s.ws.recv_data(control_frame=True)
        except websocket.WebSocketTimeoutException:
            return
        assert opcode != websocket.ABNF.OPCODE_CLOSE, "the answering socket was closed"


def _raw_frame(ws) -> tuple[int, bytes]:
    """The next frame as sent, without websocket-client answering pings (it would if asked to recv)."""
    frame = ws.recv_frame()
    return frame.opcode, frame.data
