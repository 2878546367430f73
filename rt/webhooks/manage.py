"""What the /v1/webhooks routes and `rt webhooks` do: endpoints, secrets and their rotation, tests and redelivery;
and the delivery worker this process runs."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rt import wire
from rt.auth.vault import Box
from rt.bus import Bus
from rt.config import Settings
from rt.engine.engine import Engine
from rt.errors import WEBHOOK_DISABLED, WEBHOOK_LIMIT_REACHED, BadRequest, Conflict, NotFound
from rt.records.events import EVENTS, Event
from rt.records.ids import new_id
from rt.records.webhooks import TEST_EVENT, EndpointStatus, WebhookDelivery, WebhookEndpoint, WebhookSecret
from rt.store import Store
from rt.webhooks import signing, ssrf
from rt.webhooks.schedule import Schedule
from rt.webhooks.sender import Sender
from rt.webhooks.worker import Worker

MAX_ENDPOINTS = 20
MAX_URL = 2048
MAX_DESCRIPTION = 500
MAX_EVENTS = 100
ROTATION_GRACE = timedelta(days=7)
KNOWN_EVENTS = frozenset(EVENTS) | {"*", TEST_EVENT}
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
REDELIVER_AT_MOST = 500
TEST_MESSAGE = "This is a test delivery from rt."
ENDPOINT_STATUSES = ("enabled", "disabled")
DISABLED_BY_ACCOUNT = "disabled by the account"


def _time(at: datetime | None) -> str | None:
    return None if at is None else wire.rfc3339(at)


def endpoint_json(endpoint: WebhookEndpoint, now: datetime | None = None) -> dict[str, Any]:
    """An endpoint as the API shows it: never a secret, only when the rotated-out ones stop signing."""
    now = now or datetime.now(UTC)
    previous = [s.expires_at for s in endpoint.secrets[1:] if s.expires_at is not None and s.valid_at(now)]
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "status": endpoint.status,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": _time(endpoint.failing_since),
        "created_at": wire.rfc3339(endpoint.created_at),
        "previous_secret_expires_at": _time(max(previous, default=None)),
    }


def delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event": delivery.event,
        "endpoint_id": delivery.endpoint_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "created_at": wire.rfc3339(delivery.created_at),
        "next_attempt_at": _time(delivery.next_attempt_at),
        "last_status_code": delivery.last_status_code,
        "log": [
            {
                "at": wire.rfc3339(a.at),
                "status_code": a.status_code,
                "latency_ms": round(a.latency_ms, 3),
                "error": a.error,
                "response": a.response,
            }
            for a in delivery.log
        ],
    }


def _bad(field: str, message: str, **extra: Any) -> BadRequest:
    return BadRequest(f"{field}: {message}", errors=[{"field": field, "message": message}], **extra)


def _events(events: Sequence[str]) -> tuple[str, ...]:
    if isinstance(events, str) or not isinstance(events, Sequence) or not all(isinstance(e, str) for e in events):
        raise _bad("events", 'a list of event names, or ["*"]')
    if not events:
        raise _bad("events", 'name at least one event, or "*" for every event')
    if len(events) > MAX_EVENTS:
        raise _bad("events", f"at most {MAX_EVENTS} names")
    unknown = sorted({e for e in events if e not in KNOWN_EVENTS})
    if unknown:
        raise _bad("events", f"not known: {', '.join(unknown)}", unknown=unknown)
    return tuple(dict.fromkeys(events))


def _check(url: str, description: str) -> None:
    _check_url(url)
    _check_description(description)


def _check_url(url: str) -> None:
    if not isinstance(url, str) or not url:
        raise _bad("url", "the https URL to deliver to")
    if len(url) > MAX_URL:
        raise _bad("url", f"at most {MAX_URL} characters")


def _check_description(description: str) -> None:
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise _bad("description", f"text of at most {MAX_DESCRIPTION} characters")


def _disabled(endpoint: WebhookEndpoint) -> Conflict:
    return Conflict(
        f"webhook endpoint {endpoint.id} is disabled ({endpoint.disabled_reason}); enable it first: "
        f"PATCH /v1/webhooks/{endpoint.id} with status enabled, or `rt webhooks update {endpoint.id} --enable`",
        code=WEBHOOK_DISABLED,
        endpoint_id=endpoint.id,
        disabled_reason=endpoint.disabled_reason,
    )


class WebhookManager:
    def __init__(self, store: Store, box: Box, bus: Bus, engine: Engine, settings: Settings, instance: str) -> None:
        self.store = store
        self.box = box
        self.bus = bus
        self.engine = engine
        self.settings = settings
        self.instance = instance
        self.schedule = Schedule.of(settings)
        self._worker: Worker | None = None
        self._sender: Sender | None = None

    # the worker

    async def run(self) -> None:
        """Deliver the outbox until cancelled."""
        self._sender = Sender(self.settings.webhook_allow_hosts, self.settings.webhook_timeout_s)
        self._worker = Worker(
            self.store,
            self.box,
            self.bus,
            self.engine,
            self._sender,
            self.schedule,
            self.instance,
            timeout_s=self.settings.webhook_timeout_s,
            concurrency=self.settings.webhook_concurrency,
        )
        await self._worker.run()

    async def close(self) -> None:
        """Stop delivering; hand back every claim of this instance so another (or the next start) sends them."""
        worker, sender = self._worker, self._sender
        self._worker = self._sender = None
        try:
            if worker is not None:
                await worker.close()
        finally:
            if sender is not None:
                await sender.aclose()

    def wake(self) -> None:
        if self._worker is not None:
            self._worker.wake()

    # endpoints

    async def create(
        self, account_id: str, url: str, events: Sequence[str], description: str = ""
    ) -> tuple[WebhookEndpoint, str]:
        """A new endpoint and its signing secret (shown this once)."""
        _check(url, description)
        wanted = _events(events)
        if await self.store.get_account(account_id) is None:
            raise NotFound(f"no account {account_id}")
        _, total = await self.store.list_endpoints(account_id, 1, 0)
        if total >= MAX_ENDPOINTS:
            raise Conflict(
                f"an account has at most {MAX_ENDPOINTS} webhook endpoints; delete one first",
                code=WEBHOOK_LIMIT_REACHED,
                limit=MAX_ENDPOINTS,
            )
        await ssrf.check_url(url, self.settings.webhook_allow_hosts)
        secret = signing.new_secret()
        now = datetime.now(UTC)
        endpoint = WebhookEndpoint(
            id=new_id("whk"),
            account_id=account_id,
            url=url,
            events=wanted,
            description=description,
            secrets=(WebhookSecret(self.box.seal(secret), now),),
            created_at=now,
        )
        await self.store.create_endpoint(endpoint)
        return endpoint, secret

    async def get(self, account_id: str, endpoint_id: str) -> WebhookEndpoint:
        endpoint = await self.store.get_endpoint(account_id, endpoint_id)
        if endpoint is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        return endpoint

    async def list(self, account_id: str, limit: int, offset: int) -> tuple[builtins.list[WebhookEndpoint], int]:
        return await self.store.list_endpoints(account_id, limit, offset)

    async def delete(self, account_id: str, endpoint_id: str) -> None:
        if not await self.store.delete_endpoint(account_id, endpoint_id):
            raise NotFound(f"no webhook endpoint {endpoint_id}")

    async def update(
        self,
        account_id: str,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
        status: EndpointStatus | None = None,
    ) -> WebhookEndpoint:
        """Change what is given (None keeps it). Enabling clears why it was disabled and how long it has failed; the
        deliveries that failed meanwhile stay failed (redeliver them). Disabling fails its pending deliveries."""
        if url is not None:
            _check_url(url)
        if description is not None:
            _check_description(description)
        wanted = None if events is None else _events(events)
        if status is not None and status not in ENDPOINT_STATUSES:
            raise _bad("status", f"one of {', '.join(ENDPOINT_STATUSES)}")
        endpoint = await self.get(account_id, endpoint_id)
        if url is not None and url != endpoint.url:
            await ssrf.check_url(url, self.settings.webhook_allow_hosts)
        changed = replace(
            endpoint,
            url=endpoint.url if url is None else url,
            events=endpoint.events if wanted is None else wanted,
            description=endpoint.description if description is None else description,
        )
        if status == "enabled" and endpoint.status != "enabled":
            changed = replace(changed, status="enabled", disabled_reason=None, failing_since=None)
        if changed != endpoint:
            await self.store.update_endpoint(changed)
        if status == "disabled" and changed.status == "enabled":
            # The store's disable also fails the pending deliveries, which no worker would send any more.
            await self.store.disable_endpoint(changed.id, DISABLED_BY_ACCOUNT)
        return await self.get(account_id, endpoint_id)

    async def rotate(self, account_id: str, endpoint_id: str) -> tuple[WebhookEndpoint, str]:
        """A new signing secret; the one it replaces keeps signing for 7 days, and expired ones are dropped."""
        endpoint = await self.get(account_id, endpoint_id)
        now = datetime.now(UTC)
        kept = [
            s if s.expires_at is not None else replace(s, expires_at=now + ROTATION_GRACE)
            for s in endpoint.secrets
            if s.valid_at(now)
        ]
        secret = signing.new_secret()
        rotated = replace(endpoint, secrets=(WebhookSecret(self.box.seal(secret), now), *kept))
        await self.store.update_endpoint(rotated)
        return rotated, secret

    # deliveries

    async def test(self, account_id: str, endpoint_id: str) -> WebhookDelivery:
        """Send the endpoint a `webhook.test` event (to it alone), now."""
        endpoint = await self.get(account_id, endpoint_id)
        if endpoint.status != "enabled":
            raise _disabled(endpoint)
        event = Event(account_id, TEST_EVENT, {"endpoint_id": endpoint.id, "message": TEST_MESSAGE})
        delivery = await self.store.add_delivery(endpoint, event)
        self.wake()
        return delivery

    async def redeliver(self, account_id: str, delivery_or_event_id: str) -> builtins.list[WebhookDelivery]:
        """Send again, now: one delivery (`whd_…`) or every delivery of an event (`evt_…`). Refused, with nothing sent,
        when one of them goes to a disabled endpoint: it would stay pending and never go."""
        now_us = time.time_ns() // 1000
        if delivery_or_event_id.startswith("evt_"):
            found, _ = await self.store.list_deliveries(
                account_id, None, None, None, delivery_or_event_id, REDELIVER_AT_MOST, 0
            )
        elif delivery_or_event_id.startswith("whd_"):
            one = await self.store.get_delivery(account_id, delivery_or_event_id)
            found = [] if one is None else [one]
        else:
            found = []
        for endpoint_id in dict.fromkeys(d.endpoint_id for d in found):
            endpoint = await self.store.get_endpoint(account_id, endpoint_id)
            if endpoint is not None and endpoint.status != "enabled":
                raise _disabled(endpoint)
        redelivered = [d for f in found if (d := await self.store.redeliver(account_id, f.id, now_us)) is not None]
        if not redelivered:
            raise NotFound(f"no webhook delivery or event {delivery_or_event_id}")
        self.wake()
        return redelivered

    async def deliveries(
        self,
        account_id: str,
        endpoint_id: str | None = None,
        event: str | None = None,
        status: str | None = None,
        event_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[builtins.list[WebhookDelivery], int]:
        """The delivery log, newest first."""
        if status is not None and status not in DELIVERY_STATUSES:
            raise _bad("status", f"one of {', '.join(DELIVERY_STATUSES)}")
        if endpoint_id is not None:
            await self.get(account_id, endpoint_id)
        return await self.store.list_deliveries(account_id, endpoint_id, event, status, event_id, limit, offset)
