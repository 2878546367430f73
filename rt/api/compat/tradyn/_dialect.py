"""The Tradyn dialect: `Authorization: Bearer` keys, `{"success", "data"}` envelopes and the seed's error statuses.

Errors keep rt's code beside the seed's message, so a client can tell a revoked key from an unknown one while
reading the same `error` string the Tradyn terminal gave.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from rt import errors, payload
from rt.api.compat.tradyn import symbols
from rt.api.models import FieldError
from rt.api.responses import JSON
from rt.api.routing import Call, Dialect, Handler, Operation
from rt.engine import risk
from rt.errors import BadRequest, NotFound, RtError
from rt.exchanges import Exchange

TAG = "compat: Tradyn"
PREFIX = "/v1/api"

MISSING_KEY = "Missing authorization header"
INVALID_KEY = "Invalid API key"
LOCKED = "Trading is locked"
DISCONNECTED = "Not connected to trading server"
INSUFFICIENT_MARGIN = "Insufficient margin"
INTERNAL = "Internal server error"

# What the pipeline says of any invalid body or query: the first field's own message says more.
_GENERIC = frozenset({"the body has invalid fields", "the query has invalid parameters"})

# Cerberus checks a Tradyn client knows as a margin call: the exposure limit is a leverage limit by another name.
_MARGIN_CHECKS = frozenset({risk.MARGIN, risk.EXPOSURE})


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def status_of(code: str, status: int) -> int:
    """The seed's status table: 400, 401, 403, 404, 429, 500, 503; every other rt status folds into one of them."""
    if code == errors.API_KEY_MISSING:
        return 401
    if code in (errors.API_KEY_INVALID, errors.API_KEY_REVOKED, errors.TRADING_LOCKED):
        return 403
    if code == "EXCHANGE_UNAVAILABLE":
        return 503
    if status in (401, 403):  # a bad signature, a missing scope, an address not allowed
        return 403
    if status in (404, 429, 503):
        return status
    if 400 <= status < 500:  # 405, 409, 413, 415, 422 (Cerberus): the request cannot be done as sent
        return 400
    return 500


def message_of(exc: RtError) -> str:
    code = exc.code
    if code == errors.API_KEY_MISSING:
        return MISSING_KEY
    if code in (errors.API_KEY_INVALID, errors.API_KEY_REVOKED):
        return INVALID_KEY
    if code == errors.TRADING_LOCKED:
        return LOCKED
    if code == "EXCHANGE_UNAVAILABLE":
        return DISCONNECTED
    if code == errors.VALIDATION_FAILED:
        return _rejection(exc)
    if status_of(code, exc.status) == 500:
        return INTERNAL
    fields = exc.extra.get("errors")
    if code == errors.BAD_REQUEST and exc.detail in _GENERIC and isinstance(fields, list) and fields:
        first = fields[0]
        return f"Invalid parameter {first.get('field')}: {first.get('message')}"
    return exc.detail


def _rejection(exc: RtError) -> str:
    details = exc.extra.get("details")
    if not isinstance(details, dict):  # the venue refused it, not Cerberus
        return exc.detail
    if details.get("check") in _MARGIN_CHECKS:
        return INSUFFICIENT_MARGIN
    return errors.sentence(str(details.get("reason") or exc.detail))


def error_response(exc: RtError) -> Response:
    body: dict[str, Any] = {"success": False, "error": message_of(exc), "code": exc.code}
    if exc.code == errors.VALIDATION_FAILED and "details" in exc.extra:
        body["details"] = exc.extra["details"]
    elif "errors" in exc.extra:
        body["errors"] = exc.extra["errors"]
    return JSON(body, status_code=status_of(exc.code, exc.status), headers=exc.headers)


class TradynError(BaseModel):
    """A Tradyn error: the seed's `success` and `error`, and rt's stable `code`."""

    success: Literal[False]
    error: str = Field(description="What went wrong, in the Tradyn terminal's words where it has them.")
    code: str = Field(description="rt's error code (API_KEY_MISSING, VALIDATION_FAILED, ...).")
    errors: list[FieldError] | None = Field(None, description="Field errors of a bad request.")
    details: dict[str, Any] | None = Field(None, description="What Cerberus checked, when it refused.")


class Tradyn(Dialect):
    """Keys in `Authorization: Bearer` (the seed), a bare `Authorization: <key>` (MetaTrader bridges send it so) or
    `X-API-Key`; JSON bodies whatever their Content-Type says, since MQL's WebRequest often sends none."""

    error_model = TradynError
    error_media = "application/json"

    def status_of(self, code: str, status: int) -> int:
        return status_of(code, status)

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

    def example(self, exc: RtError) -> dict[str, Any]:
        body: dict[str, Any] = payload.loads(bytes(error_response(exc).body))
        return body


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
        errors=("NOT_FOUND", "BAD_REQUEST"),
        dialect=TRADYN,
        documented=False,
    )
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
]


def venue(call: Call) -> Exchange:
    """The venue Tradyn trades on (RT_TRADYN_EXCHANGE), as the calling key may use it."""
    exchange = call.runtime.settings.tradyn_exchange
    return call.runtime.engine.venues.get(call.caller.account_id, exchange, test_key=call.caller.test)


async def rt_symbol(call: Call, name: str, *, missing: type[RtError] = BadRequest) -> str:
    """The rt symbol on the Tradyn venue that `name` (EURUSD, EUR/USD) names."""
    markets = await venue(call).markets()
    return symbols.to_rt(name, [m.symbol for m in markets], missing=missing)
