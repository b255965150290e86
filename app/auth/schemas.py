"""marshmallow schemas of the auth routes (also the source of /api/openapi.json). Reading a JSON body
against a schema is `app.http.json.load_json`.

`SignedRequestSchema` holds the three fields every signed request carries (nonce, ts, signature);
the bet schema extends it.
"""

from __future__ import annotations

import re

from marshmallow import Schema, fields, validate

from app.auth.siwe import MESSAGE_MAX

SIGNATURE_PATTERN = r"^0x[0-9a-fA-F]{130}$"
ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
SIGNED_NONCE_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
TS_MAX = 2**53 - 1  # a JSON number every client can represent exactly


# ---- common -------------------------------------------------------------------------------------


class Pattern(validate.Regexp):
    """`validate.Regexp` matched against the whole value: marshmallow's `re.match` with a `$`-anchored
    pattern also accepts the value followed by one "\n" (a nonce "abcdefgh\n" would put a line break
    into the signed text). /api/openapi.json shows the same `^…$` pattern, which JSON Schema already
    reads as the whole string."""

    def __init__(self, pattern: str) -> None:
        super().__init__(pattern)
        self._whole = re.compile(pattern)

    def __call__(self, value: str) -> str:  # type: ignore[override]
        if self._whole.fullmatch(value) is None:
            raise validate.ValidationError(self._format_error(value))
        return value


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"description": "Stable snake_case error code"})
    message = fields.String(required=True, metadata={"description": "Human-readable sentence"})
    details = fields.Dict(metadata={"description": "Optional structured details (e.g. field errors)"})


class ErrorResponseSchema(Schema):
    error = fields.Nested(ErrorBodySchema, required=True)


class SignedRequestSchema(Schema):
    """Fields of every signed request (SPEC §6). Subclass and add the signed business fields."""

    nonce = fields.String(
        required=True,
        validate=Pattern(SIGNED_NONCE_PATTERN),
        metadata={"description": "Unique per request and wallet for 90 s: 8–64 of [A-Za-z0-9_-]"},
    )
    ts = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0, max=TS_MAX),
        metadata={"description": "Client time, Unix ms; must be within 30 s of the server's"},
    )
    signature = fields.String(
        required=True,
        validate=Pattern(SIGNATURE_PATTERN),
        metadata={"description": "EIP-191 personal_sign, 0x + 130 hex digits (r, s, v; low s)"},
    )


# ---- auth routes --------------------------------------------------------------------------------


class NonceResponseSchema(Schema):
    nonce = fields.String(
        required=True, metadata={"description": "24 letters/digits; single use; expires in 5 minutes"}
    )


class LoginRequestSchema(Schema):
    message = fields.String(
        required=True,
        validate=validate.Length(min=1, max=MESSAGE_MAX),
        metadata={"description": "The EIP-4361 message exactly as signed (LF line ends, no trailing LF)"},
    )
    signature = fields.String(
        required=True,
        validate=Pattern(SIGNATURE_PATTERN),
        metadata={"description": "EIP-191 personal_sign of `message` by the wallet; 0x + 130 hex"},
    )


class SessionSchema(Schema):
    address = fields.String(required=True, metadata={"description": "Wallet, EIP-55 checksummed"})
    session_key = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Session key bound at login (checksummed), or null"},
    )
    expires_at = fields.Integer(required=True, metadata={"description": "Session expiry, Unix ms"})


class LoginResponseSchema(SessionSchema):
    token = fields.String(required=True, metadata={"description": "Bearer token (43 characters)"})


class LogoutResponseSchema(Schema):
    status = fields.String(required=True, metadata={"description": "Always 'logged_out'"})


class AdminWhoamiSchema(Schema):
    address = fields.String(required=True, metadata={"description": "Operator wallet, checksummed"})
    admin = fields.Boolean(required=True)
