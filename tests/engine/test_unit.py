"""rt/engine/unit: the commands of one write and its idempotency record commit once, together."""

from __future__ import annotations

import asyncio

import pytest

from rt.engine.unit import Unit, atomic
from rt.records.trading import IdempotencyRecord, StoredResponse, TradeBatch
from tests.engine.conftest import Rig


def record(rig: Rig, key: str = "k") -> IdempotencyRecord:
    return IdempotencyRecord(rig.account_id, key, StoredResponse("print", 201, b"{}"))


def count_saves(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> list[TradeBatch]:
    real = rig.store.save
    saved: list[TradeBatch] = []

    async def spy(batch: TradeBatch) -> None:
        saved.append(batch)
        await real(batch)

    monkeypatch.setattr(rig.store, "save", spy)
    return saved


async def test_commands_in_a_unit_commit_once_with_its_record(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await rig.book()
    saved = count_saves(rig, monkeypatch)
    async with atomic(rig.store) as unit:
        first = await rig.order("buy", "1", type="limit", price="90")
        second = await rig.order("buy", "1", type="limit", price="91")
        assert saved == [], "nothing is stored before the unit ends"
        assert await rig.event_names("orders") == [], "nothing is published before it is stored"
        unit.keep(record(rig))
    (batch,) = saved
    assert {o.id for o in batch.orders} == {first.id, second.id}
    assert [r.key for r in batch.responses] == ["k"]
    assert await rig.store.get_response(rig.account_id, "k") == record(rig).response
    assert await rig.event_names("orders") == ["order.created", "order.created"]


async def test_the_account_waits_for_the_unit_and_other_accounts_do_not(rig: Rig) -> None:
    other = rig.as_account((await rig.store.create_account("other")).id)
    async with atomic(rig.store):
        await rig.order("buy", "1", type="limit", price="90")
        waiting = asyncio.create_task(rig.order("buy", "1", type="limit", price="91"))
        await asyncio.wait_for(other.order("buy", "1", type="limit", price="90"), 5)
        await asyncio.sleep(0.05)
        assert not waiting.done(), "another writer of the account waits for the unit's commit"
    await asyncio.wait_for(waiting, 5)
    assert len(await rig.stored_orders()) == 2


async def test_a_task_started_inside_a_unit_writes_on_its_own(rig: Rig) -> None:
    async with atomic(rig.store):
        assert Unit.current() is not None
        inside = asyncio.create_task(rig.order("buy", "1", type="limit", price="90"))
        placed = await asyncio.wait_for(inside, 5)
        assert [o.id for o in await rig.stored_orders()] == [placed.id], "stored by its own commit, not the unit's"


async def test_a_failing_body_still_stores_what_its_commands_did_without_the_record(rig: Rig) -> None:
    with pytest.raises(RuntimeError):
        async with atomic(rig.store) as unit:
            placed = await rig.order("buy", "1", type="limit", price="90")
            raise RuntimeError("after the command")
    assert [o.id for o in await rig.stored_orders()] == [placed.id]
    assert not unit._responses
    assert await rig.store.get_response(rig.account_id, "k") is None


async def test_a_commit_that_fails_puts_the_book_back_and_unlocks(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await rig.book()

    async def broken(batch: TradeBatch) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(rig.store, "save", broken)
    with pytest.raises(OSError):
        async with atomic(rig.store) as unit:
            await rig.order("buy", "1", type="limit", price="90")
            unit.keep(record(rig))
    monkeypatch.undo()
    book = await rig.book()
    assert book.orders == {}
    assert not rig.engine.lock(rig.account_id).locked()
    assert await rig.store.get_response(rig.account_id, "k") is None
    await asyncio.wait_for(rig.order("buy", "1", type="limit", price="90"), 5)


async def test_a_unit_inside_a_unit_is_the_same_unit(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await rig.book()
    saved = count_saves(rig, monkeypatch)
    async with atomic(rig.store) as outer:
        async with atomic(rig.store) as inner:
            assert inner is outer
            await rig.order("buy", "1", type="limit", price="90")
        assert saved == []
    assert len(saved) == 1
