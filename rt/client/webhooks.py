"""Check that a webhook came from rt, in a receiver:

    event = verify(request_body, request_headers, "whsec_...")

Either signature rt sends is accepted: X-RT-Signature (`t=<unix-ms>,v1=<hex>`, HMAC-SHA256 of "<t>.<body>" keyed
with the whole secret) or the Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
Pass the body exactly as received, before any JSON parsing. During a secret rotation either secret verifies."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_TOLERANCE_S = 300
_SECRET_PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """The webhook is not from the holder of the secret, or is too old or too new to trust; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def verify(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """The delivery's parsed body, once one of its signatures matches `secret` within `tolerance_s` of `now`;
    else WebhookVerificationError."""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    named = {k.lower(): v for k, v in headers.items()}
    at = time.time() if now is None else now
    checks: list[Callable[[], None]] = []
    if "x-rt-signature" in named:
        checks.append(lambda: _check_rt(raw, named["x-rt-signature"], secret, tolerance_s, at))
    if "webhook-signature" in named:
        checks.append(lambda: _check_standard(raw, named, secret, tolerance_s, at))
    if not checks:
        raise WebhookVerificationError("no X-RT-Signature or webhook-signature header")
    failures: list[WebhookVerificationError] = []
    for check in checks:
        try:
            check()
        except WebhookVerificationError as e:
            failures.append(e)
    if len(failures) == len(checks):
        raise failures[0]
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(parsed, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return parsed


def _check_rt(body: bytes, header: str, secret: str, tolerance_s: int, now: float) -> None:
    stamp: str | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            stamp = value
        elif key == "v1":
            signatures.append(value)
    if stamp is None or not _is_unix_time(stamp):
        raise WebhookVerificationError("X-RT-Signature has no timestamp")
    _check_time(int(stamp) / 1000, tolerance_s, now)
    expected = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    # Bytes, not str: compare_digest raises TypeError on a str with non-ASCII characters, which anyone can send.
    if not any(hmac.compare_digest(expected.encode(), s.lower().encode()) for s in signatures):
        raise WebhookVerificationError("no signature matches the secret")


def _check_standard(body: bytes, headers: Mapping[str, str], secret: str, tolerance_s: int, now: float) -> None:
    message_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    if not message_id or not stamp:
        raise WebhookVerificationError("webhook-id or webhook-timestamp is missing")
    if not _is_unix_time(stamp):
        raise WebhookVerificationError("webhook-timestamp is not a unix time")
    _check_time(int(stamp), tolerance_s, now)
    try:
        key = base64.b64decode(secret.removeprefix(_SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not a whsec_ secret") from None
    expected = hmac.new(key, f"{message_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    for versioned in headers["webhook-signature"].split():
        version, _, signature = versioned.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            return
    raise WebhookVerificationError("no signature matches the secret")


def _is_unix_time(stamp: str) -> bool:
    # isdigit() alone accepts "²" and digits of other scripts, which int() refuses or reads.
    return stamp.isascii() and stamp.isdigit() and len(stamp) <= 20


def _check_time(at: float, tolerance_s: int, now: float) -> None:
    if at < now - tolerance_s:
        raise WebhookVerificationError(f"the timestamp is more than {tolerance_s} s old")
    if at > now + tolerance_s:
        raise WebhookVerificationError(f"the timestamp is more than {tolerance_s} s in the future")
