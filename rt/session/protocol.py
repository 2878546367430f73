"""The WebSocket protocol without I/O: close codes, client messages, parsing and scope rules (SPEC §6)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rt.auth import scopes
from rt.errors import BadRequest, Forbidden, RtError
from rt.payload import depth_error, too_deep

# Close codes
NORMAL = 1000
GOING_AWAY = 1001
INTERNAL = 1011
TOKEN_INVALID = 4001
SCOPE = 4003
SLOW_CONSUMER = 4008
IDLE = 4009
RATE_LIMITED = 4029

AUTH_TIMEOUT_S = 5.0
# Below uvicorn's ws_max_size (64 KiB, rt/server.py), so an oversize message is answered with an error instead of
# the transport's 1009 close.
MAX_FRAME = 16 * 1024

COMMAND_SCOPES: dict[str, str] = {
    "order.place": scopes.ORDERS_WRITE,
    "order.cancel": scopes.ORDERS_WRITE,
    "position.open": scopes.POSITIONS_WRITE,
    "position.close": scopes.POSITIONS_WRITE,
    "position.update": scopes.POSITIONS_WRITE,
    "strategy.start": scopes.STRATEGIES_WRITE,
    "strategy.stop": scopes.STRATEGIES_WRITE,
    "emergency.kill": scopes.RISK_KILL,
    "session.configure": scopes.ORDERS_WRITE,
    "orders.cancel_after": scopes.ORDERS_WRITE,
}

CHANNEL_SCOPES: dict[str, str] = {
    "positions": scopes.POSITIONS_READ,
    "orders": scopes.ORDERS_READ,
    "strategies": scopes.STRATEGIES_READ,
    "risk": scopes.RISK_READ,
    "account": scopes.ACCOUNT_READ,
    "events": scopes.ACCOUNT_READ,
}
TICKS = "ticks:"


class InvalidMessage(BadRequest):
    """A frame that is not a valid message; `request_id` is its `id` when one could be read."""

    def __init__(self, detail: str, request_id: str | int | None = None, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.request_id = request_id


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    op: str = Field(min_length=1, max_length=40)
    id: str | int | None = None
    channel: str | None = Field(None, max_length=60)
    since: int | None = Field(None, ge=0)
    token: str | None = Field(None, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)


def parse(raw: str | bytes) -> Message:
    """One client frame -> a Message, or BadRequest with what is wrong (the session answers with an error)."""
    if len(raw) > MAX_FRAME:
        raise InvalidMessage(f"frame larger than {MAX_FRAME} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidMessage("a message is a JSON object with an `op`")
    request_id = data.get("id") if isinstance(data.get("id"), str | int) else None
    if too_deep(data):
        raise InvalidMessage(depth_error("the message"), request_id)
    try:
        return Message.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors(include_url=False)
        ]
        raise InvalidMessage("invalid message", request_id, errors=errors) from None


def channel_scope(channel: str) -> str:
    if channel.startswith(TICKS) and len(channel) > len(TICKS):
        return scopes.MARKET_READ
    scope = CHANNEL_SCOPES.get(channel)
    if scope is None:
        raise BadRequest(f"unknown channel {channel!r}; channels: {', '.join(CHANNEL_SCOPES)}, ticks:<SYMBOL>")
    return scope


def require(granted: frozenset[str], scope: str) -> None:
    if scope not in granted:
        raise Forbidden(f"this key lacks the {scope} scope", required_scope=scope)


def error_frame(exc: RtError, request_id: str | int | None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "error": exc.problem()}
    if request_id is not None:
        frame["id"] = request_id
    return frame
