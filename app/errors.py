"""JSON errors with stable codes (SPEC §6): `{"error": {"code": "...", "message": "..."}}`.

Every failure a client can see goes through here. Bad input is a 4xx with its own code; an
unexpected exception is logged with its traceback and answered with a bare 500 that says nothing
about the internals. Dependencies that are down answer 503 with `Retry-After`: fail closed. Any
`redis.RedisError` (a lost connection, a timeout, MISCONF, NOREPLICAS, ...) is such a 503
`dependency_unavailable`.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
    431: "headers_too_large",
    503: "unavailable",
}


class ApiError(Exception):
    """An error a client is meant to see. `code` is stable API; `message` is for humans."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        self.details = details


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Unprocessable(ApiError):
    status, code = 422, "unprocessable"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class Unavailable(ApiError):
    """503: a dependency is down or betting is suspended. Always carries Retry-After."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **kw: Any) -> None:
        super().__init__(message, retry_after=retry_after, **kw)


class Overloaded(Unavailable):
    """503 when a bounded queue is full: the request is refused up front, never left hanging."""

    code = "overloaded"


def dependency_unavailable() -> Unavailable:
    """503 for any Redis failure: without Redis nothing authenticated or signed can be checked."""
    return Unavailable(
        "A backing service is unavailable; try again shortly.", code="dependency_unavailable", retry_after=2
    )


def as_api_error(exc: Exception) -> ApiError:
    """What a client is told about `exc`, on any transport (the websocket's `bet:error` included).

    Every Redis failure counts as a dependency that is down, not only a dropped connection: a Redis
    out of disk answers writes with MISCONF, one without its replicas with NOREPLICAS (both plain
    ResponseErrors in redis-py). Anything unexpected is a logged 500 that says nothing of the internals.
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, redis.exceptions.RedisError):
        log.warning("redis unavailable: %s: %s", type(exc).__name__, exc)
        return dependency_unavailable()
    log.error("unhandled error", exc_info=exc)
    return ApiError("Internal error; it has been logged.", status=500, code="internal_error")


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after: int | None = None,
    details: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    resp = jsonify(error=body)
    resp.status_code = status
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(
            exc.status, exc.code, exc.message, retry_after=exc.retry_after, details=exc.details
        )

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, "http_error")
        message = exc.description or exc.name
        resp = error_response(status, code, message)
        allowed = getattr(exc, "valid_methods", None)
        if allowed:
            resp.headers["Allow"] = ", ".join(allowed)
        return resp

    @app.errorhandler(redis.exceptions.RedisError)
    def _redis_down(exc: Exception) -> Response:
        return _api_error(as_api_error(exc))  # fail closed: 503 dependency_unavailable

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "Internal error; it has been logged.")
