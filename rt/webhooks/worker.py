"""The delivery worker: claims due outbox rows, sends each signed in a task of its own, records the outcome, schedules
the retry and disables an endpoint that is gone (410) or failing too long. Every instance runs one; the claims keep
any row in one instance's hands at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rt import wire
from rt.auth.vault import Box
from rt.bus import Bus, BusLagged
from rt.engine.engine import Changes, Engine
from rt.metrics.instruments import WEBHOOK_BACKLOG, WEBHOOK_DELIVERIES, WEBHOOK_DELIVERY_SECONDS
from rt.records.webhooks import Claimed, DeliveryAttempt, DeliveryStatus, WebhookDelivery, WebhookEndpoint
from rt.store import Webhooks
from rt.webhooks import signing
from rt.webhooks.schedule import Schedule
from rt.webhooks.sender import Answer, Sender

log = logging.getLogger("rt.webhooks")

POLL_S = 0.5
CLAIM_LIMIT = 256
# One account's endpoints never hold more than this many of an instance's sends: the rest stay for other accounts.
ACCOUNT_LIMIT = 64
BACKLOG_EVERY_S = 5.0
LEASE_MARGIN_S = 5.0
GONE = 410


def _now_us() -> int:
    return time.time_ns() // 1000


def _at(us: int) -> datetime:
    return datetime.fromtimestamp(us / 1_000_000, UTC)


def _us(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


class Worker:
    def __init__(
        self,
        store: Webhooks,
        box: Box,
        bus: Bus,
        engine: Engine,
        sender: Sender,
        schedule: Schedule,
        instance: str,
        *,
        timeout_s: float,
        concurrency: int,
        clock: Callable[[], int] = _now_us,
    ) -> None:
        self._store = store
        self._box = box
        self._bus = bus
        self._engine = engine
        self._sender = sender
        self._schedule = schedule
        self._instance = instance
        self._lease_s = timeout_s + LEASE_MARGIN_S
        self._lease_us = int(self._lease_s * 1_000_000)
        self._concurrency = max(1, concurrency)
        self._clock = clock
        self._wakeup = asyncio.Event()
        self._sending: dict[asyncio.Task[None], WebhookEndpoint] = {}  # each delivery's task -> its endpoint
        self._delivering: dict[asyncio.Task[None], str] = {}  # each delivery's task -> the delivery
        self._tasks: set[asyncio.Task[Any]] = set()  # the loop's helpers: the bus listener
        self._posting: set[asyncio.Task[Any]] = set()  # the delivery tasks waiting on a receiver right now
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._backlog_at = float("-inf")
        self._failing = False

    def wake(self) -> None:
        """Claim now: something may be due (a test delivery, a redelivery, a new event)."""
        self._wakeup.set()

    @property
    def in_flight(self) -> int:
        return len(self._sending)

    async def run(self) -> None:
        self._loop_task = asyncio.current_task()
        listener = asyncio.create_task(self._listen(), name="webhooks-bus")
        self._tasks.add(listener)
        listener.add_done_callback(self._tasks.discard)
        try:
            while not self._stopping:
                self._wakeup.clear()
                try:
                    await self._round()
                except Exception:
                    # Once per outage, not twice a second: the store is what fails, and its recovery is logged.
                    if not self._failing:
                        log.exception("webhook claims failed; trying again every %.1f s", POLL_S)
                    self._failing = True
                else:
                    if self._failing:
                        log.info("webhook claims work again")
                    self._failing = False
                if self._stopping:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), POLL_S)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def close(self) -> None:
        """Stop the loop and every send under way, then hand this instance's claims back: they are due at once.

        Only the waits on receivers are cancelled; a store call under way ends first, so the store is never closed
        under one."""
        self._stopping = True
        self.wake()
        loop_task = self._loop_task
        if loop_task is not None and loop_task is not asyncio.current_task() and not loop_task.done():
            done, _ = await asyncio.wait([loop_task], timeout=self._lease_s)
            if not done:
                loop_task.cancel()
                await asyncio.wait([loop_task])
        for task in [*self._posting, *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._sending, *self._tasks, return_exceptions=True)
        try:
            await self._store.release_claims(self._instance)
        except Exception:
            log.exception("could not hand back this instance's webhook claims; they lapse within %.0f s", self._lease_s)

    async def _listen(self) -> None:
        """Wake on every event any instance publishes: its delivery rows were committed before the publish."""
        while True:
            try:
                async for _ in self._bus.subscribe():
                    self.wake()
                return
            except BusLagged:
                self.wake()
            except Exception:
                log.exception("webhook worker's bus subscription failed, subscribing again")
                await asyncio.sleep(1)

    async def _round(self) -> None:
        await self._refresh_backlog()
        # Each endpoint gets at most `concurrency` sends in flight from this process, so a slow or dead one holds only
        # its own slots. Claims repeat while they bring work: the endpoints one claim filled are left out of the next,
        # so the oldest rows of one endpoint's backlog never keep another's out of a round.
        while not self._stopping:
            room = CLAIM_LIMIT - len(self._sending)
            if room <= 0:
                return
            busy, accounts = self._load()
            claimed = await self._store.claim_deliveries(
                self._instance, self._clock(), self._lease_us, room, self._concurrency, busy, accounts
            )
            under_way = set(self._delivering.values())
            for item in claimed:
                if item.delivery.id in under_way:
                    continue  # its claim lapsed while its send went on: claimed again, it is still sent once
                task = asyncio.create_task(self._deliver(item), name=f"webhook-{item.delivery.id}")
                self._sending[task] = item.endpoint
                self._delivering[task] = item.delivery.id
                task.add_done_callback(self._sent)
            if not claimed:
                return

    def _load(self) -> tuple[dict[str, int], list[str]]:
        """What is in flight here: per endpoint (one that is failing counts as full once it has a send under way, so
        a dead endpoint holds one slot, not `concurrency`), and the accounts at their share."""
        busy: Counter[str] = Counter()
        per_account: Counter[str] = Counter()
        for endpoint in self._sending.values():
            busy[endpoint.id] += self._concurrency if endpoint.failing_since is not None else 1
            per_account[endpoint.account_id] += 1
        return dict(busy), sorted(a for a, n in per_account.items() if n >= ACCOUNT_LIMIT)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.pop(task, None)
        self._delivering.pop(task, None)
        self.wake()

    async def _refresh_backlog(self) -> None:
        now = time.monotonic()
        if now - self._backlog_at < BACKLOG_EVERY_S:
            return
        self._backlog_at = now
        WEBHOOK_BACKLOG.set(await self._store.delivery_backlog())

    async def _deliver(self, claimed: Claimed) -> None:
        delivery, endpoint = claimed.delivery, claimed.endpoint
        try:
            await self._attempt(claimed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook delivery %s to endpoint %s failed", delivery.id, endpoint.id)

    async def _attempt(self, claimed: Claimed) -> None:
        delivery, endpoint, event = claimed.delivery, claimed.endpoint, claimed.event
        started_us = self._clock()
        started = _at(started_us)
        secrets = [self._box.open(s.sealed) for s in endpoint.secrets if s.valid_at(started)]
        body = signing.body_of(event)
        headers = signing.headers(body, event.id, secrets, started_us // 1000)
        if self._stopping:
            return  # claimed as the stop began: released with the rest
        task = asyncio.current_task()
        assert task is not None
        self._posting.add(task)
        try:
            answer = await self._sender.send(endpoint.url, body, headers)
        finally:
            self._posting.discard(task)
        now_us = self._clock()
        attempts = delivery.attempts + 1
        # The give-up window counts from the event: a claim carries no attempts.
        first_us = _us(delivery.created_at)
        status, next_us = self._next(answer, attempts, first_us, now_us)
        attempt = DeliveryAttempt(
            at=started,
            status_code=answer.status_code,
            latency_ms=answer.latency_ms,
            error=answer.error,
            response=answer.response,
        )
        if not await self._store.finish_attempt(delivery.id, self._instance, attempt, status, next_us):
            log.warning("webhook delivery %s: claim lost before its attempt was recorded; dropped", delivery.id)
            return
        WEBHOOK_DELIVERIES.labels(status if status != "pending" else "retry").inc()
        WEBHOOK_DELIVERY_SECONDS.observe(answer.latency_ms / 1000)
        # A failure counts from when its attempt began, as the attempt's log entry does.
        failing_since_us = await self._store.endpoint_answered(endpoint.id, answer.ok, started_us)
        if answer.status_code == GONE:
            await self._disable(endpoint, "answered 410 Gone")
        elif failing_since_us is not None and (
            self._schedule.gives_up(failing_since_us, now_us)
            or (status == "failed" and await self._failed_throughout(delivery, failing_since_us))
        ):
            await self._disable(endpoint, f"failing since {wire.rfc3339(_at(failing_since_us))}")

    async def _failed_throughout(self, delivery: WebhookDelivery, failing_since_us: int) -> bool:
        """A delivery that gave up on an endpoint failing since its first attempt (or before): the endpoint failed for
        the whole window, less the moment between the event and that attempt."""
        found = await self._store.get_delivery(delivery.account_id, delivery.id)
        return found is not None and bool(found.log) and failing_since_us <= _us(found.log[0].at) + 1000

    def _next(self, answer: Answer, attempts: int, first_us: int, now_us: int) -> tuple[DeliveryStatus, int | None]:
        if answer.ok:
            return "succeeded", None
        if answer.status_code == GONE or self._schedule.gives_up(first_us, now_us):
            return "failed", None
        wait_s = self._schedule.wait(attempts, answer.retry_after_s)
        return "pending", now_us + int(wait_s * 1_000_000)

    async def _disable(self, endpoint: WebhookEndpoint, reason: str) -> None:
        disabled = await self._store.disable_endpoint(endpoint.id, reason)
        if disabled is None:
            return  # disabled already (by another instance or another delivery): one event is enough
        log.warning("webhook endpoint %s disabled: %s", endpoint.id, reason)
        data = {"endpoint_id": endpoint.id, "url": endpoint.url, "reason": reason}

        async def command(changes: Changes) -> None:
            changes.event("webhook.endpoint_disabled", data)

        await self._engine.run(endpoint.account_id, command)
