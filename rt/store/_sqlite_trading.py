"""The trading half of the SQLite twin: books, positions, orders, events and idempotency keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from rt.records.events import Event
from rt.records.trading import Book, Order, Position, StoredResponse, TradeBatch
from rt.store import Trading
from rt.store._reads import PagedReads, by_price, event_of
from rt.store._rows import book_of, book_row, columns, from_row, response_row, to_row
from rt.store._sqlite_base import Connections
from rt.wire import dumps

if TYPE_CHECKING:
    from rt.store import Writing

T = TypeVar("T")

_POSITION_COLS = columns(Position)
_ORDER_COLS = columns(Order)


def _upsert(table: str, cols: Sequence[str]) -> str:
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c != "id")
    marks = ", ".join("?" for _ in cols)
    return f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) ON CONFLICT (id) DO UPDATE SET {updates}"


_UPSERT_POSITION = _upsert("positions", _POSITION_COLS)
_UPSERT_ORDER = _upsert("orders", _ORDER_COLS)
_BOOK_COLUMNS = (
    "account_id, balance, currency, state, envelope, day, day_realized, realized_total, alerts, updated_at, version"
)
_BOOK_VALUES = f"INTO books ({_BOOK_COLUMNS}) VALUES ({', '.join('?' for _ in _BOOK_COLUMNS.split(','))})"
_UPSERT_BOOK = f"INSERT {_BOOK_VALUES} ON CONFLICT (account_id) DO UPDATE SET " + ", ".join(
    f"{c} = excluded.{c}" for c in _BOOK_COLUMNS.split(", ")[1:]
)
_CREATE_BOOK = f"INSERT OR IGNORE {_BOOK_VALUES}"


_INSERT_EVENT = "INSERT INTO events (id, account_id, event, data, ts_us, published) VALUES (?, ?, ?, ?, ?, 0)"
_INSERT_RESPONSE = (
    "INSERT OR IGNORE INTO idempotency (account_id, key, fingerprint, status, body, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def _filters(
    account_id: str, status: Sequence[str] | None, exchange: str | None, symbol: str | None
) -> tuple[str, list[Any]]:
    where, args = ["account_id = ?"], [account_id]
    if status:
        where.append(f"status IN ({', '.join('?' for _ in status)})")
        args.extend(status)
    if exchange:
        where.append("exchange = ?")
        args.append(exchange)
    if symbol:
        where.append("symbol = ?")
        args.append(symbol)
    return " AND ".join(where), args


class _OnlyWriter:
    def __init__(self, store: TradingTables) -> None:
        self._store = store

    async def lock(self, account_id: str) -> int | None:
        return None

    async def load_book(self, account_id: str) -> Book | None:
        return await self._store.load_book(account_id)

    async def get_response(self, account_id: str, key: str) -> StoredResponse | None:
        return await self._store.get_response(account_id, key)

    async def save(self, batch: TradeBatch) -> None:
        await self._store.save(batch)


class TradingTables(Connections, PagedReads, Trading):
    async def save(self, batch: TradeBatch) -> None:
        # The engine serializes per account only: two accounts' commits share this one connection.
        statements = [
            (sql, rows)
            for sql, rows in (
                (_UPSERT_BOOK, [book_row(b) for b in batch.books]),
                (_UPSERT_POSITION, [to_row(p) for p in batch.positions]),
                (_UPSERT_ORDER, [to_row(o) for o in batch.orders]),
                (_INSERT_EVENT, [(e.id, e.account_id, e.event, dumps(e.data).decode(), e.ts_us) for e in batch.events]),
                (_INSERT_RESPONSE, [response_row(r) for r in batch.responses]),
            )
            if rows
        ]
        await self._commit_all(statements)

    async def load_books(self) -> list[Book]:
        """Every book with its open positions and resting orders."""
        return await self._books("", ())

    async def load_book(self, account_id: str) -> Book | None:
        books = await self._books(" AND account_id = ?", (account_id,))
        return books[0] if books else None

    async def _books(self, where: str, args: tuple[Any, ...]) -> list[Book]:
        rows = await self._all(f"SELECT {_BOOK_COLUMNS} FROM books WHERE 1 = 1{where}", *args)
        books = {row[0]: book_of(row) for row in rows}
        rows = await self._all(
            f"SELECT {', '.join(_POSITION_COLS)} FROM positions WHERE status IN ('open', 'pending'){where}", *args
        )
        for row in rows:
            position = from_row(Position, row)
            if position.account_id in books:
                books[position.account_id].positions[position.id] = position
        rows = await self._all(f"SELECT {', '.join(_ORDER_COLS)} FROM orders WHERE status = 'open'{where}", *args)
        for row in rows:
            order = from_row(Order, row)
            if order.account_id in books:
                books[order.account_id].orders[order.id] = order
        return list(books.values())

    async def create_book(self, book: Book) -> None:
        async with self._transaction("BEGIN"):
            await self._db.execute(_CREATE_BOOK, book_row(book))

    async def save_marks(self, marks: Sequence[tuple[str, Decimal]]) -> None:
        if not marks:
            return
        # One statement per price, not per position: every position on a market is marked to the same one.
        await self._commit_all(
            [
                (
                    "UPDATE positions SET current_price = ? "
                    "WHERE status = 'open' AND id IN (SELECT value FROM json_each(?))",
                    [(price, orjson.dumps(ids).decode()) for price, ids in by_price(marks).items()],
                )
            ]
        )

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[Writing]:
        """This store has one writing process (the data dir is locked): the engine's own books are the truth, and a
        write's batch commits in one transaction of its own when it is saved."""
        yield _OnlyWriter(self)

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
        rows = await self._all(
            f"SELECT {cols} FROM {table} WHERE {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            *args,
            limit,
            offset,
        )
        return [from_row(cls, r) for r in rows], total

    async def _by_id(self, cls: type[T], table: str, account_id: str, item_id: str) -> T | None:
        row = await self._one(
            f"SELECT {', '.join(columns(cls))} FROM {table} WHERE id = ? AND account_id = ?", item_id, account_id
        )
        return from_row(cls, row) if row else None

    async def recent_events(self, limit: int) -> list[Event]:
        """The last `limit` events of every account, oldest first, in the order they were stored."""
        rows = await self._all(
            "SELECT id, account_id, event, data, ts_us FROM ("
            "  SELECT rowid AS r, *, ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY rowid DESC) AS n FROM events"
            ") WHERE n <= ? ORDER BY r",
            limit,
        )
        return [event_of(row) for row in rows]

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        await self._commit_all([("UPDATE events SET published = 1 WHERE id = ?", [(i,) for i in event_ids])])

    async def unpublished_events(self, before_us: int, limit: int) -> list[Event]:
        rows = await self._all(
            "SELECT id, account_id, event, data, ts_us FROM events WHERE published = 0 AND ts_us < ? ORDER BY rowid "
            "LIMIT ?",
            before_us,
            limit,
        )
        return [event_of(row) for row in rows]

    async def get_response(self, account_id: str, key: str) -> StoredResponse | None:
        row = await self._one(
            "SELECT fingerprint, status, body FROM idempotency WHERE account_id = ? AND key = ?", account_id, key
        )
        return StoredResponse(row[0], int(row[1]), bytes(row[2])) if row else None

    async def expire_responses(self, older_than_ms: int) -> None:
        await self._commit_all([("DELETE FROM idempotency WHERE created_at < ?", [(older_than_ms,)])])
