"""Prefixed random identifiers (SPEC §2): acct_, key_, pos_, ord_, strat_, whk_, evt_, cmd_."""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(n: int) -> str:
    """n random base62 characters from the OS CSPRNG."""
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def new_id(prefix: str) -> str:
    return f"{prefix}_{base62(20)}"
