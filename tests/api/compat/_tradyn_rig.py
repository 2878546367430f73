"""An in-process rt on a still paper market with EUR/USD, GBP/USD, USD/JPY and BTC/USDT, and Tradyn clients holding
keys of several scopes (Authorization: Bearer, as the seed sends them)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from rt.app import create_app
from rt.config import Settings
from rt.exchanges import Ticker
from rt.runtime import Runtime

PRICES = ("EUR/USD=1.085", "GBP/USD=1.27", "USD/JPY=150", "BTC/USDT=65000")


@dataclass
class Tradyn:
    runtime: Runtime
    http: httpx.AsyncClient  # a full key
    reader: httpx.AsyncClient  # read-only
    trader: httpx.AsyncClient  # trade-only: writes orders and reads the market, reads no orders
    account_id: str

    def set_price(self, symbol: str, price: str) -> Ticker:
        return self.runtime.feed.set_price(symbol, Decimal(price))

    async def settle(self) -> None:
        """Let the fills a tick started be booked."""
        engine = self.runtime.engine
        for _ in range(100):
            pending = [*engine.venues.paper._pending, *engine._tasks]
            if not pending:
                return
            await asyncio.gather(*pending, return_exceptions=True)
        raise AssertionError("the engine kept spawning work")

    async def data(self, response: httpx.Response, status: int = 200) -> Any:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["success"] is True, body
        return body["data"]


def refused(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = dict(response.json())
    assert body["success"] is False and isinstance(body["error"], str), body
    return body


@contextlib.asynccontextmanager
async def tradyn(data_dir: Path, **settings: Any) -> AsyncIterator[Tradyn]:
    app = create_app(
        Settings(
            data_dir=str(data_dir), bootstrap=False, paper_tick_ms=0, paper_seed=1, paper_symbols=PRICES, **settings
        )
    )
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        account = await runtime.keys.create_account("terminal")
        keys = [await runtime.keys.create(account.id, preset, "pro_plus") for preset in ("full", "read-only")]
        keys.append(await runtime.keys.create(account.id, "trade-only", "pro_plus"))
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))

        def client(key: str) -> httpx.AsyncClient:
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080/v1", headers=headers)

        async with client(keys[0].key) as http, client(keys[1].key) as reader, client(keys[2].key) as trader:
            yield Tradyn(runtime, http, reader, trader, account.id)
