"""What the market does to the books: each tick marks open positions, closes those whose stop loss or take profit it
crossed, and raises limit alerts between orders; a resting order's fill is booked; the marks are stored on their own.

A tick costs what it touches, not how many accounts there are: open positions are indexed by the venue and market they
follow (and by quote currency, for cross rates), a tick moves one shared mark that every position on its market reads
(Position.follow), and stop losses, take profits and the bands in which each account's alerts stand are price levels
a tick finds in O(log n + crossed) (rt.engine._triggers).

When several instances share a store, only the one doing the tick work (`Engine.protects`) closes, alerts and stores
marks; every instance marks its own copies, so its reads show P&L at the last tick.

A tick also gives a currency's rate (BTC/USDT the BTC's, USD/JPY the yen's): open positions and orders quoted in that
currency on another symbol (ETH/BTC, EUR/JPY) take it as their cross rate, so their P&L counts in account currency.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rt.engine import ledger, risk
from rt.engine._triggers import Trigger, alert_band, alerts_differ, level
from rt.errors import RtError
from rt.exchanges import Exchange, Fill, Ticker
from rt.records.trading import ACCOUNT_CURRENCIES, Book, Mark, Order, Position, currencies, marked, rate_from

if TYPE_CHECKING:
    from rt.engine.engine import Changes, Engine

log = logging.getLogger("rt.engine")

TickListener = Callable[[Ticker], None]


Key = tuple[Exchange, str]  # (venue, symbol) or (venue, quote currency)


@dataclass(eq=False)
class _Market:
    """One symbol at one venue: the mark its open positions follow and the levels its ticks may cross."""

    mark: Mark = field(default_factory=Mark)
    positions: dict[str, Position] = field(default_factory=dict)
    # Stop losses and take profits: a long exits at the bid, a short at the ask.
    long_stop: Trigger = field(default_factory=lambda: Trigger(rising=False))
    long_take: Trigger = field(default_factory=lambda: Trigger(rising=True))
    short_stop: Trigger = field(default_factory=lambda: Trigger(rising=True))
    short_take: Trigger = field(default_factory=lambda: Trigger(rising=False))
    # Accounts trading this market alone, by the edges of the band in which their alerts stand (see alert_band).
    band_low: Trigger = field(default_factory=lambda: Trigger(rising=False, strict=True))
    band_high: Trigger = field(default_factory=lambda: Trigger(rising=True, strict=True))
    # Accounts whose alerts also follow other markets' prices: looked at on every tick, as each moves them.
    watched: set[str] = field(default_factory=set)
    day: str = ""
    stored_seq: int = 0  # the mark's seq when its positions' marks were last stored


@dataclass(eq=False)
class _Indexed:
    """Where one account's book is in the index."""

    book: Book
    positions: dict[str, _Market] = field(default_factory=dict)
    quoted: list[tuple[Key, str]] = field(default_factory=list)
    banded: _Market | None = None


class TickWork:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._closing: dict[str, str] = {}  # position -> account, while a protective close is under way
        self._alerting: set[str] = set()
        self._after_mark: dict[str, list[TickListener]] = {}
        # (venue, symbol) -> the last tick heard: a book read from the store is marked to it at once. By venue, not
        # id: a simulated venue and an account's real one may share an exchange id, never their prices.
        self._last: dict[Key, Ticker] = {}
        self._markets: dict[Key, _Market] = {}
        # (venue, currency) -> open positions and orders quoted in it on another symbol, which take its rate
        self._quoted: dict[Key, dict[str, Position | Order]] = {}
        self._accounts: dict[str, _Indexed] = {}

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

    # the index

    def index(self, book: Book) -> None:
        """Put the book's open positions and orders in the index, in place of whatever it held of the account: called
        for every book that becomes this process's copy and after every commit."""
        account_id = book.account_id
        self.drop(account_id)
        indexed = self._accounts[account_id] = _Indexed(book)
        for position in book.positions.values():
            if position.status != "open":
                continue
            venue = self.engine.venues.resolve(account_id, position.exchange)
            if venue is None:
                continue
            market = self._market((venue, position.symbol))
            market.positions[position.id] = position
            indexed.positions[position.id] = market
            position.follow(market.mark)
            if position.id not in self._closing:
                _arm(market, position)
            self._quote(indexed, venue, position)
        for order in book.orders.values():
            if order.status == "open" and (venue := self.engine.venues.resolve(account_id, order.exchange)):
                self._quote(indexed, venue, order)
        markets = {id(m): m for m in indexed.positions.values()}
        if len(markets) == 1 and not indexed.quoted:
            (indexed.banded,) = markets.values()
            self._band(indexed)
        else:
            for market in markets.values():
                market.watched.add(account_id)

    def drop(self, account_id: str) -> None:
        """Take the account out of the index (its copy is being replaced or dropped)."""
        indexed = self._accounts.pop(account_id, None)
        if indexed is None:
            return
        for position_id, market in indexed.positions.items():
            position = market.positions.pop(position_id, None)
            if position is not None:
                position.follow(None)
            _disarm(market, position_id)
            market.watched.discard(account_id)
            market.band_low.disarm(account_id)
            market.band_high.disarm(account_id)
        for key, item_id in indexed.quoted:
            quoted = self._quoted.get(key)
            if quoted is not None:
                quoted.pop(item_id, None)

    def _market(self, key: Key) -> _Market:
        market = self._markets.get(key)
        if market is None:
            market = self._markets[key] = _Market(day=ledger.today())
            if (ticker := self._last.get(key)) is not None:
                market.mark.price = ticker.last
        return market

    def _quote(self, indexed: _Indexed, venue: Exchange, item: Position | Order) -> None:
        """Index an item whose quote currency's rate comes from another pair (ETH/BTC's from BTC/USDT)."""
        base, quote = currencies(item.symbol)
        if quote in ACCOUNT_CURRENCIES or base in ACCOUNT_CURRENCIES:
            return
        key = (venue, quote)
        self._quoted.setdefault(key, {})[item.id] = item
        indexed.quoted.append((key, item.id))

    def _band(self, indexed: _Indexed) -> None:
        """Arm the band of its market's price in which the account's alerts stand. Where they do not stand at the
        market's price itself (its positions were priced at a fill, or the price moved while its alerts were being
        refreshed), or the book holds a bad value, the account is looked at on every tick until they do."""
        market = indexed.banded
        if market is None:
            return
        book = indexed.book
        account_id = book.account_id
        price = market.mark.price or book.positions[next(iter(indexed.positions))].current_price
        try:
            band = alert_band(book, price, indexed.positions)
        except Exception:
            log.exception("alert check failed", extra={"account_id": account_id})
            band = None
        if band is None:
            market.band_low.disarm(account_id)
            market.band_high.disarm(account_id)
            market.watched.add(account_id)
            return
        market.watched.discard(account_id)
        market.band_low.arm(account_id, band[0])
        market.band_high.arm(account_id, band[1])

    # ticks

    def on_tick(self, venue: Exchange, ticker: Ticker) -> None:
        for account_id, position_id, reason in self.mark(venue, ticker):
            self.engine.spawn(self._protect(account_id, position_id, reason), f"close-{position_id}")

    def mark(self, venue: Exchange, ticker: Ticker) -> list[tuple[str, str, str]]:
        """Move open positions on this symbol to the new price; returns (account, position, reason) to close. Only in
        the books that trade the venue's id on this venue: one id can name a simulated venue for one account and a
        real one for another, and neither market's prices may move (or close) the other's positions.

        An account whose limit alerts change with the price gets a commit of its own, so `risk.limit_reached`
        (and the switch to `reducing` on a daily-loss breach) does not wait for its next order. Its latency is one
        tick: the account is looked at on the tick that leaves the band of prices within which its alerts stand
        (alert_band), on every tick while they do not stand at its market's price, on every tick of its markets when
        its positions span several or take a cross rate, and on every tick of the pair that gives that rate.
        """
        key = (venue, ticker.symbol)
        self._last[key] = ticker
        rated = _rated(ticker)
        quoted = self._quoted.get((venue, rated[0]), {}) if rated is not None else {}
        if rated is not None:
            for item in quoted.values():
                item.cross_rate = rated[1]
        market = self._markets.get(key)
        if market is not None:
            market.mark.move(ticker.last)
        if not self.engine.protects:
            return []
        due: list[tuple[str, str, str]] = []
        looked: set[str] = set()
        if market is not None and market.positions:
            due = self._due(market, ticker)
            self._look_at_alerts(market, ticker.last)
            looked = market.watched
        for account_id in {item.account_id for item in quoted.values()} - looked:
            self._look_at(account_id)
        return due

    def _due(self, market: _Market, ticker: Ticker) -> list[tuple[str, str, str]]:
        """The positions whose stop loss or take profit this tick crossed, disarmed until their close ends."""
        due: list[tuple[str, str, str]] = []
        crossed = [
            *market.long_stop.crossed(ticker.bid),
            *market.long_take.crossed(ticker.bid),
            *market.short_stop.crossed(ticker.ask),
            *market.short_take.crossed(ticker.ask),
        ]
        for position_id in crossed:
            position = market.positions.get(position_id)
            if position is None or position.id in self._closing:
                continue
            # One position's failure (a bad value) must never stop the others'.
            try:
                _disarm(market, position_id)
                reason = _crossed(position, ticker.bid if position.side == "long" else ticker.ask)
                if reason is None:  # a level no longer the position's
                    _arm(market, position)
                    continue
            except Exception:
                log.exception("protection check failed", extra={"position_id": position_id})
                continue
            self._closing[position_id] = position.account_id
            due.append((position.account_id, position_id, reason))
        return due

    def _look_at_alerts(self, market: _Market, price: Decimal) -> None:
        today = ledger.today()
        if market.day != today:  # a new day starts the day's loss over
            market.day = today
            banded = {*market.band_low.drain(), *market.band_high.drain()}
        else:
            banded = {*market.band_low.crossed(price), *market.band_high.crossed(price)}
        for account_id in dict.fromkeys((*banded, *market.watched)):
            self._look_at(account_id)

    def _look_at(self, account_id: str) -> None:
        """Refresh the account's alerts if they no longer stand, else band it again (when it trades one market)."""
        indexed = self._accounts.get(account_id)
        if indexed is None:
            return
        # One account's failure (a bad value in its book) must never stop the others'.
        try:
            market = indexed.banded
            if market is not None:
                market.band_low.disarm(account_id)
                market.band_high.disarm(account_id)
            if account_id in self._alerting:
                return  # banded again when its refresh ends
            if alerts_differ(indexed.book):
                self._alerting.add(account_id)
                self.engine.spawn(self._refresh_alerts(account_id), f"alerts-{account_id}")
            elif market is not None:
                self._band(indexed)
        except Exception:
            log.exception("alert check failed", extra={"account_id": account_id})

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
        """A protective close ended: a position it left open is armed again, to be closed by a later crossing."""
        account_id = self._closing.pop(position_id, None)
        indexed = self._accounts.get(account_id) if account_id is not None else None
        market = indexed.positions.get(position_id) if indexed is not None else None
        position = market.positions.get(position_id) if market is not None else None
        if market is not None and position is not None and position.status == "open":
            _arm(market, position)

    async def _refresh_alerts(self, account_id: str) -> None:
        async def command(changes: Changes) -> None:
            if alerts_differ(changes.book):
                limit_alerts(changes)

        try:
            await self.engine.run(account_id, command)
        except Exception:
            log.exception("alert refresh failed", extra={"account_id": account_id})
        finally:
            self._alerting.discard(account_id)
            indexed = self._accounts.get(account_id)
            if indexed is not None:
                self._band(indexed)

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
        """The positions of this book marked since their marks were last stored (a commit of the account stores
        them)."""
        indexed = self._accounts.get(book.account_id)
        if indexed is None or indexed.book is not book:
            return []
        return [
            p
            for p in book.positions.values()
            if p.status == "open"
            and (m := indexed.positions.get(p.id)) is not None
            and m.mark.seq > m.stored_seq
            and p.__dict__["_since"] < m.mark.seq
        ]

    def forget_marks(self, account_id: str) -> None:
        """Drop the account's copy from the index, marks and all: stored later, a position closed elsewhere would
        reopen."""
        self.drop(account_id)

    async def flush_marks(self) -> None:
        """Store the prices open positions were marked to, in one write that touches nothing else: those of every
        market that ticked since the last write. Only the process doing the tick work stores them."""
        moved = [(m, m.mark.seq) for m in self._markets.values() if m.mark.seq > m.stored_seq]
        if not moved:
            return
        if self.engine.protects:
            marks = [mark for m, _ in moved for mark in marked(m.mark, m.positions.values())]
            if marks:
                try:
                    await self.engine.store.save_marks(marks)
                except Exception:
                    log.exception("storing marks failed; kept for the next write")
                    return
        for market, seq in moved:
            market.stored_seq = max(market.stored_seq, seq)


def _arm(market: _Market, position: Position) -> None:
    """Arm the position's stop loss and take profit. A level that is not a finite number (a bad stored value) is left
    out and logged: in the heap it would make every comparison on the market raise."""
    long = position.side == "long"
    levels = (
        ("stop_loss", position.stop_loss, market.long_stop if long else market.short_stop),
        ("take_profit", position.take_profit, market.long_take if long else market.short_take),
    )
    for name, price, trigger in levels:
        if price is None:
            continue
        try:
            if not price.is_finite():
                log.error("%s is not a number: not armed", name, extra={"position_id": position.id})
                continue
            trigger.arm(position.id, price)
        except Exception:
            log.exception("arming %s failed", name, extra={"position_id": position.id})


def _disarm(market: _Market, position_id: str) -> None:
    for trigger in (market.long_stop, market.long_take, market.short_stop, market.short_take):
        trigger.disarm(position_id)


def limit_alerts(changes: Changes) -> None:
    """risk.limit_reached at 80% (warning) and 100% (breached) of a limit, once per crossing."""
    book = changes.book
    for check, (used, limit, current) in risk.utilization(book).items():
        level_now = level(used)
        if level_now == book.alerts.get(check, ""):
            continue
        previous = book.alerts.get(check, "")
        if level_now:
            book.alerts[check] = level_now
        else:
            book.alerts.pop(check, None)
        changes.book_changed = True
        data: dict[str, Any] = {
            "check": check,
            "level": level_now,
            "limit": limit,
            "current": current,
            "utilization": round(float(used), 4),
        }
        if check == risk.DAILY_LOSS and level_now == "breached" and book.state == "active":
            book.state = "reducing"
            data["trading_state"] = "reducing"
        if level_now and (previous != "breached"):
            changes.event("risk.limit_reached", data)


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
