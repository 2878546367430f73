"""One market for every instance: two `rt serve` processes on one Redis prefix and one PostgreSQL store see the same
paper ticks in the same order, and when the one holding the market is killed (-9) the other takes over within the
lease's TTL and walks on from the last price it applied."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import websockets

from tests import pg
from tests.conftest import REDIS_URL, need_postgres, need_redis
from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e

BTC = "BTC/USDT"
CHANNEL = f"ticks:{BTC}"
Tick = tuple[str, Any, int]  # symbol, last, timestamp


def _env(shared: dict[str, str], name: str, start: str) -> dict[str, str]:
    return {
        **shared,
        "RT_INSTANCE_ID": name,
        "RT_PAPER_TICK_MS": "100",
        "RT_PAPER_VOLATILITY": "0.002",
        # Each its own start price: after a takeover the market walks on from the last price applied, not from it.
        "RT_PAPER_SYMBOLS": f"{BTC}={start}",
    }


def _ready(server: Server) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(server.url + "/v1/ready", timeout=5).json()
    return body


def _wait_for_market(server: Server, within: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        body = _ready(server)
        if body["roles"]["market"]["held"]:
            return body
        assert time.monotonic() < deadline, f"{server.url} never held the market: {body}"
        time.sleep(0.05)


@pytest.fixture
def shared() -> Iterator[dict[str, str]]:
    """What every instance shares: one Redis prefix, one PostgreSQL database, one pepper and secret key."""
    asyncio.run(need_redis())
    asyncio.run(need_postgres())
    prefix = f"rt-test-{uuid.uuid4().hex[:12]}"
    database = asyncio.run(pg.fresh_database())
    try:
        yield {
            "RT_REDIS_URL": REDIS_URL,
            "RT_REDIS_PREFIX": prefix,
            "RT_DATABASE_URL": database,
            "RT_KEY_PEPPER": uuid.uuid4().hex,
            "RT_SECRET_KEY": uuid.uuid4().hex,
        }
    finally:
        asyncio.run(pg.drop_database(database))
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


class Ticks:
    """A WebSocket session on the BTC ticks of one server."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self._pending: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, server: Server, key: str) -> Ticks:
        async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": key}) as http:
            token = (await http.post("/v1/ws/token")).json()["token"]
        url = server.url.replace("http://", "ws://", 1) + f"/v1/ws?token={token}"
        ticks = cls(await websockets.connect(url, open_timeout=10))
        await ticks.ws.send(orjson.dumps({"op": "subscribe", "channel": CHANNEL, "id": "t"}).decode())
        while (await ticks._message(5))["type"] != "subscribed":
            pass
        return ticks

    async def _message(self, within: float) -> dict[str, Any]:
        while not self._pending:
            decoded = orjson.loads(await asyncio.wait_for(self.ws.recv(), within))
            self._pending.extend(decoded if isinstance(decoded, list) else [decoded])
        return self._pending.pop(0)

    async def next(self, within: float = 5) -> Tick:
        while True:
            message = await self._message(within)
            if message["type"] == "event" and message["channel"] == CHANNEL:
                data = message["data"]
                return (data["symbol"], data["last"], data["timestamp"])

    async def close(self) -> None:
        await self.ws.close()


async def _read(ticks: Ticks, count: int) -> list[Tick]:
    return [await ticks.next() for _ in range(count)]


async def test_two_instances_show_one_market_and_the_survivor_walks_on_after_a_kill(
    tmp_path: Path, shared: dict[str, str]
) -> None:
    with run_server(tmp_path / "a" / "data", _env(shared, "a", "100")) as a:
        holder = _wait_for_market(a)
        assert holder["instance"] == "a" and a.key is not None
        key = a.key  # the one store's bootstrap key works on every instance
        with run_server(tmp_path / "b" / "data", _env(shared, "b", "200")) as b:
            follower = _ready(b)
            assert follower["instance"] == "b" and follower["status"] == "ok"
            assert follower["roles"]["market"] == {"held": False, "token": 0}
            on_a, on_b = await Ticks.open(a, key), await Ticks.open(b, key)
            try:
                seen_a, seen_b = await asyncio.gather(_read(on_a, 20), _read(on_b, 20))
                # The same ticks in the same order on both, from the first one both heard.
                common = next(t for t in seen_b if t in seen_a)
                from_a = seen_a[seen_a.index(common) :]
                from_b = seen_b[seen_b.index(common) :]
                overlap = min(len(from_a), len(from_b))
                assert overlap >= 10 and from_a[:overlap] == from_b[:overlap]
                assert all(abs(t[1] - 100) < 20 for t in seen_b)  # a's market, not b's own start at 200

                last_before = (await on_b.next())[1]
                old_token = _ready(a)["roles"]["market"]["token"]
                a.process.kill()  # SIGKILL to a's pid: no release, the lease has to run out
                a.process.wait(10)
                killed, killed_ms = time.monotonic(), int(time.time() * 1000)
                # b takes over once a's lease (3 s) has run out, within one more try, and walks on from the price it
                # applied last. Ticks a stamped before it died may still be on their way: they come first.
                while True:
                    first_symbol, first_after, stamped = await on_b.next(within=10)
                    if stamped > killed_ms:
                        break
                    last_before = first_after
                assert time.monotonic() - killed < 5.5
                assert first_symbol == BTC and abs(first_after / last_before - 1) < 0.02
                roles = _ready(b)["roles"]
                assert roles["market"]["held"] is True and roles["market"]["token"] > old_token
                more = await _read(on_b, 3)
                assert all(abs(t[1] - 100) < 20 for t in more)
            finally:
                await on_a.close()
                await on_b.close()
