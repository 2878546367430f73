"""Position opens still settling: each runs in a task of its own, so that its answer may go out before it ends.

`POST /v1/positions` waits for its task up to RT_VALIDATION_WAIT_MS and otherwise answers 202 `pending_validation`
with the position's placeholder; `GET /v1/positions/{id}` shows that placeholder until the task ends (by then the
store has the settled position), and a retry with the same idempotency key joins the task under way. The tasks are
this process's: another instance answers 404 until the store has the position. A stopping server lets them settle
(bounded) and starts no more: a new open, or a request waiting for one it cuts off, is answered 503.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response

from rt.errors import Unavailable

log = logging.getLogger("rt.api")

# How long a stopping server gives the validations under way to settle before it cancels them.
DRAIN_S = 10.0


@dataclass
class Settling:
    task: asyncio.Task[Response]
    account_id: str
    position_id: str
    placeholder: dict[str, Any]
    key: str | None  # the idempotency key and fingerprint it runs under, if any
    fingerprint: str | None
    detached: bool = False  # nobody waits for it any more: what it raises is logged


def shutting_down() -> Unavailable:
    return Unavailable("the server is shutting down")


class Validations:
    def __init__(self) -> None:
        self._by_position: dict[tuple[str, str], Settling] = {}
        self._by_key: dict[tuple[str, str], Settling] = {}
        self.closing = False  # drain() has begun: no validation starts any more

    def start(
        self,
        work: Coroutine[Any, Any, Response],
        account_id: str,
        placeholder: dict[str, Any],
        key: str | None = None,
        fingerprint: str | None = None,
    ) -> Settling:
        """Run `work` in a fresh context: nothing of the request (its unit, above all) follows it into the task.
        Raises Unavailable (503) once the server is stopping: nothing would wait for the task."""
        if self.closing:
            work.close()
            raise shutting_down()
        position_id = str(placeholder["id"])
        task = asyncio.create_task(work, name=f"validation-{position_id}", context=contextvars.Context())
        settling = Settling(task, account_id, position_id, placeholder, key, fingerprint)
        self._by_position[(account_id, position_id)] = settling
        if key is not None:
            self._by_key[(account_id, key)] = settling
        task.add_done_callback(lambda _: self._settled(settling))
        return settling

    def placeholder(self, account_id: str, position_id: str) -> dict[str, Any] | None:
        settling = self._by_position.get((account_id, position_id))
        return settling.placeholder if settling is not None else None

    def under_key(self, account_id: str, key: str) -> Settling | None:
        """The validation under way with this idempotency key."""
        return self._by_key.get((account_id, key))

    def __len__(self) -> int:
        return len(self._by_position)

    def _settled(self, settling: Settling) -> None:
        self._by_position.pop((settling.account_id, settling.position_id), None)
        if settling.key is not None:
            self._by_key.pop((settling.account_id, settling.key), None)
        task = settling.task
        if task.cancelled() or not settling.detached:
            return
        where = {"account_id": settling.account_id, "position_id": settling.position_id}
        error = task.exception()
        if error is not None:
            log.error("a position answered pending_validation failed to settle", exc_info=error, extra=where)
        elif (status := task.result().status_code) >= 400:
            log.info("a position answered pending_validation was refused", extra={**where, "status": status})

    async def settle(self, within_s: float) -> set[asyncio.Task[Response]]:
        """Wait up to `within_s` for the validations under way to end; the tasks still running then."""
        tasks = {settling.task for settling in self._by_position.values()}
        if not tasks:
            return set()
        _, late = await asyncio.wait(tasks, timeout=within_s)
        return late

    async def drain(self, within_s: float = DRAIN_S) -> None:
        """Refuse new validations, let those under way settle (bounded), then cancel what is left: who waits for one
        cancelled is answered 503."""
        self.closing = True
        late = await self.settle(within_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
