"""End to end: the real `rt serve` trading on a real-venue dialect through ccxt. A venue added with `rt venues add`
for the bootstrap account points at a fake Binance on 127.0.0.1 that checks every request's signature."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.e2e.checks import LeakCheck, assert_problem
from tests.e2e.server import Server, cli, run_server
from tests.exchanges.fake_binance import FakeBinance

pytestmark = pytest.mark.e2e

API_KEY = "venue-key-" + secrets.token_hex(12)
SECRET = "venue-secret-" + secrets.token_hex(20)
ENV = {"RT_TIER_LIMITS": "pro_plus=60000/10000,pro=60000/10000", "RT_PAPER_TICK_MS": "0"}
BTC_ORDER = {"exchange": "binance", "symbol": "BTC/USDT", "side": "buy", "type": "market", "quantity": 0.01}


def eventually(check: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def rt(data_dir: Path, *args: str, ok: bool = True) -> str:
    result = cli(data_dir, *args)
    assert "Traceback" not in result.stdout + result.stderr
    assert (result.returncode == 0) is ok, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBinance]:
    with FakeBinance(API_KEY, SECRET) as venue:
        yield venue


@pytest.fixture(scope="module")
def leaks() -> Iterator[LeakCheck]:
    check = LeakCheck()
    check.secrets.update((API_KEY, SECRET))
    yield check
    check.verify()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake: FakeBinance, leaks: LeakCheck) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("ccxt") / "data"
    with run_server(data_dir, ENV) as first:
        leaks.watch(first)
        with first.client(first.key) as admin:
            assert admin.get("/v1/account").status_code == 200
    added = json.loads(
        rt(
            data_dir,
            "venues",
            "add",
            "--account",
            "default",
            "--exchange",
            "binance",
            "--api-key",
            API_KEY,
            "--secret",
            SECRET,
            "--url",
            fake.url,
            "--json",
        )
    )
    assert (added["exchange"], added["url"], added["replaced"]) == ("binance", fake.url, False)
    # Venues are connected when the server starts: start it again, now with the venue.
    with run_server(data_dir, ENV) as second:
        second.key = first.key
        leaks.watch(second)
        with second.client(second.key) as admin:
            eventually(lambda: admin.get("/v1/markets", params={"exchange": "binance"}).status_code == 200)
        yield second


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.key) as client:
        yield client


def test_markets_and_tickers_come_from_the_venue(admin: httpx.Client) -> None:
    listed = admin.get("/v1/markets", params={"exchange": "binance"})
    assert listed.status_code == 200, listed.text
    markets = {m["symbol"]: m for m in listed.json()["markets"]}
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}
    assert markets["BTC/USDT"]["exchange"] == "binance"
    assert Decimal(str(markets["BTC/USDT"]["price_step"])) == Decimal("0.01")
    quote = admin.get("/v1/markets/BTC-USDT/ticker", params={"exchange": "binance"})
    assert quote.status_code == 200, quote.text
    assert (quote.json()["bid"], quote.json()["ask"]) == (64999.99, 65000.01)


def test_a_market_order_fills_through_ccxt_with_a_signed_request(admin: httpx.Client, fake: FakeBinance) -> None:
    placed = admin.post("/v1/orders", json=BTC_ORDER)
    assert placed.status_code == 201, placed.text
    order = placed.json()["order"]
    assert (order["exchange"], order["status"]) == ("binance", "filled")
    assert order["average_price"] == 65000.01  # the fake venue's ask
    assert Decimal(str(order["fee"])) == Decimal("0.00001") * Decimal("65000.01")
    [sent] = [s for s in fake.signed_requests("POST", "/api/v3/order") if s.params["newClientOrderId"] == order["id"]]
    assert sent.api_key == API_KEY
    assert (sent.params["side"], sent.params["type"], sent.params["quantity"]) == ("BUY", "MARKET", "0.01")
    positions = admin.get("/v1/positions", params={"exchange": "binance"}).json()["positions"]
    assert order["position_id"] in {p["id"] for p in positions}


def test_a_limit_order_rests_at_the_venue_and_fills_when_it_moves(admin: httpx.Client, fake: FakeBinance) -> None:
    placed = admin.post("/v1/orders", json={**BTC_ORDER, "type": "limit", "price": 64000})
    assert placed.status_code == 201, placed.text
    order = placed.json()["order"]
    assert order["status"] == "open"
    fake.set_price("BTC/USDT", Decimal("63990"))
    try:

        def filled() -> bool:
            return bool(admin.get(f"/v1/orders/{order['id']}").json()["order"]["status"] == "filled")

        eventually(filled)
    finally:
        fake.set_price("BTC/USDT", Decimal("65000"))
    assert admin.get(f"/v1/orders/{order['id']}").json()["order"]["average_price"] == 64000


def test_cancel_reaches_the_venue(admin: httpx.Client, fake: FakeBinance) -> None:
    order = admin.post("/v1/orders", json={**BTC_ORDER, "type": "limit", "price": 60000}).json()["order"]
    canceled = admin.delete(f"/v1/orders/{order['id']}")
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["order"]["status"] == "canceled"
    [at_venue] = [o for o in fake.orders.values() if o.client_id == order["id"]]
    assert at_venue.status == "CANCELED"
    assert fake.signed_requests("DELETE", "/api/v3/order")


def test_a_test_key_may_not_touch_a_real_venue(
    admin: httpx.Client, server: Server, leaks: LeakCheck, fake: FakeBinance
) -> None:
    orders_before = len(fake.seen)
    made = admin.post("/v1/keys", json={"scopes": "full", "tier": "pro", "test": True})
    assert made.status_code == 201, made.text
    body = leaks.issued(made.json())
    try:
        with server.client(body["key"]) as test_client:
            assert_problem(test_client.post("/v1/orders", json=BTC_ORDER), 403, "INSUFFICIENT_SCOPE")
            assert_problem(test_client.get("/v1/markets", params={"exchange": "binance"}), 403, "INSUFFICIENT_SCOPE")
            paper = test_client.post("/v1/orders", json={**BTC_ORDER, "exchange": "paper"})
            assert paper.status_code == 201, paper.text
    finally:
        admin.delete(f"/v1/keys/{body['id']}")
    assert not [s for s in fake.seen[orders_before:] if s.path == "/api/v3/order"]


def test_venues_list_and_the_store_never_show_the_credentials(server: Server, fake: FakeBinance) -> None:
    out = rt(server.data_dir, "venues", "list", "--json")
    [venue] = json.loads(out)
    assert (venue["exchange"], venue["url"], venue["sandbox"]) == ("binance", fake.url, False)
    assert API_KEY not in out and SECRET not in out
    at_rest = b"".join(p.read_bytes() for p in server.data_dir.glob("rt.db*"))
    assert SECRET.encode() not in at_rest and API_KEY.encode() not in at_rest


def test_venues_cli_refuses_a_typo_and_removes(server: Server) -> None:
    data = server.data_dir
    typo = rt(data, "venues", "add", "--exchange", "binanse", "--api-key", "k", "--secret", "s", ok=False)
    assert "did you mean 'binance'" in typo
    rt(data, "venues", "add", "--exchange", "kraken", "--api-key", "k", "--secret", "s", "--sandbox")
    removed = json.loads(rt(data, "venues", "remove", "--exchange", "kraken", "--json"))
    assert (removed["exchange"], removed["removed"]) == ("kraken", True)
    assert "no venue 'kraken'" in rt(data, "venues", "remove", "--exchange", "kraken", ok=False)


def test_a_venue_that_goes_down_answers_503_and_rt_reconnects(admin: httpx.Client, fake: FakeBinance) -> None:
    fake.stop()
    try:
        down = admin.post("/v1/orders", json=BTC_ORDER)
        assert_problem(down, 503, "EXCHANGE_UNAVAILABLE")
        assert_problem(admin.get("/v1/markets", params={"exchange": "binance"}), 503, "EXCHANGE_UNAVAILABLE")
        assert_problem(admin.post("/v1/orders", json=BTC_ORDER), 503, "EXCHANGE_UNAVAILABLE")
        assert admin.post("/v1/orders", json={**BTC_ORDER, "exchange": "paper"}).status_code == 201
    finally:
        fake.start()
    eventually(lambda: admin.get("/v1/markets", params={"exchange": "binance"}).status_code == 200)
    again = admin.post("/v1/orders", json=BTC_ORDER)
    assert again.status_code == 201, again.text
    assert again.json()["order"]["status"] == "filled"


def test_the_server_logs_say_what_happened_without_secrets(server: Server) -> None:
    logs = server.logs()
    assert '"msg":"exchange connected"' in logs
    assert '"msg":"exchange disconnected"' in logs
    assert API_KEY not in logs and SECRET not in logs
