"""The worker never sends a delivery twice at once: when a send outlasts its claim (a slow store after a slow
receiver), the claim that the same instance takes again must not start a second send of the row still in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from rt.auth.vault import Box
from rt.records.webhooks import Claimed
from rt.webhooks.sender import Answer, Sender
from rt.webhooks.worker import LEASE_MARGIN_S, Worker
from tests.webhooks.conftest import KEY, SETTINGS, Opener, all_in


class Gate(Sender):
    """Records each send and holds it until released."""

    def __init__(self) -> None:
        super().__init__((), 1.0)
        self.sent: list[str] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        self.sent.append(headers["webhook-id"])
        self.arrived.set()
        await self.release.wait()
        return Answer(200, 1.0, None, "ok", None)


class Watched:
    """The store, telling when a claim after the clock jumped brought rows back."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.late = False
        self.reclaimed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def claim_deliveries(self, *args: Any, **kwargs: Any) -> list[Claimed]:
        found: list[Claimed] = await self._store.claim_deliveries(*args, **kwargs)
        if self.late and found:
            self.reclaimed.set()
        return found


async def test_a_send_that_outlasts_its_claim_is_not_started_again(sqlite_instances: Opener) -> None:
    one = await sqlite_instances(start=False)
    await one.manager.create(one.account_id, "http://127.0.0.1:9/hook", ["*"])
    skew = [0]

    def clock() -> int:
        return time.time_ns() // 1000 + skew[0]

    gate = Gate()
    store = Watched(one.store)
    worker = Worker(
        store,  # type: ignore[arg-type]
        Box(KEY),
        one.bus,
        one.engine,
        gate,
        one.manager.schedule,
        "inst-a",
        timeout_s=SETTINGS.webhook_timeout_s,
        concurrency=SETTINGS.webhook_concurrency,
        clock=clock,
    )
    task = asyncio.create_task(worker.run())
    try:
        [event] = await one.emit()
        async with asyncio.timeout(10):
            await gate.arrived.wait()
            # The send is still under way when its lease lapses: the row is claimable again, by this instance too.
            skew[0] = int((SETTINGS.webhook_timeout_s + LEASE_MARGIN_S + 1) * 1_000_000)
            store.late = True
            worker.wake()
            await store.reclaimed.wait()
            gate.release.set()
            await one.settled(all_in("succeeded"))
            while worker.in_flight:  # noqa: ASYNC110 - whatever the re-claim started ends before this holds
                await asyncio.sleep(0.01)
        assert gate.sent == [event.id]
        [delivery] = await one.deliveries()
        assert delivery.attempts == 1
    finally:
        await worker.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
