"""The meta half of the SQLite twin: the names and values the store keeps about itself."""

from __future__ import annotations

from rt.store import Meta
from rt.store._sqlite_base import Connections


class MetaTable(Connections, Meta):
    async def claim(self, name: str, value: str) -> str:
        """Store `value` under `name` unless a value is stored already; return the stored one."""
        async with self._transaction():
            await self._db.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING", (name, value)
            )
            async with self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)) as cur:
                row = await cur.fetchone()
        return str(row[0]) if row else value
