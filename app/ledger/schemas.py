"""marshmallow schemas of the account and ledger resources (request validation and /api/openapi.json)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class MeSchema(Schema):
    address = fields.String(required=True, metadata={"description": "EIP-55 checksummed wallet"})
    balance = fields.String(required=True, metadata={"description": "Money string"})
    open_stakes = fields.String(required=True, metadata={"description": "Stakes of bets not yet settled"})
    open_bets = fields.Integer(required=True)
    session_key = fields.String(allow_none=True, required=True)
    is_admin = fields.Boolean(required=True)


class LedgerEntrySchema(Schema):
    id = fields.Integer(required=True, metadata={"description": "Row id within its week file"})
    amount = fields.String(required=True, metadata={"description": "Signed money string: - for a debit"})
    balance_after = fields.String(required=True)
    ref_type = fields.String(
        required=True,
        metadata={"description": "bet, payout, refund, deposit, withdrawal or opening (a week's carry-over)"},
    )
    ref_id = fields.String(required=True, metadata={"description": "The bet id or movement ref_id"})
    created_at = fields.Integer(required=True, metadata={"description": "Unix ms"})


class LedgerPageSchema(Schema):
    entries = fields.List(fields.Nested(LedgerEntrySchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class MoneyRequestSchema(Schema):
    amount = fields.String(
        required=True,
        validate=validate.Length(max=32),
        metadata={"description": "Money string, > 0, ≤ 6 decimals"},
    )


class MovementSchema(Schema):
    """200 of POST /deposits and /withdrawals: the movement committed (or its first result, replayed)."""

    balance = fields.String(required=True, metadata={"description": "Balance right after this movement"})
    amount = fields.String(required=True)
    ref_id = fields.String(required=True, metadata={"description": "The ledger row's ref_id"})
    status = fields.String(required=True, validate=validate.OneOf(["committed"]))


class MovementPendingSchema(Schema):
    """202 of POST /deposits and /withdrawals: not committed in time; it stays queued and the ledger
    shows `ref_id` once committed (a retry with the same Idempotency-Key returns the outcome)."""

    ref_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["pending"]))
    kind = fields.String(required=True, validate=validate.OneOf(["deposit", "withdrawal"]))
    amount = fields.String(required=True)
