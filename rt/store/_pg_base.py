"""What every group of PostgreSQL tables shares: the pool, transactions on one of its connections, and reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from rt import metrics
from rt.errors import BadRequest

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]


def has_nul(args: tuple[Any, ...]) -> bool:
    """PostgreSQL text holds no NUL character: a lookup by text that has one can match nothing stored."""
    return any(isinstance(arg, str) and "\x00" in arg for arg in args)


@contextmanager
def refusing_nul() -> Iterator[None]:
    """Text PostgreSQL cannot hold is the request's fault, not the server's."""
    try:
        yield
    except asyncpg.CharacterNotInRepertoireError as exc:
        raise BadRequest("text with a NUL character (\\u0000) cannot be stored") from exc


@asynccontextmanager
async def transaction(conn: Connection) -> AsyncIterator[Connection]:
    """READ COMMITTED on `conn`: commit when the block ends cleanly, roll back on any exception."""
    tx = conn.transaction()
    await tx.start()
    try:
        with refusing_nul():
            yield conn
    except BaseException:
        await tx.rollback()
        raise
    with metrics.COMMIT_SECONDS.time():
        await tx.commit()


def status_count(status: str) -> int:
    """The row count of a command status such as 'UPDATE 1' or 'DELETE 0'."""
    return int(status.rsplit(" ", 1)[-1])


class Connections:
    _pool: Pool
    _writers: Pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        async with self._pool.acquire() as conn, transaction(conn):
            yield conn

    # Reads run on any pooled connection, each statement in its own snapshot of what is committed.
    async def _one(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return None if has_nul(args) else await self._pool.fetchrow(sql, *args)

    async def _all(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return [] if has_nul(args) else await self._pool.fetch(sql, *args)

    async def _count(self, sql: str, *args: Any) -> int:
        value = None if has_nul(args) else await self._pool.fetchval(sql, *args)
        return int(value or 0)

    async def _execute(self, sql: str, *args: Any) -> str:
        with refusing_nul():
            return await self._pool.execute(sql, *args)

    async def _executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with refusing_nul():
            await self._pool.executemany(sql, rows)
