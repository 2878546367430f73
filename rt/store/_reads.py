"""What both twins read alike, over their own `_page`, `_by_id` and `_all`: the listings and lookups of positions and
orders, the event counts, and an event from its row."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeVar

import orjson

from rt.records.events import Event
from rt.records.trading import Order, Position

T = TypeVar("T")


def by_price(marks: Sequence[tuple[str, Decimal]]) -> dict[str, list[str]]:
    """Marks grouped by price (as stored: text), each position under the last price given for it."""
    latest = {position_id: str(price) for position_id, price in marks}
    grouped: dict[str, list[str]] = {}
    for position_id, price in latest.items():
        grouped.setdefault(price, []).append(position_id)
    return grouped


def event_of(row: Any) -> Event:
    """An event from its columns: id, account_id, event, data, ts_us."""
    return Event(row[1], row[2], orjson.loads(row[3]), id=row[0], ts_us=row[4])


class PagedReads:
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
        raise NotImplementedError

    async def _by_id(self, cls: type[T], table: str, account_id: str, item_id: str) -> T | None:
        raise NotImplementedError

    async def _all(self, sql: str, *args: Any) -> list[Any]:
        raise NotImplementedError

    async def list_positions(
        self,
        account_id: str,
        status: Sequence[str] | None,
        exchange: str | None,
        symbol: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Position], int]:
        return await self._page(Position, "positions", account_id, status, exchange, symbol, limit, offset)

    async def get_position(self, account_id: str, position_id: str) -> Position | None:
        return await self._by_id(Position, "positions", account_id, position_id)

    async def list_orders(
        self,
        account_id: str,
        status: Sequence[str] | None,
        exchange: str | None,
        symbol: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Order], int]:
        return await self._page(Order, "orders", account_id, status, exchange, symbol, limit, offset)

    async def get_order(self, account_id: str, order_id: str) -> Order | None:
        return await self._by_id(Order, "orders", account_id, order_id)

    async def event_counts(self) -> dict[tuple[str, str], int]:
        """(account, event name) -> how many are stored."""
        rows = await self._all("SELECT account_id, event, COUNT(*) FROM events GROUP BY account_id, event")
        return {(row[0], row[1]): int(row[2]) for row in rows}
