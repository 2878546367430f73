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
