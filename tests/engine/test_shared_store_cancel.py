"""A command cancelled at any point, waiting for another instance's lock or mid-commit, leaks no lock, no
connection and no change the store does not have."""

from __future__ import annotations

import asyncio

from rt.engine import trading
from rt.engine.unit import atomic
from tests.engine.test_shared_store import LONG, Pair, pair

__all__ = ["pair"]


async def test_commands_cancelled_while_waiting_for_another_instance_leak_nothing(pair: Pair) -> None:
    a, b, account_id = pair.a, pair.b, pair.account_id
    await trading.open_position(a.engine, account_id, LONG)
    for _ in range(20):
        async with atomic(b.store):
            await b.engine.hold(account_id)  # b holds the account's lock
            task = asyncio.create_task(trading.open_position(a.engine, account_id, LONG))
            await asyncio.sleep(0.02)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert not a.engine.lock(account_id).locked()
    # every writer connection is back: 16 commands at once on 16 accounts all complete
    ids = [(await a.store.create_account(f"t{i}")).id for i in range(16)]
    async with asyncio.timeout(10):
        await asyncio.gather(*(trading.open_position(a.engine, i, LONG) for i in ids))
    # cancellation mid-commit
    for k in range(80):
        task = asyncio.create_task(trading.open_position(a.engine, account_id, LONG))
        for _ in range(k):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    _, total = await a.store.list_positions(account_id, ["open"], None, None, 100, 0)
    book = await a.store.load_book(account_id)
    cached = a.engine.cached_book(account_id)
    assert book is not None and cached is not None
    assert len(cached.positions) == total
    async with asyncio.timeout(10):
        await asyncio.gather(*(trading.open_position(a.engine, i, LONG) for i in ids))
