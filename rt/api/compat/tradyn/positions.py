"""/v1/api/positions: list, get, modify SL/TP (PUT), close (DELETE), close all; tickets are rt position ids."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from rt.api import _errors
from rt.api.compat.tradyn import symbols
from rt.api.compat.tradyn._dialect import TAG, TRADYN, ok, rt_symbol
from rt.api.positions import live
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.engine import kill, trading
from rt.engine.requests import Amount, PositionUpdate
from rt.errors import BadRequest, NotFound
from rt.records.trading import Position

ZERO = Decimal(0)
OPEN_LIMIT = 500  # a terminal lists every open position at once; the envelope's concurrency limit is far below this


def _zero_is_none(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return value
    try:
        return None if Decimal(str(value).strip()) == 0 else value
    except InvalidOperation:
        return value  # the price validator says why


# A stop loss or take profit as MetaTrader sends it: 0 (also 0.0 or "0") or null means none.
Protection = Annotated[Amount | None, BeforeValidator(_zero_is_none)]


def opening(position: Position) -> dict[str, Any]:
    """What a position and the deal it becomes both say of how it opened."""
    return {
        "ticket": position.id,
        "symbol": symbols.to_tradyn(position.symbol),
        "type": "buy" if position.side == "long" else "sell",
        "volume": symbols.to_lots(position.quantity, position.symbol),
        "open_price": position.entry_price,
        "open_time": position.created_at,
    }


def position_json(position: Position) -> dict[str, Any]:
    return {
        **opening(position),
        "current_price": position.current_price,
        "sl": position.stop_loss or ZERO,
        "tp": position.take_profit or ZERO,
        "profit": position.unrealized_pnl if position.status == "open" else position.realized_pnl,
        "swap": ZERO,
        "status": position.status,
        "exchange": position.exchange,
        "comment": position.strategy_id or "",
    }


class PositionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str | None = Field(None, min_length=1, max_length=40, description="EURUSD or EUR/USD.")


async def tradyn_list_positions(call: Call) -> dict[str, Any]:
    q: PositionsQuery = call.query
    symbol = await rt_symbol(call, q.symbol) if q.symbol is not None else None
    found, _ = await call.runtime.store.list_positions(call.caller.account_id, ("open",), None, symbol, OPEN_LIMIT, 0)
    return ok([position_json(live(call, p)) for p in found])


def _missing(ticket: str) -> NotFound:
    return NotFound(f"Position {ticket} not found")


@contextlib.contextmanager
def _known(ticket: str) -> Iterator[None]:
    """The engine's "no position" in the words GET on the ticket uses."""
    try:
        yield
    except NotFound:
        raise _missing(ticket) from None


async def tradyn_get_position(call: Call) -> dict[str, Any]:
    ticket = call.param("ticket")
    found = await call.runtime.store.get_position(call.caller.account_id, ticket)
    if found is None:
        raise _missing(ticket)
    return ok(position_json(live(call, found)))


class ModifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sl: Protection = Field(None, description="New stop loss; 0 or null removes it, absent keeps it.")
    tp: Protection = Field(None, description="New take profit; 0 or null removes it, absent keeps it.")


async def tradyn_modify_position(call: Call) -> dict[str, Any]:
    body: ModifyRequest = call.body
    given = body.model_fields_set
    if not given:
        raise BadRequest("send sl, tp or both", errors=[{"field": "body", "message": "no sl or tp"}])
    update: dict[str, Decimal | None] = {}
    if "sl" in given:
        update["stop_loss"] = body.sl
    if "tp" in given:
        update["take_profit"] = body.tp
    ticket = call.param("ticket")
    with _known(ticket):
        position = await trading.update_position(
            call.runtime.engine, call.caller.account_id, ticket, PositionUpdate.model_validate(update)
        )
    return ok(position_json(position))


async def tradyn_close_position(call: Call) -> dict[str, Any]:
    """The whole position at market. A volume may be sent (body or query) but only the position's own: rt closes
    positions whole, so a partial close is refused rather than done as a full one."""
    ticket = call.param("ticket")
    account_id = call.caller.account_id
    volume = _volume_asked(call)
    if volume is not None:
        stored = await call.runtime.store.get_position(account_id, ticket)
        if stored is None:
            raise _missing(ticket)
        held = symbols.to_lots(stored.quantity, stored.symbol)
        if symbols.volume_of(volume) != held:
            raise BadRequest(
                f"partial close is not supported: close the whole {held} lots",
                errors=[{"field": "volume", "message": f"must be {held} or absent"}],
            )
    with _known(ticket):
        position = await trading.close_position(call.runtime.engine, account_id, ticket)
    return ok({**position_json(position), "close_price": position.current_price, "close_time": position.closed_at})


def _body_of(call: Call, known: frozenset[str], what: str) -> dict[str, Any]:
    """The optional body of a route without a body model: absent, or an object of `known` fields only."""
    data = call.data
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", errors=[{"field": "body", "message": "not an object"}])
    extra = sorted(set(data) - known)
    if extra:
        raise BadRequest(
            f"unknown fields {', '.join(extra)}",
            errors=[{"field": name, "message": f"not a field of {what}"} for name in extra],
        )
    return data


def _volume_asked(call: Call) -> object:
    data = _body_of(call, frozenset({"volume"}), "a close")
    if "volume" in data:
        return data["volume"]
    return call.request.query_params.get("volume")


async def tradyn_close_all(call: Call) -> dict[str, Any]:
    """Every open position at market, in one engine command, each closed as DELETE on its ticket closes it (reason
    `manual`): nothing is locked or canceled, and it is no kill switch. It takes no fields."""
    _body_of(call, frozenset(), "close-all")
    closed, failed = await kill.close_positions(call.runtime.engine, call.caller.account_id)
    return ok({"closed": closed, "failed": failed})


_TICKET = "/v1/api/positions/{ticket}"
_WRITE = (*_errors.TRADE, "NOT_FOUND", "POSITION_NOT_OPEN")

OPERATIONS = [
    Operation(
        "GET",
        "/v1/api/positions",
        tradyn_list_positions,
        "Tradyn: open positions",
        TAG,
        scopes.POSITIONS_READ,
        query=PositionsQuery,
        errors=(*_errors.AUTH, "BAD_REQUEST"),
        dialect=TRADYN,
    ),
    Operation(
        "POST",
        "/v1/api/positions/close-all",
        tradyn_close_all,
        "Tradyn: close every open position at market",
        TAG,
        scopes.POSITIONS_WRITE,
        errors=(*_errors.WRITE, "IDEMPOTENCY_CONFLICT", "EXCHANGE_UNAVAILABLE"),
        idempotent=True,
        dialect=TRADYN,
    ),
    Operation(
        "GET",
        _TICKET,
        tradyn_get_position,
        "Tradyn: one position",
        TAG,
        scopes.POSITIONS_READ,
        errors=(*_errors.AUTH, "NOT_FOUND"),
        dialect=TRADYN,
    ),
    Operation(
        "PUT",
        _TICKET,
        tradyn_modify_position,
        "Tradyn: change stop loss / take profit",
        TAG,
        scopes.POSITIONS_WRITE,
        body=ModifyRequest,
        errors=(*_errors.WRITE, "NOT_FOUND", "POSITION_NOT_OPEN", "IDEMPOTENCY_CONFLICT"),
        idempotent=True,
        dialect=TRADYN,
    ),
    Operation(
        "DELETE",
        _TICKET,
        tradyn_close_position,
        "Tradyn: close a position at market",
        TAG,
        scopes.POSITIONS_WRITE,
        errors=_WRITE,
        idempotent=True,
        description="Closes the whole position. A `volume` (body or query) other than the position's is a 400.",
        dialect=TRADYN,
    ),
]
