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
from typing import Any, TypeVar

from rt.bus import Bus
from rt.engine import ledger, risk
from rt.engine.unit import Unit, atomic
from rt.exchanges import Exchange, Fill, Ticker
from rt.exchanges.registry import Venues
from rt.records.events import Event
from rt.records.trading import Book, Envelope, Order, Position, TradeBatch
from rt.store import Store

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


class Engine:
    def __init__(self, store: Store, bus: Bus, venues: Venues, config: EngineConfig | None = None) -> None:
        self.store = store
        self.bus = bus
        self.venues = venues
        self.config = config or EngineConfig()
        self._books: dict[str, Book] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._by_venue_order: dict[str, tuple[str, str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: set[str] = set()
        self._alerting: set[str] = set()
        # account -> its open positions whose mark moved since they were last stored
        self._marked: dict[str, dict[str, Position]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._after_mark: dict[str, list[Callable[[Ticker], None]]] = {}
        # Ids of the events this engine published, so following the bus tells its own writes from other processes'.
        self._own: OrderedDict[str, None] = OrderedDict()
        # Ids of the events published since the store last heard of it (see flush_sent).
        self._sent: list[str] = []
        self._stale: set[str] = set()
        # Whether this process does each tick's protective work (stop loss, take profit) and stores the marks: true
        # alone, and on the one instance that holds the market when several share a store.
        self.protects = True
        # Set by the strategy runner: (account, strategy, added notional, adds exposure) -> Cerberus checks.
        self.strategy_checks: Callable[[str, str, Decimal, bool], list[risk.Check]] | None = None
        # Set by the strategy runner: stop every strategy of an account (Charon), returning how many.
        self.halt_strategies: Callable[[str], Awaitable[int]] | None = None

    # lifecycle

    async def start(self) -> None:
        for book in await self.store.load_books():
            self._swap(book.account_id, book)
        self._flusher = asyncio.create_task(self._flush_forever(), name="engine-flush")
        for venue in self.venues.all():
            self.listen(venue)
            await venue.start()

    def listen(self, venue: Exchange) -> None:
        from rt.engine.trading import on_fill, on_tick

        async def filled(fill: Fill) -> None:
            await on_fill(self, fill)

        def ticked(ticker: Ticker) -> None:
            on_tick(self, venue.id, ticker)
            for listener in self._after_mark.get(venue.id, ()):
                try:
                    listener(ticker)
                except Exception:
                    log.exception("tick listener failed", extra={"exchange": venue.id})

        venue.on_fill(filled)
        venue.on_tick(ticked)

    def after_mark(self, exchange: str, listener: Callable[[Ticker], None]) -> None:
        """Call listener with each tick of this venue once the engine has marked every position to it, so whoever
        hears of a tick (the hub, hence every client) reads P&L at that tick's price."""
        self._after_mark.setdefault(exchange, []).append(listener)

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
        await self.flush_marks()
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
        if book is None:
            stored = await self.store.load_book(account_id)
            if stored is None:
                await self.store.create_book(self._new_book(account_id))
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
        stored = await (await unit.writing()).load_book(account_id) if version >= 0 else None
        if stored is None:
            stored = self._new_book(account_id)
            stored.version = -1  # stored with the first write, as version 0
        return self._swap(account_id, stored)

    def _swap(self, account_id: str, stored: Book) -> Book:
        """Put a book read from the store in place of this process's copy."""
        previous = self._books.pop(account_id, None)
        # Marks taken on the copy being replaced must never be stored: a position closed elsewhere would reopen.
        self._marked.pop(account_id, None)
        if previous is not None:
            for order in previous.orders.values():
                self.untrack(order)
            for position in stored.positions.values():
                mine = previous.positions.get(position.id)
                if mine is not None and position.status == "open" and mine.status == "open":
                    # Marked here since the store last heard of the price.
                    position.current_price = mine.current_price
        self._books[account_id] = stored
        for order in stored.orders.values():
            self.track(order)
            self._adopt(order)
        return stored

    def _adopt(self, order: Order) -> None:
        if order.status == "open" and order.venue_order_id and order.exchange == "paper":
            adopt = getattr(self.venues.paper, "adopt", None)
            if adopt is not None:
                from rt.engine.trading import spec_of

                adopt(order.venue_order_id, spec_of(order))

    async def refresh(self, account_id: str) -> None:
        """Reload an account's book when the store has a later version (another process wrote it)."""
        async with self.lock(account_id):
            stored = await self.store.load_book(account_id)
            book = self._books.get(account_id)
            if stored is not None and (book is None or stored.version != book.version):
                self._swap(account_id, stored)

    async def refresh_all(self) -> None:
        """Reload every book the store has a later version of (an instance taking over the market's tick work)."""
        for stored in await self.store.load_books():
            async with self.lock(stored.account_id):
                book = self._books.get(stored.account_id)
                if book is None or book.version != stored.version:
                    self._swap(stored.account_id, stored)

    async def follow(self) -> None:
        """Keep this process's books in step with the writes of other processes on the same store: an event this
        engine did not publish means its account changed elsewhere."""
        async for delivery in self.bus.subscribe():
            event = delivery.event
            if event.id in self._own or event.account_id in self._stale:
                continue
            self._stale.add(event.account_id)
            self.spawn(self._follow_up(event.account_id), f"refresh-{event.account_id}")

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

    async def _reload(self, account_id: str) -> None:
        stored = await self.store.load_book(account_id)
        if stored is not None:
            self._swap(account_id, stored)
        else:
            previous = self._books.pop(account_id, None)
            for order in previous.orders.values() if previous is not None else ():
                self.untrack(order)

    def commit(self, changes: Changes, unit: Unit) -> None:
        """Hand a command's changes to its unit, which stores them with the write's answer and then publishes them."""
        book = changes.book
        if changes.positions or changes.orders or changes.book_changed:
            self._alerts(changes)
        if not (changes.positions or changes.orders or changes.events or changes.book_changed):
            return
        if changes.positions or changes.orders:
            changes.book_changed = True
            changes.event("account.updated", ledger.summary(book, self.config.leverage))
        if changes.book_changed:
            book.version += 1
        marked = [
            p
            for p in self._marked.pop(book.account_id, {}).values()
            if p.id not in changes.positions and book.positions.get(p.id) is p
        ]
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
        unit.defer(batch, publish, lambda: self._reload(account_id))
        # The book holds what is live; finished positions and orders are in the store only.
        for position in changes.positions.values():
            if position.status in ("closed", "rejected", "canceled"):
                book.positions.pop(position.id, None)
        for order in changes.orders.values():
            if order.status != "open":
                book.orders.pop(order.id, None)

    def _alerts(self, changes: Changes) -> None:
        """risk.limit_reached at 80% (warning) and 100% (breached) of a limit, once per crossing."""
        book = changes.book
        for check, (used, limit, current) in risk.utilization(book).items():
            level = "breached" if used >= 1 else "warning" if used >= risk.WARNING_AT else ""
            if level == book.alerts.get(check, ""):
                continue
            previous = book.alerts.get(check, "")
            if level:
                book.alerts[check] = level
            else:
                book.alerts.pop(check, None)
            changes.book_changed = True
            data: dict[str, Any] = {
                "check": check,
                "level": level,
                "limit": limit,
                "current": current,
                "utilization": round(float(used), 4),
            }
            if check == risk.DAILY_LOSS and level == "breached" and book.state == "active":
                book.state = "reducing"
                data["trading_state"] = "reducing"
            if level and (previous != "breached"):
                changes.event("risk.limit_reached", data)

    def mark(self, exchange: str, ticker: Ticker) -> list[tuple[str, str, str]]:
        """Move open positions on this symbol to the new price; returns (account, position, reason) to close.

        An account whose limit alerts change with the price gets a commit of its own, so `risk.limit_reached`
        (and the switch to `reducing` on a daily-loss breach) does not wait for its next order.
        """
        due: list[tuple[str, str, str]] = []
        for book in list(self._books.values()):
            # One account's failure (a bad value in its book) must never stop the protection of the others.
            try:
                self._mark_book(book, exchange, ticker, due)
            except Exception:
                log.exception("marking failed", extra={"account_id": book.account_id, "symbol": ticker.symbol})
        return due

    def _mark_book(self, book: Book, exchange: str, ticker: Ticker, due: list[tuple[str, str, str]]) -> None:
        moved = False
        for position in book.positions.values():
            if position.status != "open" or position.symbol != ticker.symbol or position.exchange != exchange:
                continue
            moved = True
            if position.current_price != ticker.last:
                position.current_price = ticker.last
                self._marked.setdefault(book.account_id, {})[position.id] = position
            if not self.protects:
                continue
            exit_price = ticker.bid if position.side == "long" else ticker.ask
            reason = _crossed(position, exit_price)
            if reason and position.id not in self._closing:
                self._closing.add(position.id)
                due.append((book.account_id, position.id, reason))
        if moved and self.protects and book.account_id not in self._alerting and self._alerts_differ(book):
            self._alerting.add(book.account_id)
            self.spawn(self._refresh_alerts(book.account_id), f"alerts-{book.account_id}")

    async def flush_marks(self) -> None:
        """Store the prices open positions were marked to, in one write that touches nothing else (a command's
        commit stores its account's marks itself). Only the process that does the tick work stores them."""
        if not self._marked:
            return
        taken, self._marked = self._marked, {}
        if not self.protects:
            return
        marks = [(p.id, p.current_price) for marked in taken.values() for p in marked.values() if p.status == "open"]
        if not marks:
            return
        try:
            await self.store.save_marks(marks)
        except Exception:
            log.exception("storing marks failed; kept for the next write")
            for a, marked in taken.items():
                self._marked[a] = {**marked, **self._marked.get(a, {})}

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
            for step in (self.flush_marks, self.flush_sent, self.relay):
                try:
                    await step()
                except Exception:
                    log.exception("engine flush failed", extra={"step": step.__name__})

    def _alerts_differ(self, book: Book) -> bool:
        for check, (used, _, _) in risk.utilization(book).items():
            level = "breached" if used >= 1 else "warning" if used >= risk.WARNING_AT else ""
            if level != book.alerts.get(check, ""):
                return True
        return False

    async def _refresh_alerts(self, account_id: str) -> None:
        async def command(changes: Changes) -> None:
            if self._alerts_differ(changes.book):
                self._alerts(changes)

        try:
            await self.run(account_id, command)
        except Exception:
            log.exception("alert refresh failed", extra={"account_id": account_id})
        finally:
            self._alerting.discard(account_id)

    def done_closing(self, position_id: str) -> None:
        self._closing.discard(position_id)


def _crossed(position: Position, exit_price: Decimal) -> str | None:
    long = position.side == "long"
    if position.stop_loss is not None and (
        exit_price <= position.stop_loss if long else exit_price >= position.stop_loss
    ):
        return "stop_loss"
    if position.take_profit is not None and (
        exit_price >= position.take_profit if long else exit_price <= position.take_profit
    ):
        return "take_profit"
    return None
