"""rt.client against the real server: REST calls and errors, the resuming Stream, and `rt watch`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from rt.client import ApiError, Client, Stream
from rt.client.stream import Retry
from tests.conftest import need_redis
from tests.e2e.server import Server, free_port, run_server
from tests.e2e.test_ws_e2e import ENV, MARKET, RESTING, forget, full_key, last_seqs

pytestmark = pytest.mark.e2e

Message = dict[str, Any]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("client") / "data", ENV) as started:
        yield started


@pytest.fixture
async def client(server: Server) -> AsyncIterator[Client]:
    key = await full_key(server)
    async with Client(server.url, key.key) as made:
        yield made


@contextlib.asynccontextmanager
async def serving(data_dir: Path, env: dict[str, str], port: int | None = None) -> AsyncIterator[Server]:
    """run_server() off the event loop, so streams keep running (and retrying) while a server starts and stops."""
    manager = run_server(data_dir, env, port=port)
    started = await asyncio.to_thread(manager.__enter__)
    try:
        yield started
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)


class Reader:
    """Iterates a Stream in the background, keeping every message it yields."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.messages: list[Message] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for message in self.stream:
            self.messages.append(message)

    def seqs(self, channel: str) -> list[int]:
        return [m["seq"] for m in self.messages if m["type"] == "event" and m.get("channel") == channel]

    async def until(self, predicate: Any, within: float = 15.0) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            if self._task.done():
                self._task.result()
                pytest.fail("the stream ended")
            assert time.monotonic() < deadline, f"not reached; got {self.messages[-5:]}"
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Stream.close() ends the iteration."""
        await self.stream.close()
        await asyncio.wait_for(self._task, 5)


# REST


async def test_account_orders_and_positions(client: Client) -> None:
    account = await client.account()
    assert account["balance"] == 100000 and account["trading_state"] == "active"
    assert "BTC/USDT" in {m["symbol"] for m in await client.markets()}
    assert (await client.ticker("ETH/USDT"))["last"] == 3500

    resting = await client.place_order(**RESTING)
    assert resting["status"] == "open"
    assert [o["id"] for o in await client.orders()] == [resting["id"]]
    assert (await client.cancel_order(resting["id"]))["status"] == "canceled"
    again = await client.place_order(**RESTING, idempotency_key="once")
    assert await client.place_order(**RESTING, idempotency_key="once") == again

    position = await client.open_position(exchange="paper", symbol="ETH/USDT", side="long", quantity=0.1)
    assert position["status"] == "open"
    assert [p["id"] for p in await client.positions()] == [position["id"]]
    assert (await client.position(position["id"]))["quantity"] == 0.1
    assert (await client.close_position(position["id"]))["status"] == "closed"
    assert await client.positions() == []
    assert [p["id"] for p in await client.positions(status="closed")] == [position["id"]]
    assert (await client.risk())["status"] in {"ok", "warning"}
    assert len(await client.ws_token()) >= 32


async def test_errors_are_api_errors_with_their_code(client: Client) -> None:
    with pytest.raises(ApiError) as rejected:
        await client.place_order(**{**MARKET, "symbol": "BTC/USDT", "quantity": 1})
    error = rejected.value
    assert (error.status, error.code) == (422, "VALIDATION_FAILED")
    assert error.problem["details"]["check"] == "position_size"
    assert "422 VALIDATION_FAILED" in str(error)

    with pytest.raises(ApiError) as missing:
        await client.position("pos_nope")
    assert (missing.value.status, missing.value.code) == (404, "NOT_FOUND")

    async with Client(client.base_url, "rt_live_" + "x" * 32) as stranger:
        with pytest.raises(ApiError) as refused:
            await stranger.account()
    assert (refused.value.status, refused.value.code) == (401, "API_KEY_INVALID")


# Stream


async def test_a_stream_receives_snapshots_events_and_command_results(client: Client) -> None:
    reader = Reader(client.stream("orders", "positions"))
    try:
        await reader.until(
            lambda: {m.get("channel") for m in reader.messages if m["type"] == "snapshot"} >= {"orders", "positions"}
        )
        order = await client.place_order(**MARKET)
        await reader.until(
            lambda: any(m["type"] == "event" and m["data"]["id"] == order["id"] for m in reader.messages)
        )
        reply = await reader.stream.command("order.place", RESTING)
        assert reply["data"]["order"]["status"] == "open"
        with pytest.raises(ApiError) as refused:
            await reader.stream.command("order.place", {**MARKET, "symbol": "BTC/USDT", "quantity": 1})
        assert refused.value.code == "VALIDATION_FAILED"
        assert reader.stream.last_seq["orders"] == reader.seqs("orders")[-1]
        assert not [m for m in reader.messages if m["type"] in ("result", "error")]
    finally:
        await reader.close()


async def test_a_stream_over_several_urls_moves_on_from_one_that_refuses_at_once(server: Server) -> None:
    key = await full_key(server)
    dead = f"http://127.0.0.1:{free_port()}"
    heard: list[Retry] = []
    async with Client([dead, server.url], key.key) as client:
        reader = Reader(client.stream("orders", on_retry=heard.append))
        try:
            await reader.until(lambda: "orders" in reader.stream.last_seq)
            assert reader.stream.connected_to == server.url
            assert client.base_url == server.url  # REST calls follow
            order = await client.place_order(**MARKET)
            await reader.until(lambda: any((m.get("data") or {}).get("id") == order["id"] for m in reader.messages))
        finally:
            await reader.close()
    assert [(r.attempt, r.delay) for r in heard] == [(1, 0.0)]
    assert heard[0].reason.startswith(f"cannot connect to {dead}: connection refused")
    assert reader.stream.connected_to is None


async def test_a_stream_resumes_after_its_socket_dies_without_duplicates_or_gaps(server: Server) -> None:
    key = await full_key(server)
    async with Client(server.url, key.key) as client:
        reader = Reader(client.stream("orders", "events", max_backoff=0.2))
        try:
            await reader.until(lambda: "events" in reader.stream.last_seq and "orders" in reader.stream.last_seq)
            placed = [(await client.place_order(**MARKET))["id"] for _ in range(3)]
            await reader.until(lambda: len(reader.seqs("orders")) >= 2)
            reader.stream._ws.transport.abort()  # the network drops the connection
            placed += [(await client.place_order(**MARKET))["id"] for _ in range(3)]
            last = await last_seqs(server, key, "orders", "events")
            await reader.until(lambda: reader.stream.last_seq.get("orders", 0) >= last["orders"])
            await reader.until(lambda: reader.stream.last_seq.get("events", 0) >= last["events"])
        finally:
            await reader.close()
    assert reader.stream.reconnects >= 1
    for channel in ("orders", "events"):
        assert reader.seqs(channel) == list(range(1, last[channel] + 1)), channel
    created = [
        m["data"]["id"] for m in reader.messages if m.get("channel") == "orders" and m.get("event") == "order.created"
    ]
    assert created == placed


async def test_a_stream_comes_back_after_a_server_restart(tmp_path: Path) -> None:
    """In-memory bus: the new process continues the stored sequences, so the stream resumes (no reset snapshot)."""
    data_dir = tmp_path / "data"
    async with serving(data_dir, ENV) as first:
        key = await full_key(first)
        port = first.port
        client = Client(first.url, key.key)
        reader = Reader(client.stream("orders", max_backoff=0.2))
        await reader.until(lambda: "orders" in reader.stream.last_seq)
        before = await client.place_order(**MARKET)
        await reader.until(lambda: reader.stream.last_seq["orders"] >= 2)
    try:
        await reader.until(lambda: any(m.get("event") == "server.shutdown" for m in reader.messages))
        down = reader.stream.reconnects
        await reader.until(lambda: reader.stream.reconnects >= down + 2)  # retrying against a closed port
        async with serving(data_dir, ENV, port=port):
            await reader.until(lambda: len([m for m in reader.messages if m["type"] == "subscribed"]) >= 2)
            after = await client.place_order(**MARKET)
            await reader.until(lambda: any((m.get("data") or {}).get("id") == after["id"] for m in reader.messages))
    finally:
        await reader.close()
        await client.close()
    created = [m["data"]["id"] for m in reader.messages if m.get("event") == "order.created"]
    assert created == [before["id"], after["id"]]
    assert not [m for m in reader.messages if m["type"] == "snapshot" and m.get("reset")]
    seqs = [m["seq"] for m in reader.messages if m["type"] == "event" and m.get("channel") == "orders"]
    assert seqs == [1, 2, 3, 4]


async def test_a_stream_replays_what_it_missed_across_a_restart_with_redis(tmp_path: Path, redis_prefix: str) -> None:
    redis_url = await need_redis()
    env = {**ENV, "RT_REDIS_URL": redis_url, "RT_REDIS_PREFIX": redis_prefix}
    data_dir = tmp_path / "data"
    try:
        async with serving(data_dir, env) as first:
            key = await full_key(first)
            port = first.port
            client = Client(first.url, key.key)
            reader = Reader(client.stream("orders", max_backoff=0.2))
            await reader.until(lambda: "orders" in reader.stream.last_seq)
            placed = [(await client.place_order(**MARKET))["id"]]
            await reader.until(lambda: reader.stream.last_seq["orders"] >= 2)
        try:
            async with serving(data_dir, env, port=port) as second:
                # Placed as soon as the new process answers: replayed if the stream is not back yet, live if it is.
                placed += [(await client.place_order(**MARKET))["id"] for _ in range(2)]
                last = await last_seqs(second, key, "orders")
                await reader.until(lambda: reader.stream.last_seq.get("orders", 0) >= last["orders"])
        finally:
            await reader.close()
            await client.close()
    finally:
        await forget(redis_url, redis_prefix)
    assert reader.seqs("orders") == list(range(1, last["orders"] + 1))
    assert not [m for m in reader.messages if m["type"] == "snapshot" and m.get("reset")]
    created = [m["data"]["id"] for m in reader.messages if m.get("event") == "order.created"]
    assert created == placed


# rt watch


async def test_rt_watch_prints_a_json_line_per_message(server: Server) -> None:
    key = await full_key(server)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rt",
        "watch",
        "positions",
        "--count",
        "1",
        "--json",
        env={**os.environ, "RT_URL": server.url, "RT_KEY": key.key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        lines = [orjson.loads(await asyncio.wait_for(process.stdout.readline(), 15)) for _ in range(2)]
        assert [m["type"] for m in lines] == ["subscribed", "snapshot"]
        assert lines[1]["channel"] == "positions" and lines[1]["data"] == {"positions": []}
        async with Client(server.url, key.key) as client:
            position = await client.open_position(exchange="paper", symbol="ETH/USDT", side="long", quantity=0.1)
        rest, stderr = await asyncio.wait_for(process.communicate(), 15)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    events = [orjson.loads(line) for line in rest.decode().splitlines()]
    assert [(m["type"], m["event"]) for m in events] == [("event", "position.opened")]
    assert events[0]["data"]["id"] == position["id"] and events[0]["seq"] == 1
