"""/v1/orders: market, limit and stop orders (Cerberus first); list, get, cancel."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from rt.api import _errors
from rt.api.models import Page
from rt.api.responses import JSON
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.engine import trading
from rt.engine.requests import OrderRequest
from rt.errors import NotFound


class OrderQuery(Page):
    exchange: str | None = None
    symbol: str | None = None
    status: Literal["open", "filled", "canceled", "rejected", "all"] = "all"


class OrderOut(BaseModel):
    id: str
    client_order_id: str | None
    exchange: str
    symbol: str
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop"]
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    stop_loss: Decimal | None
    take_profit: Decimal | None
    status: Literal["open", "filled", "canceled", "rejected"]
    filled_quantity: Decimal
    average_price: Decimal | None
    fee: Decimal
    position_id: str | None
    strategy_id: str | None
    reject_reason: str | None
    simulated: bool = Field(description="Placed on a simulated venue (paper, an RT_PAPER_VENUES alias, a sandbox).")
    created_at: datetime
    updated_at: datetime


class OrderEnvelope(BaseModel):
    order: OrderOut


class OrderList(BaseModel):
    orders: list[OrderOut]
    total: int
    page: int


async def list_orders(call: Call) -> dict[str, Any]:
    q: OrderQuery = call.query
    status = None if q.status == "all" else (q.status,)
    found, total = await call.runtime.store.list_orders(
        call.caller.account_id, status, q.exchange, q.symbol, q.limit, (q.page - 1) * q.limit
    )
    return {"orders": [o.as_json() for o in found], "total": total, "page": q.page}


async def get_order(call: Call) -> dict[str, Any]:
    found = await call.runtime.store.get_order(call.caller.account_id, call.param("order_id"))
    if found is None:
        raise NotFound(f"no order {call.param('order_id')}")
    return {"order": found.as_json()}


async def place_order(call: Call) -> JSON:
    order = await trading.place_order(call.runtime.engine, call.caller.account_id, call.body, test_key=call.caller.test)
    return JSON({"order": order.as_json()}, status_code=201)


async def cancel_order(call: Call) -> dict[str, Any]:
    order = await trading.cancel_order(call.runtime.engine, call.caller.account_id, call.param("order_id"))
    return {"order": order.as_json()}


OPERATIONS = [
    Operation(
        "GET",
        "/v1/orders",
        list_orders,
        "List orders",
        "orders",
        scopes.ORDERS_READ,
        query=OrderQuery,
        response=OrderList,
        errors=(*_errors.AUTH, "BAD_REQUEST"),
    ),
    Operation(
        "GET",
        "/v1/orders/{order_id}",
        get_order,
        "Get an order",
        "orders",
        scopes.ORDERS_READ,
        response=OrderEnvelope,
        errors=(*_errors.AUTH, "NOT_FOUND"),
    ),
    Operation(
        "POST",
        "/v1/orders",
        place_order,
        "Place a market, limit or stop order (Cerberus first)",
        "orders",
        scopes.ORDERS_WRITE,
        body=OrderRequest,
        response=OrderEnvelope,
        status=201,
        errors=_errors.TRADE,
        command="order.place",
        idempotent=True,
        idempotency_field="client_order_id",
        subject="Order",
        description="A market order fills at once at the market. A limit order the market already reaches fills "
        "at once at the market, never worse than its limit; otherwise it rests and fills at its limit price. A stop "
        "rests until the price reaches `stop_price`, then fills at the market; a stop the market is already through "
        "is refused (400). `quantity` and every price must be on the market's `amount_step` / `price_step` (see "
        "`GET /v1/markets`); an off-step value is refused (400 naming the field and the step). "
        "A fill nets against the symbol's opposite positions (oldest first), the rest opens a position. "
        "`client_order_id` works as an Idempotency-Key.",
    ),
    Operation(
        "DELETE",
        "/v1/orders/{order_id}",
        cancel_order,
        "Cancel an open order",
        "orders",
        scopes.ORDERS_WRITE,
        response=OrderEnvelope,
        errors=(*_errors.WRITE, "NOT_FOUND", "ORDER_NOT_OPEN", "IDEMPOTENCY_CONFLICT", "EXCHANGE_UNAVAILABLE"),
        command="order.cancel",
        idempotent=True,
    ),
]
