"""kill -9 between a trade's commit and its answer, then a restart: the retry with the same key gets the first answer
and the account holds one order, over REST and over the WebSocket."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e

ENV = {"RT_PAPER_TICK_MS": "0", "RT_PAPER_SYMBOLS": "ETH/USDT=3500"}
ORDER = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 1000}
# The real server, killed right after its first trade commit; importable as tests.e2e.* from the repository root.
CRASHING = ("-m", "tests.e2e.crashing_server")
ROOT = Path(__file__).resolve().parents[2]


def crash_once(data_dir: Path, send: Callable[[str, str], Any]) -> str:
    """Start the server that dies after its first trade commit, send the request, see it die; return the key."""
    with run_server(data_dir, {**ENV, "PYTHONPATH": str(ROOT)}, program=CRASHING) as server:
        assert server.key
        with pytest.raises((httpx.HTTPError, ConnectionClosed)):
            send(server.url, server.key)
        assert server.process.wait(10) == -9, "the server did not die after the commit"
        return server.key


def rest_order(url: str, key: str) -> httpx.Response:
    headers = {"X-API-Key": key, "Idempotency-Key": "kill-9"}
    return httpx.post(url + "/v1/orders", json=ORDER, headers=headers, timeout=10)


def ws_order(url: str, key: str) -> dict[str, Any]:
    token = httpx.post(url + "/v1/ws/token", headers={"X-API-Key": key}, timeout=10).json()["token"]
    with connect(url.replace("http", "ws") + f"/v1/ws?token={token}&batch=0", open_timeout=10) as ws:
        params = {**ORDER, "idempotency_key": "kill-9"}
        ws.send(orjson.dumps({"op": "order.place", "id": 1, "params": params}).decode())
        while True:
            message: dict[str, Any] = orjson.loads(ws.recv(timeout=10))
            if message.get("id") == 1:
                return message


def orders(server: Server, key: str) -> list[dict[str, Any]]:
    with server.client(key) as http:
        found: list[dict[str, Any]] = http.get("/v1/orders", params={"status": "all"}).json()["orders"]
        return found


def test_a_rest_retry_after_kill_9_right_after_the_commit_gets_the_first_answer(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = crash_once(data_dir, lambda url, k: rest_order(url, k).raise_for_status())
    with run_server(data_dir, ENV) as server:
        placed = orders(server, key)
        assert len(placed) == 1
        retry = rest_order(server.url, key)
        assert retry.status_code == 201, retry.text
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.json()["order"]["id"] == placed[0]["id"]
        assert orders(server, key) == placed


def test_a_websocket_retry_after_kill_9_right_after_the_commit_gets_the_first_answer(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key = crash_once(data_dir, ws_order)
    with run_server(data_dir, ENV) as server:
        placed = orders(server, key)
        assert len(placed) == 1
        retry = ws_order(server.url, key)
        assert retry["type"] == "result", retry
        assert retry["data"]["order"]["id"] == placed[0]["id"]
        assert orders(server, key) == placed
