"""One instance's webhook side over a real store: memory bus, engine on a still paper market, the manager and its worker
running; and a receiver on 127.0.0.1 (the allowed host, so http is fine)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rt.auth.vault import Box
from rt.bus.memory import MemoryBus
from rt.config import Settings
from rt.engine.engine import Changes, Engine
from rt.exchanges.feed import MarketFeed
from rt.exchanges.paper import PaperExchange
from rt.exchanges.registry import Venues
from rt.records.events import Event
from rt.records.webhooks import DeliveryStatus, WebhookDelivery
from rt.store import Store, open_store
from rt.webhooks.manage import WebhookManager
from tests.conftest import need_postgres
from tests.pg import database
from tests.webhooks.hooks import Hooks, Request

# Short waits so retries happen within a test; the receiver's host is allowed.
SETTINGS = Settings(
    webhook_allow_hosts=("127.0.0.1",),
    webhook_timeout_s=1.0,
    webhook_schedule=("200ms", "400ms", "800ms"),
    webhook_give_up="1h",
    webhook_concurrency=4,
)
KEY = secrets.token_bytes(32)


@dataclass
class Instance:
    store: Store
    bus: MemoryBus
    engine: Engine
    manager: WebhookManager
    account_id: str
    task: asyncio.Task[None] | None = None
    closed: bool = False
    extra: list[Any] = field(default_factory=list)

    @classmethod
    async def open(cls, url: str, name: str, settings: Settings, account_id: str | None = None) -> Instance:
        store = await open_store(url)
        if account_id is None:
            account_id = (await store.create_account("trader")).id
        bus = MemoryBus()
        feed = MarketFeed({"BTC/USDT": Decimal("100")}, interval=0)
        engine = Engine(store, bus, Venues(PaperExchange(feed, Decimal("0.001"), Decimal(0))))
        await engine.start()
        manager = WebhookManager(store, Box(KEY), bus, engine, settings, name)
        return cls(store, bus, engine, manager, account_id)

    def start(self) -> None:
        self.task = asyncio.create_task(self.manager.run())

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.manager.close()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.engine.close()
        await self.bus.close()
        await self.store.close()

    async def emit(self, name: str = "order.created", data: dict[str, Any] | None = None, n: int = 1) -> list[Event]:
        """Store and publish `n` events through the engine, as any write does."""
        made: list[Event] = []

        async def command(changes: Changes) -> None:
            for i in range(n):
                changes.event(name, dict(data or {"id": f"ord_{i}", "n": i}))
            made.extend(changes.events)

        await self.engine.run(self.account_id, command)
        return made

    async def deliveries(self, **filters: Any) -> list[WebhookDelivery]:
        found, _ = await self.manager.deliveries(self.account_id, limit=500, **filters)
        return found

    async def settled(
        self, ready: Callable[[list[WebhookDelivery]], bool], within: float = 10.0, **filters: Any
    ) -> list[WebhookDelivery]:
        """Poll the delivery log until `ready(deliveries)` holds."""
        async with asyncio.timeout(within):
            while not ready(found := await self.deliveries(**filters)):  # noqa: ASYNC110 - the log is in the store
                await asyncio.sleep(0.02)
        return found


def rt_signature_valid(request: Request, secret: str) -> bool:
    """X-RT-Signature: t=<ms>,v1=<hex hmac of "<t>.<body>"> with the whole secret as the key."""
    parts = [p.split("=", 1) for p in request.headers["x-rt-signature"].split(",")]
    t = next(v for k, v in parts if k == "t")
    expected = hmac.new(secret.encode(), f"{t}.".encode() + request.body, hashlib.sha256).hexdigest()
    return any(k == "v1" and hmac.compare_digest(v, expected) for k, v in parts)


def all_in(*wanted: DeliveryStatus) -> Any:
    return lambda found: bool(found) and all(d.status in wanted for d in found)


Opener = Callable[..., Awaitable[Instance]]


async def _opener(url: str) -> AsyncIterator[Opener]:
    opened: list[Instance] = []

    async def open_one(
        name: str = "inst-a", settings: Settings = SETTINGS, account_id: str | None = None, start: bool = True
    ) -> Instance:
        instance = await Instance.open(url, name, settings, account_id)
        opened.append(instance)
        if start:
            instance.start()
        return instance

    try:
        yield open_one
    finally:
        for instance in reversed(opened):
            await instance.close()


@pytest.fixture
async def sqlite_instances(tmp_path: Path) -> AsyncIterator[Opener]:
    async for opener in _opener(f"sqlite:///{tmp_path / 'data' / 'rt.db'}"):
        yield opener


@pytest.fixture
async def pg_instances() -> AsyncIterator[Opener]:
    async with database(await need_postgres()) as url:
        async for opener in _opener(url):
            yield opener


@pytest.fixture(params=["sqlite", "postgres"])
async def instances(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Each test runs on both twins of the store."""
    if request.param == "sqlite":
        async for opener in _opener(f"sqlite:///{tmp_path / 'data' / 'rt.db'}"):
            yield opener
        return
    async with database(await need_postgres()) as url:
        async for opener in _opener(url):
            yield opener


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    async with Hooks() as receiver:
        yield receiver
