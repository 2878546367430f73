"""/v1/account: the account, and the calling key's usage."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from rt.api import _errors
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.auth.usage import WINDOW_HOURS
from rt.engine import ledger


class AccountOut(BaseModel):
    account_id: str
    currency: str
    balance: Decimal
    equity: Decimal = Field(description="balance + unrealized P&L")
    margin_used: Decimal = Field(description="open positions' entry notional / leverage")
    free_margin: Decimal = Field(description="equity - margin used")
    realized_pnl: Decimal = Field(description="since the account opened, net of fees")
    unrealized_pnl: Decimal
    daily_pnl: Decimal = Field(description="realized since 00:00 UTC + unrealized")
    open_positions: int
    open_orders: int
    trading_state: str = Field(description="active, reducing or locked")


async def account(call: Call) -> dict[str, Any]:
    engine = call.runtime.engine
    return ledger.summary(await engine.book(call.caller.account_id), engine.config.leverage)


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


class CallingKey(BaseModel):
    key_id: str
    account_id: str
    scopes: list[str]
    tier: str
    test: bool
    allow_ips: list[str]
    rate_limit: dict[str, int] = Field(description="`per_minute` and `burst` of the key's tier.")


async def calling_key(call: Call) -> dict[str, Any]:
    caller = call.caller
    tier = call.runtime.tiers[caller.tier]
    return {
        "key_id": caller.key_id,
        "account_id": caller.account_id,
        "scopes": sorted(caller.scopes),
        "tier": caller.tier,
        "test": caller.test,
        "allow_ips": list(caller.allow_ips),
        "rate_limit": {"per_minute": tier.per_minute, "burst": tier.burst},
    }


OPERATIONS = [
    Operation(
        "GET",
        "/v1/account",
        account,
        "Balance, equity, margin, P&L and trading state",
        "account",
        scopes.ACCOUNT_READ,
        response=AccountOut,
        errors=_errors.AUTH,
    ),
    Operation(
        "GET",
        "/v1/account/key",
        calling_key,
        "The calling key: account, scopes, tier and limits",
        "account",
        scopes.ACCOUNT_READ,
        response=CallingKey,
        errors=_errors.AUTH,
    ),
    Operation(
        "GET",
        "/v1/account/usage",
        usage,
        "The calling key's usage in the last 24 hours",
        "account",
        scopes.ACCOUNT_READ,
        response=KeyUsage,
        errors=_errors.AUTH,
    ),
]
