"""WebSocket tokens: single use, 15 minutes, bound to the key's account, scopes and allowlist. `memory` | `redis`."""

from __future__ import annotations

import secrets
from typing import Any, Protocol

from rt.auth.principal import Principal

TOKEN_TTL = 900


def new_token() -> str:
    return secrets.token_urlsafe(32)


def dump(principal: Principal) -> dict[str, Any]:
    return {
        "account_id": principal.account_id,
        "key_id": principal.key_id,
        "scopes": sorted(principal.scopes),
        "tier": principal.tier,
        "test": principal.test,
        "allow_ips": list(principal.allow_ips),
    }


def load(data: dict[str, Any]) -> Principal:
    return Principal(
        account_id=data["account_id"],
        key_id=data["key_id"],
        scopes=frozenset(data["scopes"]),
        tier=data["tier"],
        test=bool(data["test"]),
        allow_ips=tuple(data["allow_ips"]),
    )


class TokenStore(Protocol):
    async def issue(self, principal: Principal, ttl: int = TOKEN_TTL) -> str:
        """A new token for this principal."""

    async def consume(self, token: str) -> Principal | None:
        """The principal, once: a second call, an unknown or an expired token answer None."""

    async def close(self) -> None: ...


def open_tokens(redis_url: str = "", prefix: str = "rt") -> TokenStore:
    if redis_url:
        from rt.auth.tokens.redis import RedisTokens

        return RedisTokens(redis_url, prefix)
    from rt.auth.tokens.memory import MemoryTokens

    return MemoryTokens()
