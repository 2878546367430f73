"""Roles: keep trying for each role's lease, renew it every ttl/3, and tell the code of the role when it is gained
and lost. A failed or late renewal is a loss, reported while the lease is still this instance's in Redis, so the
role's work has stopped here before another instance can gain it. Leases that do not expire (one process, its
memory twin) are never lost to a late renewal: a loop saturated for seconds keeps doing the role's work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rt.coord import Leases, raise_if_cancelled
from rt.metrics.instruments import LEASE_RENEWALS, ROLE_HELD

log = logging.getLogger("rt.coord")

OnGain = Callable[[int], Awaitable[None]]
OnLose = Callable[[], Awaitable[None]]

DEFAULT_TTL_MS = 3000


@dataclass
class _Role:
    name: str
    on_gain: OnGain
    on_lose: OnLose
    held: bool = False
    token: int = 0
    valid_until: float = 0.0  # loop time before which no other instance can hold the lease
    renewals: int = 0


class Roles:
    def __init__(
        self, leases: Leases, ttl_ms: int = DEFAULT_TTL_MS, fit: Callable[[], Awaitable[bool]] | None = None
    ) -> None:
        """`fit` says whether this instance can do a role's work now (its store answers): an unfit instance takes
        no role and gives up those it holds at their next renewal, so another instance does the work."""
        if ttl_ms <= 0:
            raise ValueError("a lease's TTL must be > 0 ms")
        self.leases = leases
        self.fit = fit
        self._ttl_ms = ttl_ms
        self._ttl = ttl_ms / 1000
        self._interval = self._ttl / 3
        # A renewal must have its answer this long before the lease could run out, so the loss is handled in time.
        self._margin = self._ttl / 6
        self._roles: dict[str, _Role] = {}

    @property
    def instance(self) -> str:
        return self.leases.instance

    def role(self, name: str, on_gain: OnGain, on_lose: OnLose) -> None:
        """Take part in `name`: on_gain(token) once the lease is this instance's, on_lose() once it is not.

        on_gain runs beside the renewals and may run for as long as the role is held (a sweeper's loop): it is
        cancelled when the role is lost, before on_lose. If it raises, the role is given up and tried for again."""
        if name in self._roles:
            raise ValueError(f"role {name!r} is already registered")
        self._roles[name] = _Role(name, on_gain, on_lose)
        ROLE_HELD.labels(name).set(0)

    def held(self, name: str) -> bool:
        """Whether this instance holds the role now: gained, not lost, and its last renewal not yet run out."""
        role = self._roles.get(name)
        if role is None or not role.held:
            return False
        return not self.leases.expires or asyncio.get_running_loop().time() < role.valid_until

    def token(self, name: str) -> int | None:
        role = self._roles.get(name)
        return role.token if role is not None and role.held else None

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            name: {"held": self.held(name), "token": role.token, "renewals": role.renewals}
            for name, role in self._roles.items()
        }

    async def run(self) -> None:
        """Hold every registered role for as long as this runs; cancelled, each held role is lost and released."""
        async with asyncio.TaskGroup() as group:
            for role in self._roles.values():
                group.create_task(self._keep(role), name=f"role-{role.name}")

    async def _keep(self, role: _Role) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            started = loop.time()
            if not await self._fit():
                await asyncio.sleep(max(0.0, started + self._interval - loop.time()))
                continue
            try:
                async with asyncio.timeout(self._interval):
                    token = await self.leases.acquire(role.name, self._ttl_ms)
                failing = False
            except Exception as exc:
                if not failing:  # once per outage, not every try
                    log.warning("lease acquire failed", extra={"role": role.name, "error": type(exc).__name__})
                failing, token = True, None
            raise_if_cancelled()
            if token is not None:
                role.held, role.token, role.valid_until = True, token, started + self._ttl
                ROLE_HELD.labels(role.name).set(1)
                log.info("role gained", extra={"role": role.name, "token": token, "instance": self.instance})
                gaining: asyncio.Future[None] = asyncio.ensure_future(role.on_gain(token))
                try:
                    await self._hold(role, gaining)
                finally:
                    await self._drop(role, gaining)
            await asyncio.sleep(max(0.0, started + self._interval - loop.time()))

    async def _hold(self, role: _Role, gaining: asyncio.Future[None]) -> None:
        """Renew until the lease is lost (or the role's work failed)."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            wait = last + self._interval - loop.time()
            if not gaining.done():
                await asyncio.wait({gaining}, timeout=max(0.0, wait))
            else:
                await asyncio.sleep(max(0.0, wait))
            if gaining.done() and not gaining.cancelled() and gaining.exception() is not None:
                log.error(
                    "role work failed; giving the role up", exc_info=gaining.exception(), extra={"role": role.name}
                )
                return
            if loop.time() < last + self._interval:
                continue  # the work finished early: wait for the renewal's turn
            last = loop.time()
            if not await self._fit():
                self._renewed(role, "unfit")
                log.warning("role given up: this instance cannot do its work now", extra={"role": role.name})
                return
            budget = role.valid_until - self._margin - loop.time()
            if not self.leases.expires:
                budget = self._interval  # late or not, no one else can have gained it: a saturated loop loses nothing
            elif budget <= 0:
                self._renewed(role, "late")
                log.warning("lease renewal late; role lost", extra={"role": role.name})
                return
            try:
                async with asyncio.timeout(budget):
                    kept = await self.leases.renew(role.name, role.token, self._ttl_ms)
            except Exception as exc:
                raise_if_cancelled()
                self._renewed(role, "error")
                log.warning("lease renewal failed; role lost", extra={"role": role.name, "error": type(exc).__name__})
                return
            raise_if_cancelled()
            if not kept:
                self._renewed(role, "lost")
                log.warning("lease taken over; role lost", extra={"role": role.name})
                return
            role.valid_until = last + self._ttl
            role.renewals += 1
            self._renewed(role, "ok")

    async def _fit(self) -> bool:
        if self.fit is None:
            return True
        try:
            async with asyncio.timeout(self._margin):
                return await self.fit()
        except Exception:
            raise_if_cancelled()
            return False

    def _renewed(self, role: _Role, result: str) -> None:
        LEASE_RENEWALS.labels(role.name, result).inc()

    async def _drop(self, role: _Role, gaining: asyncio.Future[None]) -> None:
        role.held = False
        ROLE_HELD.labels(role.name).set(0)
        gaining.cancel()
        # Whatever the work ended with; a cancellation of this task goes on. Work that swallows its cancellation (a
        # redis-py call on Python 3.11 can) is asked again, and never holds up the loss.
        done, _ = await asyncio.wait({gaining}, timeout=self._margin)
        if not done:
            gaining.cancel()
            log.error("role work did not stop when cancelled", extra={"role": role.name})
        try:
            await role.on_lose()
        except Exception:
            log.exception("role stop failed", extra={"role": role.name})
        log.info("role lost", extra={"role": role.name, "token": role.token, "instance": self.instance})
        # Hand over at once when it is still ours (a graceful stop); harmless when another already holds it.
        try:
            async with asyncio.timeout(self._interval):
                await self.leases.release(role.name, role.token)
        except Exception as exc:
            log.warning("lease release failed", extra={"role": role.name, "error": type(exc).__name__})
