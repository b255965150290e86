"""Fail closed: with Redis unreachable, login and every authenticated route answer 503 (never 200,
never 500), and service resumes by itself once Redis is back. Uses a private redis-server that the
test stops and starts again on the same port."""

from __future__ import annotations

import gevent
import pytest
import redis

from app.auth.decorators import WS_CLOSE_TRY_AGAIN_LATER, WebsocketRefused, websocket_address
from app.auth.signatures import claim_nonce
from app.config import Settings
from app.services import services
from tests.support.auth import (
    bearer,
    error_code,
    get_nonce,
    login,
    new_account,
    sign,
    siwe_text,
    started_app,
)
from tests.support.servers import RedisServer
from tests.support.waiting import wait_until


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis-own")
    server.workdir.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app(own_redis, tmp_path):
    admin = new_account()
    settings = Settings.from_env(
        {},
        data_dir=tmp_path / "data",
        redis_url=own_redis.url,
        admin_addresses=frozenset({admin.address.lower()}),
        redis_timeout_s=1,
        rate_per_address=0,  # the hammering below would trip it; limits are tested elsewhere
    )
    with started_app(settings) as app:
        app.extensions["test.admin"] = admin
        yield app


def authed_calls(c, token):
    return {
        "nonce": lambda: c.get("/api/v1/auth/nonce"),
        "session": lambda: c.get("/api/v1/auth/session", headers=bearer(token)),
        "admin": lambda: c.get("/api/v1/admin/whoami", headers=bearer(token)),
        "logout": lambda: c.post("/api/v1/auth/logout", headers=bearer(token)),
    }


def test_redis_down_means_503_and_service_resumes(app, own_redis):
    c = app.test_client()
    settings = services(app).settings
    admin = app.extensions["test.admin"]
    token = login(c, settings, admin)["token"]
    assert c.get("/api/v1/admin/whoami", headers=bearer(token)).status_code == 200

    # a login prepared while Redis was up, submitted while it is down
    acct = new_account()
    text = siwe_text(settings, acct.address, get_nonce(c))
    sig = sign(acct, text)

    own_redis.stop()

    resp = c.post("/api/v1/auth/login", json={"message": text, "signature": sig})
    assert resp.status_code == 503, resp.get_json()
    assert error_code(resp) == "dependency_unavailable"
    assert int(resp.headers["Retry-After"]) >= 1
    for name, call in authed_calls(c, token).items():
        resp = call()
        assert resp.status_code == 503, (name, resp.get_json())
        assert error_code(resp) == "dependency_unavailable"
        assert "Retry-After" in resp.headers

    # the signed-request validator propagates the outage (the app turns it into 503), never passes
    with pytest.raises(redis.RedisError):
        claim_nonce(services(app).redis, acct.address.lower(), "nonce1234", "fp")
    # a websocket with a token is closed with "try again later", not downgraded to public
    with app.test_request_context(f"/ws?token={token}"), pytest.raises(WebsocketRefused) as err:
        websocket_address()
    assert err.value.close_code == WS_CLOSE_TRY_AGAIN_LATER

    own_redis.start()  # same port, empty (no persistence): every session is gone

    statuses = []

    def nonce_served():
        statuses.append(c.get("/api/v1/auth/nonce").status_code)
        return statuses[-1] == 200

    wait_until(nonce_served, timeout=15, interval=0.1, what="service to resume after Redis is back")
    assert set(statuses) <= {200, 503}

    # the old session died with Redis' memory: refused, never let through
    resp = c.get("/api/v1/admin/whoami", headers=bearer(token))
    assert (resp.status_code, error_code(resp)) == (401, "invalid_session")
    token = login(c, settings, admin)["token"]
    assert c.get("/api/v1/admin/whoami", headers=bearer(token)).status_code == 200


def test_redis_stopped_mid_run_never_200_while_down_never_500(app, own_redis):
    """Greenlets keep calling authenticated routes while Redis goes away and comes back."""
    c = app.test_client()
    settings = services(app).settings
    token = login(c, settings, app.extensions["test.admin"])["token"]
    state = {"down": False}
    seen: list[tuple[bool, int]] = []
    stop = False

    def hammer(path):
        while not stop:
            down = state["down"]
            resp = c.get(path, headers=bearer(token))
            # a request that began while Redis was down must not be answered 200
            seen.append((down and state["down"], resp.status_code))
            gevent.sleep(0.005)

    workers = [gevent.spawn(hammer, p) for p in ("/api/v1/auth/session", "/api/v1/admin/whoami")]
    # each phase lasts until the hammer has seen it, however slow the machine: served while up …
    wait_until(lambda: sum(code == 200 for _, code in seen) >= 4, what="answers while Redis is up")
    own_redis.stop()
    state["down"] = True
    # … refused while down (a few answers to requests that began and ended with Redis away) …
    wait_until(lambda: sum(was_down for was_down, _ in seen) >= 4, what="answers while Redis is down")
    state["down"] = False
    own_redis.start()
    # … and answered again once it is back (401: the session died with Redis' memory)
    restarted_at = len(seen)
    wait_until(lambda: any(code == 401 for _, code in seen[restarted_at:]), what="answers after the restart")
    stop = True
    gevent.joinall(workers, timeout=10)

    codes = [code for _, code in seen]
    assert 500 not in codes
    assert set(codes) <= {200, 401, 503}, set(codes)
    assert 200 in codes and 503 in codes
    assert all(code != 200 for was_down, code in seen if was_down)
    # after the restart the old session is gone (401); a fresh login works
    token = login(c, settings, app.extensions["test.admin"])["token"]
    assert c.get("/api/v1/auth/session", headers=bearer(token)).status_code == 200
