"""/v1/webhooks: endpoints (the secret is shown once), secret rotation, test events, the delivery log, redelivery."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from rt.api import _errors
from rt.api.models import Page, Strict
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.errors import NotFound
from rt.records.events import EVENTS
from rt.records.webhooks import TEST_EVENT
from rt.webhooks.manage import delivery_json, endpoint_json

# What an endpoint may ask for, for the document; the manager gives the 400 that names an unknown one.
EVENT_NAMES = ["*", *EVENTS, TEST_EVENT]
EventName = Annotated[str, Field(json_schema_extra={"enum": EVENT_NAMES})]


class WebhookCreate(Strict):
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="An https URL whose host resolves to public addresses only (unless the host is in "
        "RT_WEBHOOK_ALLOW_HOSTS).",
    )
    events: list[EventName] = Field(min_length=1, max_length=100, description='Event names, or `["*"]` for all.')
    description: str = Field("", max_length=500)


class WebhookUpdate(Strict):
    url: str | None = Field(
        None,
        min_length=1,
        max_length=2048,
        description="A new destination: checked as at creation (https, public addresses, or RT_WEBHOOK_ALLOW_HOSTS).",
    )
    events: list[EventName] | None = Field(
        None, min_length=1, max_length=100, description="Replaces the list; it applies from the next event."
    )
    description: str | None = Field(None, max_length=500)
    status: Literal["enabled", "disabled"] | None = Field(
        None,
        description="`enabled` turns a disabled endpoint back on and clears `disabled_reason` and `failing_since`; "
        "`disabled` stops its deliveries (the pending ones fail).",
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None = Field(description="Why it was disabled: it answered 410, or failed for too long.")
    failing_since: datetime | None = Field(description="The first failed attempt since the last success.")
    created_at: datetime
    previous_secret_expires_at: datetime | None = Field(
        description="After a rotation: when the previous secret stops signing (deliveries carry both until then)."
    )


class WebhookIssued(WebhookOut):
    secret: str = Field(description="The signing secret (`whsec_…`). Shown only in this response.")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]
    total: int
    page: int


class WebhookDeleted(BaseModel):
    id: str
    deleted: Literal[True]


class AttemptOut(BaseModel):
    at: datetime
    status_code: int | None = Field(description="The receiver's HTTP status; null when it gave no answer.")
    latency_ms: float
    error: str | None = Field(description="Why the attempt failed, when it did and the status does not say.")
    response: str = Field(description="The start of the receiver's answer (at most 1024 characters).")


class DeliveryOut(BaseModel):
    id: str = Field(description="`whd_…`: the same across retries and redeliveries.")
    event_id: str = Field(description="`evt_…`: also the `webhook-id` header and the body's `id`.")
    event: str
    endpoint_id: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None = Field(description="When it is sent next; null once succeeded or failed.")
    last_status_code: int | None
    log: list[AttemptOut] = Field(description="Every attempt, oldest first.")


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    total: int
    page: int


class DeliveryEnvelope(BaseModel):
    delivery: DeliveryOut


class Redelivered(BaseModel):
    deliveries: list[DeliveryOut]


class DeliveryQuery(Page):
    endpoint_id: str | None = Field(None, max_length=64)
    event: str | None = Field(None, max_length=64, description="An event name, e.g. `position.opened`.")
    status: Literal["pending", "succeeded", "failed"] | None = None
    event_id: str | None = Field(None, max_length=64)


def _offset(page: Page) -> int:
    return (page.page - 1) * page.limit


async def list_webhooks(call: Call) -> dict[str, Any]:
    page: Page = call.query
    found, total = await call.runtime.webhooks.list(call.caller.account_id, page.limit, _offset(page))
    return {"webhooks": [endpoint_json(ep) for ep in found], "total": total, "page": page.page}


async def create_webhook(call: Call) -> dict[str, Any]:
    body: WebhookCreate = call.body
    endpoint, secret = await call.runtime.webhooks.create(
        call.caller.account_id, body.url, list(body.events), body.description
    )
    return {**endpoint_json(endpoint), "secret": secret}


async def get_webhook(call: Call) -> dict[str, Any]:
    return endpoint_json(await call.runtime.webhooks.get(call.caller.account_id, call.param("webhook_id")))


async def update_webhook(call: Call) -> dict[str, Any]:
    body: WebhookUpdate = call.body
    endpoint = await call.runtime.webhooks.update(
        call.caller.account_id,
        call.param("webhook_id"),
        url=body.url,
        events=None if body.events is None else list(body.events),
        description=body.description,
        status=body.status,
    )
    return endpoint_json(endpoint)


async def delete_webhook(call: Call) -> dict[str, Any]:
    webhook_id = call.param("webhook_id")
    await call.runtime.webhooks.delete(call.caller.account_id, webhook_id)
    return {"id": webhook_id, "deleted": True}


async def rotate_webhook_secret(call: Call) -> dict[str, Any]:
    endpoint, secret = await call.runtime.webhooks.rotate(call.caller.account_id, call.param("webhook_id"))
    return {**endpoint_json(endpoint), "secret": secret}


async def send_webhook_test(call: Call) -> dict[str, Any]:
    delivery = await call.runtime.webhooks.test(call.caller.account_id, call.param("webhook_id"))
    return {"delivery": delivery_json(delivery)}


async def list_deliveries(call: Call) -> dict[str, Any]:
    query: DeliveryQuery = call.query
    found, total = await call.runtime.webhooks.deliveries(
        call.caller.account_id,
        query.endpoint_id,
        query.event,
        query.status,
        query.event_id,
        query.limit,
        _offset(query),
    )
    return {"deliveries": [delivery_json(d) for d in found], "total": total, "page": query.page}


async def get_delivery(call: Call) -> dict[str, Any]:
    delivery_id = call.param("delivery_id")
    found = await call.runtime.store.get_delivery(call.caller.account_id, delivery_id)
    if found is None:
        raise NotFound(f"no webhook delivery {delivery_id}")
    return {"delivery": delivery_json(found)}


async def redeliver(call: Call) -> dict[str, Any]:
    found = await call.runtime.webhooks.redeliver(call.caller.account_id, call.param("delivery_id"))
    return {"deliveries": [delivery_json(d) for d in found]}


_TAG = "webhooks"
_READ = (*_errors.AUTH, "BAD_REQUEST")
_ONE = (*_errors.AUTH, "NOT_FOUND")
_WRITE = (*_errors.WRITE, "NOT_FOUND", "IDEMPOTENCY_CONFLICT")

# /v1/webhooks/events/... comes before /v1/webhooks/{webhook_id}/...: the router takes the first path that matches.
OPERATIONS = [
    Operation(
        "GET",
        "/v1/webhooks/events",
        list_deliveries,
        "The webhook delivery log",
        _TAG,
        scopes.WEBHOOKS_MANAGE,
        query=DeliveryQuery,
        response=DeliveryList,
        errors=(*_READ, "NOT_FOUND"),
        description="Deliveries newest first, each with every attempt (status code, latency, error, the start of "
        "the answer) and its next retry.",
    ),
    Operation(
        "GET",
        "/v1/webhooks/events/{delivery_id}",
        get_delivery,
        "Get a webhook delivery",
        _TAG,
        scopes.WEBHOOKS_MANAGE,
        response=DeliveryEnvelope,
        errors=_ONE,
    ),
    Operation(
        "POST",
        "/v1/webhooks/events/{delivery_id}/redeliver",
        redeliver,
        "Send a webhook delivery again",
        _TAG,
        scopes.WEBHOOKS_MANAGE,
        response=Redelivered,
        status=202,
        errors=(*_WRITE, "WEBHOOK_DISABLED"),
        idempotent=True,
        description="A `whd_` id sends that delivery again; an `evt_` id sends every delivery of the event. The "
        "delivery keeps its id and its log; it is due at once. When one of them goes to a disabled endpoint, "
        "nothing is sent: 409 `WEBHOOK_DISABLED` names the endpoint (enable it first).",
    ),
    Operation(
        "GET",
        "/v1/webhooks",
        list_webhooks,
        "List webhook endpoints",
        _TAG,
        scopes.WEBHOOKS_MANAGE,
        query=Page,
        response=WebhookList,
        errors=_READ,
    ),
    Operation(
        "POST",
        "/v1/webhooks",
        create_webhook,
        "Create a webhook endpoint (its secret is shown once)",
        _TAG,
        scopes.WEBHOOKS_MANAGE,
        body=WebhookCreate,
        response=WebhookIssued,
        status=201,
        errors=(*_errors.WRITE, "WEBHOOK_URL_NOT_ALLOWED", "WEBHOOK_LIMIT_REACHED"),
        description="Not idempotent, as creating an API key is not: a stored answer would keep the secret in the "
        "clear. At most 20 endpoints per account. The URL must be https and resolve to public addresses only, "
        "unless its host is in RT_WEBHOOK_ALLOW_HOSTS.",
    ),
    Operation(
        "GET",
        "/v1/webhooks/{webhook_id}",
        get_webhook,
        "Get a webhook endpoint",
        _TAG,
        scopes.WEBHOOKS_MANAGE,
        response=WebhookOut,
        errors=_ONE,
    ),
    Operation(
        "PATCH",
        "/v1/webhooks/{webhook_id}",
        update_webhook,
        "Change or re-enable a webhook endpoint",
        _TAG,
        scopes.WEBHOOKS_MANAGE,
        body=WebhookUpdate,
        response=WebhookOut,
        errors=(*_WRITE, "WEBHOOK_URL_NOT_ALLOWED"),
        idempotent=True,
        description="Any of url, events, description and status; what is absent stays. The secret is kept. "
        "Enabling clears `disabled_reason` and `failing_since`; deliveries that failed while the endpoint was "
        "disabled stay failed (redeliver them by delivery or event id), and events of that time have none.",
    ),
    Operation(
        "DELETE",
        "/v1/webhooks/{webhook_id}",
        delete_webhook,
        "Delete a webhook endpoint",
        _TAG,
        scopes.WEBHOOKS_MANAGE,
        response=WebhookDeleted,
        errors=(*_errors.WRITE, "NOT_FOUND"),
        description="Its pending deliveries are dropped with it.",
    ),
    Operation(
        "POST",
        "/v1/webhooks/{webhook_id}/rotate-secret",
        rotate_webhook_secret,
        "Rotate a webhook endpoint's secret",
        _TAG,
        scopes.WEBHOOKS_MANAGE,
        response=WebhookIssued,
        errors=(*_errors.WRITE, "NOT_FOUND"),
        description="Not idempotent, as creating an API key is not: a stored answer would keep the secret in the "
        "clear. Returns the new secret once. The previous one keeps signing for 7 days: each delivery "
        "carries a signature by each.",
    ),
    Operation(
        "POST",
        "/v1/webhooks/{webhook_id}/test",
        send_webhook_test,
        "Send a webhook.test event to an endpoint",
        _TAG,
        scopes.WEBHOOKS_MANAGE,
        response=DeliveryEnvelope,
        status=202,
        errors=(*_errors.WRITE, "NOT_FOUND", "WEBHOOK_DISABLED"),
        description="The delivery is queued at once and logged like any other. A disabled endpoint: 409 "
        "`WEBHOOK_DISABLED`.",
    ),
]
