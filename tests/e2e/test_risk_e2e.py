"""End to end against `rt serve`: money and limits are bounded on the way in, and positions keep their last mark
across a restart."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from rt.config import Settings
from rt.runtime import open_runtime
from tests.e2e.checks import assert_problem
from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e

STILL = {
    "RT_PAPER_TICK_MS": "0",
    "RT_PAPER_SYMBOLS": "BTC/USDT=46200,ETH/USDT=3500",
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
    "RT_LOCKOUT_THRESHOLD": "100000",
}
ENVELOPE = {"max_position_size": 1000, "max_exposure": 0.5, "max_daily_loss": 500, "max_concurrent_positions": 2}
UNBOUNDED = ["1e-999999", "1e999999", "NaN", "Infinity", -5, 0, "0.0000000000001", "1_0", " 5", "\u0665", "5\n"]


def new_key(server: Server) -> str:
    async def make() -> str:
        async with open_runtime(Settings.from_env({"RT_DATA_DIR": str(server.data_dir)})) as runtime:
            account = await runtime.keys.create_account(f"r-{uuid.uuid4().hex[:10]}", actor="tests")
            issued = await runtime.keys.create(account.id, "full", "pro_plus", name="e2e", actor="tests")
            return issued.key

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("risk") / "data", STILL) as running:
        yield running


@pytest.mark.parametrize("name", ["max_position_size", "max_exposure", "max_daily_loss"])
def test_an_unbounded_limit_is_400_and_the_envelope_keeps_working(server: Server, name: str) -> None:
    with server.client(new_key(server)) as http:
        ok(http.put("/v1/risk/envelope", json=ENVELOPE))
        for value in UNBOUNDED:
            body = assert_problem(http.put("/v1/risk/envelope", json={**ENVELOPE, name: value}), 400, "BAD_REQUEST")
            assert [e["field"] for e in body["errors"]] == [name], body
        # A number too large for a double is refused by the JSON parser, a tiny one reads as 0: both 400.
        others = ", ".join(f'"{k}": {json.dumps(v)}' for k, v in ENVELOPE.items() if k != name)
        for raw in ("1e999999", "1e-999999"):
            sent = http.put(
                "/v1/risk/envelope",
                content="{" + others + f', "{name}": {raw}' + "}",
                headers={"Content-Type": "application/json"},
            )
            assert_problem(sent, 400, "BAD_REQUEST")
        risk = ok(http.get("/v1/risk/envelope"))
        assert risk["envelope"] == ENVELOPE


@pytest.mark.parametrize("name", ["quantity", "price", "stop_loss", "take_profit"])
def test_an_unbounded_order_amount_is_400(server: Server, name: str) -> None:
    order = {"symbol": "ETH/USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 3000}
    with server.client(new_key(server)) as http:
        for value in UNBOUNDED:
            body = assert_problem(http.post("/v1/orders", json={**order, name: value}), 400, "BAD_REQUEST")
            assert [e["field"] for e in body["errors"]] == [name], body
        assert ok(http.get("/v1/orders", params={"status": "all"}))["total"] == 0


def test_positions_show_their_last_mark_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    moving = {**STILL, "RT_PAPER_TICK_MS": "20", "RT_PAPER_VOLATILITY": "0.01", "RT_PAPER_SEED": "7"}
    with run_server(data, moving) as first:
        key = new_key(first)
        with first.client(key) as http:
            opened = ok(http.post("/v1/positions", json={"symbol": "ETH/USDT", "side": "long", "quantity": 0.01}), 201)
            entry = Decimal(str(opened["position"]["entry_price"]))
            deadline = time.monotonic() + 10
            while Decimal(str(ok(http.get("/v1/positions"))["positions"][0]["current_price"])) == entry:
                assert time.monotonic() < deadline, "the price never moved"
                time.sleep(0.05)
    # Stopped: the last mark was stored on the way down. The still market below never marks it again.
    with run_server(data, STILL) as second, second.client(key) as http:
        (position,) = ok(http.get("/v1/positions"))["positions"]
        last_mark = Decimal(str(position["current_price"]))
        assert last_mark not in (entry, Decimal(3500))
        assert Decimal(str(position["unrealized_pnl"])) == pytest.approx((last_mark - entry) * Decimal("0.01"))
