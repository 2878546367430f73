"""Strategies on two real `rt serve` instances on one PostgreSQL and one Redis: a strategy deployed through the
instance that does not lead runs once (one set of orders), and when its leader is killed with SIGKILL the other
resumes it."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import need_postgres, need_redis
from tests.e2e.cluster import Cluster, cluster
from tests.e2e.server import Server
from tests.e2e.test_scaleout_e2e import ENV, client, new_account_key, ok

pytestmark = pytest.mark.e2e

# A buy every second, at market: run twice, it would buy twice a second.
DCA = {
    "name": "d",
    "type": "dca",
    "symbol": "ETH/USDT",
    "config": {"quantity": 0.01, "interval_s": 1, "max_orders": 1000},
}
# ETH at 3500: the levels under it rest as buys.
GRID = {
    "name": "g",
    "type": "grid",
    "symbol": "ETH/USDT",
    "config": {"grid_levels": 5, "price_range": [3000, 4000], "quantity_per_level": 0.01},
}


@pytest.fixture
def group(tmp_path: Any) -> Iterator[Cluster]:
    asyncio.run(need_postgres())
    redis_url = asyncio.run(need_redis())
    with cluster(tmp_path, redis_url, 2, ENV) as running:
        yield running


def orders_of(server: Server, key: str, strategy_id: str, status: str) -> list[dict[str, Any]]:
    with client(server, key) as http:
        listed = ok(http.get("/v1/orders", params={"status": status, "limit": 500}))["orders"]
    return [o for o in listed if o["strategy_id"] == strategy_id]


def buy_times(server: Server, key: str, strategy_id: str) -> list[float]:
    return sorted(
        datetime.fromisoformat(o["created_at"]).timestamp() for o in orders_of(server, key, strategy_id, "all")
    )


def wait_for(check: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not reached"
        time.sleep(0.1)


def test_a_grid_deployed_through_the_follower_rests_one_set_of_orders(group: Cluster) -> None:
    _, follower = group.servers
    key = new_account_key(group)
    with client(follower, key) as http:
        created = ok(http.post("/v1/strategies", json=GRID), 201)["strategy"]
    assert created["status"] == "active"

    def rested() -> bool:
        return len(orders_of(follower, key, created["id"], "open")) >= 2

    wait_for(rested, 10)
    time.sleep(1.5)  # a second runner, had there been one, would have placed its own set by now
    prices = sorted(o["price"] for o in orders_of(follower, key, created["id"], "open"))
    assert prices == [3000, 3250]


def test_a_dca_runs_once_and_the_other_instance_resumes_it_when_its_leader_is_killed(group: Cluster) -> None:
    leader, follower = group.servers
    key = new_account_key(group)
    with client(follower, key) as http:
        created = ok(http.post("/v1/strategies", json=DCA), 201)["strategy"]
    strategy_id = created["id"]
    wait_for(lambda: len(buy_times(follower, key, strategy_id)) >= 4, 30)
    before = buy_times(follower, key, strategy_id)
    gaps = [b - a for a, b in itertools.pairwise(before)]
    assert min(gaps) > 0.5, gaps  # one runner: a buy a second, never two at once

    leader.process.kill()
    leader.process.wait(10)
    count = len(before)
    wait_for(lambda: len(buy_times(follower, key, strategy_id)) >= count + 3, 30)  # lease expiry, then a buy a second
    after = buy_times(follower, key, strategy_id)
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert min(gaps) > 0.5, gaps
    with client(follower, key) as http:
        stored = ok(http.get(f"/v1/strategies/{strategy_id}"))["strategy"]
    assert stored["status"] == "active"
