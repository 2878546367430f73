"""Prefixed random identifiers (SPEC §2): acct_, key_, pos_, ord_, strat_, whk_, evt_, cmd_."""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


_TO_ALPHABET = bytes(ord(ALPHABET[b % 62]) for b in range(256))
_BIASED = bytes(range(248, 256))  # 248 = 4 x 62: the bytes past it would favour the alphabet's first characters


def base62(n: int) -> str:
    """n random base62 characters from the OS CSPRNG: one read, unbiased (bytes >= 248 are dropped), mapped in C."""
    out = b""
    while len(out) < n:
        out += secrets.token_bytes(n + n // 4 + 4).translate(_TO_ALPHABET, _BIASED)
    return out[:n].decode()


def new_id(prefix: str) -> str:
    return f"{prefix}_{base62(20)}"
