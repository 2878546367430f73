"""The Tradyn dialect's account, positions and trade endpoints over the engine: the seed's quick start as written,
lots on the books as units, SL/TP, closes, history, the envelope's statuses, scopes and idempotent retries."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from rt.app import create_app
from rt.config import Settings
from rt.exchanges import ExchangeUnavailable, Ticker
from rt.runtime import Runtime

PRICES = ("EUR/USD=1.0870", "BTC/USDT=65000")
BASE_URL = "http://127.0.0.1:8080/v1"  # the seed's
SEED_TRADE = {"symbol": "EURUSD", "action": "buy", "volume": 0.10, "sl": 1.0800, "tp": 1.0950}


@dataclass
class Rig:
    runtime: Runtime
    http: httpx.AsyncClient  # the seed's client: base URL .../v1, a full key as Bearer
    keys: dict[str, str]  # preset -> key
    key_ids: dict[str, str]  # preset -> key id
    transport: httpx.ASGITransport

    def client(self, headers: dict[str, str]) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport, base_url=BASE_URL, headers=headers)

    async def data(self, response: httpx.Response) -> Any:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True, body
        return body["data"]

    async def trade(self, **fields: Any) -> dict[str, Any]:
        data: dict[str, Any] = await self.data(await self.http.post("/api/trade", json={**SEED_TRADE, **fields}))
        return data

    async def native(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """rt's own API, with the same full key."""
        async with self.client({"X-API-Key": self.keys["full"]}) as native:
            return await native.request(method, path.removeprefix("/v1"), **kwargs)


def refused(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["success"] is False and body["code"] == code, body
    error: str = body["error"]
    return error


@contextlib.asynccontextmanager
async def rig(data_dir: Path) -> AsyncIterator[Rig]:
    app = create_app(
        Settings(data_dir=str(data_dir), bootstrap=False, paper_tick_ms=0, paper_seed=1, paper_symbols=PRICES)
    )
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        account = await runtime.keys.create_account("terminal")
        presets = ("full", "read-only", "trade-only")
        issued = {p: await runtime.keys.create(account.id, p, "pro_plus") for p in presets}
        keys = {p: key.key for p, key in issued.items()}
        ids = {p: key.record.id for p, key in issued.items()}
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
        headers = {"Authorization": f"Bearer {keys['full']}"}
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers) as http:
            yield Rig(runtime, http, keys, ids, transport)


@pytest.fixture
async def t(tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig(tmp_path) as made:
        yield made


async def test_the_seeds_quick_start_runs_as_written(t: Rig) -> None:
    account = (await t.http.get("/api/account")).json()
    assert account["data"]["balance"] == 100000 and account["data"]["equity"] == 100000
    assert (await t.http.get("/api/positions")).json() == {"success": True, "data": []}

    order = (await t.http.post("/api/trade", json=SEED_TRADE)).json()
    line = f"Filled ticket #{order['data']['ticket']} @ {order['data']['price']}"
    assert line.startswith("Filled ticket #pos_") and " @ 1.087" in line
    assert order["data"]["symbol"] == "EURUSD" and order["data"]["type"] == "buy" and order["data"]["volume"] == 0.1
    assert (order["data"]["sl"], order["data"]["tp"]) == (1.08, 1.095)


async def test_a_trade_in_lots_is_a_position_of_units_with_its_true_notional(t: Rig) -> None:
    filled = await t.trade()
    native = (await t.native("GET", f"/v1/positions/{filled['ticket']}")).json()["position"]
    assert Decimal(str(native["quantity"])) == 10_000  # 0.10 lot of EUR/USD
    assert native["symbol"] == "EUR/USD" and native["side"] == "long"
    assert (native["stop_loss"], native["take_profit"]) == (1.08, 1.095)
    account = await t.data(await t.http.get("/api/account"))
    assert account["margin"] == pytest.approx(10_000 * filled["price"])  # leverage 1: margin = units x price
    assert account["positions"] == 1

    sold = await t.trade(symbol="BTCUSDT", action=None, type=1, volume=0.25, sl=0.0, tp="0", comment="hedge", magic=7)
    native = (await t.native("GET", f"/v1/positions/{sold['ticket']}")).json()["position"]
    assert (native["symbol"], native["side"], native["quantity"]) == ("BTC/USDT", "short", 0.25)
    assert (sold["type"], sold["volume"], sold["sl"], sold["tp"]) == ("sell", 0.25, 0, 0)  # 0: no stop
    assert sold["comment"] == "hedge"


async def test_cerberus_judges_the_units_notional(t: Rig) -> None:
    # 1 lot of EUR/USD is ~108,700 of notional: over the default max position size of 25,000.
    error = refused(await t.http.post("/api/trade", json={**SEED_TRADE, "volume": 1}), 400, "VALIDATION_FAILED")
    assert error == "Exceeds max position size"
    envelope = {"max_position_size": 10**9, "max_exposure": 100, "max_daily_loss": 5000, "max_concurrent_positions": 20}
    assert (await t.native("PUT", "/v1/risk/envelope", json=envelope)).status_code == 200
    error = refused(await t.http.post("/api/trade", json={**SEED_TRADE, "volume": 1}), 400, "VALIDATION_FAILED")
    assert error == "Insufficient margin"  # 108,700 of margin at leverage 1 over 100,000 of equity
    assert await t.data(await t.http.get("/api/positions")) == []


async def test_open_positions_are_listed_with_the_terminals_fields(t: Rig) -> None:
    filled = await t.trade()
    await t.trade(symbol="BTCUSDT", action="sell", volume=0.01, sl=None, tp=None)
    t.runtime.feed.set_price("EUR/USD", Decimal("1.0920"))
    listed = await t.data(await t.http.get("/api/positions"))
    assert {p["symbol"] for p in listed} == {"EURUSD", "BTCUSDT"}
    eur = next(p for p in listed if p["symbol"] == "EURUSD")
    assert eur["ticket"] == filled["ticket"] and eur["type"] == "buy" and eur["volume"] == 0.1
    assert eur["open_price"] == filled["price"] and (eur["sl"], eur["tp"], eur["swap"]) == (1.08, 1.095, 0)
    assert eur["current_price"] > filled["price"]
    assert eur["profit"] == pytest.approx((eur["current_price"] - filled["price"]) * 10_000)
    assert isinstance(eur["open_time"], str)
    one = await t.data(await t.http.get(f"/api/positions/{filled['ticket']}"))
    assert one["ticket"] == filled["ticket"] and one["volume"] == 0.1
    only = await t.data(await t.http.get("/api/positions", params={"symbol": "BTCUSDT"}))
    assert [p["symbol"] for p in only] == ["BTCUSDT"]


async def test_modify_changes_stop_loss_and_take_profit_and_zero_removes_one(t: Rig) -> None:
    ticket = (await t.trade())["ticket"]
    moved = await t.data(await t.http.put(f"/api/positions/{ticket}", json={"sl": 1.0810}))
    assert (moved["sl"], moved["tp"]) == (1.081, 1.095)  # tp absent: kept
    moved = await t.data(await t.http.put(f"/api/positions/{ticket}", json={"tp": 0}))
    assert (moved["sl"], moved["tp"]) == (1.081, 0)
    native = (await t.native("GET", f"/v1/positions/{ticket}")).json()["position"]
    assert (native["stop_loss"], native["take_profit"]) == (1.081, None)
    wrong = await t.http.put(f"/api/positions/{ticket}", json={"sl": 1.2})  # a stop loss above a long's price
    refused(wrong, 400, "BAD_REQUEST")
    refused(await t.http.put(f"/api/positions/{ticket}", json={}), 400, "BAD_REQUEST")
    refused(await t.http.put("/api/positions/pos_nothere", json={"sl": 1.0}), 404, "NOT_FOUND")


async def test_a_close_closes_the_whole_position_and_history_shows_the_deal(t: Rig) -> None:
    filled = await t.trade()
    ticket = filled["ticket"]
    partial = await t.http.request("DELETE", f"/api/positions/{ticket}", json={"volume": 0.05})
    assert "partial close" in refused(partial, 400, "BAD_REQUEST")
    assert len(await t.data(await t.http.get("/api/positions"))) == 1  # refused: nothing closed

    t.runtime.feed.set_price("EUR/USD", Decimal("1.0900"))
    closed = await t.data(await t.http.delete(f"/api/positions/{ticket}", params={"volume": "0.10"}))
    assert closed["ticket"] == ticket and closed["status"] == "closed" and closed["close_price"] < 1.0900
    refused(await t.http.delete(f"/api/positions/{ticket}"), 400, "POSITION_NOT_OPEN")
    assert await t.data(await t.http.get("/api/positions")) == []

    history = await t.data(await t.http.get("/api/account/history"))
    assert history["total"] == 1 and history["page"] == 1
    [deal] = history["deals"]
    assert deal["ticket"] == ticket and deal["symbol"] == "EURUSD" and deal["type"] == "buy" and deal["volume"] == 0.1
    assert deal["open_price"] == filled["price"] and deal["close_price"] == closed["close_price"]
    assert deal["profit"] == closed["profit"] and deal["profit"] > 0 and deal["close_time"] is not None
    account = await t.data(await t.http.get("/api/account"))
    assert account["balance"] == pytest.approx(100_000 + account["realized_profit"])
    assert (await t.data(await t.http.get("/api/account/history", params={"symbol": "BTCUSDT"})))["deals"] == []


async def test_close_all_closes_every_open_position_and_leaves_trading_open(t: Rig) -> None:
    await t.trade()
    await t.trade(symbol="BTCUSDT", volume=0.01, sl=None, tp=None)
    answer = await t.data(await t.http.post("/api/positions/close-all"))
    assert answer == {"closed": 2, "failed": 0}
    assert await t.data(await t.http.get("/api/positions")) == []
    account = await t.data(await t.http.get("/api/account"))
    assert account["trade_allowed"] is True and account["trading_state"] == "active"
    await t.trade()  # not a lock
    history = "/api/account/history"
    first = await t.data(await t.http.get(history, params={"limit": 1, "page": 1}))
    second = await t.data(await t.http.get(history, params={"limit": 1, "page": 2}))
    assert first["total"] == second["total"] == 2 and len(first["deals"]) == len(second["deals"]) == 1
    assert {first["deals"][0]["symbol"], second["deals"][0]["symbol"]} == {"EURUSD", "BTCUSDT"}
    assert first["deals"][0]["comment"] == second["deals"][0]["comment"] == "manual"


async def test_close_all_is_no_kill_switch_only_the_closes_events_go_out(t: Rig) -> None:
    tickets = {(await t.trade())["ticket"], (await t.trade(symbol="BTCUSDT", volume=0.01, sl=None, tp=None))["ticket"]}
    assert await t.data(await t.http.post("/api/positions/close-all")) == {"closed": 2, "failed": 0}
    account_id = (await t.data(await t.http.get("/api/account")))["account_id"]
    bus = t.runtime.bus
    risk = await bus.history(account_id, "risk", 0)
    assert risk is not None and "emergency.kill_triggered" not in [d.event.event for d in risk]
    positions = await bus.history(account_id, "positions", 0)
    assert positions is not None
    closed = [d.event.data for d in positions if d.event.event == "position.closed"]
    assert {c["id"] for c in closed} == tickets and {c["reason"] for c in closed} == {"manual"}
    for ticket in tickets:
        assert (await t.data(await t.http.get(f"/api/positions/{ticket}")))["status"] == "closed"


async def test_another_accounts_ticket_is_not_found(t: Rig) -> None:
    ticket = (await t.trade())["ticket"]
    other = await t.runtime.keys.create_account("someone else")
    key = (await t.runtime.keys.create(other.id, "full", "pro_plus")).key
    async with t.client({"Authorization": f"Bearer {key}"}) as stranger:
        refused(await stranger.get(f"/api/positions/{ticket}"), 404, "NOT_FOUND")
        refused(await stranger.put(f"/api/positions/{ticket}", json={"sl": 1.07}), 404, "NOT_FOUND")
        refused(await stranger.delete(f"/api/positions/{ticket}"), 404, "NOT_FOUND")
        assert await t.data(await stranger.get("/api/positions")) == []
        assert (await t.data(await stranger.post("/api/positions/close-all")))["closed"] == 0
    assert [p["ticket"] for p in await t.data(await t.http.get("/api/positions"))] == [ticket]


async def test_the_envelope_and_the_seeds_statuses(t: Rig) -> None:
    async with t.client({}) as anonymous:
        assert refused(await anonymous.get("/api/account"), 401, "API_KEY_MISSING") == "Missing authorization header"
    async with t.client({"Authorization": "Bearer tk_live_a1b2c3d4e5f6"}) as stranger:
        assert refused(await stranger.get("/api/account"), 403, "API_KEY_INVALID") == "Invalid API key"
    refused(await t.http.get("/api/positions/pos_nothere"), 404, "NOT_FOUND")
    refused(await t.http.get("/api/no/such/thing"), 404, "NOT_FOUND")
    refused(await t.http.post("/api/nothing", json={}), 404, "NOT_FOUND")
    refused(await t.http.delete("/api/account"), 404, "NOT_FOUND")  # a method the path does not have
    assert (await t.http.get("/api/account")).status_code == 200
    for volume in (0.001, 0, -1, "lots"):
        refused(await t.http.post("/api/trade", json={**SEED_TRADE, "volume": volume}), 400, "BAD_REQUEST")
    refused(await t.http.post("/api/trade", json={**SEED_TRADE, "symbol": "XAUUSD"}), 400, "BAD_REQUEST")
    refused(await t.http.post("/api/trade", json={**SEED_TRADE, "type": 2}), 400, "BAD_REQUEST")
    refused(await t.http.post("/api/trade", json={**SEED_TRADE, "type": 1}), 400, "BAD_REQUEST")  # action buy
    refused(await t.http.post("/api/trade", content=b"{not json"), 400, "BAD_REQUEST")
    assert await t.data(await t.http.get("/api/positions")) == []


async def test_x_api_key_and_a_bare_authorization_work_and_a_revoked_key_is_a_403(t: Rig) -> None:
    async with t.client({"X-API-Key": t.keys["read-only"]}) as reader:
        assert (await t.data(await reader.get("/api/account")))["balance"] == 100000
    async with t.client({"Authorization": t.keys["read-only"]}) as bare:  # no scheme, as MQL bridges send it
        assert (await t.data(await bare.get("/api/account")))["balance"] == 100000
    async with t.client({"Authorization": f"Basic {t.keys['read-only']}"}) as basic:
        refused(await basic.get("/api/account"), 401, "API_KEY_MISSING")
    assert (await t.native("DELETE", f"/v1/keys/{t.key_ids['read-only']}")).status_code == 200
    async with t.client({"Authorization": f"Bearer {t.keys['read-only']}"}) as gone:
        assert refused(await gone.get("/api/account"), 403, "API_KEY_REVOKED") == "Invalid API key"


async def test_scopes_are_those_of_the_native_routes(t: Rig) -> None:
    async with t.client({"Authorization": f"Bearer {t.keys['read-only']}"}) as reader:
        assert await t.data(await reader.get("/api/positions")) == []
        refused(await reader.post("/api/trade", json=SEED_TRADE), 403, "INSUFFICIENT_SCOPE")
        refused(await reader.post("/api/positions/close-all"), 403, "INSUFFICIENT_SCOPE")
    async with t.client({"Authorization": f"Bearer {t.keys['trade-only']}"}) as trader:
        ticket = (await t.data(await trader.post("/api/trade", json=SEED_TRADE)))["ticket"]
        refused(await trader.get("/api/account"), 403, "INSUFFICIENT_SCOPE")
        refused(await trader.get("/api/positions"), 403, "INSUFFICIENT_SCOPE")
        assert (await t.data(await trader.delete(f"/api/positions/{ticket}")))["status"] == "closed"


async def test_a_retry_with_the_same_idempotency_key_trades_once(t: Rig) -> None:
    headers = {"Idempotency-Key": "tradyn-1"}
    first = await t.http.post("/api/trade", json=SEED_TRADE, headers=headers)
    again = await t.http.post("/api/trade", json=SEED_TRADE, headers=headers)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(await t.data(await t.http.get("/api/positions"))) == 1
    other = await t.http.post("/api/trade", json={**SEED_TRADE, "volume": 0.2}, headers=headers)
    assert refused(other, 400, "IDEMPOTENCY_CONFLICT")


async def test_a_locked_account_and_a_venue_down_answer_as_the_seed_says(
    t: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await t.native("POST", "/v1/risk/kill", json={"action": "LOCK"})).status_code == 200
    error = refused(await t.http.post("/api/trade", json=SEED_TRADE), 403, "TRADING_LOCKED")
    assert error == "Trading is locked"
    assert (await t.data(await t.http.get("/api/account")))["trade_allowed"] is False
    assert (await t.native("POST", "/v1/risk/kill", json={"action": "UNLOCK"})).status_code == 200

    async def down(symbol: str) -> Ticker:
        raise ExchangeUnavailable("paper is not connected")

    monkeypatch.setattr(t.runtime.engine.venues.paper, "ticker", down)
    error = refused(await t.http.post("/api/trade", json=SEED_TRADE), 503, "EXCHANGE_UNAVAILABLE")
    assert error == "Not connected to trading server"
