"""Accounts, API keys, their audit and usage, and the real venues of an account: records the store keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    parent_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    account_id: str
    name: str
    prefix: str
    digest: str
    scopes: tuple[str, ...]
    tier: str
    allow_ips: tuple[str, ...]
    test: bool
    sealed_signing_secret: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class AuditEntry:
    action: str
    account_id: str | None
    key_id: str | None
    ip: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None
    id: int | None = None


@dataclass
class UsageDelta:
    """Counts for one key in one clock hour, flushed to the store in batches."""

    key_id: str
    hour: int
    requests: int = 0
    auth_failures: int = 0
    rate_limited: int = 0
    last_used_ms: int = 0


@dataclass(frozen=True)
class Usage:
    requests: int
    auth_failures: int
    rate_limited: int


@dataclass(frozen=True)
class VenueRecord:
    """A real venue of one account. `sealed_credentials` is a Box-sealed JSON object (`api_key`, `secret`,
    `password`); `options` holds `sandbox`, `url` (a base-URL override) and `ccxt` (options passed to ccxt)."""

    account_id: str
    exchange: str
    sealed_credentials: str
    options: dict[str, Any]
    created_at: datetime
