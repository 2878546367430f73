"""rt/auth/guard with each limiter twin: one limiter round trip per guarded request, and the lockout still first."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from rt import errors
from rt.auth import keys
from rt.auth.audit import AuditLog
from rt.auth.guard import Credentials, Guard
from rt.auth.limiter import Decision, Limiter
from rt.auth.tiers import DEFAULT_TIERS
from rt.auth.usage import UsageMeter
from rt.auth.vault import Box
from rt.config import Settings
from rt.errors import RtError
from rt.records.accounts import ApiKey


class Counting:
    """The limiter, counting its calls (each is one Redis round trip on the redis twin)."""

    def __init__(self, inner: Limiter) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def hit(self, key: str, per_minute: int, burst: int, ip: str | None = None) -> Decision:
        self.calls.append("hit")
        return await self.inner.hit(key, per_minute, burst, ip=ip)

    async def fail(self, ip: str, threshold: int, window_s: int, lock_s: int) -> float:
        self.calls.append("fail")
        return await self.inner.fail(ip, threshold, window_s, lock_s)

    async def locked(self, ip: str) -> float:
        self.calls.append("locked")
        return await self.inner.locked(ip)

    async def ping(self) -> None:
        await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


class Keys:
    def __init__(self, record: ApiKey) -> None:
        self.record = record
        self.lookups = 0

    async def key_by_digest(self, digest: str) -> ApiKey | None:
        self.lookups += 1
        return self.record if digest == self.record.digest else None


class Nowhere:
    """The audit and usage stores: nothing is flushed in these tests."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected store call {name}")


def make(limiter: Limiter) -> tuple[Guard, Counting, Keys, str]:
    hasher = keys.KeyHasher(secrets.token_bytes(32))
    secret = keys.generate()
    box = Box(secrets.token_bytes(32))
    record = ApiKey(
        id=f"key_{uuid.uuid4().hex[:8]}",
        account_id="acct_g",
        name="k",
        prefix=keys.display_prefix(secret),
        digest=hasher.digest(secret),
        scopes=("read",),
        tier="starter",
        allow_ips=(),
        test=False,
        sealed_signing_secret=box.seal(keys.generate_signing_secret()),
        created_at=datetime.now(UTC),
    )
    counting, store = Counting(limiter), Keys(record)
    guard = Guard(
        Settings(),
        store,  # type: ignore[arg-type]
        counting,
        hasher,
        box,
        dict(DEFAULT_TIERS),
        AuditLog(Nowhere()),  # type: ignore[arg-type]
        UsageMeter(Nowhere()),  # type: ignore[arg-type]
    )
    return guard, counting, store, secret


def creds(key: str | None, ip: str) -> Credentials:
    return Credentials(key=key, ip=ip, method="GET", signature=None)


def ip() -> str:
    return f"198.51.100.{secrets.randbelow(250) + 1}-{uuid.uuid4().hex[:6]}"


async def test_a_guarded_request_is_one_limiter_round_trip(limiter: Limiter) -> None:
    guard, counting, _, secret = make(limiter)
    address = ip()
    await guard.authenticate(creds(secret, address), "read")  # the first one also looks the key up
    counting.calls.clear()
    verdict = await guard.authenticate(creds(secret, address), "read")
    assert verdict.principal.account_id == "acct_g"
    assert verdict.rate.allowed and verdict.rate.locked_for == 0
    assert counting.calls == ["hit"]


async def test_a_locked_out_ip_is_refused_first_whatever_it_sends(limiter: Limiter) -> None:
    guard, counting, store, secret = make(limiter)
    address = ip()
    await guard.authenticate(creds(secret, address), "read")  # the key is known (cached) from here on
    assert await limiter.fail(address, 1, 60, 60) == 60
    lookups = store.lookups
    for key, scope in [(secret, "read"), (secret, "trade"), (None, "read"), ("nonsense", "read")]:
        counting.calls.clear()
        with pytest.raises(RtError) as refused:
            await guard.authenticate(creds(key, address), scope)
        assert refused.value.code == errors.IP_LOCKED_OUT
        assert "fail" not in counting.calls  # a refusal while locked out counts nothing
    # A well-formed key nobody has: refused before the store is asked.
    with pytest.raises(RtError) as refused:
        await guard.authenticate(creds(keys.generate(), address), "read")
    assert refused.value.code == errors.IP_LOCKED_OUT
    assert store.lookups == lookups
    # The key's bucket was not drawn from while the IP was locked out.
    other = ip()
    decision = await guard.authenticate(creds(secret, other), "read")
    assert decision.rate.remaining == DEFAULT_TIERS["starter"].burst - 2
