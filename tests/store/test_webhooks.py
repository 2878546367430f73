"""rt/store webhooks, on both twins: every stored event gets its deliveries in its own transaction, a delivery is held
by one claimer at a time, and attempts, redeliveries and endpoint changes read back as they were made."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import aiosqlite
import asyncpg
import pytest

from rt.records.events import Event
from rt.records.ids import new_id
from rt.records.trading import TradeBatch
from rt.records.webhooks import Claimed, DeliveryAttempt, DeliveryStatus, WebhookEndpoint, WebhookSecret
from rt.store import Store, open_store

T0 = datetime(2026, 12, 1, 21, 0, 0, 123000, tzinfo=UTC)
T0_US = int(T0.timestamp()) * 1_000_000 + 123000
LEASE_US = 15_000_000
SECOND = 1_000_000


def endpoint(account_id: str, events: Sequence[str] = ("*",), **changes: object) -> WebhookEndpoint:
    made = WebhookEndpoint(
        id=new_id("whk"),
        account_id=account_id,
        url="https://hooks.example.com/rt",
        events=tuple(events),
        description="",
        secrets=(WebhookSecret("sealed-secret", T0),),
        created_at=T0,
    )
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


async def made(store: Store, account_id: str, events: Sequence[str] = ("*",), **changes: object) -> WebhookEndpoint:
    ep = endpoint(account_id, events, **changes)
    await store.create_endpoint(ep)
    return ep


async def emit(store: Store, account_id: str, name: str = "position.opened", ts_us: int = T0_US) -> Event:
    event = Event(account_id, name, {"id": new_id("pos")}, ts_us=ts_us)
    await store.save(TradeBatch(events=[event]))
    return event


async def claim(
    store: Store,
    now_us: int = T0_US,
    instance: str = "i1",
    limit: int = 64,
    per_endpoint: int = 64,
    busy: Mapping[str, int] | None = None,
    busy_accounts: Sequence[str] = (),
) -> list[Claimed]:
    return await store.claim_deliveries(instance, now_us, LEASE_US, limit, per_endpoint, busy, busy_accounts)


def attempt(status_code: int | None = 500, error: str | None = "answered 500", response: str = "no") -> DeliveryAttempt:
    return DeliveryAttempt(at=T0, status_code=status_code, latency_ms=12.5, error=error, response=response)


async def account(store: Store, name: str = "alpha") -> str:
    return (await store.create_account(name)).id


# the outbox


async def test_an_event_gets_a_pending_delivery_per_enabled_endpoint_of_its_account_that_wants_it(
    store: Store,
) -> None:
    alpha, beta = await account(store, "alpha"), await account(store, "beta")
    everything = await made(store, alpha, ["*"])
    opened = await made(store, alpha, ["position.opened", "position.closed"])
    orders = await made(store, alpha, ["order.filled"])
    await made(store, alpha, ["*"], status="disabled", disabled_reason="answered 410 Gone")
    await made(store, beta, ["*"])

    event = await emit(store, alpha, "position.opened")

    deliveries, total = await store.list_deliveries(alpha, None, None, None, None, 50, 0)
    assert total == 2
    assert {d.endpoint_id for d in deliveries} == {everything.id, opened.id}
    for d in deliveries:
        assert (d.status, d.attempts, d.event_id, d.event, d.log) == ("pending", 0, event.id, "position.opened", ())
        assert d.id == f"whd_{event.id[4:]}{d.endpoint_id[4:]}"
        assert d.created_at == d.next_attempt_at == T0
    assert await store.list_deliveries(beta, None, None, None, None, 50, 0) == ([], 0)

    await emit(store, alpha, "order.filled")
    by_event, _ = await store.list_deliveries(alpha, None, "order.filled", None, None, 50, 0)
    assert {d.endpoint_id for d in by_event} == {everything.id, orders.id}
    assert await store.delivery_backlog() == 4


async def test_a_write_that_rolls_back_leaves_no_delivery(store: Store) -> None:
    alpha = await account(store)
    await made(store, alpha, ["*"])
    first = Event(alpha, "position.opened", {"id": "pos_1"}, ts_us=T0_US)
    # The second event's id is taken: the insert fails after the first event's delivery was written.
    with pytest.raises((aiosqlite.IntegrityError, asyncpg.UniqueViolationError)):
        await store.save(TradeBatch(events=[first, dataclasses.replace(first, event="position.closed")]))
    assert await store.list_deliveries(alpha, None, None, None, None, 50, 0) == ([], 0)
    assert await store.delivery_backlog() == 0


async def test_a_test_delivery_goes_to_its_endpoint_alone_and_its_event_is_not_for_the_bus(store: Store) -> None:
    alpha = await account(store)
    target = await made(store, alpha, ["*"])
    await made(store, alpha, ["*"])
    event = Event(alpha, "webhook.test", {"endpoint_id": target.id, "message": "hello"}, ts_us=T0_US)

    delivery = await store.add_delivery(target, event)

    assert (delivery.endpoint_id, delivery.event_id, delivery.status) == (target.id, event.id, "pending")
    assert delivery.id == f"whd_{event.id[4:]}{target.id[4:]}"
    assert await store.get_delivery(alpha, delivery.id) == delivery
    assert (await store.list_deliveries(alpha, None, None, None, None, 50, 0))[1] == 1
    assert await store.unpublished_events(T0_US + SECOND, 10) == []
    [claimed] = await claim(store)
    assert claimed.event == event
    assert claimed.endpoint == target


# claims


async def test_a_claim_carries_the_delivery_its_endpoint_and_its_event(store: Store) -> None:
    alpha = await account(store)
    ep = await made(store, alpha, ["position.opened"])
    event = await emit(store, alpha)
    [claimed] = await claim(store)
    assert claimed.delivery == await store.get_delivery(alpha, claimed.delivery.id)
    assert claimed.endpoint == await store.get_endpoint(alpha, ep.id) == ep
    assert claimed.event == event


async def test_two_claimers_never_hold_the_same_delivery(store_url: str) -> None:
    first, second = await open_store(store_url), await open_store(store_url)
    try:
        alpha = await account(first)
        for _ in range(4):
            await made(first, alpha, ["*"])
        await first.save(TradeBatch(events=[Event(alpha, "order.filled", {}, ts_us=T0_US + i) for i in range(60)]))
        everything = {d.id for d in (await first.list_deliveries(alpha, None, None, None, None, 500, 0))[0]}
        assert len(everything) == 240
        held: dict[str, str] = {}
        for _ in range(40):
            claims = await asyncio.gather(
                *(claim(s, T0_US + SECOND, name, limit=5) for s, name in ((first, "i1"), (second, "i2")) * 2)
            )
            for claimed, name in zip(claims, ("i1", "i2") * 2, strict=True):
                for c in claimed:
                    assert c.delivery.id not in held, f"{c.delivery.id} claimed by {held.get(c.delivery.id)} and {name}"
                    held[c.delivery.id] = name
            if not any(claims):
                break
        assert set(held) == everything
        assert set(held.values()) == {"i1", "i2"}
    finally:
        await first.close()
        await second.close()


async def test_a_claim_takes_the_oldest_due_first_at_most_per_endpoint_and_none_of_a_busy_one(store: Store) -> None:
    alpha = await account(store)
    one, two, three = [await made(store, alpha, [name]) for name in ("order.filled", "order.created", "order.canceled")]
    for i in range(4):
        for ep, name in ((one, "order.filled"), (two, "order.created"), (three, "order.canceled")):
            await emit(store, alpha, name, T0_US + i * 10 + (ep is two))

    claimed = await claim(store, T0_US + SECOND, limit=64, per_endpoint=2, busy={three.id: 2})

    assert [(c.endpoint.id, c.event.ts_us) for c in claimed] == [
        (one.id, T0_US),
        (two.id, T0_US + 1),
        (one.id, T0_US + 10),
        (two.id, T0_US + 11),
    ]
    assert len(await claim(store, T0_US + SECOND, limit=1)) == 1, "limit counts over every endpoint"


async def test_an_endpoint_with_sends_in_flight_gets_only_the_rest_of_its_slots(store: Store) -> None:
    alpha = await account(store)
    one, two = [await made(store, alpha, [name]) for name in ("order.filled", "order.created")]
    for i in range(4):
        await emit(store, alpha, "order.filled", T0_US + i)
        await emit(store, alpha, "order.created", T0_US + 10 + i)

    claimed = await claim(store, T0_US + SECOND, limit=64, per_endpoint=3, busy={one.id: 2, two.id: 0})

    assert [(c.endpoint.id, c.event.ts_us) for c in claimed] == [
        (one.id, T0_US),
        (two.id, T0_US + 10),
        (two.id, T0_US + 11),
        (two.id, T0_US + 12),
    ]


async def test_an_account_at_its_share_gets_nothing_more_and_others_still_do(store: Store) -> None:
    alpha, beta = await account(store, "alpha"), await account(store, "beta")
    mine, theirs = await made(store, alpha), await made(store, beta)
    for i in range(3):
        await emit(store, alpha, ts_us=T0_US + i)
    await emit(store, beta, ts_us=T0_US + 10)

    claimed = await claim(store, T0_US + SECOND, busy_accounts=[alpha])

    assert [c.endpoint.id for c in claimed] == [theirs.id]
    assert {c.endpoint.id for c in await claim(store, T0_US + SECOND)} == {mine.id}


async def test_a_delivery_not_yet_due_is_not_claimed(store: Store) -> None:
    alpha = await account(store)
    await made(store, alpha)
    await emit(store, alpha, ts_us=T0_US + SECOND)
    assert await claim(store, T0_US + SECOND - 1) == []
    assert len(await claim(store, T0_US + SECOND)) == 1


async def test_a_claim_holds_until_its_lease_ends_then_anyone_may_claim_again(store: Store) -> None:
    alpha = await account(store)
    await made(store, alpha)
    await emit(store, alpha)
    [held] = await claim(store, T0_US, "i1")
    assert await claim(store, T0_US + LEASE_US - 1, "i2") == []
    [again] = await claim(store, T0_US + LEASE_US + 1, "i2")
    assert again.delivery.id == held.delivery.id
    assert not await store.finish_attempt(held.delivery.id, "i1", attempt(200), "succeeded", None), "i1 lost it"


async def test_released_claims_are_claimable_at_once(store: Store) -> None:
    alpha = await account(store)
    await made(store, alpha)
    await emit(store, alpha)
    await emit(store, alpha)
    assert len(await claim(store, T0_US, "i1")) == 2
    assert await claim(store, T0_US, "i2") == []
    await store.release_claims("i1")
    assert len(await claim(store, T0_US, "i2")) == 2


# attempts


async def test_finishing_without_the_claim_writes_nothing(store: Store) -> None:
    alpha = await account(store)
    await made(store, alpha)
    await emit(store, alpha)
    [held] = await claim(store, T0_US, "i1")
    before = await store.get_delivery(alpha, held.delivery.id)
    assert not await store.finish_attempt(held.delivery.id, "i2", attempt(200), "succeeded", None)
    assert await store.get_delivery(alpha, held.delivery.id) == before
    assert await claim(store, T0_US, "i2") == [], "i1 still holds it"


async def test_a_retry_then_a_success_read_back_with_their_log(store: Store) -> None:
    alpha = await account(store)
    await made(store, alpha)
    await emit(store, alpha)
    [held] = await claim(store)
    first = DeliveryAttempt(T0 + timedelta(seconds=1), 503, 40.5, "answered 503", "busy")
    assert await store.finish_attempt(held.delivery.id, "i1", first, "pending", T0_US + 30 * SECOND)

    retrying = await store.get_delivery(alpha, held.delivery.id)
    assert retrying is not None
    assert (retrying.status, retrying.attempts, retrying.last_status_code) == ("pending", 1, 503)
    assert retrying.next_attempt_at == T0 + timedelta(seconds=30)
    assert retrying.log == (first,)
    assert not await store.finish_attempt(held.delivery.id, "i1", first, "pending", T0_US), "the claim ended"
    assert await claim(store, T0_US + 30 * SECOND - 1) == []

    [again] = await claim(store, T0_US + 30 * SECOND)
    assert again.delivery.attempts == 1
    second = DeliveryAttempt(T0 + timedelta(seconds=31), 200, 8.0, None, "ok")
    assert await store.finish_attempt(again.delivery.id, "i1", second, "succeeded", T0_US + 60 * SECOND)
    done = await store.get_delivery(alpha, held.delivery.id)
    assert done is not None
    assert (done.status, done.attempts, done.last_status_code, done.next_attempt_at) == ("succeeded", 2, 200, None)
    assert done.log == (first, second)
    assert await store.delivery_backlog() == 0
    assert await claim(store, T0_US + 90 * SECOND) == []


async def test_a_delivery_failed_for_good_is_not_claimed_again(store: Store) -> None:
    alpha = await account(store)
    await made(store, alpha)
    await emit(store, alpha)
    [held] = await claim(store)
    assert await store.finish_attempt(held.delivery.id, "i1", attempt(None, "timed out"), "failed", None)
    failed = await store.get_delivery(alpha, held.delivery.id)
    assert failed is not None
    assert (failed.status, failed.next_attempt_at, failed.last_status_code) == ("failed", None, None)
    assert failed.log[0].error == "timed out"
    assert await claim(store, T0_US + 3600 * SECOND) == []


async def test_text_from_outside_is_bounded_and_stored_whatever_it_holds(store: Store) -> None:
    alpha = await account(store)
    await made(store, alpha)
    await emit(store, alpha)
    [held] = await claim(store)
    odd = attempt(500, "e" * 2000 + "\x00", "bad\x00body")
    assert await store.finish_attempt(held.delivery.id, "i1", odd, "pending", T0_US)
    stored = await store.get_delivery(alpha, held.delivery.id)
    assert stored is not None
    assert stored.log[0].error == "e" * 500
    assert stored.log[0].response == "bad\ufffdbody"


async def test_the_log_keeps_the_latest_fifty_attempts(store: Store) -> None:
    alpha = await account(store)
    await made(store, alpha)
    await emit(store, alpha)
    for n in range(1, 56):
        [held] = await claim(store)
        assert await store.finish_attempt(held.delivery.id, "i1", attempt(500 + n % 10, f"try {n}"), "pending", T0_US)
    stored = await store.get_delivery(alpha, held.delivery.id)
    assert stored is not None
    assert stored.attempts == 55
    assert [a.error for a in stored.log] == [f"try {n}" for n in range(6, 56)]


# redelivery


async def test_a_redelivered_delivery_is_pending_and_due_again_with_its_log(store: Store) -> None:
    alpha, beta = await account(store, "alpha"), await account(store, "beta")
    await made(store, alpha)
    await emit(store, alpha)
    [held] = await claim(store)
    assert await store.finish_attempt(held.delivery.id, "i1", attempt(200, None), "succeeded", None)

    assert await store.redeliver(beta, held.delivery.id, T0_US + 60 * SECOND) is None
    unchanged = await store.get_delivery(alpha, held.delivery.id)
    assert unchanged is not None and unchanged.status == "succeeded"
    assert await store.get_delivery(beta, held.delivery.id) is None

    again = await store.redeliver(alpha, held.delivery.id, T0_US + 60 * SECOND)
    assert again is not None
    assert (again.status, again.attempts, again.next_attempt_at) == ("pending", 1, T0 + timedelta(seconds=60))
    assert len(again.log) == 1
    assert await claim(store, T0_US + 60 * SECOND - 1) == []
    assert [c.delivery.id for c in await claim(store, T0_US + 60 * SECOND)] == [held.delivery.id]


# endpoints


async def test_an_endpoint_reads_back_as_stored_and_only_by_its_account(store: Store) -> None:
    alpha, beta = await account(store, "alpha"), await account(store, "beta")
    secrets = (
        WebhookSecret("sealed-new", T0 + timedelta(days=1)),
        WebhookSecret("sealed-old", T0, expires_at=datetime(2999, 1, 1, tzinfo=UTC)),
    )
    ep = await made(store, alpha, ["position.opened", "order.filled"], description="desk", secrets=secrets)
    assert await store.get_endpoint(alpha, ep.id) == ep
    assert await store.get_endpoint(beta, ep.id) is None


async def test_an_update_changes_what_the_endpoint_receives_and_drops_expired_secrets(store: Store) -> None:
    alpha, beta = await account(store, "alpha"), await account(store, "beta")
    ep = await made(store, alpha, ["order.filled"])
    expired = WebhookSecret("sealed-expired", T0, expires_at=datetime.now(UTC) - timedelta(minutes=1))
    changed = dataclasses.replace(
        ep,
        url="https://other.example.com/h",
        events=("position.closed",),
        description="new",
        secrets=(WebhookSecret("sealed-2", T0 + timedelta(days=8)), expired),
        failing_since=T0 + timedelta(microseconds=7),
    )
    await store.update_endpoint(changed)
    assert await store.get_endpoint(alpha, ep.id) == dataclasses.replace(changed, secrets=changed.secrets[:1])
    await emit(store, alpha, "order.filled")
    await emit(store, alpha, "position.closed")
    [delivery], _ = await store.list_deliveries(alpha, None, None, None, None, 50, 0)
    assert delivery.event == "position.closed"

    await store.update_endpoint(dataclasses.replace(changed, account_id=beta, url="https://evil.example.com"))
    stored = await store.get_endpoint(alpha, ep.id)
    assert stored is not None and stored.url == "https://other.example.com/h"


async def test_endpoints_are_listed_page_by_page_with_their_total(store: Store) -> None:
    alpha, beta = await account(store, "alpha"), await account(store, "beta")
    eps = [await made(store, alpha, ["order.filled", "*"], created_at=T0 + timedelta(seconds=i)) for i in range(5)]
    await made(store, beta)
    page, total = await store.list_endpoints(alpha, 2, 2)
    assert total == 5
    assert page == eps[2:4]
    assert (await store.list_endpoints(alpha, 10, 0))[0] == eps
    assert await store.list_endpoints(alpha, 10, 5) == ([], 5)


async def test_an_endpoint_answering_again_clears_its_failing_since(store: Store) -> None:
    alpha = await account(store)
    ep = await made(store, alpha)
    assert await store.endpoint_answered(ep.id, False, T0_US) == T0_US
    assert await store.endpoint_answered(ep.id, False, T0_US + SECOND) == T0_US, "the first failure counts"
    failing = await store.get_endpoint(alpha, ep.id)
    assert failing is not None and failing.failing_since == T0
    assert await store.endpoint_answered(ep.id, True, T0_US + 2 * SECOND) is None
    answering = await store.get_endpoint(alpha, ep.id)
    assert answering is not None and answering.failing_since is None
    assert await store.endpoint_answered(ep.id, False, T0_US + 3 * SECOND) == T0_US + 3 * SECOND
    assert await store.endpoint_answered("whk_gone", False, T0_US) is None


async def test_a_disabled_endpoint_fails_its_pending_deliveries_and_gets_no_more(store: Store) -> None:
    alpha = await account(store)
    ep = await made(store, alpha)
    other = await made(store, alpha)
    await emit(store, alpha)
    for held in await claim(store):
        status: DeliveryStatus = "succeeded" if held.endpoint.id == ep.id else "pending"
        assert await store.finish_attempt(held.delivery.id, "i1", attempt(200), status, T0_US)
    await emit(store, alpha, ts_us=T0_US + 1)

    disabled = await store.disable_endpoint(ep.id, "answered 410 Gone")
    assert disabled is not None
    assert (disabled.status, disabled.disabled_reason) == ("disabled", "answered 410 Gone")
    assert await store.get_endpoint(alpha, ep.id) == disabled
    assert await store.disable_endpoint(ep.id, "again") is None
    assert await store.disable_endpoint("whk_gone", "gone") is None

    mine, _ = await store.list_deliveries(alpha, ep.id, None, None, None, 50, 0)
    assert [(d.status, d.next_attempt_at) for d in mine] == [("failed", None), ("succeeded", None)]
    await emit(store, alpha, ts_us=T0_US + 2)
    assert (await store.list_deliveries(alpha, ep.id, None, None, None, 50, 0))[1] == 2
    assert await store.delivery_backlog() == 3
    claimed = await claim(store, T0_US + SECOND)
    assert len(claimed) == 3 and {c.endpoint.id for c in claimed} == {other.id}


async def test_deleting_an_endpoint_deletes_its_deliveries_and_their_attempts(store: Store) -> None:
    alpha, beta = await account(store, "alpha"), await account(store, "beta")
    ep = await made(store, alpha)
    kept = await made(store, alpha)
    await emit(store, alpha)
    for held in await claim(store):
        assert await store.finish_attempt(held.delivery.id, "i1", attempt(), "pending", T0_US)
    assert not await store.delete_endpoint(beta, ep.id)
    assert await store.get_endpoint(alpha, ep.id) is not None

    assert await store.delete_endpoint(alpha, ep.id)
    assert await store.get_endpoint(alpha, ep.id) is None
    assert not await store.delete_endpoint(alpha, ep.id)
    left, total = await store.list_deliveries(alpha, None, None, None, None, 50, 0)
    assert total == 1 and left[0].endpoint_id == kept.id and len(left[0].log) == 1
    assert await store.list_deliveries(alpha, ep.id, None, None, None, 50, 0) == ([], 0)
    await emit(store, alpha)
    assert (await store.list_deliveries(alpha, None, None, None, None, 50, 0))[1] == 2


async def test_deliveries_are_listed_newest_first_by_any_filter(store: Store) -> None:
    alpha, beta = await account(store, "alpha"), await account(store, "beta")
    one = await made(store, alpha)
    two = await made(store, alpha, ["order.filled"])
    await made(store, beta)
    names = ["position.opened", "order.filled"] * 3
    events = [await emit(store, alpha, name, T0_US + i) for i, name in enumerate(names)]
    await emit(store, beta, ts_us=T0_US + SECOND)
    [first] = await claim(store, limit=1)
    assert await store.finish_attempt(first.delivery.id, "i1", attempt(200), "succeeded", None)

    everything, total = await store.list_deliveries(alpha, None, None, None, None, 50, 0)
    assert total == 9
    assert [d.created_at for d in everything] == sorted((d.created_at for d in everything), reverse=True)
    page, total = await store.list_deliveries(alpha, None, None, None, None, 3, 3)
    assert (page, total) == (everything[3:6], 9)
    assert (await store.list_deliveries(alpha, two.id, None, None, None, 50, 0))[1] == 3
    by_event, n = await store.list_deliveries(alpha, one.id, "order.filled", None, None, 50, 0)
    assert n == 3 and {d.endpoint_id for d in by_event} == {one.id}
    [succeeded], n = await store.list_deliveries(alpha, None, None, "succeeded", None, 50, 0)
    assert n == 1 and succeeded.id == first.delivery.id and len(succeeded.log) == 1
    of_one, n = await store.list_deliveries(alpha, None, None, None, events[1].id, 50, 0)
    assert n == 2 and {d.endpoint_id for d in of_one} == {one.id, two.id}
    assert (await store.list_deliveries(alpha, None, None, "pending", None, 50, 0))[1] == 8
