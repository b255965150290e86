"""Marshmallow schemas of the admin endpoints (for the OpenAPI document; the routes validate by hand
where marshmallow would be too lenient, e.g. `open` must be a JSON boolean, not 1 or "true")."""

from __future__ import annotations

from marshmallow import Schema, fields


class BettingRequestSchema(Schema):
    open = fields.Boolean(required=True, metadata={"description": "false halts all betting; true reopens"})
    reason = fields.String(
        metadata={"description": "Why (1–200 characters); required to halt, shown to every trader"}
    )


class BettingActionSchema(Schema):
    at = fields.Integer(required=True, metadata={"description": "Unix ms"})
    address = fields.String(required=True, metadata={"description": "The operator's wallet, lowercase"})
    action = fields.String(required=True, metadata={"description": "halt | reopen"})
    reason = fields.String(allow_none=True)
    ip = fields.String(allow_none=True, metadata={"description": "The operator's client address"})
    week = fields.String(metadata={"description": "The week file holding the record"})


class BettingStateSchema(Schema):
    open = fields.Boolean(
        required=True, metadata={"description": "Taps accepted now (the switch and the feed's breaker)"}
    )
    halted = fields.Boolean(required=True, metadata={"description": "The operator's switch is off"})
    reason = fields.String(allow_none=True, metadata={"description": "The operator's reason while halted"})
    by = fields.String(allow_none=True, metadata={"description": "Who halted it"})
    at = fields.Integer(allow_none=True, metadata={"description": "When it was halted, Unix ms"})
    breaker_open = fields.Boolean(
        required=True, metadata={"description": "The feed's breaker allows betting"}
    )
    read_at = fields.Integer(
        allow_none=True,
        metadata={
            "description": "Unix ms when this worker last read the switch from Redis (each second) or set "
            "it; the state above is as of then. null: not read yet, the state is unknown"
        },
    )
    read_age_s = fields.Float(allow_none=True, metadata={"description": "Seconds since `read_at`"})
    read_error = fields.String(
        allow_none=True,
        metadata={
            "description": "Why the latest read of the switch failed (Redis unreachable): the state is "
            "unconfirmed since `read_at`. null: the latest read succeeded"
        },
    )
    actions = fields.List(fields.Nested(BettingActionSchema), metadata={"description": "Newest first"})
    recorded = fields.Boolean(
        metadata={"description": "POST only: the action was written to SQLite (false: logged, retry it)"}
    )


class IntegrityRunSchema(Schema):
    id = fields.String(required=True)
    state = fields.String(
        required=True, metadata={"description": "running | ok | violations | failed | interrupted"}
    )
    by = fields.String(metadata={"description": "The operator who started it"})
    started_at = fields.Integer(metadata={"description": "Unix ms"})
    finished_at = fields.Integer(allow_none=True, metadata={"description": "Unix ms"})
    files_done = fields.Integer()
    files_total = fields.Integer(allow_none=True)
    current_file = fields.String(allow_none=True)
    violations = fields.Integer(metadata={"description": "How many, in all files"})
    first_violations = fields.List(fields.String(), metadata={"description": "The first 100, as text"})
    files = fields.List(fields.Dict(), metadata={"description": "Per week file: its violations"})
    seconds = fields.Float(metadata={"description": "How long it ran"})
    error = fields.String(metadata={"description": "Why it failed (state failed)"})


class IntegrityStateSchema(Schema):
    last = fields.Nested(IntegrityRunSchema, allow_none=True, metadata={"description": "null: never run"})


class PanelSchema(Schema):
    """A console panel: see docs/API.md for every field."""

    class Meta:
        unknown = "include"


class LocalWeekSchema(Schema):
    week = fields.String(required=True, metadata={"description": "ISO year and week, e.g. 2026_48"})
    file = fields.String(required=True)
    size = fields.Integer(required=True, metadata={"description": "Bytes"})
    state = fields.String(
        required=True,
        metadata={"description": "current | attached | eligible (for archive) | newer | unknown"},
    )


class ArchivedWeekSchema(Schema):
    week = fields.String(required=True)
    compressed_size = fields.Integer(required=True, metadata={"description": "Bytes"})
    raw_size = fields.Integer(allow_none=True, metadata={"description": "Bytes, from the archive index"})
    last_modified = fields.String(allow_none=True, metadata={"description": "ISO 8601"})
    restored = fields.Boolean(required=True, metadata={"description": "A restored copy is on this machine"})


class WeeksPanelSchema(Schema):
    local = fields.List(
        fields.Nested(LocalWeekSchema), required=True, metadata={"description": "Read at most 2 s ago"}
    )
    archived = fields.List(
        fields.Nested(ArchivedWeekSchema),
        required=True,
        metadata={"description": "As of `listed_at` (empty before the first listing succeeds)"},
    )
    target = fields.String(
        allow_none=True, metadata={"description": "The archive target listed; null before the first listing"}
    )
    listed_at = fields.Integer(
        allow_none=True,
        metadata={"description": "Unix ms of the last successful listing of the target; null: none yet"},
    )
    age_s = fields.Float(allow_none=True, metadata={"description": "Seconds since `listed_at`"})
    refreshing = fields.Boolean(
        required=True, metadata={"description": "A listing is running in the background now"}
    )
    error = fields.String(
        allow_none=True,
        metadata={"description": "Why the last listing attempt failed (`archived` is then the older one)"},
    )


class OverviewSchema(Schema):
    server_time = fields.Integer(required=True)
    worker = fields.Integer(metadata={"description": "The pid of the worker that answered"})
    series_since = fields.Integer(
        required=True,
        metadata={
            "description": "Unix ms when the answering worker started: its per-process series (taps, writer) "
            "begin then. Its taps for earlier seconds are 0 because it did not count them (a new worker "
            "after a SIGHUP), not because there were none: keep the previous worker's figures for them"
        },
    )
    feed = fields.Dict(
        metadata={"description": "GET /api/v1/admin/feed (its age_series over the same window)"}
    )
    betting = fields.Nested(BettingStateSchema)
    writer = fields.Dict(metadata={"description": "GET /api/v1/admin/writer"})
    taps = fields.Dict(metadata={"description": "GET /api/v1/admin/taps"})
    websocket = fields.Dict(metadata={"description": '{"clients": n}'})
    resolver = fields.Dict(metadata={"description": "GET /api/v1/admin/resolver"})
    exposure = fields.Dict(metadata={"description": "GET /api/v1/admin/exposure"})
    house = fields.Dict(metadata={"description": "GET /api/v1/admin/house"})
    weeks = fields.Nested(WeeksPanelSchema, metadata={"description": "GET /api/v1/admin/weeks"})
    integrity = fields.Nested(IntegrityRunSchema, allow_none=True)
