"""GET /v1/api/account and /v1/api/account/history: the ledger's summary and the closed positions, in MT terms."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from rt.api import _errors
from rt.api.compat.tradyn._dialect import TAG, TRADYN, connected, ok, rt_symbol
from rt.api.compat.tradyn.positions import opening
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.engine import ledger
from rt.records.trading import Position

HUNDRED = Decimal(100)


async def tradyn_account(call: Call) -> dict[str, Any]:
    engine = call.runtime.engine
    account_id = call.caller.account_id
    summary = ledger.summary(await engine.book(account_id), engine.config.leverage)
    stored = await call.runtime.store.get_account(account_id)
    margin: Decimal = summary["margin_used"]
    equity: Decimal = summary["equity"]
    reachable = connected(call)
    return ok(
        {
            "login": account_id,
            "account_id": account_id,
            "name": stored.name if stored is not None else account_id,
            "server": call.runtime.settings.tradyn_exchange,
            "connected": reachable,
            "currency": summary["currency"],
            "balance": summary["balance"],
            "equity": equity,
            "margin": margin,
            "free_margin": summary["free_margin"],
            # MetaTrader's margin level: equity / margin in percent, 0 while no margin is used.
            "margin_level": (equity / margin * HUNDRED).quantize(Decimal("0.01")) if margin > 0 else Decimal(0),
            "profit": summary["unrealized_pnl"],
            "realized_profit": summary["realized_pnl"],
            "daily_profit": summary["daily_pnl"],
            "leverage": engine.config.leverage,
            "positions": summary["open_positions"],
            "orders": summary["open_orders"],
            "trade_allowed": reachable and summary["trading_state"] == "active",
            "trading_state": summary["trading_state"],
        }
    )


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str | None = Field(None, min_length=1, max_length=40, description="EURUSD or EUR/USD.")
    limit: int = Field(100, ge=1, le=500, description="Deals per page (max 500).")
    page: int = Field(1, ge=1, le=1_000_000, description="1-based page number, newest deals first.")


def deal(position: Position) -> dict[str, Any]:
    """A closed position as a MetaTrader deal pair: its opening and its closing, with the P&L net of fees."""
    return {
        **opening(position),
        "close_price": position.current_price,
        "close_time": position.closed_at,
        "profit": position.realized_pnl,
        "swap": Decimal(0),
        "comment": position.close_reason or "",
    }


async def tradyn_history(call: Call) -> dict[str, Any]:
    q: HistoryQuery = call.query
    symbol = await rt_symbol(call, q.symbol) if q.symbol is not None else None
    found, total = await call.runtime.store.list_positions(
        call.caller.account_id, ("closed",), None, symbol, q.limit, (q.page - 1) * q.limit
    )
    return ok({"deals": [deal(p) for p in found], "total": total, "page": q.page, "limit": q.limit})


OPERATIONS = [
    Operation(
        "GET",
        "/v1/api/account",
        tradyn_account,
        "Tradyn: account balance, equity, margin and P&L",
        TAG,
        scopes.ACCOUNT_READ,
        errors=_errors.AUTH,
        dialect=TRADYN,
    ),
    Operation(
        "GET",
        "/v1/api/account/history",
        tradyn_history,
        "Tradyn: closed deals, the latest opened first",
        TAG,
        scopes.POSITIONS_READ,
        query=HistoryQuery,
        errors=(*_errors.AUTH, "BAD_REQUEST"),
        description="The account's closed positions (what GET /v1/positions?status=closed lists), in lots.",
        dialect=TRADYN,
    ),
]
