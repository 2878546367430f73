"""All sessions of this instance: admission (cap per key), subscription with snapshot or replay, revocation,
the cancel-after timers, shutdown, and the numbers /metrics reports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rt.auth.principal import Principal
from rt.channels import snapshot
from rt.channels.hub import replay_frames
from rt.engine import trading
from rt.engine.engine import Engine
from rt.errors import RtError
from rt.session import protocol

if TYPE_CHECKING:
    from rt.runtime import Runtime
    from rt.session.connection import Session

log = logging.getLogger("rt.sessions")

LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 1000)


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
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.slow_consumer_closes = 0
        self.closing = False
        self.accepted = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.latency_sum_ms = 0.0
        self.commands = 0

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
        runtime = self.runtime
        account_id = session.principal.account_id
        # At the hub first, holding events: whatever is published while the snapshot is built is kept, and what the
        # snapshot already covers is dropped by seq.
        session.hold(channel)
        runtime.hub.add(account_id, channel, session)
        try:
            await self._attach(session, channel, request_id, since)
        except BaseException:
            session.release(channel)
            runtime.hub.remove(account_id, channel, session)
            raise

    async def _attach(self, session: Session, channel: str, request_id: Any, since: int | None) -> None:
        runtime = self.runtime
        account_id = session.principal.account_id
        if channel.startswith(protocol.TICKS):
            data = await snapshot(runtime.engine, runtime.feed, account_id, channel)
            last = runtime.hub.tick_seq(channel)
            missed = runtime.hub.tick_history(channel, since) if since is not None else None
            self._open(session, channel, request_id, last, since, missed, data)
            return
        # Under the account's writer lock no command can commit, so the snapshot and `last` agree.
        async with runtime.engine.lock(account_id):
            last = await runtime.bus.last_seq(account_id, channel)
            missed = None
            if since is not None:
                history = await runtime.bus.history(account_id, channel, since)
                if history is not None:
                    missed = replay_frames(history)
                    # Another instance may publish between reading `last` and the history: never send it twice.
                    last = max([last, *(d.seq for d in history)])
            data = None
            if missed is None:
                data = await snapshot(runtime.engine, runtime.feed, account_id, channel, runtime.runner)
            self._open(session, channel, request_id, last, since, missed, data)

    def _open(
        self,
        session: Session,
        channel: str,
        request_id: Any,
        last: int,
        since: int | None,
        missed: list[str] | None,
        data: Any,
    ) -> None:
        session.send({"type": "subscribed", "channel": channel, "id": request_id, "seq": last})
        if since is not None and missed is not None and since <= last:
            for frame in missed:
                session.offer(frame)
        else:
            message: dict[str, Any] = {"type": "snapshot", "channel": channel, "seq": last, "data": data}
            if since is not None:
                message["reset"] = True
            session.send(message)
        session.subscribed(channel, last)

    # dead man's switch, per account, surviving the session that armed it

    def cancel_after(self, account_id: str, timeout_s: int) -> dict[str, Any]:
        timer = self._timers.pop(account_id, None)
        if timer is not None:
            timer.cancel()
        if timeout_s == 0:
            return {"timeout_s": 0, "trigger_at_ms": None}
        loop = asyncio.get_running_loop()
        self._timers[account_id] = loop.call_later(timeout_s, self._fire, account_id)
        return {"timeout_s": timeout_s, "trigger_at_ms": int(time.time() * 1000) + timeout_s * 1000}

    def _fire(self, account_id: str) -> None:
        self._timers.pop(account_id, None)
        book = self.runtime.engine.cached_book(account_id)
        if book is None:
            return
        ids = [o.id for o in book.orders.values() if o.status == "open"]
        task = asyncio.ensure_future(cancel_orders(self.runtime.engine, account_id, ids))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("cancel_after fired", extra={"account_id": account_id, "orders": len(ids)})

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
                        session.send(
                            {
                                "type": "error",
                                "error": {
                                    "code": "API_KEY_REVOKED",
                                    "status": 401,
                                    "detail": "the key of this session was revoked",
                                },
                            }
                        )
                        session.begin_close(protocol.TOKEN_INVALID, "key revoked")

    async def run_clock(self, every: float = 1.0) -> None:
        """One timer for every session's heartbeat and idle check."""
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
            session.send({"type": "event", "event": "server.shutdown", "ts": time.time_ns() // 1000})
            session.draining = True
        # Commands already received finish and their results go out before the close.
        await asyncio.gather(*(s.finish_commands(grace) for s in sessions))
        for session in sessions:
            session.begin_close(protocol.GOING_AWAY, "server shutting down")
        if sessions:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(s.closed.wait() for s in sessions)), grace)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # metrics

    def observe_command(self, op: str, ms: float) -> None:
        self.commands += 1
        self.latency_sum_ms += ms
        for i, bound in enumerate(LATENCY_BUCKETS_MS):
            if ms <= bound:
                self.latency_counts[i] += 1
                return
        self.latency_counts[-1] += 1
