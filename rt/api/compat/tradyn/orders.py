"""Tradyn pending orders (types 2-5) under /v1/api/orders, MetaTrader style: an order's ticket is its position's.

A pending order is an rt position with a resting entry (status `pending`): a limit entry for Buy / Sell Limit, a stop
entry for Buy / Sell Stop. When the entry fills the position opens under the same ticket, as MetaTrader's does.
Market orders (types 0 and 1) are trades: POST /v1/api/trade.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from rt.api import _errors
from rt.api.compat.tradyn import symbols
from rt.api.compat.tradyn._dialect import TAG, TRADYN, ok, rt_symbol, venue
from rt.api.compat.tradyn.positions import Protection
from rt.api.routing import Call, Operation, field_errors
from rt.auth import scopes
from rt.engine import trading
from rt.engine.requests import Amount, EntryUpdate, PositionRequest
from rt.errors import BadRequest, NotFound
from rt.exchanges import Ticker
from rt.records.trading import Order, Position

BUY, SELL, BUY_LIMIT, SELL_LIMIT, BUY_STOP, SELL_STOP = range(6)
NAMES = {
    BUY: "buy",
    SELL: "sell",
    BUY_LIMIT: "buy_limit",
    SELL_LIMIT: "sell_limit",
    BUY_STOP: "buy_stop",
    SELL_STOP: "sell_stop",
}
ENTRIES: dict[int, tuple[Literal["long", "short"], Literal["limit", "stop"]]] = {
    BUY_LIMIT: ("long", "limit"),
    SELL_LIMIT: ("short", "limit"),
    BUY_STOP: ("long", "stop"),
    SELL_STOP: ("short", "stop"),
}
STATES = {"pending": "placed", "open": "filled", "closed": "filled", "canceled": "canceled", "rejected": "rejected"}
MAX_LISTED = 500

M = TypeVar("M", bound=BaseModel)


def order_type(value: object) -> object:
    """0-5 as a number or a numeric string ("2"), or their names (`buy_limit`, `BUY_STOP`, ...) as MetaTrader's
    ORDER_TYPE_* constants spell them. Never a boolean: `true` is no order type, though Python counts it as 1."""
    if isinstance(value, bool):
        raise ValueError("an order type is a number 0-5 or its name, not a boolean")
    if isinstance(value, str):
        name = value.strip().lower().removeprefix("order_type_")
        if name.isdigit():
            return int(name)
        for number, known in NAMES.items():
            if name == known:
                return number
    return value


OrderType = Annotated[Literal[0, 1, 2, 3, 4, 5], BeforeValidator(order_type)]


class PendingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=40, examples=["EURUSD"])
    type: OrderType = Field(description="2 Buy Limit, 3 Sell Limit, 4 Buy Stop, 5 Sell Stop (0 and 1: /v1/api/trade).")
    volume: Amount = Field(description="Lots, on the 0.01 step.")
    price: Amount = Field(description="The limit or stop price the order waits for.")
    sl: Protection = Field(None, description="Stop loss of the position it opens; 0 or absent: none.")
    tp: Protection = Field(None, description="Take profit of the position it opens; 0 or absent: none.")
    comment: str | None = Field(None, max_length=255, description="Echoed in this answer; not kept.")
    magic: int | None = Field(None, ge=0, lt=2**63, description="Accepted, not kept.")
    expiration: int | str | None = Field(None, description="Absent, null or 0: good till canceled (nothing else).")


class PendingChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    price: Amount | None = Field(None, description="The new limit or stop price; absent: unchanged.")
    sl: Protection = Field(None, description="New stop loss; 0 removes it; absent: unchanged.")
    tp: Protection = Field(None, description="New take profit; 0 removes it; absent: unchanged.")


class PendingQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str | None = Field(None, min_length=1, max_length=40, description="EURUSD or EUR/USD.")


def type_of(position: Position, entry: Order | None) -> int:
    kind = entry.type if entry is not None else "market"
    long = position.side == "long"
    if kind == "limit":
        return BUY_LIMIT if long else SELL_LIMIT
    if kind == "stop":
        return BUY_STOP if long else SELL_STOP
    return BUY if long else SELL


def view(position: Position, entry: Order | None, ticker: Ticker | None) -> dict[str, Any]:
    kind = type_of(position, entry)
    wanted = entry.price if entry is not None and entry.price is not None else None
    if entry is not None and entry.stop_price is not None:
        wanted = entry.stop_price
    current = position.current_price
    if ticker is not None:
        current = ticker.ask if position.side == "long" else ticker.bid
    return {
        "ticket": position.id,
        "symbol": symbols.to_tradyn(position.symbol),
        "type": kind,
        "type_name": NAMES[kind],
        "volume": symbols.to_lots(position.quantity, position.symbol),
        "price": wanted if wanted is not None else position.entry_price,
        "price_current": current,
        "sl": position.stop_loss or Decimal(0),
        "tp": position.take_profit or Decimal(0),
        "state": STATES.get(position.status, position.status),
        "time_setup": position.created_at,
        "comment": "",
    }


def _request(model: type[M], fields: dict[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise BadRequest("the order has invalid fields", errors=field_errors(exc)) from None


def _check_price(kind: int, price: Decimal, ticker: Ticker) -> None:
    """MetaTrader's rule for a pending order: it waits for a price the market is not at. A Buy Limit is below the ask,
    a Sell Limit above the bid, a Buy Stop above the ask, a Sell Stop below the bid; else 400 (invalid price)."""
    side, entry = ENTRIES[kind]
    long = side == "long"
    market, where = (ticker.ask, "ask") if long else (ticker.bid, "bid")
    below = (entry == "limit") == long
    if price < market if below else price > market:
        return
    message = f"must be {'below' if below else 'above'} the {where} ({market}) for a {NAMES[kind].replace('_', ' ')}"
    raise BadRequest(f"invalid price {price}: it {message}", errors=[{"field": "price", "message": message}])


async def _ticket(call: Call) -> Position:
    """The position behind a ticket, on the Tradyn venue and of the caller's account, else 404."""
    ticket = call.param("ticket")
    found = await call.runtime.store.get_position(call.caller.account_id, ticket)
    if found is None or found.exchange != call.runtime.settings.tradyn_exchange:
        raise NotFound(f"Order {ticket} not found")
    return found


async def _entry(call: Call, position: Position) -> Order | None:
    if position.entry_order_id is None:
        return None
    return await call.runtime.store.get_order(call.caller.account_id, position.entry_order_id)


async def _ticker(call: Call, symbol: str) -> Ticker | None:
    with contextlib.suppress(BadRequest):
        return await venue(call).ticker(symbol)
    return None


async def tradyn_list_orders(call: Call) -> dict[str, Any]:
    q: PendingQuery = call.query
    account_id, exchange = call.caller.account_id, call.runtime.settings.tradyn_exchange
    symbol = await rt_symbol(call, q.symbol) if q.symbol is not None else None
    store = call.runtime.store
    pending, _ = await store.list_positions(account_id, ("pending",), exchange, symbol, MAX_LISTED, 0)
    resting, _ = await store.list_orders(account_id, ("open",), exchange, symbol, MAX_LISTED, 0)
    entries = {o.id: o for o in resting}
    tickers: dict[str, Ticker | None] = {}
    listed = []
    for position in pending:
        if position.symbol not in tickers:
            tickers[position.symbol] = await _ticker(call, position.symbol)
        entry = entries.get(position.entry_order_id or "") or await _entry(call, position)
        listed.append(view(position, entry, tickers[position.symbol]))
    return ok(listed)


async def tradyn_get_order(call: Call) -> dict[str, Any]:
    position = await _ticket(call)
    return ok(view(position, await _entry(call, position), await _ticker(call, position.symbol)))


async def tradyn_place_order(call: Call) -> dict[str, Any]:
    body: PendingIn = call.body
    if body.type in (BUY, SELL):
        raise BadRequest(
            "type 0 (buy) and 1 (sell) are market orders: send them to POST /v1/api/trade",
            errors=[{"field": "type", "message": "2 Buy Limit, 3 Sell Limit, 4 Buy Stop or 5 Sell Stop"}],
        )
    if body.expiration not in (None, 0, "0", ""):
        raise BadRequest(
            "expiration is not supported: a pending order rests until it fills or is canceled",
            errors=[{"field": "expiration", "message": "leave it out, or 0"}],
        )
    symbol = await rt_symbol(call, body.symbol)
    side, entry_type = ENTRIES[body.type]
    quantity = symbols.to_units(body.volume, symbol)
    ticker = await venue(call).ticker(symbol)
    _check_price(body.type, body.price, ticker)
    fields = {
        "exchange": call.runtime.settings.tradyn_exchange,
        "symbol": symbol,
        "side": side,
        "quantity": quantity,
        "entry_price": body.price,
        "entry_type": entry_type,
        "stop_loss": body.sl,
        "take_profit": body.tp,
    }
    req = _request(PositionRequest, fields)
    position, _ = await trading.open_position(
        call.runtime.engine, call.caller.account_id, req, test_key=call.caller.test
    )
    entry = await call.runtime.store.get_order(call.caller.account_id, position.entry_order_id or "")
    return ok({**view(position, entry, ticker), "comment": body.comment or ""})


async def tradyn_modify_order(call: Call) -> dict[str, Any]:
    body: PendingChange = call.body
    given = body.model_fields_set
    change: dict[str, Decimal | None] = {} if body.price is None else {"entry_price": body.price}
    if "sl" in given:
        change["stop_loss"] = body.sl
    if "tp" in given:
        change["take_profit"] = body.tp
    if not change:
        raise BadRequest("send price, sl or tp", errors=[{"field": "body", "message": "no price, sl or tp"}])
    position = await _ticket(call)
    entry = await _entry(call, position)
    if position.status == "pending" and entry is not None and body.price is not None:
        ticker = await venue(call).ticker(position.symbol)
        _check_price(type_of(position, entry), body.price, ticker)
    req = _request(EntryUpdate, change)
    changed = await trading.amend_entry(
        call.runtime.engine, call.caller.account_id, position.id, req, test_key=call.caller.test
    )
    entry = await _entry(call, changed)
    return ok(view(changed, entry, await _ticker(call, changed.symbol)))


async def tradyn_cancel_order(call: Call) -> dict[str, Any]:
    position = await _ticket(call)
    entry = await _entry(call, position)
    if position.status != "pending" or entry is None:
        raise trading.OrderNotOpen(f"order {position.id} is {STATES.get(position.status, position.status)}")
    await trading.cancel_order(call.runtime.engine, call.caller.account_id, entry.id)
    canceled = await _ticket(call)
    return ok(view(canceled, await _entry(call, canceled), None))


_READ_ERRORS = (*_errors.AUTH, "BAD_REQUEST", "NOT_FOUND")
_WRITE_ERRORS = (*_errors.TRADE, "NOT_FOUND", "ORDER_NOT_OPEN")

OPERATIONS = [
    Operation(
        "GET",
        "/v1/api/orders",
        tradyn_list_orders,
        "Tradyn: pending orders",
        TAG,
        scopes.ORDERS_READ,
        query=PendingQuery,
        errors=_READ_ERRORS,
        description="Every pending order (a position whose entry rests, status pending) on the Tradyn venue.",
        dialect=TRADYN,
    ),
    Operation(
        "GET",
        "/v1/api/orders/{ticket}",
        tradyn_get_order,
        "Tradyn: one order by ticket",
        TAG,
        scopes.ORDERS_READ,
        errors=_READ_ERRORS,
        description="A pending order (state placed), or what became of it: filled (its position is open or closed "
        "under the same ticket), canceled or rejected.",
        dialect=TRADYN,
    ),
    Operation(
        "POST",
        "/v1/api/orders",
        tradyn_place_order,
        "Tradyn: place a pending order (Buy/Sell Limit, Buy/Sell Stop)",
        TAG,
        scopes.POSITIONS_WRITE,
        body=PendingIn,
        errors=_WRITE_ERRORS,
        idempotent=True,
        description="Opens a position with a resting entry: a limit entry (types 2, 3) or a stop entry (4, 5), "
        "Cerberus first; it needs positions:write, as POST /v1/positions does. The price must be one the market is "
        "not at (a Buy Limit below the ask, a Buy Stop above it; a Sell Limit above the bid, a Sell Stop below it), "
        "else 400. Types 0 and 1 go to /v1/api/trade.",
        dialect=TRADYN,
    ),
    Operation(
        "PUT",
        "/v1/api/orders/{ticket}",
        tradyn_modify_order,
        "Tradyn: modify a pending order's price, stop loss or take profit",
        TAG,
        scopes.POSITIONS_WRITE,
        body=PendingChange,
        errors=_WRITE_ERRORS,
        idempotent=True,
        description="A new price replaces the resting entry in one step (the ticket stays); sl / tp alone change "
        "only the protection. It changes a position, so it needs positions:write. Cerberus judges the moved order; "
        "a refused change leaves the order as it was.",
        dialect=TRADYN,
    ),
    Operation(
        "DELETE",
        "/v1/api/orders/{ticket}",
        tradyn_cancel_order,
        "Tradyn: cancel a pending order",
        TAG,
        scopes.ORDERS_WRITE,
        errors=(*_errors.WRITE, "NOT_FOUND", "ORDER_NOT_OPEN", "EXCHANGE_UNAVAILABLE"),
        idempotent=True,
        dialect=TRADYN,
    ),
]
