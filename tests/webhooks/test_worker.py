"""The delivery worker against a real store and a real receiver: signing, retries, Retry-After, 410, give-up, a dead
endpoint beside a live one, a graceful stop that loses nothing, and two instances sharing one PostgreSQL outbox."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

from standardwebhooks.webhooks import Webhook

from rt.auth.vault import Box
from rt.records.events import Event
from rt.records.trading import TradeBatch
from rt.records.webhooks import DeliveryAttempt, WebhookDelivery, WebhookEndpoint
from rt.webhooks.manage import WebhookManager
from tests.webhooks.conftest import KEY, SETTINGS, Opener, all_in, rt_signature_valid
from tests.webhooks.hooks import HANG, Hooks, Reply


def statuses(delivery: WebhookDelivery) -> list[int | None]:
    return [a.status_code for a in delivery.log]


async def test_an_event_the_engine_stores_reaches_the_receiver_signed_both_ways(
    instances: Opener, hooks: Hooks
) -> None:
    one = await instances()
    endpoint, secret = await one.manager.create(one.account_id, hooks.url(), ["order.created"], "orders")
    [event] = await one.emit("order.created", {"id": "ord_1", "symbol": "BTC/USDT"})
    await one.emit("order.canceled", {"id": "ord_1"})  # not wanted

    [request] = await hooks.wait_count("/hook", 1)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("rt-webhooks/")
    assert request.event_id == event.id
    assert Webhook(secret).verify(request.body, request.headers) == request.json()
    assert rt_signature_valid(request, secret)
    body = request.json()
    assert body["id"] == event.id
    assert body["event"] == "order.created"
    assert body["data"] == {"id": "ord_1", "symbol": "BTC/USDT"}

    [delivery] = await one.settled(all_in("succeeded"))
    assert delivery.endpoint_id == endpoint.id
    assert delivery.event_id == event.id
    assert delivery.attempts == 1
    assert statuses(delivery) == [200]
    assert delivery.next_attempt_at is None
    assert len(hooks.requests) == 1


async def test_two_failures_then_success_make_three_attempts_each_after_its_wait(
    instances: Opener, hooks: Hooks
) -> None:
    settings = replace(SETTINGS, webhook_schedule=("100ms", "1s"))
    one = await instances(settings=settings)
    hooks.answer("/hook", Reply(500), Reply(500))
    await one.manager.create(one.account_id, hooks.url(), ["*"])
    await one.emit()

    [delivery] = await one.settled(all_in("succeeded"))
    assert delivery.attempts == 3
    assert statuses(delivery) == [500, 500, 200]
    assert delivery.last_status_code == 200
    first, second, third = (a.at for a in delivery.log)
    # A retry is never sent before its wait (minus the 20% jitter) has passed; the waits grow.
    assert second - first >= timedelta(seconds=0.08)
    assert third - second >= timedelta(seconds=0.8)
    assert len(hooks.to("/hook")) == 3


async def test_retry_after_is_honoured_up_to_the_longest_wait(instances: Opener, hooks: Hooks) -> None:
    settings = replace(SETTINGS, webhook_schedule=("100ms", "30s"))
    one = await instances(settings=settings)
    hooks.answer("/soon", Reply(503, {"Retry-After": "1"}))
    hooks.answer("/late", Reply(429, {"Retry-After": "86400"}))
    soon, _ = await one.manager.create(one.account_id, hooks.url("/soon"), ["*"])
    late, _ = await one.manager.create(one.account_id, hooks.url("/late"), ["*"])
    await one.emit()

    [delivered] = await one.settled(all_in("succeeded"), endpoint_id=soon.id)
    assert statuses(delivered) == [503, 200]
    assert delivered.log[1].at - delivered.log[0].at >= timedelta(seconds=1)

    [waiting] = await one.settled(lambda found: bool(found) and found[0].attempts == 1, endpoint_id=late.id)
    assert waiting.status == "pending"
    assert waiting.next_attempt_at is not None
    wait = waiting.next_attempt_at - waiting.log[0].at
    # A day asked for, the schedule's longest wait (30 s) given.
    assert timedelta(seconds=30) <= wait <= timedelta(seconds=40)


async def test_410_disables_the_endpoint_and_says_so_in_an_event(instances: Opener, hooks: Hooks) -> None:
    one = await instances()
    hooks.answer("/gone", then=Reply(410))
    gone, _ = await one.manager.create(one.account_id, hooks.url("/gone"), ["order.created"])
    watcher, _ = await one.manager.create(one.account_id, hooks.url("/watch"), ["webhook.endpoint_disabled"])
    await one.emit()

    [request] = await hooks.wait_count("/watch", 1)
    body = request.json()
    assert body["event"] == "webhook.endpoint_disabled"
    assert body["data"] == {"endpoint_id": gone.id, "url": gone.url, "reason": "answered 410 Gone"}
    endpoint = await one.manager.get(one.account_id, gone.id)
    assert endpoint.status == "disabled"
    assert endpoint.disabled_reason == "answered 410 Gone"
    [failed] = await one.settled(all_in("failed"), endpoint_id=gone.id)
    assert statuses(failed) == [410]
    assert failed.next_attempt_at is None

    await one.emit()  # a disabled endpoint gets nothing more
    await one.settled(lambda found: len(found) == 1, endpoint_id=gone.id)
    assert len(hooks.to("/gone")) == 1
    assert (await one.manager.get(one.account_id, watcher.id)).status == "enabled"


async def disabled_soon(one: Any, endpoint_id: str) -> WebhookEndpoint:
    """The endpoint once it is disabled (just after the attempt that disables it is stored), or as it is after 5 s."""
    endpoint = await one.manager.get(one.account_id, endpoint_id)
    for _ in range(100):
        if endpoint.status == "disabled":
            break
        await asyncio.sleep(0.05)
        endpoint = await one.manager.get(one.account_id, endpoint_id)
    return endpoint


async def test_a_delivery_failing_longer_than_the_give_up_window_fails_and_its_endpoint_is_disabled(
    instances: Opener, hooks: Hooks
) -> None:
    settings = replace(SETTINGS, webhook_schedule=("100ms",), webhook_give_up="500ms")
    one = await instances(settings=settings)
    hooks.answer("/down", then=Reply(500))
    down, _ = await one.manager.create(one.account_id, hooks.url("/down"), ["order.created"])
    await one.manager.create(one.account_id, hooks.url("/watch"), ["webhook.endpoint_disabled"])
    await one.emit()

    [failed] = await one.settled(all_in("failed"), endpoint_id=down.id)
    assert failed.attempts >= 2
    assert set(statuses(failed)) == {500}
    assert failed.log[-1].at - failed.log[0].at > timedelta(seconds=0.5)
    assert failed.next_attempt_at is None
    endpoint = await disabled_soon(one, down.id)
    assert endpoint.status == "disabled"
    assert (endpoint.disabled_reason or "").startswith("failing since ")
    [notice] = await hooks.wait_count("/watch", 1)
    assert notice.json()["data"]["endpoint_id"] == down.id
    attempts = len(hooks.to("/down"))
    await one.settled(all_in("failed"), endpoint_id=down.id)
    assert len(hooks.to("/down")) == attempts


async def test_an_endpoint_failing_every_attempt_of_a_delivery_that_gives_up_is_disabled_with_it(
    instances: Opener, hooks: Hooks
) -> None:
    # The event is older than the endpoint's first failure: the delivery runs out of its window before the endpoint's
    # failing streak does, and the endpoint, which failed every attempt of it, is disabled then too.
    settings = replace(SETTINGS, webhook_schedule=("200ms",), webhook_give_up="1s")
    one = await instances(settings=settings)
    hooks.answer("/down", then=Reply(500))
    down, _ = await one.manager.create(one.account_id, hooks.url("/down"), ["order.created"])
    old = Event(one.account_id, "order.created", {"id": "ord_old"}, ts_us=time.time_ns() // 1000 - 900_000)
    await one.store.save(TradeBatch(events=[old]))
    one.manager.wake()

    [failed] = await one.settled(all_in("failed"), endpoint_id=down.id)
    assert failed.attempts == 2
    endpoint = await disabled_soon(one, down.id)
    assert endpoint.status == "disabled"
    assert (endpoint.disabled_reason or "").startswith("failing since ")


async def test_a_dead_endpoint_holds_only_its_own_slots_while_a_live_one_keeps_receiving(
    instances: Opener, hooks: Hooks
) -> None:
    settings = replace(SETTINGS, webhook_timeout_s=3.0, webhook_concurrency=4)
    one = await instances(settings=settings)
    hooks.answer("/dead", then=HANG)
    dead, _ = await one.manager.create(one.account_id, hooks.url("/dead"), ["*"])
    live, _ = await one.manager.create(one.account_id, hooks.url("/live"), ["*"])
    events = await one.emit(n=12)

    arrived = await hooks.wait_count("/live", 12)
    assert {r.event_id for r in arrived} == {e.id for e in events}
    # The dead one has exactly its 4 slots in flight, and none of them has come back yet.
    assert len(hooks.to("/dead")) == 4
    assert all(d.attempts == 0 for d in await one.deliveries(endpoint_id=dead.id))
    await one.settled(lambda found: len(found) == 12 and all_in("succeeded")(found), endpoint_id=live.id)

    timed_out = await one.settled(lambda found: sum(d.attempts for d in found) >= 4, endpoint_id=dead.id, within=15)
    attempts: list[DeliveryAttempt] = [a for d in timed_out for a in d.log]
    assert all(a.status_code is None and a.error for a in attempts)
    assert all(d.status == "pending" for d in timed_out)


async def test_a_graceful_stop_mid_send_hands_the_claim_back_and_the_next_manager_delivers_it(
    instances: Opener, hooks: Hooks
) -> None:
    one = await instances()
    hooks.answer("/hook", HANG)
    await one.manager.create(one.account_id, hooks.url(), ["*"])
    [event] = await one.emit()
    await hooks.wait_count("/hook", 1)

    await one.manager.close()
    [pending] = await one.deliveries()
    assert pending.status == "pending"
    assert pending.attempts == 0  # the cut-off send is not an attempt

    # The claim ended at the stop: the next manager sends it at once, long before the lease (timeout + 5 s) ends.
    successor = WebhookManager(one.store, Box(KEY), one.bus, one.engine, SETTINGS, "inst-b")
    task = asyncio.create_task(successor.run())
    try:
        requests = await hooks.wait_count("/hook", 2, within=4)
        assert [r.event_id for r in requests] == [event.id, event.id]
        [delivered] = await one.settled(all_in("succeeded"), within=4)
        assert delivered.attempts == 1
    finally:
        await successor.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_two_instances_on_one_postgresql_store_deliver_a_burst_once_each(
    pg_instances: Opener, hooks: Hooks
) -> None:
    a = await pg_instances("inst-a")
    b = await pg_instances("inst-b", account_id=a.account_id)
    # The writer's bus reaches neither worker: both find the rows by polling, so they contend for every one.
    writer = await pg_instances("writer", account_id=a.account_id, start=False)
    sent: dict[str, int] = {}
    for instance, name in ((a, "a"), (b, "b")):
        finish = instance.store.finish_attempt

        async def counted(*args: Any, _finish: Any = finish, _name: str = name, **kwargs: Any) -> bool:
            done: bool = await _finish(*args, **kwargs)
            sent[_name] = sent.get(_name, 0) + done
            return done

        instance.store.finish_attempt = counted  # type: ignore[method-assign]
    await a.manager.create(a.account_id, hooks.url(), ["*"])
    events = [e for _ in range(4) for e in await writer.emit(n=25)]

    await a.settled(lambda found: len(found) == 100 and all(d.status == "succeeded" for d in found), within=30)
    ids = [r.event_id for r in hooks.to("/hook")]
    assert sorted(ids) == sorted(e.id for e in events)
    assert len(ids) == len(set(ids)) == 100
    # Which worker sends how many is timing (the store's two-claimer test holds the claims to never overlap); that
    # the two together recorded each delivery exactly once is not.
    assert sent.get("a", 0) + sent.get("b", 0) == 100
