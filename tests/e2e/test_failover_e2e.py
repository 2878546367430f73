"""Failover: three real instances on one PostgreSQL and one Redis under an order and stream load, and `kill -9` of the
one holding the market role. Clients of it move on to the others through the SDK; every order that got a 2xx exists
once, streams resume with no gap, and the market and a strategy are back on a survivor within 10 s."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from rt.client import ApiError, Client, Stream
from tests.conftest import need_postgres, need_redis
from tests.e2e.cluster import Cluster, cluster
from tests.e2e.server import Server

pytestmark = pytest.mark.e2e

START = Decimal(46200)
VOLATILITY = 0.001
# The market's walk is seeded: this seed leaves the start price by more than 2.7% after 40 steps and stays away for
# 1,200 steps, so a market that started over from the start price is told apart from one that walks on.
SEED = "28233"
# A step's log return is N(0, VOLATILITY): one beyond 6 sigma does not happen.
ONE_STEP = 6 * VOLATILITY
ENV = {
    "RT_PAPER_TICK_MS": "100",
    "RT_PAPER_SYMBOLS": f"BTC/USDT={START}",
    "RT_PAPER_SEED": SEED,
    "RT_PAPER_VOLATILITY": str(VOLATILITY),
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
    "RT_LOCKOUT_THRESHOLD": "100000",
}
TICKS = "ticks:BTC/USDT"
BACK_WITHIN = 10.0
WORKERS = 4


@pytest.fixture
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    asyncio.run(need_postgres())
    redis_url = asyncio.run(need_redis())
    with cluster(tmp_path_factory.mktemp("failover"), redis_url, 3, ENV) as running:
        yield running


def roles(server: Server) -> dict[str, bool]:
    ready = httpx.get(server.url + "/v1/ready", timeout=5).json()
    return {name: bool(role["held"]) for name, role in ready["roles"].items()}


def holder(servers: list[Server], role: str) -> Server:
    holding = [s for s in servers if roles(s).get(role)]
    assert len(holding) == 1, f"{role}: held by {[s.url for s in holding]}"
    return holding[0]


def rotated(urls: list[str], start: int) -> list[str]:
    return urls[start:] + urls[:start]


@dataclass
class Worker:
    """Places market orders, each with its own Idempotency-Key, sent again with the same key after a connection
    error or a 5xx until it is answered: so every key it made ends with one 2xx."""

    rt: Client
    name: str
    answered: dict[str, tuple[str, float]] = field(default_factory=dict)  # key -> (order id, when)

    async def run(self, stop: asyncio.Event) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            key = f"{self.name}-{n}"
            side = "buy" if n % 2 == 0 else "sell"
            while True:
                try:
                    order = await self.rt.place_order(
                        symbol="BTC/USDT", side=side, type="market", quantity=0.001, idempotency_key=key
                    )
                    break
                except (httpx.TransportError, ApiError) as exc:
                    if isinstance(exc, ApiError) and exc.status < 500:
                        raise
                    await asyncio.sleep(0.05)  # every instance failed at once: a moment before the next round
            assert order["status"] == "filled", order
            self.answered[key] = (order["id"], time.monotonic())


class Reader:
    """Iterates a Stream in the background, keeping each message with the time it arrived."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for message in self.stream:
            self.messages.append((time.monotonic(), message))

    def events(self, channel: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m["type"] == "event" and m.get("channel") == channel]

    def ticks_after(self, ms: int) -> list[dict[str, Any]]:
        """Ticks made after `ms` (epoch ms): by whichever instance holds the market then."""
        return [m for m in self.events(TICKS) if m["data"]["timestamp"] > ms]

    def created(self) -> set[str]:
        return {m["data"]["id"] for m in self.events("orders") if m["event"] == "order.created"}

    async def until(self, what: str, predicate: Any, within: float) -> None:
        deadline = time.monotonic() + within
        while not predicate():
            if self.task.done():
                self.task.result()
                pytest.fail("the stream ended")
            assert time.monotonic() < deadline, f"{what}: not within {within} s; last: {self.messages[-3:]}"
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.stream.close()
        await asyncio.wait_for(self.task, 5)


async def all_orders(rt: Client) -> list[dict[str, Any]]:
    """Every order, once: the strategy still places orders while the pages are read, and an order made meanwhile
    moves the rest down a page (newest first), so an order can come back on the next page."""
    found: dict[str, dict[str, Any]] = {}
    for page in itertools.count(1):
        batch = await rt.orders(status="all", limit=500, page=page)
        found.update((order["id"], order) for order in batch)
        if len(batch) < 500:
            return list(found.values())
    raise AssertionError("unreachable")


async def test_kill_9_of_the_market_holder_under_load_loses_nothing_and_everything_moves_on(
    group: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="rt.client")
    servers = list(group.servers)
    urls = [s.url for s in servers]
    victim = holder(servers, "market")
    survivors = [s for s in servers if s is not victim]
    assert roles(victim).get("strategies"), "the first instance up holds every role"
    async with contextlib.AsyncExitStack() as stack:
        admin = await stack.enter_async_context(Client(rotated(urls, urls.index(survivors[0].url)), group.key))
        await admin.set_envelope(
            max_position_size=1_000_000, max_exposure=3, max_daily_loss=1_000_000, max_concurrent_positions=10_000
        )

        # Two streams on the instance that will die (it is the first of their URLs).
        readers = []
        for _ in range(2):
            watcher = await stack.enter_async_context(Client(rotated(urls, urls.index(victim.url)), group.key))
            reader = Reader(watcher.stream("orders", TICKS, max_backoff=0.5))
            stack.push_async_callback(reader.close)
            await reader.until("subscribed", lambda r=reader: {"orders", TICKS} <= set(r.stream.last_seq), 15)
            assert reader.stream.connected_to == victim.url
            readers.append(reader)

        deployed = await admin.request(
            "POST",
            "/v1/strategies",
            json={"name": "dca", "type": "dca", "symbol": "BTC/USDT", "config": {"quantity": 0.001, "interval_s": 1}},
            idempotency_key="deploy-dca",
        )
        strategy_id = deployed["strategy"]["id"]

        workers = [
            Worker(await stack.enter_async_context(Client(rotated(urls, i % 3), group.key)), f"w{i}")
            for i in range(WORKERS)
        ]
        on_victim = [w for w in workers if w.rt.base_url == victim.url]
        stop = asyncio.Event()
        load = [asyncio.create_task(w.run(stop)) for w in workers]
        try:
            await asyncio.sleep(2)  # the load runs on all three instances
            assert all(w.answered for w in workers), "every worker traded before the kill"
            os.kill(victim.process.pid, signal.SIGKILL)
            killed_at, killed_ms = time.monotonic(), int(time.time() * 1000)
            await asyncio.to_thread(victim.process.wait, 10)

            # The market: the new holder's ticks reach both streams, which moved to a survivor.
            for reader in readers:
                await reader.until("ticks back", lambda r=reader: bool(r.ticks_after(killed_ms)), BACK_WITHIN)

            # The strategy: its next buy comes from a survivor.
            deadline = killed_at + BACK_WITHIN
            while not [
                o for o in await all_orders(admin) if o["strategy_id"] == strategy_id and created_ms(o) > killed_ms
            ]:
                assert time.monotonic() < deadline, f"no strategy order within {BACK_WITHIN} s of the kill"
                await asyncio.sleep(0.1)
            await asyncio.sleep(max(0.0, killed_at + 5 - time.monotonic()))  # the load goes on for ~5 s after the kill
        finally:
            stop.set()
            await asyncio.gather(*load)

        # Every order that got a 2xx exists once, and no other: a key in flight at the kill was sent again with the
        # same key until answered, so an order that committed without an answer is among them, once.
        placed = [o for o in await all_orders(admin) if o["strategy_id"] is None]
        answered = {key: order_id for w in workers for key, (order_id, _) in w.answered.items()}
        ids = [o["id"] for o in placed]
        assert len(set(answered.values())) == len(answered), "two keys answered with one order"
        assert set(ids) == set(answered.values())
        assert len(placed) == len(answered)
        resent = [r for r in caplog.records if r.getMessage() == "request failed, sending it to the next instance"]
        assert len(resent) >= len(on_victim)
        for worker in on_victim:
            assert worker.rt.base_url != victim.url
            assert any(when > killed_at for _, when in worker.answered.values()), f"{worker.name} traded after"

        # Streams: on a survivor now, every orders event once with no gap in seq, every order's creation seen.
        every = {o["id"]: o for o in await all_orders(admin)}
        for reader in readers:
            for _ in range(200):  # up to 10 s for the last events to arrive
                if set(every) <= reader.created():
                    break
                await asyncio.sleep(0.05)
            heard = reader.created()
            unseen = [(k, created_ms(o) - killed_ms, o["strategy_id"]) for k, o in every.items() if k not in heard]
            assert not unseen, f"orders the stream never heard of (id, ms after the kill, strategy): {unseen}"
            assert reader.stream.connected_to in {s.url for s in survivors}
            assert reader.stream.reconnects >= 1
            seqs = [m["seq"] for m in reader.events("orders")]
            assert seqs == list(range(1, len(seqs) + 1)), "a gap or a repeat in orders"
            created = [m["data"]["id"] for m in reader.events("orders") if m["event"] == "order.created"]
            assert len(created) == len(set(created))

            # Ticks: none twice, and the new holder walks on from the last price heard before the kill.
            stamps = [m["data"]["timestamp"] for m in reader.events(TICKS)]
            assert stamps == sorted(set(stamps)), "a tick repeated or out of order"
            before = [m for m in reader.events(TICKS) if m["data"]["timestamp"] <= killed_ms]
            last_price = Decimal(str(before[-1]["data"]["last"]))
            first_price = Decimal(str(reader.ticks_after(killed_ms)[0]["data"]["last"]))
            # The new holder numbers on from the last tick (a restarted market would start again at 1) and its
            # first price is one step from the last one heard.
            assert reader.ticks_after(killed_ms)[0]["seq"] > before[-1]["seq"]
            assert abs(math.log(first_price / last_price)) <= ONE_STEP, (last_price, first_price)
            first_at = reader.ticks_after(killed_ms)[0]["data"]["timestamp"]
            assert first_at - killed_ms < BACK_WITHIN * 1000

        # The roles are on survivors, and the strategy runs there.
        holder(survivors, "market")
        holder(survivors, "strategies")
        listed = {s["id"]: s for s in (await admin.request("GET", "/v1/strategies"))["strategies"]}
        assert listed[strategy_id]["status"] == "active"
        # One instance at a time runs it: one buy a second, before the kill and after.
        bought = sorted(created_ms(o) for o in await all_orders(admin) if o["strategy_id"] == strategy_id)
        assert all(later - earlier > 500 for earlier, later in itertools.pairwise(bought)), bought
        assert len(bought) <= 2 + (bought[-1] - bought[0]) / 1000


def created_ms(order: dict[str, Any]) -> int:
    return int(datetime.fromisoformat(order["created_at"].replace("Z", "+00:00")).timestamp() * 1000)
