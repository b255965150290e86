"""/api/openapi.json: valid OpenAPI 3, generated from the routes and marshmallow schemas, and
picking up routes that other modules add later."""

from __future__ import annotations

from flask import Blueprint, jsonify
from marshmallow import Schema, fields
from openapi_spec_validator import validate

from app.auth.decorators import login_required


class _LaterThingSchema(Schema):
    thing_id = fields.String(required=True)
    size = fields.Integer(required=True)


def test_spec_is_valid_and_documents_auth(client):
    resp = client.get("/api/openapi.json")
    assert resp.status_code == 200
    spec = resp.get_json()
    validate(spec)
    paths = spec["paths"]
    for path in (
        "/api/v1/auth/nonce",
        "/api/v1/auth/login",
        "/api/v1/auth/logout",
        "/api/v1/auth/session",
        "/api/v1/admin/whoami",
    ):
        assert path in paths, path
    login = paths["/api/v1/auth/login"]["post"]
    assert login["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/LoginRequest"
    }
    assert "security" not in login
    assert paths["/api/v1/auth/logout"]["post"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/v1/admin/whoami"]["get"]["security"] == [{"bearerAuth": []}]
    schemas = spec["components"]["schemas"]
    assert set(schemas["LoginRequest"]["required"]) == {"message", "signature"}
    assert schemas["LoginResponse"]["properties"]["session_key"].get("nullable") is True
    assert "Error" in schemas
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    # routes without a YAML block (e.g. the foundation's) are still listed
    assert "/healthz" in paths


def test_routes_added_later_are_picked_up(app):
    bp = Blueprint("later", __name__, url_prefix="/api/v1")

    @bp.get("/things/<thing_id>")
    @login_required
    def get_thing(thing_id):
        """Fetch one thing.
        ---
        get:
          tags: [things]
          responses:
            200:
              description: The thing
              content:
                application/json:
                  schema: tests.test_auth_openapi._LaterThingSchema
            404: NotFound
        """
        return jsonify(thing_id=thing_id, size=1)

    @bp.post("/things/<int:n>/poke")
    def poke(n):
        """Poke a thing (no YAML block)."""
        return jsonify(ok=True)

    app.register_blueprint(bp)
    spec = app.test_client().get("/api/openapi.json").get_json()
    validate(spec)
    op = spec["paths"]["/api/v1/things/{thing_id}"]["get"]
    assert op["security"] == [{"bearerAuth": []}]
    assert op["responses"]["404"] == {"$ref": "#/components/responses/NotFound"}
    assert spec["paths"]["/api/v1/things/{thing_id}"]["parameters"][0]["name"] == "thing_id"
    poked = spec["paths"]["/api/v1/things/{n}/poke"]
    assert poked["post"]["summary"] == "Poke a thing (no YAML block)."
    assert poked["parameters"][0]["schema"] == {"type": "integer"}
    assert "_LaterThing" in spec["components"]["schemas"]
