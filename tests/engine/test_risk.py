"""rt/engine/risk: Cerberus's checks, trading states and limit alerts, through the engine's commands."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rt import wire
from rt.engine import kill, ledger, risk, trading
from rt.engine.engine import EngineConfig
from rt.engine.requests import PositionRequest, PositionUpdate
from rt.errors import Locked, RtError, ValidationFailed
from rt.records.trading import Envelope
from tests.engine.conftest import START, Rig

D = Decimal


async def rejected(call: Awaitable[Any]) -> dict[str, Any]:
    """The details of the VALIDATION_FAILED the call raised."""
    with pytest.raises(ValidationFailed) as caught:
        await call
    assert (caught.value.status, caught.value.code) == (422, "VALIDATION_FAILED")
    details: dict[str, Any] = caught.value.extra["details"]
    assert set(details) == {"check", "reason", "limit", "requested"}
    assert details["reason"]
    return details


async def test_position_size(rig: Rig) -> None:
    await rig.limits(max_position_size="1000")
    details = await rejected(rig.order("buy", "20"))
    assert details["check"] == risk.POSITION_SIZE == "position_size"
    assert (details["limit"], details["requested"]) == (D(1000), D("100.01") * 20)

    (order,) = await rig.stored_orders("rejected")
    assert order.reject_reason is not None and order.reject_reason.startswith("position_size")
    assert "order.rejected" in await rig.event_names("orders")
    assert (await rig.book()).balance == START
    await rig.order("buy", "9")  # 900.09: inside the limit


async def test_position_size_on_a_new_position(rig: Rig) -> None:
    await rig.limits(max_position_size="1000")
    details = await rejected(rig.position("short", "11"))
    assert (details["check"], details["limit"], details["requested"]) == ("position_size", D(1000), D("99.99") * 11)
    (position,) = await rig.stored_positions("rejected")
    assert position.quantity == D(11)
    assert "position.rejected" in await rig.event_names("positions")
    assert (await rig.book()).open_positions() == []


async def test_exposure_limit(rig: Rig) -> None:
    await rig.limits(max_exposure="0.5", max_position_size="1e9")
    await rig.order("buy", "400")  # 40004 of 100000: 0.4
    details = await rejected(rig.order("buy", "200"))
    assert details["check"] == risk.EXPOSURE == "exposure_limit"
    assert details["limit"] == D("0.5")
    equity = ledger.equity(await rig.book())
    assert details["requested"] == ((D("100.01") * 600) / equity).quantize(D("0.0001"))


async def test_an_order_that_fills_at_once_is_judged_at_the_market(rig: Rig) -> None:
    """A sell limit far under the bid fills now, at the market: its own price must not make it look small to
    Cerberus. (A stop already through the market would too; it is refused before Cerberus, see test_trading_rules.)"""
    await rig.limits(max_position_size="1000")
    details = await rejected(rig.order("sell", "500", type="limit", price="0.01"))
    assert details["check"] == risk.POSITION_SIZE
    assert details["requested"] == D("99.99") * 500  # the bid, not 0.01
    with pytest.raises(RtError) as refused:
        await rig.order("buy", "500", type="stop", stop_price="1")
    assert refused.value.code == "BAD_REQUEST"
    assert not (await rig.book()).open_positions()


async def test_daily_loss_limit_and_the_switch_to_reducing(rig: Rig) -> None:
    await rig.limits(max_daily_loss="500")
    position = await rig.position("long", "10")
    rig.set_price("50")
    loss = -(position.unrealized_pnl + position.realized_pnl)
    assert loss > 500
    await rig.settle()

    # The tick itself breached the limit: the account switched to reducing without waiting for an order.
    book = await rig.book()
    assert book.state == "reducing"
    breached = [d.event.data for d in await rig.history("risk") if d.event.data.get("check") == "daily_loss_limit"]
    assert [(e["level"], e.get("trading_state")) for e in breached] == [("breached", "reducing")]

    details = await rejected(rig.order("buy", "1"))
    assert details["check"] == risk.TRADING_STATE
    await rig.set_state("active")
    details = await rejected(rig.order("buy", "1"))
    assert details["check"] == risk.DAILY_LOSS == "daily_loss_limit"
    assert (details["limit"], details["requested"]) == (D(500), -loss)  # a loss is negative, the limit positive

    await rig.set_state("reducing")
    await rig.order("sell", "4")  # shrinks the long: accepted while reducing
    assert position.quantity == D(6)
    reloaded = await rig.restart()
    assert (await reloaded.book()).state == "reducing"


async def test_a_price_move_alone_emits_the_warning(rig: Rig) -> None:
    await rig.limits(max_daily_loss="1000")
    await rig.position("long", "10")  # entry 100.01
    rig.set_price("10")  # a loss of about 900: 90% of the limit
    await rig.settle()
    warnings = [d.event.data for d in await rig.history("risk") if d.event.data.get("check") == "daily_loss_limit"]
    assert [w["level"] for w in warnings] == ["warning"]
    assert (await rig.book()).state == "active"


async def test_concurrent_positions(rig: Rig) -> None:
    await rig.limits(max_concurrent_positions=2)
    await rig.position("long", "1")
    await rig.position("short", "1", symbol="ETH/USDT")
    details = await rejected(rig.position("long", "1"))
    assert details["check"] == risk.CONCURRENT == "concurrent_positions"
    assert (details["limit"], details["requested"]) == (2, 3)


async def test_margin(rig: Rig) -> None:
    await rig.limits(max_exposure="5", max_position_size="1e9")
    details = await rejected(rig.order("buy", "1100"))
    assert details["check"] == risk.MARGIN == "margin"
    assert (details["limit"], details["requested"]) == (START, D("100.01") * 1100)


async def test_margin_counts_leverage(make_rig: Any) -> None:
    rig = await make_rig(config=EngineConfig(leverage=D(4), envelope=Envelope(D("1e9"), D(10), D(5000), 20)))
    await rig.order("buy", "3000")  # 300030 notional, 75007.5 margin
    details = await rejected(rig.order("buy", "1000"))
    assert details["check"] == "margin"
    assert details["requested"] == D("100.01") * 4000 / 4
    assert details["limit"] == ledger.equity(await rig.book())


async def test_every_check_is_reported_with_the_verdict(rig: Rig) -> None:
    _, validation = await trading.open_position(
        rig.engine,
        rig.account_id,
        PositionRequest.model_validate({"symbol": "BTC/USDT", "side": "long", "quantity": 1}),
    )
    assert validation["cerberus_status"] == "passed"
    assert validation["checks"] == list(risk.CHECKS)


async def test_reducing_orders_pass_when_limits_are_exceeded(rig: Rig) -> None:
    longs = [await rig.position("long", "5") for _ in range(3)]
    await rig.limits(max_position_size="1", max_exposure="0.0001", max_concurrent_positions=1)
    await rejected(rig.order("buy", "1"))

    await rig.order("sell", "2")  # nets against the oldest long
    assert longs[0].quantity == D(3)
    await rig.close_position(longs[1].id)
    assert longs[1].status == "closed"
    assert len((await rig.book()).open_positions()) == 2


async def test_reducing_state_accepts_only_reducing_orders(rig: Rig) -> None:
    long = await rig.position("long", "2")
    await rig.set_state("reducing")

    assert (await rejected(rig.order("buy", "1")))["check"] == "trading_state"
    assert (await rejected(rig.order("sell", "3")))["check"] == "trading_state"  # would flip to a short of 1
    assert (await rejected(rig.position("long", "1")))["check"] == "trading_state"
    # A new position is new exposure even when an opposite one exists: it does not net.
    assert (await rejected(rig.position("short", "1")))["check"] == "trading_state"

    await rig.order("sell", "1")
    assert long.quantity == D(1)
    await rig.close_position(long.id)
    assert long.status == "closed"


async def test_a_resting_reducing_order_is_not_counted_twice(rig: Rig) -> None:
    """Two resting sells against one long: only the first reduces; the second would open a short."""
    await rig.position("long", "1")
    await rig.set_state("reducing")
    await rig.order("sell", "1", type="limit", price="120")
    details = await rejected(rig.order("sell", "1", type="limit", price="120"))
    assert details["check"] == "trading_state"


async def test_locked_refuses_new_trades_but_closes_and_cancels(rig: Rig) -> None:
    position = await rig.position("long", "1")
    resting = await rig.order("buy", "1", type="limit", price="90")
    await kill.execute(rig.engine, rig.account_id, "LOCK")

    for attempt in (rig.order("buy", "1"), rig.order("sell", "1"), rig.position("short", "1")):
        with pytest.raises(Locked) as caught:
            await attempt
        assert (caught.value.status, caught.value.code) == (423, "TRADING_LOCKED")
        assert caught.value.extra["check"] == "trading_state"

    await trading.cancel_order(rig.engine, rig.account_id, resting.id)
    await rig.close_position(position.id)
    assert (resting.status, position.status) == ("canceled", "closed")


async def test_resting_orders_count_toward_concurrent_positions(rig: Rig) -> None:
    await rig.limits(max_concurrent_positions=3)
    await rig.position("long", "1")
    await rig.order("buy", "1", type="limit", price="90")
    await rig.position("long", "1", entry_price="80")  # a resting limit entry
    details = await rejected(rig.order("buy", "1", type="stop", stop_price="120"))
    assert (details["check"], details["requested"]) == ("concurrent_positions", 4)


async def test_resting_orders_count_toward_exposure(rig: Rig) -> None:
    await rig.limits(max_exposure="0.1", max_position_size="1e9")
    await rig.order("buy", "50", type="limit", price="90")  # 4500 resting
    await rig.order("sell", "40", type="limit", price="110")  # 4400 resting
    details = await rejected(rig.order("buy", "12"))
    assert details["check"] == "exposure_limit"
    assert details["requested"] == ((D(4500) + D(4400) + D("1200.12")) / START).quantize(D("0.0001"))
    await rig.order("buy", "1")


def limit_events(deliveries: list[Any], check: str) -> list[str]:
    return [
        d.event.data["level"]
        for d in deliveries
        if d.event.event == "risk.limit_reached" and d.event.data.get("check") == check
    ]


async def test_limit_reached_at_80_and_100_percent_once_per_crossing(rig: Rig) -> None:
    await rig.limits(max_concurrent_positions=5)
    positions = [await rig.position("long", "1") for _ in range(3)]
    assert limit_events(await rig.history("risk"), "concurrent_positions") == []

    positions.append(await rig.position("long", "1"))  # 4 of 5
    assert limit_events(await rig.history("risk"), "concurrent_positions") == ["warning"]
    positions.append(await rig.position("long", "1"))  # 5 of 5
    assert limit_events(await rig.history("risk"), "concurrent_positions") == ["warning", "breached"]

    await rejected(rig.position("long", "1"))
    update = PositionUpdate.model_validate({"take_profit": 200})
    await trading.update_position(rig.engine, rig.account_id, positions[0].id, update)
    assert limit_events(await rig.history("risk"), "concurrent_positions") == ["warning", "breached"]

    await rig.close_position(positions.pop().id)  # back to 4: no new crossing upwards
    await rig.close_position(positions.pop().id)  # 3
    assert limit_events(await rig.history("risk"), "concurrent_positions") == ["warning", "breached"]
    positions.append(await rig.position("long", "1"))  # 4 again: a new crossing
    assert limit_events(await rig.history("risk"), "concurrent_positions") == ["warning", "breached", "warning"]

    events = [d.event.data for d in await rig.history("risk") if d.event.data.get("check") == "concurrent_positions"]
    assert events[1] == {
        "check": "concurrent_positions",
        "level": "breached",
        "limit": 5,
        "current": 5,
        "utilization": 1.0,
    }
    assert (await rig.book()).alerts == {"concurrent_positions": "warning"}
    assert risk.status(await rig.book()) == "warning"


async def test_exposure_warning(rig: Rig) -> None:
    await rig.limits(max_exposure="0.1", max_position_size="1e9")
    await rig.order("buy", "70")  # 0.07 of 0.1
    assert limit_events(await rig.history("risk"), "exposure_limit") == []
    await rig.order("buy", "15")  # 0.085
    assert limit_events(await rig.history("risk"), "exposure_limit") == ["warning"]


# Property: whatever the envelope and whatever is asked, what is accepted stays inside it.

envelopes = st.builds(
    Envelope,
    max_position_size=st.decimals(min_value=100, max_value=50_000, places=0),
    max_exposure=st.decimals(min_value=D("0.01"), max_value=3, places=2),
    max_daily_loss=st.just(D("1e9")),
    max_concurrent_positions=st.integers(min_value=1, max_value=8),
)
requests = st.tuples(
    st.sampled_from(["order", "position"]),
    st.sampled_from(["buy", "sell"]),
    st.decimals(min_value=D("0.01"), max_value=300, places=2),
)


async def _stays_inside(envelope: Envelope, asks: list[tuple[str, str, Decimal]], path: str) -> None:
    rig = await Rig.open(path, config=EngineConfig(envelope=envelope))
    try:
        accepted = 0
        for kind, side, quantity in asks:
            book = await rig.book()
            equity_before = ledger.equity(book)
            try:
                if kind == "order":
                    await rig.order(side, quantity)
                else:
                    await rig.position("long" if side == "buy" else "short", quantity)
            except ValidationFailed:
                continue
            accepted += 1
            assert ledger.exposure_notional(book) <= envelope.max_exposure * equity_before
            assert len(book.open_positions()) <= envelope.max_concurrent_positions
            for position in book.open_positions():
                assert position.notional <= envelope.max_position_size
        stored = await rig.stored_positions("open")
        assert len(stored) <= envelope.max_concurrent_positions
    finally:
        await rig.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(envelopes, st.lists(requests, min_size=1, max_size=15))
def test_accepted_orders_never_exceed_the_envelope(envelope: Envelope, asks: list[tuple[str, str, Decimal]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_stays_inside(envelope, asks, f"{tmp}/rt.db"))


async def test_every_denial_is_an_rt_error_with_a_code(rig: Rig) -> None:
    await rig.limits(max_concurrent_positions=1)
    await rig.position("long", "1")
    with pytest.raises(RtError) as caught:
        await rig.position("long", "1")
    assert caught.value.code == "VALIDATION_FAILED"
    assert "concurrent_positions" in caught.value.detail


def daily_loss_events(deliveries: list[Any]) -> list[dict[str, Any]]:
    return [
        d.event.data
        for d in deliveries
        if d.event.event == "risk.limit_reached" and d.event.data.get("check") == "daily_loss_limit"
    ]


async def test_a_days_loss_is_negative_in_the_envelope_the_check_and_the_event(rig: Rig) -> None:
    await rig.limits(max_daily_loss="60")
    position = await rig.position("long", "10")  # entry 100.01, fee 1.0001
    rig.set_price("95")
    await rig.settle()
    pnl = (D(95) - D("100.01")) * 10 - D("1.0001")
    assert ledger.daily_pnl(await rig.book()) == pnl == position.unrealized_pnl + position.realized_pnl

    report = risk.report(await rig.book(), D(1))
    assert (report["envelope"]["max_daily_loss"], report["current"]["daily_loss"]) == (D(60), pnl)
    assert report["current"]["daily_pnl"] == pnl
    (event,) = daily_loss_events(await rig.history("risk"))
    assert (event["level"], event["limit"], event["current"]) == ("warning", D(60), pnl)
    proposal = risk.Proposal("paper", "BTC/USDT", "buy", D(1), D(95))
    check = next(c for c in risk.evaluate(await rig.book(), proposal, D(1)) if c.check == risk.DAILY_LOSS)
    assert (check.passed, check.limit, check.requested) == (True, D(60), pnl)


async def test_a_winning_day_has_no_loss(rig: Rig) -> None:
    await rig.position("long", "10")
    rig.set_price("110")
    book = await rig.book()
    assert ledger.daily_pnl(book) > 0
    report = risk.report(book, D(1))
    assert report["current"]["daily_loss"] == 0
    assert report["current"]["daily_pnl"] == ledger.daily_pnl(book)
    proposal = risk.Proposal("paper", "BTC/USDT", "buy", D(1), D(110))
    check = next(c for c in risk.evaluate(book, proposal, D(1)) if c.check == risk.DAILY_LOSS)
    assert check.requested == 0
    assert b"-0" not in wire.dumps(report)


async def test_the_status_counts_resting_entries_toward_concurrent_positions(rig: Rig) -> None:
    await rig.limits(max_concurrent_positions=5)
    for _ in range(3):
        await rig.position("long", "1")
    await rig.position("long", "1", entry_price="80")  # a resting limit entry: 4 of 5
    assert limit_events(await rig.history("risk"), "concurrent_positions") == ["warning"]
    await rig.order("buy", "1", type="limit", price="90")  # 5 of 5
    assert limit_events(await rig.history("risk"), "concurrent_positions") == ["warning", "breached"]

    report = risk.report(await rig.book(), D(1))
    assert (report["current"]["active_positions"], report["current"]["open_positions"]) == (5, 3)
    assert report["status"] == "breached"
    assert (await rejected(rig.position("long", "1")))["requested"] == 6


async def test_the_status_counts_resting_notional_toward_exposure(rig: Rig) -> None:
    await rig.limits(max_exposure="0.1", max_position_size="1e9")
    await rig.order("buy", "90", type="limit", price="90")  # 8100 resting: 0.081 of equity
    report = risk.report(await rig.book(), D(1))
    assert report["current"]["total_exposure"] == D("0.0810")
    assert report["status"] == "warning"
    assert limit_events(await rig.history("risk"), "exposure_limit") == ["warning"]


async def test_a_stored_limit_too_small_for_the_arithmetic_reads_as_breached_and_can_be_replaced(rig: Rig) -> None:
    """A limit stored before limits were bounded (1e-999999) must not make the envelope, alerts or commands fail."""
    await rig.position("long", "10")
    rig.set_price("94")
    book = await rig.book()
    book.envelope = Envelope(max_daily_loss=D("1e-999999"))
    report = risk.report(book, D(1))
    assert report["status"] == "breached"
    assert b"Infinity" not in wire.dumps(report)
    await rig.limits(max_daily_loss="5000")  # the account's own commands (PUT /v1/risk/envelope) still work
    assert risk.report(await rig.book(), D(1))["status"] == "ok"
