"""rt/auth/guard body signatures, and the secrets behind them (rt/auth/vault)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from rt.auth.guard import sign, verify_signature
from rt.auth.vault import Box, load_pepper, load_secret_key

SECRET = "rtsig_" + "s" * 40
BODY = b'{"symbol":"BTC/USDT","side":"buy","quantity":1}'
NOW = 1_700_000_000_000
FIVE_MIN = 5 * 60 * 1000


def test_sign_is_the_documented_hmac() -> None:
    mac = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == f"t={NOW},v1={mac}"


def test_valid_signature() -> None:
    assert verify_signature(sign(SECRET, NOW, BODY), SECRET, BODY, now_ms=NOW) is None
    assert verify_signature(sign(SECRET, NOW, b""), SECRET, b"", now_ms=NOW) is None
    # Spaces after the comma, and several v1 values (one of them right), are accepted.
    header = sign(SECRET, NOW, BODY)
    mac = header.split("v1=")[1]
    assert verify_signature(f"t={NOW}, v1={'0' * 64}, v1={mac}", SECRET, BODY, now_ms=NOW) is None


def test_signature_with_the_current_clock() -> None:
    now = int(time.time() * 1000)
    assert verify_signature(sign(SECRET, now, BODY), SECRET, BODY) is None
    assert verify_signature(sign(SECRET, now - 2 * FIVE_MIN, BODY), SECRET, BODY) is not None


def test_wrong_body() -> None:
    header = sign(SECRET, NOW, BODY)
    assert verify_signature(header, SECRET, BODY + b" ", now_ms=NOW) == "signature does not match the body"
    assert verify_signature(header, SECRET, b"", now_ms=NOW) is not None


def test_wrong_secret() -> None:
    header = sign("rtsig_other", NOW, BODY)
    assert verify_signature(header, SECRET, BODY, now_ms=NOW) == "signature does not match the body"


def test_timestamp_is_part_of_the_mac() -> None:
    mac = sign(SECRET, NOW, BODY).split("v1=")[1]
    assert verify_signature(f"t={NOW + 1},v1={mac}", SECRET, BODY, now_ms=NOW) is not None


@pytest.mark.parametrize("offset", [FIVE_MIN + 1, -(FIVE_MIN + 1), 3_600_000, -3_600_000])
def test_stale_signatures_are_rejected_both_ways(offset: int) -> None:
    header = sign(SECRET, NOW + offset, BODY)
    reason = verify_signature(header, SECRET, BODY, now_ms=NOW)
    assert reason is not None and "5 minutes" in reason


@pytest.mark.parametrize("offset", [FIVE_MIN, -FIVE_MIN, 1000, -1000])
def test_signatures_within_five_minutes_are_accepted(offset: int) -> None:
    assert verify_signature(sign(SECRET, NOW + offset, BODY), SECRET, BODY, now_ms=NOW) is None


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"v1={'a' * 64}",
        f"t={NOW}",
        f"t=abc,v1={'a' * 64}",
        f"t=-{NOW},v1={'a' * 64}",
        f"t={NOW}.5,v1={'a' * 64}",
        f"T={NOW},V1={'a' * 64}",
    ],
)
def test_malformed_headers(header: str) -> None:
    reason = verify_signature(header, SECRET, BODY, now_ms=NOW)
    assert reason is not None and "malformed" in reason


def test_box_round_trip() -> None:
    box = Box(bytes(range(32)))
    sealed = box.seal(SECRET)
    assert SECRET not in sealed
    assert box.open(sealed) == SECRET
    # A fresh nonce each time: the same secret never seals to the same text.
    assert box.seal(SECRET) != sealed
    assert box.open(box.seal("")) == ""
    assert box.open(box.seal("unicode ✓")) == "unicode ✓"


def test_box_detects_tampering_and_wrong_keys() -> None:
    box = Box(bytes(range(32)))
    raw = bytearray(base64.b64decode(box.seal(SECRET)))
    for position in (0, 12, len(raw) - 1):
        tampered = bytearray(raw)
        tampered[position] ^= 0x01
        with pytest.raises(InvalidTag):
            box.open(base64.b64encode(bytes(tampered)).decode())
    with pytest.raises(InvalidTag):
        Box(bytes(32)).open(box.seal(SECRET))


def test_pepper_is_generated_private_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    pepper = load_pepper("", data_dir)
    assert len(pepper) == 32
    path = data_dir / "pepper"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_pepper("", data_dir) == pepper
    assert load_pepper("", tmp_path / "elsewhere") != pepper


def test_configured_pepper_is_used_instead_of_the_file(tmp_path: Path) -> None:
    generated = load_pepper("", tmp_path)
    configured = load_pepper("from-RT_KEY_PEPPER", tmp_path)
    assert configured != generated
    assert configured == load_pepper("from-RT_KEY_PEPPER", tmp_path / "other")
    assert configured != load_pepper("another value", tmp_path)
    assert not (tmp_path / "other").exists()


def test_secret_key_is_separate_from_the_pepper(tmp_path: Path) -> None:
    key = load_secret_key("", tmp_path)
    assert stat.S_IMODE((tmp_path / "secret.key").stat().st_mode) == 0o600
    assert key != load_pepper("", tmp_path)
    assert load_secret_key("", tmp_path) == key
    Box(key).open(Box(load_secret_key("", tmp_path)).seal(SECRET))
