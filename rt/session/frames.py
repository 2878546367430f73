"""Every message rt sends over a WebSocket, and the RFC 6455 frame that carries it.

A server frame is not masked (RFC 6455 §5.1), so the bytes of one event's frame are the same for every subscriber:
the hub builds them once (`Outgoing`) and each session writes them to its transport as they are.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson

from rt.errors import RtError
from rt.wire import dumps

_TEXT = 0x81  # FIN + text opcode


def now_us() -> int:
    return time.time_ns() // 1000


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked text frame around a UTF-8 payload."""
    n = len(payload)
    if n < 126:
        return bytes((_TEXT, n)) + payload
    if n < 1 << 16:
        return bytes((_TEXT, 126)) + n.to_bytes(2, "big") + payload
    return bytes((_TEXT, 127)) + n.to_bytes(8, "big") + payload


class Outgoing:
    """One message for any number of sessions: its JSON, and its frame built on first use and then shared."""

    __slots__ = ("_framed", "payload")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self._framed: bytes | None = None

    @property
    def framed(self) -> bytes:
        framed = self._framed
        if framed is None:
            framed = self._framed = text_frame(self.payload)
        return framed


def batch(payloads: Iterable[bytes]) -> bytes:
    """Several messages in one JSON array: what a session that fell behind sends to catch up (`?batch=1`)."""
    return b"[" + b",".join(payloads) + b"]"


def message(value: dict[str, Any]) -> bytes:
    return dumps(value)


def event(channel: str, seq: int, name: str, data_json: bytes, ts_us: int | None = None) -> bytes:
    """An event message; `data_json` is the event's data, already serialized."""
    ts = ts_us if ts_us is not None else now_us()
    return (
        b'{"type":"event","channel":'
        + dumps(channel)
        + b',"seq":'
        + str(seq).encode()
        + b',"event":'
        + dumps(name)
        + b',"ts":'
        + str(ts).encode()
        + b',"data":'
        + data_json
        + b"}"
    )


def result(request_id: str | int, time_in: int, body: bytes) -> bytes:
    """A command's answer; `body` is its data, already serialized (as the idempotency record keeps it)."""
    return (
        b'{"type":"result","id":'
        + orjson.dumps(request_id)
        + b',"time_in":'
        + str(time_in).encode()
        + b',"time_out":'
        + str(now_us()).encode()
        + b',"data":'
        + body
        + b"}"
    )


def error(exc: RtError, request_id: str | int | None, time_in: int | None = None) -> bytes:
    return message(error_message(exc, request_id, time_in))


def error_message(exc: RtError, request_id: str | int | None, time_in: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "error": exc.problem()}
    if request_id is not None:
        frame["id"] = request_id
    if time_in is not None:
        frame["time_in"], frame["time_out"] = time_in, now_us()
    return frame


def error_body(request_id: str | int, body: bytes) -> bytes:
    """An error whose problem is already serialized (a refusal the idempotency record replays)."""
    return b'{"type":"error","id":' + orjson.dumps(request_id) + b',"error":' + body + b"}"


def pong(request_id: str | int | None) -> bytes:
    return message({"type": "pong", "id": request_id, "ts": now_us()})


def heartbeat() -> bytes:
    return message({"type": "heartbeat", "ts": now_us()})


def subscribed(channel: str, request_id: Any, seq: int) -> bytes:
    return message({"type": "subscribed", "channel": channel, "id": request_id, "seq": seq})


def unsubscribed(channel: str, request_id: Any) -> bytes:
    return message({"type": "unsubscribed", "channel": channel, "id": request_id})


def snapshot(channel: str, seq: int, data: Any, reset: bool = False) -> bytes:
    value: dict[str, Any] = {"type": "snapshot", "channel": channel, "seq": seq, "data": data}
    if reset:
        value["reset"] = True
    return message(value)


def shutdown() -> bytes:
    return message({"type": "event", "event": "server.shutdown", "ts": now_us()})


def revoked() -> bytes:
    return message(
        {
            "type": "error",
            "error": {"code": "API_KEY_REVOKED", "status": 401, "detail": "the key of this session was revoked"},
        }
    )
