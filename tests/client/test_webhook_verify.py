"""rt/client/webhooks: a receiver's verify accepts what rt signs in either scheme, with headers in any case, and
refuses a tampered body, a wrong secret, or a timestamp outside the tolerance, saying why."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rt.client import WebhookVerificationError, verify
from rt.records.events import Event
from rt.webhooks.signing import body_of, headers, new_secret

NOW = 1796158800.0
EVENT = Event(account_id="acct_1", event="position.opened", data={"id": "pos_1", "quantity": 0.5}, id="evt_9")
RT_HEADER = "X-RT-Signature"
STANDARD = ("webhook-id", "webhook-timestamp", "webhook-signature")


def signed(*secrets: str, at: float = NOW) -> tuple[bytes, dict[str, str]]:
    body = body_of(EVENT)
    return body, headers(body, EVENT.id, list(secrets), int(at * 1000))


def only(made: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in made.items() if k in names}


def reason(body: bytes | str, sent: dict[str, str], secret: str, **kw: float) -> str:
    with pytest.raises(WebhookVerificationError) as caught:
        verify(body, sent, secret, now=kw.pop("now", NOW), **kw)  # type: ignore[arg-type]
    return caught.value.reason


@pytest.mark.parametrize("scheme", [(RT_HEADER,), STANDARD, (RT_HEADER, *STANDARD)])
def test_each_scheme_alone_verifies_and_returns_the_body(scheme: tuple[str, ...]) -> None:
    secret = new_secret()
    body, sent = signed(secret)
    event = verify(body, only(sent, *scheme), secret, now=NOW)
    assert event["id"] == "evt_9"
    assert event["data"]["position_id"] == "pos_1"
    assert verify(body.decode(), only(sent, *scheme), secret, now=NOW) == event


def test_header_names_are_read_in_any_case() -> None:
    secret = new_secret()
    body, sent = signed(secret)
    assert verify(body, {k.upper(): v for k, v in sent.items()}, secret, now=NOW)["id"] == "evt_9"
    assert verify(body, {k.lower(): v for k, v in only(sent, RT_HEADER).items()}, secret, now=NOW)["id"] == "evt_9"


def test_either_secret_of_a_rotation_verifies() -> None:
    new, old = new_secret(), new_secret()
    body, sent = signed(new, old)
    for scheme in ((RT_HEADER,), STANDARD):
        for secret in (new, old):
            assert verify(body, only(sent, *scheme), secret, now=NOW)["id"] == "evt_9"


@pytest.mark.parametrize("scheme", [(RT_HEADER,), STANDARD])
def test_a_tampered_body_or_a_wrong_secret_fails(scheme: tuple[str, ...]) -> None:
    secret = new_secret()
    body, sent = signed(secret)
    sent = only(sent, *scheme)
    assert "signature" in reason(body.replace(b"0.5", b"5.0"), sent, secret)
    assert "signature" in reason(body, sent, new_secret())


@pytest.mark.parametrize("scheme", [(RT_HEADER,), STANDARD])
def test_a_timestamp_outside_the_tolerance_fails(scheme: tuple[str, ...]) -> None:
    secret = new_secret()
    body, sent = signed(secret, at=NOW - 301)
    assert "old" in reason(body, only(sent, *scheme), secret)
    body, sent = signed(secret, at=NOW + 301)
    assert "future" in reason(body, only(sent, *scheme), secret)
    body, sent = signed(secret, at=NOW - 250)
    assert verify(body, only(sent, *scheme), secret, now=NOW)
    assert "old" in reason(body, only(sent, *scheme), secret, tolerance_s=60)


def test_now_defaults_to_the_clock() -> None:
    secret = new_secret()
    body, sent = signed(secret, at=time.time())
    assert verify(body, sent, secret)["id"] == "evt_9"
    body, sent = signed(secret, at=time.time() - 3600)
    with pytest.raises(WebhookVerificationError):
        verify(body, sent, secret)


def test_missing_or_malformed_headers_fail_with_a_reason() -> None:
    secret = new_secret()
    body, sent = signed(secret)
    assert "header" in reason(body, {"Content-Type": "application/json"}, secret)
    assert "timestamp" in reason(body, {RT_HEADER: "v1=00"}, secret)
    assert "missing" in reason(body, only(sent, "webhook-signature"), secret)
    assert reason(body, {**only(sent, *STANDARD), "webhook-signature": "v1,not-base64!"}, secret)


def test_one_bad_scheme_does_not_hide_a_good_one() -> None:
    secret = new_secret()
    body, sent = signed(secret)
    broken = {**sent, RT_HEADER: f"t={int(NOW * 1000)},v1=" + "0" * 64}
    assert verify(body, broken, secret, now=NOW)["id"] == "evt_9"


def test_the_sdk_verify_does_not_load_server_code() -> None:
    probe = "import sys, rt.client.webhooks; print(sorted(m for m in sys.modules if m.startswith('rt.webhooks')))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
