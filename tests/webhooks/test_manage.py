"""WebhookManager: creating endpoints (and what is refused), secrets and their rotation, tests, redelivery, the log,
and one account never reaching another's."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from rt.auth.vault import Box
from rt.errors import (
    BAD_REQUEST,
    NOT_FOUND,
    WEBHOOK_DISABLED,
    WEBHOOK_LIMIT_REACHED,
    WEBHOOK_URL_NOT_ALLOWED,
    RtError,
)
from rt.records.events import EVENTS, Event
from rt.records.webhooks import WebhookEndpoint
from rt.webhooks.manage import DISABLED_BY_ACCOUNT, MAX_ENDPOINTS, delivery_json, endpoint_json
from tests.webhooks.conftest import KEY, Opener, all_in, rt_signature_valid
from tests.webhooks.hooks import Hooks, Reply


async def refused(call: Any) -> RtError:
    with pytest.raises(RtError) as caught:
        await call
    return caught.value


async def test_a_new_endpoint_shows_its_secret_once_and_keeps_it_sealed(sqlite_instances: Opener) -> None:
    one = await sqlite_instances(start=False)
    endpoint, secret = await one.manager.create(
        one.account_id, "http://127.0.0.1:9/hook", ["order.filled", "position.opened", "order.filled"], "desk"
    )
    assert secret.startswith("whsec_")
    assert endpoint.id.startswith("whk_")
    stored = await one.manager.get(one.account_id, endpoint.id)
    assert stored.events == ("order.filled", "position.opened")
    [sealed] = stored.secrets
    assert secret not in sealed.sealed
    assert Box(KEY).open(sealed.sealed) == secret

    shown = endpoint_json(stored)
    assert shown == {
        "id": endpoint.id,
        "url": "http://127.0.0.1:9/hook",
        "events": ["order.filled", "position.opened"],
        "description": "desk",
        "status": "enabled",
        "disabled_reason": None,
        "failing_since": None,
        "created_at": shown["created_at"],
        "previous_secret_expires_at": None,
    }
    assert shown["created_at"].endswith("Z")
    assert secret not in str(shown)


@pytest.mark.parametrize(
    ("url", "events", "description", "says"),
    [
        ("http://127.0.0.1:9/hook", [], "", "events"),
        ("http://127.0.0.1:9/hook", "*", "", "events"),
        ("http://127.0.0.1:9/hook", ["order.created"] * 101, "", "at most 100"),
        ("http://127.0.0.1:9/" + "x" * 2048, ["*"], "", "2048"),
        ("http://127.0.0.1:9/hook", ["*"], "d" * 501, "500"),
        ("", ["*"], "", "url"),
    ],
)
async def test_a_malformed_endpoint_is_a_400_saying_what_is_wrong(
    sqlite_instances: Opener, url: str, events: Any, description: str, says: str
) -> None:
    one = await sqlite_instances(start=False)
    error = await refused(one.manager.create(one.account_id, url, events, description))
    assert (error.status, error.code) == (400, BAD_REQUEST)
    assert says in error.detail
    assert (await one.manager.list(one.account_id, 50, 0))[1] == 0


async def test_unknown_event_names_are_refused_by_name_and_every_known_one_is_accepted(
    sqlite_instances: Opener,
) -> None:
    one = await sqlite_instances(start=False)
    error = await refused(
        one.manager.create(one.account_id, "http://127.0.0.1:9/h", ["order.filled", "order.eaten", "nope"])
    )
    assert error.status == 400
    assert "order.eaten" in error.detail and "nope" in error.detail
    assert "order.filled" not in error.detail
    endpoint, _ = await one.manager.create(one.account_id, "http://127.0.0.1:9/h", [*EVENTS, "webhook.test"])
    assert set(endpoint.events) == {*EVENTS, "webhook.test"}


@pytest.mark.parametrize("url", ["https://10.0.0.1/hook", "https://169.254.169.254/latest", "http://93.184.216.34/x"])
async def test_a_private_or_plain_http_destination_is_refused(sqlite_instances: Opener, url: str) -> None:
    one = await sqlite_instances(start=False)
    error = await refused(one.manager.create(one.account_id, url, ["*"]))
    assert (error.status, error.code) == (400, WEBHOOK_URL_NOT_ALLOWED)


async def test_an_account_has_at_most_twenty_endpoints(sqlite_instances: Opener) -> None:
    one = await sqlite_instances(start=False)
    for i in range(MAX_ENDPOINTS):
        await one.manager.create(one.account_id, f"http://127.0.0.1:9/h{i}", ["*"])
    error = await refused(one.manager.create(one.account_id, "http://127.0.0.1:9/more", ["*"]))
    assert (error.status, error.code) == (409, WEBHOOK_LIMIT_REACHED)
    page, total = await one.manager.list(one.account_id, 5, 15)
    assert total == MAX_ENDPOINTS
    assert len(page) == 5
    await one.manager.delete(one.account_id, page[0].id)
    await one.manager.create(one.account_id, "http://127.0.0.1:9/more", ["*"])


async def test_another_accounts_endpoints_and_deliveries_are_not_found(instances: Opener, hooks: Hooks) -> None:
    one = await instances()
    other = (await one.store.create_account("other")).id
    endpoint, _ = await one.manager.create(one.account_id, hooks.url(), ["*"])
    [event] = await one.emit()
    [delivery] = await one.settled(all_in("succeeded"))
    calls = [
        one.manager.get(other, endpoint.id),
        one.manager.delete(other, endpoint.id),
        one.manager.rotate(other, endpoint.id),
        one.manager.test(other, endpoint.id),
        one.manager.deliveries(other, endpoint_id=endpoint.id),
        one.manager.redeliver(other, delivery.id),
        one.manager.redeliver(other, event.id),
    ]
    for call in calls:
        assert (await refused(call)).code == NOT_FOUND
    assert await one.manager.deliveries(other) == ([], 0)
    kept = (await one.manager.get(one.account_id, endpoint.id)).secrets
    assert [s.sealed for s in kept] == [s.sealed for s in endpoint.secrets]
    assert len(hooks.requests) == 1


async def test_after_a_rotation_both_secrets_sign_until_the_old_one_expires(instances: Opener, hooks: Hooks) -> None:
    one = await instances()
    endpoint, old = await one.manager.create(one.account_id, hooks.url(), ["*"])
    before = datetime.now(UTC).replace(microsecond=0)  # the JSON shows milliseconds
    rotated, new = await one.manager.rotate(one.account_id, endpoint.id)
    assert new != old and new.startswith("whsec_")
    shown = endpoint_json(rotated)
    assert new not in str(shown) and old not in str(shown)
    expires = datetime.fromisoformat(shown["previous_secret_expires_at"])
    assert before + timedelta(days=7) <= expires <= datetime.now(UTC) + timedelta(days=7)

    await one.manager.test(one.account_id, endpoint.id)
    [request] = await hooks.wait_count("/hook", 1)
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        Webhook(secret).verify(request.body, request.headers)
        assert rt_signature_valid(request, secret)

    # Once the old secret's 7 days are over, only the new one signs.
    stored = await one.manager.get(one.account_id, endpoint.id)
    current, previous = stored.secrets
    lapsed = replace(previous, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    await one.store.update_endpoint(replace(stored, secrets=(current, lapsed)))
    assert endpoint_json(await one.manager.get(one.account_id, endpoint.id))["previous_secret_expires_at"] is None
    await one.manager.test(one.account_id, endpoint.id)
    [_, later] = await hooks.wait_count("/hook", 2)
    assert len(later.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(later.body, later.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(later.body, later.headers)
    assert not rt_signature_valid(later, old)

    # The next rotation drops the expired secret and keeps the current one for 7 days.
    again, newest = await one.manager.rotate(one.account_id, endpoint.id)
    assert [Box(KEY).open(s.sealed) for s in again.secrets] == [newest, new]


async def test_a_test_delivery_goes_to_that_endpoint_alone(instances: Opener, hooks: Hooks) -> None:
    one = await instances()
    endpoint, secret = await one.manager.create(one.account_id, hooks.url("/a"), ["order.filled"])
    await one.manager.create(one.account_id, hooks.url("/b"), ["*"])
    delivery = await one.manager.test(one.account_id, endpoint.id)
    assert delivery.id.startswith("whd_")
    assert (delivery.endpoint_id, delivery.event, delivery.status) == (endpoint.id, "webhook.test", "pending")

    [request] = await hooks.wait_count("/a", 1)
    body = Webhook(secret).verify(request.body, request.headers)
    assert body["event"] == "webhook.test"
    assert body["id"] == delivery.event_id
    assert body["data"]["endpoint_id"] == endpoint.id
    assert body["data"]["message"]
    [done] = await one.settled(all_in("succeeded"), endpoint_id=endpoint.id)
    assert done.id == delivery.id
    assert hooks.to("/b") == []


async def test_redelivery_by_delivery_id_or_by_event_id_sends_the_same_message_again(
    instances: Opener, hooks: Hooks
) -> None:
    one = await instances()
    a, _ = await one.manager.create(one.account_id, hooks.url("/a"), ["*"])
    await one.manager.create(one.account_id, hooks.url("/b"), ["*"])
    [event] = await one.emit()
    first = await one.settled(lambda found: len(found) == 2 and all_in("succeeded")(found))
    of_a = next(d for d in first if d.endpoint_id == a.id)

    [again] = await one.manager.redeliver(one.account_id, of_a.id)
    assert (again.id, again.status) == (of_a.id, "pending")
    await hooks.wait_count("/a", 2)
    [twice] = await one.settled(lambda found: found[0].attempts == 2 and all_in("succeeded")(found), endpoint_id=a.id)
    assert [r.event_id for r in hooks.to("/a")] == [event.id, event.id]
    assert len(hooks.to("/b")) == 1

    both = await one.manager.redeliver(one.account_id, event.id)
    assert {d.id for d in both} == {d.id for d in first}
    await hooks.wait_count("/a", 3)
    await hooks.wait_count("/b", 2)
    final = await one.settled(lambda found: sum(d.attempts for d in found) == 5 and all_in("succeeded")(found))
    assert all(d.event_id == event.id for d in final)
    assert delivery_json(twice)["log"][0]["status_code"] == 200

    for unknown in ("whd_nothing", "evt_nothing", "nothing"):
        assert (await refused(one.manager.redeliver(one.account_id, unknown))).code == NOT_FOUND


async def test_the_log_filters_and_refuses_an_unknown_status(instances: Opener, hooks: Hooks) -> None:
    one = await instances()
    hooks.answer("/gone", then=Reply(410))
    ok, _ = await one.manager.create(one.account_id, hooks.url("/ok"), ["*"])
    gone, _ = await one.manager.create(one.account_id, hooks.url("/gone"), ["order.created"])
    [event] = await one.emit()
    await one.settled(lambda found: {d.status for d in found} >= {"succeeded", "failed"})

    succeeded = await one.deliveries(status="succeeded")
    assert {(d.endpoint_id, d.event_id) for d in succeeded} >= {(ok.id, event.id)}
    [failed] = await one.deliveries(status="failed")
    assert failed.endpoint_id == gone.id
    shown = delivery_json(failed)
    assert shown["status"] == "failed"
    assert shown["next_attempt_at"] is None
    assert shown["last_status_code"] == 410
    assert [entry["status_code"] for entry in shown["log"]] == [410]
    assert set(shown["log"][0]) == {"at", "status_code", "latency_ms", "error", "response"}
    assert [d.event_id for d in await one.deliveries(event_id=event.id, endpoint_id=ok.id)] == [event.id]
    error = await refused(one.manager.deliveries(one.account_id, status="lost"))
    assert error.status == 400

    await one.manager.delete(one.account_id, gone.id)
    assert (await refused(one.manager.get(one.account_id, gone.id))).code == NOT_FOUND
    assert all(d.endpoint_id != gone.id for d in await one.deliveries())


async def test_a_disabled_endpoint_refuses_a_test(instances: Opener, hooks: Hooks) -> None:
    one = await instances()
    hooks.answer("/gone", then=Reply(410))
    gone, _ = await one.manager.create(one.account_id, hooks.url("/gone"), ["*"])
    await one.manager.test(one.account_id, gone.id)
    await one.settled(all_in("failed"))
    async with asyncio.timeout(10):
        while (await one.manager.get(one.account_id, gone.id)).status != "disabled":  # noqa: ASYNC110 - in the store
            await asyncio.sleep(0.02)
    error = await refused(one.manager.test(one.account_id, gone.id))
    assert (error.status, error.code) == (409, WEBHOOK_DISABLED)
    assert gone.id in error.detail


async def disabled_by_a_410(one: Any, hooks: Hooks, path: str = "/gone") -> tuple[WebhookEndpoint, Event]:
    """An endpoint that answered its first delivery 410 Gone (and answers 200 after), disabled for it."""
    hooks.answer(path, Reply(410))
    endpoint, _ = await one.manager.create(one.account_id, hooks.url(path), ["*"])
    [event] = await one.emit()
    await one.settled(all_in("failed"), endpoint_id=endpoint.id)
    async with asyncio.timeout(10):
        while (await one.manager.get(one.account_id, endpoint.id)).status != "disabled":  # noqa: ASYNC110 - in the store
            await asyncio.sleep(0.02)
    return endpoint, event


async def test_a_re_enabled_endpoint_receives_the_next_event_and_its_failed_deliveries_stay_failed(
    instances: Opener, hooks: Hooks
) -> None:
    one = await instances()
    gone, first = await disabled_by_a_410(one, hooks)
    [failed] = await one.deliveries(endpoint_id=gone.id)
    await one.emit()  # while disabled: no delivery at all
    assert [d.id for d in await one.deliveries(endpoint_id=gone.id)] == [failed.id]

    enabled = await one.manager.update(one.account_id, gone.id, status="enabled")
    assert (enabled.status, enabled.disabled_reason, enabled.failing_since) == ("enabled", None, None)
    assert [x.sealed for x in enabled.secrets] == [x.sealed for x in gone.secrets]
    assert (await one.store.get_delivery(one.account_id, failed.id)).status == "failed"  # type: ignore[union-attr]

    [nxt] = await one.emit()
    await hooks.wait_count("/gone", 2)
    await one.settled(lambda found: any(d.event_id == nxt.id and d.status == "succeeded" for d in found))
    assert [r.event_id for r in hooks.to("/gone")] == [first.id, nxt.id]
    assert (await one.store.get_delivery(one.account_id, failed.id)).status == "failed"  # type: ignore[union-attr]

    # Once enabled, the failed one can be sent again by hand.
    [again] = await one.manager.redeliver(one.account_id, failed.id)
    assert again.status == "pending"
    await hooks.wait_count("/gone", 3)
    assert hooks.to("/gone")[2].event_id == first.id


async def test_redelivery_to_a_disabled_endpoint_is_refused_and_queues_nothing(instances: Opener, hooks: Hooks) -> None:
    one = await instances()
    ok, _ = await one.manager.create(one.account_id, hooks.url("/ok"), ["order.created"])
    gone, event = await disabled_by_a_410(one, hooks)
    await one.settled(all_in("succeeded"), endpoint_id=ok.id)
    [failed] = await one.deliveries(endpoint_id=gone.id)
    for asked in (failed.id, event.id):
        error = await refused(one.manager.redeliver(one.account_id, asked))
        assert (error.status, error.code) == (409, WEBHOOK_DISABLED)
        assert gone.id in error.detail
        assert "answered 410" in error.detail
    # Nothing was made pending: not the disabled endpoint's delivery, nor (for the event) the enabled one's.
    after = {d.id: (d.status, d.attempts) for d in await one.deliveries(event_id=event.id)}
    assert after == {failed.id: ("failed", 1), next(iter(after.keys() - {failed.id})): ("succeeded", 1)}
    assert await one.store.delivery_backlog() == 0
    assert len(hooks.to("/ok")) == 1


async def test_changed_events_take_effect_from_the_next_event(sqlite_instances: Opener) -> None:
    one = await sqlite_instances(start=False)
    endpoint, _ = await one.manager.create(one.account_id, "http://127.0.0.1:9/hook", ["order.created"])
    await one.emit("order.created")
    changed = await one.manager.update(one.account_id, endpoint.id, events=["order.filled", "order.filled"])
    assert changed.events == ("order.filled",)
    await one.emit("order.created")
    await one.emit("order.filled")
    # The outbox rows are written with the events, so the log is complete as soon as emit returns.
    assert [d.event for d in reversed(await one.deliveries(endpoint_id=endpoint.id))] == [
        "order.created",
        "order.filled",
    ]


async def test_an_update_changes_only_what_it_names_and_a_new_url_is_checked(sqlite_instances: Opener) -> None:
    one = await sqlite_instances(start=False)
    endpoint, _ = await one.manager.create(one.account_id, "http://127.0.0.1:9/hook", ["order.filled"], "desk")
    moved = await one.manager.update(one.account_id, endpoint.id, url="http://127.0.0.1:9/v2", description="")
    assert (moved.url, moved.events, moved.description, moved.status) == (
        "http://127.0.0.1:9/v2",
        ("order.filled",),
        "",
        "enabled",
    )
    assert [x.sealed for x in moved.secrets] == [x.sealed for x in endpoint.secrets]
    for url in ("https://10.0.0.1/hook", "https://169.254.169.254/latest", "http://93.184.216.34/x"):
        error = await refused(one.manager.update(one.account_id, endpoint.id, url=url))
        assert (error.status, error.code) == (400, WEBHOOK_URL_NOT_ALLOWED)
    for change, says in (
        ({"events": []}, "events"),
        ({"events": ["order.eaten"]}, "order.eaten"),
        ({"url": ""}, "url"),
        ({"description": "d" * 501}, "500"),
        ({"status": "paused"}, "status"),
    ):
        error = await refused(one.manager.update(one.account_id, endpoint.id, **change))
        assert (error.status, error.code) == (400, BAD_REQUEST)
        assert says in error.detail
    assert await one.manager.get(one.account_id, endpoint.id) == moved


async def test_disabling_by_hand_fails_what_was_pending_and_queues_no_more(sqlite_instances: Opener) -> None:
    one = await sqlite_instances(start=False)
    endpoint, _ = await one.manager.create(one.account_id, "http://127.0.0.1:9/hook", ["*"])
    await one.emit()
    assert [d.status for d in await one.deliveries()] == ["pending"]
    off = await one.manager.update(one.account_id, endpoint.id, status="disabled")
    assert (off.status, off.disabled_reason) == ("disabled", DISABLED_BY_ACCOUNT)
    assert [d.status for d in await one.deliveries()] == ["failed"]
    await one.emit()
    assert len(await one.deliveries()) == 1
    again = await one.manager.update(one.account_id, endpoint.id, status="disabled", description="later")
    assert (again.disabled_reason, again.description) == (DISABLED_BY_ACCOUNT, "later")


async def test_another_accounts_endpoint_cannot_be_changed(sqlite_instances: Opener) -> None:
    one = await sqlite_instances(start=False)
    other = (await one.store.create_account("other")).id
    created, _ = await one.manager.create(one.account_id, "http://127.0.0.1:9/hook", ["*"])
    endpoint = await one.manager.get(one.account_id, created.id)
    for change in ({"status": "disabled"}, {"url": "http://127.0.0.1:9/mine"}, {}):
        assert (await refused(one.manager.update(other, endpoint.id, **change))).code == NOT_FOUND
    assert await one.manager.get(one.account_id, endpoint.id) == endpoint
