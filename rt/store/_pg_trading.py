"""The trading half of the PostgreSQL twin: books, positions, orders, events and idempotency keys, and the write
transaction that holds an account's advisory lock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from rt.records.events import Event
from rt.records.trading import Book, Order, Position, StoredResponse, TradeBatch
from rt.store import Trading
from rt.store._pg_base import Connections, has_nul, transaction
from rt.store._reads import PagedReads, event_of
from rt.store._rows import book_of, book_row, columns, from_row, response_row, to_row
from rt.wire import dumps

if TYPE_CHECKING:
    from rt.store._pg_base import Connection

T = TypeVar("T")

_POSITION_COLS = columns(Position)
_ORDER_COLS = columns(Order)
_BOOK_COLS = (
    "account_id",
    "balance",
    "currency",
    "state",
    "envelope",
    "day",
    "day_realized",
    "realized_total",
    "alerts",
    "updated_at",
    "version",
)


def _insert(table: str, cols: Sequence[str]) -> str:
    marks = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})"


def _upsert(table: str, cols: Sequence[str]) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols[1:])
    return f"{_insert(table, cols)} ON CONFLICT ({cols[0]}) DO UPDATE SET {updates}"


_UPSERT_POSITION = _upsert("positions", _POSITION_COLS)
_UPSERT_ORDER = _upsert("orders", _ORDER_COLS)
_UPSERT_BOOK = _upsert("books", _BOOK_COLS)
_CREATE_BOOK = f"{_insert('books', _BOOK_COLS)} ON CONFLICT (account_id) DO NOTHING"
_INSERT_EVENT = "INSERT INTO events (id, account_id, event, data, ts_us, published) VALUES ($1, $2, $3, $4, $5, false)"
_INSERT_RESPONSE = (
    "INSERT INTO idempotency (account_id, key, fingerprint, status, body, created_at) VALUES ($1, $2, $3, $4, $5, $6) "
    "ON CONFLICT (account_id, key) DO NOTHING"
)
_SELECT_BOOK = f"SELECT {', '.join(_BOOK_COLS)} FROM books"
_SELECT_POSITIONS = f"SELECT {', '.join(_POSITION_COLS)} FROM positions WHERE status IN ('open', 'pending')"
_SELECT_ORDERS = f"SELECT {', '.join(_ORDER_COLS)} FROM orders WHERE status = 'open'"
# Any 64-bit key will do: two accounts that share one only wait for each other.
_LOCK_ACCOUNT = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"


def _by_id(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows in the order of their ids (a stable sort: of one id, the last still wins), so two transactions that
    touch the same rows lock them in the same order and never deadlock."""
    return sorted(rows, key=lambda row: row[0])


async def _save(conn: Connection, batch: TradeBatch) -> None:
    if batch.books:
        await conn.executemany(_UPSERT_BOOK, _by_id([book_row(b) for b in batch.books]))
    if batch.positions:
        await conn.executemany(_UPSERT_POSITION, _by_id([to_row(p) for p in batch.positions]))
    if batch.orders:
        await conn.executemany(_UPSERT_ORDER, _by_id([to_row(o) for o in batch.orders]))
    if batch.events:
        events = [(e.id, e.account_id, e.event, dumps(e.data).decode(), e.ts_us) for e in batch.events]
        await conn.executemany(_INSERT_EVENT, events)
    if batch.responses:
        await conn.executemany(_INSERT_RESPONSE, [response_row(r) for r in batch.responses])


def _books(book_rows: Sequence[Any], position_rows: Sequence[Any], order_rows: Sequence[Any]) -> list[Book]:
    books = {row[0]: book_of(row) for row in book_rows}
    for row in position_rows:
        position = from_row(Position, row)
        if position.account_id in books:
            books[position.account_id].positions[position.id] = position
    for row in order_rows:
        order = from_row(Order, row)
        if order.account_id in books:
            books[order.account_id].orders[order.id] = order
    return list(books.values())


async def _load_book(conn: Connection, account_id: str) -> Book | None:
    row = await conn.fetchrow(f"{_SELECT_BOOK} WHERE account_id = $1", account_id)
    if row is None:
        return None
    positions = await conn.fetch(f"{_SELECT_POSITIONS} AND account_id = $1", account_id)
    orders = await conn.fetch(f"{_SELECT_ORDERS} AND account_id = $1", account_id)
    return _books([row], positions, orders)[0]


async def _get_response(conn: Connection, account_id: str, key: str) -> StoredResponse | None:
    if has_nul((account_id, key)):
        return None
    row = await conn.fetchrow(
        "SELECT fingerprint, status, body FROM idempotency WHERE account_id = $1 AND key = $2", account_id, key
    )
    return StoredResponse(row[0], int(row[1]), bytes(row[2])) if row else None


class PgWriting:
    """A Writing on one pooled connection, inside one READ COMMITTED transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def lock(self, account_id: str) -> int:
        await self._conn.execute(_LOCK_ACCOUNT, account_id)
        # A statement of its own: in READ COMMITTED it sees every write committed before the lock was granted.
        version = await self._conn.fetchval("SELECT version FROM books WHERE account_id = $1", account_id)
        return -1 if version is None else int(version)

    async def load_book(self, account_id: str) -> Book | None:
        return await _load_book(self._conn, account_id)

    async def get_response(self, account_id: str, key: str) -> StoredResponse | None:
        return await _get_response(self._conn, account_id, key)

    async def save(self, batch: TradeBatch) -> None:
        await _save(self._conn, batch)


def _filters(
    account_id: str, status: Sequence[str] | None, exchange: str | None, symbol: str | None
) -> tuple[str, list[Any]]:
    where: list[str] = ["account_id = $1"]
    args: list[Any] = [account_id]
    if status:
        args.append(list(status))
        where.append(f"status = ANY(${len(args)}::text[])")
    if exchange:
        args.append(exchange)
        where.append(f"exchange = ${len(args)}")
    if symbol:
        args.append(symbol)
        where.append(f"symbol = ${len(args)}")
    return " AND ".join(where), args


class TradingTables(Connections, PagedReads, Trading):
    async def save(self, batch: TradeBatch) -> None:
        async with self._transaction() as conn:
            await _save(conn, batch)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[PgWriting]:
        async with self._writers.acquire() as conn, transaction(conn):
            yield PgWriting(conn)

    async def load_books(self) -> list[Book]:
        """Every book with its open positions and resting orders, from one snapshot."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            books = await conn.fetch(_SELECT_BOOK)
            return _books(books, await conn.fetch(_SELECT_POSITIONS), await conn.fetch(_SELECT_ORDERS))

    async def load_book(self, account_id: str) -> Book | None:
        if has_nul((account_id,)):
            return None
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            return await _load_book(conn, account_id)

    async def create_book(self, book: Book) -> None:
        await self._execute(_CREATE_BOOK, *book_row(book))

    async def save_marks(self, marks: Sequence[tuple[str, Decimal]]) -> None:
        if not marks:
            return
        # One price per position (the last one given), in id order like every other write of positions: grouped by
        # price (as on SQLite, which has one writer), rows would be locked market by market and could deadlock with
        # a commit writing positions of two markets.
        latest = {position_id: str(price) for position_id, price in marks}
        await self._executemany(
            "UPDATE positions SET current_price = $2 WHERE id = $1 AND status = 'open'", sorted(latest.items())
        )

    async def _page(
        self,
        cls: type[T],
        table: str,
        account_id: str,
        status: Sequence[str] | None,
        exchange: str | None,
        symbol: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[T], int]:
        cols = ", ".join(columns(cls))
        where, args = _filters(account_id, status, exchange, symbol)
        total = await self._count(f"SELECT COUNT(*) FROM {table} WHERE {where}", *args)
        n = len(args)
        rows = await self._all(
            f"SELECT {cols} FROM {table} WHERE {where} ORDER BY created_at DESC, id LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            offset,
        )
        return [from_row(cls, r) for r in rows], total

    async def _by_id(self, cls: type[T], table: str, account_id: str, item_id: str) -> T | None:
        row = await self._one(
            f"SELECT {', '.join(columns(cls))} FROM {table} WHERE id = $1 AND account_id = $2", item_id, account_id
        )
        return from_row(cls, row) if row else None

    async def recent_events(self, limit: int) -> list[Event]:
        """The last `limit` events of every account, oldest first, in the order they were stored."""
        rows = await self._all(
            "SELECT id, account_id, event, data, ts_us FROM ("
            "  SELECT *, ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY seq DESC) AS n FROM events"
            ") AS e WHERE n <= $1 ORDER BY seq",
            limit,
        )
        return [event_of(row) for row in rows]

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        if event_ids:
            await self._execute("UPDATE events SET published = true WHERE id = ANY($1::text[])", sorted(event_ids))

    async def unpublished_events(self, before_us: int, limit: int) -> list[Event]:
        rows = await self._all(
            "SELECT id, account_id, event, data, ts_us FROM events WHERE NOT published AND ts_us < $1 ORDER BY seq "
            "LIMIT $2",
            before_us,
            limit,
        )
        return [event_of(row) for row in rows]

    async def get_response(self, account_id: str, key: str) -> StoredResponse | None:
        async with self._pool.acquire() as conn:
            return await _get_response(conn, account_id, key)

    async def expire_responses(self, older_than_ms: int) -> None:
        await self._execute("DELETE FROM idempotency WHERE created_at < $1", older_than_ms)
