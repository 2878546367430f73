"""CcxtExchange against a fake Binance on 127.0.0.1: the real ccxt `binance` class, signing real requests."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest

from rt.auth.vault import Box
from rt.errors import BadRequest
from rt.exchanges import ExchangeRejected, ExchangeUnavailable, Fill, OrderSpec, Ticker
from rt.exchanges.ccxt_exchange import CcxtExchange, check_venue
from rt.records.accounts import VenueRecord
from tests.exchanges.fake_binance import FakeBinance

BTC = "BTC/USDT"
API_KEY = "fake-api-key-" + secrets.token_hex(8)
SECRET = "fake-secret-" + secrets.token_hex(16)

Factory = Callable[..., Awaitable[CcxtExchange]]


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.fixture
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(API_KEY, SECRET) as venue:
        yield venue


@pytest.fixture
async def make(fake: FakeBinance) -> AsyncIterator[Factory]:
    """CcxtExchanges pointed at the fake venue with quick polling; closed after the test."""
    made: list[CcxtExchange] = []

    async def factory(
        api_key: str = API_KEY, secret: str = SECRET, *, wait: bool = True, **settings: Any
    ) -> CcxtExchange:
        settings = {
            "poll_interval": 0.02,
            "tick_interval": 0.02,
            "backoff": (0.02, 0.1),
            **settings,
        }
        venue = CcxtExchange("binance", {"api_key": api_key, "secret": secret}, url=fake.url, **settings)
        made.append(venue)
        await venue.start()
        if wait:
            await eventually(lambda: venue.connected)
        return venue

    yield factory
    for venue in made:
        await venue.close()


def collect_fills(venue: CcxtExchange) -> list[Fill]:
    fills: list[Fill] = []

    async def handler(fill: Fill) -> None:
        fills.append(fill)

    venue.on_fill(handler)
    return fills


async def test_markets_come_from_the_venue(make: Factory) -> None:
    venue = await make()
    markets = {m.symbol: m for m in await venue.markets()}
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}
    btc = markets[BTC]
    assert (btc.base, btc.quote) == ("BTC", "USDT")
    assert btc.price_step == Decimal("0.01")
    assert btc.amount_step == Decimal("0.00001")
    assert btc.min_amount == Decimal("0.00001")


async def test_one_market_is_looked_up_by_symbol(make: Factory) -> None:
    venue = await make()
    listed = {m.symbol: m for m in await venue.markets()}
    assert await venue.market(BTC) == listed[BTC]
    assert await venue.market("NOPE/USDT") is None


async def test_ticker_is_the_venues_quote(make: Factory, fake: FakeBinance) -> None:
    venue = await make()
    quote = await venue.ticker(BTC)
    assert (quote.bid, quote.ask, quote.last) == (Decimal("64999.99"), Decimal("65000.01"), Decimal("65000"))
    fake.set_price(BTC, Decimal("65100"))
    assert (await venue.ticker(BTC)).last == Decimal("65100")
    with pytest.raises(BadRequest):
        await venue.ticker("DOGE/USDT")


async def test_balances_are_the_venues(make: Factory, fake: FakeBinance) -> None:
    venue = await make()
    assert await venue.balances() == {"USDT": Decimal("100000"), "BTC": Decimal("1"), "ETH": Decimal("10")}
    assert fake.signed_requests("GET", "/api/v3/account")


async def test_market_buy_fills_at_the_venues_ask_through_a_signed_request(make: Factory, fake: FakeBinance) -> None:
    venue = await make()
    placed = await venue.place(OrderSpec(BTC, "buy", "market", Decimal("0.01"), client_id="ord_marketbuy1"))
    assert placed.status == "filled" and placed.fill is not None
    assert placed.fill.price == Decimal("65000.01")
    assert placed.fill.quantity == Decimal("0.01")
    # Binance takes a buy's fee in the base asset: 0.1% of 0.01 BTC, booked at the fill price in USDT.
    assert placed.fill.fee == Decimal("0.00001") * Decimal("65000.01")
    [sent] = fake.signed_requests("POST", "/api/v3/order")
    assert sent.api_key == API_KEY
    assert sent.params["newClientOrderId"] == "ord_marketbuy1"
    assert (sent.params["side"], sent.params["type"], sent.params["quantity"]) == ("BUY", "MARKET", "0.01")
    assert fake.balance("BTC") == Decimal("1.00999")
    assert fake.balance("USDT") == Decimal("100000") - Decimal("650.0001")
    balances = await venue.balances()
    assert balances["BTC"] == Decimal("1.00999")


async def test_market_sell_fills_at_the_bid_with_the_fee_in_quote(make: Factory) -> None:
    venue = await make()
    placed = await venue.place(OrderSpec(BTC, "sell", "market", Decimal("0.5")))
    assert placed.fill is not None
    assert placed.fill.price == Decimal("64999.99")
    assert placed.fill.fee == Decimal("0.5") * Decimal("64999.99") * Decimal("0.001")


async def test_limit_order_rests_then_fills_when_the_price_moves(make: Factory, fake: FakeBinance) -> None:
    venue = await make()
    fills = collect_fills(venue)
    placed = await venue.place(OrderSpec(BTC, "buy", "limit", Decimal("0.01"), price=Decimal("64000")))
    assert placed.status == "open" and placed.fill is None
    assert fake.orders[int(placed.venue_order_id)].status == "NEW"
    # Polls come and go while the price stays above the limit: nothing fills.
    await eventually(lambda: len(fake.signed_requests("GET", "/api/v3/order")) >= 3)
    assert fills == []
    fake.set_price(BTC, Decimal("63990"))
    await eventually(lambda: len(fills) == 1)
    assert fills[0].venue_order_id == placed.venue_order_id
    assert fills[0].price == Decimal("64000")
    assert fills[0].quantity == Decimal("0.01")
    assert fills[0].fee == Decimal("0.00001") * Decimal("64000")


async def test_stop_order_triggers_when_the_price_crosses_it(make: Factory, fake: FakeBinance) -> None:
    venue = await make()
    fills = collect_fills(venue)
    placed = await venue.place(OrderSpec(BTC, "sell", "stop", Decimal("0.1"), stop_price=Decimal("60000")))
    assert placed.status == "open"
    [sent] = fake.signed_requests("POST", "/api/v3/order")
    assert (sent.params["type"], sent.params["stopPrice"]) == ("STOP_LOSS", "60000")
    fake.set_price(BTC, Decimal("59000"))
    await eventually(lambda: len(fills) == 1)
    assert fills[0].venue_order_id == placed.venue_order_id
    assert fills[0].price == Decimal("58999.99")


async def test_cancel_removes_the_order_and_its_fill_never_comes(make: Factory, fake: FakeBinance) -> None:
    venue = await make()
    fills = collect_fills(venue)
    resting = await venue.place(OrderSpec(BTC, "buy", "limit", Decimal("0.01"), price=Decimal("64000")))
    assert fake.balance("USDT") == Decimal("100000")
    assert fake.free["USDT"] == Decimal("99360")
    canceled = await venue.cancel(resting.venue_order_id, BTC)
    assert canceled.status == "canceled"
    assert fake.orders[int(resting.venue_order_id)].status == "CANCELED"
    assert fake.free["USDT"] == Decimal("100000")
    later = await venue.place(OrderSpec(BTC, "buy", "limit", Decimal("0.02"), price=Decimal("63000")))
    fake.set_price(BTC, Decimal("62000"))
    await eventually(lambda: len(fills) >= 1)
    assert [f.venue_order_id for f in fills] == [later.venue_order_id]


async def test_cancel_of_an_order_that_already_filled_says_so(make: Factory, fake: FakeBinance) -> None:
    venue = await make(poll_interval=60)
    resting = await venue.place(OrderSpec(BTC, "buy", "limit", Decimal("0.01"), price=Decimal("64000")))
    fake.set_price(BTC, Decimal("63000"))
    assert (await venue.cancel(resting.venue_order_id, BTC)).status == "filled"


async def test_the_venue_refusing_funds_is_a_rejection(make: Factory, fake: FakeBinance) -> None:
    venue = await make()
    with pytest.raises(ExchangeRejected) as caught:
        await venue.place(OrderSpec(BTC, "buy", "market", Decimal("100")))
    assert caught.value.status == 422
    assert caught.value.extra["details"]["check"] == "exchange"
    assert "insufficient balance" in caught.value.detail
    assert fake.orders == {}


@pytest.mark.parametrize(
    "api_key, secret", [(API_KEY, "wrong-" + SECRET), ("wrong-key", SECRET)], ids=["wrong-secret", "wrong-key"]
)
async def test_wrong_credentials_surface_as_an_error(
    make: Factory, fake: FakeBinance, api_key: str, secret: str
) -> None:
    venue = await make(api_key, secret)
    for attempt in (venue.balances(), venue.place(OrderSpec(BTC, "buy", "market", Decimal("0.01")))):
        with pytest.raises(ExchangeUnavailable) as caught:
            await attempt
        assert "credentials" in caught.value.detail
        assert secret not in caught.value.detail and api_key not in caught.value.detail
    assert fake.orders == {}
    refused = [s for s in fake.seen if s.signed is False]
    assert {s.path for s in refused} == {"/api/v3/account", "/api/v3/order"}
    assert await venue.ticker(BTC)  # the public API still answers


async def test_venue_down_is_unavailable_and_rt_reconnects(make: Factory, fake: FakeBinance) -> None:
    venue = await make()
    fake.stop()
    with pytest.raises(ExchangeUnavailable) as caught:
        await venue.ticker(BTC)
    assert caught.value.status == 503 and caught.value.code == "EXCHANGE_UNAVAILABLE"
    assert not venue.connected
    with pytest.raises(ExchangeUnavailable):
        await venue.place(OrderSpec(BTC, "buy", "market", Decimal("0.01")))
    loads_before = len([s for s in fake.seen if s.path == "/api/v3/exchangeInfo"])
    fake.start()
    await eventually(lambda: venue.connected)
    assert len([s for s in fake.seen if s.path == "/api/v3/exchangeInfo"]) > loads_before
    assert (await venue.ticker(BTC)).last == Decimal("65000")


async def test_an_idle_venue_that_goes_away_is_noticed(make: Factory, fake: FakeBinance) -> None:
    venue = await make(heartbeat=0.02)
    fake.stop()
    await eventually(lambda: not venue.connected)
    fake.start()
    await eventually(lambda: venue.connected)


async def test_a_venue_down_at_start_connects_when_it_comes_up(make: Factory, fake: FakeBinance) -> None:
    fake.stop()
    venue = await make(wait=False)
    with pytest.raises(ExchangeUnavailable):
        await venue.markets()
    assert not venue.connected
    fake.start()
    await eventually(lambda: venue.connected)
    assert len(await venue.markets()) == 2


async def test_ticks_of_watched_symbols_reach_the_handlers(make: Factory, fake: FakeBinance) -> None:
    venue = await make()
    ticks: list[Ticker] = []
    venue.on_tick(ticks.append)
    venue.watch(BTC)
    fake.set_price(BTC, Decimal("65500"))
    await eventually(lambda: any(t.last == Decimal("65500") for t in ticks))
    assert {t.symbol for t in ticks} == {BTC}


async def test_after_a_restart_an_adopted_order_is_followed_and_a_watched_symbol_ticked(
    make: Factory, fake: FakeBinance
) -> None:
    before = await make()
    ours, _theirs = [
        await before.place(OrderSpec(BTC, "sell", "limit", Decimal("0.01"), price=Decimal("66000"))) for _ in range(2)
    ]
    await before.close()
    # What the engine does with each book it loads: the venue follows the open orders it is given, and no others.
    after = await make(account_id="acct_1")
    fills = collect_fills(after)
    ticks: list[Ticker] = []
    after.on_tick(ticks.append)
    after.adopt(ours.venue_order_id, OrderSpec(BTC, "sell", "limit", Decimal("0.01"), price=Decimal("66000")))
    after.watch("ETH/USDT")
    fake.set_price(BTC, Decimal("66100"))
    await eventually(lambda: bool(fills) and any(t.symbol == "ETH/USDT" for t in ticks))
    assert [f.venue_order_id for f in fills] == [ours.venue_order_id]
    assert fills[0].fee == Decimal("0.01") * Decimal("66000") * Decimal("0.001")


async def test_a_stored_record_trades_with_its_sealed_credentials(fake: FakeBinance) -> None:
    box = Box(secrets.token_bytes(32))
    sealed = box.seal(orjson.dumps({"api_key": API_KEY, "secret": SECRET, "password": ""}).decode())
    assert SECRET not in sealed and API_KEY not in sealed
    record = VenueRecord("acct_1", "binance", sealed, {"sandbox": False, "url": fake.url}, datetime.now(UTC))
    venue = CcxtExchange.from_record(record, box, backoff=(0.02, 0.1))
    assert (venue.id, venue.account_id) == ("binance", "acct_1")
    assert SECRET not in repr(venue)
    await venue.start()
    try:
        await eventually(lambda: venue.connected)
        assert (await venue.balances())["USDT"] == Decimal("100000")
    finally:
        await venue.close()


async def test_check_venue_refuses_what_could_never_connect() -> None:
    with pytest.raises(ValueError, match="did you mean 'binance'"):
        await check_venue("binanse")
    with pytest.raises(ValueError, match="http"):
        await check_venue("binance", url="127.0.0.1:9000")
    await check_venue("binance", sandbox=True, url="http://127.0.0.1:9000")
