"""JSON in and out of the HTTP routes: orjson for every body, malformed JSON as a 400 with its own
code, and `load_json` to read a body against a marshmallow schema (unknown keys refused). The
websocket validates its messages with the same `validate_object`, so both transports answer alike.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Request, request
from flask.json.provider import JSONProvider
from marshmallow import Schema, ValidationError

from app.auth.errors import InvalidJson, InvalidRequest
from app.errors import ApiError, BadRequest

_DETAILS_MAX_FIELDS = 10


class OrjsonProvider(JSONProvider):
    """orjson for every JSON body: faster, and it refuses NaN/Infinity instead of emitting them."""

    def dumps(self, obj, **kwargs):
        return orjson.dumps(obj).decode()

    def loads(self, s, **kwargs):
        return orjson.loads(s)


class ApiRequest(Request):
    """Malformed JSON is a 400 with its own stable code, not werkzeug's generic page."""

    def on_json_loading_failed(self, e: ValueError | None):
        if e is None:  # wrong or missing Content-Type
            raise ApiError(
                "Send the body as JSON with Content-Type: application/json.",
                status=415,
                code="unsupported_media_type",
            )
        raise BadRequest("The request body is not valid JSON.", code="invalid_json")


def load_json(schema: Schema) -> dict[str, Any]:
    """Parse the request body as a JSON object and validate it with `schema` (unknown keys refused)."""
    data = request.get_json()  # the app's request class answers 415 / 400 invalid_json itself
    return validate_object(schema, data)


def validate_object(schema: Schema, data: object) -> dict[str, Any]:
    """Validate an already parsed JSON value with `schema`: the same 400s over HTTP and websocket."""
    if not isinstance(data, dict):
        raise InvalidJson("The body must be a JSON object.")
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise InvalidRequest(
            "The request body is not valid: " + _summary(exc.messages),
            details={"fields": _trim(exc.messages)},
        ) from None


def _trim(messages: Any) -> Any:
    if not isinstance(messages, dict):
        return messages
    out = {}
    for i, (k, v) in enumerate(messages.items()):
        if i >= _DETAILS_MAX_FIELDS:
            out["…"] = ["more fields omitted"]
            break
        out[str(k)[:64]] = v
    return out


def _summary(messages: Any) -> str:
    if isinstance(messages, dict) and messages:
        k, v = next(iter(messages.items()))
        first = v[0] if isinstance(v, list) and v else v
        more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
        return f"{str(k)[:64]}: {str(first)[:120]}{more}"
    return str(messages)[:200]
