"""/v1/strategies: deploy (grid, dca), list with performance, start, stop."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from rt.api import _errors
from rt.api.models import Page, Strict
from rt.api.responses import JSON
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.records.strategies import StrategyRecord


class StrategyCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    type: str = Field(description="`grid` or `dca`")
    exchange: str = "paper"
    symbol: str = Field(min_length=3, max_length=40)
    config: dict[str, Any] = Field(
        description="grid: {grid_levels, price_range: [low, high], quantity_per_level}; "
        "dca: {quantity, interval_s, max_orders?, max_price?}"
    )
    risk_limits: dict[str, Any] = Field(
        default_factory=dict, description="{max_position_size?, max_daily_loss?, stop_loss_pct?}"
    )


class Performance(BaseModel):
    realized_pnl: Decimal = Field(description="Of its closed and partly closed positions, net of fees")
    unrealized_pnl: Decimal = Field(description="Of its open positions at the current price")
    total_pnl: Decimal = Field(description="realized_pnl + unrealized_pnl")
    win_rate: float = Field(description="Share of its closed positions that made money")
    trades: int = Field(description="Its filled orders")


class StrategyOut(BaseModel):
    id: str
    name: str
    type: str
    status: str = Field(description="active, stopped, or halted (by the kill switch)")
    exchange: str
    symbol: str
    config: dict[str, Any]
    risk_limits: dict[str, Any]
    performance: Performance
    stop_reason: str | None
    created_at: datetime
    updated_at: datetime


class StrategyEnvelope(BaseModel):
    strategy: StrategyOut


class StrategyList(BaseModel):
    strategies: list[StrategyOut]
    total: int
    page: int


async def _json(call: Call, record: StrategyRecord) -> dict[str, Any]:
    return record.as_json(await call.runtime.runner.performance(record))


async def list_strategies(call: Call) -> dict[str, Any]:
    page: Page = call.query
    found, total = await call.runtime.store.list_strategies(
        call.caller.account_id, page.limit, (page.page - 1) * page.limit
    )
    runner = call.runtime.runner
    live = [await runner.get(call.caller.account_id, r.id) for r in found]
    return {"strategies": [await _json(call, r) for r in live], "total": total, "page": page.page}


async def get_strategy(call: Call) -> dict[str, Any]:
    record = await call.runtime.runner.get(call.caller.account_id, call.param("strategy_id"))
    return {"strategy": await _json(call, record)}


async def create_strategy(call: Call) -> JSON:
    body: StrategyCreate = call.body
    record = await call.runtime.runner.deploy(
        call.caller.account_id,
        body.name,
        body.type,
        body.exchange,
        body.symbol,
        body.config,
        body.risk_limits,
        test_key=call.caller.test,
    )
    return JSON({"strategy": await _json(call, record)}, status_code=201)


async def start_strategy(call: Call) -> dict[str, Any]:
    record = await call.runtime.runner.start_strategy(
        call.caller.account_id, call.param("strategy_id"), test_key=call.caller.test
    )
    return {"strategy": await _json(call, record)}


async def stop_strategy(call: Call) -> dict[str, Any]:
    record = await call.runtime.runner.stop_strategy(call.caller.account_id, call.param("strategy_id"))
    return {"strategy": await _json(call, record)}


_WRITE = (*_errors.WRITE, "TRADING_LOCKED", "IDEMPOTENCY_CONFLICT", "EXCHANGE_UNAVAILABLE")

OPERATIONS = [
    Operation(
        "GET",
        "/v1/strategies",
        list_strategies,
        "List strategies with performance",
        "strategies",
        scopes.STRATEGIES_READ,
        query=Page,
        response=StrategyList,
        errors=(*_errors.AUTH, "BAD_REQUEST"),
    ),
    Operation(
        "GET",
        "/v1/strategies/{strategy_id}",
        get_strategy,
        "Get a strategy",
        "strategies",
        scopes.STRATEGIES_READ,
        response=StrategyEnvelope,
        errors=(*_errors.AUTH, "NOT_FOUND"),
    ),
    Operation(
        "POST",
        "/v1/strategies",
        create_strategy,
        "Create and deploy a strategy",
        "strategies",
        scopes.STRATEGIES_WRITE,
        body=StrategyCreate,
        response=StrategyEnvelope,
        status=201,
        errors=_WRITE,
        idempotent=True,
        description="Deploys at once (status active). Its orders pass Cerberus and its own risk_limits.",
    ),
    Operation(
        "POST",
        "/v1/strategies/{strategy_id}/start",
        start_strategy,
        "Start a strategy",
        "strategies",
        scopes.STRATEGIES_WRITE,
        response=StrategyEnvelope,
        errors=(*_WRITE, "NOT_FOUND"),
        command="strategy.start",
        idempotent=True,
    ),
    Operation(
        "POST",
        "/v1/strategies/{strategy_id}/stop",
        stop_strategy,
        "Stop a strategy (cancels its orders)",
        "strategies",
        scopes.STRATEGIES_WRITE,
        response=StrategyEnvelope,
        errors=(*_WRITE, "NOT_FOUND"),
        command="strategy.stop",
        idempotent=True,
    ),
]
