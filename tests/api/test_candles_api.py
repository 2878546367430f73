"""GET /v1/markets/{symbol}/candles on the in-process app: the bars' shape, the simulated market's prices and fills in
them, refusals and the scope."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from rt.app import create_app
from rt.runtime import Runtime
from tests.crash import settings

URL = "/v1/markets/ETH%2FUSDT/candles"


@dataclass
class Served:
    http: httpx.AsyncClient
    runtime: Runtime
    headers: dict[str, str]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    app = create_app(settings(tmp_path))
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        account = await runtime.keys.create_account("charts")
        key = await runtime.keys.create(account.id, "full", "pro_plus")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rt.test") as http:
            yield Served(http, runtime, {"X-API-Key": key.key})


async def bars(served: Served, url: str = URL, **params: Any) -> list[dict[str, Any]]:
    answer = await served.http.get(url, params=params, headers=served.headers)
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["candles"]
    return found


def problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = answer.json()
    assert body["code"] == code, body
    return body


async def test_a_fresh_server_answers_the_current_open_bar_at_the_market_price(served: Served) -> None:
    answer = await served.http.get(URL, headers=served.headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["symbol"] == "ETH/USDT" and body["timeframe"] == "1m"
    (bar,) = body["candles"]
    assert set(bar) == {"time", "open", "high", "low", "close", "volume"}
    opened = datetime.fromisoformat(bar["time"].replace("Z", "+00:00"))
    assert bar["time"].endswith("Z") and opened.second == 0 and opened.microsecond == 0
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]) == (3500, 3500, 3500, 3500, 0)
    for timeframe in ("5m", "15m", "30m", "1h", "4h", "1d"):
        assert len(await bars(served, timeframe=timeframe)) == 1


async def test_ticks_move_the_open_bar_and_fills_are_its_volume(served: Served) -> None:
    feed = served.runtime.feed
    for price in ("3510", "3490", "3502"):
        feed.set_price("ETH/USDT", Decimal(price))
    order = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 0.25}
    placed = await served.http.post("/v1/orders", json=order, headers=served.headers)
    assert placed.status_code == 201, placed.text

    for _ in range(200):  # the fill reaches the bars through the bus
        bar = (await bars(served, limit=1))[-1]
        if bar["volume"]:
            break
        await asyncio.sleep(0.01)
    if bar["open"] == 3500:  # no minute boundary passed during the test: every tick is in this bar
        assert (bar["high"], bar["low"], bar["close"]) == (3510, 3490, 3502)
    assert bar["close"] == 3502 and bar["volume"] == 0.25
    hour = (await bars(served, timeframe="1h"))[-1]
    assert hour["close"] == 3502 and hour["volume"] == 0.25 and hour["high"] >= 3510 and hour["low"] <= 3490


async def test_since_and_limit(served: Served) -> None:
    (bar,) = await bars(served)
    opened = datetime.fromisoformat(bar["time"].replace("Z", "+00:00"))
    ms = int(opened.timestamp() * 1000)
    assert [b["time"] for b in await bars(served, since=ms, limit=5)] == [bar["time"]]
    assert await bars(served, since=ms + 86_400_000) == []
    assert len(await bars(served, limit=1000)) >= 1


async def test_the_symbol_may_be_written_with_a_dash_and_answers_in_its_own_spelling(served: Served) -> None:
    answer = await served.http.get("/v1/markets/eth-usdt/candles", headers=served.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["symbol"] == "ETH/USDT"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"timeframe": "2m"}, "timeframe"),
        ({"timeframe": "M1"}, "timeframe"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"since": "-1"}, "since"),
        ({"since": "1e400"}, "since"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_parameters_are_400_naming_the_field(served: Served, params: dict[str, str], field: str) -> None:
    body = problem(await served.http.get(URL, params=params, headers=served.headers), 400, "BAD_REQUEST")
    assert [e["field"] for e in body["errors"]] == [field]


async def test_an_unknown_symbol_is_404_and_an_unknown_exchange_400(served: Served) -> None:
    problem(await served.http.get("/v1/markets/DOGE%2FUSDT/candles", headers=served.headers), 404, "NOT_FOUND")
    problem(await served.http.get("/v1/markets/%2F/candles", headers=served.headers), 404, "NOT_FOUND")
    answer = await served.http.get(URL, params={"exchange": "kraken"}, headers=served.headers)
    assert problem(answer, 400, "BAD_REQUEST")["errors"][0]["field"] == "exchange"


async def test_the_route_needs_a_key_with_market_read(served: Served) -> None:
    problem(await served.http.get(URL), 401, "API_KEY_MISSING")
    account = await served.runtime.keys.create_account("no-market")
    narrow = await served.runtime.keys.create(account.id, ["account:read", "orders:read"], "pro_plus")
    problem(await served.http.get(URL, headers={"X-API-Key": narrow.key}), 403, "INSUFFICIENT_SCOPE")
    reader = await served.runtime.keys.create(account.id, ["market:read"], "pro_plus")
    assert (await served.http.get(URL, headers={"X-API-Key": reader.key})).status_code == 200
    test_key = await served.runtime.keys.create(account.id, "read-only", "pro_plus", test=True)
    assert (await served.http.get(URL, headers={"X-API-Key": test_key.key})).status_code == 200
