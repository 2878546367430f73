"""Tradyn pending orders (/v1/api/orders): types 2-5 rest and fill under their ticket, prices the market is at are
refused, modify keeps the ticket, cancel, scopes, lots and symbols."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.compat._tradyn_rig import Tradyn, refused, tradyn

EURUSD = "EUR/USD"  # 1.085: bid 1.08495, ask 1.08505


async def place(t: Tradyn, **fields: Any) -> dict[str, Any]:
    order = {"symbol": "EURUSD", "type": 2, "volume": 0.10, "price": 1.0800, **fields}
    return dict(await t.data(await t.http.post("/api/orders", json=order)))


async def pending(t: Tradyn) -> list[dict[str, Any]]:
    return list(await t.data(await t.http.get("/api/orders")))


async def native(t: Tradyn, ticket: str) -> dict[str, Any]:
    response = await t.http.get(f"/positions/{ticket}")
    assert response.status_code == 200, response.text
    return dict(response.json()["position"])


@pytest.mark.parametrize(
    ("kind", "price", "near", "through", "side", "filled_at"),
    [
        (2, 1.0800, "1.0820", "1.0790", "long", 1.0800),  # Buy Limit: fills at its price when the ask comes down
        (3, 1.0900, "1.0880", "1.0910", "short", 1.0900),  # Sell Limit: when the bid comes up
        (4, 1.0900, "1.0880", "1.0910", "long", 1.09105),  # Buy Stop: at the market once the ask breaks through
        (5, 1.0800, "1.0820", "1.0790", "short", 1.07895),  # Sell Stop: at the market once the bid does
    ],
)
async def test_each_pending_type_rests_then_fills_under_its_ticket(
    tmp_path: Path, kind: int, price: float, near: str, through: str, side: str, filled_at: float
) -> None:
    async with tradyn(tmp_path) as t:
        order = await place(t, type=kind, price=price, sl=None, tp=0)
        ticket = order["ticket"]
        assert ticket.startswith("pos_")
        assert (order["symbol"], order["type"], order["volume"], order["price"]) == ("EURUSD", kind, 0.1, price)
        assert (order["state"], order["sl"], order["tp"]) == ("placed", 0, 0)
        assert [o["ticket"] for o in await pending(t)] == [ticket]
        assert (await native(t, ticket))["status"] == "pending"

        t.set_price(EURUSD, near)
        await t.settle()
        assert [o["ticket"] for o in await pending(t)] == [ticket]

        t.set_price(EURUSD, through)
        await t.settle()
        assert await pending(t) == []
        done = await t.data(await t.http.get(f"/api/orders/{ticket}"))
        assert (done["ticket"], done["state"], done["type"]) == (ticket, "filled", kind)
        position = await native(t, ticket)
        assert (position["status"], position["side"], position["quantity"]) == ("open", side, 10000)
        assert position["entry_price"] == filled_at


async def test_a_price_the_market_is_already_at_is_refused(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        quote = await t.data(await t.http.get("/api/quote/EURUSD"))
        ask, bid = quote["ask"], quote["bid"]
        for kind, price in ((4, ask), (4, 1.0800), (5, bid), (2, ask), (3, bid), (3, 1.0800)):
            body = refused(
                await t.http.post(
                    "/api/orders", json={"symbol": "EURUSD", "type": kind, "volume": 0.1, "price": price}
                ),
                400,
            )
            assert body["errors"][0]["field"] == "price", body
        assert (
            "above the ask"
            in refused(
                await t.http.post("/api/orders", json={"symbol": "EURUSD", "type": 4, "volume": 0.1, "price": 1.085}),
                400,
            )["error"]
        )
        assert await pending(t) == []
        positions = (await t.http.get("/positions", params={"status": "all"})).json()["positions"]
        assert positions == []


async def test_modify_moves_the_price_and_keeps_the_ticket(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        ticket = (await place(t, price=1.0800, sl=1.0700))["ticket"]
        moved = await t.data(await t.http.put(f"/api/orders/{ticket}", json={"price": 1.0820}))
        assert (moved["ticket"], moved["price"], moved["sl"], moved["state"]) == (ticket, 1.082, 1.07, "placed")
        assert [(o["ticket"], o["price"]) for o in await pending(t)] == [(ticket, 1.082)]

        protected = await t.data(await t.http.put(f"/api/orders/{ticket}", json={"sl": 1.0750, "tp": 1.0950}))
        assert (protected["price"], protected["sl"], protected["tp"]) == (1.082, 1.075, 1.095)
        cleared = await t.data(await t.http.put(f"/api/orders/{ticket}", json={"tp": 0}))
        assert (cleared["sl"], cleared["tp"]) == (1.075, 0)

        refused(await t.http.put(f"/api/orders/{ticket}", json={"price": 1.0900}), 400)  # a buy limit above the ask
        body = refused(await t.http.put(f"/api/orders/{ticket}", json={"sl": 1.0830}), 400)  # sl above the entry
        assert body["errors"][0]["field"] == "sl"

        t.set_price(EURUSD, "1.0815")  # ask 1.0816: through 1.0820, not through the old 1.0800
        await t.settle()
        assert await pending(t) == []
        position = await native(t, ticket)
        assert (position["status"], position["entry_price"], position["stop_loss"]) == ("open", 1.082, 1.075)
        assert position["take_profit"] is None
        refused(await t.http.put(f"/api/orders/{ticket}", json={"price": 1.0810}), 400)  # filled: no longer pending


async def test_cancel(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        ticket = (await place(t, type=3, price=1.0900))["ticket"]
        canceled = await t.data(await t.http.delete(f"/api/orders/{ticket}"))
        assert (canceled["ticket"], canceled["state"]) == (ticket, "canceled")
        assert await pending(t) == []
        t.set_price(EURUSD, "1.0950")
        await t.settle()
        assert (await native(t, ticket))["status"] == "canceled"
        assert (await t.data(await t.http.get(f"/api/orders/{ticket}")))["state"] == "canceled"
        refused(await t.http.delete(f"/api/orders/{ticket}"), 400)
        refused(await t.http.delete("/api/orders/pos_nothing"), 404)
        refused(await t.http.get("/api/orders/pos_nothing"), 404)


async def test_market_orders_belong_to_the_trade_route(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        for kind in (0, 1, "buy"):
            body = refused(
                await t.http.post("/api/orders", json={"symbol": "EURUSD", "type": kind, "volume": 0.1, "price": 1.08}),
                400,
            )
            assert "/v1/api/trade" in body["error"]
        refused(
            await t.http.post("/api/orders", json={"symbol": "EURUSD", "type": 6, "volume": 0.1, "price": 1.08}), 400
        )
        assert (await place(t, type="BUY_LIMIT"))["type"] == 2
        assert (await place(t, type="order_type_sell_stop"))["type"] == 5


async def test_scopes(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        ticket = (await place(t))["ticket"]
        assert [o["ticket"] for o in await t.data(await t.reader.get("/api/orders"))] == [ticket]
        order = {"symbol": "EURUSD", "type": 2, "volume": 0.1, "price": 1.08}
        refused(await t.reader.post("/api/orders", json=order), 403)
        refused(await t.reader.put(f"/api/orders/{ticket}", json={"price": 1.079}), 403)
        refused(await t.reader.delete(f"/api/orders/{ticket}"), 403)
        await t.data(await t.trader.post("/api/orders", json=order))  # trade-only writes orders ...
        refused(await t.trader.get("/api/orders"), 403)  # ... and reads none
        anonymous = await t.http.get("/api/orders", headers={"Authorization": ""})
        assert refused(anonymous, 401)["error"] == "Missing authorization header"
        wrong = await t.http.get("/api/orders", headers={"Authorization": "Bearer rt_live_" + "x" * 32})
        assert refused(wrong, 403)["error"] == "Invalid API key"
        assert len(await pending(t)) == 2


async def test_placing_or_moving_an_order_needs_positions_write_as_opening_a_position_does(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        ticket = (await place(t))["ticket"]
        key = await t.runtime.keys.create(t.account_id, "orders:read,orders:write,market:read", "pro_plus")
        headers = {"Authorization": f"Bearer {key.key}"}
        order = {"symbol": "EURUSD", "type": 2, "volume": 0.1, "price": 1.08}
        placed = await t.http.post("/api/orders", json=order, headers=headers)
        assert refused(placed, 403)["code"] == "INSUFFICIENT_SCOPE"
        for change in ({"price": 1.079}, {"sl": 1.07}):
            moved = await t.http.put(f"/api/orders/{ticket}", json=change, headers=headers)
            assert refused(moved, 403)["code"] == "INSUFFICIENT_SCOPE"
        [kept] = await pending(t)
        assert (kept["ticket"], kept["price"], kept["sl"]) == (ticket, 1.08, 0)
        canceled = await t.data(await t.http.delete(f"/api/orders/{ticket}", headers=headers))  # as DELETE /v1/orders
        assert canceled["state"] == "canceled"


async def test_volumes_are_lots_and_symbols_mt_names(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        cable = await place(t, symbol="gbpusd", type=2, volume=0.15, price=1.2600)
        assert (cable["symbol"], cable["volume"]) == ("GBPUSD", 0.15)
        assert (await native(t, cable["ticket"]))["quantity"] == 15000
        btc = await place(t, symbol="BTC/USDT", type=3, volume=0.3, price=66000)
        assert (btc["symbol"], btc["volume"]) == ("BTCUSDT", 0.3)
        assert (await native(t, btc["ticket"]))["quantity"] == 0.3
        assert {o["symbol"] for o in await pending(t)} == {"GBPUSD", "BTCUSDT"}
        only = await t.data(await t.http.get("/api/orders", params={"symbol": "BTCUSDT"}))
        assert [o["ticket"] for o in only] == [btc["ticket"]]

        def order(**fields: Any) -> dict[str, Any]:
            return {"symbol": "EURUSD", "type": 2, "volume": 0.1, "price": 1.08, **fields}

        assert (
            refused(await t.http.post("/api/orders", json=order(volume=0.015)), 400)["errors"][0]["field"] == "volume"
        )
        refused(await t.http.post("/api/orders", json=order(volume=0)), 400)
        assert "XAUUSD" in refused(await t.http.post("/api/orders", json=order(symbol="XAUUSD")), 400)["error"]
        off_step = refused(await t.http.post("/api/orders", json=order(price=1.080001)), 400)
        assert off_step["errors"][0]["field"] == "price"
        refused(await t.http.post("/api/orders", json=order(expiration=1893456000)), 400)
        refused(await t.http.post("/api/orders", json=order(stoplimit=1.08)), 400)
        kept = await t.data(await t.http.post("/api/orders", json=order(magic=7, comment="grid 1", sl="0", tp=0.0)))
        assert (kept["comment"], kept["sl"], kept["tp"]) == ("grid 1", 0, 0)
        assert len(await pending(t)) == 3


async def test_an_order_is_placed_once_per_idempotency_key(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        body = {"symbol": "EURUSD", "type": 2, "volume": 0.1, "price": 1.08}
        headers = {"Idempotency-Key": "order-1"}
        first = await t.data(await t.http.post("/api/orders", json=body, headers=headers))
        again = await t.data(await t.http.post("/api/orders", json=body, headers=headers))
        assert first["ticket"] == again["ticket"]
        assert len(await pending(t)) == 1


async def test_cerberus_refuses_an_order_over_the_envelope(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        envelope = {
            "max_position_size": 5000,
            "max_exposure": 3,
            "max_daily_loss": 5000,
            "max_concurrent_positions": 10,
        }
        assert (await t.http.put("/risk/envelope", json=envelope)).status_code == 200
        body = refused(
            await t.http.post("/api/orders", json={"symbol": "EURUSD", "type": 2, "volume": 0.1, "price": 1.08}), 400
        )
        assert body["code"] == "VALIDATION_FAILED"
        assert await pending(t) == []


async def test_another_accounts_ticket_is_not_found(tmp_path: Path) -> None:
    async with tradyn(tmp_path) as t:
        ticket = (await place(t))["ticket"]
        stranger = await t.runtime.keys.create((await t.runtime.keys.create_account("other")).id, "full", "pro_plus")
        headers = {"Authorization": f"Bearer {stranger.key}"}
        for method in ("GET", "DELETE"):
            refused(await t.http.request(method, f"/api/orders/{ticket}", headers=headers), 404)
        refused(await t.http.put(f"/api/orders/{ticket}", json={"price": 1.079}, headers=headers), 404)
        assert [o["ticket"] for o in await pending(t)] == [ticket]
