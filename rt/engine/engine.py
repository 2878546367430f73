"""The engine: one writer per account. Every command runs under its account's lock, then its changes are stored
and published in one step, so Cerberus always sees what every earlier command did."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from rt.bus import Bus, BusLagged
from rt.engine import ledger, risk
from rt.engine.market import TickWork, limit_alerts
from rt.engine.unit import Unit, atomic
from rt.errors import RtError
from rt.exchanges import Exchange, Fill
from rt.exchanges.registry import Venues
from rt.records.events import Event
from rt.records.trading import Book, Envelope, Order, Position, TradeBatch
from rt.store import Trading

log = logging.getLogger("rt.engine")

T = TypeVar("T")

_OWN_EVENTS = 100_000
# An event stored this long ago and still not marked published lost its publish to a crash (the mark is flushed every
# mark_flush_interval).
RELAY_AFTER_S = 5.0
RELAY_BATCH = 1000


@dataclass
class Changes:
    """What a command touched; committed (stored, then published) when the command ends."""

    book: Book
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    book_changed: bool = False

    def position(self, position: Position, event: str | None = None, **extra: Any) -> None:
        self.positions[position.id] = position
        if event:
            self.events.append(Event(self.book.account_id, event, {**position.as_json(), **extra}))

    def order(self, order: Order, event: str | None = None) -> None:
        self.orders[order.id] = order
        if event:
            self.events.append(Event(self.book.account_id, event, order.as_json()))

    def event(self, name: str, data: dict[str, Any]) -> None:
        self.events.append(Event(self.book.account_id, name, data))


@dataclass(frozen=True)
class EngineConfig:
    starting_balance: Decimal = Decimal("100000")
    currency: str = "USDT"
    leverage: Decimal = Decimal("1")
    envelope: Envelope = field(default_factory=Envelope)
    # Seconds between writes of the prices open positions were marked to (a commit of the account writes them too).
    mark_flush_interval: float = 1.0


class StrategyHooks(Protocol):
    """What the engine asks of the strategy runner: Cerberus's checks of a strategy's own limits, and Charon's halt."""

    def checks(self, account_id: str, strategy_id: str, notional: Decimal, increases: bool) -> list[risk.Check]:
        """The checks of an order of this strategy adding `notional` (increasing exposure or not)."""

    async def halt(self, account_id: str) -> int:
        """Stop every strategy of the account; how many were stopped."""


class Engine:
    """The writer: runs each account's commands one at a time (across every process on the store), stores what they
    changed with their answer in one transaction and then publishes it; keeps this process's copy of every book."""

    def __init__(self, store: Trading, bus: Bus, venues: Venues, config: EngineConfig | None = None) -> None:
        self.store = store
        self.bus = bus
        self.venues = venues
        self.config = config or EngineConfig()
        self._books: dict[str, Book] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._by_venue_order: dict[str, tuple[str, str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flusher: asyncio.Task[None] | None = None
        # Ids of the events this engine published, so following the bus tells its own writes from other processes'.
        self._own: OrderedDict[str, None] = OrderedDict()
        # Ids of the events published since the store last heard of it (see flush_sent).
        self._sent: list[str] = []
        self._stale: set[str] = set()  # accounts with a reload under way
        self._behind: set[str] = set()  # accounts another process wrote since this one last read them
        # Whether this process does each tick's work (protective closes, resting fills, alerts, stored marks) and
        # relays held-back events: true alone, and on the one instance holding the market when several share a store.
        self.protects = True
        self.ticks = TickWork(self)
        self.strategies: StrategyHooks | None = None

    # lifecycle

    async def start(self) -> None:
        for book in await self.store.load_books():
            self._swap(book.account_id, book)
        self._flusher = asyncio.create_task(self._flush_forever(), name="engine-flush")
        for venue in self.venues.all():
            self.ticks.listen(venue)
            await venue.start()

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for venue in self.venues.all():
            await venue.close()
        await self.ticks.flush_marks()
        try:
            await self.flush_sent()
        except Exception:
            log.exception("storing which events were published failed; they are published again after a restart")

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # state

    def books(self) -> list[Book]:
        return list(self._books.values())

    def cached_book(self, account_id: str) -> Book | None:
        return self._books.get(account_id)

    def lock(self, account_id: str) -> asyncio.Lock:
        lock = self._locks.get(account_id)
        if lock is None:
            lock = self._locks[account_id] = asyncio.Lock()
        return lock

    async def book(self, account_id: str) -> Book:
        """The account's book; a new account starts with the configured paper balance."""
        book = self._books.get(account_id)
        if book is not None and account_id in self._behind and not self.lock(account_id).locked():
            self._behind.discard(account_id)
            await self.refresh(account_id)
            book = self._books.get(account_id)
        if book is None:
            stored = await self.store.load_book(account_id)
            if stored is None:
                # Made by a read, outside the account's lock: version -1, "never written", so the first write (which
                # stores version 0) is always a later version than this copy, whichever process makes it.
                fresh = self._new_book(account_id)
                fresh.version = -1
                await self.store.create_book(fresh)
                stored = await self.store.load_book(account_id)
                assert stored is not None
            # Another coroutine may have loaded it meanwhile: keep the one in use.
            book = self._books.get(account_id) or self._swap(account_id, stored)
        return book

    def _new_book(self, account_id: str) -> Book:
        cfg = self.config
        book = Book(account_id, cfg.starting_balance, cfg.currency, envelope=Envelope(**vars(cfg.envelope)))
        ledger.roll_day(book)
        return book

    async def hold(self, account_id: str) -> Book:
        """Make this task's unit the account's only writer (in every process on the store) and return its book, as
        stored: a copy that fell behind another process's writes is reloaded first."""
        unit = Unit.current()
        assert unit is not None, "hold() runs inside a unit"
        if unit.holds(account_id):
            return self._books[account_id]
        version = await unit.hold(account_id, self.lock(account_id))
        book = self._books.get(account_id)
        if version is None:  # the store has one writing process, this one: its books are the truth
            return book or await self.book(account_id)
        if book is not None and book.version == version:
            return book
        stored = await (await unit.writing()).load_book(account_id)
        if stored is None:
            stored = self._new_book(account_id)
            stored.version = -1  # stored with the first write, as version 0
        return self._swap(account_id, stored)

    def _swap(self, account_id: str, stored: Book) -> Book:
        """Put a book read from the store in place of this process's copy."""
        previous = self._books.pop(account_id, None)
        self._behind.discard(account_id)
        # Marks taken on the copy being replaced must never be stored: a position closed elsewhere would reopen.
        self.ticks.forget_marks(account_id)
        if previous is not None:
            for order in previous.orders.values():
                self.untrack(order)
                if order.venue_order_id and order.id not in stored.orders and (venue := self._venue(order)):
                    venue.forget(order.venue_order_id)
        self.ticks.mark_loaded(stored)
        self._books[account_id] = stored
        self.ticks.index(stored)
        for order in stored.orders.values():
            self.track(order)
        self._follow_at_venue(stored)
        return stored

    def _follow_at_venue(self, book: Book) -> None:
        """Have each venue follow the book's open orders and tick the symbols of its open positions."""
        from rt.engine.trading import spec_of

        for order in book.orders.values():
            if order.status == "open" and order.venue_order_id and (venue := self._venue(order)):
                venue.adopt(order.venue_order_id, spec_of(order))
        for position in book.positions.values():
            if position.status == "open" and (venue := self._venue(position)):
                venue.watch(position.symbol)

    def _venue(self, item: Order | Position) -> Exchange | None:
        try:
            return self.venues.get(item.account_id, item.exchange)
        except RtError:
            log.warning("the book names a venue this process does not have", extra={"exchange": item.exchange})
            return None

    async def refresh(self, account_id: str) -> None:
        """Reload an account's book when the store has a later version (another process wrote it)."""
        async with self.lock(account_id):
            stored = await self.store.load_book(account_id)
            book = self._books.get(account_id)
            if stored is not None and (book is None or stored.version > book.version):
                self._swap(account_id, stored)

    async def refresh_all(self) -> None:
        """Reload every book the store has a later version of (an instance taking over the market's tick work)."""
        self._behind.clear()
        for stored in await self.store.load_books():
            async with self.lock(stored.account_id):
                book = self._books.get(stored.account_id)
                # Read before the lock: a write of this process may have committed a later version meanwhile.
                if book is None or stored.version > book.version:
                    self._swap(stored.account_id, stored)

    async def follow(self) -> None:
        """Keep this process's books in step with the writes of other processes on the same store: an event this
        engine did not publish means its account changed elsewhere. The process doing the tick work reloads the book
        at once (its ticks close positions and fill orders); another reloads it when it is next read."""
        while True:
            try:
                async for delivery in self.bus.subscribe():
                    self._heard(delivery.event)
                return
            except BusLagged:
                # Deliveries were lost to this reader: any book may have changed meanwhile.
                log.warning("fell behind the bus; reloading every book")
                self.spawn(self.refresh_all(), "refresh-all")

    def _heard(self, event: Event) -> None:
        account_id = event.account_id
        if event.id in self._own or account_id in self._stale:
            return
        if not self.protects:
            self._behind.add(account_id)
            return
        self._stale.add(account_id)
        self.spawn(self._follow_up(account_id), f"refresh-{account_id}")

    async def _follow_up(self, account_id: str) -> None:
        self._stale.discard(account_id)  # an event from now on asks for another look
        try:
            await self.refresh(account_id)
        except Exception:
            log.exception("refreshing a book failed", extra={"account_id": account_id})

    def track(self, order: Order) -> None:
        if order.venue_order_id and order.status == "open":
            self._by_venue_order[order.venue_order_id] = (order.account_id, order.id)

    def untrack(self, order: Order) -> None:
        if order.venue_order_id:
            self._by_venue_order.pop(order.venue_order_id, None)

    def owner_of(self, fill: Fill) -> tuple[str, str] | None:
        return self._by_venue_order.get(fill.venue_order_id)

    # commands

    async def run(self, account_id: str, command: Callable[[Changes], Awaitable[T]]) -> T:
        """Run one command as the account's only writer, then store and publish what it changed.

        Inside a unit (rt.engine.unit: an idempotent write) the account stays locked and its changes are stored and
        published with the write's answer, when the unit ends; otherwise the command is a unit of its own.
        """
        async with atomic(self.store) as unit:
            changes = Changes(await self.hold(account_id))
            try:
                return await command(changes)
            finally:
                self.commit(changes, unit)

    async def _undo(self, account_id: str) -> None:
        """A commit failed: this process's copy holds changes nobody stored. Put the stored book back; when that
        fails too, drop the copy, so the next command or read loads it (never taking the copy for a stored version)."""
        try:
            await self._reload(account_id)
        except Exception:
            previous = self._books.pop(account_id, None)
            self.ticks.forget_marks(account_id)
            for order in previous.orders.values() if previous is not None else ():
                self.untrack(order)
            raise

    async def _reload(self, account_id: str) -> None:
        stored = await self.store.load_book(account_id)
        if stored is not None:
            self._swap(account_id, stored)
        else:
            previous = self._books.pop(account_id, None)
            self.ticks.forget_marks(account_id)
            for order in previous.orders.values() if previous is not None else ():
                self.untrack(order)

    def commit(self, changes: Changes, unit: Unit) -> None:
        """Hand a command's changes to its unit, which stores them with the write's answer and then publishes them."""
        book = changes.book
        if changes.positions or changes.orders or changes.book_changed:
            limit_alerts(changes)
        if not (changes.positions or changes.orders or changes.events or changes.book_changed):
            return
        if changes.positions or changes.orders:
            changes.book_changed = True
            changes.event("account.updated", ledger.summary(book, self.config.leverage))
        if changes.book_changed:
            book.version += 1
        marked = [p for p in self.ticks.take_marks(book) if p.id not in changes.positions]
        batch = TradeBatch(
            books=[book] if changes.book_changed else [],
            positions=[*changes.positions.values(), *marked],
            orders=list(changes.orders.values()),
            events=changes.events,
        )
        events = changes.events
        for event in events:
            self._own[event.id] = None
        while len(self._own) > _OWN_EVENTS:
            self._own.popitem(last=False)

        async def publish() -> None:
            if events:
                await self.bus.publish(events)
                self._sent.extend(event.id for event in events)

        account_id = book.account_id
        unit.defer(batch, publish, lambda: self._undo(account_id))
        # The book holds what is live; finished positions and orders are in the store only.
        for position in changes.positions.values():
            if position.status in ("closed", "rejected", "canceled"):
                book.positions.pop(position.id, None)
        for order in changes.orders.values():
            if order.status != "open":
                book.orders.pop(order.id, None)
        self.ticks.index(book)

    async def flush_sent(self) -> None:
        """Mark the events the bus has as published in the store (the outbox), in one write."""
        sent, self._sent = self._sent, []
        try:
            await self.store.mark_published(sent)
        except Exception:
            self._sent = sent + self._sent
            raise

    async def relay(self, older_than_s: float = RELAY_AFTER_S) -> int:
        """Publish the stored events that were never marked published: a crash (of this process or another on the
        store) came between a write's commit and its publish. The bus delivers an event id once, so an event whose
        mark was only late is not delivered twice. Done by the process doing the tick work; returns how many."""
        if not self.protects:
            return 0
        before_us = time.time_ns() // 1000 - int(older_than_s * 1_000_000)
        events = await self.store.unpublished_events(before_us, RELAY_BATCH)
        if not events:
            return 0
        await self.bus.publish(events)
        await self.store.mark_published([event.id for event in events])
        log.warning("published events a crash had held back", extra={"events": len(events)})
        return len(events)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.mark_flush_interval)
            for step in (self.ticks.flush_marks, self.flush_sent, self.relay):
                try:
                    await step()
                except Exception:
                    log.exception("engine flush failed", extra={"step": step.__name__})
