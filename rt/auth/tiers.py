"""Tiers and their per-key rate limits (SPEC §3), with operator overrides from RT_TIER_LIMITS."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rt.errors import BadRequest


@dataclass(frozen=True)
class Tier:
    name: str
    per_minute: int
    burst: int
    rank: int


DEFAULT_TIERS: dict[str, Tier] = {
    "starter": Tier("starter", 60, 10, 0),
    "b2b": Tier("b2b", 100, 20, 1),  # Alpha Draconis's B2B keys: 100 requests a minute
    "pro": Tier("pro", 120, 20, 2),
    "pro_plus": Tier("pro_plus", 300, 50, 3),
}


def load(overrides: Iterable[str] = ()) -> dict[str, Tier]:
    """Apply `name=per_minute/burst` overrides to the default table."""
    tiers = dict(DEFAULT_TIERS)
    for item in overrides:
        name, _, limits = item.partition("=")
        rate, _, burst = limits.partition("/")
        name = name.strip()
        if name not in tiers or not rate.strip().isdigit() or not burst.strip().isdigit():
            raise ValueError(f"bad tier override {item!r}; expected e.g. pro=600/40 with a known tier")
        if int(rate) < 1 or int(burst) < 1:
            raise ValueError(f"tier limits must be positive: {item!r}")
        tiers[name] = Tier(name, int(rate), int(burst), tiers[name].rank)
    return tiers


def check(name: str) -> str:
    if name not in DEFAULT_TIERS:
        raise BadRequest(
            f"unknown tier {name!r}",
            errors=[{"field": "tier", "message": f"one of {', '.join(DEFAULT_TIERS)}"}],
        )
    return name
