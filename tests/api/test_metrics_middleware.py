"""rt/api/metrics_middleware: REST latency per route template and status, as the app serves it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from rt.app import create_app
from rt.config import Settings
from rt.metrics import REQUEST_SECONDS

NAME = "rt_http_request_duration_seconds_count"


def count(method: str, route: str, status: int) -> float:
    made = CollectorRegistry()
    made.register(REQUEST_SECONDS)
    return made.get_sample_value(NAME, {"method": method, "route": route, "status": str(status)}) or 0.0


def series() -> set[tuple[str, str, str]]:
    made = CollectorRegistry()
    made.register(REQUEST_SECONDS)
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"])
        for family in made.collect()
        for s in family.samples
        if s.name == NAME
    }


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings.from_env(
        {
            "RT_DATA_DIR": str(tmp_path),
            "RT_PAPER_TICK_MS": "0",
            "RT_BOOTSTRAP": "0",
            "RT_CORS_ORIGINS": "https://a.example",
        }
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rt.test") as made,
    ):
        yield made


async def test_requests_are_counted_by_route_template_never_by_raw_path(client: httpx.AsyncClient) -> None:
    position = "/v1/positions/{position_id}"
    ticker = "/v1/markets/{symbol}/ticker"
    before = {
        "health": count("GET", "/v1/health", 200),
        "position": count("GET", position, 401),
        "ticker": count("GET", ticker, 401),
        "unmatched": count("GET", "unmatched", 404),
        "other": count("other", "unmatched", 404),
        "preflight": count("OPTIONS", "/v1/orders", 200),
    }

    assert (await client.get("/v1/health")).status_code == 200
    for n in range(3):
        assert (await client.get(f"/v1/positions/pos_{n}")).status_code == 401
    assert (await client.get("/v1/markets/BTC%2FUSDT/ticker")).status_code == 401
    assert (await client.get("/nowhere/123")).status_code == 404
    assert (await client.request("BREW", "/nowhere")).status_code == 404
    preflight = {"Origin": "https://a.example", "Access-Control-Request-Method": "POST"}
    assert (await client.options("/v1/orders", headers=preflight)).status_code == 200

    assert count("GET", "/v1/health", 200) == before["health"] + 1
    assert count("GET", position, 401) == before["position"] + 3
    assert count("GET", ticker, 401) == before["ticker"] + 1
    assert count("GET", "unmatched", 404) == before["unmatched"] + 1
    assert count("other", "unmatched", 404) == before["other"] + 1
    assert count("OPTIONS", "/v1/orders", 200) == before["preflight"] + 1
    routes = {route for _, route, _ in series()}
    assert not any("pos_" in route or "nowhere" in route or "BTC" in route for route in routes)
