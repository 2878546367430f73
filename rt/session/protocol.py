"""The WebSocket protocol without I/O: close codes, client messages, parsing and scope rules (SPEC §6)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rt.auth import scopes
from rt.errors import BadRequest, Forbidden
from rt.payload import depth_error, too_deep


class CloseCode(IntEnum):
    """Why the server closed the socket (SPEC §6)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the server is shutting down
    INTERNAL = 1011
    TOKEN_INVALID = 4001  # no token, a refused one, or the key was revoked
    SCOPE = 4003
    SLOW_CONSUMER = 4008  # the client did not read fast enough
    IDLE = 4009  # no subscription and no message for RT_WS_IDLE_S
    RATE_LIMITED = 4029


AUTH_TIMEOUT_S = 5.0
# A close reason is at most 123 bytes (RFC 6455 §5.5: a control frame's payload is at most 125, with the code).
MAX_REASON = 123
TOKEN_REFUSED = "token invalid, expired or already used"
NO_TOKEN = "the first message must be auth, or a subscribe carrying a token"
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

# Kraken's private channels and the rt channel carrying the same data: a fill is an `order.filled` event of `orders`.
KRAKEN_V1: dict[str, str] = {"openOrders": "orders", "ownTrades": "orders"}
KRAKEN_V2: dict[str, str] = {"executions": "orders", "balances": "account"}
KRAKEN_MAPPED = f"{', '.join(KRAKEN_V1)} (v1), {', '.join(KRAKEN_V2)} (v2)"


class InvalidMessage(BadRequest):
    """A frame that is not a valid message; `request_id` is its `id` when one could be read, `token` the token of
    a Kraken subscribe to a channel rt does not map (which still authenticates a first message)."""

    def __init__(
        self, detail: str, request_id: str | int | None = None, token: str | None = None, **extra: Any
    ) -> None:
        super().__init__(detail, **extra)
        self.request_id = request_id
        self.token = token


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
    if "op" not in data and "subscribe" in (data.get("event"), data.get("method")):
        return kraken_subscribe(data)
    try:
        return Message.model_validate(data)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors(include_url=False)
        ]
        raise InvalidMessage("invalid message", request_id, errors=errors) from None


def _request_id(value: Any) -> str | int | None:
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def kraken_subscribe(data: dict[str, Any]) -> Message:
    """Kraken's v1 `{"event": "subscribe", "subscription": {"name", "token"}, "reqid"}` or v2 `{"method":
    "subscribe", "params": {"channel", "token"}, "req_id"}` as the rt subscribe to the channel with the same data.
    Only the subscribe is read so; replies are rt's messages."""
    if data.get("event") == "subscribe":
        inner, name_key, table, request_id = data.get("subscription"), "name", KRAKEN_V1, data.get("reqid")
    else:
        inner, name_key, table, request_id = data.get("params"), "channel", KRAKEN_V2, data.get("req_id")
    request_id = _request_id(request_id)
    if not isinstance(inner, dict):
        where = "subscription" if table is KRAKEN_V1 else "params"
        raise InvalidMessage(f"a Kraken subscribe names its channel in `{where}`", request_id)
    token = inner.get("token")
    token = token if isinstance(token, str) and 0 < len(token) <= 200 else None
    name = inner.get(name_key)
    channel = table.get(name) if isinstance(name, str) else None
    if channel is None:
        raise InvalidMessage(
            f"rt maps no channel to Kraken's {str(name)[:40]!r}; it maps {KRAKEN_MAPPED}", request_id, token
        )
    return Message(op="subscribe", id=request_id, channel=channel, since=None, token=token)


@dataclass(frozen=True)
class Opening:
    """What the first message of a socket without `?token=` brings: the token it presents (None: it presents none,
    and `reason` says so), and what the session does once that token authenticates it: the subscribe to perform,
    or the error to answer."""

    token: str | None
    then: Message | InvalidMessage | None = None
    reason: str = NO_TOKEN


def opening(raw: str | bytes) -> Opening:
    try:
        message = parse(raw)
    except InvalidMessage as exc:
        if exc.token is not None:
            return Opening(exc.token, exc)
        fields = exc.extra.get("errors")
        why = f"{fields[0]['field']}: {fields[0]['message']}" if isinstance(fields, list) and fields else exc.detail
        return Opening(None, reason=close_reason(f"{NO_TOKEN} ({why})"))
    if message.op not in ("auth", "subscribe"):
        return Opening(None, reason=close_reason(f"{NO_TOKEN}, not {message.op!r}"))
    if not message.token:
        return Opening(None)
    return Opening(message.token, message if message.op == "subscribe" else None)


def close_reason(text: str) -> str:
    return text.encode()[:MAX_REASON].decode(errors="ignore")


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
