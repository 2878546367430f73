"""The alerts part of the SQLite twin: inbound alert hooks and the log of what they received."""

from __future__ import annotations

from datetime import datetime

from rt.records.alerts import AlertEntry, AlertHook
from rt.store import AlertHooks
from rt.store._alert_rows import ENTRY_COLUMNS, HOOK_COLUMNS, entry_of, entry_row, hook_of, hook_row, ms
from rt.store._sqlite_base import Connections

_HOOK = ", ".join(HOOK_COLUMNS)
_ENTRY = ", ".join(ENTRY_COLUMNS)


class AlertTables(Connections, AlertHooks):
    async def create_hook(self, hook: AlertHook) -> None:
        async with self._write:
            await self._db.execute(
                f"INSERT INTO alert_hooks ({_HOOK}) VALUES ({', '.join('?' * len(HOOK_COLUMNS))})", hook_row(hook)
            )

    async def get_hook(self, hook_id: str) -> AlertHook | None:
        row = await self._one(f"SELECT {_HOOK} FROM alert_hooks WHERE id = ?", hook_id)
        return hook_of(row) if row else None

    async def list_hooks(self, account_id: str, limit: int, offset: int) -> tuple[list[AlertHook], int]:
        where = "WHERE account_id = ? AND deleted_at IS NULL"
        total = await self._count(f"SELECT COUNT(*) FROM alert_hooks {where}", account_id)
        rows = await self._all(
            f"SELECT {_HOOK} FROM alert_hooks {where} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            account_id,
            limit,
            offset,
        )
        return [hook_of(r) for r in rows], total

    async def delete_hook(self, account_id: str, hook_id: str, at: datetime) -> bool:
        async with self._write:
            cursor = await self._db.execute(
                "UPDATE alert_hooks SET deleted_at = ? WHERE id = ? AND account_id = ? AND deleted_at IS NULL",
                (ms(at), hook_id, account_id),
            )
            return cursor.rowcount == 1

    async def add_alert(self, entry: AlertEntry) -> None:
        async with self._write:
            await self._db.execute(
                f"INSERT INTO alert_log ({_ENTRY}) VALUES ({', '.join('?' * len(ENTRY_COLUMNS))})", entry_row(entry)
            )

    async def list_alerts(
        self, account_id: str, hook_id: str | None, limit: int, offset: int
    ) -> tuple[list[AlertEntry], int]:
        where, args = "WHERE account_id = ?", [account_id]
        if hook_id is not None:
            where, args = where + " AND hook_id = ?", [*args, hook_id]
        total = await self._count(f"SELECT COUNT(*) FROM alert_log {where}", *args)
        rows = await self._all(
            f"SELECT {_ENTRY} FROM alert_log {where} ORDER BY received_at DESC, rowid DESC LIMIT ? OFFSET ?",
            *args,
            limit,
            offset,
        )
        return [entry_of(r) for r in rows], total
