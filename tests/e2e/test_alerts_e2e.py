"""End to end against `rt serve`: a TradingView alert posted as text/plain trades through Cerberus, the events it
makes reach a WebSocket subscribed to `events`, repeats trade once, and a bad passphrase locks the sender out; the
passphrase is never logged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.e2e.checks import assert_problem
from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e

ENV = {
    "RT_PAPER_TICK_MS": "0",
    "RT_PAPER_SYMBOLS": "BTC/USDT=46200,ETH/USDT=3500",
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
    "RT_LOCKOUT_THRESHOLD": "3",
    "RT_ALERT_DEDUPE_S": "1",
    "RT_ALERT_RATE": "600/100",
}
TEXT = {"Content-Type": "text/plain; charset=utf-8"}


def tradingview(passphrase: str, **changes: Any) -> bytes:
    """What a TradingView strategy alert's message template renders to."""
    body = {
        "passphrase": passphrase,
        "symbol": "BINANCE:BTCUSDT",
        "action": "buy",
        "quantity": "0.01",
        "ticker": "BTCUSDT",
        "exchange": "BINANCE",
        **changes,
    }
    return orjson.dumps(body)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


@contextlib.asynccontextmanager
async def events(server: Server, http: httpx.AsyncClient) -> AsyncIterator[ClientConnection]:
    token = ok(await http.post("/v1/ws/token"))["token"]
    url = server.url.replace("http://", "ws://", 1) + f"/v1/ws?token={token}&batch=0"
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "channel": "events", "id": "e"}).decode())
        while orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "subscribed":
            pass
        yield ws


async def next_event(ws: ClientConnection, name: str) -> dict[str, Any]:
    while True:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if message.get("type") == "event" and message.get("event") == name:
            return dict(message["data"])


async def test_alerts_trade_once_through_cerberus_and_their_events_reach_the_socket(tmp_path: Path) -> None:
    with run_server(tmp_path / "data", ENV) as server:
        assert server.key is not None
        async with (
            httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.key}, timeout=10) as http,
            httpx.AsyncClient(base_url=server.url, timeout=10) as sender,
            events(server, http) as ws,
        ):
            hook = ok(await http.post("/v1/alert-hooks", json={"name": "tv", "max_quantity": 1}), 201)
            passphrase = hook["passphrase"]

            first = ok(await sender.post(hook["url"], content=tradingview(passphrase), headers=TEXT), 202)
            executed = await next_event(ws, "alert.executed")
            assert executed == {
                "alert_id": first["alert_id"],
                "hook_id": hook["id"],
                "action": "buy",
                "symbol": "BTC/USDT",
                "order_ids": [first["order_id"]],
            }
            # The same body again at once is TradingView's retry: one order, the first answer.
            repeat = await sender.post(hook["url"], content=tradingview(passphrase), headers=TEXT)
            assert repeat.status_code == 202 and repeat.json() == first
            # After the dedupe window (1 s; a window boundary makes it up to 2) the same body is a new alert.
            deadline = time.monotonic() + 10
            while (
                later := ok(await sender.post(hook["url"], content=tradingview(passphrase), headers=TEXT), 202)
            ) == first:
                assert time.monotonic() < deadline, "the same body was still a repeat long after the dedupe window"
                await asyncio.sleep(0.25)
            assert later["order_id"] != first["order_id"]
            assert len(ok(await http.get("/v1/orders"))["orders"]) == 2

            too_big = tradingview(passphrase, quantity="0.9", id="big-1")  # 0.9 BTC at 46200 > max_position_size
            refused = assert_problem(
                await sender.post(hook["url"], content=too_big, headers=TEXT), 422, "VALIDATION_FAILED"
            )
            assert refused["details"]["check"] == "position_size"
            rejected = await next_event(ws, "alert.rejected")
            assert (rejected["hook_id"], rejected["code"]) == (hook["id"], "VALIDATION_FAILED")
            replayed = await sender.post(hook["url"], content=too_big, headers=TEXT)
            assert replayed.status_code == 422 and replayed.headers["idempotent-replayed"] == "true"
            assert len(ok(await http.get("/v1/positions"))["positions"]) == 2

            ok(await http.post("/v1/risk/kill", json={"action": "LOCK"}))
            locked = tradingview(passphrase, id="while-locked")
            assert_problem(await sender.post(hook["url"], content=locked, headers=TEXT), 423, "TRADING_LOCKED")
            assert (await next_event(ws, "alert.rejected"))["code"] == "TRADING_LOCKED"
            closed = ok(
                await sender.post(hook["url"], content=tradingview(passphrase, action="close"), headers=TEXT), 202
            )
            assert len(closed["order_ids"]) == 2  # closing still works while locked
            assert ok(await http.get("/v1/positions"))["positions"] == []

            log = ok(await http.get(f"/v1/alert-hooks/{hook['id']}/log"))
            outcomes = sorted(e["outcome"] for e in log["alerts"])
            assert outcomes.count("duplicate") >= 2 and outcomes.count("executed") == 3
            assert outcomes.count("rejected") == 2
            assert passphrase not in orjson.dumps(log).decode()
        assert passphrase not in server.logs() and passphrase not in server.stdout()


async def test_a_wrong_passphrase_and_an_unknown_hook_look_alike_and_lock_the_sender_out(tmp_path: Path) -> None:
    with run_server(tmp_path / "data", ENV) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": server.key or ""}, timeout=10) as http,
            httpx.AsyncClient(base_url=server.url, timeout=10) as sender,
        ):
            hook = ok(await http.post("/v1/alert-hooks", json={"max_quantity": 1, "allow_ips": "127.0.0.1"}), 201)
            wrong = await sender.post(hook["url"], content=tradingview("x" * 32), headers=TEXT)
            unknown = await sender.post("/v1/alerts/alh_00000000000000000000", content=tradingview("x"), headers=TEXT)
            answers = [assert_problem(r, 401, "ALERT_UNAUTHORIZED") for r in (wrong, unknown)]
            same = [{k: v for k, v in a.items() if k != "instance"} for a in answers]
            assert same[0] == same[1]
            third = await sender.post(hook["url"], content=tradingview(""), headers=TEXT)
            assert_problem(third, 429, "IP_LOCKED_OUT")
            right = await sender.post(hook["url"], content=tradingview(hook["passphrase"]), headers=TEXT)
            assert_problem(right, 429, "IP_LOCKED_OUT")
            # The sender's address is locked out for API keys too (the lockout is per IP), so nothing more is read.
