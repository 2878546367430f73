"""A session's cancel_on_disconnect in the durable switch: kept before the answer with every order placed through the
session, dropped by a clean close and by turning it off, and never left behind to lapse by a failed turn-off."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from rt.coord.deadman import Lapsed, MemoryDeadman
from rt.runtime import Runtime
from rt.session import commands
from tests.session.test_connection import RESTING, principal_of, running, session_of

BEAT_MS = 100


async def lapsed_after_a_beat(runtime: Runtime) -> list[Lapsed]:
    await asyncio.sleep(BEAT_MS / 1000 + 0.05)  # the heartbeat's whole life, unmoved
    return await runtime.sessions.deadman.lapsed()


async def lapsed_soon(runtime: Runtime) -> list[Lapsed]:
    """What has lapsed once anything has: a loaded machine may run the beat's last renewal late."""
    found: list[Lapsed] = []
    for _ in range(50):
        await asyncio.sleep(BEAT_MS / 1000)
        found = await runtime.sessions.deadman.lapsed()
        if found:
            break
    return found


async def order_status(runtime: Runtime, account_id: str, order_id: str) -> str:
    stored = await runtime.store.get_order(account_id, order_id)
    assert stored is not None
    return stored.status


async def test_the_switch_keeps_every_order_placed_through_the_session_before_and_after_it_was_turned_on(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as runtime:
        runtime.sessions.deadman = MemoryDeadman(BEAT_MS)
        principal = await principal_of(runtime)
        session = session_of(runtime, principal)
        before = (await commands.order_place(session, dict(RESTING)))["order"]["id"]
        await commands.session_configure(session, {"cancel_on_disconnect": True})
        after = (await commands.order_place(session, dict(RESTING)))["order"]["id"]
        await commands.position_open(
            session, {"symbol": "ETH/USDT", "side": "long", "quantity": 0.01, "entry_price": 1000}
        )
        book = runtime.engine.cached_book(principal.account_id)
        assert book is not None
        entry = next(o.id for o in book.orders.values() if o.id not in (before, after))  # the limit entry's order
        (lapse,) = await lapsed_soon(runtime)
        assert lapse == Lapsed(session.session_id, principal.account_id, tuple(sorted([before, after, entry])))


async def test_a_clean_close_cancels_here_and_leaves_nothing_to_lapse(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        runtime.sessions.deadman = MemoryDeadman(BEAT_MS)
        principal = await principal_of(runtime)
        session = session_of(runtime, principal)
        await commands.session_configure(session, {"cancel_on_disconnect": True})
        order = (await commands.order_place(session, dict(RESTING)))["order"]["id"]
        await session.run()  # the fake client goes at once: a clean close
        assert await order_status(runtime, principal.account_id, order) == "canceled"
        assert await lapsed_after_a_beat(runtime) == []


async def test_turning_it_off_drops_the_record_and_a_failed_turn_off_leaves_it_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path) as runtime:
        deadman = runtime.sessions.deadman = MemoryDeadman(BEAT_MS)
        session = session_of(runtime, await principal_of(runtime))
        await commands.session_configure(session, {"cancel_on_disconnect": True})

        async def unreachable(session_id: str) -> Any:
            raise ConnectionError("Redis is unreachable")

        monkeypatch.setattr(deadman, "forget", unreachable)
        with pytest.raises(ConnectionError):
            await commands.session_configure(session, {"cancel_on_disconnect": False})
        # Still on, so its instance keeps beating it: a record it stopped beating would lapse and cancel after all.
        assert session.cancel_on_disconnect
        monkeypatch.undo()
        assert await commands.session_configure(session, {"cancel_on_disconnect": False}) == {
            "cancel_on_disconnect": False
        }
        assert await lapsed_after_a_beat(runtime) == []
