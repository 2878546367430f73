"""End to end: GET /v1/markets/{symbol} answers one market as GET /v1/markets lists it, beside its ticker and candles
routes, on a server whose RT_PAPER_VENUES (written as a person would, `Binance,kraken`) passed `rt serve`'s check."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("markets") / "data", {"RT_PAPER_VENUES": "Binance,kraken"}) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    assert server.key is not None
    with server.client(server.key) as http:
        yield http


def test_one_market_is_the_one_the_list_holds(client: httpx.Client) -> None:
    listed = client.get("/v1/markets", params={"exchange": "binance"})
    assert listed.status_code == 200, listed.text
    by_symbol = {m["symbol"]: m for m in listed.json()["markets"]}
    assert "BTC/USDT" in by_symbol
    for spelling in ("BTC%2FUSDT", "BTC-USDT", "btc_usdt"):
        one = client.get(f"/v1/markets/{spelling}", params={"exchange": "binance"})
        assert one.status_code == 200, (spelling, one.text)
        assert one.json() == by_symbol["BTC/USDT"]
    assert client.get("/v1/markets/ETH%2FUSDT").json()["exchange"] == "paper"


def test_an_unknown_market_is_a_404_problem(client: httpx.Client) -> None:
    for spelling in ("DOGE%2FEUR", "BTCUSDT", "BTC%2FUSDT%2FEXTRA"):
        missing = client.get(f"/v1/markets/{spelling}")
        assert missing.status_code == 404, (spelling, missing.text)
        assert missing.headers["content-type"].startswith("application/problem+json")
        assert missing.json()["code"] == "NOT_FOUND"


def test_ticker_and_candles_still_route_past_the_market(client: httpx.Client) -> None:
    ticker = client.get("/v1/markets/BTC%2FUSDT/ticker", params={"exchange": "kraken"})
    assert ticker.status_code == 200, ticker.text
    assert (ticker.json()["symbol"], ticker.json()["exchange"]) == ("BTC/USDT", "kraken")
    candles = client.get("/v1/markets/BTC-USDT/candles", params={"limit": 2})
    assert candles.status_code == 200, candles.text
    assert candles.json()["symbol"] == "BTC/USDT"


def test_the_market_needs_a_key(server: Server) -> None:
    with server.client(None) as anonymous:
        response = anonymous.get("/v1/markets/BTC%2FUSDT")
    assert response.status_code == 401
    assert response.json()["code"] == "API_KEY_MISSING"
