"""What a delivery carries: the body, and its signatures in both schemes (X-RT-Signature as Stripe signs, and the
Standard Webhooks headers), one per secret valid at the time so a receiver mid-rotation accepts either."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from secrets import token_bytes
from typing import Any

from rt import __version__
from rt.records.events import Event
from rt.wire import dumps, rfc3339

SECRET_PREFIX = "whsec_"
USER_AGENT = f"rt-webhooks/{__version__}"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(token_bytes(32)).decode("ascii")


def body_of(event: Event) -> bytes:
    data: dict[str, Any] = event.data
    if event.event.startswith("position.") and "id" in data:
        data = {"position_id": data["id"], **data}
    at = _EPOCH + timedelta(microseconds=event.ts_us)
    return dumps({"id": event.id, "event": event.event, "timestamp": rfc3339(at), "data": data})


def headers(body: bytes, message_id: str, secrets: Sequence[str], at_ms: int) -> dict[str, str]:
    """The headers of one delivery attempt, signed with each of `secrets` (newest first) at `at_ms`."""
    if not secrets:
        raise ValueError("a delivery needs at least one secret to sign with")
    at_s = at_ms // 1000
    rt_signed = f"{at_ms}.".encode() + body
    standard_signed = f"{message_id}.{at_s}.".encode() + body
    rt_signatures = ",".join("v1=" + _mac(secret.encode(), rt_signed).hex() for secret in secrets)
    standard_signatures = " ".join(
        "v1," + base64.b64encode(_mac(_standard_key(secret), standard_signed)).decode("ascii") for secret in secrets
    )
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-RT-Signature": f"t={at_ms},{rt_signatures}",
        "webhook-id": message_id,
        "webhook-timestamp": str(at_s),
        "webhook-signature": standard_signatures,
    }


def _standard_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()
