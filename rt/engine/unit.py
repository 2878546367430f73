"""One commit for a whole write: what its engine commands changed and the first answer to its idempotency key.

A retry after a crash must find the answer whenever the trade is stored. Every engine command runs in a unit (its
own, or the `atomic()` one of the write it is part of). The unit opens one write transaction of the store, keeps each
account it touches locked (in this process, and through the store for every other process on it) and collects the
changes; when the write has its answer, it stores everything in that transaction, commits, publishes the events and
unlocks the accounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from rt.records.trading import IdempotencyRecord, TradeBatch

if TYPE_CHECKING:
    from rt.store import Trading, Writing

Step = Callable[[], Awaitable[None]]

log = logging.getLogger("rt.engine")

_current: ContextVar[Unit | None] = ContextVar("rt_unit", default=None)


class Unit:
    def __init__(self, store: Trading) -> None:
        self._store = store
        self._task = asyncio.current_task()
        self._locks: dict[str, asyncio.Lock] = {}
        self._books: dict[str, Any] = {}
        self._positions: dict[str, Any] = {}
        self._orders: dict[str, Any] = {}
        self._events: list[Any] = []
        self._responses: list[IdempotencyRecord] = []
        self._after: list[Step] = []
        self._undo: list[Step] = []
        self._transaction: contextlib.AsyncExitStack | None = None
        self._writing: Writing | None = None

    @staticmethod
    def current() -> Unit | None:
        """The unit this task writes in. A task it starts inherits the context but not the unit: it runs its
        commands on its own, as any other writer, so it waits for the unit's end on an account the unit holds (the
        unit's own task must never wait for such a task)."""
        unit = _current.get()
        return unit if unit is not None and unit._task is asyncio.current_task() else None

    def holds(self, account_id: str) -> bool:
        return account_id in self._locks

    async def hold(self, account_id: str, lock: asyncio.Lock) -> int | None:
        """Take an account's writer lock until the unit ends: this process's, then the store's. Returns the stored
        version of the account's book (see Writing.lock). Only for an account the unit does not hold yet."""
        assert account_id not in self._locks
        await lock.acquire()
        self._locks[account_id] = lock
        writing = await self.writing()
        return await writing.lock(account_id)

    async def writing(self) -> Writing:
        """The unit's write transaction, begun on first use."""
        if self._writing is None:
            stack = contextlib.AsyncExitStack()
            self._writing = await stack.enter_async_context(self._store.writing())
            self._transaction = stack
        return self._writing

    def defer(self, batch: TradeBatch, after: Step, undo: Step) -> None:
        """A command's changes; `after` runs once they are stored (publish), `undo` if storing them fails."""
        self._books.update((book.account_id, book) for book in batch.books)
        self._positions.update((position.id, position) for position in batch.positions)
        self._orders.update((order.id, order) for order in batch.orders)
        self._events.extend(batch.events)
        self._responses.extend(batch.responses)
        self._after.append(after)
        self._undo.append(undo)

    def keep(self, record: IdempotencyRecord) -> None:
        self._responses.append(record)

    async def _commit(self) -> None:
        batch = TradeBatch(
            books=list(self._books.values()),
            positions=list(self._positions.values()),
            orders=list(self._orders.values()),
            events=self._events,
            responses=self._responses,
        )
        try:
            if batch.books or batch.positions or batch.orders or batch.events or batch.responses:
                await (self._writing or self._store).save(batch)
            if self._transaction is not None:
                transaction, self._transaction = self._transaction, None
                await transaction.aclose()  # commits
        except BaseException as exc:
            if self._transaction is not None:
                transaction, self._transaction = self._transaction, None
                with contextlib.suppress(Exception):
                    await transaction.__aexit__(type(exc), exc, exc.__traceback__)  # rolls back
            for undo in self._undo:
                with contextlib.suppress(Exception):
                    await undo()
            raise
        for after in self._after:
            # Stored: the write happened, whatever the bus says. An event the bus did not take is published by the
            # outbox relay (Engine.relay); the caller gets its answer.
            try:
                await after()
            except Exception:
                log.warning("publishing a stored write's events failed; the outbox relay publishes them", exc_info=True)

    def _release(self) -> None:
        for lock in self._locks.values():
            lock.release()
        self._locks.clear()


@contextlib.asynccontextmanager
async def atomic(store: Trading) -> AsyncIterator[Unit]:
    """Everything the engine commands of this task change inside, and what `keep()` gets, commits once at the end:
    also when the body fails (as each command's changes did before), then without what the body would have kept."""
    outer = Unit.current()
    if outer is not None:
        yield outer
        return
    unit = Unit(store)
    token = _current.set(unit)
    try:
        try:
            yield unit
        finally:
            _current.reset(token)
            await unit._commit()
    finally:
        unit._release()
