"""AsyncAPI 3.0 of the WebSocket protocol, built from the channel and command tables."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rt import __version__
from rt.api.openapi import WireSchema
from rt.engine.requests import EmergencyKill, OrderRequest, PositionRequest
from rt.records.events import EVENTS, EVENTS_CHANNEL, channel_of
from rt.session import commands, protocol


def _events_of(channel: str) -> list[str]:
    return [name for name in EVENTS if channel in (EVENTS_CHANNEL, channel_of(name))]


_PARAMS: dict[str, type[BaseModel]] = {
    "order.place": OrderRequest,
    "order.cancel": commands.OrderRef,
    "position.open": PositionRequest,
    "position.close": commands.PositionRef,
    "position.update": commands.PositionChange,
    "emergency.kill": EmergencyKill,
    "strategy.start": commands.StrategyRef,
    "strategy.stop": commands.StrategyRef,
    "session.configure": commands.SessionConfig,
    "orders.cancel_after": commands.CancelAfter,
}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_STR, _INT = {"type": "string"}, {"type": "integer"}
_ID = {"oneOf": [_STR, _INT]}


def build() -> dict[str, Any]:
    messages: dict[str, Any] = {
        "subscribe": {
            "payload": _obj(
                ["op", "channel"],
                op={"const": "subscribe"},
                channel=_STR,
                id=_ID,
                since={"type": "integer", "minimum": 0},
            )
        },
        "unsubscribe": {"payload": _obj(["op", "channel"], op={"const": "unsubscribe"}, channel=_STR, id=_ID)},
        "ping": {"payload": _obj(["op"], op={"const": "ping"}, id=_ID)},
        "auth": {"payload": _obj(["op", "token"], op={"const": "auth"}, token=_STR)},
        "subscribed": {
            "payload": _obj(["type", "channel", "seq"], type={"const": "subscribed"}, channel=_STR, id=_ID, seq=_INT)
        },
        "snapshot": {
            "payload": _obj(
                ["type", "channel", "seq", "data"],
                type={"const": "snapshot"},
                channel=_STR,
                seq=_INT,
                data={},
                reset={"type": "boolean"},
            )
        },
        "event": {
            "payload": _obj(
                ["type", "channel", "seq", "event", "ts", "data"],
                type={"const": "event"},
                channel=_STR,
                seq=_INT,
                event=_STR,
                ts={**_INT, "description": "epoch µs"},
                data={"type": "object"},
            )
        },
        "result": {
            "payload": _obj(
                ["type", "id", "time_in", "time_out", "data"],
                type={"const": "result"},
                id=_ID,
                time_in=_INT,
                time_out=_INT,
                data={"type": "object"},
            )
        },
        "error": {
            "payload": _obj(
                ["type", "error"],
                type={"const": "error"},
                id=_ID,
                error={"type": "object", "description": "RFC 9457 problem with `code`"},
            )
        },
        "pong": {"payload": _obj(["type"], type={"const": "pong"}, id=_ID, ts=_INT)},
        "heartbeat": {"payload": _obj(["type", "ts"], type={"const": "heartbeat"}, ts=_INT)},
    }
    for op, scope in protocol.COMMAND_SCOPES.items():
        model = _PARAMS.get(op)
        params = model.model_json_schema(schema_generator=WireSchema) if model else {"type": "object"}
        messages[f"command.{op}"] = {
            "summary": f"Command {op} (scope {scope})",
            "payload": _obj(["op", "id", "params"], op={"const": op}, id=_ID, params=params),
            "x-required-scope": scope,
        }
    channels: dict[str, Any] = {
        "session": {
            "address": "/v1/ws",
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
            "bindings": {"ws": {"query": _obj([], token=_STR, batch={"enum": ["0", "1"]})}},
        }
    }
    subscriptions = {
        name: {"scope": scope, "events": _events_of(name)} for name, scope in protocol.CHANNEL_SCOPES.items()
    }
    subscriptions["ticks:<SYMBOL>"] = {"scope": "market:read", "events": ["tick"]}
    client_ops = ["subscribe", "unsubscribe", "ping", "auth", *(f"command.{op}" for op in protocol.COMMAND_SCOPES)]
    server_ops = ["subscribed", "snapshot", "event", "result", "error", "pong", "heartbeat"]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "rt WebSocket",
            "version": __version__,
            "description": "Token from POST /v1/ws/token; see docs/protocol.md. Frames may batch messages in "
            "a JSON array. Close codes: 1001 shutdown, 4001 token, 4003 scope, 4008 slow consumer, "
            "4009 idle, 4029 rate limited.",
        },
        "servers": {"rt": {"host": "127.0.0.1:8080", "protocol": "ws"}},
        "channels": channels,
        "operations": {
            "send": {
                "action": "receive",
                "channel": {"$ref": "#/channels/session"},
                "messages": [{"$ref": f"#/channels/session/messages/{m}"} for m in client_ops],
            },
            "receive": {
                "action": "send",
                "channel": {"$ref": "#/channels/session"},
                "messages": [{"$ref": f"#/channels/session/messages/{m}"} for m in server_ops],
            },
        },
        "components": {"messages": messages},
        "x-subscriptions": subscriptions,
        "x-events": {name: {"channel": channel_of(name), "description": what} for name, what in EVENTS.items()},
    }
