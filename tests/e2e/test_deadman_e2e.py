"""The dead man's switch survives its instance: two real `rt serve` on one PostgreSQL and one Redis; the instance
that holds the session (and, started first, every role) is killed with SIGKILL, and the other cancels the orders
within the timeout + 2 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import need_postgres, need_redis
from tests.e2e.cluster import Cluster, cluster
from tests.e2e.server import Server
from tests.e2e.test_scaleout_e2e import ENV, client, new_account_key, ok

pytestmark = pytest.mark.e2e

RESTING = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 1000}


@pytest.fixture
def group(tmp_path: Any) -> Iterator[Cluster]:
    asyncio.run(need_postgres())
    redis_url = asyncio.run(need_redis())
    with cluster(tmp_path, redis_url, 2, ENV) as running:
        yield running


class Socket:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0

    def call(self, op: str, **params: Any) -> Any:
        self.next_id += 1
        self.ws.send(orjson.dumps({"op": op, "id": self.next_id, "params": params}).decode())
        while True:
            message: dict[str, Any] = orjson.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.next_id:
                assert message["type"] == "result", message
                return message["data"]


def socket(server: Server, key: str) -> ClientConnection:
    token = ok(httpx.post(server.url + "/v1/ws/token", headers={"X-API-Key": key}, timeout=10))["token"]
    return connect(server.url.replace("http", "ws") + f"/v1/ws?token={token}&batch=0", open_timeout=10)


def kill_9(server: Server) -> float:
    server.process.kill()
    server.process.wait(10)
    return time.monotonic()


def status_of(server: Server, key: str, order_id: str) -> str:
    with client(server, key) as http:
        return str(ok(http.get(f"/v1/orders/{order_id}"))["order"]["status"])


def canceled_within(server: Server, key: str, order_id: str, since: float, seconds: float) -> float:
    while status_of(server, key, order_id) != "canceled":
        assert time.monotonic() - since < seconds, f"{order_id} still open {seconds} s after the kill"
        time.sleep(0.05)
    return time.monotonic() - since


def test_cancel_after_is_carried_out_by_another_instance_when_its_own_is_killed(group: Cluster) -> None:
    first, second = group.servers
    key = new_account_key(group)
    with socket(first, key) as ws:
        conn = Socket(ws)
        order = conn.call("order.place", **RESTING)["order"]
        armed = conn.call("orders.cancel_after", timeout_s=2)
        assert armed["timeout_s"] == 2
        killed_at = kill_9(first)
    assert status_of(second, key, order["id"]) == "open"
    canceled_within(second, key, order["id"], killed_at, 4)


def test_cancel_on_disconnect_is_carried_out_by_another_instance_when_its_own_is_killed(group: Cluster) -> None:
    first, second = group.servers
    key = new_account_key(group)
    with client(second, key) as http:
        elsewhere = ok(http.post("/v1/orders", json=RESTING), 201)["order"]
    with socket(first, key) as ws:
        conn = Socket(ws)
        assert conn.call("session.configure", cancel_on_disconnect=True) == {"cancel_on_disconnect": True}
        mine = conn.call("order.place", **RESTING)["order"]
        killed_at = kill_9(first)
    canceled_within(second, key, mine["id"], killed_at, 4)
    assert status_of(second, key, elsewhere["id"]) == "open"  # not placed through that session


def test_cancel_on_disconnect_turned_off_leaves_nothing_to_lapse_on_another_instance(group: Cluster) -> None:
    """Turned off before the socket goes, the durable record goes with it: nothing lapses later."""
    first, second = group.servers
    key = new_account_key(group)
    with socket(first, key) as ws:
        conn = Socket(ws)
        conn.call("session.configure", cancel_on_disconnect=True)
        kept = conn.call("order.place", **RESTING)["order"]
        conn.call("session.configure", cancel_on_disconnect=False)
    time.sleep(3.5)  # past a heartbeat's life: a record left behind would have lapsed by now
    assert status_of(second, key, kept["id"]) == "open"
