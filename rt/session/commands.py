"""Commands over the socket: the same engine functions, scopes, Cerberus checks and idempotency as REST."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rt.engine import kill, trading
from rt.engine.requests import EmergencyKill, OrderRequest, PositionRequest, PositionUpdate
from rt.errors import BadRequest
from rt.wire import dumps

if TYPE_CHECKING:
    from rt.auth.principal import Principal
    from rt.engine.engine import Engine
    from rt.strategies.runner import Runner


class Caller(Protocol):
    """What a command uses of the session that runs it."""

    principal: Principal
    engine: Engine
    runner: Runner
    cancel_on_disconnect: bool

    async def placed(self, order_id: str) -> None:
        """An order of this session, for its cancel_on_disconnect."""

    async def configure(self, cancel_on_disconnect: bool) -> None: ...

    async def cancel_after(self, timeout_s: int) -> dict[str, Any]:
        """Arm (or with 0 disarm) the account's dead man's switch."""


Command = Callable[[Caller, dict[str, Any]], Awaitable[dict[str, Any]]]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderRef(_Params):
    order_id: str


class PositionRef(_Params):
    position_id: str


class PositionChange(PositionUpdate):
    position_id: str


class SessionConfig(_Params):
    cancel_on_disconnect: bool = False


class CancelAfter(_Params):
    timeout_s: int = Field(ge=0, le=86_400, description="0 turns it off")


M = TypeVar("M", bound=BaseModel)


def _model(model: type[M], params: dict[str, Any]) -> M:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors(include_url=False)
        ]
        raise BadRequest("invalid params", errors=errors) from None


async def order_place(s: Caller, params: dict[str, Any]) -> dict[str, Any]:
    req = _model(OrderRequest, params)
    order = await trading.place_order(s.engine, s.principal.account_id, req, test_key=s.principal.test)
    await s.placed(order.id)
    return {"order": order.as_json()}


async def order_cancel(s: Caller, params: dict[str, Any]) -> dict[str, Any]:
    ref = _model(OrderRef, params)
    return {"order": (await trading.cancel_order(s.engine, s.principal.account_id, ref.order_id)).as_json()}


async def position_open(s: Caller, params: dict[str, Any]) -> dict[str, Any]:
    req = _model(PositionRequest, params)
    position, validation = await trading.open_position(s.engine, s.principal.account_id, req, test_key=s.principal.test)
    if position.entry_order_id and position.status == "pending":
        await s.placed(position.entry_order_id)
    return {"position": {**position.as_json(), "validation": validation}}


async def position_close(s: Caller, params: dict[str, Any]) -> dict[str, Any]:
    ref = _model(PositionRef, params)
    return {"position": (await trading.close_position(s.engine, s.principal.account_id, ref.position_id)).as_json()}


async def position_update(s: Caller, params: dict[str, Any]) -> dict[str, Any]:
    change = _model(PositionChange, params)
    update = PositionUpdate.model_validate(change.model_dump(include=change.model_fields_set - {"position_id"}))
    position = await trading.update_position(s.engine, s.principal.account_id, change.position_id, update)
    return {"position": position.as_json()}


async def emergency_kill(s: Caller, params: dict[str, Any]) -> dict[str, Any]:
    req = _model(EmergencyKill, params)
    return await kill.execute(s.engine, s.principal.account_id, "KILL", req.reason, actor=s.principal.key_id)


class StrategyRef(_Params):
    strategy_id: str


async def _strategy_json(s: Caller, record: Any) -> dict[str, Any]:
    return {"strategy": record.as_json(await s.runner.performance(record))}


async def strategy_start(s: Caller, params: dict[str, Any]) -> dict[str, Any]:
    ref = _model(StrategyRef, params)
    return await _strategy_json(
        s, await s.runner.start_strategy(s.principal.account_id, ref.strategy_id, test_key=s.principal.test)
    )


async def strategy_stop(s: Caller, params: dict[str, Any]) -> dict[str, Any]:
    ref = _model(StrategyRef, params)
    return await _strategy_json(s, await s.runner.stop_strategy(s.principal.account_id, ref.strategy_id))


async def session_configure(s: Caller, params: dict[str, Any]) -> dict[str, Any]:
    config = _model(SessionConfig, params)
    await s.configure(config.cancel_on_disconnect)
    return {"cancel_on_disconnect": s.cancel_on_disconnect}


async def cancel_after(s: Caller, params: dict[str, Any]) -> dict[str, Any]:
    req = _model(CancelAfter, params)
    return await s.cancel_after(req.timeout_s)


COMMANDS: dict[str, Command] = {
    "order.place": order_place,
    "order.cancel": order_cancel,
    "position.open": position_open,
    "position.close": position_close,
    "position.update": position_update,
    "strategy.start": strategy_start,
    "strategy.stop": strategy_stop,
    "emergency.kill": emergency_kill,
    "session.configure": session_configure,
    "orders.cancel_after": cancel_after,
}

IDEMPOTENT = {
    "order.place",
    "order.cancel",
    "position.open",
    "position.close",
    "position.update",
    "emergency.kill",
    "strategy.start",
    "strategy.stop",
}


def idempotency_key(op: str, params: dict[str, Any]) -> str | None:
    """`idempotency_key` in params (removed from them), or an order's client_order_id."""
    key = params.pop("idempotency_key", None)
    if key is not None:
        if not isinstance(key, str) or not 1 <= len(key) <= 255:
            raise BadRequest("idempotency_key must be a string of 1 to 255 characters")
        return f"h:{key}"
    if op == "order.place" and isinstance(params.get("client_order_id"), str):
        return f"client_order_id:{params['client_order_id']}"
    return None


def answer_status(op: str, result: dict[str, Any]) -> int:
    """The status the command's REST twin answers with (rt/api/orders.py, positions.py). It is kept with the
    idempotent answer, so a REST retry of a command the socket ran first replays it as the route would."""
    if op == "order.place":
        return 201
    if op == "position.open":
        return 201 if result["position"]["status"] == "open" else 202
    return 200


def encode(result: dict[str, Any]) -> bytes:
    return dumps(result)
