"""Webhook endpoints, their secrets, and the deliveries of events to them with each attempt: records the store keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from rt.records.events import Event

EndpointStatus = Literal["enabled", "disabled"]
DeliveryStatus = Literal["pending", "succeeded", "failed"]

# The event that exists only for webhooks: every other one an endpoint can want is in rt.records.events.EVENTS.
TEST_EVENT = "webhook.test"


@dataclass(frozen=True)
class WebhookSecret:
    """One signing secret of an endpoint, sealed at rest. A rotated-out secret keeps signing until `expires_at`."""

    sealed: str
    created_at: datetime
    expires_at: datetime | None = None

    def valid_at(self, at: datetime) -> bool:
        return self.expires_at is None or self.expires_at > at


@dataclass(frozen=True)
class WebhookEndpoint:
    id: str  # whk_...
    account_id: str
    url: str
    events: tuple[str, ...]  # event names, or ("*",)
    description: str
    secrets: tuple[WebhookSecret, ...]  # newest first
    created_at: datetime
    status: EndpointStatus = "enabled"
    disabled_reason: str | None = None
    # The first failure since the last success; None while the endpoint answers.
    failing_since: datetime | None = None

    def wants(self, event: str) -> bool:
        return "*" in self.events or event in self.events


@dataclass(frozen=True)
class DeliveryAttempt:
    at: datetime
    status_code: int | None  # None: no HTTP answer (timeout, refused, TLS, blocked address)
    latency_ms: float
    error: str | None = None  # why it failed, in words, when it did
    response: str = ""  # the first RESPONSE_SNIPPET characters of the answer's body


RESPONSE_SNIPPET = 1024


@dataclass(frozen=True)
class WebhookDelivery:
    """One event for one endpoint (the delivery log's entry). Its id is the same across retries and redeliveries."""

    id: str  # whd_...
    account_id: str
    endpoint_id: str
    event_id: str
    event: str
    status: DeliveryStatus
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None  # None once succeeded or failed for good
    last_status_code: int | None = None
    log: tuple[DeliveryAttempt, ...] = field(default_factory=tuple)  # oldest first


@dataclass(frozen=True)
class Claimed:
    """A delivery one worker has claimed (no other instance sends it until the claim ends), with what it needs."""

    delivery: WebhookDelivery
    endpoint: WebhookEndpoint
    event: Event
