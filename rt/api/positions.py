"""/v1/positions: list, get, open (Cerberus first), change stop loss / take profit, close at market."""

from __future__ import annotations

import dataclasses
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
from rt.engine.requests import PositionRequest, PositionUpdate
from rt.errors import NotFound
from rt.records.trading import Position

STATUSES: dict[str, tuple[str, ...] | None] = {
    "open": ("open",),
    "pending": ("pending",),
    "closed": ("closed",),
    "rejected": ("rejected",),
    "canceled": ("canceled",),
    "all": None,
}


class PositionQuery(Page):
    exchange: str | None = None
    symbol: str | None = None
    status: Literal["open", "pending", "closed", "rejected", "canceled", "all"] = "open"


class PositionOut(BaseModel):
    id: str
    exchange: str
    symbol: str
    side: Literal["long", "short"]
    entry_price: Decimal
    current_price: Decimal
    quantity: Decimal
    unrealized_pnl: Decimal
    realized_pnl: Decimal = Field(description="Closed P&L of this position, net of its fees.")
    stop_loss: Decimal | None
    take_profit: Decimal | None
    status: str = Field(description="pending (limit entry resting), open, closed, rejected or canceled.")
    strategy_id: str | None
    close_reason: str | None = Field(description="manual, stop_loss, take_profit, kill_switch, order, ...")
    created_at: datetime
    closed_at: datetime | None


class Validation(BaseModel):
    cerberus_status: str
    checks: list[str]
    results: list[dict[str, Any]]


class PositionCreated(PositionOut):
    validation: Validation


class PositionEnvelope(BaseModel):
    position: PositionOut


class PositionCreatedEnvelope(BaseModel):
    position: PositionCreated


class PositionList(BaseModel):
    positions: list[PositionOut]
    total: int
    page: int


def live(call: Call, position: Position) -> Position:
    """The stored position, marked to the last tick this instance heard while it is open. The store has what every
    instance wrote (a close or a new stop loss elsewhere); this instance's copy has only the fresher price."""
    if position.status != "open":
        return position
    book = call.runtime.engine.cached_book(position.account_id)
    mine = book.positions.get(position.id) if book is not None else None
    if mine is None or mine.status != "open" or mine.current_price == position.current_price:
        return position
    return dataclasses.replace(position, current_price=mine.current_price)


async def list_positions(call: Call) -> dict[str, Any]:
    q: PositionQuery = call.query
    found, total = await call.runtime.store.list_positions(
        call.caller.account_id, STATUSES[q.status], q.exchange, q.symbol, q.limit, (q.page - 1) * q.limit
    )
    return {"positions": [live(call, p).as_json() for p in found], "total": total, "page": q.page}


async def get_position(call: Call) -> dict[str, Any]:
    found = await call.runtime.store.get_position(call.caller.account_id, call.param("position_id"))
    if found is None:
        raise NotFound(f"no position {call.param('position_id')}")
    return {"position": live(call, found).as_json()}


async def create_position(call: Call) -> JSON:
    position, validation = await trading.open_position(
        call.runtime.engine, call.caller.account_id, call.body, test_key=call.caller.test
    )
    body = {**position.as_json(), "validation": validation}
    return JSON({"position": body}, status_code=201 if position.status == "open" else 202)


async def update_position(call: Call) -> dict[str, Any]:
    position = await trading.update_position(
        call.runtime.engine, call.caller.account_id, call.param("position_id"), call.body
    )
    return {"position": position.as_json()}


async def close_position(call: Call) -> dict[str, Any]:
    position = await trading.close_position(call.runtime.engine, call.caller.account_id, call.param("position_id"))
    return {"position": position.as_json()}


OPERATIONS = [
    Operation(
        "GET",
        "/v1/positions",
        list_positions,
        "List positions",
        "positions",
        scopes.POSITIONS_READ,
        query=PositionQuery,
        response=PositionList,
        errors=(*_errors.AUTH, "BAD_REQUEST"),
    ),
    Operation(
        "GET",
        "/v1/positions/{position_id}",
        get_position,
        "Get a position",
        "positions",
        scopes.POSITIONS_READ,
        response=PositionEnvelope,
        errors=(*_errors.AUTH, "NOT_FOUND"),
    ),
    Operation(
        "POST",
        "/v1/positions",
        create_position,
        "Open a position (Cerberus first)",
        "positions",
        scopes.POSITIONS_WRITE,
        body=PositionRequest,
        response=PositionCreatedEnvelope,
        status=201,
        errors=_errors.TRADE,
        also=((202, "Accepted: a limit entry rests at the venue (status pending)"),),
        command="position.open",
        idempotent=True,
        description="Without entry_price the position opens at market (201, status open). With entry_price "
        "a limit entry rests at the venue (202, status pending) and opens at entry_price when it fills; an entry "
        "the market already reaches opens at once, at the market. Prices and quantity must be on the market's "
        "steps (400 naming field and step). With `entry_type: stop` a stop entry rests (400 if it would trigger now).",
    ),
    Operation(
        "PATCH",
        "/v1/positions/{position_id}",
        update_position,
        "Change stop loss / take profit",
        "positions",
        scopes.POSITIONS_WRITE,
        body=PositionUpdate,
        response=PositionEnvelope,
        errors=(*_errors.WRITE, "NOT_FOUND", "IDEMPOTENCY_CONFLICT"),
        command="position.update",
        idempotent=True,
    ),
    Operation(
        "POST",
        "/v1/positions/{position_id}/close",
        close_position,
        "Close a position at market",
        "positions",
        scopes.POSITIONS_WRITE,
        response=PositionEnvelope,
        errors=(*_errors.TRADE, "NOT_FOUND", "POSITION_NOT_OPEN"),
        command="position.close",
        idempotent=True,
    ),
]
