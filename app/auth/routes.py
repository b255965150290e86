"""Auth routes (SPEC §5): nonce, login, logout, session introspection, and one admin route.

Login checks, in order (each failure has its own code, docs/API.md):
  per-IP rate limit → JSON schema → strict EIP-4361 parse → field checks (scheme, domain, URI,
  version, chain id, issued-at / expiration / not-before) → EIP-191 signature by the message's
  address (eth-account; high s refused) → nonce used up (single use, 5 min) → user row created on
  first login (through the SQLite writer) → session stored in Redis.
"""

from __future__ import annotations

import gevent
from flask import Blueprint, Response, jsonify

from app.auth import errors as E
from app.auth.decorators import admin_required, current_session, login_required, redis_guard
from app.auth.ratelimit import client_ip, hit
from app.auth.schemas import LoginRequestSchema
from app.auth.sessions import (
    SESSION_TTL_MS,
    consume_login_nonce,
    create_session,
    end_session,
    issue_login_nonce,
)
from app.auth.signatures import recover_personal_sign_reference
from app.auth.siwe import check_message, parse_message
from app.auth.state import auth_state
from app.errors import Unavailable
from app.http.json import load_json
from app.keys import CHANNEL_CONTROL, session_ended_message
from app.services import Services, services

bp = Blueprint("auth", __name__, url_prefix="/api/v1/auth")
admin_bp = Blueprint("admin", __name__, url_prefix="/api/v1/admin")

_login_schema = LoginRequestSchema()

USER_WRITE_TIMEOUT_S = 5.0


@bp.get("/nonce")
def nonce() -> Response:
    """Issue a single-use login nonce.
    ---
    get:
      tags: [auth]
      summary: Issue a single-use SIWE nonce (expires in 5 minutes)
      responses:
        200:
          description: A fresh nonce to put in the EIP-4361 message
          content:
            application/json:
              schema: app.auth.schemas.NonceResponseSchema
        429: RateLimited
        503: Unavailable
    """
    svc = services()
    state = auth_state()
    with redis_guard():
        hit(
            svc.redis,
            "auth",
            client_ip(),
            limit=state.limits.auth_per_ip_per_min,
            window_s=60,
            now_ms=svc.now_ms(),
        )
        value = issue_login_nonce(svc.redis)
    resp = jsonify(nonce=value)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/login")
def login() -> Response:
    """Sign in with Ethereum: verify a signed EIP-4361 message and open a 24 h session.
    ---
    post:
      tags: [auth]
      summary: Sign in with Ethereum (EIP-4361 + EIP-191) and get a bearer token
      description: >-
        The message is parsed strictly and every field is checked. To bind a session key, add the
        resource `urn:tap-trading:session-key:<0x address>`. The user row is created on first login
        with balance 0. Error codes: see docs/API.md (invalid_json, invalid_request, siwe_*,
        signature_*, login_nonce_invalid, rate_limited, dependency_unavailable).
      requestBody:
        required: true
        content:
          application/json:
            schema: app.auth.schemas.LoginRequestSchema
      responses:
        200:
          description: Signed in
          content:
            application/json:
              schema: app.auth.schemas.LoginResponseSchema
        400: BadRequest
        401: Unauthorized
        429: RateLimited
        503: Unavailable
    """
    svc = services()
    state = auth_state()
    settings = svc.settings
    now = svc.now_ms()
    with redis_guard():
        hit(svc.redis, "auth", client_ip(), limit=state.limits.auth_per_ip_per_min, window_s=60, now_ms=now)

    body = load_json(_login_schema)
    msg = parse_message(body["message"])
    check_message(
        msg,
        domain=settings.siwe_domain,
        chain_id=settings.chain_id,
        now_ms=now,
        allow_http=settings.dev_mode,
    )
    address = msg.address.lower()
    signer = recover_personal_sign_reference(body["message"], body["signature"])
    if signer != address:
        raise E.unauthorized(
            E.SIGNATURE_MISMATCH, "The signature is not by the address in the message (sign the exact text)."
        )
    with redis_guard():
        if not consume_login_nonce(svc.redis, msg.nonce):
            raise E.unauthorized(
                E.LOGIN_NONCE_INVALID,
                "The nonce is unknown, expired or already used; get a new one from /auth/nonce.",
            )

    user_id = ensure_user(svc, address, now)
    expires_at = now + SESSION_TTL_MS
    if msg.expiration_time_ms is not None:
        # The session never outlives the message that authorised it.
        expires_at = min(expires_at, msg.expiration_time_ms)
    with redis_guard():
        token, session = create_session(
            svc.redis,
            address=address,
            session_key=msg.session_key,
            user_id=user_id,
            now_ms=now,
            expires_at=expires_at,
        )
    resp = jsonify(token=token, **session.to_json())
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.post("/logout")
@login_required
def logout() -> Response:
    """End the session of the bearer token.
    ---
    post:
      tags: [auth]
      summary: End this session (the token stops working at once)
      responses:
        200:
          description: Logged out
          content:
            application/json:
              schema: app.auth.schemas.LogoutResponseSchema
        401: Unauthorized
        429: RateLimited
        503: Unavailable
    """
    r = services().redis
    session = current_session()
    with redis_guard():
        end_session(r, session)
        r.publish(CHANNEL_CONTROL, session_ended_message(session.key))  # its open sockets close: 4401
    return jsonify(status="logged_out")


@bp.get("/session")
@login_required
def session_info() -> Response:
    """The current session: wallet, bound session key and expiry.
    ---
    get:
      tags: [auth]
      summary: Describe the current session (a cheap token check for clients)
      responses:
        200:
          description: The session
          content:
            application/json:
              schema: app.auth.schemas.SessionSchema
        401: Unauthorized
        429: RateLimited
        503: Unavailable
    """
    return jsonify(current_session().to_json())


@admin_bp.get("/whoami")
@admin_required
def admin_whoami() -> Response:
    """Operator check: 200 for sessions in TAP_ADMIN_ADDRESSES, 403 for every other session.
    ---
    get:
      tags: [admin]
      summary: Confirm an operator (admin) session
      responses:
        200:
          description: This session is an operator
          content:
            application/json:
              schema: app.auth.schemas.AdminWhoamiSchema
        401: Unauthorized
        403: Forbidden
        429: RateLimited
        503: Unavailable
    """
    return jsonify(address=current_session().checksum_address, admin=True)


def ensure_user(svc: Services, address: str, now_ms: int) -> int:
    """The user id for `address` (lowercase), creating the row (balance 0) on first login."""

    def find(conn) -> int | None:
        row = conn.execute("SELECT id FROM users WHERE address = ?", (address,)).fetchone()
        return None if row is None else row[0]

    user_id = svc.reads.run(find)
    if user_id is not None:
        return user_id

    def create(conn) -> int:
        conn.execute(
            "INSERT INTO users (address, balance, created_at) VALUES (?, 0, ?) "
            "ON CONFLICT(address) DO NOTHING",
            (address, now_ms),
        )
        found = find(conn)
        assert found is not None
        return found

    try:
        return svc.writes.call(create, timeout=USER_WRITE_TIMEOUT_S)
    except gevent.Timeout:
        raise Unavailable(
            "The database is busy; try signing in again.", code="dependency_unavailable", retry_after=2
        ) from None
