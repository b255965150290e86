"""Rate limits in Redis per IP and per wallet: 429 rate_limited with Retry-After; client IP rules."""

from __future__ import annotations

import pytest

from app.config import Settings
from app.services import set_clock
from tests.support.auth import (
    FakeClock,
    bearer,
    clear_auth_keys,
    error_code,
    new_account,
    sign,
    siwe_text,
    started_app,
)

AUTH_PER_MIN = 6
PER_IP_S = 5
PER_ADDRESS_S = 3


@pytest.fixture(scope="module")
def mod_app(tmp_path_factory, redis_server):
    if not redis_server.running:
        redis_server.start()
    settings = Settings.from_env(
        {},
        data_dir=tmp_path_factory.mktemp("auth-rl") / "data",
        redis_url=redis_server.url,
        rate_auth_per_ip=AUTH_PER_MIN,
        rate_per_ip=PER_IP_S,
        rate_per_address=PER_ADDRESS_S,
    )
    with started_app(settings) as app:
        yield app


@pytest.fixture
def app(mod_app, redis_server):
    if not redis_server.running:
        redis_server.start()
    clear_auth_keys(mod_app)
    return mod_app


@pytest.fixture
def clock(app):
    # Far from any window edge, so a test's requests all fall in one fixed window.
    fake = FakeClock((int(FakeClock().t) // 60) * 60 + 10.0)
    set_clock(app, fake)
    yield fake
    set_clock(app)


def from_ip(ip: str, real_ip: str | None = None) -> dict:
    kw: dict = {"environ_base": {"REMOTE_ADDR": ip}}
    if real_ip:
        kw["headers"] = {"X-Real-IP": real_ip}
    return kw


def login_from(c, app, clock, ip: str, account=None, session_key=None) -> str:
    account = account or new_account()
    nonce = c.get("/api/v1/auth/nonce", **from_ip(ip)).get_json()["nonce"]
    text = siwe_text(app.extensions["tap"].settings, account.address, nonce, now_ms=clock.ms)
    resp = c.post(
        "/api/v1/auth/login", json={"message": text, "signature": sign(account, text)}, **from_ip(ip)
    )
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["token"]


def assert_429(resp, max_retry: int) -> None:
    assert resp.status_code == 429, resp.get_json()
    assert error_code(resp) == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= max_retry


def test_nonce_and_login_share_a_per_ip_minute_budget(app, clock):
    c = app.test_client()
    for _ in range(AUTH_PER_MIN):
        assert c.get("/api/v1/auth/nonce", **from_ip("203.0.113.1")).status_code == 200
    assert_429(c.get("/api/v1/auth/nonce", **from_ip("203.0.113.1")), 60)
    assert_429(c.post("/api/v1/auth/login", json={}, **from_ip("203.0.113.1")), 60)
    # another client is not affected
    assert c.get("/api/v1/auth/nonce", **from_ip("203.0.113.2")).status_code == 200
    # the next minute starts afresh
    clock.advance(60)
    assert c.get("/api/v1/auth/nonce", **from_ip("203.0.113.1")).status_code == 200


def test_x_real_ip_is_trusted_only_from_loopback(app, clock):
    c = app.test_client()
    # behind nginx (peer 127.0.0.1) each X-Real-IP is its own client
    for _ in range(AUTH_PER_MIN):
        assert c.get("/api/v1/auth/nonce", **from_ip("127.0.0.1", "198.51.100.7")).status_code == 200
    assert_429(c.get("/api/v1/auth/nonce", **from_ip("127.0.0.1", "198.51.100.7")), 60)
    assert c.get("/api/v1/auth/nonce", **from_ip("127.0.0.1", "198.51.100.8")).status_code == 200
    # a direct client cannot pick its bucket with the header
    for i in range(AUTH_PER_MIN):
        assert c.get("/api/v1/auth/nonce", **from_ip("203.0.113.50", f"10.0.0.{i}")).status_code == 200
    assert_429(c.get("/api/v1/auth/nonce", **from_ip("203.0.113.50", "10.0.0.99")), 60)
    # a garbled header from nginx falls back to the peer
    assert c.get("/api/v1/auth/nonce", **from_ip("127.0.0.1", "not-an-ip")).status_code == 200


def test_per_address_limit(app, clock):
    c = app.test_client()
    acct = new_account()
    # two sessions of one wallet, from two IPs: they share the wallet's budget
    t1 = login_from(c, app, clock, "203.0.113.10", acct)
    t2 = login_from(c, app, clock, "203.0.113.11", acct)
    other = login_from(c, app, clock, "203.0.113.12")
    for i in range(PER_ADDRESS_S):
        token, ip = (t1, "203.0.113.10") if i % 2 else (t2, "203.0.113.11")
        assert c.get("/api/v1/auth/session", headers=bearer(token), **from_ip(ip)).status_code == 200
    assert_429(c.get("/api/v1/auth/session", headers=bearer(t1), **from_ip("203.0.113.10")), 1)
    assert c.get("/api/v1/auth/session", headers=bearer(other), **from_ip("203.0.113.12")).status_code == 200
    clock.advance(1)
    assert c.get("/api/v1/auth/session", headers=bearer(t1), **from_ip("203.0.113.10")).status_code == 200


def test_per_ip_limit_on_authenticated_routes_counts_bad_tokens_too(app, clock):
    c = app.test_client()
    ip = "203.0.113.20"
    for _ in range(PER_IP_S):
        resp = c.get("/api/v1/auth/session", headers=bearer("x" * 43), **from_ip(ip))
        assert (resp.status_code, error_code(resp)) == (401, "invalid_session")
    assert_429(c.get("/api/v1/auth/session", headers=bearer("x" * 43), **from_ip(ip)), 1)
    clock.advance(1)
    resp = c.get("/api/v1/auth/session", headers=bearer("x" * 43), **from_ip(ip))
    assert resp.status_code == 401
