"""Kraken-style WebSocket token: `POST /0/private/GetWebSocketsToken` issues the token `POST /v1/ws/token` does.

Kraken clients send the key in `API-Key`, a form-encoded body holding a `nonce`, and an `API-Sign` header; rt reads
the key, accepts and ignores the nonce and API-Sign (rt's body signing is X-RT-Signature), and answers in Kraken's
`{"error": [...], "result": {...}}` envelope with Kraken's error strings, under rt's real statuses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from rt import errors, payload
from rt.api import _errors
from rt.api.compat._unknown import catch_all
from rt.api.responses import JSON
from rt.api.routing import Call, Dialect, Operation
from rt.api.ws import issue_token
from rt.auth import scopes
from rt.errors import BadRequest, RtError

INVALID_KEY = "EAPI:Invalid key"
INVALID_SIGNATURE = "EAPI:Invalid signature"
PERMISSION_DENIED = "EGeneral:Permission denied"
RATE_LIMIT = "EAPI:Rate limit exceeded"
INVALID_ARGUMENTS = "EGeneral:Invalid arguments"
UNAVAILABLE = "EService:Unavailable"
INTERNAL = "EGeneral:Internal error"
UNKNOWN_METHOD = "EGeneral:Unknown method"

_MESSAGES: dict[str, str] = {
    errors.API_KEY_MISSING: INVALID_KEY,
    errors.API_KEY_INVALID: INVALID_KEY,
    errors.API_KEY_REVOKED: INVALID_KEY,
    errors.REQUEST_SIGNATURE_INVALID: INVALID_SIGNATURE,
    errors.INSUFFICIENT_SCOPE: PERMISSION_DENIED,
    errors.IP_NOT_ALLOWED: PERMISSION_DENIED,
    errors.RATE_LIMITED: RATE_LIMIT,
    errors.IP_LOCKED_OUT: RATE_LIMIT,
    errors.BAD_REQUEST: INVALID_ARGUMENTS,
    errors.PAYLOAD_TOO_LARGE: INVALID_ARGUMENTS,
    errors.UNSUPPORTED_MEDIA_TYPE: INVALID_ARGUMENTS,
    errors.SERVICE_UNAVAILABLE: UNAVAILABLE,
    errors.EXCHANGE_UNAVAILABLE: UNAVAILABLE,
    errors.NOT_FOUND: UNKNOWN_METHOD,
    errors.METHOD_NOT_ALLOWED: UNKNOWN_METHOD,
}

FORM = "application/x-www-form-urlencoded"
MAX_FIELDS = 50


def kraken_error(exc: RtError) -> str:
    """Kraken's error string for an rt error."""
    known = _MESSAGES.get(exc.code)
    if known is not None:
        return known
    if exc.status == 503:
        return UNAVAILABLE
    return INTERNAL if exc.status >= 500 else INVALID_ARGUMENTS


class KrakenError(BaseModel):
    error: list[str] = Field(description='Kraken\'s error strings, e.g. ["EAPI:Invalid key"].')


class KrakenDialect(Dialect):
    """The key in API-Key (or X-API-Key / Bearer); a form, JSON or empty body; errors as Kraken's `error` array."""

    error_model = KrakenError
    error_media = "application/json"
    key_schemes = ("KrakenApiKey", "ApiKey", "Bearer")

    def api_key(self, request: Request) -> str | None:
        key = request.headers.get("api-key")
        if key and key.strip():
            return key.strip()
        return super().api_key(request)

    def parse(self, op: Operation, raw: bytes, content_type: str | None) -> Any:
        """The body's fields as a dict (none for an empty body). Kraken's `nonce` orders a key's requests on
        Kraken; rt's requests need no order, so it is read and ignored, as is any other field."""
        if not raw.strip():
            return None
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            data = payload.loads(raw)
            if not isinstance(data, dict):
                raise BadRequest("the body must be a JSON object", errors=[{"field": "body", "message": "no object"}])
            return data
        if media not in (FORM, ""):
            raise BadRequest(f"send the body as {FORM} or application/json, not {media}")
        try:
            text = raw.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise BadRequest(
                "the body is not a form", errors=[{"field": "body", "message": "not application/x-www-form-urlencoded"}]
            ) from None
        return dict(pairs)

    def error(self, exc: RtError, request_id: str | None) -> Response:
        return JSON({"error": [kraken_error(exc)]}, status_code=exc.status, headers=exc.headers)

    def example(self, exc: RtError) -> dict[str, Any]:
        return {"error": [kraken_error(exc)]}


KRAKEN = KrakenDialect()


class _UnknownMethod(KrakenDialect):
    """A method rt does not have is EGeneral:Unknown method whatever its body holds: the body is not read."""

    def parse(self, op: Operation, raw: bytes, content_type: str | None) -> Any:
        return None


class TokenResult(BaseModel):
    token: str
    expires: int = Field(description="Seconds the token stays valid (900). It works once.")


class KrakenToken(BaseModel):
    error: list[str]
    result: TokenResult


async def get_websockets_token(call: Call) -> dict[str, Any]:
    return {"error": [], "result": await issue_token(call)}


ROUTES: list[Operation] = [
    Operation(
        "POST",
        "/0/private/GetWebSocketsToken",
        get_websockets_token,
        "Kraken: a WebSocket token (single use, 15 minutes)",
        "compat: Kraken",
        scopes.WS_CONNECT,
        response=KrakenToken,
        errors=(*_errors.WRITE,),
        dialect=KRAKEN,
        description="The token of POST /v1/ws/token in Kraken's envelope. The key goes in `API-Key` (or X-API-Key, "
        "Bearer); a form-encoded `nonce` and an `API-Sign` header are accepted and ignored. Errors are "
        '`{"error": ["EAPI:Invalid key"]}` and Kraken\'s other strings, not problem+json, under rt\'s statuses.',
    ),
]

# After the routes: any other path under /0/ is Kraken's EGeneral:Unknown method (404; 405 for another method).
OPERATIONS: list[Operation] = [*ROUTES, *catch_all("/0", "kraken", "compat: Kraken", _UnknownMethod(), ROUTES)]
