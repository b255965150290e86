"""`GET /api/openapi.json`: the OpenAPI 3 document, built from the app's own routes (apispec).

Nothing is registered by hand: on the first request the builder walks ``app.url_map``, so routes
that other modules add later appear without touching this file. For each view it reads an apispec
YAML block from the docstring (after a line ``---``), keyed by method::

    @bp.post("/bets")
    @login_required
    def place_bet():
        \"\"\"Place a bet.
        ---
        post:
          tags: [bets]
          requestBody:
            content: {application/json: {schema: app.bets.schemas.BetRequestSchema}}
          responses:
            202: {description: Accepted, content: {application/json: {schema: BetAcceptedSchema}}}
            400: BadRequest
            401: Unauthorized
        \"\"\"

- ``schema:`` names a marshmallow schema class (dotted path is safest; a bare class name works
  while it is unique); the MarshmallowPlugin turns it into a component.
- Response shorthands ``BadRequest``, ``Unauthorized``, ``Forbidden``, ``NotFound``, ``Conflict``,
  ``Unprocessable``, ``RateLimited``, ``Unavailable`` refer to the shared error responses below
  (all use the ``{"error": {"code", "message"}}`` envelope).
- Views decorated with `login_required` / `admin_required` get ``bearerAuth`` security by themselves.
- A view without a YAML block still appears, with its docstring's first line as summary.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.yaml_utils import load_operations_from_docstring
from flask import Blueprint, Flask, Response, current_app, jsonify

from app.auth.decorators import AUTH_ATTR
from app.auth.schemas import ErrorResponseSchema

log = logging.getLogger(__name__)

bp = Blueprint("openapi", __name__)

EXT_KEY = "tap.openapi"
TITLE = "Tap Trading API"
API_VERSION = "1"
OPENAPI_VERSION = "3.0.3"
_METHODS = ("get", "put", "post", "delete", "patch")
_RULE_ARG = re.compile(
    r"<(?:(?P<conv>[a-zA-Z_][a-zA-Z0-9_]*)(?:\([^)]*\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>"
)
_CONVERTER_TYPES = {"int": "integer", "float": "number"}

ERROR_RESPONSES = {
    "BadRequest": "Bad input (400): the body, a parameter or a value is not acceptable",
    "Unauthorized": "Authentication or signature failed (401)",
    "Forbidden": "Authenticated, but not allowed (403)",
    "NotFound": "No such resource (404)",
    "Conflict": "Replay or duplicate (409)",
    "Unprocessable": "A business rule refused the request (422)",
    "RateLimited": "Rate limited (429); see the Retry-After header",
    "Unavailable": "A dependency is down or betting is suspended (503); see Retry-After",
    "PayloadTooLarge": "The body is larger than 64 KiB (413)",
    "UnsupportedMediaType": "A body that is not Content-Type: application/json (415)",
}

DESCRIPTION = (
    "Wire contract, conventions and every error code: docs/API.md. Money is a decimal "
    "string with at most 6 decimals, prices 2, multipliers 4; times are Unix milliseconds. Errors are "
    '`{"error": {"code": "<snake_case>", "message": "..."}}`. Authenticated calls send '
    "`Authorization: Bearer <token>` from `POST /api/v1/auth/login`."
)


@bp.get("/api/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3 document of this API (generated from the routes and marshmallow schemas).
    ---
    get:
      tags: [meta]
      summary: This API's OpenAPI 3 document
      responses:
        200:
          description: OpenAPI 3.0 JSON
    """
    spec = current_app.extensions.get(EXT_KEY)
    if spec is None:
        spec = current_app.extensions[EXT_KEY] = build_spec(current_app)
    return jsonify(spec)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)


def build_spec(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title=TITLE,
        version=API_VERSION,
        openapi_version=OPENAPI_VERSION,
        plugins=[MarshmallowPlugin()],
        info={"description": DESCRIPTION},
    )
    spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "description": "Token from /api/v1/auth/login"}
    )
    spec.components.schema("Error", schema=ErrorResponseSchema)
    spec.components.parameter(
        "Cursor",
        "query",
        {
            "name": "cursor",
            "schema": {"type": "string", "maxLength": 200},
            "description": "next_cursor of a page",
        },
    )
    spec.components.parameter(
        "Limit", "query", {"name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 200}}
    )
    # Deposits and withdrawals (SPEC §7): the key, and the two answers a movement can get.
    spec.components.parameter(
        "IdempotencyKey",
        "header",
        {
            "name": "Idempotency-Key",
            "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[!-~]{1,64}$"},
            "description": "Same key + same body returns the first result and moves money once; same key "
            "+ another body (or the other endpoint) is 409 idempotency_key_conflict. Keys are per user.",
        },
    )
    spec.components.response(
        "MovementCommitted",
        {
            "description": "Committed",
            "content": {"application/json": {"schema": "app.ledger.schemas.MovementSchema"}},
        },
    )
    spec.components.response(
        "MovementPending",
        {
            "description": "Not committed in time; GET /api/v1/ledger shows ref_id once it is",
            "content": {"application/json": {"schema": "app.ledger.schemas.MovementPendingSchema"}},
        },
    )
    error_ref = {"$ref": "#/components/schemas/Error"}
    for name, description in ERROR_RESPONSES.items():
        headers = {}
        if name in ("RateLimited", "Unavailable"):
            headers = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}
        response: dict[str, Any] = {
            "description": description,
            "content": {"application/json": {"schema": error_ref}},
        }
        if headers:
            response["headers"] = headers
        spec.components.response(name, response)

    by_path: dict[str, dict[str, Any]] = {}
    params_by_path: dict[str, list[dict[str, Any]]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        view = app.view_functions.get(rule.endpoint)
        if view is None:
            continue
        _import_schemas_of(view)
        path, params = _openapi_path(rule.rule)
        documented = _docstring_operations(view, rule.endpoint)
        summary = _first_line(view.__doc__) or rule.endpoint
        for method in sorted(m.lower() for m in (rule.methods or ())):
            if method not in _METHODS:
                continue
            op = dict(documented.get(method) or {})
            if not op:
                op = {"summary": summary, "responses": {"200": {"description": "OK"}}}
            op.setdefault("operationId", f"{rule.endpoint}.{method}")
            auth = getattr(view, AUTH_ATTR, None)
            if auth and "security" not in op:
                op["security"] = [{"bearerAuth": []}]
            _add_common_errors(op, path, auth, has_params=bool(params) or "parameters" in op)
            by_path.setdefault(path, {})[method] = op
        params_by_path[path] = params
    for path, operations in by_path.items():
        spec.path(path=path, operations=operations, parameters=params_by_path[path] or None)
    return spec.to_dict()


def _import_schemas_of(view: Any) -> None:
    """Import the `schemas` module beside a view's module: docstrings name schemas by dotted path, and
    marshmallow can only resolve a class whose module has been imported (else a dangling $ref)."""
    package = (getattr(view, "__module__", "") or "").rpartition(".")[0]
    if package:
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(f"{package}.schemas")


def _add_common_errors(op: dict[str, Any], path: str, auth: str | None, *, has_params: bool) -> None:
    """The statuses any operation of this kind can answer, so that none goes undocumented: a body can
    be malformed (400), too large (413) or not JSON (415); a session can be missing (401), rate
    limited (429) or not an admin's (403); anything under /api/ needs Redis or SQLite (503)."""
    responses = op.setdefault("responses", {})
    wanted: list[tuple[int, str]] = []
    if "requestBody" in op:
        wanted += [(400, "BadRequest"), (413, "PayloadTooLarge"), (415, "UnsupportedMediaType")]
    if has_params:
        wanted.append((400, "BadRequest"))
    if auth:
        wanted += [(401, "Unauthorized"), (429, "RateLimited")]
    if auth == "admin":
        wanted.append((403, "Forbidden"))
    if path.startswith("/api/") and path != "/api/openapi.json":
        wanted.append((503, "Unavailable"))
    for status, name in wanted:
        if status not in responses and str(status) not in responses:
            responses[status] = name


def _openapi_path(rule: str) -> tuple[str, list[dict[str, Any]]]:
    params: list[dict[str, Any]] = []

    def repl(m: re.Match[str]) -> str:
        params.append(
            {
                "name": m.group("name"),
                "in": "path",
                "required": True,
                "schema": {"type": _CONVERTER_TYPES.get(m.group("conv") or "", "string")},
            }
        )
        return "{" + m.group("name") + "}"

    return _RULE_ARG.sub(repl, rule), params


def _docstring_operations(view: Any, endpoint: str) -> dict[str, Any]:
    doc = view.__doc__ or ""
    if "---" not in doc:
        return {}
    try:
        return load_operations_from_docstring(doc) or {}
    except Exception as exc:  # noqa: BLE001 - a bad docstring must not take the whole document down
        log.warning("openapi: ignoring the YAML docstring of %s: %s", endpoint, exc)
        return {}


def _first_line(doc: str | None) -> str:
    for line in (doc or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""
