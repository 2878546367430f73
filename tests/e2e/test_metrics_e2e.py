"""End to end against `rt serve`: what the scrape on RT_METRICS_PORT shows after requests, a Cerberus refusal,
a kill and a WebSocket fan-out, with exact counts (a fresh process counts from zero)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.server import Server, free_port, run_server

pytestmark = pytest.mark.e2e

ENV = {
    "RT_PAPER_TICK_MS": "0",
    "RT_PAPER_SYMBOLS": "ETH/USDT=3500",
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
}
RESTING = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 1000}
TOO_BIG = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 1}
REQUESTS = "rt_http_request_duration_seconds_count"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scrape:
    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        self.text = response.text
        self.samples: Samples = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(self.text):
            self.types[family.name] = family.type
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def label_values(self, name: str, label: str) -> set[str]:
        return {dict(labels)[label] for n, labels in self.samples if n == name}


async def scrape(port: int) -> Scrape:
    async with httpx.AsyncClient(timeout=5) as http:
        return Scrape(await http.get(f"http://127.0.0.1:{port}/metrics"))


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, metrics_port: int) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("metrics") / "data", {**ENV, "RT_METRICS_PORT": str(metrics_port)}) as s:
        assert s.key
        yield s


class Events:
    """The event messages one WebSocket session received."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    async def until(self, event: str, within: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            for message in self.received:
                if message.get("event") == event:
                    return message
            await self.read(max(deadline - time.monotonic(), 0.01))

    async def read(self, within: float) -> None:
        decoded = orjson.loads(await asyncio.wait_for(self.ws.recv(), within))
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if message["type"] == "event":
                self.received.append(message)


async def test_a_scrape_shows_requests_refusals_kills_and_fan_out(server: Server, metrics_port: int) -> None:
    before = await scrape(metrics_port)
    assert before("rt_orders_accepted_total") == 0
    assert before("rt_events_fanned_out_total") == 0
    assert before("process_resident_memory_bytes") > 0
    assert before("process_cpu_seconds_total") > 0
    headers = {"X-API-Key": server.key or ""}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as http:
        for _ in range(2):
            assert (await http.get("/v1/positions/pos_missing")).status_code == 404
        token = (await http.post("/v1/ws/token")).json()["token"]
        async with websockets.connect(f"ws://127.0.0.1:{server.port}/v1/ws?token={token}") as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "channel": "orders", "id": "s"}).decode())
            events = Events(ws)
            resting = (await http.post("/v1/orders", json=RESTING)).json()["order"]
            assert (await events.until("order.created"))["data"]["id"] == resting["id"]

            current = (await http.get("/v1/risk/envelope")).json()["envelope"]
            assert (await http.put("/v1/risk/envelope", json={**current, "max_position_size": 100})).status_code == 200
            refused = await http.post("/v1/orders", json=TOO_BIG)
            assert (refused.status_code, refused.json()["details"]["check"]) == (422, "position_size")
            assert (await http.post("/v1/emergency/kill", json={"confirm": True, "reason": "drill"})).status_code == 200
            assert (await events.until("order.canceled"))["data"]["id"] == resting["id"]
            assert (await http.post("/v1/orders", json=RESTING)).status_code == 423

            during = await scrape(metrics_port)
            deadline = time.monotonic() + 5
            while during("rt_events_fanned_out_total") != len(events.received) and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    await events.read(0.2)  # an event handed to the queue and not yet read
                during = await scrape(metrics_port)

    after = await scrape(metrics_port)
    # request latency: by route template and status, never by raw path
    assert after(REQUESTS, method="GET", route="/v1/positions/{position_id}", status="404") == 2
    assert after(REQUESTS, method="POST", route="/v1/orders", status="201") == 1
    assert after(REQUESTS, method="POST", route="/v1/orders", status="422") == 1
    assert after(REQUESTS, method="POST", route="/v1/orders", status="423") == 1
    assert after(REQUESTS, method="POST", route="/v1/emergency/kill", status="200") == 1
    assert not any("pos_missing" in route for route in after.label_values(REQUESTS, "route"))
    assert after.types["rt_http_request_duration_seconds"] == "histogram"
    # Cerberus, per check
    assert after("rt_orders_accepted_total") == 1
    assert after("rt_orders_refused_total", check="position_size") == 1
    assert after("rt_orders_refused_total", check="trading_state") == 1
    assert after("rt_orders_refused_total", check="margin") == 0
    # Charon
    assert after("rt_kill_duration_seconds_count", action="KILL") == 1
    assert after("rt_kill_duration_seconds_sum", action="KILL") > 0
    # fan-out: one subscriber, so one hand-off per event it received; queue depth and sessions while it was open
    assert len(events.received) >= 2
    assert during("rt_events_fanned_out_total") == len(events.received)
    assert during("rt_hub_fanout_duration_seconds_count") == len(events.received)
    assert during("rt_ws_connections") == 1 and during("rt_ws_subscriptions") == 1
    assert during("rt_ws_queue_depth_max") >= 0 and "rt_ws_queue_depth_max" in during.types
    assert after("rt_ws_connections_accepted_total") == 1
    assert after("rt_ws_connections") == 0
    # the store
    assert after("rt_store_commit_duration_seconds_count") > before("rt_store_commit_duration_seconds_count")


async def test_the_scrape_port_answers_only_metrics(metrics_port: int, server: Server) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(f"http://127.0.0.1:{metrics_port}/metrics?x=1")).status_code == 200
        assert (await http.get(f"http://127.0.0.1:{metrics_port}/other")).status_code == 404
        assert (await http.post(f"http://127.0.0.1:{metrics_port}/metrics")).status_code == 404
        head = await http.head(f"http://127.0.0.1:{metrics_port}/metrics")
        assert head.status_code == 200 and head.content == b""
