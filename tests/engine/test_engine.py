"""rt/engine/engine: marking positions to each tick, contained per account, and the marks reaching the store."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from rt.engine.engine import EngineConfig
from rt.exchanges import Ticker
from rt.records.trading import Envelope, Position
from tests.engine.conftest import Rig, RigFactory

D = Decimal


async def test_a_failing_account_on_a_tick_cannot_stop_another_accounts_stop_loss(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    # The poisoned account's book comes first, so its failure would end the loop before the victim's book.
    poisoned = await rig.position("long", "10")
    victim = rig.as_account((await rig.store.create_account("victim")).id)
    protected = await victim.position("long", "1", stop_loss="95")
    book = await rig.book()
    # Bypasses the request validation that keeps such a limit out: comparing its use raises InvalidOperation.
    book.envelope = Envelope(max_daily_loss=D("NaN"))
    rig.engine.ticks.index(book)  # as a commit of the book would

    with caplog.at_level(logging.ERROR, logger="rt.engine"):
        rig.set_price("94")
        await rig.settle()

    assert (protected.status, protected.close_reason) == ("closed", "stop_loss")
    assert poisoned.current_price == D("94")  # its own marks still happened
    failures = [r for r in caplog.records if getattr(r, "account_id", None) == rig.account_id]
    assert failures and failures[0].exc_info is not None


async def test_marks_reach_the_store_within_a_second_or_so(rig: Rig) -> None:
    position = await rig.position("long", "1")
    rig.set_price("105")

    async def stored_price() -> Decimal:
        (stored,) = await rig.stored_positions("open")
        return stored.current_price

    for _ in range(40):
        if await stored_price() == D("105"):
            break
        await asyncio.sleep(0.1)
    assert await stored_price() == D("105") != position.entry_price


async def test_the_next_commit_stores_the_accounts_marked_positions(make_rig: RigFactory) -> None:
    rig = await make_rig(config=EngineConfig(mark_flush_interval=3600))
    first = await rig.position("long", "1")
    rig.set_price("105")
    await rig.order("buy", "1")  # any command of the account
    stored = {p.id: p for p in await rig.stored_positions("open")}
    assert stored[first.id].current_price == D("105")


async def test_positions_carry_their_last_mark_across_a_restart(make_rig: RigFactory) -> None:
    rig = await make_rig(config=EngineConfig(mark_flush_interval=3600))
    position = await rig.position("short", "2")
    rig.set_price("97.5")
    reloaded = await rig.restart()
    (stored,) = await reloaded.stored_positions("open")
    assert stored.current_price == D("97.5")
    book = await reloaded.book()
    assert book.positions[position.id].current_price == D("97.5")
    assert book.positions[position.id].unrealized_pnl == (position.entry_price - D("97.5")) * 2


async def test_tick_listeners_see_the_engine_s_marks(rig: Rig) -> None:
    position = await rig.position("long", "1")
    seen: list[tuple[Decimal, Decimal]] = []

    def listener(ticker: Ticker) -> None:
        marked: Position = rig.engine._books[rig.account_id].positions[position.id]
        seen.append((ticker.last, marked.current_price))

    rig.engine.ticks.after_mark("paper", listener)
    rig.set_price("101")
    rig.set_price("99")
    assert seen == [(D("101"), D("101")), (D("99"), D("99"))]
