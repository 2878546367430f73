"""Server-side secrets: the key pepper and the at-rest encryption key, from settings or generated into the data dir."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _load_or_create(configured: str, path: Path) -> bytes:
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    try:
        return base64.b64decode(path.read_bytes().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    raw = secrets.token_bytes(32)
    # O_EXCL: when a CLI and a server start together, one of them writes and both read the same bytes.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return base64.b64decode(path.read_bytes().strip())
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(raw) + b"\n")
    return raw


def load_pepper(configured: str, data_dir: Path) -> bytes:
    return _load_or_create(configured, data_dir / "pepper")


def load_secret_key(configured: str, data_dir: Path) -> bytes:
    return _load_or_create(configured, data_dir / "secret.key")


class Box:
    """Authenticated encryption (AES-256-GCM) for secrets the server must read back, such as signing secrets."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: str) -> str:
        nonce = secrets.token_bytes(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext.encode(), None)).decode()

    def open(self, sealed: str) -> str:
        raw = base64.b64decode(sealed)
        return self._aead.decrypt(raw[:12], raw[12:], None).decode()
