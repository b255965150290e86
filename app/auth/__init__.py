"""Authentication and replay protection (SPEC §5, §6; ADR-007).

- `siwe`        strict EIP-4361 parser and checks
- `sessions`    Redis sessions (token stored hashed) and single-use login nonces
- `signatures`  EIP-191 fast recovery, signer/timestamp/nonce checks for signed requests (bets)
- `ratelimit`   per-IP and per-address limits (429 + Retry-After), client IP behind nginx
- `decorators`  `login_required`, `admin_required`, `current_session`
- `routes`      /api/v1/auth/{nonce,login,logout,session}, /api/v1/admin/whoami
- `schemas`     marshmallow schemas (also feed /api/openapi.json), `load_json`
- `errors`      every auth error code; `state` the per-app limits and lookup script

Error codes and the order of checks: docs/API.md. Verification cost: BENCHMARKS.md.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the auth blueprints and per-app state. Call after `app.extensions["tap"]` is set."""
    from app.auth.ratelimit import Counter, Limits, SessionLookup
    from app.auth.routes import admin_bp, bp
    from app.auth.state import EXT_KEY, AuthState
    from app.services import services

    svc = services(app)
    s = svc.settings
    limits = Limits(
        auth_per_ip_per_min=s.rate_auth_per_ip,
        per_ip_per_s=s.rate_per_ip,
        per_address_per_s=s.rate_per_address,
    )
    app.extensions[EXT_KEY] = AuthState(
        limits=limits,
        lookup=SessionLookup(svc.redis, limits, svc.redis_batch),
        counter=Counter(svc.redis, svc.redis_batch),
    )
    app.register_blueprint(bp)
    app.register_blueprint(admin_bp)
