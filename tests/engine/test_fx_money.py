"""Money in the account's currency: a pair quoted in yen (or pounds) counts for Cerberus, P&L, fees and margin in the
account's USDT, at the quote currency's rate from the market's prices (USD/JPY: 1 / price; GBP/USD: its price)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from rt.engine import ledger, risk
from rt.errors import ValidationFailed
from rt.records.trading import has_rate, to_account
from tests.engine.conftest import FEE, START, Rig, RigFactory

D = Decimal
JPY, EUR, CABLE, EURGBP = "USD/JPY", "EUR/USD", "GBP/USD", "EUR/GBP"
# USD/JPY at 150: price step 0.001, half spread 0.008 (bid 149.992, ask 150.008).
FX = {JPY: D("150.00"), EUR: D("1.0870"), CABLE: D("1.2700"), EURGBP: D("0.8500")}


@pytest.fixture
async def fx(make_rig: RigFactory) -> Rig:
    return await make_rig(prices=dict(FX))


async def open_at_market(rig: Rig, symbol: str, side: str, quantity: str, **fields: Any) -> Any:
    return await rig.position(side, quantity, symbol=symbol, **fields)


async def refusal(rig: Rig, symbol: str, quantity: str) -> dict[str, Any]:
    with pytest.raises(ValidationFailed) as caught:
        await rig.order("buy", quantity, symbol=symbol)
    details: dict[str, Any] = caught.value.extra["details"]
    return details


def test_an_amount_of_the_quote_currency_in_account_currency() -> None:
    assert to_account(D(650), "BTC/USDT", D(65000)) == D(650)
    assert to_account(D("10.87"), "EUR/USD", D("1.087")) == D("10.87")
    assert to_account(D(1500), "USD/JPY", D(150)) == D(10)
    assert to_account(D(1), "USD/JPY", D(150)) == D("0.00666667")  # eight places
    assert to_account(D(100), "EUR/GBP", D("0.85"), D("1.27")) == D(127)
    assert to_account(D(100), "EUR/GBP", D("0.85")) == D(100)  # nothing gives the pound's rate: counted as it is
    assert not has_rate("EUR/GBP", D("0.85")) and not has_rate("ETH/BTC", D("0.05"))  # so Cerberus refuses them
    assert has_rate("EUR/GBP", D("0.85"), D("1.27")) and has_rate("USD/JPY", D(150)) and has_rate("BTC/USDT:USDT", D(1))


async def test_a_usd_jpy_long_of_10000_is_a_10000_notional_for_cerberus(fx: Rig) -> None:
    await fx.limits(max_position_size="10000")
    position = await open_at_market(fx, JPY, "long", "10000")
    assert position.entry_price == D("150.008")  # bought at the ask, in yen
    assert position.notional == D(10000)
    book = await fx.book()
    assert ledger.exposure_notional(book) == D(10000)
    assert ledger.margin_used(book, D(1)) == D(10000)

    details = await refusal(fx, JPY, "10001")
    assert details["check"] == risk.POSITION_SIZE
    assert details["requested"] == D(10001)  # not 1,500,160 yen


async def test_a_one_yen_move_is_worth_about_66_67_usdt(fx: Rig) -> None:
    fx.set_price("149", JPY)
    position = await open_at_market(fx, JPY, "long", "10000")
    entry = position.entry_price
    assert entry == D("149.007")
    fx.set_price(entry + 1, JPY)

    assert position.unrealized_pnl == (D(10000) / position.current_price).quantize(D("1E-8"))
    assert abs(position.unrealized_pnl - D("66.67")) < D("0.01")
    book = await fx.book()
    assert ledger.equity(book) - book.balance == position.unrealized_pnl


async def test_fees_and_realized_pnl_are_booked_in_account_currency(fx: Rig) -> None:
    fx.set_price("149", JPY)
    position = await open_at_market(fx, JPY, "long", "10000")
    # 0.1% of 10,000 USD: 1,490.07 yen at 149.007 yen a dollar.
    assert position.realized_pnl == D(-10)
    assert (await fx.book()).balance == START - 10

    fx.set_price("151", JPY)
    await fx.close_position(position.id)
    bid = D("150.992")
    closing = (((bid - D("149.007")) * 10000 - bid * 10000 * FEE) / bid).quantize(D("1E-8"))
    assert position.realized_pnl == closing - 10
    book = await fx.book()
    assert book.balance == START + position.realized_pnl
    assert abs(book.realized_total - D("111.46")) < D("0.01")  # 131.46 of price less 20 of fees, not 19,850 "yen"


async def test_a_short_usd_jpy_loses_in_account_currency(fx: Rig) -> None:
    position = await open_at_market(fx, JPY, "short", "10000")
    assert position.entry_price == D("149.992")
    fx.set_price("151.5", JPY)
    assert position.unrealized_pnl == ((D("149.992") - D("151.5")) * 10000 / D("151.5")).quantize(D("1E-8"))
    assert risk.daily_loss(await fx.book()) == position.unrealized_pnl - 10  # and the opening fee


async def test_eur_usd_10000_units_are_about_10870(fx: Rig) -> None:
    await fx.limits(max_position_size="10000")
    details = await refusal(fx, EUR, "10000")
    assert (details["check"], details["requested"]) == (risk.POSITION_SIZE, D("10870.5"))  # at the ask, 1.08705
    await fx.limits(max_position_size="25000")
    position = await open_at_market(fx, EUR, "long", "10000")
    assert position.notional == D("10870.5")
    assert position.realized_pnl == -D("10870.5") * FEE


async def test_a_resting_usd_jpy_order_counts_in_account_currency(fx: Rig) -> None:
    await fx.order("buy", "10000", symbol=JPY, type="limit", price="140")
    _, resting = risk.pending(await fx.book())
    assert resting == 1
    assert risk.report(await fx.book(), D(1))["current"]["pending_notional"] == D(10000)


async def test_a_cross_pair_counts_at_the_rate_another_pair_gives(fx: Rig) -> None:
    fx.set_price("1.27", CABLE)
    await fx.limits(max_position_size="10000")
    details = await refusal(fx, EURGBP, "10000")
    ask = D("0.85004")
    assert (details["check"], details["requested"]) == (risk.POSITION_SIZE, ask * 10000 * D("1.27"))

    await fx.limits(max_position_size="25000")
    position = await open_at_market(fx, EURGBP, "long", "10000")
    assert position.notional == ask * 10000 * D("1.27")
    fx.set_price("1.30", CABLE)  # the pound's rate moves: the position's worth with it
    assert position.notional == ask * 10000 * D("1.30")
    fx.set_price("0.86", EURGBP)
    assert position.unrealized_pnl == (D("0.86") - ask) * 10000 * D("1.30")


async def test_after_a_restart_a_usd_jpy_position_still_counts_in_account_currency(fx: Rig) -> None:
    position = await open_at_market(fx, JPY, "long", "10000")
    restarted = await fx.restart()
    book = await restarted.book()
    reloaded = book.positions[position.id]
    assert reloaded.notional == D(10000)
    assert ledger.exposure_notional(book) == D(10000)


# ETH/BTC is quoted in bitcoin; without a BTC pair against USD, USDT or USDC nothing says what a bitcoin is worth.
ETHBTC = "ETH/BTC"
UNRATED = {ETHBTC: D("0.05"), "ETH/USDT": D("3200")}


async def test_a_quote_currency_without_a_rate_is_refused_not_counted_as_dollars(make_rig: RigFactory) -> None:
    rig = await make_rig(prices=dict(UNRATED))
    details = await refusal(rig, ETHBTC, "1000")  # 50 BTC, about 3.2M USDT: once let through as a notional of 50
    assert (details["check"], details["reason"]) == (risk.CURRENCY_RATE, "no rate from BTC to USDT")
    assert risk.CURRENCY_RATE == "currency_rate"
    with pytest.raises(ValidationFailed) as caught:
        await open_at_market(rig, ETHBTC, "long", "0.01")  # however small
    assert caught.value.extra["details"]["check"] == risk.CURRENCY_RATE
    verdict = {c["check"]: c for c in caught.value.extra["checks"]}
    assert list(verdict) == list(risk.CHECKS)
    assert not verdict[risk.POSITION_SIZE]["passed"] and verdict[risk.POSITION_SIZE]["requested"] is None
    assert (await rig.book()).open_positions() == []
    assert [o.status for o in await rig.stored_orders()] == ["rejected", "rejected"]


async def test_a_cross_pair_without_its_rate_pair_is_refused(make_rig: RigFactory) -> None:
    rig = await make_rig(prices={EURGBP: FX[EURGBP]})
    details = await refusal(rig, EURGBP, "1")
    assert (details["check"], details["reason"]) == (risk.CURRENCY_RATE, "no rate from GBP to USDT")


async def test_with_a_rate_pair_the_same_order_is_weighed_at_its_worth(make_rig: RigFactory) -> None:
    rig = await make_rig(prices={**UNRATED, "BTC/USDT": D("64000")})
    rig.set_price("64000", "BTC/USDT")  # a tick of the rate pair gives the rate
    details = await refusal(rig, ETHBTC, "1000")
    assert details["check"] == risk.POSITION_SIZE
    assert details["requested"] > D(3_000_000)
    position = await open_at_market(rig, ETHBTC, "long", "1")
    assert position.notional == position.entry_price * 64000  # 1 ETH at 0.0501 BTC, a bitcoin at 64,000 USDT


async def test_a_position_whose_rate_is_gone_can_still_be_closed_but_not_added_to(make_rig: RigFactory) -> None:
    rig = await make_rig(prices=dict(FX))
    rig.set_price("1.27", CABLE)
    position = await open_at_market(rig, EURGBP, "long", "1000")
    await rig.close()
    # The next process's market has no GBP/USD: the pound's rate is unknown there.
    rig.successor = later = await Rig.open(rig.path, rig.account_id, prices={EURGBP: FX[EURGBP]})
    assert (await refusal(later, EURGBP, "1"))["check"] == risk.CURRENCY_RATE
    closed = await later.close_position(position.id)
    assert closed.status == "closed"
