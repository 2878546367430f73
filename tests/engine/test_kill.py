"""rt/engine/kill: Charon's actions, their reports, events and the lock that outlives a restart."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rt.engine import kill, ledger
from rt.errors import Locked
from tests.engine.conftest import START, Rig

D = Decimal


async def trade(rig: Rig) -> dict[str, Any]:
    """Three open positions, two resting orders and one pending limit entry."""
    return {
        "positions": [
            await rig.position("long", "1"),
            await rig.position("short", "2"),
            await rig.position("long", "1", symbol="ETH/USDT"),
        ],
        "orders": [
            await rig.order("buy", "1", type="limit", price="90"),
            await rig.order("sell", "1", type="stop", stop_price="80"),
        ],
        "entry": await rig.position("short", "1", entry_price="120"),
    }


async def test_kill_cancels_closes_and_locks(rig: Rig) -> None:
    made = await trade(rig)
    report = await kill.execute(rig.engine, rig.account_id, "KILL", "drill", actor="key_test")

    assert report["command_id"].startswith("cmd_")
    assert (report["action"], report["account_id"], report["trading_state"]) == ("KILL", rig.account_id, "locked")
    assert (report["orders_canceled"], report["positions_closed"], report["positions_failed"]) == (3, 3, 0)
    assert isinstance(report["latency_ms"], float) and report["latency_ms"] >= 0

    book = await rig.book()
    assert book.state == "locked"
    assert book.open_positions() == []
    assert all(p.close_reason == "kill_switch" for p in made["positions"])
    assert {o.status for o in made["orders"]} == {"canceled"}
    assert await rig.stored_positions("open", "pending") == []
    assert await rig.stored_orders("open") == []
    (entry,) = [p for p in await rig.stored_positions() if p.id == made["entry"].id]
    assert entry.status == "canceled"
    assert ledger.equity(book) == book.balance
    assert book.balance == START + sum((p.realized_pnl for p in await rig.stored_positions()), D(0))

    with pytest.raises(Locked) as caught:
        await rig.order("buy", "1")
    assert (caught.value.status, caught.value.code) == (423, "TRADING_LOCKED")
    with pytest.raises(Locked):
        await rig.position("long", "1", entry_price="90")


async def test_kill_publishes_emergency_kill_triggered(rig: Rig) -> None:
    await trade(rig)
    report = await kill.execute(rig.engine, rig.account_id, "KILL", "drill", actor="key_test")

    (delivery,) = [d for d in await rig.history("risk") if d.event.event == "emergency.kill_triggered"]
    data = delivery.event.data
    assert (data["command_id"], data["reason"], data["actor"]) == (report["command_id"], "drill", "key_test")
    assert (data["orders_canceled"], data["positions_closed"], data["trading_state"]) == (3, 3, "locked")
    names = await rig.event_names("events")
    assert "emergency.kill_triggered" in names
    assert names.count("position.closed") == 3
    assert names.count("position.canceled") == 1  # the limit entry that never opened
    assert names.count("order.canceled") == 3
    assert names[-1] == "account.updated"


async def test_kill_closes_hundreds_of_positions(rig: Rig) -> None:
    await rig.limits(max_concurrent_positions=300)
    for i in range(200):
        await rig.position("long" if i % 2 else "short", "0.01")
    report = await kill.execute(rig.engine, rig.account_id, "KILL")
    assert (report["positions_closed"], report["positions_failed"]) == (200, 0)
    assert await rig.stored_positions("open") == []


async def test_the_lock_survives_a_restart_until_unlock(rig: Rig) -> None:
    await rig.position("long", "1")
    await kill.execute(rig.engine, rig.account_id, "KILL")

    rig = await rig.restart()
    assert (await rig.book()).state == "locked"
    with pytest.raises(Locked):
        await rig.order("buy", "1")

    report = await kill.execute(rig.engine, rig.account_id, "UNLOCK")
    assert report["trading_state"] == "active"
    assert (await rig.book()).state == "active"
    order = await rig.order("buy", "1")
    assert order.status == "filled"
    rig = await rig.restart()
    assert (await rig.book()).state == "active"


async def test_unlock_announces_the_state_on_the_risk_channel(rig: Rig) -> None:
    await kill.execute(rig.engine, rig.account_id, "LOCK")
    report = await kill.execute(rig.engine, rig.account_id, "UNLOCK")
    last = (await rig.history("risk"))[-1].event
    assert last.event == "risk.unlocked"
    assert (last.data["trading_state"], last.data["command_id"]) == ("active", report["command_id"])
    assert (last.data["action"], last.data["account_id"]) == ("UNLOCK", rig.account_id)
    assert "risk.limit_reached" not in await rig.event_names("events")


async def test_close_all_closes_positions_but_keeps_orders_and_trading(rig: Rig) -> None:
    made = await trade(rig)
    report = await kill.execute(rig.engine, rig.account_id, "CLOSE_ALL")

    assert (report["orders_canceled"], report["positions_closed"], report["trading_state"]) == (0, 3, "active")
    book = await rig.book()
    assert book.open_positions() == []
    assert {o.status for o in made["orders"]} == {"open"}
    assert book.positions[made["entry"].id].status == "pending"
    assert len(await rig.stored_orders("open")) == 3
    assert (await rig.order("buy", "1")).status == "filled"
    assert "emergency.kill_triggered" in await rig.event_names("risk")


async def test_flatten_cancels_and_closes_without_locking(rig: Rig) -> None:
    made = await trade(rig)
    report = await kill.execute(rig.engine, rig.account_id, "FLATTEN")

    assert (report["orders_canceled"], report["positions_closed"], report["trading_state"]) == (3, 3, "active")
    assert (await rig.book()).open_positions() == []
    assert {o.status for o in made["orders"]} == {"canceled"}
    assert await rig.stored_orders("open") == []
    assert (await rig.order("buy", "1")).status == "filled"


async def test_lock_only_locks(rig: Rig) -> None:
    made = await trade(rig)
    balance = (await rig.book()).balance
    report = await kill.execute(rig.engine, rig.account_id, "LOCK")

    assert (report["orders_canceled"], report["positions_closed"], report["trading_state"]) == (0, 0, "locked")
    book = await rig.book()
    assert len(book.open_positions()) == 3
    assert {o.status for o in made["orders"]} == {"open"}
    assert book.balance == balance
    with pytest.raises(Locked):
        await rig.order("buy", "1")
    assert "emergency.kill_triggered" in await rig.event_names("risk")


async def test_a_kill_on_an_empty_account_still_locks(rig: Rig) -> None:
    report = await kill.execute(rig.engine, rig.account_id, "KILL")
    assert (report["orders_canceled"], report["positions_closed"], report["trading_state"]) == (0, 0, "locked")
    with pytest.raises(Locked):
        await rig.position("long", "1")
