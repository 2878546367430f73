"""What every group of SQLite tables shares: the writer, the reader, and how each is used."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiosqlite

from rt import metrics


class Connections:
    _db: aiosqlite.Connection
    _reader: aiosqlite.Connection
    _write: asyncio.Lock

    @asynccontextmanager
    async def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> AsyncIterator[None]:
        async with self._write:
            try:
                await self._db.execute(begin)
            except asyncio.CancelledError:
                # aiosqlite runs the statement in its thread even when the await is cancelled: end what it began.
                with suppress(aiosqlite.Error):
                    await self._db.execute("ROLLBACK")
                raise
            try:
                yield
                with metrics.COMMIT_SECONDS.time():
                    await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    # Every read runs its statement to the end in one call (execute_fetchall): a statement left open across an await
    # would hold the reader's snapshot, and reads queued behind it would miss writes that had already committed.
    async def _one(self, sql: str, *args: Any) -> Any:
        rows = await self._reader.execute_fetchall(sql, args)
        return next(iter(rows), None)

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        rows = await self._reader.execute_fetchall(sql, args)
        return list(rows)

    async def _count(self, sql: str, *args: Any) -> int:
        row = await self._one(sql, *args)
        return int(row[0]) if row else 0
