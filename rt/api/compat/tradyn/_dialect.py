"""The Tradyn dialect: `Authorization: Bearer` keys, `{"success", "data"}` envelopes and the seed's error statuses.

Errors keep rt's code beside the seed's message, so a client can tell a revoked key from an unknown one while
reading the same `error` string the Tradyn terminal gave.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rt import errors, payload
from rt.api.responses import JSON
from rt.api.routing import Call, Dialect, Handler, Operation
from rt.engine import risk
from rt.errors import BadRequest, NotFound, RtError

TAG = "tradyn"
PREFIX = "/v1/api"

MISSING_KEY = "Missing authorization header"
INVALID_KEY = "Invalid API key"
LOCKED = "Trading is locked"
DISCONNECTED = "Not connected to trading server"
INSUFFICIENT_MARGIN = "Insufficient margin"
INTERNAL = "Internal server error"

# Cerberus checks a Tradyn client knows as a margin call: the exposure limit is a leverage limit by another name.
_MARGIN_CHECKS = frozenset({risk.MARGIN, risk.EXPOSURE})


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def _status_and_message(exc: RtError) -> tuple[int, str]:
    """The seed's status table: 400, 401, 403, 404, 429, 500, 503; every other rt status folds into one of them."""
    code, status = exc.code, exc.status
    if code == errors.API_KEY_MISSING:
        return 401, MISSING_KEY
    if code in (errors.API_KEY_INVALID, errors.API_KEY_REVOKED):
        return 403, INVALID_KEY
    if code == errors.TRADING_LOCKED:
        return 403, LOCKED
    if code == "EXCHANGE_UNAVAILABLE":
        return 503, DISCONNECTED
    if code == errors.VALIDATION_FAILED:
        return 400, _rejection(exc)
    if status in (401, 403):  # a bad signature, a missing scope, an address not allowed
        return 403, exc.detail
    if status in (404, 429, 503):
        return status, exc.detail
    if 400 <= status < 500:  # 405, 409, 413, 415, 422: the request cannot be done as sent
        return 400, exc.detail
    return 500, INTERNAL


def _rejection(exc: RtError) -> str:
    details = exc.extra.get("details")
    if not isinstance(details, dict):  # the venue refused it, not Cerberus
        return exc.detail
    if details.get("check") in _MARGIN_CHECKS:
        return INSUFFICIENT_MARGIN
    reason = str(details.get("reason") or exc.detail)
    return reason[:1].upper() + reason[1:]


def error_response(exc: RtError) -> Response:
    status, message = _status_and_message(exc)
    body: dict[str, Any] = {"success": False, "error": message, "code": exc.code}
    if exc.code == errors.VALIDATION_FAILED and "details" in exc.extra:
        body["details"] = exc.extra["details"]
    elif "errors" in exc.extra:
        body["errors"] = exc.extra["errors"]
    return JSON(body, status_code=status, headers=exc.headers)


class Tradyn(Dialect):
    """Keys in `Authorization: Bearer` (the seed), a bare `Authorization: <key>` (MetaTrader bridges send it so) or
    `X-API-Key`; JSON bodies whatever their Content-Type says, since MQL's WebRequest often sends none."""

    def api_key(self, request: Request) -> str | None:
        key = super().api_key(request)
        if key is not None:
            return key
        value = request.headers.get("authorization", "").strip()
        return value if value and " " not in value else None

    def parse(self, op: Operation, raw: bytes, content_type: str | None) -> Any:
        if not raw.strip():
            if op.body is None:
                return None
            raise BadRequest("a JSON object body is required", errors=[{"field": "body", "message": "missing"}])
        data = payload.loads(raw)
        if op.body is not None and not isinstance(data, dict):
            raise BadRequest("the body must be a JSON object", errors=[{"field": "body", "message": "not an object"}])
        return data

    def error(self, exc: RtError, request_id: str | None) -> Response:
        return error_response(exc)


TRADYN = Tradyn()


def _not_found(method: str) -> Handler:
    async def handler(call: Call) -> Any:
        raise NotFound(f"no endpoint {call.request.method} {call.request.url.path}")

    handler.__name__ = f"tradyn_no_endpoint_{method.lower()}"
    return handler


# Registered after every Tradyn route, so a path the dialect does not have answers in its envelope, not problem+json.
CATCH_ALL: list[Operation] = [
    Operation(
        method,
        PREFIX + "/{rest:path}",
        _not_found(method),
        "Any other path under /v1/api: a 404 in the Tradyn envelope",
        TAG,
        errors=("NOT_FOUND",),
        dialect=TRADYN,
    )
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
]
