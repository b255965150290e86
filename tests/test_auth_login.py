"""SIWE login, sessions, logout, admin and the Authorization header, through the Flask routes."""

from __future__ import annotations

import re
import time

import gevent
import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from app.config import Settings
from app.keys import SESSION_KEY_PREFIX
from app.services import services, set_clock
from tests.support.auth import (
    FakeClock,
    bearer,
    clear_auth_keys,
    error_code,
    flip_to_high_s,
    get_nonce,
    login,
    new_account,
    sign,
    siwe_text,
    started_app,
    with_v,
)
from tests.support.client import iso

ADMIN = Account.from_key(b"\x07" * 32)


@pytest.fixture(scope="module")
def mod_app(tmp_path_factory, redis_server):
    """One running app for the module (workers start and stop once: ~1 s each time)."""
    if not redis_server.running:
        redis_server.start()
    settings = Settings.from_env(
        {},
        data_dir=tmp_path_factory.mktemp("auth-login") / "data",
        redis_url=redis_server.url,
        dev_mode=True,
        admin_addresses=frozenset({ADMIN.address.lower()}),
        rate_auth_per_ip=0,  # rate limits have their own module (test_auth_ratelimit.py)
    )
    with started_app(settings) as app:
        yield app


@pytest.fixture
def running_app(mod_app, redis_server):
    """The module's app, with the auth keys of earlier tests removed and the real clock back."""
    if not redis_server.running:
        redis_server.start()
    clear_auth_keys(mod_app)
    set_clock(mod_app)
    return mod_app


@pytest.fixture
def settings(running_app):
    return services(running_app).settings


@pytest.fixture
def clock(running_app):
    fake = FakeClock()
    set_clock(running_app, fake)
    return fake


@pytest.fixture
def c(running_app):
    return running_app.test_client()


def post_login(c, text, sig):
    return c.post("/api/v1/auth/login", json={"message": text, "signature": sig})


def user_rows(app, address):
    with services(app).reads.connection() as conn:
        return conn.execute("SELECT id, balance FROM users WHERE address = ?", (address.lower(),)).fetchall()


# ---- nonce --------------------------------------------------------------------------------------


def test_nonce_is_long_alphanumeric_single_use_with_5_min_ttl(c, running_app):
    a, b = get_nonce(c), get_nonce(c)
    assert re.fullmatch(r"[A-Za-z0-9]{16,}", a)
    assert a != b
    ttl = services(running_app).redis.ttl(f"tap:auth:nonce:{a}")
    assert 295 <= ttl <= 300


# ---- login --------------------------------------------------------------------------------------


def test_login_creates_user_and_session(c, running_app, settings):
    acct = new_account()
    before = int(time.time() * 1000)
    body = login(c, settings, acct)
    assert body["address"] == acct.address == to_checksum_address(acct.address)
    assert body["session_key"] is None
    assert before + 86_400_000 - 5000 <= body["expires_at"] <= int(time.time() * 1000) + 86_400_000
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", body["token"])
    rows = user_rows(running_app, acct.address)
    assert len(rows) == 1 and rows[0][1] == 0

    # a second login reuses the user row
    login(c, settings, acct)
    assert user_rows(running_app, acct.address) == rows

    resp = c.get("/api/v1/auth/session", headers=bearer(body["token"]))
    assert resp.status_code == 200
    assert resp.get_json() == {"address": acct.address, "session_key": None, "expires_at": body["expires_at"]}


def test_session_is_stored_under_a_hash_of_the_token_for_24_h(c, running_app, settings):
    body = login(c, settings, new_account())
    r = services(running_app).redis
    keys = [k.decode() for k in r.scan_iter(f"{SESSION_KEY_PREFIX}*")]
    assert len(keys) == 1
    assert body["token"] not in keys[0]
    assert all(
        body["token"].encode() not in (r.get(k) or b"") for k in r.scan_iter("*") if r.type(k) == b"string"
    )
    assert 86_390 <= r.ttl(keys[0]) <= 86_400


def test_login_binds_a_session_key(c, settings):
    acct, key = new_account(), new_account()
    body = login(c, settings, acct, session_key=key.address)
    assert body["session_key"] == key.address
    info = c.get("/api/v1/auth/session", headers=bearer(body["token"])).get_json()
    assert info["session_key"] == key.address


def test_expiration_time_caps_the_session(c, settings):
    now = int(time.time() * 1000)
    body = login(c, settings, new_account(), expiration=iso(now + 600_000))
    assert body["expires_at"] == now + 600_000


def test_statementless_message_with_every_optional_field(c, settings):
    now = int(time.time() * 1000)
    body = login(
        c,
        settings,
        new_account(),
        statement=None,
        expiration=iso(now + 3_600_000),
        not_before=iso(now - 1000),
        request_id="abc-123",
        resources=["https://example.com/terms"],
        scheme="https",
    )
    assert body["token"]


@pytest.mark.parametrize("v_form", ["27/28", "0/1"])
def test_login_accepts_both_v_forms(c, settings, v_form):
    acct = new_account()
    text = siwe_text(settings, acct.address, get_nonce(c))
    sig = sign(acct, text)
    if v_form == "0/1":
        sig = with_v(sig, int(sig[-2:], 16) - 27)
    assert post_login(c, text, sig).status_code == 200


def test_login_refuses_high_s(c, settings):
    acct = new_account()
    text = siwe_text(settings, acct.address, get_nonce(c))
    resp = post_login(c, text, flip_to_high_s(sign(acct, text)))
    assert resp.status_code == 401
    assert error_code(resp) == "signature_high_s"


def test_login_nonce_reused(c, settings):
    acct = new_account()
    nonce = get_nonce(c)
    text = siwe_text(settings, acct.address, nonce)
    sig = sign(acct, text)
    assert post_login(c, text, sig).status_code == 200
    # the very same message again (a replay)…
    resp = post_login(c, text, sig)
    assert (resp.status_code, error_code(resp)) == (401, "login_nonce_invalid")
    # …or a new message with the same nonce
    text2 = siwe_text(settings, acct.address, nonce, statement="Again.")
    resp = post_login(c, text2, sign(acct, text2))
    assert (resp.status_code, error_code(resp)) == (401, "login_nonce_invalid")


def test_login_nonce_expired(c, running_app, settings):
    acct = new_account()
    nonce = get_nonce(c)
    r = services(running_app).redis
    r.pexpire(f"tap:auth:nonce:{nonce}", 1)  # let Redis expire it, as it would after 5 minutes
    deadline = time.monotonic() + 5
    while r.exists(f"tap:auth:nonce:{nonce}") and time.monotonic() < deadline:
        gevent.sleep(0.01)
    text = siwe_text(settings, acct.address, nonce)
    resp = post_login(c, text, sign(acct, text))
    assert (resp.status_code, error_code(resp)) == (401, "login_nonce_invalid")


def test_login_nonce_never_issued(c, settings):
    acct = new_account()
    text = siwe_text(settings, acct.address, "NeverIssued12345678")
    resp = post_login(c, text, sign(acct, text))
    assert (resp.status_code, error_code(resp)) == (401, "login_nonce_invalid")


def test_refused_signature_does_not_burn_the_nonce(c, settings):
    acct, other = new_account(), new_account()
    nonce = get_nonce(c)
    text = siwe_text(settings, acct.address, nonce)
    assert error_code(post_login(c, text, sign(other, text))) == "signature_mismatch"
    assert post_login(c, text, sign(acct, text)).status_code == 200


def _shift_ms_digit(text: str, tag: str) -> str:
    """Change the last millisecond digit of a date-time field (it stays valid and acceptable)."""
    m = re.search(rf"{tag}: (.*)", text)
    old = m.group(1)
    new = old[:-2] + ("1" if old[-2] != "1" else "2") + "Z"
    return text.replace(f"{tag}: {old}", f"{tag}: {new}")


def _tamper(field: str, text: str, c, settings) -> str:
    if field == "address":
        return text.replace(text.split("\n")[1], new_account().address)
    if field == "statement":
        return text.replace("Sign in to Tap Trading.", "Sign in to Tap Trading!")
    if field == "uri":
        return text.replace(f"URI: https://{settings.siwe_domain}", f"URI: https://{settings.siwe_domain}/x")
    if field == "nonce":
        return re.sub(r"Nonce: \w+", f"Nonce: {get_nonce(c)}", text)
    if field == "issued-at":
        return _shift_ms_digit(text, "Issued At")
    if field == "expiration-time":
        return _shift_ms_digit(text, "Expiration Time")
    if field == "not-before":
        return _shift_ms_digit(text, "Not Before")
    if field == "request-id":
        return text.replace("Request ID: req1", "Request ID: req2")
    if field == "session-key":
        return re.sub(r"session-key:0x\w+", f"session-key:{new_account().address}", text)
    if field == "resources":
        return text.replace("- https://example.com/terms", "- https://example.com/other")
    if field == "domain":
        return text.replace(f"{settings.siwe_domain} wants", "evil.example wants")
    if field == "chain-id":
        return text.replace("Chain ID: 1", "Chain ID: 5")
    if field == "version":
        return text.replace("Version: 1", "Version: 2")
    raise AssertionError(field)


@pytest.mark.parametrize(
    ("field", "code"),
    [
        ("address", "signature_mismatch"),
        ("statement", "signature_mismatch"),
        ("uri", "signature_mismatch"),
        ("nonce", "signature_mismatch"),
        ("issued-at", "signature_mismatch"),
        ("expiration-time", "signature_mismatch"),
        ("not-before", "signature_mismatch"),
        ("request-id", "signature_mismatch"),
        ("session-key", "signature_mismatch"),
        ("resources", "signature_mismatch"),
        ("domain", "siwe_domain_mismatch"),
        ("chain-id", "siwe_chain_id_mismatch"),
        ("version", "siwe_version_unsupported"),
    ],
)
def test_any_siwe_field_tampered_after_signing_is_refused(c, settings, field, code):
    acct = new_account()
    now = int(time.time() * 1000)
    text = siwe_text(
        settings,
        acct.address,
        get_nonce(c),
        expiration=iso(now + 3_600_000),
        not_before=iso(now - 1000),
        request_id="req1",
        resources=["https://example.com/terms"],
        session_key=new_account().address,
    )
    sig = sign(acct, text)
    tampered = _tamper(field, text, c, settings)
    assert tampered != text
    resp = post_login(c, tampered, sig)
    assert resp.status_code == 401, resp.get_json()
    assert error_code(resp) == code
    # the untampered message still works: nothing was used up by the refused attempt
    assert post_login(c, text, sig).status_code == 200


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"domain": "evil.example"}, "siwe_domain_mismatch"),
        ({"chain_id": 137}, "siwe_chain_id_mismatch"),
        ({"uri": "https://evil.example/login"}, "siwe_uri_mismatch"),
        # times relative to the server's clock when the test runs, not when the module was collected
        ({"issued_at": -6 * 60_000}, "siwe_issued_at_out_of_window"),
        ({"expiration": -1000}, "siwe_expired"),
        ({"not_before": 60_000}, "siwe_not_yet_valid"),
    ],
)
def test_signed_but_unacceptable_messages(c, settings, kw, code):
    acct = new_account()
    now_ms = services(c.application).now_ms()
    kw = {k: iso(now_ms + v) if k in ("issued_at", "expiration", "not_before") else v for k, v in kw.items()}
    text = siwe_text(settings, acct.address, get_nonce(c), **kw)
    resp = post_login(c, text, sign(acct, text))
    assert (resp.status_code, error_code(resp)) == (401, code)


# ---- bad bodies ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"{", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": b"[1, 2]", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": b"message=x", "content_type": "application/x-www-form-urlencoded"}, 415, None),
        ({"json": {}}, 400, "invalid_request"),
        ({"json": {"message": "x"}}, 400, "invalid_request"),
        ({"json": {"message": 5, "signature": "0x" + "1" * 130}}, 400, "invalid_request"),
        ({"json": {"message": "x", "signature": "0x12"}}, 400, "invalid_request"),
        ({"json": {"message": "x", "signature": "0x" + "1" * 130, "extra": 1}}, 400, "invalid_request"),
        ({"json": {"message": "x" * 5000, "signature": "0x" + "1" * 130}}, 400, "invalid_request"),
        ({"json": {"message": "hello", "signature": "0x" + "1" * 130}}, 400, "siwe_malformed"),
        ({"data": b'{"message": "' + b"x" * 70_000 + b'"}', "content_type": "application/json"}, 413, None),
    ],
)
def test_bad_login_bodies(c, kwargs, status, code):
    resp = c.post("/api/v1/auth/login", **kwargs)
    assert resp.status_code == status, resp.get_json()
    if code:
        assert error_code(resp) == code


# ---- Authorization, logout, admin ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_authorization"),
        ("", "invalid_authorization"),
        ("Bearer", "invalid_authorization"),
        ("Bearer ", "invalid_authorization"),
        ("Basic dXNlcjpwYXNz", "invalid_authorization"),
        ("Bearer " + "a" * 42, "invalid_authorization"),
        ("Bearer " + "a" * 44, "invalid_authorization"),
        ("Bearer " + "a" * 43 + " extra", "invalid_authorization"),
        ("Bearer " + "a!" * 21 + "a", "invalid_authorization"),
        ("Bearer " + "\u00e9" * 43, "invalid_authorization"),
        ("Bearer " + "a" * 43, "invalid_session"),
        ("bearer " + "a" * 43, "invalid_session"),
    ],
)
def test_missing_or_garbled_authorization(c, header, code):
    headers = {} if header is None else {"Authorization": header}
    for path in ("/api/v1/auth/session", "/api/v1/admin/whoami"):
        resp = c.get(path, headers=headers)
        assert (resp.status_code, error_code(resp)) == (401, code)
    resp = c.post("/api/v1/auth/logout", headers=headers)
    assert (resp.status_code, error_code(resp)) == (401, code)


def test_logout_ends_only_that_session(c, settings):
    acct = new_account()
    one = login(c, settings, acct)["token"]
    two = login(c, settings, acct)["token"]
    resp = c.post("/api/v1/auth/logout", headers=bearer(one))
    assert resp.status_code == 200 and resp.get_json() == {"status": "logged_out"}
    resp = c.get("/api/v1/auth/session", headers=bearer(one))
    assert (resp.status_code, error_code(resp)) == (401, "invalid_session")
    assert c.get("/api/v1/auth/session", headers=bearer(two)).status_code == 200


def test_admin_route_needs_an_admin_session(c, settings):
    admin = ADMIN
    user = login(c, settings, new_account())["token"]
    resp = c.get("/api/v1/admin/whoami", headers=bearer(user))
    assert (resp.status_code, error_code(resp)) == (403, "forbidden")
    token = login(c, settings, admin)["token"]
    resp = c.get("/api/v1/admin/whoami", headers=bearer(token))
    assert resp.status_code == 200
    assert resp.get_json() == {"address": admin.address, "admin": True}


def test_admin_role_follows_the_wallet_not_the_session_key(c, settings):
    """A session key equal to an admin address does not make a non-admin wallet an admin."""
    admin = ADMIN
    token = login(c, settings, new_account(), session_key=admin.address)["token"]
    resp = c.get("/api/v1/admin/whoami", headers=bearer(token))
    assert resp.status_code == 403


def test_expired_session_is_refused(c, running_app, settings, clock):
    body = login(c, settings, new_account(), now_ms=clock.ms)
    clock.advance(86_400 + 1)  # Redis would have dropped it; the stored expiry is checked too
    resp = c.get("/api/v1/auth/session", headers=bearer(body["token"]))
    assert (resp.status_code, error_code(resp)) == (401, "invalid_session")
