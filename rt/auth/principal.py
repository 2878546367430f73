"""Who is calling: what a verified key or WebSocket token turns into."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    account_id: str
    key_id: str
    scopes: frozenset[str]
    tier: str
    test: bool
    allow_ips: tuple[str, ...] = ()
