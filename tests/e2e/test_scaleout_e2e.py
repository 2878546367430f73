"""Three real `rt serve` instances on one PostgreSQL and one Redis, requests spread over all of them: Cerberus's
limits, idempotency keys and the kill switch hold as they do on one instance, and every instance reads the same."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from tests.conftest import need_postgres, need_redis
from tests.e2e.cluster import Cluster, cluster
from tests.e2e.server import Server, cli

pytestmark = pytest.mark.e2e

ENV = {
    "RT_PAPER_TICK_MS": "200",
    "RT_PAPER_VOLATILITY": "0",
    "RT_PAPER_SYMBOLS": "BTC/USDT=46200,ETH/USDT=3500",
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
    "RT_LOCKOUT_THRESHOLD": "100000",
}


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    asyncio.run(need_postgres())
    redis_url = asyncio.run(need_redis())
    with cluster(tmp_path_factory.mktemp("scaleout"), redis_url, 3, ENV) as running:
        yield running


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, f"{response.request.url}: {response.status_code} {response.text}"
    return response.json()


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30)


def new_account_key(group: Cluster) -> str:
    """A full key of a new account, made with the CLI on the shared store, as an operator would."""
    name = f"a-{uuid.uuid4().hex[:10]}"
    data_dir = group.servers[0].data_dir
    made = cli(data_dir, "accounts", "create", name, env=group.env)
    assert made.returncode == 0, made.stderr
    issued = cli(
        data_dir, "keys", "create", "--account", name, "--scopes", "full", "--tier", "pro_plus", "--json", env=group.env
    )
    assert issued.returncode == 0, issued.stderr
    return str(orjson.loads(issued.stdout)["key"])


def ws_call(server: Server, key: str, op: str, params: dict[str, Any]) -> dict[str, Any]:
    token = ok(httpx.post(server.url + "/v1/ws/token", headers={"X-API-Key": key}, timeout=10))["token"]
    with connect(server.url.replace("http", "ws") + f"/v1/ws?token={token}&batch=0", open_timeout=10) as ws:
        ws.send(orjson.dumps({"op": op, "id": 1, "params": params}).decode())
        while True:
            message: dict[str, Any] = orjson.loads(ws.recv(timeout=30))
            if message.get("id") == 1:
                return message


def open_positions(server: Server, key: str) -> list[dict[str, Any]]:
    with client(server, key) as http:
        found: list[dict[str, Any]] = ok(http.get("/v1/positions", params={"status": "open", "limit": 500}))[
            "positions"
        ]
        return found


def settled(http: httpx.Client, position_id: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = str(ok(http.get(f"/v1/positions/{position_id}"))["position"]["status"])
        if status != "pending_validation":
            return status
        time.sleep(0.05)
    raise AssertionError(f"{position_id} still pending_validation after 60 s")


def opened(server: Server, key: str, position: dict[str, Any]) -> bool:
    """POST /v1/positions: True when it opened, False when Cerberus refused it."""
    with client(server, key) as http:
        response = http.post("/v1/positions", json=position)
        assert response.status_code in (201, 202, 422), response.text
        if response.status_code == 202:  # queued behind the burst past RT_VALIDATION_WAIT_MS: ask until settled
            return settled(http, response.json()["position"]["id"]) == "open"
    return response.status_code == 201


def test_cerberus_limits_hold_for_a_burst_spread_over_every_instance_and_both_transports(group: Cluster) -> None:
    key = new_account_key(group)
    envelope = {
        "max_position_size": 100000,
        "max_exposure": 0.05,
        "max_daily_loss": 5000,
        "max_concurrent_positions": 5,
    }
    with client(group.servers[1], key) as http:
        ok(http.put("/v1/risk/envelope", json=envelope))
    opening = {"symbol": "BTC/USDT", "side": "long", "quantity": 0.01}

    def attempt(i: int) -> bool:
        server = group.servers[i % 3]
        if i % 4 == 3:
            reply = ws_call(server, key, "position.open", opening)
            return "error" not in reply
        return opened(server, key, opening)

    with ThreadPoolExecutor(24) as pool:
        accepted = sum(pool.map(attempt, range(200)))
    assert accepted == 5
    for server in group.servers:
        assert len(open_positions(server, key)) == 5

    # Exposure: each 0.03 BTC is 1386 USDT, 1.4% of the 100000 balance; a limit of 5% takes three of them.
    with client(group.servers[2], key) as http:
        ok(http.post("/v1/risk/kill", json={"action": "FLATTEN", "reason": "next round"}))
        ok(http.put("/v1/risk/envelope", json={**envelope, "max_concurrent_positions": 50}))
    bigger = {**opening, "quantity": 0.03}

    def attempt_bigger(i: int) -> bool:
        return opened(group.servers[i % 3], key, bigger)

    with ThreadPoolExecutor(24) as pool:
        accepted = sum(pool.map(attempt_bigger, range(60)))
    assert accepted == 3
    with client(group.servers[0], key) as http:
        risk = ok(http.get("/v1/risk/envelope"))
    exposure = sum(
        Decimal(str(p["quantity"])) * Decimal(str(p["entry_price"])) for p in open_positions(group.servers[0], key)
    )
    assert exposure <= Decimal("0.05") * Decimal(100000), risk


def test_one_idempotency_key_sent_to_every_instance_at_once_trades_once(group: Cluster) -> None:
    key = new_account_key(group)
    order = {"symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 0.01}
    for round_ in range(10):
        idem = f"spread-{round_}"

        def send(server: Server, idem: str = idem) -> httpx.Response:
            with client(server, key) as http:
                return http.post("/v1/orders", json=order, headers={"Idempotency-Key": idem})

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(send, [*group.servers, *group.servers]))
        assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
        assert len({a.json()["order"]["id"] for a in answers}) == 1
    with client(group.servers[2], key) as http:
        placed = ok(http.get("/v1/orders", params={"status": "all", "limit": 500}))["orders"]
    assert len(placed) == 10


def test_a_kill_on_one_instance_locks_the_account_on_every_instance_and_survives_their_restarts(
    group: Cluster,
) -> None:
    key = new_account_key(group)
    with client(group.servers[0], key) as http:
        for _ in range(3):
            ok(http.post("/v1/positions", json={"symbol": "BTC/USDT", "side": "long", "quantity": 0.01}), 201)
    with client(group.servers[1], key) as http:
        report = ok(http.post("/v1/emergency/kill", json={"confirm": True, "reason": "test"}))
    assert report["positions_closed"] == 3
    order = {"symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 0.01}

    def refused_everywhere() -> None:
        for server in group.servers:
            with client(server, key) as http:
                response = http.post("/v1/orders", json=order)
                assert response.status_code == 423, response.text
                assert response.json()["code"] == "TRADING_LOCKED"
                response = http.post("/v1/positions", json={"symbol": "BTC/USDT", "side": "long", "quantity": 0.01})
                assert response.status_code == 423, response.text
                assert ok(http.get("/v1/risk/envelope"))["trading_state"] == "locked"
            reply = ws_call(server, key, "order.place", order)
            assert reply["error"]["code"] == "TRADING_LOCKED", reply

    refused_everywhere()
    for index in range(len(group.servers)):
        group.restart(index)
    refused_everywhere()
    assert all(not open_positions(server, key) for server in group.servers)


def test_every_instance_reads_the_same_account_within_a_tick(group: Cluster) -> None:
    key = new_account_key(group)
    cycle = itertools.cycle(group.servers)
    for _ in range(6):
        with client(next(cycle), key) as http:
            ok(http.post("/v1/positions", json={"symbol": "ETH/USDT", "side": "long", "quantity": 0.1}), 201)
    with client(group.servers[2], key) as http:
        position = open_positions(group.servers[2], key)[-1]  # the first, opened on the first instance
        ok(http.post(f"/v1/positions/{position['id']}/close"))
    # Closed on the third instance, it reads closed on every one, before anything else is read there.
    for server in group.servers:
        with client(server, key) as http:
            assert ok(http.get(f"/v1/positions/{position['id']}"))["position"]["status"] == "closed"
    time.sleep(0.3)  # one tick (200 ms) and the bus's hop

    def view(server: Server) -> tuple[Any, ...]:
        with client(server, key) as http:
            account = ok(http.get("/v1/account"))
            risk = ok(http.get("/v1/risk/envelope"))
        positions = sorted(p["id"] for p in open_positions(server, key))
        return account["balance"], account["open_positions"], risk["current"], tuple(positions)

    views = [view(server) for server in group.servers]
    assert views[0] == views[1] == views[2], views
    assert views[0][1] == 5
