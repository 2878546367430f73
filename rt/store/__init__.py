"""The Store seam: what rt keeps. `sqlite` is the default twin; the URL picks the twin with a lazy import."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from rt.errors import RtError
from rt.records.accounts import Account, ApiKey, AuditEntry, Usage, UsageDelta, VenueRecord
from rt.records.trading import StoredResponse, TradeBatch

if TYPE_CHECKING:
    from rt.records.alerts import AlertEntry, AlertHook
    from rt.records.events import Event
    from rt.records.strategies import StrategyRecord
    from rt.records.trading import Book, Order, Position
    from rt.records.webhooks import Claimed, DeliveryAttempt, DeliveryStatus, WebhookDelivery, WebhookEndpoint


class KeyLimitReached(RtError):
    status, code = 409, "KEY_LIMIT_REACHED"


class AccountExists(RtError):
    status, code = 409, "ACCOUNT_EXISTS"


class Writing(Protocol):
    """One write of the trading core in one transaction. An account it locks stays locked until the transaction ends,
    for every process on the store; the transaction commits when its block ends cleanly and rolls back otherwise."""

    async def lock(self, account_id: str) -> int | None:
        """Take the account's write lock (PostgreSQL: a transaction-scoped advisory lock, held by every instance
        alike). Returns the version of the account's stored book (-1 when none is stored), or None when this store
        has one writing process only, so the caller's own copy of the book is the truth."""

    async def load_book(self, account_id: str) -> Book | None:
        """The account's book as committed, with its open and pending positions and open orders."""

    async def get_response(self, account_id: str, key: str) -> StoredResponse | None: ...
    async def save(self, batch: TradeBatch) -> None:
        """As Store.save, inside this transaction."""


class Lifecycle(Protocol):
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def maintain(self) -> None:
        """Background upkeep (the SQLite twin checkpoints its WAL); runs until cancelled."""


class Accounts(Protocol):
    async def create_account(self, name: str, parent_id: str | None = None) -> Account:
        """Raises AccountExists when the name is taken."""

    async def get_account(self, account_id: str) -> Account | None: ...
    async def find_account(self, id_or_name: str) -> Account | None: ...
    async def list_accounts(self) -> list[Account]: ...
    async def count_accounts(self) -> int: ...


class Keys(Protocol):
    async def insert_key(self, key: ApiKey, max_active: int) -> None:
        """Atomically: refuse with KeyLimitReached when the account already has max_active active keys."""

    async def rotate_key(self, old_id: str, new: ApiKey, at: datetime) -> ApiKey | None:
        """Atomically revoke old_id and insert new; None (and nothing written) when old_id is not active."""

    async def key_by_digest(self, digest: str) -> ApiKey | None: ...
    async def get_key(self, key_id: str) -> ApiKey | None: ...
    async def list_keys(self, account_id: str | None = None, include_revoked: bool = True) -> list[ApiKey]: ...
    async def revoke_key(self, key_id: str, at: datetime) -> ApiKey | None:
        """Revoke and return the key (already-revoked keys are returned unchanged); None when unknown."""


class Audit(Protocol):
    async def add_audit(self, entries: Sequence[AuditEntry]) -> None: ...
    async def list_audit(self, account_id: str | None, limit: int = 100) -> list[AuditEntry]: ...


class UsageCounts(Protocol):
    async def add_usage(self, deltas: Sequence[UsageDelta]) -> None:
        """Add counts per (key, hour) and move each key's last_used_at forward."""

    async def usage(self, key_id: str, since_hour: int) -> Usage: ...


class TradingReads(Protocol):
    """Positions and orders as committed, for listings and lookups (no write, no lock)."""

    async def list_positions(
        self,
        account_id: str,
        status: Sequence[str] | None,
        exchange: str | None,
        symbol: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Position], int]: ...
    async def get_position(self, account_id: str, position_id: str) -> Position | None: ...
    async def list_orders(
        self,
        account_id: str,
        status: Sequence[str] | None,
        exchange: str | None,
        symbol: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Order], int]: ...
    async def get_order(self, account_id: str, order_id: str) -> Order | None: ...


class Trading(TradingReads, Protocol):
    """The trading core's books, positions, orders, events, idempotency records and outbox."""

    async def save(self, batch: TradeBatch) -> None:
        """Books, positions, orders (upserted), events (appended) and idempotency records (the first one of a key
        stays) in one transaction."""

    async def load_books(self) -> list[Book]:
        """Every account's book with its open and pending positions and its open orders."""

    async def load_book(self, account_id: str) -> Book | None:
        """One account's book, as load_books() has it; None when none is stored."""

    async def create_book(self, book: Book) -> None:
        """Store a new account's first book; when one is stored already (another instance made it) nothing changes."""

    def writing(self) -> AbstractAsyncContextManager[Writing]:
        """A write transaction of the trading core (see Writing)."""

    async def save_marks(self, marks: Sequence[tuple[str, Decimal]]) -> None:
        """(position id, price): move each position that is still open to the price it was marked to. Touches no
        other column, so a mark can never undo a write."""

    async def event_counts(self) -> dict[tuple[str, str], int]:
        """(account, event name) -> how many events are stored."""

    async def recent_events(self, limit: int) -> list[Event]:
        """The last `limit` events of each account, oldest first."""

    async def get_response(self, account_id: str, key: str) -> StoredResponse | None: ...
    async def expire_responses(self, older_than_ms: int) -> None: ...

    # the outbox: every event is stored unpublished with its write

    async def mark_published(self, event_ids: Sequence[str]) -> None:
        """The bus has these events."""

    async def unpublished_events(self, before_us: int, limit: int) -> list[Event]:
        """Events stored before `before_us` that were never marked published (a crash came between the commit and
        the publish), oldest first, in the order they were stored."""


class Strategies(Protocol):
    async def save_strategy(self, record: StrategyRecord) -> None: ...
    async def get_strategy(self, account_id: str, strategy_id: str) -> StrategyRecord | None: ...
    async def list_strategies(self, account_id: str, limit: int, offset: int) -> tuple[list[StrategyRecord], int]: ...
    async def load_strategies(self) -> list[StrategyRecord]:
        """Every active strategy."""

    async def strategy_performance(self, strategy_id: str) -> dict[str, Any]: ...


class VenueRecords(Protocol):
    """The real venues of accounts, with their sealed credentials."""

    async def put_venue(self, venue: VenueRecord) -> bool:
        """Insert, or replace the credentials and options of the same (account, exchange). True when it replaced."""

    async def list_venues(self, account_id: str | None = None) -> list[VenueRecord]: ...
    async def delete_venue(self, account_id: str, exchange: str) -> bool:
        """False when the account had no such venue."""


class Meta(Protocol):
    """What the store keeps about itself, such as fingerprints of the secrets it was first used with."""

    async def claim(self, name: str, value: str) -> str:
        """Store `value` under `name` unless a value is stored already (by this or any process); return the stored
        value: `value` itself when this was the first claim, the earlier one otherwise."""


class Webhooks(Protocol):
    """Webhook endpoints and the outbox of deliveries. Every event stored (by any write, in its transaction) gets one
    pending delivery per enabled endpoint of its account that wants it: a crash after the commit loses none."""

    async def create_endpoint(self, endpoint: WebhookEndpoint) -> None: ...
    async def get_endpoint(self, account_id: str, endpoint_id: str) -> WebhookEndpoint | None: ...
    async def list_endpoints(self, account_id: str, limit: int, offset: int) -> tuple[list[WebhookEndpoint], int]: ...
    async def update_endpoint(self, endpoint: WebhookEndpoint) -> None:
        """Store the endpoint's url, events, description, secrets, status, disabled_reason and failing_since."""

    async def delete_endpoint(self, account_id: str, endpoint_id: str) -> bool:
        """Delete the endpoint with its deliveries; False when the account has no such endpoint."""

    async def add_delivery(self, endpoint: WebhookEndpoint, event: Event) -> WebhookDelivery:
        """Store `event` (published: it is not for the bus) and one pending delivery of it to `endpoint` alone, in one
        transaction (POST /v1/webhooks/{id}/test)."""

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
        """Claim up to `limit` pending deliveries due by `now_us` whose endpoint is enabled and whose account is not in
        `busy_accounts`, at most `per_endpoint` per endpoint less what `busy` says this instance has in flight to it
        (endpoint id -> count), oldest due first,
        until now_us + lease_us. A delivery claimed (and not yet finished or expired) by one instance is never claimed
        by another: PostgreSQL skips locked rows."""

    async def finish_attempt(
        self,
        delivery_id: str,
        instance: str,
        attempt: DeliveryAttempt,
        status: DeliveryStatus,
        next_attempt_us: int | None,
    ) -> bool:
        """Record one attempt and the delivery's next state (pending with next_attempt_us, succeeded or failed) and end
        the claim. False (and nothing written) when `instance` no longer holds the claim."""

    async def release_claims(self, instance: str) -> None:
        """End every claim of `instance` (a graceful stop): its deliveries are due again at once."""

    async def endpoint_answered(self, endpoint_id: str, ok: bool, at_us: int) -> int | None:
        """Note an attempt's outcome on its endpoint: a success clears failing_since, a failure sets it when unset.
        Returns failing_since (epoch us) after the change, None when the endpoint answers."""

    async def disable_endpoint(self, endpoint_id: str, reason: str) -> WebhookEndpoint | None:
        """Disable the endpoint and fail its pending deliveries; None when it is disabled already or gone."""

    async def redeliver(self, account_id: str, delivery_id: str, now_us: int) -> WebhookDelivery | None:
        """Make a delivery pending and due at now_us again (its attempts are kept); None when the account has no such
        delivery."""

    async def get_delivery(self, account_id: str, delivery_id: str) -> WebhookDelivery | None:
        """With its attempts."""

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
        """Newest first, each with its attempts."""

    async def delivery_backlog(self) -> int:
        """Pending deliveries of enabled endpoints, over every account."""


class AlertHooks(Protocol):
    """Inbound alert hooks and the log of what each received."""

    async def create_hook(self, hook: AlertHook) -> None: ...
    async def get_hook(self, hook_id: str) -> AlertHook | None:
        """Any account's hook, deleted ones too (the public alert route looks it up by id alone)."""

    async def list_hooks(self, account_id: str, limit: int, offset: int) -> tuple[list[AlertHook], int]:
        """The account's hooks that are not deleted, newest first."""

    async def delete_hook(self, account_id: str, hook_id: str, at: datetime) -> bool:
        """Mark deleted; False when the account has no such hook that is not deleted."""

    async def add_alert(self, entry: AlertEntry) -> None: ...
    async def list_alerts(
        self, account_id: str, hook_id: str | None, limit: int, offset: int
    ) -> tuple[list[AlertEntry], int]:
        """Newest first."""


class Store(
    Lifecycle,
    Accounts,
    Keys,
    Audit,
    UsageCounts,
    Trading,
    Strategies,
    VenueRecords,
    Meta,
    Webhooks,
    AlertHooks,
    Protocol,
):
    """Everything rt keeps: what each twin implements and open_store returns. A part of rt that needs only some of it
    takes the narrowest of the protocols above."""


async def open_store(url: str) -> Store:
    if url.startswith("sqlite:///"):
        from rt.store.sqlite import SQLiteStore

        return await SQLiteStore.open(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from rt.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    raise ValueError(f"unsupported store URL {url.split(':', 1)[0]!r}: use sqlite:///path or postgresql://...")


__all__ = [
    "AccountExists",
    "Accounts",
    "AlertHooks",
    "Audit",
    "KeyLimitReached",
    "Keys",
    "Lifecycle",
    "Meta",
    "Store",
    "Strategies",
    "Trading",
    "TradingReads",
    "UsageCounts",
    "VenueRecords",
    "Webhooks",
    "Writing",
    "open_store",
]
