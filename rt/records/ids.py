"""Prefixed random identifiers (SPEC §2): acct_, key_, pos_, ord_, strat_, whk_, evt_, cmd_."""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62(n: int) -> str:
    """n random base62 characters from the OS CSPRNG: one read, unbiased (bytes >= 248 are skipped)."""
    out: list[str] = []
    while len(out) < n:
        out.extend(ALPHABET[b % 62] for b in secrets.token_bytes(n + n // 4 + 4) if b < 248)
    return "".join(out[:n])


def new_id(prefix: str) -> str:
    return f"{prefix}_{base62(20)}"
