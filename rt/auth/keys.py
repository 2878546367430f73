"""API key format, generation and hashing (SPEC §3)."""

from __future__ import annotations

import hashlib
import hmac
import re

from rt.records.ids import base62

KEY_RE = re.compile(r"rt_(live|test)_[0-9A-Za-z]{32}")
PREFIX_LEN = 12


def generate(test: bool = False) -> str:
    return f"rt_{'test' if test else 'live'}_{base62(32)}"


def generate_signing_secret() -> str:
    return f"rtsig_{base62(40)}"


def well_formed(key: str) -> bool:
    return KEY_RE.fullmatch(key) is not None


def display_prefix(key: str) -> str:
    return key[:PREFIX_LEN]


class KeyHasher:
    """HMAC-SHA256 of a key under the server's pepper; the store holds only this digest."""

    def __init__(self, pepper: bytes) -> None:
        self._pepper = pepper

    def digest(self, key: str) -> str:
        return hmac.digest(self._pepper, key.encode(), hashlib.sha256).hex()

    def matches(self, key: str, stored_digest: str) -> bool:
        return hmac.compare_digest(self.digest(key), stored_digest)
