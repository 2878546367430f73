"""OpenAPI 3.1, built from the operation table and the pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue, models_json_schema
from pydantic_core import core_schema

from rt import __version__
from rt.api.models import Problem
from rt.api.routing import Operation
from rt.errors import RtError

STATUS_OF: dict[str, int] = {
    "API_KEY_MISSING": 401,
    "API_KEY_INVALID": 401,
    "API_KEY_REVOKED": 401,
    "ALERT_UNAUTHORIZED": 401,
    "REQUEST_SIGNATURE_INVALID": 401,
    "INSUFFICIENT_SCOPE": 403,
    "IP_NOT_ALLOWED": 403,
    "NOT_FOUND": 404,
    "KEY_LIMIT_REACHED": 409,
    "ALERT_HOOK_LIMIT_REACHED": 409,
    "IDEMPOTENCY_CONFLICT": 409,
    "ORDER_NOT_OPEN": 409,
    "POSITION_NOT_OPEN": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "UNSUPPORTED_MEDIA_TYPE": 415,
    "VALIDATION_FAILED": 422,
    "TRADING_LOCKED": 423,
    "RATE_LIMITED": 429,
    "IP_LOCKED_OUT": 429,
    "BAD_REQUEST": 400,
    "EXCHANGE_UNAVAILABLE": 503,
    "WEBHOOK_URL_NOT_ALLOWED": 400,
    "WEBHOOK_LIMIT_REACHED": 409,
    "WEBHOOK_DISABLED": 409,
}

# What an example of each code says, and what else its problem carries.
_EXAMPLES: dict[str, tuple[str, dict[str, Any]]] = {
    "API_KEY_MISSING": ("send the key in X-API-Key or Authorization: Bearer", {}),
    "API_KEY_INVALID": ("the API key is not valid", {}),
    "API_KEY_REVOKED": ("the API key was revoked", {}),
    "ALERT_UNAUTHORIZED": ("the alert's secret does not match", {}),
    "REQUEST_SIGNATURE_INVALID": ("X-RT-Signature does not match the body", {}),
    "INSUFFICIENT_SCOPE": ("this key lacks the scope positions:write", {}),
    "IP_NOT_ALLOWED": ("203.0.113.7 is not on this key's allow list", {}),
    "NOT_FOUND": ("no such resource", {}),
    "KEY_LIMIT_REACHED": ("this account has the most keys it may have", {}),
    "ALERT_HOOK_LIMIT_REACHED": ("this account has the most alert hooks it may have", {}),
    "IDEMPOTENCY_CONFLICT": ("this Idempotency-Key was used with another request", {}),
    "ORDER_NOT_OPEN": ("the order is no longer open", {}),
    "POSITION_NOT_OPEN": ("the position is no longer open", {}),
    "PAYLOAD_TOO_LARGE": ("request body is larger than 65536 bytes", {"limit": 65536}),
    "UNSUPPORTED_MEDIA_TYPE": ("send the body as application/json, not text/plain", {}),
    "VALIDATION_FAILED": (
        "Cerberus rejected the request: exceeds max position size (position_size)",
        {
            "details": {
                "check": "position_size",
                "reason": "exceeds max position size",
                "limit": 25000,
                "requested": 32500,
            }
        },
    ),
    "TRADING_LOCKED": ("trading is locked on this account", {}),
    "RATE_LIMITED": ("rate limit exceeded", {}),
    "IP_LOCKED_OUT": ("too many failed attempts from this address", {}),
    "BAD_REQUEST": (
        "the body has invalid fields",
        {"errors": [{"field": "quantity", "message": "Input should be greater than 0", "type": "greater_than"}]},
    ),
    "EXCHANGE_UNAVAILABLE": ("the exchange does not answer", {}),
    "WEBHOOK_URL_NOT_ALLOWED": ("the webhook URL points at a private address", {}),
    "WEBHOOK_LIMIT_REACHED": ("this account has the most webhooks it may have", {}),
    "WEBHOOK_DISABLED": ("the webhook is disabled", {}),
}

# Every tag an operation may carry, with what it groups (the document lists the ones used).
TAGS: dict[str, str] = {
    "system": "Health, readiness, server time and the API documents: no key needed.",
    "keys": "The account's API keys: create, list, rotate, revoke.",
    "account": "The account's balance and trading state, the calling key and its usage.",
    "markets": "Markets, tickers and candles of the configured venues.",
    "positions": "Open, list, amend and close positions; Cerberus checks every open first.",
    "orders": "Market, limit and stop orders: place (Cerberus first), list, cancel.",
    "risk": "The risk envelope Cerberus enforces, and Charon's kill switch.",
    "strategies": "Strategies the engine runs: create, start, stop, read their performance.",
    "alerts": "Alert hooks: alerts from TradingView and the like become orders.",
    "webhooks": "Outbound webhooks: signed event deliveries to your endpoints.",
    "websocket": "Single-use tokens for the WebSocket at /v1/ws.",
    "compat: Tradyn": "The Tradyn terminal's REST API under /v1/api, in its `{success, data}` envelope.",
    "compat: Alpha Draconis": "Alpha Draconis's B2B risk API, in its `{success, error}` envelope.",
    "compat: Kraken": "Kraken's WebSocket token endpoint, in its `{error, result}` envelope.",
}

_REF = "#/components/schemas/{model}"

# Starlette's path convertors (`{symbol:path}`) are not OpenAPI: the document names only the parameter.
_PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")

_RATE_HEADERS = {
    "X-RateLimit-Limit": {"description": "Requests per minute of the key's tier.", "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "Requests that may be sent now.", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "Unix time (s) when the budget is full again.", "schema": {"type": "integer"}},
}


class WireSchema(GenerateJsonSchema):
    """JSON Schema of what is on the wire: rt.wire sends a Decimal as a JSON number, so a response's decimal is a
    number; a request's decimal is a number or a numeric string, and the string's pattern says which."""

    def decimal_schema(self, schema: core_schema.DecimalSchema) -> JsonSchemaValue:
        if self.mode == "serialization":
            return {"type": "number"}
        accepted = super().decimal_schema(schema)
        for branch in accepted["anyOf"]:
            if branch.get("type") == "string":
                branch["description"] = "The same decimal as a string, within the same bounds."
        return accepted

    def get_decimal_pattern(self, schema: core_schema.DecimalSchema) -> str | None:
        return self.build_decimal_pattern(schema)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def build(operations: list[Operation]) -> dict[str, Any]:
    documented = [op for op in operations if op.documented]
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Problem, "serialization")]
    for op in documented:
        if op.dialect.error_model is not None:
            wanted.append((op.dialect.error_model, "serialization"))
        if op.body is not None:
            wanted.append((op.body, "validation"))
        if op.response is not None:
            wanted.append((op.response, "serialization"))
    _, defs = models_json_schema(list(dict.fromkeys(wanted)), ref_template=_REF, schema_generator=WireSchema)
    schemas: dict[str, Any] = defs.get("$defs", {})

    paths: dict[str, dict[str, Any]] = {}
    for op in documented:
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = _operation(op)
    used = dict.fromkeys(op.tag for op in documented)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "rt",
            "version": __version__,
            "description": "A self-hosted, WebSocket-first real-time trading gateway. Authenticate with "
            "`X-API-Key: <key>` or `Authorization: Bearer <key>`; each operation names the scope it needs.",
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": tag, "description": TAGS[tag]} for tag in used],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
                "KrakenApiKey": {"type": "apiKey", "in": "header", "name": "API-Key"},
            },
        },
    }


def openapi_path(path: str) -> str:
    return _PATH_PARAM.sub(r"{\1}", path)


def errors_of(op: Operation) -> tuple[str, ...]:
    """The codes an operation declares; a path parameter whose value routes nowhere (a `/` in an id, a line break in
    a symbol) is a 404 whatever the handler would say."""
    if _PATH_PARAM.search(op.path) and "NOT_FOUND" not in op.errors:
        return (*op.errors, "NOT_FOUND")
    return op.errors


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a value, never null: `x: str | None = None` documents `x` as a string."""
    branches = [b for b in prop.get("anyOf", []) if b != {"type": "null"}]
    if "anyOf" not in prop or len(branches) == len(prop["anyOf"]):
        return prop
    rest = {k: v for k, v in prop.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**branches[0], **rest} if len(branches) == 1 else {**rest, "anyOf": branches}


def _operation(op: Operation) -> dict[str, Any]:
    doc: dict[str, Any] = {"operationId": op.name, "summary": op.summary, "tags": [op.tag]}
    description = op.description
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(op.path)
    ]
    if op.query is not None:
        schema = op.query.model_json_schema(schema_generator=WireSchema)
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": _query_schema(prop),
                    "description": prop.get("description", ""),
                }
            )
    if parameters:
        doc["parameters"] = parameters
    if op.scope is not None:
        doc["security"] = [{scheme: []} for scheme in op.dialect.key_schemes]
        doc["x-required-scope"] = op.scope
        description = f"Scope: `{op.scope}`. {description}".strip()
    if description:
        doc["description"] = description
    if op.body is not None:
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    ok: dict[str, Any] = {"description": op.summary}
    if op.response is not None:
        ok["content"] = {"application/json": {"schema": _ref(op.response)}}
    if op.scope is not None:
        ok["headers"] = _RATE_HEADERS
    responses: dict[str, Any] = {str(op.status): ok}
    for status, description in op.also:
        responses[str(status)] = {**ok, "description": description}
    by_status: dict[int, list[str]] = {}
    for code in errors_of(op):
        by_status.setdefault(op.dialect.status_of(code, STATUS_OF[code]), []).append(code)
    for status, codes in sorted(by_status.items()):
        responses[str(status)] = {
            "description": " or ".join(f"`{c}`" for c in codes),
            "content": {
                op.dialect.error_media: {
                    "schema": _ref(op.dialect.error_model or Problem),
                    "examples": {c: {"value": example(op, c)} for c in codes},
                }
            },
        }
    doc["responses"] = responses
    return doc


def example(op: Operation, code: str) -> dict[str, Any]:
    """The body `op` answers for `code`, as its dialect writes it."""
    detail, extra = _EXAMPLES[code]
    return op.dialect.example(RtError(detail, code=code, status=STATUS_OF[code], **extra))
