"""rt/store: what both twins keep, and how they answer, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from rt.records.accounts import Account, ApiKey, AuditEntry, UsageDelta
from rt.records.ids import new_id
from rt.records.trading import IdempotencyRecord, Position, StoredResponse, TradeBatch, now
from rt.store import AccountExists, KeyLimitReached, Store, open_store

T0 = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
ACCOUNT = "acct_reads"
ROUNDS = 60


def make_key(account_id: str, at: datetime = T0, **changes: object) -> ApiKey:
    key_id = new_id("key")
    fields: dict[str, object] = {
        "id": key_id,
        "account_id": account_id,
        "name": "bot",
        "prefix": "rt_live_abcd",
        "digest": f"digest-{key_id}",
        "scopes": ("account:read", "orders:write"),
        "tier": "pro",
        "allow_ips": ("10.0.0.0/8", "2001:db8::/32"),
        "test": False,
        "sealed_signing_secret": "sealed",
        "created_at": at,
    }
    fields.update(changes)
    return ApiKey(**fields)  # type: ignore[arg-type]


def stored(account: Account) -> Account:
    """The account as the store reads it back: times kept to the millisecond."""
    at = account.created_at
    return replace(account, created_at=at.replace(microsecond=at.microsecond // 1000 * 1000))


async def test_accounts(store: Store) -> None:
    parent = await store.create_account("parent")
    child = await store.create_account("child", parent.id)
    assert parent.id.startswith("acct_")
    assert child.parent_id == parent.id

    assert await store.get_account(parent.id) == stored(parent)
    assert await store.get_account("acct_missing") is None
    assert await store.find_account(child.id) == stored(child)
    assert await store.find_account("child") == stored(child)
    assert await store.find_account("nobody") is None
    assert {a.id for a in await store.list_accounts()} == {parent.id, child.id}
    assert await store.count_accounts() == 2


async def test_find_account_prefers_the_id_over_a_name(store: Store) -> None:
    first = await store.create_account("first")
    impostor = await store.create_account(first.id)
    assert await store.find_account(first.id) == stored(first)
    assert impostor.name == first.id


async def test_duplicate_account_name(store: Store) -> None:
    await store.create_account("alice")
    with pytest.raises(AccountExists) as caught:
        await store.create_account("alice")
    assert caught.value.status == 409
    assert await store.count_accounts() == 1


async def test_key_round_trip(store: Store) -> None:
    account = await store.create_account("alice")
    key = make_key(account.id, test=True)
    await store.insert_key(key, 5)
    assert await store.get_key(key.id) == key
    assert await store.key_by_digest(key.digest) == key
    assert await store.key_by_digest("nope") is None
    assert await store.get_key("key_missing") is None

    bare = make_key(account.id, allow_ips=(), name="")
    await store.insert_key(bare, 5)
    assert await store.get_key(bare.id) == bare


async def test_insert_key_refuses_beyond_max_active(store: Store) -> None:
    account, other = await store.create_account("alice"), await store.create_account("bob")
    for _ in range(3):
        await store.insert_key(make_key(account.id), 3)
    with pytest.raises(KeyLimitReached) as caught:
        await store.insert_key(make_key(account.id), 3)
    assert caught.value.status == 409
    assert caught.value.code == "KEY_LIMIT_REACHED"
    # Limits are per account, and a revoked key frees a slot.
    await store.insert_key(make_key(other.id), 3)
    first = (await store.list_keys(account.id))[0]
    await store.revoke_key(first.id, T0)
    await store.insert_key(make_key(account.id), 3)
    assert len(await store.list_keys(account.id, include_revoked=False)) == 3
    assert len(await store.list_keys(account.id)) == 4


async def test_insert_key_limit_holds_under_concurrency(store_url: str) -> None:
    one = await open_store(store_url)
    two = await open_store(store_url)
    try:
        account = await one.create_account("alice")
        results = await asyncio.gather(
            *((one if i % 2 else two).insert_key(make_key(account.id), 5) for i in range(20)),
            return_exceptions=True,
        )
        unexpected = [r for r in results if r is not None and not isinstance(r, KeyLimitReached)]
        assert unexpected == []
        assert sum(r is None for r in results) == 5
        assert len(await one.list_keys(account.id, include_revoked=False)) == 5
        assert len(await two.list_keys(account.id)) == 5
    finally:
        await one.close()
        await two.close()


async def test_revoke_key(store: Store) -> None:
    account = await store.create_account("alice")
    key = make_key(account.id)
    await store.insert_key(key, 5)

    revoked = await store.revoke_key(key.id, T0 + timedelta(hours=1))
    assert revoked is not None
    assert revoked.revoked_at == T0 + timedelta(hours=1)
    assert not revoked.active
    # Revoking again keeps the first revocation time.
    again = await store.revoke_key(key.id, T0 + timedelta(hours=2))
    assert again is not None and again.revoked_at == T0 + timedelta(hours=1)
    assert await store.revoke_key("key_missing", T0) is None
    assert await store.list_keys(account.id, include_revoked=False) == []
    assert [k.id for k in await store.list_keys(account.id)] == [key.id]


async def test_rotate_key(store: Store) -> None:
    account = await store.create_account("alice")
    old = make_key(account.id)
    await store.insert_key(old, 5)
    new = make_key(account.id, at=T0 + timedelta(minutes=1))

    returned = await store.rotate_key(old.id, new, T0 + timedelta(minutes=1))
    assert returned is not None
    assert returned.id == old.id
    assert returned.revoked_at == T0 + timedelta(minutes=1)
    assert await store.get_key(new.id) == new
    assert [k.id for k in await store.list_keys(account.id, include_revoked=False)] == [new.id]


async def test_rotate_key_of_a_revoked_key_writes_nothing(store: Store) -> None:
    account = await store.create_account("alice")
    old = make_key(account.id)
    await store.insert_key(old, 5)
    await store.revoke_key(old.id, T0)

    replacement = make_key(account.id)
    assert await store.rotate_key(old.id, replacement, T0 + timedelta(minutes=1)) is None
    assert await store.get_key(replacement.id) is None
    revoked = await store.get_key(old.id)
    assert revoked is not None and revoked.revoked_at == T0
    assert await store.rotate_key("key_missing", make_key(account.id), T0) is None
    assert len(await store.list_keys()) == 1


async def test_rotate_key_at_the_limit(store: Store) -> None:
    account = await store.create_account("alice")
    first = make_key(account.id)
    await store.insert_key(first, 1)
    assert await store.rotate_key(first.id, make_key(account.id), T0) is not None
    assert len(await store.list_keys(account.id, include_revoked=False)) == 1


async def test_audit_newest_first(store: Store) -> None:
    alice, bob = await store.create_account("alice"), await store.create_account("bob")
    await store.add_audit(
        [
            AuditEntry("key.created", alice.id, "key_1", "10.0.0.1", {"tier": "pro"}, T0),
            AuditEntry("auth.failed", None, None, "10.0.0.2", {"code": "API_KEY_INVALID"}, T0),
        ]
    )
    await store.add_audit([AuditEntry("key.revoked", alice.id, "key_1", None, {}, T0 + timedelta(seconds=1))])
    await store.add_audit([AuditEntry("key.created", bob.id, "key_2", None)])

    entries = await store.list_audit(alice.id)
    assert [e.action for e in entries] == ["key.revoked", "key.created"]
    assert entries[1].detail == {"tier": "pro"}
    assert entries[1].ip == "10.0.0.1"
    assert entries[1].at == T0
    assert entries[0].id is not None and entries[1].id is not None and entries[0].id > entries[1].id

    everything = await store.list_audit(None)
    assert [e.action for e in everything] == ["key.created", "key.revoked", "auth.failed", "key.created"]
    assert everything[0].account_id == bob.id and everything[0].at is not None
    assert [e.action for e in await store.list_audit(None, limit=2)] == ["key.created", "key.revoked"]
    assert await store.list_audit("acct_missing") == []


async def test_usage_accumulates_per_hour(store: Store) -> None:
    account = await store.create_account("alice")
    key, other = make_key(account.id), make_key(account.id)
    await store.insert_key(key, 5)
    await store.insert_key(other, 5)
    await store.add_usage([UsageDelta(key.id, 100, requests=3, auth_failures=1), UsageDelta(other.id, 100, 7)])
    await store.add_usage([UsageDelta(key.id, 100, requests=2, rate_limited=4), UsageDelta(key.id, 101, 10)])
    await store.add_usage([])

    total = await store.usage(key.id, 0)
    assert (total.requests, total.auth_failures, total.rate_limited) == (15, 1, 4)
    recent = await store.usage(key.id, 101)
    assert (recent.requests, recent.auth_failures, recent.rate_limited) == (10, 0, 0)
    assert (await store.usage(key.id, 102)).requests == 0
    assert (await store.usage(other.id, 100)).requests == 7
    assert (await store.usage("key_missing", 0)).requests == 0


async def test_last_used_at_moves_forward_only(store: Store) -> None:
    account = await store.create_account("alice")
    key = make_key(account.id)
    await store.insert_key(key, 5)
    later, earlier = T0 + timedelta(minutes=5), T0 + timedelta(minutes=1)

    await store.add_usage([UsageDelta(key.id, 1, requests=1, last_used_ms=int(later.timestamp() * 1000))])
    stored = await store.get_key(key.id)
    assert stored is not None and stored.last_used_at == later

    await store.add_usage([UsageDelta(key.id, 1, requests=1, last_used_ms=int(earlier.timestamp() * 1000))])
    stored = await store.get_key(key.id)
    assert stored is not None and stored.last_used_at == later

    # A delta with no timestamp (last_used_ms=0) counts but does not touch last_used_at.
    await store.add_usage([UsageDelta(key.id, 1, requests=1)])
    stored = await store.get_key(key.id)
    assert stored is not None and stored.last_used_at == later
    assert (await store.usage(key.id, 0)).requests == 3


# A read never sees the store from before a write that committed before the read began. (SQLite's reads share one
# connection: a statement left active across an await would hold its snapshot open, and every read queued behind it
# would see a position closed a moment ago as open, and an idempotent answer just stored as missing.)


def position(status: str = "open") -> Position:
    return Position(new_id("pos"), ACCOUNT, "paper", "BTC/USDT", "long", Decimal(1), Decimal(100), status)  # type: ignore[arg-type]


async def close_then_read(store: Store, target: Position, key: str) -> tuple[str | None, bool]:
    """Close the position and keep an answer in one commit, then read both back."""
    await asyncio.sleep(0)
    closed = dataclasses.replace(target, status="closed", closed_at=now())
    kept = IdempotencyRecord(ACCOUNT, key, StoredResponse("print", 201, b"{}"))
    await store.save(TradeBatch(positions=[closed], responses=[kept]))
    read = await store.get_position(ACCOUNT, target.id)
    answer = await store.get_response(ACCOUNT, key)
    return (read.status if read else None), answer is not None


async def test_a_read_after_a_commit_sees_it_while_listings_run(store: Store) -> None:
    await store.save(TradeBatch(positions=[position() for _ in range(200)]))
    stale = 0
    for round_ in range(ROUNDS):
        target = position()
        await store.save(TradeBatch(positions=[target]))
        listings = [store.list_positions(ACCOUNT, None, None, None, 500, 0) for _ in range(4)]
        *_, (status, answered) = await asyncio.gather(*listings, close_then_read(store, target, f"k{round_}"))
        stale += status != "closed" or not answered
    assert stale == 0, f"{stale} of {ROUNDS} reads saw the store from before a committed write"
