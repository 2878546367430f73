"""All sessions of this instance: admission (cap per key), subscription with snapshot or replay, revocation,
the dead man's switch (durable, carried out by the holder of the `deadman` role), shutdown, and the numbers /metrics
reports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rt.auth.principal import Principal
from rt.channels import snapshot
from rt.channels.hub import Subscription, replay
from rt.coord import raise_if_cancelled
from rt.coord.deadman import BEAT_S, open_deadman
from rt.coord.roles import Roles
from rt.engine import trading
from rt.engine.engine import Engine
from rt.errors import RtError
from rt.session import frames, protocol
from rt.session.frames import Outgoing
from rt.session.protocol import CloseCode

if TYPE_CHECKING:
    from rt.runtime import Runtime
    from rt.session.connection import Context, Session

log = logging.getLogger("rt.sessions")

LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000)


DEADMAN = "deadman"
DEADMAN_TTL_MS = 1500
SWEEP_S = 0.25
# After Redis answers again, the heartbeats of live sessions get this long to be moved on before any is judged.
SETTLE_S = 2 * BEAT_S


async def _nothing() -> None:
    """The sweeper is the role's own task: losing the role cancels it."""


async def cancel_open_orders(engine: Engine, account_id: str) -> int:
    """Every open order of the account, as the store has them (another instance may have placed them)."""
    orders, _ = await engine.store.list_orders(account_id, ["open"], None, None, 10_000, 0)
    return await cancel_orders(engine, account_id, [o.id for o in orders])


async def cancel_orders(engine: Engine, account_id: str, order_ids: Iterable[str]) -> int:
    canceled = 0
    for order_id in order_ids:
        with contextlib.suppress(RtError):
            await trading.cancel_order(engine, account_id, order_id)
            canceled += 1
    return canceled


class Sessions:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._by_key: dict[str, set[Session]] = {}
        self.deadman = open_deadman(runtime.settings.redis_url, runtime.settings.redis_prefix)
        # The `deadman` role on a lease of its own, never longer than the other roles': the switch must move to
        # another instance within its 2 s of slack.
        self.roles = Roles(
            runtime.roles.leases, min(runtime.settings.lease_ttl_ms, DEADMAN_TTL_MS), fit=runtime.roles.fit
        )
        self.roles.role(DEADMAN, self._sweep_forever, _nothing)
        self.slow_consumer_closes = 0
        self.closing = False
        self.accepted = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.latency_sum_ms = 0.0
        self.commands = 0

    @property
    def context(self) -> Context:
        """What each session uses of this instance (read when a session opens, so a test may swap a part first)."""
        from rt.session.connection import Context

        runtime, settings = self.runtime, self.runtime.settings
        return Context(
            runtime.engine,
            runtime.runner,
            runtime.idempotency,
            runtime.tiers,
            self,
            settings.ws_queue,
            float(settings.ws_stall_s),
            runtime.hub.make_way,
        )

    # admission

    def count(self, key_id: str | None = None) -> int:
        if key_id is None:
            return sum(len(s) for s in self._by_key.values())
        return len(self._by_key.get(key_id, ()))

    def admit(self, principal: Principal) -> bool:
        return self.count(principal.key_id) < self.runtime.settings.ws_max_per_key

    def register(self, session: Session) -> None:
        self._by_key.setdefault(session.principal.key_id, set()).add(session)
        self.accepted += 1

    def unregister(self, session: Session) -> None:
        sessions = self._by_key.get(session.principal.key_id)
        if sessions is not None:
            sessions.discard(session)
            if not sessions:
                del self._by_key[session.principal.key_id]

    def all(self) -> list[Session]:
        return [s for sessions in self._by_key.values() for s in sessions]

    # subscriptions

    async def attach(self, session: Session, channel: str, request_id: Any, since: int | None) -> None:
        """subscribed, then a snapshot (or the replay of what was missed), then live events: in that order."""
        account_id = session.principal.account_id
        # At the hub first, holding events: whatever is published while the snapshot is built is kept, and what the
        # snapshot already covers is dropped by seq.
        async with self.runtime.hub.subscribe(account_id, channel, session) as subscription:
            session.subscriptions[channel] = subscription
            try:
                await self._attach(subscription, session, channel, request_id, since)
            except BaseException:
                session.subscriptions.pop(channel, None)
                raise

    async def _attach(
        self, subscription: Subscription, session: Session, channel: str, request_id: Any, since: int | None
    ) -> None:
        runtime = self.runtime
        account_id = session.principal.account_id
        if channel.startswith(protocol.TICKS):
            data = await snapshot(runtime.engine, account_id, channel)
            last = runtime.hub.tick_seq(channel)
            missed = runtime.hub.tick_history(channel, since) if since is not None else None
            self._open(subscription, session, request_id, last, since, missed, data)
            return
        # Under the account's writer lock no command can commit, so the snapshot and `last` agree.
        async with runtime.engine.lock(account_id):
            last = await runtime.bus.last_seq(account_id, channel)
            missed = None
            if since is not None:
                history = await runtime.bus.history(account_id, channel, since)
                if history is not None:
                    missed = replay(history)
                    # Another instance may publish between reading `last` and the history: never send it twice.
                    last = max([last, *(d.seq for d in history)])
            data = None
            if missed is None:
                data = await snapshot(runtime.engine, account_id, channel, runtime.runner)
            self._open(subscription, session, request_id, last, since, missed, data)

    def _open(
        self,
        subscription: Subscription,
        session: Session,
        request_id: Any,
        last: int,
        since: int | None,
        missed: list[Outgoing] | None,
        data: Any,
    ) -> None:
        channel = subscription.channel
        session.send_bytes(frames.subscribed(channel, request_id, last))
        if since is not None and missed is not None and since <= last:
            for out in missed:
                session.offer(out)
        else:
            session.send_bytes(frames.snapshot(channel, last, data, reset=since is not None))
        subscription.start(last)

    # dead man's switch, per account, surviving the session that armed it and the instance that had it

    async def cancel_after(self, account_id: str, timeout_s: int) -> dict[str, Any]:
        if timeout_s == 0:
            await self.deadman.disarm(account_id)
            return {"timeout_s": 0, "trigger_at_ms": None}
        deadline = await self.deadman.arm(account_id, timeout_s * 1000)
        return {"timeout_s": timeout_s, "trigger_at_ms": deadline}

    async def sweep(self) -> None:
        """One round of the `deadman` role: cancel every open order of each account whose deadline passed, and the
        orders of each session whose heartbeat ran out without a clean close (its instance is gone)."""
        engine = self.runtime.engine
        for account_id, deadline in await self.deadman.due():
            canceled = await cancel_open_orders(engine, account_id)
            await self.deadman.fired(account_id, deadline)
            log.info("cancel_after fired", extra={"account_id": account_id, "orders": canceled})
        if not self.deadman.settled(SETTLE_S):
            return
        for lapse in await self.deadman.lapsed():
            canceled = await cancel_orders(engine, lapse.account_id, lapse.order_ids)
            await self.deadman.forget(lapse.session_id)
            log.info(
                "cancel_on_disconnect fired for a session whose instance is gone",
                extra={"account_id": lapse.account_id, "orders": canceled},
            )

    async def _sweep_forever(self, token: int) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                raise_if_cancelled()  # a stop that redis-py turned into an error still stops the sweeper
                log.warning("dead man's switch sweep failed", extra={"error": type(exc).__name__})
            raise_if_cancelled()
            await asyncio.sleep(SWEEP_S)

    async def _beat_forever(self) -> None:
        """Move on the heartbeat of every session of this instance that has cancel_on_disconnect; one the store no
        longer keeps (its record lost, or an order of it not written) is written again whole."""
        while True:
            await asyncio.sleep(BEAT_S)
            watched = {s.session_id: s for s in self.all() if s.cancel_on_disconnect}
            try:
                missing = await self.deadman.beat(list(watched))
                for session_id in {*missing, *(i for i, s in watched.items() if s.unsaved)}:
                    session = watched.get(session_id)
                    if session is not None:
                        await session.save_watch()
            except Exception as exc:
                raise_if_cancelled()
                log.warning("dead man's switch heartbeat failed", extra={"error": type(exc).__name__})

    # revocation and shutdown

    async def watch_revocations(self, every: float = 1.0) -> None:
        """Close the sessions of keys revoked anywhere (this API, the CLI, another instance) within seconds."""
        while True:
            await asyncio.sleep(every)
            for key_id in list(self._by_key):
                try:
                    record = await self.runtime.store.get_key(key_id)
                except Exception:
                    log.exception("revocation check failed")
                    break
                if record is None or record.revoked_at is not None:
                    for session in list(self._by_key.get(key_id, ())):
                        session.send_bytes(frames.revoked())
                        session.begin_close(CloseCode.TOKEN_INVALID, "key revoked")

    async def run_clock(self, every: float = 1.0) -> None:
        """One timer for every session's heartbeat and idle check; beside it, the dead man's switch: this
        instance's heartbeats and, while it holds the `deadman` role, the sweeper."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.roles.run(), name="deadman-role")
                group.create_task(self._beat_forever(), name="deadman-beats")
                group.create_task(self._clock(every), name="session-clock")
        finally:
            await self.deadman.close()

    async def _clock(self, every: float) -> None:
        settings = self.runtime.settings
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for session in self.all():
                session.on_clock(now, settings.ws_heartbeat_s, settings.ws_idle_s)

    async def shutdown(self, grace: float = 2.0) -> None:
        """server.shutdown to every session, then close 1001 once their queues drain."""
        self.closing = True  # new handshakes are refused from now on
        sessions = self.all()
        for session in sessions:
            session.send_bytes(frames.shutdown())
            session.draining = True
        # Commands already received finish and their results go out before the close.
        await asyncio.gather(*(s.finish_commands(grace) for s in sessions))
        for session in sessions:
            session.begin_close(CloseCode.GOING_AWAY, "server shutting down")
        if sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.wait_closed() for s in sessions)), grace)
            for session in sessions:
                session.close_now()  # a client still behind gets its close without what it did not read

    # metrics

    def observe_command(self, op: str, ms: float) -> None:
        self.commands += 1
        self.latency_sum_ms += ms
        for i, bound in enumerate(LATENCY_BUCKETS_MS):
            if ms <= bound:
                self.latency_counts[i] += 1
                return
        self.latency_counts[-1] += 1
