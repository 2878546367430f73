"""The venues half of the PostgreSQL twin: each account's real venues, with credentials kept sealed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from rt.records.accounts import VenueRecord
from rt.store import VenueRecords
from rt.store._pg_base import Connections, status_count

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
        # xmax is 0 on a row version an INSERT made, and the updating transaction's id on one an UPDATE made.
        replaced = await self._pool.fetchval(
            f"INSERT INTO venues ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, exchange) "
            "DO UPDATE SET credentials = excluded.credentials, options = excluded.options RETURNING xmax <> 0",
            venue.account_id,
            venue.exchange,
            venue.sealed_credentials,
            orjson.dumps(venue.options).decode(),
            int(venue.created_at.timestamp() * 1000),
        )
        return bool(replaced)

    async def list_venues(self, account_id: str | None = None) -> list[VenueRecord]:
        if account_id:
            rows = await self._all(
                f"SELECT {_COLUMNS} FROM venues WHERE account_id = $1 ORDER BY account_id, exchange", account_id
            )
        else:
            rows = await self._all(f"SELECT {_COLUMNS} FROM venues ORDER BY account_id, exchange")
        return [_venue(row) for row in rows]

    async def delete_venue(self, account_id: str, exchange: str) -> bool:
        status = await self._execute("DELETE FROM venues WHERE account_id = $1 AND exchange = $2", account_id, exchange)
        return status_count(status) == 1
