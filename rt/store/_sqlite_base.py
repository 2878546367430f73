"""What every group of SQLite tables shares: the writer, the reader, and how each is used."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

import aiosqlite

from rt import metrics

T = TypeVar("T")
Statements = Sequence[tuple[str, Sequence[Sequence[Any]]]]


class Connections:
    _db: aiosqlite.Connection
    _reader: aiosqlite.Connection
    _write: asyncio.Lock
    _inline: sqlite3.Connection  # the writer's database, for the commits that run on the loop's thread

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

    async def _commit_all(self, statements: Statements) -> None:
        """Statements with their rows, committed in one transaction, on the event loop's own thread."""
        await self._commit_inline(lambda conn: _execute_all(conn, statements))

    async def _commit_inline(self, work: Callable[[sqlite3.Connection], T], begin: str = "BEGIN") -> T:
        """`work` on the writer's database in one transaction, on the event loop's own thread; what it returns.

        Through aiosqlite each statement is a trip to its thread and back, and under a busy loop (a fan-out to
        thousands of clients) each trip waited for the GIL there and for a turn of the loop back: a commit of seven
        statements cost milliseconds. In WAL mode with synchronous=NORMAL a commit appends to the WAL without an
        fsync (checkpoints run in `maintain`, off this path), so the whole batch takes about 0.1 ms inline. The
        writer lock keeps every other write transaction out meanwhile, and nothing inside awaits: a cancel never
        cuts the transaction in two. Every write on a path that runs while the loop is busy goes this way (the
        engine's commits, the events it marks published, audit and usage flushes, webhook claims): one of them
        holding the lock across aiosqlite's trips was what an order waited on."""
        async with self._write:
            return _in_one_transaction(self._inline, work, begin)

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


def _execute_all(conn: sqlite3.Connection, statements: Statements) -> None:
    for sql, rows in statements:
        conn.executemany(sql, rows)


def _in_one_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], begin: str) -> T:
    conn.execute(begin)
    try:
        result = work(conn)
        with metrics.COMMIT_SECONDS.time():
            conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return result
