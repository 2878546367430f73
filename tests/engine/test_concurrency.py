"""The issue's proof: a burst of simultaneous commands on one account never passes a limit together."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import pytest

from rt.engine import kill, ledger, risk
from rt.errors import Locked, RtError
from tests.engine.conftest import START, Rig, RigFactory

D = Decimal
BURST = 300


def burst(rig: Rig, numbers: range = range(BURST)) -> list[Awaitable[Any]]:
    """Commands that each add about 100 of notional: market orders, market entries and resting limit orders."""
    calls: list[Awaitable[Any]] = []
    for i in numbers:
        match i % 3:
            case 0:
                calls.append(rig.order("buy", "1"))
            case 1:
                calls.append(rig.position("long", "1"))
            case _:
                calls.append(rig.order("buy", "1", type="limit", price="99"))
    return calls


def outcomes(results: list[Any]) -> Counter[str]:
    counted: Counter[str] = Counter()
    for result in results:
        if isinstance(result, RtError):
            counted[result.code] += 1
        elif isinstance(result, BaseException):
            raise result
        else:
            counted["accepted"] += 1
    return counted


async def used(rig: Rig) -> tuple[int, Decimal]:
    """Open positions plus resting orders, and their notional over equity: what Cerberus limits."""
    book = await rig.book()
    notional, resting = risk.pending(book)
    return len(book.open_positions()) + resting, (ledger.exposure_notional(book) + notional) / ledger.equity(book)


@pytest.mark.parametrize(
    ("max_exposure", "accepted"),
    [
        pytest.param("0.01", 7, id="concurrent-positions-bind"),  # 7 x ~100 = 0.007 of equity
        pytest.param("0.004", 4, id="exposure-binds"),  # the 5th would make ~500 of 100000
    ],
)
async def test_a_burst_of_300_never_exceeds_a_limit(rig: Rig, max_exposure: str, accepted: int) -> None:
    await rig.limits(max_concurrent_positions=7, max_exposure=max_exposure)

    results = await asyncio.gather(*burst(rig), return_exceptions=True)

    counted = outcomes(results)
    assert set(counted) <= {"accepted", "VALIDATION_FAILED"}
    assert counted["accepted"] + counted["VALIDATION_FAILED"] == BURST
    assert counted["accepted"] == accepted
    count, exposure = await used(rig)
    assert count <= 7
    assert exposure <= D(max_exposure)
    stored_open = await rig.stored_positions("open")
    stored_resting = await rig.stored_orders("open")
    assert len(stored_open) + len(stored_resting) == count
    assert len(await rig.stored_orders("rejected")) + len(await rig.stored_positions("rejected")) > 0


async def test_resting_orders_that_fill_later_stay_inside_the_limits(rig: Rig) -> None:
    """Sells resting against one long: only the first may count as reducing, or their fills open shorts unchecked."""
    await rig.position("long", "1")
    await rig.limits(max_concurrent_positions=5)

    results = await asyncio.gather(
        *(rig.order("sell", "1", type="limit", price="110") for _ in range(BURST)), return_exceptions=True
    )
    counted = outcomes(results)
    assert counted["accepted"] + counted["VALIDATION_FAILED"] == BURST
    rig.set_price("110.01")  # bid 110.00: every resting sell fills
    await rig.settle()

    book = await rig.book()
    assert [o for o in book.orders.values() if o.status == "open"] == []
    assert 0 < len(book.open_positions()) <= 5
    assert {p.side for p in book.open_positions()} == {"short"}


async def test_bursts_on_several_accounts_at_once(make_rig: RigFactory) -> None:
    rig = await make_rig()
    others = [(await rig.store.create_account(f"sub-{i}")).id for i in range(3)]
    accounts = [rig.account_id, *others]
    for account_id in accounts:
        await rig.as_account(account_id).limits(max_concurrent_positions=5)

    calls = [rig.as_account(a).order("buy", "1") for a in accounts for _ in range(20)]
    counted = outcomes(await asyncio.gather(*calls, return_exceptions=True))

    assert counted == Counter({"accepted": 5 * len(accounts), "VALIDATION_FAILED": 15 * len(accounts)})
    for book in await rig.store.load_books():
        assert len(book.open_positions()) == 5
        assert book.balance == START - 5 * D("100.01") * D("0.001")


async def test_kill_during_a_burst_leaves_nothing_open_and_locks(rig: Rig) -> None:
    book = await rig.book()

    async def kill_midway() -> dict[str, Any]:
        for _ in range(10_000):  # fire once the burst is under way
            if book.open_positions():
                break
            await asyncio.sleep(0)
        return await kill.execute(rig.engine, rig.account_id, "KILL", "burst")

    calls = [*burst(rig, range(150)), kill_midway(), *burst(rig, range(150, BURST))]
    results = await asyncio.gather(*calls, return_exceptions=True)
    report = results.pop(150)
    assert isinstance(report, dict)

    counted = outcomes(results)
    assert set(counted) <= {"accepted", "VALIDATION_FAILED", "TRADING_LOCKED"}
    assert counted["TRADING_LOCKED"] > 0
    assert report["trading_state"] == "locked"
    # Whatever got in before the lock was undone by the kill: each accepted call left a position or a resting order.
    assert counted["accepted"] > 0
    assert report["positions_closed"] + report["orders_canceled"] == counted["accepted"]
    book = await rig.book()
    assert book.open_positions() == []
    assert [o for o in book.orders.values() if o.status == "open"] == []
    assert await rig.stored_positions("open", "pending") == []
    assert await rig.stored_orders("open") == []
    with pytest.raises(Locked):
        await rig.order("buy", "1")
    with pytest.raises(Locked):
        await rig.position("short", "1")


async def test_kill_while_fills_are_arriving(rig: Rig) -> None:
    """Resting orders filling on a tick race the kill switch: whatever filled is closed, nothing stays open."""
    await rig.limits(max_concurrent_positions=100)
    for _ in range(20):
        await rig.order("buy", "1", type="limit", price="95")
    rig.set_price("94")  # every order fills; the fills reach the engine asynchronously
    report = await kill.execute(rig.engine, rig.account_id, "KILL")
    await rig.settle()

    book = await rig.book()
    assert (report["orders_canceled"], report["positions_closed"]) == (0, 20)
    assert book.open_positions() == []
    assert len(await rig.stored_positions("closed")) == 20
    assert {o.status for o in await rig.stored_orders()} == {"filled"}
    assert book.state == "locked"
