"""Strategies through a real `rt serve`: grid prices and sizes on the market's steps, a grid out of its range."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson
import pytest
import websockets

from tests.e2e.server import Server, run_server
from tests.e2e.test_trading_e2e import ENV, Trader, listed, new_trader, ok, problem

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("strategies") / "data", ENV) as started:
        yield started


@pytest.fixture
def trader(server: Server) -> Iterator[Trader]:
    made = new_trader(server)
    with made.http:
        yield made


def grid(low: int, high: int, levels: int, quantity: str) -> dict[str, object]:
    return {
        "name": "g",
        "type": "grid",
        "symbol": "BTC/USDT",
        "config": {"grid_levels": levels, "price_range": [low, high], "quantity_per_level": quantity},
    }


def test_grid_orders_sit_on_the_price_and_amount_steps(trader: Trader) -> None:
    # BTC at 46,200 has a price step of 1 and an amount step of 0.0001; (48000 - 40000) / 9 is 888.88...
    created = ok(trader.http.post("/v1/strategies", json=grid(40000, 48000, 10, "0.00123456")), 201)["strategy"]
    orders = listed(trader.http, "orders", status="open")["orders"]
    assert sorted(o["price"] for o in orders) == [40000, 40889, 41778, 42667, 43556, 44444, 45333]
    assert {Decimal(str(o["quantity"])) for o in orders} == {Decimal("0.0012")}
    assert {o["strategy_id"] for o in orders} == {created["id"]}
    assert created["config"]["quantity_per_level"] == 0.00123456  # the config is kept as it was sent


def test_a_grid_above_or_below_the_price_waits_and_one_the_steps_cannot_hold_is_refused(trader: Trader) -> None:
    for low, high in ((50000, 60000), (30000, 40000)):
        created = ok(trader.http.post("/v1/strategies", json=grid(low, high, 5, "0.001")), 201)["strategy"]
        assert created["status"] == "active"
    assert listed(trader.http, "orders", status="open")["total"] == 0

    body = problem(trader.http.post("/v1/strategies", json=grid(46000, 46005, 11, "0.001")), 400, "BAD_REQUEST")
    assert [e["field"] for e in body["errors"]] == ["config.grid_levels"]
    body = problem(trader.http.post("/v1/strategies", json=grid(40000, 48000, 5, "0.00001")), 400, "BAD_REQUEST")
    assert [e["field"] for e in body["errors"]] == ["config.quantity_per_level"]
    assert ok(trader.http.get("/v1/strategies"))["total"] == 2  # nothing was kept of the refused ones


def test_strategy_commands_on_the_socket_answer_with_the_full_performance(server: Server, trader: Trader) -> None:
    created = ok(trader.http.post("/v1/strategies", json=grid(40000, 48000, 5, "0.001")), 201)["strategy"]
    token = ok(trader.http.post("/v1/ws/token"))["token"]

    async def stop() -> dict[str, Any]:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/v1/ws?token={token}") as ws:
            await ws.send(orjson.dumps({"op": "strategy.stop", "id": "s1", "params": {"strategy_id": created["id"]}}))
            while True:
                message = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
                for item in message if isinstance(message, list) else [message]:
                    if item.get("id") == "s1":
                        return dict(item)

    answer = asyncio.run(stop())
    assert answer["type"] == "result", answer
    strategy = answer["data"]["strategy"]
    assert strategy["status"] == "stopped"
    assert strategy["performance"] == {
        "realized_pnl": 0,
        "unrealized_pnl": 0,
        "total_pnl": 0,
        "win_rate": 0,
        "trades": 0,
    }
