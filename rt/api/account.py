"""/v1/account: the account, and the calling key's usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.auth.usage import WINDOW_HOURS


class KeyUsage(BaseModel):
    key_id: str
    window_hours: int = Field(description="Counts cover the current and the previous 23 clock hours (UTC).")
    since: datetime
    requests: int = Field(description="Authenticated requests, including rate-limited ones.")
    auth_failures: int = Field(description="Requests with this key that failed authentication or authorization.")
    rate_limited: int = Field(description="Requests answered 429 RATE_LIMITED.")


async def usage(call: Call) -> dict[str, Any]:
    key_id = call.caller.key_id
    totals = await call.runtime.usage.totals(key_id)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return {
        "key_id": key_id,
        "window_hours": WINDOW_HOURS,
        "since": hour - timedelta(hours=WINDOW_HOURS - 1),
        "requests": totals.requests,
        "auth_failures": totals.auth_failures,
        "rate_limited": totals.rate_limited,
    }


OPERATIONS = [
    Operation(
        "GET",
        "/v1/account/usage",
        usage,
        "The calling key's usage in the last 24 hours",
        "account",
        scopes.ACCOUNT_READ,
        response=KeyUsage,
        errors=(
            "API_KEY_MISSING",
            "API_KEY_INVALID",
            "API_KEY_REVOKED",
            "INSUFFICIENT_SCOPE",
            "IP_NOT_ALLOWED",
            "RATE_LIMITED",
            "IP_LOCKED_OUT",
        ),
    ),
]
