"""The webhooks part of the PostgreSQL twin: endpoints, the outbox of deliveries (filled by a trigger on events), claims
and attempts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rt.records.events import Event
from rt.records.webhooks import Claimed, DeliveryAttempt, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from rt.store import Webhooks
from rt.store._pg_base import Connections, has_nul, status_count
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
from rt.wire import dumps

if TYPE_CHECKING:
    from rt.store._pg_base import Connection

_ENDPOINTS = (
    f"SELECT {ENDPOINT_COLUMNS}, s.event FROM webhook_endpoints e "
    "LEFT JOIN webhook_subscriptions s ON s.endpoint_id = e.id"
)
_INSERT_ENDPOINT = (
    "INSERT INTO webhook_endpoints (id, account_id, url, description, secrets, status, disabled_reason, "
    "failing_since_us, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
_UPDATE_ENDPOINT = (
    "UPDATE webhook_endpoints SET url = $1, description = $2, secrets = $3, status = $4, disabled_reason = $5, "
    "failing_since_us = $6 WHERE id = $7 AND account_id = $8"
)
_INSERT_SUBSCRIPTION = "INSERT INTO webhook_subscriptions (endpoint_id, event, n) VALUES ($1, $2, $3)"
_DELIVERIES = f"SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d"
_CLAIMED = (
    f"SELECT {DELIVERY_COLUMNS}, ev.id, ev.account_id, ev.event, ev.data, ev.ts_us FROM webhook_deliveries d "
    "JOIN events ev ON ev.id = d.event_id"
)
# Rows another claimer has locked are skipped, and a row it claimed and committed meanwhile is checked again against
# the conditions (READ COMMITTED re-reads a row it locks): no two claimers ever hold one delivery.
_CANDIDATES = (
    "SELECT d.id, d.endpoint_id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
    "WHERE d.status = 'pending' AND d.next_attempt_us <= $1 AND d.claimed_until_us < $1 AND e.status = 'enabled' "
    "AND NOT (d.endpoint_id = ANY($2::text[])) AND NOT (d.account_id = ANY($4::text[])) "
    "ORDER BY d.next_attempt_us, d.id LIMIT $3 FOR UPDATE OF d SKIP LOCKED"
)


async def _endpoints(conn: Connection, ids: Sequence[str]) -> list[WebhookEndpoint]:
    rows = await conn.fetch(f"{_ENDPOINTS} WHERE e.id = ANY($1::text[]) ORDER BY e.id, s.n", list(ids))
    return endpoints_of(rows)


class WebhookTables(Connections, Webhooks):
    async def _attempts_of(self, rows: Sequence[Any]) -> list[WebhookDelivery]:
        if not rows:
            return []
        attempts = await self._all(
            f"SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) "
            "ORDER BY delivery_id, n",
            [row[0] for row in rows],
        )
        return deliveries_of(rows, attempts)

    # endpoints

    async def create_endpoint(self, endpoint: WebhookEndpoint) -> None:
        async with self._transaction() as conn:
            await conn.execute(_INSERT_ENDPOINT, *endpoint_row(endpoint))
            await conn.executemany(_INSERT_SUBSCRIPTION, subscriptions(endpoint))

    async def get_endpoint(self, account_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        rows = await self._all(
            f"{_ENDPOINTS} WHERE e.id = $1 AND e.account_id = $2 ORDER BY s.n", endpoint_id, account_id
        )
        found = endpoints_of(rows)
        return found[0] if found else None

    async def list_endpoints(self, account_id: str, limit: int, offset: int) -> tuple[list[WebhookEndpoint], int]:
        total = await self._count("SELECT COUNT(*) FROM webhook_endpoints WHERE account_id = $1", account_id)
        rows = await self._all(
            f"SELECT {ENDPOINT_COLUMNS}, s.event FROM ("
            "  SELECT * FROM webhook_endpoints WHERE account_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3"
            ") e LEFT JOIN webhook_subscriptions s ON s.endpoint_id = e.id ORDER BY e.created_at, e.id, s.n",
            account_id,
            limit,
            offset,
        )
        return endpoints_of(rows), total

    async def update_endpoint(self, endpoint: WebhookEndpoint) -> None:
        row = endpoint_row(endpoint)
        async with self._transaction() as conn:
            status = await conn.execute(_UPDATE_ENDPOINT, *row[2:8], endpoint.id, endpoint.account_id)
            if status_count(status) != 1:
                return
            await conn.execute("DELETE FROM webhook_subscriptions WHERE endpoint_id = $1", endpoint.id)
            await conn.executemany(_INSERT_SUBSCRIPTION, subscriptions(endpoint))

    async def delete_endpoint(self, account_id: str, endpoint_id: str) -> bool:
        if has_nul((account_id, endpoint_id)):
            return False
        status = await self._execute(
            "DELETE FROM webhook_endpoints WHERE id = $1 AND account_id = $2", endpoint_id, account_id
        )
        return status_count(status) == 1

    async def endpoint_answered(self, endpoint_id: str, ok: bool, at_us: int) -> int | None:
        change = "NULL" if ok else "COALESCE(failing_since_us, $2)"
        args = (endpoint_id,) if ok else (endpoint_id, at_us)
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                f"UPDATE webhook_endpoints SET failing_since_us = {change} WHERE id = $1 RETURNING failing_since_us",
                *args,
            )
        return None if row is None or row[0] is None else int(row[0])

    async def disable_endpoint(self, endpoint_id: str, reason: str) -> WebhookEndpoint | None:
        async with self._transaction() as conn:
            status = await conn.execute(
                "UPDATE webhook_endpoints SET status = 'disabled', disabled_reason = $2 "
                "WHERE id = $1 AND status = 'enabled'",
                endpoint_id,
                outside_text(reason, ERROR_CHARS),
            )
            if status_count(status) != 1:
                return None
            await conn.execute(
                "UPDATE webhook_deliveries SET status = 'failed', next_attempt_us = NULL "
                "WHERE endpoint_id = $1 AND status = 'pending'",
                endpoint_id,
            )
            return (await _endpoints(conn, [endpoint_id]))[0]

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
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO events (id, account_id, event, data, ts_us, published) VALUES ($1, $2, $3, $4, $5, true)",
                event.id,
                event.account_id,
                event.event,
                dumps(event.data).decode(),
                event.ts_us,
            )
            await conn.execute(
                "INSERT INTO webhook_deliveries (id, account_id, endpoint_id, event_id, event, created_us, "
                "next_attempt_us) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                delivery.id,
                delivery.account_id,
                endpoint.id,
                event.id,
                event.event,
                event.ts_us,
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
        async with self._transaction() as conn:
            candidates = await conn.fetch(_CANDIDATES, now_us, full, limit * 4, list(busy_accounts))
            chosen = capped([(row[0], row[1]) for row in candidates], limit, per_endpoint, busy)
            if not chosen:
                return []
            await conn.execute(
                "UPDATE webhook_deliveries SET claimed_by = $1, claimed_until_us = $2 WHERE id = ANY($3::text[])",
                instance,
                now_us + lease_us,
                chosen,
            )
            rows = await conn.fetch(f"{_CLAIMED} WHERE d.id = ANY($1::text[]) ORDER BY d.next_attempt_us, d.id", chosen)
            endpoints = {e.id: e for e in await _endpoints(conn, sorted({row[2] for row in rows}))}
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
        async with self._transaction() as conn:
            n = await conn.fetchval(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, status = $3, next_attempt_us = $4, "
                "last_status_code = $5, claimed_by = NULL, claimed_until_us = 0 "
                "WHERE id = $1 AND claimed_by = $2 RETURNING attempts",
                delivery_id,
                instance,
                status,
                next_us,
                attempt.status_code,
            )
            if n is None:
                return False
            await conn.execute(
                f"INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                *attempt_row(delivery_id, int(n), attempt),
            )
            await conn.execute(
                "DELETE FROM webhook_attempts WHERE delivery_id = $1 AND n <= $2", delivery_id, int(n) - ATTEMPTS_KEPT
            )
        return True

    async def release_claims(self, instance: str) -> None:
        await self._execute(
            "UPDATE webhook_deliveries SET claimed_by = NULL, claimed_until_us = 0 WHERE claimed_by = $1", instance
        )

    async def redeliver(self, account_id: str, delivery_id: str, now_us: int) -> WebhookDelivery | None:
        if has_nul((account_id, delivery_id)):
            return None
        status = await self._execute(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_us = $3 WHERE id = $1 AND account_id = $2",
            delivery_id,
            account_id,
            now_us,
        )
        if status_count(status) != 1:
            return None
        return await self.get_delivery(account_id, delivery_id)

    async def get_delivery(self, account_id: str, delivery_id: str) -> WebhookDelivery | None:
        row = await self._one(f"{_DELIVERIES} WHERE d.id = $1 AND d.account_id = $2", delivery_id, account_id)
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
        where: list[str] = ["d.account_id = $1"]
        args: list[Any] = [account_id]
        filters = {"endpoint_id": endpoint_id, "event": event, "status": status, "event_id": event_id}
        for column, value in filters.items():
            if value is not None:
                args.append(value)
                where.append(f"d.{column} = ${len(args)}")
        clause = " AND ".join(where)
        total = await self._count(f"SELECT COUNT(*) FROM webhook_deliveries d WHERE {clause}", *args)
        n = len(args)
        rows = await self._all(
            f"{_DELIVERIES} WHERE {clause} ORDER BY d.created_us DESC, d.id DESC LIMIT ${n + 1} OFFSET ${n + 2}",
            *args,
            limit,
            offset,
        )
        return await self._attempts_of(rows), total

    async def delivery_backlog(self) -> int:
        return await self._count(
            "SELECT COUNT(*) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id "
            "WHERE d.status = 'pending' AND e.status = 'enabled'"
        )
