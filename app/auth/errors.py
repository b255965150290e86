"""Every error code the auth module can answer with, in one place (listed in docs/API.md).

Each check has its own stable code so that a client, a log line or a test can tell exactly which
check refused a request. Status follows SPEC §6: 400 bad input, 401 authentication or signature,
403 not allowed, 409 replay, 429 rate limited, 503 a dependency is down (fail closed).
"""

from __future__ import annotations

from app.errors import ApiError, BadRequest, Conflict, Forbidden, RateLimited, Unauthorized, Unavailable


class AuthError(Unauthorized):
    """401 raised by a failed authentication or signature check; `code` names the check."""


# ---- request shape (400) ------------------------------------------------------------------------
class InvalidJson(BadRequest):
    code = "invalid_json"


class InvalidRequest(BadRequest):
    code = "invalid_request"


class SiweError(BadRequest):
    """The SIWE parser's only exception: the message is not a strict EIP-4361 message (400).

    Field *checks* after a successful parse raise `SiweCheckError` (401) instead.
    """

    code = "siwe_malformed"


class SiweCheckError(AuthError):
    """A well-formed SIWE message that this server does not accept (wrong domain, chain, time, …)."""

    code = "siwe_rejected"


class SignatureError(AuthError):
    """A signature that is malformed, non-canonical (high s) or does not recover a public key."""

    code = "signature_invalid"


# ---- codes --------------------------------------------------------------------------------------
# Kept as constants so that routes, tests and docs/API.md name the same strings.
MISSING_AUTHORIZATION = "missing_authorization"
INVALID_AUTHORIZATION = "invalid_authorization"
INVALID_SESSION = "invalid_session"
FORBIDDEN = "forbidden"
LOGIN_NONCE_INVALID = "login_nonce_invalid"
SIGNATURE_MALFORMED = "signature_malformed"
SIGNATURE_HIGH_S = "signature_high_s"
SIGNATURE_INVALID = "signature_invalid"
SIGNATURE_MISMATCH = "signature_mismatch"
WRONG_SIGNER = "wrong_signer"
TS_OUT_OF_WINDOW = "ts_out_of_window"
NONCE_CONFLICT = "nonce_conflict"
RATE_LIMITED = "rate_limited"
DEPENDENCY_UNAVAILABLE = "dependency_unavailable"


def unauthorized(code: str, message: str) -> AuthError:
    return AuthError(message, code=code)


def forbidden(message: str = "This route needs an operator (admin) session.") -> Forbidden:
    return Forbidden(message, code=FORBIDDEN)


def rate_limited(retry_after: int, what: str) -> RateLimited:
    return RateLimited(
        f"Too many requests {what}; retry after {retry_after} s.",
        code=RATE_LIMITED,
        retry_after=max(1, retry_after),
    )


def nonce_conflict() -> Conflict:
    return Conflict(
        "This nonce was already used for a different request; sign again with a fresh nonce.",
        code=NONCE_CONFLICT,
    )


def dependency_unavailable() -> Unavailable:
    return Unavailable(
        "A backing service is unavailable; try again shortly.", code=DEPENDENCY_UNAVAILABLE, retry_after=2
    )


__all__ = [
    "ApiError",
    "AuthError",
    "InvalidJson",
    "InvalidRequest",
    "SignatureError",
    "SiweCheckError",
    "SiweError",
]
