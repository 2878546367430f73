"""End to end: a real `rt serve` with RT_PAPER_VENUES=binance trades the seed's `"exchange": "binance"` bodies on the
simulated market, and says so on REST and the WebSocket; `rt venues add --paper` gives an account a simulated kraken
that the next server serves."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.server import Server, cli, run_server
from tests.e2e.test_ws_e2e import connect

pytestmark = pytest.mark.e2e

ENV = {"RT_PAPER_VENUES": "binance", "RT_PAPER_TICK_MS": "0", "RT_TIER_LIMITS": "pro_plus=60000/10000"}
# The seed's curl body: 45000 is far below the simulated price, so it rests as a pending limit entry.
SEED_BODY = {"exchange": "binance", "symbol": "BTC/USDT", "side": "long", "entry_price": 45000, "quantity": 0.5}


def rt(data_dir: Path, *args: str) -> str:
    result = cli(data_dir, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def ok(response: httpx.Response, *status: int) -> Any:
    assert response.status_code in (status or (200,)), response.text
    return response.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("paper-venues") / "data", ENV) as running:
        assert running.key is not None
        yield running


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    assert server.key is not None
    with server.client(server.key) as client:
        yield client


def test_the_seeds_body_rests_as_a_pending_entry_on_the_simulated_binance(admin: httpx.Client) -> None:
    # A pending entry is accepted (202) rather than created.
    position = ok(admin.post("/v1/positions", json=SEED_BODY), 201, 202)["position"]
    assert (position["exchange"], position["status"], position["simulated"]) == ("binance", "pending", True)
    [entry] = ok(admin.get("/v1/orders", params={"status": "open", "exchange": "binance"}))["orders"]
    assert (entry["position_id"], entry["price"], entry["simulated"]) == (position["id"], 45000, True)
    listed = ok(admin.get("/v1/positions", params={"status": "pending", "exchange": "binance"}))["positions"]
    assert [(p["id"], p["simulated"]) for p in listed] == [(position["id"], True)]
    ok(admin.delete(f"/v1/orders/{entry['id']}"))


def test_markets_and_tickers_answer_for_the_alias_at_the_paper_prices(admin: httpx.Client) -> None:
    markets = ok(admin.get("/v1/markets", params={"exchange": "binance"}))
    paper = ok(admin.get("/v1/markets"))
    assert {m["symbol"] for m in markets["markets"]} == {m["symbol"] for m in paper["markets"]}
    assert {m["exchange"] for m in markets["markets"]} == {"binance"}
    ticker = ok(admin.get("/v1/markets/BTC-USDT/ticker", params={"exchange": "binance"}))
    on_paper = ok(admin.get("/v1/markets/BTC-USDT/ticker"))
    assert ticker["exchange"] == "binance"
    assert (ticker["bid"], ticker["ask"]) == (on_paper["bid"], on_paper["ask"])


async def test_a_market_entry_fills_and_the_websocket_says_simulated(server: Server) -> None:
    assert server.key is not None
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.key}, timeout=10) as http:
        token = ok(await http.post("/v1/ws/token"))["token"]
        async with connect(server, token=token) as conn:
            await conn.subscribe("positions")
            body = {"exchange": "binance", "symbol": "BTC/USDT", "side": "long", "quantity": 0.1}
            position = ok(await http.post("/v1/positions", json=body), 201)["position"]
            assert (position["status"], position["exchange"], position["simulated"]) == ("open", "binance", True)
            event = await conn.next("event", channel="positions", event="position.opened")
            assert (event["data"]["id"], event["data"]["exchange"], event["data"]["simulated"]) == (
                position["id"],
                "binance",
                True,
            )
            [fill] = ok(await http.get("/v1/orders", params={"status": "filled", "exchange": "binance"}))["orders"]
            assert (fill["position_id"], fill["simulated"]) == (position["id"], True)
            closed = ok(await http.post(f"/v1/positions/{position['id']}/close"))["position"]
            assert (closed["status"], closed["simulated"]) == ("closed", True)
            await asyncio.wait_for(conn.next("event", channel="positions", event="position.closed"), 5)


def test_paper_orders_say_simulated_and_an_unconfigured_id_is_refused(admin: httpx.Client) -> None:
    order = ok(admin.post("/v1/orders", json={"symbol": "ETH/USDT", "side": "buy", "quantity": 0.1}), 201)["order"]
    assert (order["exchange"], order["simulated"]) == ("paper", True)
    refused = admin.post("/v1/orders", json={"exchange": "kraken", "symbol": "ETH/USDT", "side": "buy", "quantity": 1})
    assert refused.status_code == 400, refused.text


def test_a_test_key_trades_on_the_alias(admin: httpx.Client, server: Server) -> None:
    made = ok(admin.post("/v1/keys", json={"scopes": "full", "tier": "pro", "test": True}), 201)
    try:
        with server.client(made["key"]) as test_client:
            order = test_client.post(
                "/v1/orders", json={"exchange": "binance", "symbol": "ETH/USDT", "side": "buy", "quantity": 0.1}
            )
            assert order.status_code == 201, order.text
            assert order.json()["order"]["simulated"] is True
    finally:
        admin.delete(f"/v1/keys/{made['id']}")


def test_venues_add_paper_gives_the_account_a_simulated_kraken_after_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    kraken = {"exchange": "kraken", "symbol": "BTC/USDT", "side": "buy", "quantity": 0.01}
    with run_server(data_dir, {"RT_PAPER_TICK_MS": "0"}) as first:
        assert first.key is not None
        key = first.key
        with first.client(key) as client:
            assert client.post("/v1/orders", json=kraken).status_code == 400
        added = json.loads(rt(data_dir, "venues", "add", "--exchange", "kraken", "--paper", "--json"))
        assert (added["exchange"], added["paper"], added["simulated"], added["replaced"]) == (
            "kraken",
            True,
            True,
            False,
        )
    [listed] = json.loads(rt(data_dir, "venues", "list", "--json"))
    assert (listed["exchange"], listed["paper"], listed["simulated"]) == ("kraken", True, True)
    table = rt(data_dir, "venues", "list")
    assert "SIMULATED" in table.splitlines()[0] and " paper " in table.splitlines()[-1]
    with run_server(data_dir, {"RT_PAPER_TICK_MS": "0"}) as second, second.client(key) as client:
        order = ok(client.post("/v1/orders", json=kraken), 201)["order"]
        assert (order["exchange"], order["status"], order["simulated"]) == ("kraken", "filled", True)
        [position] = ok(client.get("/v1/positions", params={"exchange": "kraken"}))["positions"]
        assert position["simulated"] is True
        markets = ok(client.get("/v1/markets", params={"exchange": "kraken"}))["markets"]
        assert "BTC/USDT" in {m["symbol"] for m in markets}
