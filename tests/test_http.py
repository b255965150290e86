"""Errors are JSON with stable codes; /healthz, /readyz and /metrics behave."""

import pytest

from app.errors import Unprocessable
from tests.support.waiting import wait_until


def test_unknown_route_is_json_404(client):
    resp = client.get("/nope")
    assert resp.status_code == 404
    assert resp.get_json() == {"error": {"code": "not_found", "message": resp.get_json()["error"]["message"]}}


@pytest.mark.parametrize("path", ["/api/v1//grid", "//api/v1/grid", "/api//v1/admin/whoami"])
def test_doubled_slashes_are_json_404_never_a_redirect_to_the_host_header(client, path):
    """werkzeug merged doubled slashes with a 308 whose Location it built from the Host header: behind
    nginx (`Host $host`) that was plain http, without nginx's port, or any host a client named, and
    the body werkzeug's HTML. A path the API does not serve is its JSON 404."""
    resp = client.get(path, headers={"Host": "evil.example"})
    assert resp.status_code == 404, resp.headers.get("Location")
    assert "Location" not in resp.headers
    assert resp.get_json()["error"]["code"] == "not_found"


def test_wrong_method_is_json_405_with_allow(client):
    resp = client.post("/healthz")
    assert resp.status_code == 405
    assert resp.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in resp.headers["Allow"]


@pytest.fixture
def echo(app):
    @app.post("/_echo")
    def echo_view():
        from flask import request

        return {"got": request.get_json()}

    return app.test_client()


def test_oversized_body_is_413(echo):
    resp = echo.post("/_echo", data=b"[" + b"1," * 50_000 + b"1]", content_type="application/json")
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b"NaN", b"{'a': 1}"])
def test_malformed_json_is_400_invalid_json(echo, body):
    resp = echo.post("/_echo", data=body, content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "invalid_json"


def test_json_body_with_wrong_content_type_is_415(echo):
    resp = echo.post("/_echo", data=b"{}", content_type="text/plain")
    assert resp.status_code == 415
    assert resp.get_json()["error"]["code"] == "unsupported_media_type"


def test_unexpected_exception_is_500_without_internals(app, client):
    @app.get("/_boom")
    def boom():
        raise RuntimeError("secret internals /etc/passwd")

    resp = client.get("/_boom")
    assert resp.status_code == 500
    body = resp.get_data(as_text=True)
    assert "secret" not in body and "Traceback" not in body
    assert resp.get_json()["error"]["code"] == "internal_error"


def test_api_error_carries_code_and_status(app, client):
    @app.get("/_rule")
    def rule():
        raise Unprocessable("Stake above the maximum", code="stake_too_large")

    resp = client.get("/_rule")
    assert resp.status_code == 422
    assert resp.get_json() == {"error": {"code": "stake_too_large", "message": "Stake above the maximum"}}


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


def test_readyz_is_503_while_workers_are_not_running(client):
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.headers["Retry-After"]
    checks = resp.get_json()["checks"]
    assert checks["sqlite"]["ok"] and checks["redis"]["ok"]
    assert not checks["writer"]["ok"] and not checks["feed"]["ok"]


def _wait_ready(client, timeout=10):
    def ready():
        resp = client.get("/readyz")
        return resp if resp.status_code == 200 else None

    return wait_until(ready, timeout=timeout, interval=0.05, what="/readyz 200")


def test_readyz_is_200_with_workers_and_a_fresh_feed(running_app):
    client = running_app.test_client()
    body = _wait_ready(client).get_json()
    assert body["status"] == "ready"
    assert body["checks"]["feed"]["state"] == "healthy"
    assert body["checks"]["writer"]["running"] is True


def test_metrics_count_requests_by_route_and_status(running_app):
    client = running_app.test_client()
    client.get("/healthz")
    client.get("/nope")
    _wait_ready(client)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'tap_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "tap_write_queue_depth" in text and "tap_feed_age_seconds" in text and "tap_feed_state 0.0" in text


def test_prices_backfill_returns_recent_ticks(running_app):
    client = running_app.test_client()
    _wait_ready(client)

    def two_ticks():
        body = client.get("/api/v1/prices").get_json()
        return body if len(body["prices"]) >= 2 else None

    body = wait_until(two_ticks, what="two ticks in the history")
    first = body["prices"][0]
    assert (
        isinstance(first["price"], str)
        and first["price"].count(".") == 1
        and len(first["price"].split(".")[1]) == 2
    )
    ts = [p["ts"] for p in body["prices"]]
    assert ts == sorted(ts)
    later = client.get(f"/api/v1/prices?since={ts[-1]}").get_json()["prices"]
    assert all(p["ts"] >= ts[-1] for p in later)


@pytest.mark.parametrize("since", ["abc", "-5", "1.5", "9" * 20, "²", "①", "٣", "9" * 5000])
def test_prices_since_must_be_milliseconds(client, since):
    resp = client.get("/api/v1/prices", query_string={"since": since})
    assert resp.status_code == 400
    assert resp.get_json()["error"]["code"] == "invalid_since"


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("9" * 18, int("9" * 18)),
        ("", None),
        ("9" * 19, None),
        ("-1", None),
        ("+1", None),
        (" 1", None),
        ("1.0", None),
        ("²", None),
        ("①", None),
        ("٣", None),
        ("１", None),
    ],
)
def test_whole_numbers_in_query_parameters_are_ascii_digits(raw, value):
    """str.isdigit accepts "²" (int() refuses it: a 500) and "٣" (int() reads 3); these do not."""
    from app.http.params import whole_number

    assert whole_number(raw) == value
