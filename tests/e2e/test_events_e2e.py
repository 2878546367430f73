"""End to end against `rt serve`: what an event says does not depend on when it is read (live, or replayed from the
store after a restart, byte for byte in `data`), and every event is named for what happened (SPEC §6)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from rt.records.events import EVENTS, EVENTS_CHANNEL, channel_of
from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e

ENV = {
    "RT_PAPER_TICK_MS": "0",
    "RT_PAPER_SYMBOLS": "BTC/USDT=46200,ETH/USDT=3500",
    "RT_PAPER_FEE": "0.001",
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
}
LONG = {"exchange": "paper", "symbol": "ETH/USDT", "side": "long", "quantity": 0.01}
SHORT = {"exchange": "paper", "symbol": "BTC/USDT", "side": "short", "quantity": 0.001, "stop_loss": 50000}
RESTING_ENTRY = {"exchange": "paper", "symbol": "ETH/USDT", "side": "long", "quantity": 0.01, "entry_price": 1000}
RESTING_ORDER = {
    "exchange": "paper",
    "symbol": "ETH/USDT",
    "side": "buy",
    "type": "limit",
    "quantity": 0.01,
    "price": 900,
}
DATA_AT = ',"data":'


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


class Raw:
    """A session with batching off, keeping each event's `data` exactly as the server wrote it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.data: dict[tuple[str, int], bytes] = {}
        self.events: list[dict[str, Any]] = []

    async def subscribe(self, channel: str, since: int | None = None) -> int:
        message: dict[str, Any] = {"op": "subscribe", "channel": channel, "id": channel}
        if since is not None:
            message["since"] = since
        await self.ws.send(orjson.dumps(message).decode())
        while True:
            reply = await self.read()
            if reply["type"] == "subscribed" and reply["channel"] == channel:
                return int(reply["seq"])

    async def read(self) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), 10)
        assert isinstance(frame, str)
        message: dict[str, Any] = orjson.loads(frame)
        if message["type"] == "event" and "seq" in message:
            data = frame[frame.index(DATA_AT) + len(DATA_AT) : -1].encode()
            assert orjson.loads(data) == message["data"]  # the slice is the data member, whole
            self.data[(message["channel"], message["seq"])] = data
            self.events.append(message)
        return message

    async def until(self, channel: str, seq: int) -> None:
        while (channel, seq) not in self.data:
            await self.read()

    def named(self, channel: str) -> list[tuple[str, dict[str, Any]]]:
        return [(m["event"], m["data"]) for m in self.events if m["channel"] == channel]


@contextlib.asynccontextmanager
async def session(server: Server, http: httpx.AsyncClient) -> AsyncIterator[Raw]:
    token = ok(await http.post("/v1/ws/token"))["token"]
    url = server.url.replace("http://", "ws://", 1) + f"/v1/ws?token={token}&batch=0"
    async with websockets.connect(url, open_timeout=10) as ws:
        yield Raw(ws)


def rest(server: Server, key: str | None = None) -> httpx.AsyncClient:
    key = key or server.key
    assert key is not None
    return httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": key}, timeout=10)


async def seq_now(server: Server, http: httpx.AsyncClient, channel: str) -> int:
    async with session(server, http) as probe:
        return await probe.subscribe(channel)


async def test_an_event_replayed_after_a_restart_has_the_live_events_data_bytes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with run_server(data_dir, ENV) as first:
        async with rest(first) as http, session(first, http) as live:
            await live.subscribe("events")
            long = ok(await http.post("/v1/positions", json=LONG), 201)["position"]
            short = ok(await http.post("/v1/positions", json=SHORT), 201)["position"]
            for position in (long, short):
                ok(await http.post(f"/v1/positions/{position['id']}/close"))
            order = ok(await http.post("/v1/orders", json=RESTING_ORDER), 201)["order"]
            ok(await http.delete(f"/v1/orders/{order['id']}"))
            current = ok(await http.get("/v1/risk/envelope"))["envelope"]
            ok(await http.put("/v1/risk/envelope", json={**current, "max_daily_loss": 1234.5}))
            last = await seq_now(first, http, "events")
            await live.until("events", last)
    seen_live = {seq: data for (channel, seq), data in live.data.items() if channel == "events"}
    assert sorted(seen_live) == list(range(1, last + 1))
    names = {m["event"] for m in live.events}
    assert {"position.opened", "position.closed", "order.filled", "order.canceled", "account.updated"} <= names

    with run_server(data_dir, ENV) as second:
        async with rest(second, first.key) as http, session(second, http) as replay:
            assert await replay.subscribe("events", since=0) == last
            await replay.until("events", last)
    replayed = {seq: data for (channel, seq), data in replay.data.items() if channel == "events"}
    assert sorted(replayed) == sorted(seen_live)
    for seq, data in seen_live.items():
        assert replayed[seq] == data, f"event {seq} changed shape after the restart"
    opened = next(d for name, d in live.named("events") if name == "position.opened")
    assert isinstance(opened["entry_price"], float) and opened["created_at"].endswith("Z")


async def test_unlock_envelope_changes_and_canceled_entries_are_named_for_what_happened(tmp_path: Path) -> None:
    with run_server(tmp_path / "data", ENV) as server:
        async with rest(server) as http, session(server, http) as conn:
            for channel in ("risk", "positions", "events"):
                await conn.subscribe(channel)

            entry = ok(await http.post("/v1/positions", json=RESTING_ENTRY), 202)["position"]
            (entry_order,) = ok(await http.get("/v1/orders", params={"status": "open"}))["orders"]
            ok(await http.delete(f"/v1/orders/{entry_order['id']}"))
            current = ok(await http.get("/v1/risk/envelope"))["envelope"]
            changed = {**current, "max_concurrent_positions": 7}
            ok(await http.put("/v1/risk/envelope", json=changed))
            ok(await http.post("/v1/risk/kill", json={"action": "LOCK"}))
            unlocked = ok(await http.post("/v1/risk/kill", json={"action": "UNLOCK"}))

            for channel in ("risk", "positions", "events"):
                await conn.until(channel, await seq_now(server, http, channel))

    positions = conn.named("positions")
    assert [name for name, d in positions if d["id"] == entry["id"]] == ["position.canceled"]
    ((_, canceled),) = [(n, d) for n, d in positions if n == "position.canceled"]
    assert (canceled["id"], canceled["status"], canceled["reason"]) == (entry["id"], "canceled", "entry_canceled")

    risk = conn.named("risk")
    assert [name for name, _ in risk] == ["risk.envelope_updated", "emergency.kill_triggered", "risk.unlocked"]
    envelope_event, unlock_event = risk[0][1], risk[2][1]
    assert envelope_event["envelope"] == changed and envelope_event["trading_state"] == "active"
    assert unlock_event["trading_state"] == "active"
    assert (unlock_event["command_id"], unlock_event["action"]) == (unlocked["command_id"], "UNLOCK")
    for message in conn.events:
        assert message["event"] in EVENTS
        assert message["channel"] in (EVENTS_CHANNEL, channel_of(message["event"]))
    # risk.limit_reached means a limit was approached or reached: never "ok".
    assert not [d for name, d in conn.named("events") if name == "risk.limit_reached"]
    assert [name for name, _ in conn.named("events") if name.startswith(("risk.", "emergency.", "position."))] == [
        "position.canceled",
        "risk.envelope_updated",
        "emergency.kill_triggered",
        "risk.unlocked",
    ]


async def test_the_asyncapi_document_lists_every_event_a_channel_sends(tmp_path: Path) -> None:
    with run_server(tmp_path / "data", ENV) as server:
        async with rest(server) as http:
            document = ok(await http.get("/v1/asyncapi.json"))
    subscriptions = document["x-subscriptions"]
    assert "position.canceled" in subscriptions["positions"]["events"]
    assert {"risk.limit_reached", "risk.envelope_updated", "risk.unlocked", "emergency.kill_triggered"} == set(
        subscriptions["risk"]["events"]
    )
