"""How the Tradyn dialect refuses: in the terminal's words and field names, the same way on every route (a venue the
account lacks, fields the engine names otherwise, empty changes, unknown fields, booleans, unknown tickets, keys)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from rt.api.compat.tradyn._dialect import error_response
from rt.errors import BadRequest
from tests.api.compat._tradyn_rig import Tradyn, refused, tradyn

TRADE = {"symbol": "EURUSD", "action": "buy", "volume": 0.1}
ORDER = {"symbol": "EURUSD", "type": 2, "volume": 0.1, "price": 1.08}  # EUR/USD 1.085: a Buy Limit below the ask


@pytest.fixture
async def t(tmp_path: Path) -> Any:
    async with tradyn(tmp_path) as made:
        yield made


async def open_positions(t: Tradyn) -> list[dict[str, Any]]:
    return list(await t.data(await t.http.get("/api/positions")))


async def pending(t: Tradyn) -> list[dict[str, Any]]:
    return list(await t.data(await t.http.get("/api/orders")))


async def test_an_account_without_the_tradyn_venue_is_not_connected(tmp_path: Path) -> None:
    async with tradyn(tmp_path, tradyn_exchange="nope") as t:
        for response in (
            await t.http.post("/api/trade", json=TRADE),
            await t.http.post("/api/orders", json=ORDER),
            await t.http.get("/api/symbols"),
            await t.http.get("/api/quote/EURUSD"),
            await t.http.get("/api/candles/EURUSD"),
        ):
            body = refused(response, 503)
            assert (body["error"], body["code"]) == ("Not connected to trading server", "EXCHANGE_UNAVAILABLE")
            assert "errors" not in body, body
        account = await t.data(await t.http.get("/api/account"))
        assert (account["server"], account["connected"], account["trade_allowed"]) == ("nope", False, False)
        assert await open_positions(t) == []


async def test_an_account_with_the_venue_is_connected(t: Tradyn) -> None:
    account = await t.data(await t.http.get("/api/account"))
    assert (account["server"], account["connected"], account["trade_allowed"]) == ("paper", True, True)


async def test_a_stop_on_the_wrong_side_is_named_sl(t: Tradyn) -> None:
    ticket = (await t.data(await t.http.post("/api/trade", json=TRADE)))["ticket"]
    for response in (
        await t.http.put(f"/api/positions/{ticket}", json={"sl": 1.2}),
        await t.http.post("/api/trade", json={**TRADE, "sl": 1.2}),
        await t.http.post("/api/trade", json={**TRADE, "tp": 1.0}),
    ):
        body = refused(response, 400)
        assert body["errors"][0]["field"] in ("sl", "tp"), body
        assert "stop_loss" not in response.text and "take_profit" not in response.text
    [kept] = await open_positions(t)
    assert (kept["ticket"], kept["sl"]) == (ticket, 0)


async def test_a_price_off_the_step_is_named_price(t: Tradyn) -> None:
    response = await t.http.post("/api/orders", json={**ORDER, "price": 1.080001})
    body = refused(response, 400)
    assert body["error"].startswith("price 1.080001 is not a multiple of the price step"), body
    assert body["errors"][0]["field"] == "price"
    assert "entry_price" not in response.text
    assert await pending(t) == []


def test_the_engines_field_names_become_tradyns_in_fields_and_messages() -> None:
    exc = BadRequest(
        "quantity 3 is not a multiple of 2; take_profit must be above; entry_price 1; stop_price 2; max_quantity",
        errors=[
            {"field": "quantity", "message": "3 is not a multiple of 2"},
            {"field": "take_profit", "message": "must be above the price"},
            {"field": "entry_price", "message": "a stop entry needs an entry_price"},
        ],
    )
    body = orjson.loads(bytes(error_response(exc).body))
    assert body["error"] == "volume 3 is not a multiple of 2; tp must be above; price 1; price 2; max_quantity"
    assert [(e["field"], e["message"]) for e in body["errors"]] == [
        ("volume", "3 is not a multiple of 2"),
        ("tp", "must be above the price"),
        ("price", "a stop entry needs a price"),
    ]
    assert exc.extra["errors"][0]["field"] == "quantity"  # the error itself is left as the engine raised it


async def test_a_change_with_nothing_to_change_is_a_400_on_orders_as_on_positions(t: Tradyn) -> None:
    ticket = (await t.data(await t.http.post("/api/orders", json=ORDER)))["ticket"]
    for change in ({}, {"price": None}):
        body = refused(await t.http.put(f"/api/orders/{ticket}", json=change), 400)
        assert body["error"] == "send price, sl or tp", body
    position = (await t.data(await t.http.post("/api/trade", json=TRADE)))["ticket"]
    assert refused(await t.http.put(f"/api/positions/{position}", json={}), 400)["error"] == "send sl, tp or both"
    [order] = await pending(t)
    assert (order["ticket"], order["price"], order["state"]) == (ticket, 1.08, "placed")


async def test_close_all_refuses_unknown_fields(t: Tradyn) -> None:
    ticket = (await t.data(await t.http.post("/api/trade", json=TRADE)))["ticket"]
    body = refused(await t.http.post("/api/positions/close-all", json={"foo": 1}), 400)
    assert body["errors"][0]["field"] == "foo", body
    refused(await t.http.post("/api/positions/close-all", json=[1]), 400)
    assert [p["ticket"] for p in await open_positions(t)] == [ticket]
    assert (await t.data(await t.http.post("/api/positions/close-all", json={})))["closed"] == 1
    assert await open_positions(t) == []


async def test_an_order_type_is_a_number_a_numeric_string_or_a_name_never_a_boolean(t: Tradyn) -> None:
    for flag in (True, False):
        body = refused(await t.http.post("/api/orders", json={**ORDER, "type": flag}), 400)
        assert body["errors"][0]["field"] == "type", body
        body = refused(await t.http.post("/api/trade", json={"symbol": "EURUSD", "volume": 0.1, "type": flag}), 400)
        assert body["errors"][0]["field"] == "type", body
    assert await pending(t) == [] and await open_positions(t) == []

    assert (await t.data(await t.http.post("/api/orders", json={**ORDER, "type": "2"})))["type"] == 2
    sells = [{"type": "1"}, {"type": "ORDER_TYPE_SELL"}, {"type": 1, "action": "sell"}]
    for fields in sells:
        trade = await t.data(await t.http.post("/api/trade", json={"symbol": "EURUSD", "volume": 0.1, **fields}))
        assert trade["type"] == "sell"
    body = refused(await t.http.post("/api/trade", json={"symbol": "EURUSD", "volume": 0.1, "type": "4"}), 400)
    assert "/v1/api/orders" in body["error"]


async def test_an_unknown_ticket_reads_the_same_on_every_method(t: Tradyn) -> None:
    for method, body in (("GET", None), ("PUT", {"sl": 1.07}), ("DELETE", None)):
        positions = await t.http.request(method, "/api/positions/pos_nothere", json=body)
        assert refused(positions, 404)["error"] == "Position pos_nothere not found"
        orders = await t.http.request(method, "/api/orders/pos_nothere", json=body)
        assert refused(orders, 404)["error"] == "Order pos_nothere not found"


@pytest.mark.parametrize("header", ["Bearer ", "Bearer", "bearer  "])
async def test_a_bearer_without_a_key_is_a_missing_key(t: Tradyn, header: str) -> None:
    body = refused(await t.http.get("/api/account", headers={"Authorization": header}), 401)
    assert (body["error"], body["code"]) == ("Missing authorization header", "API_KEY_MISSING")
