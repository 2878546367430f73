"""The webhooks part of the SQLite twin: endpoints, the outbox of deliveries (filled by a trigger on events), claims
and attempts."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from rt.records.events import Event
from rt.records.webhooks import Claimed, DeliveryAttempt, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from rt.store import Webhooks
from rt.store._reads import event_of
from rt.store._rows import (
    ATTEMPT_COLUMNS,
    ATTEMPTS_KEPT,
    DELIVERY_COLUMNS,
    ENDPOINT_COLUMNS,
    ERROR_CHARS,
    at_cap,
    attempt_row,
    capped,
    deliveries_of,
    delivery_id,
    dt_us,
    endpoint_row,
    endpoints_of,
    next_attempt,
    outside_text,
    subscriptions,
)
from rt.store._sqlite_base import Connections
from rt.wire import dumps

_ENDPOINTS = (
    f"SELECT {ENDPOINT_COLUMNS}, s.event FROM webhook_endpoints e "
    "LEFT JOIN webhook_subscriptions s ON s.endpoint_id = e.id"
)
_INSERT_ENDPOINT = (
    "INSERT INTO webhook_endpoints (id, account_id, url, description, secrets, status, disabled_reason, "
    "failing_since_us, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_ENDPOINT = (
    "UPDATE webhook_endpoints SET url = ?, description = ?, secrets = ?, status = ?, disabled_reason = ?, "
    "failing_since_us = ? WHERE id = ? AND account_id = ?"
)
_INSERT_SUBSCRIPTION = "INSERT INTO webhook_subscriptions (endpoint_id, event, n) VALUES (?, ?, ?)"
_DELIVERIES = f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d"
_CLAIMED = (
    f"SELECT {DELIVERY_COLUMNS}, ev.id, ev.account_id, ev.event, ev.data, ev.ts_us FROM webhook_deliveries d "
    "JOIN events ev ON ev.id = d.event_id"
)
_DUE = "d.status = 'pending' AND d.next_attempt_us <= ? AND d.claimed_until_us < ? AND e.status = 'enabled'"


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


class WebhookTables(Connections, Webhooks):
    async def _attempts_of(self, rows: Sequence[Any]) -> list[WebhookDelivery]:
        if not rows:
            return []
        ids = [row[0] for row in rows]
        attempts = await self._all(
            f"SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id IN ({_marks(ids)}) "
            "ORDER BY delivery_id, n",
            *ids,
        )
        return deliveries_of(rows, attempts)

    # endpoints

    async def create_endpoint(self, endpoint: WebhookEndpoint) -> None:
        async with self._transaction():
            await self._db.execute(_INSERT_ENDPOINT, endpoint_row(endpoint))
            await self._db.executemany(_INSERT_SUBSCRIPTION, subscriptions(endpoint))

    async def get_endpoint(self, account_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        rows = await self._all(
            f"{_ENDPOINTS} WHERE e.id = ? AND e.account_id = ? ORDER BY s.n", endpoint_id, account_id
        )
        found = endpoints_of(rows)
        return found[0] if found else None

    async def list_endpoints(self, account_id: str, limit: int, offset: int) -> tuple[list[WebhookEndpoint], int]:
        total = await self._count("SELECT COUNT(*) FROM webhook_endpoints WHERE account_id = ?", account_id)
        rows = await self._all(
            f"SELECT {ENDPOINT_COLUMNS}, s.event FROM ("
            "  SELECT * FROM webhook_endpoints WHERE account_id = ? ORDER BY created_at, id LIMIT ? OFFSET ?"
            ") e LEFT JOIN webhook_subscriptions s ON s.endpoint_id = e.id ORDER BY e.created_at, e.id, s.n",
            account_id,
            limit,
            offset,
        )
        return endpoints_of(rows), total

    async def update_endpoint(self, endpoint: WebhookEndpoint) -> None:
        row = endpoint_row(endpoint)
        async with self._transaction():
            cur = await self._db.execute(_UPDATE_ENDPOINT, (*row[2:8], endpoint.id, endpoint.account_id))
            if cur.rowcount != 1:
                return
            await self._db.execute("DELETE FROM webhook_subscriptions WHERE endpoint_id = ?", (endpoint.id,))
            await self._db.executemany(_INSERT_SUBSCRIPTION, subscriptions(endpoint))

    async def delete_endpoint(self, account_id: str, endpoint_id: str) -> bool:
        async with self._transaction():
            cur = await self._db.execute(
                "DELETE FROM webhook_endpoints WHERE id = ? AND account_id = ?", (endpoint_id, account_id)
            )
            return cur.rowcount == 1

    async def endpoint_answered(self, endpoint_id: str, ok: bool, at_us: int) -> int | None:
        async with self._write:
            rows = await self._db.execute_fetchall(
                "UPDATE webhook_endpoints SET failing_since_us = "
                + ("NULL" if ok else "COALESCE(failing_since_us, ?)")
                + " WHERE id = ? RETURNING failing_since_us",
                (endpoint_id,) if ok else (at_us, endpoint_id),
            )
        row = next(iter(rows), None)
        return None if row is None or row[0] is None else int(row[0])

    async def disable_endpoint(self, endpoint_id: str, reason: str) -> WebhookEndpoint | None:
        async with self._transaction():
            cur = await self._db.execute(
                "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = ? "
                "WHERE id = ? AND status = 'enabled'",
                (outside_text(reason, ERROR_CHARS), endpoint_id),
            )
            if cur.rowcount != 1:
                return None
            await self._db.execute(
                "UPDATE webhook_deliveries SET status = 'failed', next_attempt_us = NULL "
                "WHERE endpoint_id = ? AND status = 'pending'",
                (endpoint_id,),
            )
            rows = await self._db.execute_fetchall(f"{_ENDPOINTS} WHERE e.id = ? ORDER BY s.n", (endpoint_id,))
        return endpoints_of(list(rows))[0]

    # deliveries

    async def add_delivery(self, endpoint: WebhookEndpoint, event: Event) -> WebhookDelivery:
        delivery = WebhookDelivery(
            id=delivery_id(endpoint.id, event.id),
            account_id=endpoint.account_id,
            endpoint_id=endpoint.id,
            event_id=event.id,
            event=event.event,
            status="pending",
            attempts=0,
            created_at=dt_us(event.ts_us),
            next_attempt_at=dt_us(event.ts_us),
        )
        async with self._transaction():
            await self._db.execute(
                "INSERT INTO events (id, account_id, event, data, ts_us, published) VALUES (?, ?, ?, ?, ?, 1)",
                (event.id, event.account_id, event.event, dumps(event.data).decode(), event.ts_us),
            )
            await self._db.execute(
                "INSERT INTO webhook_deliveries (id, account_id, endpoint_id, event_id, event, created_us, "
                "next_attempt_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (delivery.id, delivery.account_id, endpoint.id, event.id, event.event, event.ts_us, event.ts_us),
            )
        return delivery

    async def claim_deliveries(
        self,
        instance: str,
        now_us: int,
        lease_us: int,
        limit: int,
        per_endpoint: int,
        busy: Mapping[str, int] | None = None,
        busy_accounts: Sequence[str] = (),
    ) -> list[Claimed]:
        if limit <= 0 or per_endpoint <= 0:
            return []
        full = at_cap(busy, per_endpoint)
        skip = f" AND d.endpoint_id NOT IN ({_marks(full)})" if full else ""
        if busy_accounts:
            skip += f" AND d.account_id NOT IN ({_marks(busy_accounts)})"

        def claim(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            candidates = conn.execute(
                "SELECT d.id, d.endpoint_id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
                f"WHERE {_DUE}{skip} ORDER BY d.next_attempt_us, d.id LIMIT ?",
                (now_us, now_us, *full, *busy_accounts, limit * 4),
            ).fetchall()
            chosen = capped(candidates, limit, per_endpoint, busy)
            if not chosen:
                return [], []
            conn.execute(
                f"UPDATE webhook_deliveries SET claimed_by = ?, claimed_until_us = ? WHERE id IN ({_marks(chosen)})",
                (instance, now_us + lease_us, *chosen),
            )
            rows = conn.execute(
                f"{_CLAIMED} WHERE d.id IN ({_marks(chosen)}) ORDER BY d.next_attempt_us, d.id", tuple(chosen)
            ).fetchall()
            endpoint_ids = sorted({row[2] for row in rows})
            endpoint_rows = conn.execute(
                f"{_ENDPOINTS} WHERE e.id IN ({_marks(endpoint_ids)}) ORDER BY e.id, s.n", tuple(endpoint_ids)
            ).fetchall()
            return rows, endpoint_rows

        # Every 0.5 s on every instance, mostly finding nothing: on the loop's thread, so the writer lock is held for
        # a fraction of a millisecond instead of four trips to aiosqlite's thread that an order would wait behind.
        # IMMEDIATE: it reads before it writes, and a CLI's write in between must not fail the upgrade.
        rows, endpoint_rows = await self._commit_inline(claim, "BEGIN IMMEDIATE")
        if not rows:
            return []
        endpoints = {e.id: e for e in endpoints_of(endpoint_rows)}
        return [
            Claimed(delivery=deliveries_of([row], [])[0], endpoint=endpoints[row[2]], event=event_of(row[10:]))
            for row in rows
        ]

    async def finish_attempt(
        self,
        delivery_id: str,
        instance: str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        next_attempt_us: int | None,
    ) -> bool:
        next_us = next_attempt(status, next_attempt_us)
        async with self._transaction():
            rows = await self._db.execute_fetchall(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = ?, next_attempt_us = ?, "
                "last_status_code = ?, claimed_by = NULL, claimed_until_us = 0 "
                "WHERE id = ? AND claimed_by = ? RETURNING attempts",
                (status, next_us, attempt.status_code, delivery_id, instance),
            )
            row = next(iter(rows), None)
            if row is None:
                return False
            n = int(row[0])
            await self._db.execute(
                f"INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                attempt_row(delivery_id, n, attempt),
            )
            await self._db.execute(
                "DELETE FROM webhook_attempts WHERE delivery_id = ? AND n <= ?", (delivery_id, n - ATTEMPTS_KEPT)
            )
        return True

    async def release_claims(self, instance: str) -> None:
        async with self._write:
            await self._db.execute(
                "UPDATE webhook_deliveries SET claimed_by = NULL, claimed_until_us = 0 WHERE claimed_by = ?",
                (instance,),
            )

    async def redeliver(self, account_id: str, delivery_id: str, now_us: int) -> WebhookDelivery | None:
        async with self._write:
            cur = await self._db.execute(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_us = ? WHERE id = ? AND account_id = ?",
                (now_us, delivery_id, account_id),
            )
            if cur.rowcount != 1:
                return None
        return await self.get_delivery(account_id, delivery_id)

    async def get_delivery(self, account_id: str, delivery_id: str) -> WebhookDelivery | None:
        row = await self._one(f"{_DELIVERIES} WHERE d.id = ? AND d.account_id = ?", delivery_id, account_id)
        return (await self._attempts_of([row]))[0] if row else None

    async def list_deliveries(
        self,
        account_id: str,
        endpoint_id: str | None,
        event: str | None,
        status: str | None,
        event_id: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[WebhookDelivery], int]:
        where, args = ["d.account_id = ?"], [account_id]
        for column, value in (
            ("endpoint_id", endpoint_id),
            ("event", event),
            ("status", status),
            ("event_id", event_id),
        ):
            if value is not None:
                where.append(f"d.{column} = ?")
                args.append(value)
        clause = " AND ".join(where)
        total = await self._count(f"SELECT COUNT(*) FROM webhook_deliveries d WHERE {clause}", *args)
        rows = await self._all(
            f"{_DELIVERIES} WHERE {clause} ORDER BY d.created_us DESC, d.id DESC LIMIT ? OFFSET ?", *args, limit, offset
        )
        return await self._attempts_of(rows), total

    async def delivery_backlog(self) -> int:
        return await self._count(
            "SELECT COUNT(*) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
            "WHERE d.status = 'pending' AND e.status = 'enabled'"
        )
