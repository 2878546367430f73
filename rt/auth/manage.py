"""Creating, listing, revoking and rotating keys and accounts: one code path for the REST API and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from rt.auth import audit, keys, scopes, tiers
from rt.auth.network import normalize
from rt.auth.vault import Box
from rt.errors import NotFound
from rt.records.accounts import Account, ApiKey
from rt.records.ids import new_id
from rt.store import Accounts, Keys

MAX_ACTIVE_KEYS = 5


class KeyStore(Accounts, Keys, Protocol):
    """What key and account management keeps: the accounts and their keys."""


@dataclass(frozen=True)
class IssuedKey:
    """A new key with the two secrets shown only this once."""

    record: ApiKey
    key: str
    signing_secret: str


class KeyManager:
    def __init__(self, store: KeyStore, hasher: keys.KeyHasher, box: Box, audit_log: audit.AuditLog) -> None:
        self._store = store
        self._hasher = hasher
        self._box = box
        self._audit = audit_log

    def _new(
        self, account_id: str, name: str, key_scopes: tuple[str, ...], tier: str, allow_ips: tuple[str, ...], test: bool
    ) -> IssuedKey:
        plaintext = keys.generate(test)
        secret = keys.generate_signing_secret()
        record = ApiKey(
            id=new_id("key"),
            account_id=account_id,
            name=name,
            prefix=keys.display_prefix(plaintext),
            digest=self._hasher.digest(plaintext),
            scopes=key_scopes,
            tier=tier,
            allow_ips=allow_ips,
            test=test,
            sealed_signing_secret=self._box.seal(secret),
            created_at=datetime.now(UTC),
        )
        return IssuedKey(record, plaintext, secret)

    async def create(
        self,
        account_id: str,
        scope_spec: str | Sequence[str],
        tier: str,
        *,
        name: str = "",
        allow_ips: str | Sequence[str] | None = None,
        test: bool = False,
        actor: str | None = None,
        ip: str | None = None,
    ) -> IssuedKey:
        if await self._store.get_account(account_id) is None:
            raise NotFound(f"no account {account_id}")
        issued = self._new(account_id, name, scopes.resolve(scope_spec), tiers.check(tier), normalize(allow_ips), test)
        await self._store.insert_key(issued.record, MAX_ACTIVE_KEYS)
        await self._audit.write(
            audit.KEY_CREATED,
            account_id=account_id,
            key_id=issued.record.id,
            ip=ip,
            actor=actor,
            scopes=list(issued.record.scopes),
            tier=tier,
        )
        return issued

    async def get(self, key_id: str, account_id: str | None = None) -> ApiKey:
        record = await self._store.get_key(key_id)
        if record is None or (account_id is not None and record.account_id != account_id):
            raise NotFound(f"no key {key_id}")
        return record

    async def revoke(
        self, key_id: str, *, account_id: str | None = None, actor: str | None = None, ip: str | None = None
    ) -> ApiKey:
        record = await self.get(key_id, account_id)
        if record.revoked_at is not None:
            return record
        revoked = await self._store.revoke_key(key_id, datetime.now(UTC))
        assert revoked is not None
        await self._audit.write(audit.KEY_REVOKED, account_id=record.account_id, key_id=key_id, ip=ip, actor=actor)
        return revoked

    async def rotate(
        self, key_id: str, *, account_id: str | None = None, actor: str | None = None, ip: str | None = None
    ) -> IssuedKey:
        """A new key with the old one's settings; the old one is revoked in the same transaction."""
        old = await self.get(key_id, account_id)
        issued = self._new(old.account_id, old.name, old.scopes, old.tier, old.allow_ips, old.test)
        if (
            old.revoked_at is not None
            or await self._store.rotate_key(key_id, issued.record, issued.record.created_at) is None
        ):
            raise NotFound(f"key {key_id} is revoked; create a new one instead")
        await self._audit.write(
            audit.KEY_ROTATED,
            account_id=old.account_id,
            key_id=key_id,
            ip=ip,
            actor=actor,
            replaced_by=issued.record.id,
        )
        return issued

    async def list(self, account_id: str | None = None, include_revoked: bool = True) -> list[ApiKey]:
        return await self._store.list_keys(account_id, include_revoked)

    async def create_account(self, name: str, parent_id: str | None = None, actor: str | None = None) -> Account:
        if parent_id is not None:
            parent = await self._store.find_account(parent_id)
            if parent is None:
                raise NotFound(f"no parent account {parent_id}")
            parent_id = parent.id
        account = await self._store.create_account(name, parent_id)
        await self._audit.write(
            audit.ACCOUNT_CREATED, account_id=account.id, actor=actor, name=name, parent_id=parent_id
        )
        return account
