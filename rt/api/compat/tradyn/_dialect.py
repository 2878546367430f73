"""The Tradyn dialect: `Authorization: Bearer` keys, `{"success", "data"}` envelopes and the seed's error statuses.

Errors keep rt's code beside the seed's message, so a client can tell a revoked key from an unknown one while
reading the same `error` string the Tradyn terminal gave.
"""

from __future__ import annotations

import re
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
from rt.exchanges import Exchange, ExchangeUnavailable

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

# What the engine calls a field, in the names a Tradyn client sends it under: a refusal speaks the client's terms.
FIELDS = {"stop_loss": "sl", "take_profit": "tp", "entry_price": "price", "stop_price": "price", "quantity": "volume"}
_ENGINE_NAMES = re.compile(r"\b(?:([Aa]n?) )?(" + "|".join(FIELDS) + r")\b")
# An Authorization header holding a scheme and no key (`Bearer `, which the server may trim to `Bearer`).
_SCHEMES = frozenset({"bearer", "basic"})


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


def tradyn_terms(text: str) -> str:
    """`entry_price 1.080001 is not a multiple ...` -> `price 1.080001 is not a multiple ...`."""
    return _ENGINE_NAMES.sub(_tradyn_name, text)


def _tradyn_name(found: re.Match[str]) -> str:
    article, name = found.groups()
    renamed = FIELDS[name]
    if article is None:
        return renamed
    fitting = "an" if renamed == "sl" else "a"  # "an entry_price" -> "a price", "a stop_loss" -> "an sl"
    return f"{fitting.capitalize() if article[0] == 'A' else fitting} {renamed}"


def field_errors_of(exc: RtError) -> list[Any] | None:
    """A bad request's field errors with the engine's field names in Tradyn's."""
    fields = exc.extra.get("errors")
    if not isinstance(fields, list):
        return None
    renamed: list[Any] = []
    for error in fields:
        if isinstance(error, dict):
            error = dict(error)
            for key in ("field", "message"):
                if isinstance(error.get(key), str):
                    error[key] = tradyn_terms(error[key])
        renamed.append(error)
    return renamed


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
    fields = field_errors_of(exc)
    if fields is None:
        return exc.detail
    if code == errors.BAD_REQUEST and exc.detail in _GENERIC and fields and isinstance(fields[0], dict):
        first = fields[0]
        return f"Invalid parameter {first.get('field')}: {first.get('message')}"
    return tradyn_terms(exc.detail)


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
        body["errors"] = field_errors_of(exc) or exc.extra["errors"]
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
        if not value or " " in value or value.lower() in _SCHEMES:
            return None
        return value

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
    """The venue Tradyn trades on (RT_TRADYN_EXCHANGE), as the calling key may use it. An account without it has no
    trading server to reach: the terminal's 503, not a 400 naming an `exchange` field no Tradyn client sends."""
    exchange = call.runtime.settings.tradyn_exchange
    venues = call.runtime.engine.venues
    if venues.resolve(call.caller.account_id, exchange) is None:
        raise ExchangeUnavailable(f"exchange {exchange!r} is not configured for this account")
    return venues.get(call.caller.account_id, exchange, test_key=call.caller.test)


def connected(call: Call) -> bool:
    """Whether the calling key can trade on the Tradyn venue now."""
    try:
        venue(call)
    except RtError:
        return False
    return True


async def rt_symbol(call: Call, name: str, *, missing: type[RtError] = BadRequest) -> str:
    """The rt symbol on the Tradyn venue that `name` (EURUSD, EUR/USD) names."""
    markets = await venue(call).markets()
    return symbols.to_rt(name, [m.symbol for m in markets], missing=missing)
