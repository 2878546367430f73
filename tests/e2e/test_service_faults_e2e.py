"""End to end against `rt serve`: PostgreSQL or Redis unreachable when it starts, and lost while it runs.

Services are cut with a TCP proxy of the test's own in front of them (tests/faults.py), never by stopping them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests import pg
from tests.conftest import need_postgres, need_redis
from tests.e2e.server import Server, free_port, run_server
from tests.faults import Proxy, proxy

ENV = {
    "RT_PAPER_TICK_MS": "0",
    "RT_PAPER_SYMBOLS": "ETH/USDT=3500",
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
}
# Far below the market, so the order rests and nothing else moves.
ORDER = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 1000}
RECOVERY_S = 10.0


# unreachable at start


def _serve(data_dir: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    full = {**os.environ, "RT_DATA_DIR": str(data_dir), "RT_PORT": str(free_port()), **env}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "rt", "serve"], env=full, capture_output=True, text=True, timeout=30, check=False
    )
    return done, time.monotonic() - started


def _url(service: str, port: int) -> dict[str, str]:
    if service == "Redis":
        return {"RT_REDIS_URL": f"redis://:hunter2@127.0.0.1:{port}/0"}
    return {"RT_DATABASE_URL": f"postgresql://rt:hunter2@127.0.0.1:{port}/rt"}


def _assert_named_in_one_line(done: subprocess.CompletedProcess[str], service: str, port: int, data: Path) -> str:
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    line = lines[0]
    assert f"cannot reach {service} at " in line and f"127.0.0.1:{port}" in line
    assert ":***@" in line, "the URL is shown with its password masked"
    assert "hunter2" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    # Nothing was opened, created or printed: no store, no bootstrap key.
    assert done.stdout == ""
    assert not (data / "rt.db").exists()
    return line


@pytest.mark.parametrize("service", ["Redis", "PostgreSQL"])
def test_a_service_refusing_connections_at_start_is_named_in_one_line_and_rt_exits(
    service: str, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    done, elapsed = _serve(tmp_path / "data", _url(service, port))
    line = _assert_named_in_one_line(done, service, port, tmp_path / "data")
    assert "Connect call failed" in line or "refused" in line.lower()
    assert elapsed < 5


@pytest.mark.parametrize("service", ["Redis", "PostgreSQL"])
def test_a_service_that_never_answers_at_start_is_named_within_seconds(service: str, tmp_path: Path) -> None:
    with socket.socket() as silent:  # the kernel accepts connections; nothing ever answers on them
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        done, elapsed = _serve(tmp_path / "data", _url(service, port))
    _assert_named_in_one_line(done, service, port, tmp_path / "data")
    assert elapsed < 10


# lost while running


@asynccontextmanager
async def session(server: Server, http: httpx.AsyncClient) -> AsyncIterator[ClientConnection]:
    token = (await http.post("/v1/ws/token")).json()["token"]
    url = server.url.replace("http://", "ws://", 1) + f"/v1/ws?token={token}"
    async with websockets.connect(url, open_timeout=10) as ws:
        yield ws


async def answer(ws: ClientConnection, request_id: str, within: float = 10.0) -> dict[str, Any]:
    """The result or error answering `request_id`; other messages (heartbeats, events) are skipped."""
    deadline = time.monotonic() + within
    while True:
        decoded = orjson.loads(await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.01)))
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if message.get("id") == request_id and message["type"] in {"result", "error", "pong", "subscribed"}:
                return dict(message)


async def event(ws: ClientConnection, channel: str, order_id: str, within: float = RECOVERY_S) -> dict[str, Any]:
    """The first event on `channel` about `order_id`; other messages are skipped."""
    deadline = time.monotonic() + within
    while True:
        decoded = orjson.loads(await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.01)))
        for message in decoded if isinstance(decoded, list) else [decoded]:
            if message["type"] == "event" and message["channel"] == channel and message["data"]["id"] == order_id:
                return dict(message)


async def command(ws: ClientConnection, request_id: str, op: str, **params: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"op": op, "id": request_id, "params": params}).decode())
    return await answer(ws, request_id)


async def until_accepted(http: httpx.AsyncClient, key: str) -> httpx.Response:
    """The same write, retried as a client told `Retry-After: 1` would, until it is answered otherwise than 503."""
    deadline = time.monotonic() + RECOVERY_S
    while True:
        response = await http.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": key})
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(float(response.headers["retry-after"]) / 4)


async def _lose_and_recover(server: Server, cut: Proxy, service: str, checks: set[str]) -> None:
    assert server.key is not None
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.key}, timeout=15) as http:
        async with session(server, http) as ws:
            assert (await http.get("/v1/ready")).status_code == 200
            await ws.send(orjson.dumps({"op": "subscribe", "channel": "orders", "id": "sub"}).decode())
            assert (await answer(ws, "sub"))["type"] != "error"
            cut.cut()

            refused = await http.post("/v1/orders", json=ORDER, headers={"Idempotency-Key": "rest-during-cut"})
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "1"
            assert refused.headers["content-type"].startswith("application/problem+json")
            problem = refused.json()
            assert problem["code"] == "SERVICE_UNAVAILABLE" and problem["status"] == 503
            assert service in problem["detail"]

            ready = await http.get("/v1/ready")
            assert ready.status_code == 503
            failing = {name for name, state in ready.json()["checks"].items() if state != "ok"}
            assert checks <= failing, ready.json()

            placed = await command(ws, "ws-1", "order.place", **ORDER, idempotency_key="ws-during-cut")
            held_back: str | None = None
            if service == "Redis":
                # The store took it (PostgreSQL is up): the order is answered, and its events reach the bus from the
                # outbox once Redis is back. (The REST write above was refused before: its rate limit is in Redis.)
                assert placed["type"] == "result", placed
                held_back = placed["data"]["order"]["id"]
            else:
                assert placed["type"] == "error", placed
                assert placed["error"]["code"] == "SERVICE_UNAVAILABLE" and placed["error"]["retry_after"] == 1
            # A subscribe that needs the lost service is refused the same way (one that does not is answered).
            await ws.send(orjson.dumps({"op": "subscribe", "channel": "positions", "id": "sub-cut"}).decode())
            subscribe = await answer(ws, "sub-cut")
            assert subscribe["type"] == "subscribed" or subscribe["error"]["code"] == "SERVICE_UNAVAILABLE", subscribe
            # The socket stays up through the outage.
            await ws.send(orjson.dumps({"op": "ping", "id": "still-there"}).decode())
            assert (await answer(ws, "still-there"))["type"] == "pong"

            cut.restore()
            accepted = await until_accepted(http, "rest-during-cut")
            assert accepted.status_code == 201, accepted.text
            # The subscription made before the outage carries events again.
            created = await event(ws, "orders", accepted.json()["order"]["id"])
            assert created["event"] == "order.created"
            if held_back is not None:
                relayed = await event(ws, "orders", held_back)
                assert relayed["event"] == "order.created"
            assert (await http.get("/v1/ready")).status_code == 200
            again = await command(ws, "ws-2", "order.place", **ORDER, idempotency_key="ws-during-cut")
            assert again["type"] == "result", again

        # Each write happened once, whether the outage struck before or after its commit: the retry with its key
        # either placed it or replayed the answer of the one that was placed.
        orders = (await http.get("/v1/orders", params={"status": "all"})).json()["orders"]
        assert sorted(o["id"] for o in orders) == sorted([accepted.json()["order"]["id"], again["data"]["order"]["id"]])


@pytest.fixture
def redis_proxy() -> Iterator[Proxy]:
    target = urlsplit(asyncio.run(need_redis()))
    with proxy(target.hostname or "127.0.0.1", target.port or 6379) as made:
        yield made


async def test_redis_lost_while_running_answers_503_and_recovers_by_itself(
    tmp_path: Path, redis_prefix: str, redis_proxy: Proxy
) -> None:
    path = urlsplit(await need_redis()).path
    env = {**ENV, "RT_REDIS_URL": f"redis://{redis_proxy.url_host}{path}", "RT_REDIS_PREFIX": redis_prefix}
    with run_server(tmp_path / "data", env) as server:
        assert redis_proxy.connections > 0, "rt reached Redis through the proxy"
        await _lose_and_recover(server, redis_proxy, "Redis", {"limiter", "bus"})


@pytest.fixture
def postgres_proxy() -> Iterator[Proxy]:
    target = urlsplit(asyncio.run(need_postgres()))
    with proxy(target.hostname or "127.0.0.1", target.port or 5432) as made:
        yield made


async def test_postgres_lost_while_running_answers_503_and_recovers_by_itself(
    tmp_path: Path, postgres_proxy: Proxy
) -> None:
    async with pg.database(await need_postgres()) as url:
        parts = urlsplit(url)
        through = parts._replace(netloc=f"{parts.username or 'postgres'}@{postgres_proxy.url_host}").geturl()
        with run_server(tmp_path / "data", {**ENV, "RT_DATABASE_URL": through}) as server:
            assert postgres_proxy.connections > 0, "rt reached PostgreSQL through the proxy"
            await _lose_and_recover(server, postgres_proxy, "PostgreSQL", {"store"})
