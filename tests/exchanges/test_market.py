from __future__ import annotations

from decimal import ROUND_UP, Decimal

from rt.exchanges import Market

BTC = Market("BTC/USDT", "BTC", "USDT", Decimal("1"), Decimal("0.0001"), Decimal("0.0001"))


def test_round_price_goes_to_the_nearest_step() -> None:
    assert BTC.round_price(Decimal("47555.555555555555")) == Decimal("47556")
    assert BTC.round_price(Decimal("47555.4")) == Decimal("47555")
    assert BTC.round_price(Decimal("47555.4"), ROUND_UP) == Decimal("47556")


def test_round_amount_goes_down_so_it_never_exceeds_the_ask() -> None:
    assert BTC.round_amount(Decimal("0.00019")) == Decimal("0.0001")
    assert BTC.round_amount(Decimal("0.12345")) == Decimal("0.1234")


def test_steps_that_are_not_powers_of_ten() -> None:
    half = Market("X/USDT", "X", "USDT", Decimal("0.5"), Decimal("0.25"), Decimal("0.25"))
    assert half.round_price(Decimal("10.3")) == Decimal("10.5")
    assert half.round_amount(Decimal("1.3")) == Decimal("1.25")
    assert half.price_on_step(Decimal("10.50")) and not half.price_on_step(Decimal("10.3"))


def test_on_step() -> None:
    assert BTC.price_on_step(Decimal("45000")) and BTC.price_on_step(Decimal("45000.000"))
    assert not BTC.price_on_step(Decimal("45000.123456"))
    assert BTC.amount_on_step(Decimal("0.0002")) and not BTC.amount_on_step(Decimal("0.00015"))


def test_a_market_without_steps_takes_any_value() -> None:
    free = Market("X/USDT", "X", "USDT", Decimal(0), Decimal(0), Decimal(0))
    assert free.round_price(Decimal("1.23456789")) == Decimal("1.23456789")
    assert free.price_on_step(Decimal("1.23456789")) and free.amount_on_step(Decimal("0.000001"))


def test_fine_steps_and_large_values_are_exact() -> None:
    fine = Market("X/ETH", "X", "ETH", Decimal("1E-18"), Decimal("1E-18"), Decimal(0))
    assert fine.price_on_step(Decimal("99999999999999.000000000000000001"))
    assert not fine.price_on_step(Decimal("99999999999999.0000000000000000001"))
    rounded = fine.round_price(Decimal("99999999999999.0000000000000000006"))
    assert rounded == Decimal("99999999999999.000000000000000001")
