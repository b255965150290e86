"""Websocket ``?token=``: the owner's address for a valid session, close 4401 for a bad token; and
the outside-client script (loadtest/auth_flow.py) run end to end against gunicorn."""

from __future__ import annotations

import json

import pytest
import websocket

from app.auth.decorators import (
    WS_CLOSE_INVALID_SESSION,
    WebsocketRefused,
    websocket_address,
)
from loadtest import auth_flow
from tests.support.auth import login, new_account
from tests.support.servers import Gunicorn


def test_websocket_address_resolution(running_app):
    c = running_app.test_client()
    acct = new_account()
    token = login(c, running_app.extensions["tap"].settings, acct)["token"]
    with running_app.test_request_context("/ws"):
        assert websocket_address() is None
    with running_app.test_request_context(f"/ws?token={token}"):
        assert websocket_address() == acct.address.lower()
    for bad in ("x" * 43, "short", token + "x", "%00" * 10):
        with running_app.test_request_context(f"/ws?token={bad}"), pytest.raises(WebsocketRefused) as err:
            websocket_address()
        assert (err.value.close_code, err.value.reason) == (WS_CLOSE_INVALID_SESSION, "invalid_session")


@pytest.fixture
def gunicorn(tmp_path, redis_url):
    env = {
        "TAP_DATA_DIR": str(tmp_path / "data"),
        "TAP_REDIS_URL": redis_url,
        "TAP_SIWE_DOMAIN": "localhost:8443",
        "TAP_DEV_MODE": "1",  # mock deposits fund the script's bet
        "TAP_QUOTE_MAX_AGE_S": "30",  # a busy test machine may stall the simulated feed a little
    }
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    server.start()
    yield server
    assert server.stop() == 0
    assert "Traceback" not in server.log(), server.log()


def _close_frame(ws) -> tuple[int, str]:
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(data[:2], "big"), data[2:].decode()


@pytest.mark.e2e
def test_outside_client_flow_and_websocket_against_gunicorn(gunicorn):
    lines: list[str] = []
    out = auth_flow.run_flow(gunicorn.url, "localhost:8443", 1, log=lines.append)
    assert out["login"]["address"] == out["wallet"]
    assert out["bet"][0] == 202, lines
    # the same signed request again is the same bet, not a second one
    assert out["bet_retry"][0] == 202 and out["bet_retry"][1]["bet_id"] == out["bet"][1]["bet_id"]
    assert out["forged"][0] == 401 and out["forged"][1]["error"]["code"] == "wrong_signer"

    # a fresh login for the websocket checks
    http = auth_flow.Http(gunicorn.url)
    wallet, key = new_account(), new_account()
    _, body = http.call("GET", "/api/v1/auth/nonce")
    msg = auth_flow.siwe_message(
        "localhost:8443", wallet.address, "https://localhost:8443", 1, body["nonce"], key.address
    )
    status, body = http.call(
        "POST", "/api/v1/auth/login", {"message": msg, "signature": auth_flow.personal_sign(wallet, msg)}
    )
    assert status == 200, body
    ws_url = gunicorn.url.replace("http", "ws") + "/ws"

    ws = websocket.create_connection(f"{ws_url}?token={body['token']}", timeout=10)
    try:
        assert json.loads(ws.recv())["type"] == "status"
    finally:
        ws.close()

    ws = websocket.create_connection(f"{ws_url}?token={'x' * 43}", timeout=10)
    try:
        assert _close_frame(ws) == (4401, "invalid_session")
    finally:
        ws.close()

    # the logged-out token of the script is refused the same way
    ws = websocket.create_connection(f"{ws_url}?token={out['token']}", timeout=10)
    try:
        assert _close_frame(ws) == (4401, "invalid_session")
    finally:
        ws.close()
