"""rt/client/rest: the SDK's webhook methods against the real app, and a create that may have reached an instance is
not sent to another (the server keeps no answer holding a secret to replay)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from rt.app import create_app
from rt.client import ApiError, Client
from rt.config import Settings

PUBLIC = "https://1.1.1.1/rt-hook"  # a literal public address: nothing here makes an event that would go to it
CLOSED = "http://127.0.0.1:9/hook"  # an allowed host where nothing listens: a delivery there fails and stays pending


@contextlib.asynccontextmanager
async def sdk(data_dir: Path) -> AsyncIterator[Client]:
    settings = Settings(data_dir=str(data_dir), bootstrap=False, paper_tick_ms=0, webhook_allow_hosts=("127.0.0.1",))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        account = await runtime.keys.create_account("desk")
        issued = await runtime.keys.create(account.id, "full", "pro_plus")
        async with Client("http://rt.test", issued.key, transport=httpx.ASGITransport(app=app)) as client:
            yield client


async def test_endpoints_created_listed_rotated_and_deleted(tmp_path: Path) -> None:
    async with sdk(tmp_path) as rt:
        made = await rt.create_webhook(PUBLIC, ["position.opened"], "desk hook")
        assert made["secret"].startswith("whsec_") and made["description"] == "desk hook"
        assert await rt.webhooks() == [await rt.webhook(made["id"])]
        assert "secret" not in await rt.webhook(made["id"])
        rotated = await rt.rotate_webhook_secret(made["id"])
        assert rotated["secret"] != made["secret"] and rotated["previous_secret_expires_at"]
        assert await rt.delete_webhook(made["id"]) == {"id": made["id"], "deleted": True}
        assert await rt.webhooks() == []
        with pytest.raises(ApiError) as gone:
            await rt.webhook(made["id"])
        assert gone.value.status == 404 and gone.value.code == "NOT_FOUND"


async def test_a_refused_url_is_an_api_error_with_its_code(tmp_path: Path) -> None:
    async with sdk(tmp_path) as rt:
        with pytest.raises(ApiError) as refused:
            await rt.create_webhook("http://1.1.1.1/hook")
        assert refused.value.status == 400 and refused.value.code == "WEBHOOK_URL_NOT_ALLOWED"


async def test_a_test_delivery_is_in_the_log_and_can_be_sent_again(tmp_path: Path) -> None:
    async with sdk(tmp_path) as rt:
        local = await rt.create_webhook(CLOSED, ["order.filled"])
        queued = await rt.test_webhook(local["id"])
        assert queued["event"] == "webhook.test" and queued["endpoint_id"] == local["id"]
        assert (await rt.webhook_delivery(queued["id"]))["id"] == queued["id"]
        log = await rt.webhook_deliveries(endpoint_id=local["id"], event="webhook.test")
        assert [d["id"] for d in log] == [queued["id"]]
        assert await rt.webhook_deliveries(event="order.filled") == []
        again = await rt.redeliver(queued["event_id"])
        assert [d["id"] for d in again] == [queued["id"]] and again[0]["status"] == "pending"
        assert again[0]["next_attempt_at"] is not None


async def test_a_create_that_may_have_arrived_is_not_sent_again_elsewhere() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "a":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(201, json={"id": "whk_1", "secret": "whsec_x"})

    async with Client(
        ["http://a:8080", "http://b:8080"], "rt_live_" + "0" * 32, transport=httpx.MockTransport(handle)
    ) as rt:
        with pytest.raises(httpx.TransportError):
            await rt.create_webhook(PUBLIC, ["*"])
    assert [r.url.host for r in seen] == ["a"]
    assert "idempotency-key" not in seen[0].headers
    assert orjson.loads(seen[0].content) == {"url": PUBLIC, "events": ["*"], "description": ""}
