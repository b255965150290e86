"""marshmallow schemas of the market resources (for /api/openapi.json)."""

from __future__ import annotations

from marshmallow import Schema, fields


class FeedStatusSchema(Schema):
    type = fields.String(metadata={"description": "status"})
    feed = fields.String(required=True, metadata={"description": "healthy, degraded or critical"})
    betting = fields.Boolean(required=True)
    halted = fields.Boolean(metadata={"description": "Present while an operator halted betting (§8b)"})
    reason = fields.String(metadata={"description": "Why betting is closed, when it is"})


class GridSettingsSchema(Schema):
    column_seconds = fields.Integer(required=True)
    price_step = fields.String(required=True, metadata={"description": "Price string"})
    columns_ahead = fields.Integer(required=True)
    min_lead_columns = fields.Integer(required=True)
    rows_each_side = fields.Integer(required=True)
    house_edge = fields.String(required=True)
    stake_presets = fields.List(fields.String(), required=True)
    min_stake = fields.String(required=True)
    max_stake = fields.String(required=True)
    chain_id = fields.Integer(required=True)
    siwe_domain = fields.String(required=True)


class GridSchema(Schema):
    """The quote matrix: `quotes[i][j]` is the multiplier of cell "<columns[i]>:<rows[j]>" (null: not
    offered). Empty lists and a null price before the first tick."""

    ts = fields.Integer(metadata={"description": "When this grid was made, Unix ms (here: server_time)"})
    server_time = fields.Integer(
        required=True, metadata={"description": "The server's clock (Unix ms) that judges placeable cells"}
    )
    price = fields.String(allow_none=True, required=True, metadata={"description": "Price of the quotes"})
    current_row = fields.Integer(
        metadata={"description": "floor(price / price_step); rows are current_row ± rows_each_side"}
    )
    column_seconds = fields.Integer()
    price_step = fields.String()
    columns = fields.List(
        fields.Integer(),
        required=True,
        metadata={"description": "Starts (Unix s) of the columns placeable at server_time"},
    )
    rows = fields.List(fields.Integer(), required=True)
    quotes = fields.List(fields.List(fields.String(allow_none=True)), required=True)
    feed = fields.Nested(FeedStatusSchema, required=True)
    settings = fields.Nested(GridSettingsSchema, required=True)


class TickSchema(Schema):
    price = fields.String(required=True)
    ts = fields.Integer(required=True)


class PricesSchema(Schema):
    prices = fields.List(fields.Nested(TickSchema), required=True)
    truncated = fields.Boolean(required=True)
