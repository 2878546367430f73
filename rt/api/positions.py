"""/v1/positions: list, get, open (Cerberus first), change stop loss / take profit, close at market."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.responses import Response

from rt.api import _errors
from rt.api.idempotency import KEPT
from rt.api.models import Page
from rt.api.problems import problem_response, request_id_of
from rt.api.responses import JSON
from rt.api.routing import Call, Operation, named
from rt.api.validations import shutting_down
from rt.auth import scopes
from rt.engine import risk, trading
from rt.engine.requests import PositionRequest, PositionUpdate
from rt.errors import IDEMPOTENCY_CONFLICT, Conflict, NotFound, RtError
from rt.records.ids import new_id
from rt.records.trading import ZERO, Position, now

SUBJECT = "Position"
PENDING_VALIDATION = "pending_validation"

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
    status: str = Field(
        description="pending_validation (Cerberus and the venue have not answered yet), pending (limit entry resting), "
        "open, closed, rejected or canceled."
    )
    strategy_id: str | None
    close_reason: str | None = Field(description="manual, stop_loss, take_profit, kill_switch, order, ...")
    simulated: bool = Field(description="Booked on a simulated venue (paper, an RT_PAPER_VENUES alias, a sandbox).")
    created_at: datetime
    closed_at: datetime | None


class Validation(BaseModel):
    cerberus_status: Literal["passed", "validating"] = Field(
        description="`validating` while the position is pending_validation, then `passed`."
    )
    checks: list[str] = Field(description="The checks Cerberus runs (ran) on it.")
    results: list[dict[str, Any]] | None = Field(None, description="Each check's result, once it has run.")


class PositionCreated(PositionOut):
    entry_price: Decimal | None = Field(description="null while a market entry is pending_validation.")  # type: ignore[assignment]
    current_price: Decimal | None = Field(description="null while pending_validation.")  # type: ignore[assignment]
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
    account_id, position_id = call.caller.account_id, call.param("position_id")
    # The placeholder first: once its validation ends the store has the position, the other order leaves a gap.
    settling = call.runtime.validations.placeholder(account_id, position_id)
    if settling is not None:
        return {"position": settling}
    found = await call.runtime.store.get_position(account_id, position_id)
    if found is None:
        raise NotFound(f"no position {position_id}")
    return {"position": live(call, found).as_json()}


async def create_position(call: Call) -> Response:
    """The engine opens the position in a task of its own (with the idempotency key, when there is one): an answer
    given before it settles is a placeholder, never kept; a retry with the key joins the task under way or, once it
    settled, gets the kept answer."""
    runtime, req = call.runtime, call.body
    account_id, key = call.caller.account_id, call.idempotency_key
    joined = runtime.validations.under_key(account_id, key) if key is not None else None
    if joined is not None:
        if joined.fingerprint != call.fingerprint:
            raise Conflict("this Idempotency-Key was used with a different request", code=IDEMPOTENCY_CONFLICT)
        replay = True
    else:
        position_id = new_id("pos")
        joined = runtime.validations.start(
            _settle(call, position_id, request_id_of(call.request)),
            account_id,
            placeholder(position_id, req, _simulated(call, req)),
            key,
            call.fingerprint,
        )
        replay = False
    try:
        done, _ = await asyncio.wait({joined.task}, timeout=max(runtime.settings.validation_wait_ms, 0) / 1000)
    except asyncio.CancelledError:
        joined.detached = True  # the client left: the position still settles
        raise
    if joined.task not in done:
        joined.detached = True
        return JSON({"position": joined.placeholder}, status_code=202)
    if joined.task.cancelled():
        raise shutting_down()  # a stopping server cut it off
    answer = joined.task.result()
    return _copy(answer, replayed=replay and answer.status_code in KEPT)


def _copy(answer: Response, replayed: bool) -> Response:
    """An answer of its own for each request sharing a settling: the routing adds each request's headers (its rate
    limit) to what its handler returns, so the settling's own answer is never handed out."""
    copy = Response(bytes(answer.body), answer.status_code, media_type=answer.media_type)
    copy.raw_headers = list(answer.raw_headers)
    if replayed and "idempotent-replayed" not in copy.headers:
        copy.raw_headers.append((b"idempotent-replayed", b"true"))
    return copy


async def _settle(call: Call, position_id: str, request_id: str | None) -> Response:
    """Open the position as `position_id`, keeping the answer under the request's idempotency key if it has one."""
    runtime, account_id = call.runtime, call.caller.account_id

    async def produce() -> Response:
        try:
            position, validation = await trading.open_position(
                runtime.engine, account_id, call.body, test_key=call.caller.test, position_id=position_id
            )
        except RtError as exc:
            return problem_response(named(exc, SUBJECT), request_id)
        body = {**position.as_json(), "validation": validation}
        return JSON({"position": body}, status_code=201 if position.status == "open" else 202)

    if call.idempotency_key is None or call.fingerprint is None:
        return await produce()
    return await runtime.idempotency.run(account_id, call.idempotency_key, call.fingerprint, produce)


def _simulated(call: Call, req: PositionRequest) -> bool:
    try:
        venue = call.runtime.engine.venues.get(call.caller.account_id, req.exchange, test_key=call.caller.test)
    except RtError:
        return False  # the settling answers the refusal
    return venue.simulated


def placeholder(position_id: str, req: PositionRequest, simulated: bool) -> dict[str, Any]:
    """What a position is while Cerberus and the venue have not answered yet (Kerosyne's pending_validation)."""
    first = (risk.POSITION_SIZE, risk.EXPOSURE, risk.DAILY_LOSS)  # in the order the Kerosyne document lists them
    checks = [*first, *(c for c in risk.CHECKS if c not in first)]
    if req.strategy_id is not None:
        checks.append(risk.STRATEGY)
    return {
        "id": position_id,
        "exchange": req.exchange,
        "symbol": req.symbol,
        "side": req.side,
        "entry_price": req.entry_price,
        "current_price": None,
        "quantity": req.quantity,
        "unrealized_pnl": ZERO,
        "realized_pnl": ZERO,
        "stop_loss": req.stop_loss,
        "take_profit": req.take_profit,
        "status": PENDING_VALIDATION,
        "strategy_id": req.strategy_id,
        "close_reason": None,
        "simulated": simulated,
        "created_at": now(),
        "closed_at": None,
        "validation": {"cerberus_status": "validating", "checks": checks},
    }


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
        also=(
            (
                202,
                "Accepted: a limit entry rests at the venue (status pending), or Cerberus and the venue have not "
                "answered within RT_VALIDATION_WAIT_MS (status pending_validation)",
            ),
        ),
        command="position.open",
        idempotent=True,
        own_idempotency=True,
        subject=SUBJECT,
        description="Without entry_price the position opens at market (201, status open). With entry_price "
        "a limit entry rests at the venue (202, status pending) and opens at entry_price when it fills; an entry "
        "the market already reaches opens at once, at the market. Prices and quantity must be on the market's "
        "steps (400 naming field and step). With `entry_type: stop` a stop entry rests (400 if it would trigger now). "
        "When Cerberus and the venue have not answered within RT_VALIDATION_WAIT_MS (default 1000 ms), the answer "
        "is 202 with status pending_validation and validation.cerberus_status validating; the position settles in "
        "the background (its events follow) and GET /v1/positions/{position_id} shows pending_validation until it "
        "does. A retry with the same Idempotency-Key waits for the settled answer.",
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
