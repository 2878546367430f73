"""rt/auth/manage: key and account lifecycle through a real SQLite store and audit log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rt.auth import audit, keys
from rt.auth.manage import MAX_ACTIVE_KEYS, KeyManager
from rt.auth.vault import Box
from rt.errors import BadRequest, NotFound
from rt.store import KeyLimitReached
from rt.store.sqlite import SQLiteStore


@dataclass
class Setup:
    manager: KeyManager
    store: SQLiteStore
    hasher: keys.KeyHasher
    box: Box
    account_id: str
    db_path: Path


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    db_path = tmp_path / "rt.db"
    store = await SQLiteStore.open(str(db_path))
    hasher, box = keys.KeyHasher(b"test-pepper"), Box(bytes(range(32)))
    manager = KeyManager(store, hasher, box, audit.AuditLog(store))
    account = await manager.create_account("alice")
    made = Setup(manager, store, hasher, box, account.id, db_path)
    try:
        yield made
    finally:
        # A test may have closed and reopened the store.
        await made.store.close()


async def test_create_issues_a_working_key_and_audits_it(setup: Setup) -> None:
    issued = await setup.manager.create(setup.account_id, "read-only", "pro", name="bot", actor="cli", ip="10.0.0.1")
    assert keys.well_formed(issued.key) and issued.key.startswith("rt_live_")
    assert issued.record.prefix == issued.key[:12]
    assert setup.box.open(issued.record.sealed_signing_secret) == issued.signing_secret

    found = await setup.store.key_by_digest(setup.hasher.digest(issued.key))
    assert found is not None and found.id == issued.record.id
    assert found.scopes == issued.record.scopes and "ws:connect" in found.scopes

    entries = await setup.store.list_audit(setup.account_id)
    assert entries[0].action == audit.KEY_CREATED
    assert entries[0].key_id == issued.record.id
    assert entries[0].ip == "10.0.0.1"
    assert entries[0].detail["tier"] == "pro" and entries[0].detail["actor"] == "cli"
    assert issued.key not in str(entries[0].detail)


async def test_plaintext_key_and_signing_secret_never_reach_the_disk(setup: Setup) -> None:
    live = await setup.manager.create(setup.account_id, "full", "pro_plus")
    test = await setup.manager.create(setup.account_id, "trade-only", "starter", test=True)
    rotated = await setup.manager.rotate(test.record.id)
    await setup.store.close()

    on_disk = b"".join(p.read_bytes() for p in setup.db_path.parent.iterdir() if p.name.startswith("rt.db"))
    for issued in (live, test, rotated):
        # The digest and sealed secret are there, so this really is the data the store wrote.
        assert issued.record.digest.encode() in on_disk
        assert issued.record.sealed_signing_secret.encode() in on_disk
        assert issued.key.encode() not in on_disk
        assert issued.key[8:].encode() not in on_disk
        assert issued.signing_secret.encode() not in on_disk
    setup.store = await SQLiteStore.open(str(setup.db_path))


async def test_revoke_is_audited_once(setup: Setup) -> None:
    issued = await setup.manager.create(setup.account_id, "full", "pro")
    revoked = await setup.manager.revoke(issued.record.id, actor="api", ip="10.0.0.2")
    assert revoked.revoked_at is not None
    again = await setup.manager.revoke(issued.record.id)
    assert again.revoked_at == revoked.revoked_at

    actions = [(e.action, e.key_id) for e in await setup.store.list_audit(setup.account_id)]
    assert actions[:2] == [(audit.KEY_REVOKED, issued.record.id), (audit.KEY_CREATED, issued.record.id)]
    assert actions.count((audit.KEY_REVOKED, issued.record.id)) == 1


async def test_revoke_checks_the_owner(setup: Setup) -> None:
    issued = await setup.manager.create(setup.account_id, "full", "pro")
    other = await setup.manager.create_account("bob")
    with pytest.raises(NotFound):
        await setup.manager.revoke(issued.record.id, account_id=other.id)
    with pytest.raises(NotFound):
        await setup.manager.revoke("key_missing")
    assert (await setup.manager.get(issued.record.id)).revoked_at is None


async def test_sixth_active_key_is_refused(setup: Setup) -> None:
    made = [await setup.manager.create(setup.account_id, "read-only", "starter") for _ in range(MAX_ACTIVE_KEYS)]
    with pytest.raises(KeyLimitReached) as caught:
        await setup.manager.create(setup.account_id, "read-only", "starter")
    assert caught.value.status == 409 and caught.value.code == "KEY_LIMIT_REACHED"
    assert len(await setup.manager.list(setup.account_id, include_revoked=False)) == MAX_ACTIVE_KEYS

    # Rotating at the limit still works, and a revoked key frees its slot.
    await setup.manager.rotate(made[0].record.id)
    await setup.manager.revoke(made[1].record.id)
    await setup.manager.create(setup.account_id, "read-only", "starter")
    assert len(await setup.manager.list(setup.account_id, include_revoked=False)) == MAX_ACTIVE_KEYS


async def test_rotate_keeps_settings_and_revokes_the_old_key(setup: Setup) -> None:
    old = await setup.manager.create(
        setup.account_id, "orders:read,ws:connect", "pro_plus", name="ui", allow_ips="10.0.0.0/8,2001:db8::1", test=True
    )
    new = await setup.manager.rotate(old.record.id, actor="api", ip="10.0.0.3")

    assert new.record.id != old.record.id
    assert new.key != old.key and new.signing_secret != old.signing_secret
    assert new.key.startswith("rt_test_")
    for field in ("account_id", "name", "scopes", "tier", "allow_ips", "test"):
        assert getattr(new.record, field) == getattr(old.record, field), field
    assert new.record.allow_ips == ("10.0.0.0/8", "2001:db8::1/128")

    assert (await setup.manager.get(old.record.id)).revoked_at is not None
    assert (await setup.manager.get(new.record.id)).revoked_at is None
    latest = (await setup.store.list_audit(setup.account_id))[0]
    assert latest.action == audit.KEY_ROTATED
    assert latest.key_id == old.record.id
    assert latest.detail["replaced_by"] == new.record.id


async def test_rotating_a_revoked_key_is_refused(setup: Setup) -> None:
    issued = await setup.manager.create(setup.account_id, "full", "pro")
    await setup.manager.revoke(issued.record.id)
    with pytest.raises(NotFound):
        await setup.manager.rotate(issued.record.id)
    assert [k.id for k in await setup.manager.list(setup.account_id)] == [issued.record.id]
    assert (await setup.store.list_audit(setup.account_id))[0].action == audit.KEY_REVOKED


async def test_create_validates_its_input(setup: Setup) -> None:
    with pytest.raises(NotFound):
        await setup.manager.create("acct_missing", "full", "pro")
    with pytest.raises(BadRequest):
        await setup.manager.create(setup.account_id, "everything", "pro")
    with pytest.raises(BadRequest):
        await setup.manager.create(setup.account_id, "full", "gold")
    with pytest.raises(BadRequest):
        await setup.manager.create(setup.account_id, "full", "pro", allow_ips="10.0.0.0/33")
    assert await setup.manager.list(setup.account_id) == []


async def test_accounts_are_audited_and_parents_resolved_by_name(setup: Setup) -> None:
    child = await setup.manager.create_account("desk-1", parent_id="alice", actor="cli")
    assert child.parent_id == setup.account_id
    entry = (await setup.store.list_audit(child.id))[0]
    assert entry.action == audit.ACCOUNT_CREATED
    assert entry.detail["parent_id"] == setup.account_id
    with pytest.raises(NotFound):
        await setup.manager.create_account("desk-2", parent_id="nobody")
