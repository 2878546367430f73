"""Scopes and presets (SPEC §3). Every route, channel and command names the one scope it needs."""

from __future__ import annotations

from collections.abc import Iterable

from rt.errors import BadRequest

ACCOUNT_READ = "account:read"
POSITIONS_READ = "positions:read"
POSITIONS_WRITE = "positions:write"
ORDERS_READ = "orders:read"
ORDERS_WRITE = "orders:write"
STRATEGIES_READ = "strategies:read"
STRATEGIES_WRITE = "strategies:write"
RISK_READ = "risk:read"
RISK_KILL = "risk:kill"
MARKET_READ = "market:read"
WS_CONNECT = "ws:connect"
WEBHOOKS_MANAGE = "webhooks:manage"
ALERTS_MANAGE = "alerts:manage"
KEYS_MANAGE = "keys:manage"

ALL: tuple[str, ...] = (
    ACCOUNT_READ,
    POSITIONS_READ,
    POSITIONS_WRITE,
    ORDERS_READ,
    ORDERS_WRITE,
    STRATEGIES_READ,
    STRATEGIES_WRITE,
    RISK_READ,
    RISK_KILL,
    MARKET_READ,
    WS_CONNECT,
    WEBHOOKS_MANAGE,
    ALERTS_MANAGE,
    KEYS_MANAGE,
)

PRESETS: dict[str, tuple[str, ...]] = {
    "read-only": (*(s for s in ALL if s.endswith(":read")), WS_CONNECT),
    "trade-only": (POSITIONS_WRITE, ORDERS_WRITE, MARKET_READ, WS_CONNECT),
    "full": ALL,
}


def resolve(spec: str | Iterable[str]) -> tuple[str, ...]:
    """A preset name, a comma-separated string or a list of scopes -> the scopes, in canonical order."""
    if isinstance(spec, str):
        if spec in PRESETS:
            return PRESETS[spec]
        items = [part.strip() for part in spec.split(",") if part.strip()]
    else:
        items = list(spec)
    expanded: set[str] = set()
    for item in items:
        if item in PRESETS:
            expanded.update(PRESETS[item])
        elif item in ALL:
            expanded.add(item)
        else:
            raise BadRequest(
                f"unknown scope or preset {item!r}",
                errors=[{"field": "scopes", "message": f"one of {', '.join([*PRESETS, *ALL])}"}],
            )
    if not expanded:
        raise BadRequest("at least one scope is required", errors=[{"field": "scopes", "message": "empty"}])
    return tuple(s for s in ALL if s in expanded)
