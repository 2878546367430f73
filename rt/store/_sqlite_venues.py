"""The venues half of the SQLite twin: each account's real venues, with credentials kept sealed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from rt.records.accounts import VenueRecord
from rt.store import VenueRecords
from rt.store._sqlite_base import Connections

_COLUMNS = "account_id, exchange, credentials, options, created_at"


def _venue(row: Any) -> VenueRecord:
    return VenueRecord(
        account_id=row[0],
        exchange=row[1],
        sealed_credentials=row[2],
        options=orjson.loads(row[3]),
        created_at=datetime.fromtimestamp(row[4] / 1000, UTC),
    )


class VenueTables(Connections, VenueRecords):
    async def put_venue(self, venue: VenueRecord) -> bool:
        """Insert, or replace the credentials and options of the same (account, exchange). True when it replaced."""
        async with self._write:
            async with self._db.execute(
                "SELECT 1 FROM venues WHERE account_id = ? AND exchange = ?", (venue.account_id, venue.exchange)
            ) as cur:
                existed = await cur.fetchone() is not None
            await self._db.execute(
                f"INSERT INTO venues ({_COLUMNS}) VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, exchange) "
                "DO UPDATE SET credentials = excluded.credentials, options = excluded.options",
                (
                    venue.account_id,
                    venue.exchange,
                    venue.sealed_credentials,
                    orjson.dumps(venue.options).decode(),
                    int(venue.created_at.timestamp() * 1000),
                ),
            )
        return existed

    async def list_venues(self, account_id: str | None = None) -> list[VenueRecord]:
        where, args = ("WHERE account_id = ?", (account_id,)) if account_id else ("", ())
        rows = await self._all(f"SELECT {_COLUMNS} FROM venues {where} ORDER BY account_id, exchange", *args)
        return [_venue(row) for row in rows]

    async def delete_venue(self, account_id: str, exchange: str) -> bool:
        async with self._write:
            cur = await self._db.execute(
                "DELETE FROM venues WHERE account_id = ? AND exchange = ?", (account_id, exchange)
            )
        return cur.rowcount == 1
