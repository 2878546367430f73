"""rt/webhooks/signing: what a receiver gets. A Standard Webhooks library accepts our headers (across a rotation
too), X-RT-Signature checks out with a plain HMAC as SPEC §7 describes, and the body is the event as documented."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from rt.records.events import Event
from rt.webhooks.signing import body_of, headers, new_secret

# 2026-12-01T21:00:00.123456Z
TS_US = 1796158800_123456


def event(name: str = "order.filled", **data: object) -> Event:
    return Event(
        account_id="acct_1", event=name, data=data or {"id": "ord_1", "price": 101.5}, id="evt_abc", ts_us=TS_US
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_secret_is_whsec_and_32_random_bytes() -> None:
    made = {new_secret() for _ in range(20)}
    assert len(made) == 20
    for secret in made:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32


def test_the_body_is_the_event_with_an_rfc3339_millisecond_timestamp() -> None:
    body = json.loads(body_of(event()))
    assert body == {
        "id": "evt_abc",
        "event": "order.filled",
        "timestamp": "2026-12-01T21:00:00.123Z",
        "data": {"id": "ord_1", "price": 101.5},
    }


def test_position_events_carry_position_id_first() -> None:
    data = json.loads(body_of(event("position.opened", id="pos_7", symbol="BTC/USDT")))["data"]
    assert data == {"position_id": "pos_7", "id": "pos_7", "symbol": "BTC/USDT"}
    assert next(iter(data)) == "position_id"
    assert "position_id" not in json.loads(body_of(event("order.filled", id="ord_1")))["data"]


def test_a_standard_webhooks_receiver_accepts_our_headers() -> None:
    secret = new_secret()
    body = body_of(event())
    signed = headers(body, "evt_abc", [secret], now_ms())
    assert Webhook(secret).verify(body, signed) == json.loads(body)
    assert signed["webhook-id"] == "evt_abc"
    assert signed["Content-Type"] == "application/json"
    assert re.fullmatch(r"rt-webhooks/\S+", signed["User-Agent"])


def test_during_a_rotation_either_secret_verifies_and_a_stranger_does_not() -> None:
    new, old = new_secret(), new_secret()
    body = body_of(event())
    signed = headers(body, "evt_abc", [new, old], now_ms())
    assert len(signed["webhook-signature"].split(" ")) == 2
    assert len(re.findall(r"v1=", signed["X-RT-Signature"])) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(body, signed)["id"] == "evt_abc"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, signed)


def test_x_rt_signature_is_the_hmac_of_t_dot_body_keyed_with_the_whole_secret() -> None:
    secret = new_secret()
    body = body_of(event())
    at = now_ms()
    signed = headers(body, "evt_abc", [secret], at)
    t, v1 = signed["X-RT-Signature"].split(",")
    assert t == f"t={at}"
    expected = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    assert v1 == f"v1={expected}"
    assert signed["webhook-timestamp"] == str(at // 1000)


def test_the_signatures_cover_the_body_bytes() -> None:
    secret = new_secret()
    body = body_of(event())
    signed = headers(body, "evt_abc", [secret], now_ms())
    tampered = body.replace(b"101.5", b"999.5")
    assert tampered != body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, signed)
    at = signed["X-RT-Signature"].split(",")[0].removeprefix("t=")
    forged = hmac.new(secret.encode(), f"{at}.".encode() + tampered, hashlib.sha256).hexdigest()
    assert f"v1={forged}" not in signed["X-RT-Signature"]


def test_signing_without_a_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        headers(b"{}", "evt_abc", [], now_ms())
