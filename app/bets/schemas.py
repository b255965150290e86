"""marshmallow schemas of the bet resources (validation of the request body, and /api/openapi.json),
and `bet_request_fields`, the hand-written check that accepts a valid bet body without marshmallow.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import Schema, fields, validate

from app.auth.schemas import SIGNATURE_PATTERN, SIGNED_NONCE_PATTERN, TS_MAX, SignedRequestSchema

_DECIMAL = r"^[0-9]{1,18}(\.[0-9]{1,18})?$"


class BetRequestSchema(SignedRequestSchema):
    """POST /api/v1/bets. Every value is signed exactly as sent (SPEC §6)."""

    cell = fields.String(
        required=True,
        validate=validate.Length(max=32),
        metadata={"description": '"<t_start>:<row>", e.g. "1763712005:6712"'},
    )
    stake = fields.String(
        required=True,
        validate=validate.Length(max=32),
        metadata={"description": 'Money string, ≤ 6 decimals, e.g. "10" or "2.5"'},
    )
    min_multiplier = fields.String(
        required=True,
        validate=validate.Length(max=32),
        metadata={"description": 'Lowest multiplier accepted, ≤ 4 decimals, e.g. "2.5"'},
    )


_BET_FIELDS = frozenset(("cell", "stake", "min_multiplier", "nonce", "ts", "signature"))
_TEXT_MAX = 32  # BetRequestSchema's Length(max=32) on cell, stake and min_multiplier
# The schema's patterns without their anchors, for fullmatch, as the schema's `Pattern` matches them.
_NONCE_RE = re.compile(SIGNED_NONCE_PATTERN.removeprefix("^").removesuffix("$"))
_SIGNATURE_RE = re.compile(SIGNATURE_PATTERN.removeprefix("^").removesuffix("$"))


def bet_request_fields(body: object) -> dict[str, Any] | None:
    """The fields of a valid bet body, as `BetRequestSchema().load(body)` returns them, or None.

    Why: marshmallow's load is ~20 µs of a websocket tap's CPU (BENCHMARKS.md, issue 12), most of it
    generic machinery for six flat fields. This check accepts only bodies the schema certainly
    accepts, with the same output (the strings as sent, `ts` the same int); for anything else it
    returns None and the caller runs the schema, so every refusal keeps marshmallow's exact code,
    message and details. A test holds the two to agreement on a table of bodies
    (tests/test_bet_fields.py). Keep the schema for /api/openapi.json and this check in step.
    """
    if type(body) is not dict or body.keys() != _BET_FIELDS:
        return None
    ts = body["ts"]
    cell, stake, mult = body["cell"], body["stake"], body["min_multiplier"]
    nonce, signature = body["nonce"], body["signature"]
    if (
        type(ts) is int  # not bool, not float: the schema's Integer(strict=True)
        and 0 <= ts <= TS_MAX
        and type(cell) is str
        and len(cell) <= _TEXT_MAX
        and type(stake) is str
        and len(stake) <= _TEXT_MAX
        and type(mult) is str
        and len(mult) <= _TEXT_MAX
        and type(nonce) is str
        and _NONCE_RE.fullmatch(nonce) is not None
        and type(signature) is str
        and _SIGNATURE_RE.fullmatch(signature) is not None
    ):
        return body
    return None


class BetSchema(Schema):
    bet_id = fields.String(required=True)
    status = fields.String(
        required=True,
        validate=validate.OneOf(["pending", "confirmed", "rejected", "won", "lost", "void"]),
    )
    cell = fields.String(required=True)
    stake = fields.String(required=True, metadata={"description": "Money string"})
    multiplier = fields.String(required=True, metadata={"description": "Quoted at acceptance"})
    payout = fields.String(
        required=True,
        metadata={
            "description": "While open: what a win pays, floor(stake × multiplier). Once settled: what "
            "was paid (0 for lost, the stake for void)."
        },
    )
    potential_payout = fields.String(required=True)
    placed_at = fields.Integer(required=True, metadata={"description": "Unix ms"})
    settled_at = fields.Integer(allow_none=True)
    reason = fields.String(metadata={"description": "Only when rejected, e.g. insufficient_funds"})


class BetAcceptedSchema(BetSchema):
    """The 202 of `POST /bets` (and the socket's `bet:accepted`): the six fields of the bet as placed.
    A retry of an accepted nonce answers with the bet as it stands now, with BetSchema's other fields."""

    potential_payout = fields.String()
    placed_at = fields.Integer(metadata={"description": "Unix ms"})


class BetPageSchema(Schema):
    bets = fields.List(fields.Nested(BetSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)
