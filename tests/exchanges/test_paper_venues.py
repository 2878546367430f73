"""Simulated venues by name: the paper market answering to real exchange ids (RT_PAPER_VENUES, `rt venues add
--paper`). One market under every name, orders and positions that say they are simulated, and a real venue of the
same id on an account that wins over the alias and never shares its prices."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from rt.bus.memory import MemoryBus
from rt.engine import trading
from rt.engine.engine import Engine, EngineConfig
from rt.engine.requests import EntryUpdate
from rt.errors import BadRequest, Forbidden
from rt.exchanges import OrderSpec
from rt.exchanges.alias import PaperAlias, valid_id
from rt.exchanges.feed import MarketFeed
from rt.exchanges.paper import PaperExchange
from rt.exchanges.registry import Venues
from rt.store.sqlite import SQLiteStore
from tests.engine.conftest import FEE, PRICES, SYMBOL, Rig

D = Decimal
CABLE, EURGBP = "GBP/USD", "EUR/GBP"


class RealBinance(PaperExchange):
    """Stands in for a real ccxt venue named binance: a market of its own at other prices, not simulated."""

    id = "binance"
    simulated = False


def paper_venue() -> PaperExchange:
    return PaperExchange(MarketFeed(dict(PRICES), interval=0), FEE)


@contextlib.asynccontextmanager
async def alias_and_real(
    tmp_path: Path, paper_prices: dict[str, Decimal], real_prices: dict[str, Decimal]
) -> AsyncIterator[tuple[Rig, Rig, RealBinance]]:
    """(alice, bob, bob's real binance): RT_PAPER_VENUES=binance,kraken; bob has a real binance of his own."""
    store = await SQLiteStore.open(str(tmp_path / "rt.db"))
    alice = (await store.create_account("alice")).id
    bob = (await store.create_account("bob")).id
    feed = MarketFeed(dict(paper_prices), interval=0)
    paper = PaperExchange(feed, FEE)
    venues = Venues(paper, ["binance", "kraken"])
    real = RealBinance(MarketFeed(dict(real_prices), interval=0), FEE)
    venues.add(bob, real)
    bus = MemoryBus()
    engine = Engine(store, bus, venues, EngineConfig())
    await engine.start()
    rig = Rig(str(tmp_path / "rt.db"), store, bus, feed, paper, engine, alice, D(0))
    try:
        yield rig, rig.as_account(bob), real
    finally:
        await rig.close()


@pytest.fixture
async def rigs(tmp_path: Path) -> AsyncIterator[tuple[Rig, Rig, RealBinance]]:
    async with alias_and_real(tmp_path, PRICES, {SYMBOL: D(200)}) as made:
        yield made


@pytest.fixture
async def fx_rigs(tmp_path: Path) -> AsyncIterator[tuple[Rig, Rig, RealBinance]]:
    """The same, on a market of pounds: EUR/GBP counts at GBP/USD's rate, 1.27 on paper and 1.30 on bob's venue."""
    async with alias_and_real(
        tmp_path, {CABLE: D("1.27"), EURGBP: D("0.85")}, {CABLE: D("1.30"), EURGBP: D("0.85")}
    ) as made:
        yield made


def test_an_alias_answers_to_its_name_and_serves_the_one_paper_market() -> None:
    paper = paper_venue()
    venues = Venues(paper, ["binance"])
    binance = venues.get("acct", "binance")
    assert isinstance(binance, PaperAlias)
    assert (binance.id, binance.simulated, binance.paper) == ("binance", True, paper)
    assert venues.get("other", "binance") is binance
    assert venues.names("acct") == ["paper", "binance"]
    with pytest.raises(BadRequest) as unknown:
        venues.get("acct", "kraken")
    assert unknown.value.extra["errors"] == [{"field": "exchange", "message": "one of paper, binance"}]


async def test_an_order_on_an_alias_rests_among_the_paper_venues_orders() -> None:
    paper = paper_venue()
    binance = Venues(paper, ["binance"]).alias("binance")
    assert await binance.markets() == await paper.markets()
    assert await binance.ticker(SYMBOL) == await paper.ticker(SYMBOL)
    placed = await binance.place(OrderSpec(SYMBOL, "buy", "limit", D(1), price=D(90)))
    assert placed.status == "open"
    canceled = await paper.cancel(placed.venue_order_id, SYMBOL)
    assert canceled.status == "canceled"


def test_every_venue_is_listed_once_and_the_aliases_before_paper() -> None:
    paper = paper_venue()
    venues = Venues(paper, ["binance", "kraken"])
    assert venues.add_simulated("acct", "kraken") is venues.alias("kraken")
    listed = venues.all()
    assert [v.id for v in listed] == ["binance", "kraken", "paper"]


def test_an_accounts_own_venue_of_the_same_id_wins_over_the_alias() -> None:
    paper = paper_venue()
    venues = Venues(paper, ["binance"])
    real = RealBinance(MarketFeed({SYMBOL: D(200)}, interval=0), FEE)
    venues.add("bob", real)
    assert venues.get("bob", "binance") is real
    assert isinstance(venues.get("alice", "binance"), PaperAlias)
    assert venues.names("bob") == ["paper", "binance"]


def test_an_accounts_simulated_venue_is_its_own() -> None:
    venues = Venues(paper_venue())
    venues.add_simulated("alice", "kraken")
    assert venues.get("alice", "kraken").simulated
    with pytest.raises(BadRequest):
        venues.get("bob", "kraken")


def test_test_keys_trade_on_the_simulated_market_only() -> None:
    paper = paper_venue()
    venues = Venues(paper, ["binance"])
    venues.add("bob", RealBinance(MarketFeed({SYMBOL: D(200)}, interval=0), FEE))
    assert venues.get("alice", "binance", test_key=True).id == "binance"
    assert venues.get("bob", "paper", test_key=True) is paper
    with pytest.raises(Forbidden) as real:
        venues.get("bob", "binance", test_key=True)
    assert real.value.code == "INSUFFICIENT_SCOPE"
    with pytest.raises(Forbidden):
        venues.get("alice", "coinbase", test_key=True)


@pytest.mark.parametrize("name", ["paper", "", "Binance", "bin ance", "x" * 41, "-binance"])
def test_a_name_that_cannot_be_an_exchange_id_is_refused(name: str) -> None:
    assert not valid_id(name)
    with pytest.raises(ValueError):
        Venues(paper_venue(), [name])


async def test_a_market_order_on_an_alias_fills_at_the_paper_price_and_says_simulated(
    rigs: tuple[Rig, Rig, RealBinance],
) -> None:
    alice, _, _ = rigs
    order = await alice.order("buy", "1", exchange="binance")
    assert (order.status, order.exchange, order.average_price, order.simulated) == (
        "filled",
        "binance",
        D("100.01"),
        True,
    )
    [position] = await alice.stored_positions("open")
    assert (position.exchange, position.simulated) == ("binance", True)
    [stored] = await alice.stored_orders("filled")
    assert stored.simulated
    assert order.as_json()["simulated"] is True and position.as_json()["simulated"] is True


async def test_a_limit_entry_on_an_alias_rests_pending_and_fills_on_a_paper_tick(
    rigs: tuple[Rig, Rig, RealBinance],
) -> None:
    alice, _, _ = rigs
    pending = await alice.position("long", "0.5", exchange="binance", entry_price="90")
    assert (pending.status, pending.simulated) == ("pending", True)
    [stored] = await alice.stored_positions("pending")
    assert stored.simulated
    alice.set_price("89")
    await alice.settle()
    [opened] = await alice.stored_positions("open")
    assert (opened.id, opened.exchange, opened.entry_price, opened.simulated) == (pending.id, "binance", D(90), True)
    alice.set_price("95")
    book = await alice.book()
    assert book.positions[opened.id].current_price == D(95)


async def test_a_paper_tick_closes_an_alias_position_at_its_stop_loss(rigs: tuple[Rig, Rig, RealBinance]) -> None:
    alice, _, _ = rigs
    position = await alice.position("long", "1", exchange="kraken", stop_loss="95")
    alice.set_price("94")
    await alice.settle()
    [closed] = await alice.stored_positions("closed")
    assert (closed.id, closed.close_reason, closed.exchange, closed.simulated) == (
        position.id,
        "stop_loss",
        "kraken",
        True,
    )


async def test_a_real_venue_of_the_same_id_keeps_its_own_prices(rigs: tuple[Rig, Rig, RealBinance]) -> None:
    alice, bob, real = rigs
    bobs = await bob.position("long", "1", exchange="binance", stop_loss="150")
    assert (bobs.entry_price, bobs.simulated) == (D("200.01"), False)
    alices = await alice.position("long", "1", exchange="binance")
    assert alices.simulated
    # The paper market falls far below bob's stop loss: his real position is neither marked nor closed by it.
    alice.set_price("80")
    await alice.settle()
    book = await bob.book()
    assert (book.positions[bobs.id].status, book.positions[bobs.id].current_price) == ("open", D("200.01"))
    assert (await alice.book()).positions[alices.id].current_price == D(80)
    # Bob's venue moves his position, not alice's.
    real.feed.set_price(SYMBOL, D(210))
    assert (await bob.book()).positions[bobs.id].current_price == D(210)
    assert (await alice.book()).positions[alices.id].current_price == D(80)


async def test_a_book_read_from_the_store_is_marked_to_its_own_venues_last_tick(
    rigs: tuple[Rig, Rig, RealBinance],
) -> None:
    alice, bob, real = rigs
    bobs = await bob.position("long", "1", exchange="binance")
    alices = await alice.position("long", "1", exchange="binance")
    real.feed.set_price(SYMBOL, D(210))
    alice.set_price("80")  # the paper market ticks last
    stored = await bob.store.load_book(bob.account_id)
    assert stored is not None
    bob.engine.ticks.mark_loaded(stored)
    assert stored.positions[bobs.id].current_price == D(210)

    real.feed.set_price(SYMBOL, D(220))  # now bob's venue ticks last
    stored = await alice.store.load_book(alice.account_id)
    assert stored is not None
    alice.engine.ticks.mark_loaded(stored)
    assert stored.positions[alices.id].current_price == D(80)


async def test_a_cross_rate_comes_from_the_venue_the_account_trades_on(
    fx_rigs: tuple[Rig, Rig, RealBinance],
) -> None:
    alice, bob, real = fx_rigs
    real.feed.set_price(CABLE, D("1.30"))
    alice.set_price("1.27", CABLE)  # the paper market ticks last
    ticks = alice.engine.ticks
    assert ticks.cross_rate(bob.account_id, "binance", EURGBP) == D("1.30")
    assert ticks.cross_rate(alice.account_id, "binance", EURGBP) == D("1.27")
    assert ticks.cross_rate(alice.account_id, "coinbase", EURGBP) is None  # a venue the account does not trade on
    # Cerberus and P&L count bob's pounds at his own venue's rate.
    position = await bob.position("long", "10000", symbol=EURGBP, exchange="binance")
    assert position.notional == position.entry_price * 10000 * D("1.30")


async def test_a_test_key_cannot_move_an_entry_resting_on_a_real_venue(rigs: tuple[Rig, Rig, RealBinance]) -> None:
    alice, bob, _ = rigs
    bobs = await bob.position("long", "1", exchange="binance", entry_price="190")
    with pytest.raises(Forbidden) as refused:
        await trading.amend_entry(bob.engine, bob.account_id, bobs.id, EntryUpdate(entry_price=D(185)), test_key=True)
    assert refused.value.code == "INSUFFICIENT_SCOPE"
    book = await bob.book()
    entry = book.orders[book.positions[bobs.id].entry_order_id or ""]
    assert (book.positions[bobs.id].entry_price, entry.price, entry.status) == (D(190), D(190), "open")

    # On the simulated market a test key moves it.
    alices = await alice.position("long", "1", exchange="binance", entry_price="90")
    moved = await trading.amend_entry(
        alice.engine, alice.account_id, alices.id, EntryUpdate(entry_price=D(85)), test_key=True
    )
    assert (moved.id, moved.status, moved.entry_price) == (alices.id, "pending", D(85))
