"""rt/store/_sqlite_base: a write cancelled while its BEGIN is under way leaves no transaction open behind it, so the
store's next write (and its close) work: a server stopped while its webhook worker claimed deliveries failed both."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rt.store.sqlite import SQLiteStore


async def test_a_write_cancelled_at_its_begin_leaves_the_writer_usable(tmp_path: Path) -> None:
    store = await SQLiteStore.open(str(tmp_path / "rt.db"))
    try:
        entered = asyncio.Event()

        async def write() -> None:
            async with store._transaction():
                entered.set()

        task = asyncio.create_task(write())
        await asyncio.sleep(0)  # the task holds the writer and waits on its BEGIN
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled() and not entered.is_set()

        account = await store.create_account("after")
        assert await store.get_account(account.id) is not None
    finally:
        await store.close()


async def test_a_save_cancelled_once_its_batch_is_in_the_writer_thread_returns_stored_and_is_cancelled_after(
    tmp_path: Path,
) -> None:
    from rt.records.events import Event
    from rt.records.trading import TradeBatch

    store = await SQLiteStore.open(str(tmp_path / "rt.db"))
    try:
        account = await store.create_account("alpha")
        events = [Event(account.id, "order.created", {"n": n}) for n in range(200)]
        saved = False

        async def save() -> None:
            nonlocal saved
            await store.save(TradeBatch(events=events))
            saved = True  # the engine books it as stored: what the database kept is never undone in memory
            await asyncio.sleep(1)

        task = asyncio.create_task(save())
        for _ in range(3):
            await asyncio.sleep(0)  # the batch is in the writer's thread
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

        assert saved and task.cancelled()  # stored, then cancelled at its next await
        assert len([e for e in await store.recent_events(500) if e.account_id == account.id]) == 200
        assert await store.get_account(account.id) is not None  # and the writer is free for the next write
        await store.create_account("after")
    finally:
        await store.close()
