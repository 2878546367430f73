"""rt/session/commands without a socket: each command on a caller that has only what commands use (its principal,
the engine, the strategy runner, the dead man's switch), against the real engine on the paper venue."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rt.auth.principal import Principal
from rt.engine.engine import Engine
from rt.errors import BadRequest
from rt.runtime import Runtime, open_runtime
from rt.session import commands
from rt.strategies.runner import Runner
from tests.crash import settings

RESTING = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 1000}


class Caller:
    """A session as a command sees it, recording what the command asked of it."""

    def __init__(self, runtime: Runtime, principal: Principal) -> None:
        self.principal = principal
        self.engine: Engine = runtime.engine
        self.runner: Runner = runtime.runner
        self.cancel_on_disconnect = False
        self.placed_ids: list[str] = []
        self.armed: list[int] = []

    async def placed(self, order_id: str) -> None:
        self.placed_ids.append(order_id)

    async def configure(self, cancel_on_disconnect: bool) -> None:
        self.cancel_on_disconnect = cancel_on_disconnect

    async def cancel_after(self, timeout_s: int) -> dict[str, Any]:
        self.armed.append(timeout_s)
        return {"timeout_s": timeout_s}


@contextlib.asynccontextmanager
async def caller(data_dir: Path) -> AsyncIterator[Caller]:
    async with open_runtime(settings(data_dir)) as runtime:
        account = await runtime.keys.create_account("commands")
        record = (await runtime.keys.create(account.id, "full", "pro_plus")).record
        principal = Principal(record.account_id, record.id, frozenset(record.scopes), record.tier, record.test)
        yield Caller(runtime, principal)


async def run(c: Caller, op: str, **params: Any) -> dict[str, Any]:
    return await commands.COMMANDS[op](c, params)


async def test_an_order_placed_and_canceled_is_the_callers_and_known_to_its_switch(tmp_path: Path) -> None:
    async with caller(tmp_path) as c:
        placed = (await run(c, "order.place", **RESTING))["order"]
        assert placed["status"] == "open" and c.placed_ids == [placed["id"]]
        canceled = (await run(c, "order.cancel", order_id=placed["id"]))["order"]
        assert canceled["id"] == placed["id"] and canceled["status"] == "canceled"


async def test_a_position_opened_updated_and_closed(tmp_path: Path) -> None:
    async with caller(tmp_path) as c:
        opened = (await run(c, "position.open", symbol="ETH/USDT", side="long", quantity="0.1"))["position"]
        assert opened["status"] == "open" and opened["validation"]["cerberus_status"] == "passed"
        assert c.placed_ids == []  # filled at once: nothing left for cancel_on_disconnect
        updated = (await run(c, "position.update", position_id=opened["id"], stop_loss=3000))["position"]
        assert updated["stop_loss"] == 3000
        closed = (await run(c, "position.close", position_id=opened["id"]))["position"]
        assert closed["status"] == "closed"


async def test_a_pending_entry_is_the_callers_order(tmp_path: Path) -> None:
    async with caller(tmp_path) as c:
        opened = await run(
            c, "position.open", symbol="ETH/USDT", side="long", quantity="0.1", entry_type="limit", entry_price=1000
        )
        assert opened["position"]["status"] == "pending"
        book = c.engine.cached_book(c.principal.account_id)
        assert book is not None
        (entry,) = [o for o in book.orders.values() if o.status == "open"]
        assert c.placed_ids == [entry.id]  # a resting entry: canceled with the caller's other orders


async def test_session_commands_reach_the_caller(tmp_path: Path) -> None:
    async with caller(tmp_path) as c:
        assert await run(c, "session.configure", cancel_on_disconnect=True) == {"cancel_on_disconnect": True}
        assert await run(c, "orders.cancel_after", timeout_s=30) == {"timeout_s": 30}
        assert c.armed == [30]


async def test_the_kill_switch_closes_and_locks(tmp_path: Path) -> None:
    async with caller(tmp_path) as c:
        await run(c, "order.place", **RESTING)
        killed = await run(c, "emergency.kill", reason="drill", confirm=True)
        assert killed["trading_state"] == "locked" and killed["orders_canceled"] == 1


@pytest.mark.parametrize(
    ("op", "params"),
    [
        ("order.place", {**RESTING, "quantity": "lots"}),
        ("order.cancel", {}),
        ("position.close", {"position_id": "pos_1", "extra": 1}),
        ("orders.cancel_after", {"timeout_s": -1}),
        ("session.configure", {"cancel_on_disconnect": "maybe"}),
    ],
)
async def test_bad_params_are_a_400_naming_the_field(tmp_path: Path, op: str, params: dict[str, Any]) -> None:
    async with caller(tmp_path) as c:
        with pytest.raises(BadRequest) as refused:
            await commands.COMMANDS[op](c, params)
        assert refused.value.extra["errors"][0]["field"]
        assert c.placed_ids == [] and c.armed == []
