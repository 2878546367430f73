"""What the market does to the books: each tick marks open positions, closes those whose stop loss or take profit it
crossed, and raises limit alerts between orders; a resting order's fill is booked; the marks are stored on their own.

When several instances share a store, only the one doing the tick work (`Engine.protects`) closes, alerts and stores
marks; every instance marks its own copies, so its reads show P&L at the last tick.

A tick also gives a currency's rate (BTC/USDT the BTC's, USD/JPY the yen's): open positions and orders quoted in that
currency on another symbol (ETH/BTC, EUR/JPY) take it as their cross rate, so their P&L counts in account currency.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rt.engine import risk
from rt.errors import RtError
from rt.exchanges import Exchange, Fill, Ticker
from rt.records.trading import ACCOUNT_CURRENCIES, Book, Position, currencies, rate_from

if TYPE_CHECKING:
    from rt.engine.engine import Changes, Engine

log = logging.getLogger("rt.engine")

TickListener = Callable[[Ticker], None]


class TickWork:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._closing: set[str] = set()
        self._alerting: set[str] = set()
        # account -> its open positions whose mark moved since they were last stored
        self._marked: dict[str, dict[str, Position]] = {}
        self._after_mark: dict[str, list[TickListener]] = {}
        # (venue, symbol) -> the last tick heard: a book read from the store is marked to it at once. By venue, not
        # id: a simulated venue and an account's real one may share an exchange id, never their prices.
        self._last: dict[tuple[Exchange, str], Ticker] = {}

    def listen(self, venue: Exchange) -> None:
        async def filled(fill: Fill) -> None:
            await self.on_fill(fill)

        def ticked(ticker: Ticker) -> None:
            self.on_tick(venue, ticker)
            for listener in self._after_mark.get(venue.id, ()):
                try:
                    listener(ticker)
                except Exception:
                    log.exception("tick listener failed", extra={"exchange": venue.id})

        venue.on_fill(filled)
        venue.on_tick(ticked)

    def after_mark(self, exchange: str, listener: TickListener) -> None:
        """Call listener with each tick of this venue once every position is marked to it, so whoever hears of a
        tick (the hub, hence every client) reads P&L at that tick's price."""
        self._after_mark.setdefault(exchange, []).append(listener)

    # ticks

    def on_tick(self, venue: Exchange, ticker: Ticker) -> None:
        self._last[(venue, ticker.symbol)] = ticker
        for account_id, position_id, reason in self.mark(venue, ticker):
            self.engine.spawn(self._protect(account_id, position_id, reason), f"close-{position_id}")

    def mark(self, venue: Exchange, ticker: Ticker) -> list[tuple[str, str, str]]:
        """Move open positions on this symbol to the new price; returns (account, position, reason) to close. Only in
        the books that trade the venue's id on this venue: one id can name a simulated venue for one account and a
        real one for another, and neither market's prices may move (or close) the other's positions.

        An account whose limit alerts change with the price gets a commit of its own, so `risk.limit_reached`
        (and the switch to `reducing` on a daily-loss breach) does not wait for its next order.
        """
        exchange = venue.id
        due: list[tuple[str, str, str]] = []
        for book in self.engine.books():
            if self.engine.venues.resolve(book.account_id, exchange) is not venue:
                continue
            # One account's failure (a bad value in its book) must never stop the protection of the others.
            try:
                self._mark_book(book, exchange, ticker, due)
            except Exception:
                log.exception("marking failed", extra={"account_id": book.account_id, "symbol": ticker.symbol})
        return due

    def _mark_book(self, book: Book, exchange: str, ticker: Ticker, due: list[tuple[str, str, str]]) -> None:
        protects = self.engine.protects
        moved = False
        rated = _rated(ticker)
        for position in book.positions.values():
            if position.status != "open" or position.exchange != exchange:
                continue
            if rated is not None and currencies(position.symbol)[1] == rated[0]:
                position.cross_rate = rated[1]
            if position.symbol != ticker.symbol:
                continue
            moved = True
            if position.current_price != ticker.last:
                position.current_price = ticker.last
                self._marked.setdefault(book.account_id, {})[position.id] = position
            if not protects:
                continue
            exit_price = ticker.bid if position.side == "long" else ticker.ask
            reason = _crossed(position, exit_price)
            if reason and position.id not in self._closing:
                self._closing.add(position.id)
                due.append((book.account_id, position.id, reason))
        if rated is not None:
            for order in book.orders.values():
                if order.status == "open" and order.exchange == exchange and currencies(order.symbol)[1] == rated[0]:
                    order.cross_rate = rated[1]
        if moved and protects and book.account_id not in self._alerting and _alerts_differ(book):
            self._alerting.add(book.account_id)
            self.engine.spawn(self._refresh_alerts(book.account_id), f"alerts-{book.account_id}")

    async def _protect(self, account_id: str, position_id: str, reason: str) -> None:
        from rt.engine.trading import _close

        engine = self.engine

        async def command(changes: Changes) -> None:
            # Decided on this process's copy: under the lock, with the book as stored, the stop loss or take profit
            # may have moved (another instance) and this process may no longer do the tick work (a paused holder).
            position = changes.book.positions.get(position_id)
            if not engine.protects or position is None or position.status != "open":
                return
            venue = engine.venues.get(account_id, position.exchange)
            ticker = await venue.ticker(position.symbol)
            crossed = _crossed(position, ticker.bid if position.side == "long" else ticker.ask)
            if crossed is not None:
                await _close(engine, changes, position, crossed)

        try:
            await engine.run(account_id, command)
        except RtError as exc:
            log.warning("protective close failed", extra={"position_id": position_id, "code": exc.code})
        except Exception:
            log.exception("protective close failed", extra={"position_id": position_id})
        finally:
            self.done_closing(position_id)

    def done_closing(self, position_id: str) -> None:
        self._closing.discard(position_id)

    async def _refresh_alerts(self, account_id: str) -> None:
        async def command(changes: Changes) -> None:
            if _alerts_differ(changes.book):
                limit_alerts(changes)

        try:
            await self.engine.run(account_id, command)
        except Exception:
            log.exception("alert refresh failed", extra={"account_id": account_id})
        finally:
            self._alerting.discard(account_id)

    # fills

    async def on_fill(self, fill: Fill) -> None:
        """A resting order filled at its venue."""
        from rt.engine.trading import book_resting_fill

        owner = self.engine.owner_of(fill)
        if owner is None:
            return
        account_id, order_id = owner

        async def command(changes: Changes) -> None:
            order = changes.book.orders.get(order_id)
            if order is None or order.status != "open":
                return
            book_resting_fill(self.engine, changes, order, fill)

        await self.engine.run(account_id, command)

    # marks

    def mark_loaded(self, book: Book) -> None:
        """Mark the open positions of a book just read from the store to the last tick this process heard from the
        venue the account trades each on (the store has the price of the last stored mark, up to a flush interval
        old)."""
        account_id = book.account_id
        for position in book.positions.values():
            if position.status != "open":
                continue
            ticker = self._tick_of(account_id, position.exchange, position.symbol)
            if ticker is not None:
                position.current_price = ticker.last
            position.cross_rate = self.cross_rate(account_id, position.exchange, position.symbol)
        for order in book.orders.values():
            if order.status == "open":
                order.cross_rate = self.cross_rate(account_id, order.exchange, order.symbol)

    def last_tick(self, venue: Exchange, symbol: str) -> Ticker | None:
        """The last tick of `symbol` heard from this venue; None before its first."""
        return self._last.get((venue, symbol))

    def _tick_of(self, account_id: str, exchange: str, symbol: str) -> Ticker | None:
        """The last tick heard of `symbol` from the venue this account trades `exchange` on."""
        venue = self.engine.venues.resolve(account_id, exchange)
        return None if venue is None else self._last.get((venue, symbol))

    def cross_rate(self, account_id: str, exchange: str, symbol: str) -> Decimal | None:
        """The rate of `symbol`'s quote currency in account currency from the last tick of another pair on the venue
        this account trades `exchange` on (GBP/USD for EUR/GBP, USD/JPY for EUR/JPY); None when the quote is account
        currency or no pair gives it."""
        quote = currencies(symbol)[1]
        if quote in ACCOUNT_CURRENCIES:
            return None
        venue = self.engine.venues.resolve(account_id, exchange)
        if venue is None:
            return None
        for unit in ACCOUNT_CURRENCIES:
            for pair in (f"{quote}/{unit}", f"{unit}/{quote}"):
                ticker = self._last.get((venue, pair))
                if ticker is not None and (rate := rate_from(quote, pair, ticker.last)) is not None:
                    return rate
        return None

    def take_marks(self, book: Book) -> list[Position]:
        """The positions of this book marked since they were last stored (a commit of the account stores them)."""
        return [p for p in self._marked.pop(book.account_id, {}).values() if book.positions.get(p.id) is p]

    def forget_marks(self, account_id: str) -> None:
        """Drop the marks of a copy being replaced: stored later, a position closed elsewhere would reopen."""
        self._marked.pop(account_id, None)

    async def flush_marks(self) -> None:
        """Store the prices open positions were marked to, in one write that touches nothing else. Only the process
        doing the tick work stores them."""
        if not self._marked:
            return
        taken, self._marked = self._marked, {}
        if not self.engine.protects:
            return
        marks = [(p.id, p.current_price) for marked in taken.values() for p in marked.values() if p.status == "open"]
        if not marks:
            return
        try:
            await self.engine.store.save_marks(marks)
        except Exception:
            log.exception("storing marks failed; kept for the next write")
            for a, marked in taken.items():
                self._marked[a] = {**marked, **self._marked.get(a, {})}


def limit_alerts(changes: Changes) -> None:
    """risk.limit_reached at 80% (warning) and 100% (breached) of a limit, once per crossing."""
    book = changes.book
    for check, (used, limit, current) in risk.utilization(book).items():
        level = _level(used)
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


def _level(used: Decimal) -> str:
    return "breached" if used >= 1 else "warning" if used >= risk.WARNING_AT else ""


def _alerts_differ(book: Book) -> bool:
    return any(_level(used) != book.alerts.get(check, "") for check, (used, _, _) in risk.utilization(book).items())


def _rated(ticker: Ticker) -> tuple[str, Decimal] | None:
    """The currency whose rate in account currency this tick gives, and the rate (a pair of account currencies gives
    none)."""
    base, quote = currencies(ticker.symbol)
    if quote in ACCOUNT_CURRENCIES and base not in ACCOUNT_CURRENCIES:
        currency = base
    elif base in ACCOUNT_CURRENCIES and quote not in ACCOUNT_CURRENCIES:
        currency = quote
    else:
        return None
    rate = rate_from(currency, ticker.symbol, ticker.last)
    return None if rate is None else (currency, rate)


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
