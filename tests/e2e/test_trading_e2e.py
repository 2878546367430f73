"""End to end over real HTTP against `rt serve`: account, markets, positions, orders, Cerberus, Charon,
idempotency, restarts, scopes, concurrency and a Kerosyne-style client (SPEC §4-§5)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from rt.config import Settings
from rt.runtime import open_runtime
from tests.e2e.server import Server, cli, run_server

pytestmark = pytest.mark.e2e

PROBLEM_JSON = "application/problem+json"
FEE = Decimal("0.001")
BALANCE = Decimal("100000")
# No random walk, so prices only move when set; BTC starts where the Kerosyne docs' example market stands.
ENV = {
    "RT_PAPER_TICK_MS": "0",
    "RT_PAPER_SYMBOLS": "BTC/USDT=46200,ETH/USDT=3500,SOL/USDT=150",
    "RT_PAPER_FEE": str(FEE),
    "RT_PAPER_SLIPPAGE_BPS": "0",
    "RT_PAPER_BALANCE": str(BALANCE),
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
    "RT_LOCKOUT_THRESHOLD": "100000",
}
ACCOUNT_FIELDS = {
    "balance",
    "equity",
    "margin_used",
    "free_margin",
    "currency",
    "realized_pnl",
    "unrealized_pnl",
    "trading_state",
}
GENEROUS = {"max_position_size": 1_000_000, "max_exposure": 50, "max_daily_loss": 100_000}


@dataclass
class Trader:
    """A fresh account with a full-access key: every test that trades gets one, so counts start at zero."""

    account_id: str
    key: str
    http: httpx.Client


def d(value: Any) -> Decimal:
    return Decimal(str(value))


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["title"] and body["detail"] and body["type"]
    assert body["instance"] == response.headers["x-request-id"]
    return body


def field_names(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body["errors"]}


def rt_json(server: Server, *args: str) -> Any:
    done = cli(server.data_dir, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def new_key(server: Server, account: str) -> str:
    made = rt_json(server, "keys", "create", "--account", account, "--scopes", "full", "--tier", "pro_plus")
    return str(made["key"])


def new_trader(server: Server) -> Trader:
    """An account and a full key made through the same KeyManager the CLI uses, minus a subprocess per test."""

    async def make() -> tuple[str, str]:
        async with open_runtime(Settings.from_env({"RT_DATA_DIR": str(server.data_dir)})) as runtime:
            account = await runtime.keys.create_account(f"t-{uuid.uuid4().hex[:10]}", actor="tests")
            issued = await runtime.keys.create(account.id, "full", "pro_plus", name="e2e", actor="tests")
            return account.id, issued.key

    # A thread of its own: this may run while pytest-asyncio holds an event loop for an async test.
    with ThreadPoolExecutor(1) as pool:
        account_id, key = pool.submit(asyncio.run, make()).result()
    return Trader(account_id, key, server.client(key))


def ticker(http: httpx.Client, symbol: str) -> dict[str, Decimal]:
    body = ok(http.get(f"/v1/markets/{symbol.replace('/', '%2F')}/ticker"))
    return {name: d(body[name]) for name in ("bid", "ask", "last")}


def open_position(
    http: httpx.Client,
    symbol: str = "ETH/USDT",
    side: str = "long",
    quantity: float = 0.1,
    status: int = 201,
    **extra: Any,
) -> dict[str, Any]:
    body = {"exchange": "paper", "symbol": symbol, "side": side, "quantity": quantity, **extra}
    position: dict[str, Any] = ok(http.post("/v1/positions", json=body), status)["position"]
    return position


def place(
    http: httpx.Client,
    side: str = "buy",
    type_: str = "market",
    symbol: str = "ETH/USDT",
    quantity: float = 0.1,
    **extra: Any,
) -> dict[str, Any]:
    body = {"exchange": "paper", "symbol": symbol, "side": side, "type": type_, "quantity": quantity, **extra}
    order: dict[str, Any] = ok(http.post("/v1/orders", json=body), 201)["order"]
    return order


def resting_buy(http: httpx.Client, symbol: str = "ETH/USDT") -> dict[str, Any]:
    below = ticker(http, symbol)["bid"] * Decimal("0.8")
    return place(http, "buy", "limit", symbol, price=float(below.quantize(Decimal("0.1"))))


def envelope(http: httpx.Client, **changes: Any) -> dict[str, Any]:
    current = ok(http.get("/v1/risk/envelope"))["envelope"]
    body: dict[str, Any] = ok(http.put("/v1/risk/envelope", json={**current, **changes}))
    return body


def listed(http: httpx.Client, things: str, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = ok(http.get(f"/v1/{things}", params=params))
    assert body["page"] == int(params.get("page", 1))
    return body


def count(http: httpx.Client, things: str, **params: Any) -> int:
    return int(listed(http, things, **params)["total"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("trading") / "data", ENV) as started:
        assert started.key, "no bootstrap key"
        yield started


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    """The bootstrap key of account `default`: only the sub-account test trades with it."""
    assert server.key
    with server.client(server.key) as http:
        yield http


@pytest.fixture
def trader(server: Server) -> Iterator[Trader]:
    made = new_trader(server)
    with made.http:
        yield made


@pytest.fixture
def other(server: Server) -> Iterator[Trader]:
    made = new_trader(server)
    with made.http:
        yield made


# account and markets


def test_account_shows_balance_equity_margin_pnl_and_trading_state(trader: Trader) -> None:
    fresh = ok(trader.http.get("/v1/account"))
    assert fresh.keys() >= ACCOUNT_FIELDS
    assert fresh["currency"] == "USDT"
    assert fresh["trading_state"] == "active"
    assert d(fresh["balance"]) == d(fresh["equity"]) == d(fresh["free_margin"]) == BALANCE
    assert d(fresh["margin_used"]) == d(fresh["realized_pnl"]) == d(fresh["unrealized_pnl"]) == 0

    ask = ticker(trader.http, "ETH/USDT")["ask"]
    position = open_position(trader.http, quantity=0.5)
    fee = ask * Decimal("0.5") * FEE
    after = ok(trader.http.get("/v1/account"))
    assert d(position["entry_price"]) == ask
    assert d(after["balance"]) == pytest.approx(BALANCE - fee)
    assert d(after["realized_pnl"]) == pytest.approx(-fee)
    assert d(after["margin_used"]) == pytest.approx(ask * Decimal("0.5"))
    assert d(after["equity"]) == pytest.approx(d(after["balance"]) + d(after["unrealized_pnl"]))
    assert d(after["free_margin"]) == pytest.approx(d(after["equity"]) - d(after["margin_used"]))


def test_markets_list_the_paper_symbols(admin: httpx.Client) -> None:
    body = ok(admin.get("/v1/markets"))
    by_symbol = {m["symbol"]: m for m in body["markets"]}
    assert body["total"] == len(body["markets"]) == 3
    assert set(by_symbol) == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    assert by_symbol["BTC/USDT"] == {
        "symbol": "BTC/USDT",
        "base": "BTC",
        "quote": "USDT",
        "exchange": "paper",
        "price_step": 1,
        "amount_step": 0.0001,
        "min_amount": 0.0001,
    }


def test_ticker_takes_the_symbol_url_encoded_or_with_a_dash(admin: httpx.Client) -> None:
    encoded = ok(admin.get("/v1/markets/BTC%2FUSDT/ticker"))
    dashed = ok(admin.get("/v1/markets/BTC-USDT/ticker"))
    assert encoded == dashed
    assert encoded["symbol"] == "BTC/USDT" and encoded["exchange"] == "paper"
    assert encoded["last"] == 46200
    assert encoded["bid"] < encoded["last"] < encoded["ask"]
    assert isinstance(encoded["timestamp"], int)


def test_unknown_symbol_or_exchange_is_a_400(admin: httpx.Client) -> None:
    body = problem(admin.get("/v1/markets/DOGE%2FUSDT/ticker"), 400, "BAD_REQUEST")
    assert field_names(body) == {"symbol"}
    order = {"exchange": "paper", "symbol": "DOGE/USDT", "side": "buy", "quantity": 1}
    assert field_names(problem(admin.post("/v1/orders", json=order), 400, "BAD_REQUEST")) == {"symbol"}
    order |= {"symbol": "BTC/USDT", "exchange": "kraken"}
    assert field_names(problem(admin.post("/v1/orders", json=order), 400, "BAD_REQUEST")) == {"exchange"}


# positions


def test_market_position_opens_with_cerberus_verdict_and_closes_with_realized_pnl(trader: Trader) -> None:
    http = trader.http
    quote = ticker(http, "BTC/USDT")
    created = http.post(
        "/v1/positions", json={"exchange": "paper", "symbol": "BTC/USDT", "side": "long", "quantity": 0.2}
    )
    position = ok(created, 201)["position"]
    assert position["id"].startswith("pos_")
    assert position["status"] == "open"
    assert (position["exchange"], position["symbol"], position["side"]) == ("paper", "BTC/USDT", "long")
    assert d(position["entry_price"]) == quote["ask"] and d(position["quantity"]) == Decimal("0.2")
    assert position["closed_at"] is None and position["created_at"].endswith("Z")
    validation = position["validation"]
    assert validation["cerberus_status"] == "passed"
    assert {"position_size", "exposure_limit", "daily_loss_limit"} <= set(validation["checks"])

    fetched = ok(http.get(f"/v1/positions/{position['id']}"))["position"]
    assert fetched["status"] == "open" and fetched["entry_price"] == position["entry_price"]

    closed = ok(http.post(f"/v1/positions/{position['id']}/close"))["position"]
    quantity = Decimal("0.2")
    fees = (quote["ask"] + quote["bid"]) * quantity * FEE
    expected = (quote["bid"] - quote["ask"]) * quantity - fees
    assert closed["status"] == "closed" and closed["closed_at"] is not None
    assert d(closed["realized_pnl"]) == pytest.approx(expected)
    account = ok(http.get("/v1/account"))
    assert d(account["realized_pnl"]) == pytest.approx(expected)
    assert d(account["balance"]) == pytest.approx(BALANCE + expected)
    assert account["open_positions"] == 0

    again = problem(http.post(f"/v1/positions/{position['id']}/close"), 409, "POSITION_NOT_OPEN")
    assert position["id"] in again["detail"]
    assert ok(http.get(f"/v1/positions/{position['id']}"))["position"]["status"] == "closed"


def test_limit_entry_below_market_rests_pending_with_202(trader: Trader) -> None:
    http = trader.http
    last = ticker(http, "BTC/USDT")["last"]
    body = {"exchange": "paper", "symbol": "BTC/USDT", "side": "long", "quantity": 0.1, "entry_price": 45000}
    response = http.post("/v1/positions", json=body)
    position = ok(response, 202)["position"]
    assert position["status"] == "pending"
    assert d(position["entry_price"]) == 45000 < last
    assert position["validation"]["cerberus_status"] == "passed"
    assert ok(http.get(f"/v1/positions/{position['id']}"))["position"]["status"] == "pending"
    assert count(http, "positions") == 0  # the default filter is status=open
    assert [p["id"] for p in listed(http, "positions", status="pending")["positions"]] == [position["id"]]
    entry = listed(http, "orders", status="open")["orders"]
    assert [(o["type"], o["side"], d(o["price"]), o["position_id"]) for o in entry] == [
        ("limit", "buy", Decimal(45000), position["id"])
    ]

    canceled = ok(http.delete(f"/v1/orders/{entry[0]['id']}"))["order"]
    assert canceled["status"] == "canceled"
    assert ok(http.get(f"/v1/positions/{position['id']}"))["position"]["status"] == "canceled"


def test_a_limit_entry_judges_its_stop_loss_and_take_profit_against_its_entry_price(trader: Trader) -> None:
    """Market at 46200, a long entry resting at 40000: a stop at 42000 would fire the moment the entry fills
    (the price has to fall through it first), while a take profit at 44000 is a gain over the entry."""
    http = trader.http
    entry = {"exchange": "paper", "symbol": "BTC/USDT", "side": "long", "quantity": 0.1, "entry_price": 40000}
    above_entry = problem(http.post("/v1/positions", json={**entry, "stop_loss": 42000}), 400, "BAD_REQUEST")
    assert field_names(above_entry) == {"stop_loss"}
    position = open_position(
        http, "BTC/USDT", quantity=0.1, entry_price=40000, stop_loss=39000, take_profit=44000, status=202
    )
    assert (d(position["stop_loss"]), d(position["take_profit"])) == (Decimal(39000), Decimal(44000))


def test_position_list_filters_by_status_symbol_exchange_and_pages(trader: Trader) -> None:
    http = trader.http
    btc = open_position(http, "BTC/USDT", "long", 0.05)
    eth = open_position(http, "ETH/USDT", "short", 0.5)
    sol = open_position(http, "SOL/USDT", "long", 10)
    ok(http.post(f"/v1/positions/{sol['id']}/close"))
    pending = open_position(http, "BTC/USDT", "long", 0.05, entry_price=40000, status=202)

    def ids(**params: Any) -> set[str]:
        body = listed(http, "positions", **params)
        assert body["total"] == len(body["positions"])
        return {p["id"] for p in body["positions"]}

    assert ids() == ids(status="open") == {btc["id"], eth["id"]}
    assert ids(status="closed") == {sol["id"]}
    assert ids(status="pending") == {pending["id"]}
    assert ids(status="all") == {btc["id"], eth["id"], sol["id"], pending["id"]}
    assert ids(status="all", symbol="BTC/USDT") == {btc["id"], pending["id"]}
    assert ids(symbol="SOL/USDT") == set()
    assert ids(exchange="paper") == {btc["id"], eth["id"]}
    assert ids(exchange="binance") == set()

    pages = [listed(http, "positions", status="all", limit=1, page=page) for page in (1, 2, 3, 4, 5)]
    assert [p["total"] for p in pages] == [4] * 5
    assert [len(p["positions"]) for p in pages] == [1, 1, 1, 1, 0]
    assert {p["positions"][0]["id"] for p in pages[:4]} == ids(status="all")
    two = listed(http, "positions", status="all", limit=2, page=2)
    assert [p["id"] for p in two["positions"]] == [pages[2]["positions"][0]["id"], pages[3]["positions"][0]["id"]]

    for bad in ({"status": "bogus"}, {"limit": 0}, {"limit": 501}, {"page": 0}, {"limit": "ten"}, {"colour": "x"}):
        problem(http.get("/v1/positions", params=bad), 400, "BAD_REQUEST")


def test_another_accounts_position_and_order_are_404(trader: Trader, other: Trader) -> None:
    position = open_position(trader.http)
    order = resting_buy(trader.http)
    intruder = other.http
    problem(intruder.get(f"/v1/positions/{position['id']}"), 404, "NOT_FOUND")
    problem(intruder.patch(f"/v1/positions/{position['id']}", json={"stop_loss": 1}), 404, "NOT_FOUND")
    problem(intruder.post(f"/v1/positions/{position['id']}/close"), 404, "NOT_FOUND")
    problem(intruder.get(f"/v1/orders/{order['id']}"), 404, "NOT_FOUND")
    problem(intruder.delete(f"/v1/orders/{order['id']}"), 404, "NOT_FOUND")
    assert count(intruder, "positions", status="all") == count(intruder, "orders") == 0
    assert ok(trader.http.get(f"/v1/positions/{position['id']}"))["position"]["status"] == "open"
    assert ok(trader.http.get(f"/v1/orders/{order['id']}"))["order"]["status"] == "open"
    problem(trader.http.get("/v1/positions/pos_doesnotexist"), 404, "NOT_FOUND")


def test_patch_changes_stop_loss_and_take_profit(trader: Trader) -> None:
    http = trader.http
    position = open_position(http, "ETH/USDT", "long", 0.2)
    path = f"/v1/positions/{position['id']}"
    both = ok(http.patch(path, json={"stop_loss": 3000, "take_profit": 4000}))["position"]
    assert (d(both["stop_loss"]), d(both["take_profit"])) == (Decimal(3000), Decimal(4000))
    only_tp = ok(http.patch(path, json={"take_profit": None}))["position"]
    assert (d(only_tp["stop_loss"]), only_tp["take_profit"]) == (Decimal(3000), None)
    stored = ok(http.get(path))["position"]
    assert (d(stored["stop_loss"]), stored["take_profit"]) == (Decimal(3000), None)

    wrong_side = problem(http.patch(path, json={"stop_loss": 3900}), 400, "BAD_REQUEST")
    assert field_names(wrong_side) == {"stop_loss"}
    assert field_names(problem(http.patch(path, json={"stop_loss": -5}), 400, "BAD_REQUEST")) == {"stop_loss"}
    assert field_names(problem(http.patch(path, json={"trailing": 1}), 400, "BAD_REQUEST")) == {"trailing"}
    assert d(ok(http.get(path))["position"]["stop_loss"]) == 3000

    ok(http.post(f"{path}/close"))
    problem(http.patch(path, json={"stop_loss": 3100}), 409, "POSITION_NOT_OPEN")


# orders


def test_market_limit_and_stop_orders_list_get_and_cancel(trader: Trader) -> None:
    http = trader.http
    quote = ticker(http, "ETH/USDT")
    market = place(http, "buy", "market", quantity=0.1)
    assert market["id"].startswith("ord_")
    assert market["status"] == "filled" and d(market["filled_quantity"]) == Decimal("0.1")
    assert d(market["average_price"]) == quote["ask"]
    assert d(market["fee"]) == pytest.approx(quote["ask"] * Decimal("0.1") * FEE)
    assert market["position_id"].startswith("pos_")
    assert ok(http.get(f"/v1/positions/{market['position_id']}"))["position"]["side"] == "long"

    limit = place(http, "buy", "limit", price=3000)
    assert (limit["status"], d(limit["price"]), d(limit["filled_quantity"])) == ("open", Decimal(3000), Decimal(0))
    stop = place(http, "buy", "stop", stop_price=3800)
    assert (stop["status"], d(stop["stop_price"]), stop["price"]) == ("open", Decimal(3800), None)
    marketable = place(http, "sell", "limit", price=3000)  # a sell limit under the bid fills at once, at the bid
    assert marketable["status"] == "filled" and d(marketable["average_price"]) == quote["bid"]

    assert ok(http.get(f"/v1/orders/{limit['id']}"))["order"] == limit
    canceled = ok(http.delete(f"/v1/orders/{limit['id']}"))["order"]
    assert canceled["status"] == "canceled" and canceled["id"] == limit["id"]
    assert ok(http.get(f"/v1/orders/{limit['id']}"))["order"]["status"] == "canceled"
    problem(http.delete(f"/v1/orders/{limit['id']}"), 409, "ORDER_NOT_OPEN")
    problem(http.delete(f"/v1/orders/{market['id']}"), 409, "ORDER_NOT_OPEN")
    assert ok(http.get(f"/v1/orders/{market['id']}"))["order"]["status"] == "filled"
    problem(http.delete("/v1/orders/ord_doesnotexist"), 404, "NOT_FOUND")

    def ids(**params: Any) -> list[str]:
        body = listed(http, "orders", **params)
        return [o["id"] for o in body["orders"]]

    assert set(ids()) == set(ids(status="all")) == {market["id"], limit["id"], stop["id"], marketable["id"]}
    assert count(http, "orders") == 4
    assert ids(status="open") == [stop["id"]]
    assert set(ids(status="filled")) == {market["id"], marketable["id"]}
    assert ids(status="canceled") == [limit["id"]]
    assert ids(symbol="BTC/USDT") == []
    assert len(ids(limit=3, page=2)) == 1
    assert ok(http.get("/v1/account"))["open_orders"] == 1


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"symbol": "BTC/USDT", "side": "buy", "type": "limit", "quantity": 1}, {"body"}),
        ({"symbol": "BTC/USDT", "side": "buy", "quantity": -1}, {"quantity"}),
        ({"symbol": "BTC/USDT", "side": "buy", "quantity": 0}, {"quantity"}),
        ({"symbol": "BTC/USDT", "side": "buy", "quantity": 1, "leverage": 100}, {"leverage"}),
        ({"symbol": "BTC/USDT", "side": "buy", "quantity": "lots"}, {"quantity"}),
        ({"symbol": "BTC/USDT", "side": "buy", "quantity": "NaN"}, {"quantity"}),
        ({"symbol": "BTC/USDT", "side": "buy", "quantity": "1e400"}, {"quantity"}),
        ({"symbol": "BTC/USDT", "side": "hold", "quantity": 1}, {"side"}),
        ({"symbol": "BTC/USDT", "side": "buy", "type": "iceberg", "quantity": 1}, {"type"}),
        ({"symbol": "BTC/USDT", "side": "buy", "type": "stop", "quantity": 1}, {"body"}),
        ({"symbol": "BTC/USDT", "side": "buy", "type": "limit", "quantity": 1, "price": -3}, {"price"}),
        ({"side": "buy", "quantity": 1}, {"symbol"}),
        ({"symbol": "BTC/USDT", "side": "buy", "quantity": 1, "client_order_id": "has spaces"}, {"client_order_id"}),
    ],
)
def test_bad_order_bodies_are_400_with_field_errors(
    admin: httpx.Client, body: dict[str, Any], fields: set[str]
) -> None:
    before = count(admin, "orders")
    response = admin.post("/v1/orders", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert field_names(problem(response, 400, "BAD_REQUEST")) == fields
    assert count(admin, "orders") == before


def test_a_quantity_under_the_markets_min_amount_is_400(trader: Trader) -> None:
    """GET /v1/markets says BTC/USDT trades in steps of 0.0001 from 0.0001: smaller orders never reach the venue."""
    http = trader.http
    market = next(m for m in ok(http.get("/v1/markets"))["markets"] if m["symbol"] == "BTC/USDT")
    tiny = float(d(market["min_amount"]) / 10)
    order = {"exchange": "paper", "symbol": "BTC/USDT", "side": "buy", "type": "market", "quantity": tiny}
    assert field_names(problem(http.post("/v1/orders", json=order), 400, "BAD_REQUEST")) == {"quantity"}
    position = {"exchange": "paper", "symbol": "BTC/USDT", "side": "long", "quantity": tiny}
    assert field_names(problem(http.post("/v1/positions", json=position), 400, "BAD_REQUEST")) == {"quantity"}
    assert count(http, "orders") == count(http, "positions", status="all") == 0


def test_malformed_order_bodies_are_400_never_500(admin: httpx.Client) -> None:
    headers = {"Content-Type": "application/json"}
    for raw in (b"{", b"[]", b"null", b'"buy"', b"", b'{"quantity": 1,}'):
        problem(admin.post("/v1/orders", content=raw, headers=headers), 400, "BAD_REQUEST")
    problem(admin.post("/v1/positions", content=b"{nope", headers=headers), 400, "BAD_REQUEST")
    problem(
        admin.post("/v1/orders", content=b"side=buy", headers={"Content-Type": "text/plain"}),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )


# Cerberus


def test_envelope_shape_and_a_too_large_order_is_422_with_the_failed_check(trader: Trader) -> None:
    http = trader.http
    risk = ok(http.get("/v1/risk/envelope"))
    assert {"envelope", "current", "status"} <= risk.keys()
    assert set(risk["envelope"]) == {"max_position_size", "max_exposure", "max_daily_loss", "max_concurrent_positions"}
    assert {"total_exposure", "daily_loss", "active_positions", "available_capital"} <= risk["current"].keys()
    assert risk["status"] == "ok"

    small = {"max_position_size": 1000, "max_exposure": 0.5, "max_daily_loss": 500, "max_concurrent_positions": 2}
    changed = ok(http.put("/v1/risk/envelope", json=small))
    assert changed["envelope"] == small
    assert ok(http.get("/v1/risk/envelope"))["envelope"] == small

    ask = ticker(http, "ETH/USDT")["ask"]
    too_big = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 1}
    body = problem(http.post("/v1/orders", json=too_big), 422, "VALIDATION_FAILED")
    assert set(body["details"]) == {"check", "reason", "limit", "requested"}
    assert body["details"]["check"] == "position_size" and body["details"]["reason"]
    assert d(body["details"]["limit"]) == 1000
    assert d(body["details"]["requested"]) == ask
    as_position = {"exchange": "paper", "symbol": "BTC/USDT", "side": "short", "quantity": 0.1}
    assert problem(http.post("/v1/positions", json=as_position), 422, "VALIDATION_FAILED")["details"]["check"] == (
        "position_size"
    )
    assert count(http, "positions", status="open") == 0
    rejected = listed(http, "orders", status="rejected")["orders"]
    assert len(rejected) == 2 and all("position_size" in o["reject_reason"] for o in rejected)

    open_position(http, quantity=0.1)
    open_position(http, quantity=0.1)
    third = problem(http.post("/v1/positions", json={**as_position, "quantity": 0.001}), 422, "VALIDATION_FAILED")
    assert third["details"] == {
        "check": "concurrent_positions",
        "reason": third["details"]["reason"],
        "limit": 2,
        "requested": 3,
    }
    risk = ok(http.get("/v1/risk/envelope"))
    assert risk["current"]["active_positions"] == 2
    assert risk["status"] == "breached"

    for bad in ({**small, "max_exposure": -1}, {"max_position_size": 10}, {**small, "max_daily_loss": "a lot"}):
        problem(http.put("/v1/risk/envelope", json=bad), 400, "BAD_REQUEST")
    assert ok(http.get("/v1/risk/envelope"))["envelope"] == small


def test_reducing_state_accepts_only_orders_that_shrink_exposure(trader: Trader) -> None:
    http = trader.http
    position = open_position(http, "ETH/USDT", "long", 0.4)
    assert envelope(http, trading_state="reducing")["trading_state"] == "reducing"
    assert ok(http.get("/v1/account"))["trading_state"] == "reducing"

    grow = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 0.1}
    assert problem(http.post("/v1/orders", json=grow), 422, "VALIDATION_FAILED")["details"]["check"] == (
        "trading_state"
    )
    opening = {"exchange": "paper", "symbol": "SOL/USDT", "side": "short", "quantity": 1}
    assert problem(http.post("/v1/positions", json=opening), 422, "VALIDATION_FAILED")["details"]["check"] == (
        "trading_state"
    )
    assert place(http, "sell", "market", quantity=0.1)["status"] == "filled"
    assert d(ok(http.get(f"/v1/positions/{position['id']}"))["position"]["quantity"]) == Decimal("0.3")

    assert envelope(http, trading_state="active")["trading_state"] == "active"
    assert place(http, "buy", quantity=0.1)["status"] == "filled"


def test_concurrent_positions_hold_under_a_burst_of_100_requests(trader: Trader, server: Server) -> None:
    envelope(trader.http, max_concurrent_positions=5, **GENEROUS)
    body = {"exchange": "paper", "symbol": "ETH/USDT", "side": "long", "quantity": 0.01}

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": trader.key}, timeout=30) as http:
            return await asyncio.gather(*(http.post("/v1/positions", json=body) for _ in range(100)))

    responses = asyncio.run(burst())
    assert Counter(r.status_code for r in responses) == {201: 5, 422: 95}
    assert {r.json()["details"]["check"] for r in responses if r.status_code == 422} == {"concurrent_positions"}
    assert count(trader.http, "positions") == 5
    assert ok(trader.http.get("/v1/account"))["open_positions"] == 5


# Charon


def test_emergency_kill_closes_cancels_and_locks(trader: Trader) -> None:
    http = trader.http
    opened = [
        open_position(http, "BTC/USDT", "long", 0.05),
        open_position(http, "ETH/USDT", "short", 0.5),
        open_position(http, "SOL/USDT", "long", 5),
    ]
    resting = [resting_buy(http), place(http, "sell", "stop", "SOL/USDT", 1, stop_price=100)]
    pending = open_position(http, "BTC/USDT", "long", 0.05, entry_price=40000, status=202)

    report = ok(http.post("/v1/emergency/kill", json={"reason": "volatility", "confirm": True}))
    assert report["command_id"].startswith("cmd_")
    assert (report["action"], report["account_id"], report["trading_state"]) == ("KILL", trader.account_id, "locked")
    assert (report["positions_closed"], report["orders_canceled"], report["positions_failed"]) == (3, 3, 0)
    assert isinstance(report["latency_ms"], float) and report["latency_ms"] > 0

    closed = listed(http, "positions", status="closed")["positions"]
    assert {p["id"] for p in closed} == {p["id"] for p in opened}
    assert {p["close_reason"] for p in closed} == {"kill_switch"}
    assert ok(http.get(f"/v1/positions/{pending['id']}"))["position"]["status"] == "canceled"
    assert {ok(http.get(f"/v1/orders/{o['id']}"))["order"]["status"] for o in resting} == {"canceled"}
    account = ok(http.get("/v1/account"))
    assert (account["trading_state"], account["open_positions"], account["open_orders"]) == ("locked", 0, 0)
    assert ok(http.get("/v1/risk/envelope"))["status"] == "locked"

    order = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 0.1}
    problem(http.post("/v1/orders", json=order), 423, "TRADING_LOCKED")
    position = {"exchange": "paper", "symbol": "ETH/USDT", "side": "short", "quantity": 0.1}
    problem(http.post("/v1/positions", json=position), 423, "TRADING_LOCKED")
    envelope(http, trading_state="active")  # only UNLOCK lifts a kill
    problem(http.post("/v1/orders", json=order), 423, "TRADING_LOCKED")
    assert count(http, "positions") == 0


def test_a_locked_account_can_still_cancel_and_close(trader: Trader) -> None:
    http = trader.http
    position = open_position(http, "ETH/USDT", "long", 0.2)
    order = resting_buy(http)
    locked = ok(http.post("/v1/risk/kill", json={"action": "LOCK"}))
    assert (locked["positions_closed"], locked["orders_canceled"], locked["trading_state"]) == (0, 0, "locked")
    problem(http.post("/v1/orders", json={"symbol": "ETH/USDT", "side": "buy", "quantity": 0.1}), 423, "TRADING_LOCKED")

    assert ok(http.delete(f"/v1/orders/{order['id']}"))["order"]["status"] == "canceled"
    assert ok(http.post(f"/v1/positions/{position['id']}/close"))["position"]["status"] == "closed"
    assert ok(http.get("/v1/account"))["trading_state"] == "locked"

    unlocked = ok(http.post("/v1/risk/kill", json={"action": "UNLOCK"}))
    assert (unlocked["action"], unlocked["trading_state"]) == ("UNLOCK", "active")
    assert place(http)["status"] == "filled"


def test_kill_needs_confirm_true(trader: Trader) -> None:
    http = trader.http
    position = open_position(http)
    for body in ({"reason": "oops"}, {"reason": "oops", "confirm": False}, {"reason": "oops", "confirm": "yes"}):
        assert field_names(problem(http.post("/v1/emergency/kill", json=body), 400, "BAD_REQUEST")) == {"confirm"}
    problem(http.post("/v1/risk/kill", json={"action": "NUKE"}), 400, "BAD_REQUEST")
    assert ok(http.get(f"/v1/positions/{position['id']}"))["position"]["status"] == "open"
    assert ok(http.get("/v1/account"))["trading_state"] == "active"


def run_actions(actor: httpx.Client, owner: httpx.Client, account_id: str | None) -> None:
    """CLOSE_ALL, FLATTEN, LOCK and UNLOCK sent by `actor` on the account `owner` trades on."""
    target = {"account_id": account_id} if account_id else {}
    expected_id = account_id or ok(actor.get("/v1/account"))["account_id"]
    open_position(owner, "ETH/USDT", "long", 0.1)
    open_position(owner, "SOL/USDT", "short", 2)
    resting = resting_buy(owner)

    close_all = ok(actor.post("/v1/risk/kill", json={**target, "action": "CLOSE_ALL"}))
    assert close_all["command_id"].startswith("cmd_") and close_all["latency_ms"] > 0
    assert (close_all["action"], close_all["account_id"]) == ("CLOSE_ALL", expected_id)
    assert (close_all["positions_closed"], close_all["orders_canceled"]) == (2, 0)
    assert count(owner, "positions") == 0
    assert ok(owner.get(f"/v1/orders/{resting['id']}"))["order"]["status"] == "open"
    assert ok(owner.get("/v1/account"))["trading_state"] == "active"

    open_position(owner, "BTC/USDT", "long", 0.01)
    flatten = ok(actor.post("/v1/risk/kill", json={**target, "action": "FLATTEN"}))
    assert (flatten["action"], flatten["positions_closed"], flatten["orders_canceled"]) == ("FLATTEN", 1, 1)
    assert count(owner, "positions") == count(owner, "orders", status="open") == 0
    assert ok(owner.get("/v1/account"))["trading_state"] == "active"

    lock = ok(actor.post("/v1/risk/kill", json={**target, "action": "LOCK"}))
    assert (lock["action"], lock["account_id"], lock["trading_state"]) == ("LOCK", expected_id, "locked")
    problem(
        owner.post("/v1/orders", json={"symbol": "ETH/USDT", "side": "buy", "quantity": 0.1}), 423, "TRADING_LOCKED"
    )
    assert ok(owner.get("/v1/account"))["trading_state"] == "locked"
    assert ok(actor.post("/v1/risk/kill", json={**target, "action": "UNLOCK"}))["trading_state"] == "active"
    assert place(owner)["status"] == "filled"
    ok(actor.post("/v1/risk/kill", json={**target, "action": "FLATTEN"}))


def test_risk_kill_on_own_account_and_sub_account_but_not_an_unrelated_one(
    server: Server, admin: httpx.Client, other: Trader
) -> None:
    child = rt_json(server, "accounts", "create", "child", "--parent", "default")
    assert child["id"].startswith("acct_") and child["parent_id"] == ok(admin.get("/v1/account"))["account_id"]
    with server.client(new_key(server, child["id"])) as child_http:
        run_actions(admin, admin, None)
        run_actions(admin, child_http, child["id"])

        parent_id = ok(admin.get("/v1/account"))["account_id"]
        problem(child_http.post("/v1/risk/kill", json={"account_id": parent_id, "action": "LOCK"}), 404, "NOT_FOUND")
    open_position(other.http)
    for target in (other.account_id, "acct_doesnotexist"):
        problem(admin.post("/v1/risk/kill", json={"account_id": target, "action": "CLOSE_ALL"}), 404, "NOT_FOUND")
    assert count(other.http, "positions") == 1
    assert ok(admin.get("/v1/account"))["trading_state"] == "active"


# idempotency


def test_idempotency_key_replays_the_first_answer_and_trades_once(trader: Trader) -> None:
    http = trader.http
    body = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 0.1}
    key = {"Idempotency-Key": f"idem-{uuid.uuid4()}"}
    first = http.post("/v1/orders", json=body, headers=key)
    second = http.post("/v1/orders", json=body, headers=key)
    assert first.status_code == second.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert second.json() == first.json()
    assert count(http, "orders") == 1 and count(http, "positions") == 1

    conflict = problem(
        http.post("/v1/orders", json={**body, "quantity": 0.2}, headers=key), 409, "IDEMPOTENCY_CONFLICT"
    )
    assert "Idempotency-Key" in conflict["detail"]
    assert count(http, "orders") == 1
    assert http.post("/v1/orders", json=body, headers={"Idempotency-Key": "another"}).status_code == 201
    assert count(http, "orders") == 2


def test_client_order_id_works_as_an_idempotency_key(trader: Trader) -> None:
    http = trader.http
    body = {
        "symbol": "ETH/USDT",
        "side": "buy",
        "type": "limit",
        "price": 3000,
        "quantity": 0.1,
        "client_order_id": "bot-7:order.42",
    }
    first = ok(http.post("/v1/orders", json=body), 201)
    second = http.post("/v1/orders", json=body)
    assert ok(second, 201) == first
    assert second.headers["idempotent-replayed"] == "true"
    assert first["order"]["client_order_id"] == "bot-7:order.42"
    assert count(http, "orders") == 1
    problem(http.post("/v1/orders", json={**body, "price": 3100}), 409, "IDEMPOTENCY_CONFLICT")
    assert count(http, "orders") == 1
    assert d(ok(http.get(f"/v1/orders/{first['order']['id']}"))["order"]["price"]) == 3000


async def test_twenty_concurrent_requests_with_one_key_create_one_order(trader: Trader, server: Server) -> None:
    body = {"exchange": "paper", "symbol": "SOL/USDT", "side": "buy", "type": "market", "quantity": 1}
    headers = {"X-API-Key": trader.key, "Idempotency-Key": "burst-1"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as http:
        responses = await asyncio.gather(*(http.post("/v1/orders", json=body) for _ in range(20)))
        listed_orders = (await http.get("/v1/orders")).json()
    assert [r.status_code for r in responses] == [201] * 20
    assert len({r.json()["order"]["id"] for r in responses}) == 1
    assert sorted(r.headers.get("idempotent-replayed", "") for r in responses) == [""] + ["true"] * 19
    assert listed_orders["total"] == 1


# scopes


def test_read_only_key_cannot_trade_and_trade_only_key_cannot_read_the_account(trader: Trader, server: Server) -> None:
    made = {
        preset: ok(trader.http.post("/v1/keys", json={"scopes": preset, "tier": "pro_plus"}), 201)["key"]
        for preset in ("read-only", "trade-only")
    }
    order = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 0.1}
    with server.client(made["read-only"]) as reader, server.client(made["trade-only"]) as trader_only:
        problem(reader.post("/v1/orders", json=order), 403, "INSUFFICIENT_SCOPE")
        position = {"exchange": "paper", "symbol": "ETH/USDT", "side": "long", "quantity": 0.1}
        problem(reader.post("/v1/positions", json=position), 403, "INSUFFICIENT_SCOPE")
        problem(reader.post("/v1/emergency/kill", json={"confirm": True}), 403, "INSUFFICIENT_SCOPE")
        assert ok(reader.get("/v1/account"))["trading_state"] == "active"
        assert count(reader, "orders") == 0

        problem(trader_only.get("/v1/account"), 403, "INSUFFICIENT_SCOPE")
        problem(trader_only.get("/v1/positions"), 403, "INSUFFICIENT_SCOPE")
        problem(trader_only.put("/v1/risk/envelope", json={}), 403, "INSUFFICIENT_SCOPE")
        assert ok(trader_only.post("/v1/orders", json=order), 201)["order"]["status"] == "filled"
        assert count(reader, "orders") == 1


# a Kerosyne client


class KerosyneClient:
    """The Python client from the Kerosyne API docs, on httpx; only the base URL is rt's."""

    def __init__(self, api_key: str, base_url: str = "https://api.kerosyne.trade/v1") -> None:
        self.base_url = base_url
        self.headers = {"X-API-Key": api_key, "Content-Type": "application/json"}

    def get_positions(self, exchange: str | None = None) -> list[dict[str, Any]]:
        params = {"exchange": exchange} if exchange else {}
        response = httpx.get(f"{self.base_url}/positions", headers=self.headers, params=params)
        positions: list[dict[str, Any]] = response.json()["positions"]
        return positions

    def create_position(self, data: dict[str, Any]) -> dict[str, Any]:
        response = httpx.post(f"{self.base_url}/positions", headers=self.headers, json=data)
        position: dict[str, Any] = response.json()["position"]
        return position


def test_a_kerosyne_client_works_with_only_the_base_url_changed(trader: Trader, server: Server) -> None:
    client = KerosyneClient(trader.key, base_url=f"{server.url}/v1")
    documented = {
        "exchange": "paper",
        "symbol": "BTC/USDT",
        "side": "long",
        "entry_price": 45000.00,
        "quantity": 0.5,
        "stop_loss": 44000.00,
        "take_profit": 48000.00,
    }
    resting = client.create_position(documented)
    assert resting["id"].startswith("pos_") and resting["status"] == "pending"
    assert resting["validation"]["cerberus_status"] == "passed"
    assert {"position_size", "exposure_limit", "daily_loss_limit"} <= set(resting["validation"]["checks"])
    at_market = client.create_position({k: v for k, v in documented.items() if k != "entry_price"})
    assert at_market["status"] == "open"

    positions = client.get_positions()
    assert [p["id"] for p in positions] == [at_market["id"]]
    assert {
        "id",
        "exchange",
        "symbol",
        "side",
        "entry_price",
        "current_price",
        "quantity",
        "unrealized_pnl",
        "stop_loss",
        "take_profit",
        "status",
        "created_at",
    } <= positions[0].keys()
    assert (positions[0]["stop_loss"], positions[0]["take_profit"]) == (44000, 48000)
    assert client.get_positions(exchange="paper") == positions
    assert client.get_positions(exchange="binance") == []


# restarts


def snapshot(http: httpx.Client) -> dict[str, Any]:
    return {
        "account": ok(http.get("/v1/account")),
        "positions": ok(http.get("/v1/positions", params={"status": "all", "limit": 500})),
        "orders": ok(http.get("/v1/orders", params={"limit": 500})),
        "risk": ok(http.get("/v1/risk/envelope")),
    }


def test_orders_positions_and_balances_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    replayed = {"symbol": "ETH/USDT", "side": "sell", "type": "market", "quantity": 0.3}
    idem = {"Idempotency-Key": "before-restart"}
    with run_server(data, ENV) as first:
        assert first.key
        key = first.key
        with first.client(key) as http:
            envelope(http, max_concurrent_positions=7)
            open_position(http, "BTC/USDT", "long", 0.1, stop_loss=40000, take_profit=50000)
            sol = open_position(http, "SOL/USDT", "short", 20)
            ok(http.post(f"/v1/positions/{sol['id']}/close"))
            pending = open_position(http, "BTC/USDT", "long", 0.1, entry_price=42000, status=202)
            resting = resting_buy(http, "SOL/USDT")
            first_answer = ok(http.post("/v1/orders", json=replayed, headers=idem), 201)
            before = snapshot(http)
    assert before["account"]["open_positions"] == 2 and before["account"]["open_orders"] == 2
    assert d(before["account"]["balance"]) < BALANCE

    with run_server(data, ENV) as second:
        assert second.key is None, "a second start must not bootstrap again"
        with second.client(key) as http:
            assert snapshot(http) == before
            again = http.post("/v1/orders", json=replayed, headers=idem)
            assert ok(again, 201) == first_answer and again.headers["idempotent-replayed"] == "true"
            assert ok(http.delete(f"/v1/orders/{resting['id']}"))["order"]["status"] == "canceled"
            entry = next(o for o in before["orders"]["orders"] if o["position_id"] == pending["id"])
            ok(http.delete(f"/v1/orders/{entry['id']}"))
            assert ok(http.get(f"/v1/positions/{pending['id']}"))["position"]["status"] == "canceled"
            assert count(http, "orders", status="open") == 0


def test_kill_lock_survives_a_restart_until_unlock(tmp_path: Path) -> None:
    data = tmp_path / "data"
    order = {"symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 0.1}
    with run_server(data, ENV) as first:
        assert first.key
        key = first.key
        with first.client(key) as http:
            open_position(http)
            resting_buy(http)
            report = ok(http.post("/v1/emergency/kill", json={"reason": "restart test", "confirm": True}))
            assert (report["positions_closed"], report["orders_canceled"]) == (1, 1)
            problem(http.post("/v1/orders", json=order), 423, "TRADING_LOCKED")

    with run_server(data, ENV) as second, second.client(key) as http:
        assert ok(http.get("/v1/account"))["trading_state"] == "locked"
        problem(http.post("/v1/orders", json=order), 423, "TRADING_LOCKED")
        problem(
            http.post("/v1/positions", json={"symbol": "ETH/USDT", "side": "long", "quantity": 0.1}),
            423,
            "TRADING_LOCKED",
        )
        assert ok(http.post("/v1/risk/kill", json={"action": "UNLOCK"}))["trading_state"] == "active"
        assert ok(http.post("/v1/orders", json=order), 201)["order"]["status"] == "filled"
        assert ok(http.get("/v1/account"))["trading_state"] == "active"


# strategies


def test_strategies_deploy_list_with_performance_stop_and_start(trader: Trader, other: Trader) -> None:
    http = trader.http
    body = {
        "name": "ETH grid",
        "type": "grid",
        "exchange": "paper",
        "symbol": "ETH/USDT",
        "config": {"grid_levels": 5, "price_range": [3000, 3600], "quantity_per_level": 0.01},
        "risk_limits": {"max_position_size": 5000, "max_daily_loss": 500, "stop_loss_pct": 0.02},
    }
    created = ok(http.post("/v1/strategies", json=body), 201)["strategy"]
    assert created["id"].startswith("strat_") and created["status"] == "active"
    assert created["config"] == body["config"] and created["risk_limits"] == body["risk_limits"]
    zero = {"realized_pnl": 0, "unrealized_pnl": 0, "total_pnl": 0, "win_rate": 0, "trades": 0}
    assert created["performance"] == zero
    resting = listed(http, "orders", status="open")["orders"]
    assert sorted(o["price"] for o in resting) == [3000, 3150, 3300, 3450]  # every level under the price, ~3500
    assert {o["strategy_id"] for o in resting} == {created["id"]}
    assert all(o["stop_loss"] == pytest.approx(o["price"] * 0.98) for o in resting)

    listing = ok(http.get("/v1/strategies"))
    assert listing["total"] == 1 and listing["strategies"][0]["id"] == created["id"]
    assert ok(other.http.get("/v1/strategies"))["total"] == 0
    problem(other.http.get(f"/v1/strategies/{created['id']}"), 404, "NOT_FOUND")

    stopped = ok(http.post(f"/v1/strategies/{created['id']}/stop"))["strategy"]
    assert stopped["status"] == "stopped" and listed(http, "orders", status="open")["total"] == 0
    started = ok(http.post(f"/v1/strategies/{created['id']}/start"))["strategy"]
    assert started["status"] == "active" and listed(http, "orders", status="open")["total"] == 4

    ok(http.post("/v1/emergency/kill", json={"reason": "test", "confirm": True}))
    assert ok(http.get(f"/v1/strategies/{created['id']}"))["strategy"]["status"] == "halted"


def test_a_bad_strategy_is_a_400_naming_the_field(trader: Trader) -> None:
    base = {
        "name": "x",
        "type": "grid",
        "symbol": "ETH/USDT",
        "config": {"grid_levels": 5, "price_range": [3000, 3400], "quantity_per_level": 0.01},
    }
    for change, field in (
        ({"type": "martingale"}, "type"),
        ({"config": {"grid_levels": 5, "price_range": [3400, 3000], "quantity_per_level": 0.01}}, "config"),
        ({"risk_limits": {"stop_loss_pct": 3}}, "risk_limits.stop_loss_pct"),
        ({"symbol": "NOPE/USDT"}, "symbol"),
    ):
        body = problem(trader.http.post("/v1/strategies", json={**base, **change}), 400, "BAD_REQUEST")
        assert any(e["field"].startswith(field) for e in body["errors"]), (field, body)
