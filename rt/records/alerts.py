"""Inbound alert hooks and the log of the alerts they received: records the store keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

AlertOutcome = Literal["executed", "rejected", "duplicate", "unauthorized"]


@dataclass(frozen=True)
class AlertHook:
    id: str  # alh_...
    account_id: str
    name: str
    digest: str  # HMAC-SHA256 of the passphrase under the key pepper, as API keys are kept
    symbols: tuple[str, ...]  # allowed symbols in rt's form (BTC/USDT); empty: any
    max_quantity: Decimal
    defaults: dict[str, Any]  # {"type", "quantity", "exchange"}
    allow_ips: tuple[str, ...]  # source IPs/CIDRs; empty: any
    test: bool  # made by an rt_test_ key: trades on the paper venue only
    created_at: datetime
    deleted_at: datetime | None = None


@dataclass(frozen=True)
class AlertEntry:
    """One alert a hook received, with what came of it (the passphrase is never kept)."""

    id: str  # alr_...
    hook_id: str
    account_id: str
    received_at: datetime
    ip: str
    outcome: AlertOutcome
    body: dict[str, Any] = field(default_factory=dict)
    order_ids: tuple[str, ...] = ()
    code: str | None = None  # the problem's code when rejected
    detail: str | None = None
    latency_ms: float = 0.0
