"""The SQLite twin of the Store (aiosqlite, WAL): the default, one file under the data dir."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Sequence
from contextlib import suppress
from datetime import datetime
from pathlib import Path

import aiosqlite

from rt.records.accounts import Account, ApiKey, AuditEntry, Usage, UsageDelta
from rt.records.ids import new_id
from rt.store import AccountExists, KeyLimitReached, Store
from rt.store._rows import AUDIT_COLUMNS, KEY_COLUMNS, account_of, audit_of, key_of, ms, utcnow
from rt.store._sqlite_alerts import AlertTables
from rt.store._sqlite_meta import MetaTable
from rt.store._sqlite_strategies import StrategyTables
from rt.store._sqlite_trading import TradingTables
from rt.store._sqlite_venues import VenueTables
from rt.store._sqlite_webhooks import WebhookTables
from rt.store.migrations import load
from rt.wire import dumps


def _owner_only(db: Path) -> None:
    """Create the database file 0600 in a 0700 directory, and tighten a database and WAL files left looser."""
    db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT, 0o600))
    # SQLite gives the -wal and -shm files it creates the mode of the database file.
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        with suppress(FileNotFoundError, PermissionError):
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)


class SQLiteStore(TradingTables, VenueTables, StrategyTables, MetaTable, WebhookTables, AlertTables, Store):
    def __init__(self, db: aiosqlite.Connection, reader: aiosqlite.Connection, inline: sqlite3.Connection) -> None:
        self._db = db
        self._inline = inline
        # Reads go through a connection of their own, so they never run inside another coroutine's transaction
        # on the writer (and see exactly what is committed, by this process or another).
        self._reader = reader
        self._path = ":memory:"
        # One connection serves every coroutine: without this, a second BEGIN fails inside the first's transaction
        # and a ROLLBACK would also undo writes other coroutines made meanwhile.
        self._write = asyncio.Lock()

    @classmethod
    async def open(cls, path: str) -> SQLiteStore:
        if path != ":memory:":
            _owner_only(Path(path))
        db = await aiosqlite.connect(path, isolation_level=None, check_same_thread=False)
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA busy_timeout=10000")
        # The engine's commits run on the loop's thread (`_commit_all`) on a connection of their own; the other writes
        # go through aiosqlite's, and the writer lock keeps the two apart.
        if path == ":memory:":
            reader = db  # a second connection would open a second, empty database
            inline = db._conn  # the same one, for the same reason
        else:
            reader = await aiosqlite.connect(path, isolation_level=None)
            await reader.execute("PRAGMA busy_timeout=10000")
            await reader.execute("PRAGMA query_only=ON")
            inline = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            # On the loop's thread a commit waits at most this long for another process's write (a CLI).
            inline.execute("PRAGMA busy_timeout=1000")
        # Checkpoints run in maintain(), off the commit path; a commit that also checkpoints was the orders' p99.
        for pragma in ("synchronous=NORMAL", "foreign_keys=ON", "wal_autocheckpoint=0"):
            await db.execute(f"PRAGMA {pragma}")
            inline.execute(f"PRAGMA {pragma}")
        store = cls(db, reader, inline)
        store._path = path
        await store._migrate()
        return store

    async def _migrate(self) -> None:
        # BEGIN IMMEDIATE: a CLI and a server opening a new data dir together migrate it once.
        async with self._transaction():
            async with self._db.execute("PRAGMA user_version") as cur:
                row = await cur.fetchone()
            current = int(row[0]) if row else 0
            for version, sql in load("sqlite"):
                if version > current:
                    for statement in sql.split(";\n"):
                        if statement.strip():
                            await self._db.execute(statement)
                    await self._db.execute(f"PRAGMA user_version={version:d}")

    async def maintain(self, every: float = 1.0) -> None:
        """Checkpoint the WAL into the database file, on a connection of its own, until cancelled."""
        if self._path == ":memory:":
            return
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await conn.execute("PRAGMA busy_timeout=1000")
            while True:
                await asyncio.sleep(every)
                try:
                    await conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except aiosqlite.OperationalError:
                    continue  # busy: the next round catches up
        finally:
            await conn.close()

    async def close(self) -> None:
        if self._path != ":memory:":
            async with self._write:
                await self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        if self._reader is not self._db:
            await self._reader.close()
            self._inline.close()
        await self._db.close()

    async def ping(self) -> None:
        await self._reader.execute_fetchall("SELECT 1")

    # accounts

    async def create_account(self, name: str, parent_id: str | None = None) -> Account:
        account = Account(id=new_id("acct"), name=name, parent_id=parent_id, created_at=utcnow())
        try:
            async with self._write:
                await self._db.execute(
                    "INSERT INTO accounts (id, name, parent_id, created_at) VALUES (?, ?, ?, ?)",
                    (account.id, name, parent_id, ms(account.created_at)),
                )
        except aiosqlite.IntegrityError as exc:
            if "UNIQUE" in str(exc):
                raise AccountExists(f"an account named {name!r} already exists") from None
            raise
        return account

    async def get_account(self, account_id: str) -> Account | None:
        row = await self._one("SELECT id, name, parent_id, created_at FROM accounts WHERE id = ?", account_id)
        return account_of(row) if row else None

    async def find_account(self, id_or_name: str) -> Account | None:
        row = await self._one(
            "SELECT id, name, parent_id, created_at FROM accounts WHERE id = ? OR name = ? ORDER BY id = ? DESC",
            id_or_name,
            id_or_name,
            id_or_name,
        )
        return account_of(row) if row else None

    async def list_accounts(self) -> list[Account]:
        rows = await self._all("SELECT id, name, parent_id, created_at FROM accounts ORDER BY created_at, id")
        return [account_of(r) for r in rows]

    async def count_accounts(self) -> int:
        row = await self._one("SELECT COUNT(*) FROM accounts")
        return int(row[0])

    # keys

    async def _insert_key(self, key: ApiKey) -> None:
        await self._db.execute(
            f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key.id,
                key.account_id,
                key.name,
                key.prefix,
                key.digest,
                " ".join(key.scopes),
                key.tier,
                ",".join(key.allow_ips),
                int(key.test),
                key.sealed_signing_secret,
                ms(key.created_at),
                ms(key.last_used_at),
                ms(key.revoked_at),
            ),
        )

    async def insert_key(self, key: ApiKey, max_active: int) -> None:
        async with self._transaction():
            # On the writer, inside BEGIN IMMEDIATE: the count and the insert are one step for every process.
            async with self._db.execute(
                "SELECT COUNT(*) FROM api_keys WHERE account_id = ? AND revoked_at IS NULL", (key.account_id,)
            ) as cur:
                row = await cur.fetchone()
            assert row is not None
            if int(row[0]) >= max_active:
                raise KeyLimitReached(
                    f"account already has {max_active} active keys; revoke one first", limit=max_active
                )
            await self._insert_key(key)

    async def rotate_key(self, old_id: str, new: ApiKey, at: datetime) -> ApiKey | None:
        async with self._transaction():
            cur = await self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (ms(at), old_id)
            )
            if cur.rowcount != 1:
                return None
            await self._insert_key(new)
        return await self.get_key(old_id)

    async def key_by_digest(self, digest: str) -> ApiKey | None:
        row = await self._one(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = ?", digest)
        return key_of(row) if row else None

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._one(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?", key_id)
        return key_of(row) if row else None

    async def list_keys(self, account_id: str | None = None, include_revoked: bool = True) -> list[ApiKey]:
        where, args = [], []
        if account_id is not None:
            where.append("account_id = ?")
            args.append(account_id)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._all(f"SELECT {KEY_COLUMNS} FROM api_keys {clause} ORDER BY created_at, id", *args)
        return [key_of(r) for r in rows]

    async def revoke_key(self, key_id: str, at: datetime) -> ApiKey | None:
        async with self._write:
            await self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (ms(at), key_id)
            )
        return await self.get_key(key_id)

    # audit

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        now = ms(utcnow())
        rows = [(ms(e.at) or now, e.account_id, e.key_id, e.action, e.ip, dumps(e.detail).decode()) for e in entries]
        await self._commit_all(
            [("INSERT INTO audit_log (at, account_id, key_id, action, ip, detail) VALUES (?, ?, ?, ?, ?, ?)", rows)]
        )

    async def list_audit(self, account_id: str | None, limit: int = 100) -> list[AuditEntry]:
        cols = AUDIT_COLUMNS
        # Newest by time, not by id: auth failures are buffered and land after key changes made later.
        if account_id is None:
            rows = await self._all(f"SELECT {cols} FROM audit_log ORDER BY at DESC, id DESC LIMIT ?", limit)
        else:
            rows = await self._all(
                f"SELECT {cols} FROM audit_log WHERE account_id = ? ORDER BY at DESC, id DESC LIMIT ?",
                account_id,
                limit,
            )
        return [audit_of(r) for r in rows]

    # usage

    async def add_usage(self, deltas: Sequence[UsageDelta]) -> None:
        if not deltas:
            return
        await self._commit_all(
            [
                (
                    "INSERT INTO key_usage (key_id, hour, requests, auth_failures, rate_limited) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id, hour) DO UPDATE SET "
                    "requests = requests + excluded.requests, "
                    "auth_failures = auth_failures + excluded.auth_failures, "
                    "rate_limited = rate_limited + excluded.rate_limited",
                    [(d.key_id, d.hour, d.requests, d.auth_failures, d.rate_limited) for d in deltas],
                ),
                (
                    "UPDATE api_keys SET last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE id = ?",
                    [(d.last_used_ms, d.key_id) for d in deltas if d.last_used_ms],
                ),
            ]
        )

    async def usage(self, key_id: str, since_hour: int) -> Usage:
        row = await self._one(
            "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(auth_failures), 0), COALESCE(SUM(rate_limited), 0) "
            "FROM key_usage WHERE key_id = ? AND hour >= ?",
            key_id,
            since_hour,
        )
        return Usage(int(row[0]), int(row[1]), int(row[2]))


def current_hour(now: float | None = None) -> int:
    return int((time.time() if now is None else now) // 3600)
