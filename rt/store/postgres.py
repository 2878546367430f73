"""The PostgreSQL twin of the Store (asyncpg): one database that any number of rt instances share.

Connections come from two pools per process (write transactions, everything else), 20 in all. The schema is
migrated at open, under an advisory lock, so instances that start together migrate it once. Money is TEXT holding
the exact decimal rt wrote, times are epoch milliseconds (events: microseconds), as in the SQLite twin.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from rt.records.accounts import Account, ApiKey, AuditEntry, Usage, UsageDelta
from rt.records.ids import new_id
from rt.store import AccountExists, KeyLimitReached, Store
from rt.store._pg_alerts import AlertTables
from rt.store._pg_base import status_count
from rt.store._pg_meta import MetaTable
from rt.store._pg_strategies import StrategyTables
from rt.store._pg_trading import TradingTables
from rt.store._pg_venues import VenueTables
from rt.store._pg_webhooks import WebhookTables
from rt.store._rows import ACCOUNT_COLUMNS, AUDIT_COLUMNS, KEY_COLUMNS, account_of, audit_of, key_of, ms, utcnow
from rt.store.migrations import load
from rt.wire import dumps

if TYPE_CHECKING:
    from rt.store._pg_base import Connection, Pool

POOL_MIN, POOL_MAX = 1, 10
# Write transactions (engine commands) take their connections from a pool of their own: a command that reads through
# the store while it holds its transaction's connection always finds a reader free, however many commands run.
WRITERS_MAX = 10
# A statement PostgreSQL has not answered in this long fails (a 503 to the client, which retries with its idempotency
# key): a server that hangs instead of refusing must not leave a market order to fill a minute late.
COMMAND_TIMEOUT_S = 10.0
MIGRATION_TIMEOUT_S = 3600.0
CLOSE_SECONDS = 10.0
SESSION = {
    "application_name": "rt",
    # Short statements only: planning one with the JIT costs more than running it.
    "jit": "off",
    # The server notices an instance gone silent (a network partition, not a crash: a crash closes the socket) in
    # about 25 s instead of hours, and ends its session, which frees the account locks its transaction held.
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}
# The advisory lock migrations run under: one fixed 64-bit key, any instance of any version takes the same.
MIGRATION_LOCK = 0x72745F6D69677261  # "rt_migra"


async def _keep_session(conn: object) -> None:
    """What a connection goes back to the pool with: rt sets no session state, takes transaction-scoped locks only
    and listens to nothing, so the default reset (one more round trip per use) has nothing to undo. asyncpg rolls
    back a transaction left open before calling this."""


async def migrate(conn: Connection) -> None:
    """Apply the migrations the database lacks, each once, recorded in schema_version."""
    async with conn.transaction():
        # Another instance may be migrating (it holds the lock), and a migration may take long: no command timeout.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=MIGRATION_TIMEOUT_S)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"
        )
        current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
        for version, sql in load("postgres"):
            if version > current:
                await conn.execute(sql, timeout=MIGRATION_TIMEOUT_S)
                await conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                    version,
                    int(time.time() * 1000),
                )


class PostgresStore(TradingTables, VenueTables, StrategyTables, MetaTable, WebhookTables, AlertTables, Store):
    def __init__(self, pool: Pool, writers: Pool) -> None:
        self._pool = pool
        self._writers = writers

    @classmethod
    async def open(cls, url: str, min_size: int = POOL_MIN, max_size: int = POOL_MAX) -> PostgresStore:
        """Connect (an unreachable server raises OSError or asyncpg's error, as asyncpg reports it) and migrate."""
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            reset=_keep_session,
            server_settings=SESSION,
            command_timeout=COMMAND_TIMEOUT_S,
        )
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
            writers = await asyncpg.create_pool(
                url,
                min_size=min(min_size, WRITERS_MAX),
                max_size=WRITERS_MAX,
                reset=_keep_session,
                server_settings=SESSION,
                command_timeout=COMMAND_TIMEOUT_S,
            )
        except BaseException:
            await pool.close()
            raise
        return cls(pool, writers)

    async def close(self) -> None:
        """Close the pool once every connection is back; past CLOSE_SECONDS, close the ones still out as well."""
        for pool in (self._writers, self._pool):
            try:
                await asyncio.wait_for(pool.close(), CLOSE_SECONDS)
            except TimeoutError:
                pool.terminate()

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def maintain(self) -> None:
        """PostgreSQL keeps itself (autovacuum): nothing to do until cancelled."""
        await asyncio.Event().wait()

    # accounts

    async def create_account(self, name: str, parent_id: str | None = None) -> Account:
        account = Account(id=new_id("acct"), name=name, parent_id=parent_id, created_at=utcnow())
        try:
            await self._execute(
                "INSERT INTO accounts (id, name, parent_id, created_at) VALUES ($1, $2, $3, $4)",
                account.id,
                name,
                parent_id,
                ms(account.created_at),
            )
        except asyncpg.UniqueViolationError:
            raise AccountExists(f"an account named {name!r} already exists") from None
        return account

    async def get_account(self, account_id: str) -> Account | None:
        row = await self._one(f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1", account_id)
        return account_of(row) if row else None

    async def find_account(self, id_or_name: str) -> Account | None:
        row = await self._one(
            f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1 OR name = $1 ORDER BY id = $1 DESC LIMIT 1",
            id_or_name,
        )
        return account_of(row) if row else None

    async def list_accounts(self) -> list[Account]:
        rows = await self._all(f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY created_at, id")
        return [account_of(r) for r in rows]

    async def count_accounts(self) -> int:
        return await self._count("SELECT COUNT(*) FROM accounts")

    # keys

    @staticmethod
    async def _lock_keys(conn: Connection, account_id: str) -> None:
        """Serialize key changes of one account across every instance: its row, locked until the transaction ends."""
        await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE", account_id)

    @staticmethod
    async def _insert_key(conn: Connection, key: ApiKey) -> None:
        await conn.execute(
            f"INSERT INTO api_keys ({KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            key.id,
            key.account_id,
            key.name,
            key.prefix,
            key.digest,
            " ".join(key.scopes),
            key.tier,
            ",".join(key.allow_ips),
            key.test,
            key.sealed_signing_secret,
            ms(key.created_at),
            ms(key.last_used_at),
            ms(key.revoked_at),
        )

    async def insert_key(self, key: ApiKey, max_active: int) -> None:
        async with self._transaction() as conn:
            await self._lock_keys(conn, key.account_id)
            active = await conn.fetchval(
                "SELECT COUNT(*) FROM api_keys WHERE account_id = $1 AND revoked_at IS NULL", key.account_id
            )
            if int(active) >= max_active:
                raise KeyLimitReached(
                    f"account already has {max_active} active keys; revoke one first", limit=max_active
                )
            await self._insert_key(conn, key)

    async def rotate_key(self, old_id: str, new: ApiKey, at: datetime) -> ApiKey | None:
        async with self._transaction() as conn:
            await self._lock_keys(conn, new.account_id)
            status = await conn.execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", ms(at), old_id
            )
            if status_count(status) != 1:
                return None
            await self._insert_key(conn, new)
        return await self.get_key(old_id)

    async def key_by_digest(self, digest: str) -> ApiKey | None:
        row = await self._one(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE digest = $1", digest)
        return key_of(row) if row else None

    async def get_key(self, key_id: str) -> ApiKey | None:
        row = await self._one(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1", key_id)
        return key_of(row) if row else None

    async def list_keys(self, account_id: str | None = None, include_revoked: bool = True) -> list[ApiKey]:
        where: list[str] = []
        args: list[Any] = []
        if account_id is not None:
            args.append(account_id)
            where.append(f"account_id = ${len(args)}")
        if not include_revoked:
            where.append("revoked_at IS NULL")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._all(f"SELECT {KEY_COLUMNS} FROM api_keys {clause} ORDER BY created_at, id", *args)
        return [key_of(r) for r in rows]

    async def revoke_key(self, key_id: str, at: datetime) -> ApiKey | None:
        await self._execute("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", ms(at), key_id)
        return await self.get_key(key_id)

    # audit

    async def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        now = ms(utcnow())
        await self._executemany(
            "INSERT INTO audit_log (at, account_id, key_id, action, ip, detail) VALUES ($1, $2, $3, $4, $5, $6)",
            [(ms(e.at) or now, e.account_id, e.key_id, e.action, e.ip, dumps(e.detail).decode()) for e in entries],
        )

    async def list_audit(self, account_id: str | None, limit: int = 100) -> list[AuditEntry]:
        cols = AUDIT_COLUMNS
        # Newest by time, not by id: auth failures are buffered and land after key changes made later.
        if account_id is None:
            rows = await self._all(f"SELECT {cols} FROM audit_log ORDER BY at DESC, id DESC LIMIT $1", limit)
        else:
            rows = await self._all(
                f"SELECT {cols} FROM audit_log WHERE account_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
                account_id,
                limit,
            )
        return [audit_of(r) for r in rows]

    # usage

    async def add_usage(self, deltas: Sequence[UsageDelta]) -> None:
        if not deltas:
            return
        # In key order, so instances flushing the same keys at once lock their rows in one order.
        ordered = sorted(deltas, key=lambda d: (d.key_id, d.hour))
        async with self._transaction() as conn:
            await conn.executemany(
                "INSERT INTO key_usage (key_id, hour, requests, auth_failures, rate_limited) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id, hour) DO UPDATE SET "
                "requests = key_usage.requests + excluded.requests, "
                "auth_failures = key_usage.auth_failures + excluded.auth_failures, "
                "rate_limited = key_usage.rate_limited + excluded.rate_limited",
                [(d.key_id, d.hour, d.requests, d.auth_failures, d.rate_limited) for d in ordered],
            )
            used = [(d.last_used_ms, d.key_id) for d in ordered if d.last_used_ms]
            if used:
                await conn.executemany(
                    "UPDATE api_keys SET last_used_at = GREATEST(COALESCE(last_used_at, 0), $1) WHERE id = $2", used
                )

    async def usage(self, key_id: str, since_hour: int) -> Usage:
        row = await self._one(
            "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(auth_failures), 0), COALESCE(SUM(rate_limited), 0) "
            "FROM key_usage WHERE key_id = $1 AND hour >= $2",
            key_id,
            since_hour,
        )
        assert row is not None
        return Usage(int(row[0]), int(row[1]), int(row[2]))
