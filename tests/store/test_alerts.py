"""rt/store alert hooks and the alert log, on both twins: what is kept is what is read back, an account sees only its
own, a deleted hook is gone from lists but still found by id, and the log reads newest first."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rt.records.alerts import AlertEntry, AlertHook
from rt.records.ids import new_id
from rt.store import Store

T0 = datetime(2026, 3, 4, 5, 6, 7, 123000, tzinfo=UTC)


def make_hook(account_id: str, at: datetime = T0, **changes: object) -> AlertHook:
    hook = AlertHook(
        id=new_id("alh"),
        account_id=account_id,
        name="tv",
        digest="d" * 64,
        symbols=("BTC/USDT", "ETH/USDT"),
        max_quantity=Decimal("0.25"),
        defaults={"type": "market", "quantity": Decimal("0.01"), "exchange": "paper"},
        allow_ips=("52.89.214.238/32", "2001:db8::/32"),
        test=True,
        created_at=at,
    )
    return replace(hook, **changes)  # type: ignore[arg-type]


def make_entry(hook: AlertHook, at: datetime, outcome: str = "executed", **changes: object) -> AlertEntry:
    entry = AlertEntry(
        id=new_id("alr"),
        hook_id=hook.id,
        account_id=hook.account_id,
        received_at=at,
        ip="52.89.214.238",
        outcome=outcome,  # type: ignore[arg-type]
        body={"symbol": "BINANCE:BTCUSDT", "action": "buy", "quantity": "0.01", "time": "x", "nested": {"a": [1, 2.5]}},
        order_ids=("ord_a", "ord_b"),
        code=None,
        detail=None,
        latency_ms=3.25,
    )
    return replace(entry, **changes)  # type: ignore[arg-type]


async def test_a_hook_reads_back_as_created_and_lists_only_for_its_account(store: Store) -> None:
    mine = await store.create_account("mine")
    other = await store.create_account("other")
    first = make_hook(mine.id)
    second = make_hook(mine.id, T0 + timedelta(seconds=1), symbols=(), allow_ips=(), test=False, defaults={})
    theirs = make_hook(other.id)
    for hook in (first, second, theirs):
        await store.create_hook(hook)

    assert await store.get_hook(first.id) == first
    assert await store.get_hook(second.id) == second
    assert await store.get_hook("alh_missing") is None
    hooks, total = await store.list_hooks(mine.id, 50, 0)
    assert [h.id for h in hooks] == [second.id, first.id] and total == 2
    page, total = await store.list_hooks(mine.id, 1, 1)
    assert [h.id for h in page] == [first.id] and total == 2


async def test_a_deleted_hook_leaves_the_list_is_found_by_id_and_deletes_once(store: Store) -> None:
    mine = await store.create_account("mine")
    other = await store.create_account("other")
    hook = make_hook(mine.id)
    await store.create_hook(hook)

    assert not await store.delete_hook(other.id, hook.id, T0)  # another account's hook is not theirs to delete
    assert (await store.get_hook(hook.id)) == hook
    assert await store.delete_hook(mine.id, hook.id, T0 + timedelta(minutes=1))
    assert not await store.delete_hook(mine.id, hook.id, T0 + timedelta(minutes=2))
    assert await store.list_hooks(mine.id, 50, 0) == ([], 0)
    gone = await store.get_hook(hook.id)
    assert gone is not None and gone.deleted_at == T0 + timedelta(minutes=1)


async def test_the_log_reads_back_newest_first_per_account_and_per_hook(store: Store) -> None:
    mine = await store.create_account("mine")
    other = await store.create_account("other")
    one, two = make_hook(mine.id), make_hook(mine.id)
    theirs = make_hook(other.id)
    for hook in (one, two, theirs):
        await store.create_hook(hook)
    entries = [
        make_entry(one, T0),
        make_entry(two, T0 + timedelta(seconds=1), "rejected", code="VALIDATION_FAILED", detail="over", order_ids=()),
        make_entry(one, T0 + timedelta(seconds=2), "duplicate"),
        make_entry(one, T0 + timedelta(seconds=3), "unauthorized", code="ALERT_UNAUTHORIZED", body={}, order_ids=()),
    ]
    for entry in [*entries, make_entry(theirs, T0)]:
        await store.add_alert(entry)

    everything, total = await store.list_alerts(mine.id, None, 50, 0)
    assert everything == entries[::-1] and total == 4
    of_one, total = await store.list_alerts(mine.id, one.id, 2, 0)
    assert [e.id for e in of_one] == [entries[3].id, entries[2].id] and total == 3
    rest, _ = await store.list_alerts(mine.id, one.id, 2, 2)
    assert rest == [entries[0]]
    assert await store.list_alerts(other.id, one.id, 50, 0) == ([], 0)
