"""rt/client/webhooks.verify on headers an attacker writes: every forgery is a WebhookVerificationError, never another
exception (a receiver that catches WebhookVerificationError answers 400 to a forgery, not 500)."""

from __future__ import annotations

import pytest

from rt.client import WebhookVerificationError, verify
from rt.records.events import Event
from rt.webhooks.signing import body_of, headers, new_secret

NOW = 1796158800.0
EVENT = Event(account_id="acct_1", event="order.created", data={"id": "ord_1"}, id="evt_1")
NOW_MS = str(int(NOW * 1000))
NOW_S = str(int(NOW))


@pytest.mark.parametrize(
    "forged",
    [
        {"X-RT-Signature": f"t={NOW_MS},v1=é"},
        {"X-RT-Signature": f"t={NOW_MS},v1=\u0663\u0664"},
        {"X-RT-Signature": "t=\u00b2,v1=00"},
        {"X-RT-Signature": "t=\u0661\u0662,v1=00"},
        {"X-RT-Signature": "t=" + "9" * 5000 + ",v1=00"},
        {"webhook-id": "msg_1", "webhook-timestamp": "\u00b2", "webhook-signature": "v1,AAAA"},
        {"webhook-id": "msg_1", "webhook-timestamp": "9" * 5000, "webhook-signature": "v1,AAAA"},
        {"webhook-id": "msg_1", "webhook-timestamp": NOW_S, "webhook-signature": "v1,é"},
    ],
)
def test_a_forged_header_is_refused_as_a_verification_error(forged: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        verify(body_of(EVENT), forged, new_secret(), now=NOW)


def test_a_genuine_delivery_still_verifies_beside_a_forged_signature() -> None:
    secret = new_secret()
    body = body_of(EVENT)
    sent = headers(body, EVENT.id, [secret], int(NOW * 1000))
    sent["X-RT-Signature"] += ",v1=é"
    assert verify(body, sent, secret, now=NOW)["id"] == EVENT.id
