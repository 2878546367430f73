"""The meta half of the PostgreSQL twin: the names and values the store keeps about itself."""

from __future__ import annotations

from rt.store import Meta
from rt.store._pg_base import Connections


class MetaTable(Connections, Meta):
    async def claim(self, name: str, value: str) -> str:
        """Store `value` under `name` unless a value is stored already; return the stored one."""
        # Two statements: an insert that waited for another process's insert of the same name does nothing, and the
        # select after it, in a snapshot of its own, reads the value that process committed.
        await self._execute("INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", name, value)
        stored = await self._pool.fetchval("SELECT value FROM meta WHERE name = $1", name)
        return str(stored)
