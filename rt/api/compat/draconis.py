"""Alpha Draconis B2B risk API: `POST /api/v1/b2b/risk/kill` runs Charon as `POST /v1/risk/kill` does.

Same scope (risk:kill), target check (the caller's account or one of its sub-accounts), idempotency and engine call;
the answer adds the seed's `success` and `estimated_execution`, and errors take its
`{"success": false, "error": {"code", "message"}}` shape and codes (docs/compat.md maps them).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from rt import errors
from rt.api import _errors
from rt.api.compat._unknown import catch_all
from rt.api.responses import JSON
from rt.api.risk import KillReport, risk_kill
from rt.api.routing import Call, Dialect, Operation
from rt.auth import scopes
from rt.engine.requests import RiskKill
from rt.errors import RtError

# rt's code -> (the seed's code, the status the seed gives it). Codes not named here go by their status (_BY_STATUS).
_CODES: dict[str, tuple[str, int]] = {
    errors.API_KEY_MISSING: ("UNAUTHORIZED", 401),
    errors.API_KEY_INVALID: ("INVALID_KEY", 401),
    errors.API_KEY_REVOKED: ("KEY_REVOKED", 403),
    errors.REQUEST_SIGNATURE_INVALID: ("UNAUTHORIZED", 401),
    errors.INSUFFICIENT_SCOPE: ("FORBIDDEN", 403),
    errors.IP_NOT_ALLOWED: ("FORBIDDEN", 403),
    errors.RATE_LIMITED: ("RATE_LIMITED", 429),
    errors.IP_LOCKED_OUT: ("RATE_LIMITED", 429),
    errors.BAD_REQUEST: ("BAD_REQUEST", 400),
    errors.PAYLOAD_TOO_LARGE: ("BAD_REQUEST", 400),
    errors.UNSUPPORTED_MEDIA_TYPE: ("BAD_REQUEST", 400),
    errors.NOT_FOUND: ("NOT_FOUND", 404),
    errors.METHOD_NOT_ALLOWED: ("METHOD_NOT_ALLOWED", 405),
    errors.IDEMPOTENCY_CONFLICT: ("CONFLICT", 409),
    errors.TRADING_LOCKED: ("LOCKED", 423),
    errors.SERVICE_UNAVAILABLE: ("SERVICE_UNAVAILABLE", 503),
    errors.EXCHANGE_UNAVAILABLE: ("SERVICE_UNAVAILABLE", 503),
}
_BY_STATUS: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    422: "BAD_REQUEST",
    423: "LOCKED",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


def seed_code(code: str, status: int) -> tuple[str, int]:
    """The seed's (code, status) for an rt error code and its status; any other server failure is INTERNAL_ERROR."""
    known = _CODES.get(code)
    if known is not None:
        return known
    if status in _BY_STATUS:
        return _BY_STATUS[status], status
    return "INTERNAL_ERROR", 500


class DraconisErrorBody(BaseModel):
    code: str = Field(description="UNAUTHORIZED, INVALID_KEY, KEY_REVOKED, FORBIDDEN, RATE_LIMITED, BAD_REQUEST, ...")
    message: str
    rt_code: str = Field(description="rt's own code for the same error (SPEC §3).")
    details: list[dict[str, Any]] | None = Field(None, description="The field errors of a BAD_REQUEST.")


class DraconisError(BaseModel):
    success: bool
    error: DraconisErrorBody
    request_id: str | None = None


class DraconisDialect(Dialect):
    """X-API-Key (or Bearer) as rt reads it, JSON bodies as rt parses them; errors in the seed's envelope."""

    error_model = DraconisError
    error_media = "application/json"

    def status_of(self, code: str, status: int) -> int:
        return seed_code(code, status)[1]

    def error(self, exc: RtError, request_id: str | None) -> Response:
        code, status = seed_code(exc.code, exc.status)
        error: dict[str, Any] = {"code": code, "message": exc.detail, "rt_code": exc.code}
        if "errors" in exc.extra:
            error["details"] = exc.extra["errors"]
        body: dict[str, Any] = {"success": False, "error": error}
        if request_id is not None:
            body["request_id"] = request_id
        return JSON(body, status_code=status, headers=exc.headers)

    def example(self, exc: RtError) -> dict[str, Any]:
        code, _ = seed_code(exc.code, exc.status)
        error: dict[str, Any] = {"code": code, "message": exc.detail, "rt_code": exc.code}
        if "errors" in exc.extra:
            error["details"] = exc.extra["errors"]
        return {"success": False, "error": error}


DRACONIS = DraconisDialect()


class _NoEndpoint(DraconisDialect):
    """A path the API does not have is NOT_FOUND whatever its body holds: the body is not read."""

    def parse(self, op: Operation, raw: bytes, content_type: str | None) -> Any:
        return None


class B2BKill(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(
        min_length=1, max_length=64, description="An rt account id (`acct_…`): the caller's or a sub-account's."
    )
    action: Literal["CLOSE_ALL", "FLATTEN", "LOCK", "UNLOCK"]
    reason: str = Field("", max_length=500)


class B2BKillReport(KillReport):
    success: bool
    estimated_execution: str = Field(description="How long the command took, as `<n>ms`: it has run when rt answers.")
    reason: str


async def b2b_kill(call: Call) -> dict[str, Any]:
    body: B2BKill = call.body
    native = RiskKill(account_id=body.account_id, action=body.action, reason=body.reason)
    report = await risk_kill(dataclasses.replace(call, body=native))
    return {
        "success": True,
        **report,
        "estimated_execution": f"{max(1, math.ceil(report['latency_ms']))}ms",
    }


ROUTES: list[Operation] = [
    Operation(
        "POST",
        "/api/v1/b2b/risk/kill",
        b2b_kill,
        "Alpha Draconis: risk command on this account or a sub-account",
        "compat: Alpha Draconis",
        scopes.RISK_KILL,
        body=B2BKill,
        response=B2BKillReport,
        errors=(*_errors.WRITE, "NOT_FOUND", "IDEMPOTENCY_CONFLICT"),
        idempotent=True,
        dialect=DRACONIS,
        description="The Alpha Draconis B2B kill, over the same Charon as POST /v1/risk/kill. Errors are "
        '`{"success": false, "error": {"code", "message", "rt_code"}}` with the seed\'s codes (UNAUTHORIZED, '
        "INVALID_KEY, KEY_REVOKED 403, FORBIDDEN, RATE_LIMITED, BAD_REQUEST, NOT_FOUND), not problem+json.",
    ),
]

# After the routes: any other path under /api/v1/b2b/ is NOT_FOUND (404; METHOD_NOT_ALLOWED 405 for another method).
OPERATIONS: list[Operation] = [
    *ROUTES,
    *catch_all("/api/v1/b2b", "draconis", "compat: Alpha Draconis", _NoEndpoint(), ROUTES),
]
