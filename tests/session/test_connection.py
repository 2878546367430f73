"""rt/session/connection: frames read by a session, and its idempotent commands, without a socket.

A Session reads from a fake WebSocket that hands it frames; what it sends is kept by a RecordingWire.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.websockets import WebSocketDisconnect

from rt.auth.principal import Principal
from rt.runtime import Runtime, open_runtime
from rt.session.connection import Session
from rt.session.protocol import Message
from tests.crash import Died, die_after_commit, settings
from tests.session.wires import RecordingWire

RESTING = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 1000}


class FakeSocket:
    """Hands the session its frames, then reports the client gone."""

    def __init__(self, frames: list[str]) -> None:
        self.frames = list(frames)

    async def receive(self) -> dict[str, Any]:
        if self.frames:
            return {"type": "websocket.receive", "text": self.frames.pop(0)}
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message: dict[str, Any]) -> None:
        return None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None


@contextlib.asynccontextmanager
async def running(data_dir: Path) -> AsyncIterator[Runtime]:
    async with open_runtime(settings(data_dir), background=True) as runtime:
        yield runtime


async def principal_of(runtime: Runtime, account_id: str | None = None) -> Principal:
    if account_id is None:
        account_id = (await runtime.keys.create_account("ws")).id
    record = (await runtime.keys.create(account_id, "full", "pro_plus")).record
    return Principal(record.account_id, record.id, frozenset(record.scopes), record.tier, record.test)


def session_of(runtime: Runtime, principal: Principal, frames: list[str] | None = None) -> Session:
    return Session(FakeSocket(frames or []).receive, runtime.sessions.context, principal, RecordingWire())


def sent(session: Session) -> list[dict[str, Any]]:
    assert isinstance(session.wire, RecordingWire)
    return session.wire.messages()


async def read_all(session: Session) -> list[dict[str, Any]]:
    """Let the session read every frame, finish the commands they started, and return what it would send."""
    with pytest.raises(WebSocketDisconnect):
        await session._reader()
    await session.finish_commands(10)
    return sent(session)


# idempotent commands across a crash


@pytest.mark.parametrize(
    "params",
    [{**RESTING, "idempotency_key": "ws-crash"}, {**RESTING, "client_order_id": "ws-cid"}],
    ids=["idempotency_key", "client_order_id"],
)
async def test_order_place_retried_after_a_crash_right_after_the_commit_places_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, Any]
) -> None:
    async with running(tmp_path) as runtime:
        principal = await principal_of(runtime)
        die_after_commit(runtime, monkeypatch)
        with pytest.raises(Died):
            await session_of(runtime, principal).command(Message(op="order.place", id=1, params=params))
        monkeypatch.undo()

    async with running(tmp_path) as runtime:
        stored, total = await runtime.store.list_orders(principal.account_id, None, None, None, 10, 0)
        assert total == 1
        session = session_of(runtime, principal)
        await session.command(Message(op="order.place", id=2, params=params))
        (answer,) = sent(session)
        assert answer["type"] == "result", answer
        assert answer["data"]["order"]["id"] == stored[0].id
        assert (await runtime.store.list_orders(principal.account_id, None, None, None, 10, 0))[1] == 1


# bounded messages


DEEP = '"<deep>"'


def frame_of(op: str, params: dict[str, Any], depth: int) -> str:
    """A command frame whose `<deep>` value is a list nested `depth` times (more than orjson can write)."""
    return orjson.dumps({"op": op, "id": 7, "params": params}).decode().replace(DEEP, "[" * depth + "1" + "]" * depth)


@pytest.mark.parametrize(
    ("op", "params"),
    [
        ("order.place", {**RESTING, "idempotency_key": "deep-1", "note": "<deep>"}),
        ("order.place", {**RESTING, "client_order_id": "deep-2", "note": "<deep>"}),
        ("emergency.kill", {"reason": "<deep>", "confirm": True, "idempotency_key": "deep-3"}),
    ],
    ids=["order-idempotency_key", "order-client_order_id", "kill"],
)
async def test_a_deeply_nested_command_is_a_400_error_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, op: str, params: dict[str, Any]
) -> None:
    async with running(tmp_path) as runtime:
        principal = await principal_of(runtime)
        answers = await read_all(session_of(runtime, principal, [frame_of(op, params, 300)]))
        (error,) = answers
        assert error["type"] == "error", error
        assert error["error"]["status"] == 400 and error["error"]["code"] == "BAD_REQUEST"
        assert "deep" in error["error"]["detail"]
        assert error["id"] == 7
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
        book = runtime.engine.cached_book(principal.account_id)
        assert book is None or book.state == "active"


async def test_a_message_at_the_depth_limit_is_read(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        principal = await principal_of(runtime)
        # The message object, params and 30 lists: 32 levels, the most a message may have.
        (answer,) = await read_all(session_of(runtime, principal, [frame_of("ping", {"x": "<deep>"}, 30)]))
        assert answer["type"] == "pong"
