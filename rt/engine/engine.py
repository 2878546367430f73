"""The engine: one writer per account. Every command runs under its account's lock, then its changes are stored
and published in one step, so Cerberus always sees what every earlier command did."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from rt.bus import Bus, Event
from rt.engine import ledger, risk
from rt.engine.models import Book, Envelope, Order, Position
from rt.engine.unit import Unit
from rt.exchanges import Exchange, Fill, Ticker
from rt.exchanges.registry import Venues
from rt.store import Store
from rt.store.models import TradeBatch

log = logging.getLogger("rt.engine")

T = TypeVar("T")


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
        # Set by the strategy runner: (account, strategy, added notional, adds exposure) -> Cerberus checks.
        self.strategy_checks: Callable[[str, str, Decimal, bool], list[risk.Check]] | None = None
        # Set by the strategy runner: stop every strategy of an account (Charon), returning how many.
        self.halt_strategies: Callable[[str], Awaitable[int]] | None = None

    # lifecycle

    async def start(self) -> None:
        for book in await self.store.load_books():
            self._books[book.account_id] = book
            for order in book.orders.values():
                if order.status == "open" and order.venue_order_id:
                    self._by_venue_order[order.venue_order_id] = (book.account_id, order.id)
                    adopt = getattr(self.venues.paper, "adopt", None)
                    if order.exchange == "paper" and adopt is not None:
                        from rt.engine.trading import spec_of

                        adopt(order.venue_order_id, spec_of(order))
        self._flusher = asyncio.create_task(self._flush_marks_forever(), name="mark-flush")
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
            cfg = self.config
            book = Book(account_id, cfg.starting_balance, cfg.currency, envelope=Envelope(**vars(cfg.envelope)))
            ledger.roll_day(book)
            self._books[account_id] = book
            await self.store.save(TradeBatch(books=[book]))
        return book

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
        published with the write's answer, when the unit ends.
        """
        unit = Unit.current()
        lock = self.lock(account_id)
        if unit is not None:
            await unit.hold(account_id, lock)
        else:
            await lock.acquire()
        try:
            book = await self.book(account_id)
            changes = Changes(book)
            try:
                return await command(changes)
            finally:
                try:
                    await self.commit(changes, unit)
                except BaseException:
                    # Nothing of this command reached the store: the book goes back to what the store holds.
                    await self._reload(account_id)
                    raise
        finally:
            if unit is None:
                lock.release()

    async def _reload(self, account_id: str) -> None:
        stored = {book.account_id: book for book in await self.store.load_books()}.get(account_id)
        previous = self._books.pop(account_id, None)
        if previous is not None:
            for order in previous.orders.values():
                self.untrack(order)
        if stored is not None:
            self._books[account_id] = stored
            for order in stored.orders.values():
                self.track(order)

    async def commit(self, changes: Changes, unit: Unit | None = None) -> None:
        """Store and publish a command's changes; in a unit, hand them to it to store with the write's answer."""
        book = changes.book
        if changes.positions or changes.orders or changes.book_changed:
            self._alerts(changes)
        if not (changes.positions or changes.orders or changes.events or changes.book_changed):
            return
        if changes.positions or changes.orders:
            changes.book_changed = True
            changes.event("account.updated", ledger.summary(book, self.config.leverage))
        marked = [p for p in self._marked.pop(book.account_id, {}).values() if p.id not in changes.positions]
        batch = TradeBatch(
            books=[book] if changes.book_changed else [],
            positions=[*changes.positions.values(), *marked],
            orders=list(changes.orders.values()),
            events=changes.events,
        )
        events = changes.events

        async def publish() -> None:
            if events:
                await self.bus.publish(events)

        if unit is not None:
            account_id = book.account_id
            unit.defer(batch, publish, lambda: self._reload(account_id))
        else:
            await self.store.save(batch)
            await publish()
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
            exit_price = ticker.bid if position.side == "long" else ticker.ask
            reason = _crossed(position, exit_price)
            if reason and position.id not in self._closing:
                self._closing.add(position.id)
                due.append((book.account_id, position.id, reason))
        if moved and book.account_id not in self._alerting and self._alerts_differ(book):
            self._alerting.add(book.account_id)
            self.spawn(self._refresh_alerts(book.account_id), f"alerts-{book.account_id}")

    async def flush_marks(self) -> None:
        """Store the marks of open positions in one write, for every account not inside a command (a command's
        commit stores its account's marks itself)."""
        accounts = [a for a in self._marked if not self.lock(a).locked()]
        if not accounts:
            return
        async with contextlib.AsyncExitStack() as held:
            for account_id in accounts:
                await held.enter_async_context(self.lock(account_id))
            taken = {a: self._marked.pop(a, {}) for a in accounts}
            positions = [
                p
                for a, marked in taken.items()
                if (book := self._books.get(a)) is not None
                for p in marked.values()
                if p.status == "open" and book.positions.get(p.id) is p
            ]
            if not positions:
                return
            try:
                await self.store.save(TradeBatch(positions=positions))
            except Exception:
                log.exception("storing marks failed; kept for the next write")
                for a, marked in taken.items():
                    self._marked[a] = {**marked, **self._marked.get(a, {})}

    async def _flush_marks_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.mark_flush_interval)
            try:
                await self.flush_marks()
            except Exception:
                log.exception("mark flush failed")

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
