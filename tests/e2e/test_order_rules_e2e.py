"""End to end against `rt serve`: the market's rules hold the same over REST and the WebSocket: prices and
quantities on the advertised steps, no stop the market is already through; a resting limit fills at its limit
when the market gaps through it. BTC/USDT stands at 46200 (bid 46198, ask 46202, price step 1, amount step
0.0001)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets

from tests.e2e.checks import assert_problem
from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e

ENV = {
    "RT_PAPER_TICK_MS": "0",
    "RT_PAPER_SYMBOLS": "BTC/USDT=46200,ETH/USDT=3500",
    "RT_PAPER_FEE": "0.001",
    "RT_PAPER_SLIPPAGE_BPS": "0",
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
    "RT_LOCKOUT_THRESHOLD": "100000",
}
LIMIT = {"exchange": "paper", "symbol": "BTC/USDT", "side": "buy", "type": "limit", "quantity": 0.1, "price": 45000}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("rules") / "data", ENV) as started:
        yield started


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    assert server.key is not None
    with server.client(server.key) as client:
        yield client


def field_errors(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    errors = body["errors"]
    assert isinstance(errors, list)
    return {e["field"]: e for e in errors}


def order_count(http: httpx.Client) -> int:
    response = http.get("/v1/orders", params={"status": "all"})
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


async def ws_call(server: Server, op: str, params: dict[str, Any]) -> dict[str, Any]:
    """One command on a fresh session: its result or error message."""
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": str(server.key)}) as client:
        token = (await client.post("/v1/ws/token")).json()["token"]
    url = server.url.replace("http://", "ws://", 1) + f"/v1/ws?token={token}"
    async with websockets.connect(url, open_timeout=10) as ws:
        request_id = f"c-{uuid.uuid4().hex[:8]}"
        await ws.send(orjson.dumps({"op": op, "id": request_id, "params": params}).decode())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            for message in frame if isinstance(frame, list) else [frame]:
                if message["type"] in ("result", "error") and message.get("id") == request_id:
                    return dict(message)
    raise AssertionError(f"no answer to {op}")


def ws_error(message: dict[str, Any]) -> dict[str, Any]:
    assert message["type"] == "error", message
    error: dict[str, Any] = message["error"]
    assert (error["status"], error["code"]) == (400, "BAD_REQUEST"), error
    return error


# steps


def test_the_markets_route_advertises_the_steps_orders_are_held_to(http: httpx.Client) -> None:
    markets = {m["symbol"]: m for m in http.get("/v1/markets").json()["markets"]}
    assert (markets["BTC/USDT"]["price_step"], markets["BTC/USDT"]["amount_step"]) == (1, 0.0001)
    before = order_count(http)

    off_price = assert_problem(http.post("/v1/orders", json={**LIMIT, "price": 45000.123456}), 400, "BAD_REQUEST")
    (error,) = field_errors(off_price).values()
    assert (error["field"], error["step"]) == ("price", 1) and "price step 1 " in error["message"]
    assert "price" in off_price["detail"]

    off_amount = assert_problem(http.post("/v1/orders", json={**LIMIT, "quantity": 0.00015}), 400, "BAD_REQUEST")
    assert field_errors(off_amount)["quantity"]["step"] == 0.0001

    both = {**LIMIT, "type": "stop", "price": None, "stop_price": 47000.5, "take_profit": 50000.25}
    assert set(field_errors(assert_problem(http.post("/v1/orders", json=both), 400, "BAD_REQUEST"))) == {
        "stop_price",
        "take_profit",
    }
    assert order_count(http) == before
    assert http.post("/v1/orders", json={**LIMIT, "price": "45000.000", "quantity": "0.1000"}).status_code == 201


def test_position_prices_are_held_to_the_steps_too(http: httpx.Client) -> None:
    entry = {"exchange": "paper", "symbol": "BTC/USDT", "side": "long", "quantity": 0.1, "entry_price": 45000.5}
    assert set(field_errors(assert_problem(http.post("/v1/positions", json=entry), 400, "BAD_REQUEST"))) == {
        "entry_price"
    }
    at_market = {"exchange": "paper", "symbol": "BTC/USDT", "side": "long", "quantity": 0.1, "stop_loss": 44000.5}
    assert set(field_errors(assert_problem(http.post("/v1/positions", json=at_market), 400, "BAD_REQUEST"))) == {
        "stop_loss"
    }
    opened = http.post("/v1/positions", json={**at_market, "stop_loss": 44000})
    assert opened.status_code == 201, opened.text
    position_id = opened.json()["position"]["id"]
    patched = http.patch(f"/v1/positions/{position_id}", json={"take_profit": 50000.7})
    assert set(field_errors(assert_problem(patched, 400, "BAD_REQUEST"))) == {"take_profit"}
    assert http.get(f"/v1/positions/{position_id}").json()["position"]["take_profit"] is None


async def test_the_socket_holds_orders_and_positions_to_the_steps(server: Server) -> None:
    error = ws_error(await ws_call(server, "order.place", {**LIMIT, "price": 45000.123456}))
    assert [(e["field"], e["step"]) for e in error["errors"]] == [("price", 1)]
    error = ws_error(
        await ws_call(server, "position.open", {"symbol": "BTC/USDT", "side": "long", "quantity": 0.00015})
    )
    assert [(e["field"], e["step"]) for e in error["errors"]] == [("quantity", 0.0001)]


# stops


@pytest.mark.parametrize(
    ("side", "stop_price"),
    [pytest.param("buy", 46000, id="buy-below-the-ask"), pytest.param("sell", 46300, id="sell-above-the-bid")],
)
def test_a_stop_the_market_is_through_is_refused_over_rest(http: httpx.Client, side: str, stop_price: int) -> None:
    before = order_count(http)
    body = {**LIMIT, "type": "stop", "side": side, "price": None, "stop_price": stop_price}
    refused = assert_problem(http.post("/v1/orders", json=body), 400, "BAD_REQUEST")
    assert "would trigger at once" in refused["detail"]
    assert ("ask 46202" if side == "buy" else "bid 46198") in field_errors(refused)["stop_price"]["message"]
    assert order_count(http) == before


async def test_a_stop_the_market_is_through_is_refused_over_the_socket(server: Server) -> None:
    body = {**LIMIT, "type": "stop", "price": None, "stop_price": 46202}
    error = ws_error(await ws_call(server, "order.place", body))
    assert [e["field"] for e in error["errors"]] == ["stop_price"] and "would trigger at once" in error["detail"]
    placed = await ws_call(server, "order.place", {**body, "stop_price": 46203})
    assert placed["type"] == "result" and placed["data"]["order"]["status"] == "open"


# fills through a gap


def test_resting_limits_fill_at_their_limit_when_the_market_gaps_through(tmp_path: Path) -> None:
    """The market opens after a restart far under a resting buy limit and a limit entry (as after a gap): each fills
    at its own price, not at the lower market; a stop it gaps through fills at the market."""
    data = tmp_path / "data"
    with run_server(data, ENV) as first, first.client(first.key) as http:
        key = first.key
        limit = http.post("/v1/orders", json={**LIMIT, "price": 46000})
        entry = {"exchange": "paper", "symbol": "BTC/USDT", "side": "long", "quantity": 0.1, "entry_price": 46100}
        position = http.post("/v1/positions", json=entry)
        stop = {**LIMIT, "symbol": "ETH/USDT", "side": "sell", "type": "stop", "price": None, "stop_price": 3400}
        stopped = http.post("/v1/orders", json=stop)
        assert [r.status_code for r in (limit, position, stopped)] == [201, 202, 201]
    gapped = {**ENV, "RT_PAPER_SYMBOLS": "BTC/USDT=45000,ETH/USDT=3000", "RT_PAPER_TICK_MS": "20"}
    with run_server(data, {**gapped, "RT_PAPER_VOLATILITY": "0"}) as second, second.client(key) as http:
        order_ids = [limit.json()["order"]["id"], stopped.json()["order"]["id"]]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            orders = [http.get(f"/v1/orders/{order_id}").json()["order"] for order_id in order_ids]
            if all(o["status"] == "filled" for o in orders):
                break
            time.sleep(0.05)
        assert [(o["status"], Decimal(str(o["average_price"]))) for o in orders] == [
            ("filled", Decimal(46000)),  # not the ask 45002 the market opened at
            ("filled", Decimal("2999.8")),  # a triggered stop is a market order: the bid, not 3400
        ]
        opened = http.get(f"/v1/positions/{position.json()['position']['id']}").json()["position"]
        assert (opened["status"], opened["entry_price"]) == ("open", 46100)
