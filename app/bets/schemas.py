"""marshmallow schemas of the bet resources (validation of the request body, and /api/openapi.json)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.auth.schemas import SignedRequestSchema

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


class BetPageSchema(Schema):
    bets = fields.List(fields.Nested(BetSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)
