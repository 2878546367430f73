"""The runner: deploys, starts and stops strategies, feeds them ticks, fills and a clock, and places what they want
through the engine, so every strategy order passes Cerberus and the strategy's own limits.

Strategies run on one instance only, the holder of the `strategies` role. Any instance takes deploy, start and stop:
the record is stored and its `strategy.started` / `strategy.stopped` event tells the leading runner, which loads or
drops the strategy. Every instance keeps the active strategies (the store, then those events) for Cerberus's strategy
checks and the strategies channel, so both answer alike everywhere."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson
from pydantic import BaseModel, ValidationError

from rt.bus import BusLagged
from rt.coord.roles import Roles
from rt.engine import trading
from rt.engine.engine import Engine
from rt.engine.ledger import today
from rt.engine.requests import OrderRequest
from rt.engine.risk import Check
from rt.errors import BadRequest, NotFound, RtError
from rt.exchanges import Exchange, Market, Ticker
from rt.records.events import Delivery, Event
from rt.records.ids import new_id
from rt.records.strategies import StrategyRecord
from rt.store import Strategies, TradingReads
from rt.strategies import Lot, RiskLimits, Strategy, Want, types
from rt.wire import dumps

log = logging.getLogger("rt.strategies")

CLOCK_S = 1.0
STRATEGIES = "strategies"
# In a stored record: started on an instance that does not run strategies; the leader runs its on_start.
PENDING = "pending_start"


class RunnerStore(Strategies, TradingReads, Protocol):
    """What the runner keeps and reads: the strategies, and the orders they placed."""


class Runner:
    def __init__(self, engine: Engine, store: RunnerStore) -> None:
        self.engine = engine
        self.store = store
        # Every active strategy as this instance knows it; on the leader, the very records it runs.
        self._active: dict[str, StrategyRecord] = {}
        # The strategies this instance runs: only while it leads.
        self._live: dict[str, tuple[StrategyRecord, Strategy]] = {}
        self._leading = False
        self._reviving = False  # leading, and still feeding them what they missed: no tick or clock yet
        self._ready = asyncio.Event()
        self._roles: Roles | None = None
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._own: set[str] = set()  # ids of the strategy events this runner published: it acted on them already
        self._tasks: set[asyncio.Task[Any]] = set()
        engine.strategies = self

    # lifecycle

    async def start(self, roles: Roles | None = None) -> None:
        """Know the active strategies, and take part in the `strategies` role (without roles this instance is the
        only one, and leads from reconcile() on)."""
        self._active = {record.id: record for record in await self.store.load_strategies()}
        self._roles = roles
        if roles is not None:
            roles.role(STRATEGIES, self._gained, self.follow)

    async def reconcile(self) -> None:
        """The engine has its books now: this instance may lead from here on."""
        self._ready.set()
        if self._roles is None:
            await self.lead()

    async def _gained(self, token: int) -> None:
        await self.lead()

    async def lead(self) -> None:
        """Run every active strategy from the store: orders of theirs the store has open but they do not know (placed
        by a leader that died before it saved) are canceled, fills missed meanwhile are fed to them, and those started
        elsewhere run their on_start."""
        await self._ready.wait()
        self._leading = self._reviving = True
        try:
            records = await self.store.load_strategies()
            self._active = {record.id: record for record in records}
            self._live = {}
            starting = []
            for record in records:
                instance = await self._revive(record)
                if record.state.get(PENDING):
                    starting.append((record, instance))  # nothing to reconcile: a start clears orders and lots
                else:
                    self._live[record.id] = (record, instance)
            for account_id in {record.account_id for record in records}:
                await self.engine.refresh(account_id)  # the last leader's writes, before its lots are looked at
            await self._cancel_strays(records)
            await self._reconcile(list(self._live.values()))
            for record, instance in starting:
                await self._begin(record, instance)
        finally:
            self._reviving = False

    async def follow(self) -> None:
        """Stop running strategies here, leaving them active in the store for the next leader."""
        self._leading = False
        self._live = {}
        await self.close()

    async def _revive(self, record: StrategyRecord) -> Strategy:
        market = await self._market(record.account_id, record.exchange, record.symbol)
        try:
            return self._instance(record, market)
        except RtError:
            # The market's steps no longer hold its config: it keeps what it was started with.
            log.warning("strategy config off the market's steps", extra={"strategy_id": record.id})
            return self._instance(record, None)

    async def _cancel_strays(self, records: list[StrategyRecord]) -> None:
        by_account: dict[str, list[StrategyRecord]] = {}
        for record in records:
            by_account.setdefault(record.account_id, []).append(record)
        for account_id, theirs in by_account.items():
            known = {order_id for record in theirs for order_id in record.state.get("orders", {})}
            ids = {record.id for record in theirs}
            orders, _ = await self.store.list_orders(account_id, ["open"], None, None, 10_000, 0)
            for order in orders:
                if order.strategy_id in ids and order.id not in known:
                    log.warning("stray strategy order canceled", extra={"strategy_id": order.strategy_id})
                    with contextlib.suppress(RtError):
                        await trading.cancel_order(self.engine, account_id, order.id)

    async def _reconcile(self, running: list[tuple[StrategyRecord, Strategy]]) -> None:
        """Orders of a strategy that filled or went away while the process was down: feed the fills to it now;
        then let go of the orders whose lot closed meanwhile."""
        for record, instance in running:
            tracked: dict[str, str] = record.state.get("orders", {})
            missed = []
            for order_id, tag in list(tracked.items()):
                stored = await self.store.get_order(record.account_id, order_id)
                if stored is not None and stored.status == "open":
                    continue
                del tracked[order_id]
                lot = _lots(record).pop(order_id, None)
                if stored is not None and stored.status == "filled" and stored.average_price is not None:
                    missed.append(
                        (tag, lot, stored.side, stored.average_price, stored.filled_quantity, stored.position_id)
                    )
            for tag, lot, side, price, quantity, position_id in missed:
                self._retie(record, lot, position_id)
                await self._place(record, instance.on_fill(tag, side, price, quantity, position_id or ""))
            book = self.engine.cached_book(record.account_id)
            held = {p.id for p in book.open_positions()} if book else set()
            gone = {lot for lot in _lots(record).values() if lot not in held}
            for lot in gone:
                await self._lot_closed(record, instance, lot)
            if missed or gone:
                await self.store.save_strategy(record)

    def _instance(self, record: StrategyRecord, market: Market | None) -> Strategy:
        kind = types()[record.type]
        return kind(kind.config_model.model_validate(record.config), record.state, market)

    async def _market(self, account_id: str, exchange: str, symbol: str) -> Market | None:
        """The symbol's steps, when the venue can tell now (a venue still connecting cannot)."""
        try:
            return await self.engine.venues.get(account_id, exchange).market(symbol)
        except Exception:
            log.warning("no market steps for a strategy", extra={"exchange": exchange, "symbol": symbol})
            return None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # commands

    async def deploy(
        self,
        account_id: str,
        name: str,
        kind: str,
        exchange: str,
        symbol: str,
        config: dict[str, Any],
        risk_limits: dict[str, Any],
        *,
        test_key: bool = False,
    ) -> StrategyRecord:
        known = types()
        if kind not in known:
            raise BadRequest(
                f"unknown strategy type {kind!r}", errors=[{"field": "type", "message": f"one of {', '.join(known)}"}]
            )
        parsed = _validate(known[kind].config_model, config, "config")
        limits = _validate(RiskLimits, risk_limits, "risk_limits")
        venue = self.engine.venues.get(account_id, exchange, test_key=test_key)
        ticker = await venue.ticker(symbol)
        market = await venue.market(ticker.symbol)
        known[kind](parsed, {}, market)  # a config the market's steps cannot hold is refused here (400)
        record = StrategyRecord(
            id=new_id("strat"),
            account_id=account_id,
            name=name,
            type=kind,
            exchange=exchange,
            symbol=ticker.symbol,
            config=_plain(parsed.model_dump()),
            risk_limits=_plain(limits.model_dump(exclude_none=True)),
            status="stopped",
            state={"orders": {}, "lots": {}, "day": today(), "day_pnl": "0"},
        )
        await self.store.save_strategy(record)
        return await self.start_strategy(account_id, record.id, test_key=test_key)

    async def get(self, account_id: str, strategy_id: str) -> StrategyRecord:
        live = self._live.get(strategy_id)
        if live is not None and live[0].account_id == account_id:
            return live[0]
        record = await self.store.get_strategy(account_id, strategy_id)
        if record is None:
            raise NotFound(f"no strategy {strategy_id}")
        return record

    async def start_strategy(self, account_id: str, strategy_id: str, *, test_key: bool = False) -> StrategyRecord:
        async with self._locks[strategy_id]:
            record = await self.get(account_id, strategy_id)
            venue = self.engine.venues.get(account_id, record.exchange, test_key=test_key)
            market = await self._market(account_id, record.exchange, record.symbol)
            ticker = await venue.ticker(record.symbol)
            if record.status == "active" or record.id in self._live:
                return record
            book = self.engine.cached_book(account_id)
            if book is not None and book.state == "locked":
                raise RtError("trading is locked by the kill switch", status=423, code="TRADING_LOCKED")
            record.status, record.stop_reason = "active", None
            self._active[record.id] = record
            if not self._leading:
                # The leader hears of it and runs on_start.
                record.state[PENDING] = True
                await self._changed(record, "strategy.started")
                return record
            # Live and started before the next await: a tick arriving meanwhile sees the levels on_start has taken.
            instance = self._instance(record, market)
            self._live[record.id] = (record, instance)
            wants = self._on_start(record, instance, ticker)
            await self._changed(record, "strategy.started")
            await self._place(record, wants)
            return record

    def _on_start(self, record: StrategyRecord, instance: Strategy, ticker: Ticker) -> list[Want]:
        book = self.engine.cached_book(record.account_id)
        held = [p for p in book.open_positions() if p.strategy_id == record.id] if book is not None else []
        return instance.on_start(ticker, [Lot(p.id, p.side, p.entry_price, p.quantity) for p in held])

    async def _begin(self, record: StrategyRecord, instance: Strategy) -> None:
        """On the leader: run a strategy it has heard of, with the on_start of one started on another instance. What
        on_start needs is fetched first: live and started before the next await, no tick arriving meanwhile can arm
        what on_start arms as well."""
        pending = bool(record.state.get(PENDING))
        if pending:
            try:
                ticker = await self.engine.venues.get(record.account_id, record.exchange).ticker(record.symbol)
            except RtError:
                log.warning("a strategy started elsewhere waits for its venue", extra={"strategy_id": record.id})
                return
            await self.engine.refresh(record.account_id)
        if not self._leading or record.id in self._live:
            return  # the role lost, or started here, meanwhile
        self._live[record.id] = (record, instance)
        if pending:
            record.state.pop(PENDING, None)
            await self._place(record, self._on_start(record, instance, ticker))

    async def stop_strategy(
        self, account_id: str, strategy_id: str, reason: str = "manual", *, cancel: bool = True
    ) -> StrategyRecord:
        """Stop it and (unless the caller cancels every order itself, as Charon does) cancel its open orders."""
        async with self._locks[strategy_id]:
            record = await self.get(account_id, strategy_id)
            if record.status != "active":
                return record
            self._live.pop(record.id, None)
            self._active.pop(record.id, None)
            record.status, record.stop_reason = ("halted" if reason == "kill_switch" else "stopped"), reason
            for order_id in list(record.state.get("orders", {})) if cancel else ():
                with contextlib.suppress(RtError):
                    await trading.cancel_order(self.engine, account_id, order_id)
            record.state["orders"], record.state["lots"] = {}, {}
            record.state.pop(PENDING, None)
            await self._changed(record, "strategy.stopped")
            return record

    async def halt(self, account_id: str) -> int:
        """Charon: stop every active strategy of the account, wherever it runs (the store has them all); the kill
        switch itself deals with their orders."""
        ids = {r.id for r in await self.store.load_strategies() if r.account_id == account_id}
        ids |= {r.id for r, _ in list(self._live.values()) if r.account_id == account_id}
        halted = 0
        for strategy_id in ids:
            try:
                record = await self.stop_strategy(account_id, strategy_id, "kill_switch", cancel=False)
            except Exception:
                log.exception("halting a strategy failed", extra={"strategy_id": strategy_id})
                continue
            halted += record.stop_reason == "kill_switch"
        return halted

    async def _changed(self, record: StrategyRecord, event: str) -> None:
        from rt.records.trading import TradeBatch

        record.updated_at = _utcnow()
        await self.store.save_strategy(record)
        change = Event(record.account_id, event, record.as_json(await self.performance(record)))
        self._own.add(change.id)
        await self.engine.store.save(TradeBatch(events=[change]))
        await self.engine.bus.publish([change])

    def active(self) -> list[StrategyRecord]:
        return [record for record in self._active.values() if record.status == "active"]

    # Cerberus's strategy check

    def checks(self, account_id: str, strategy_id: str, notional: Decimal, increases: bool) -> list[Check]:
        record = self._active.get(strategy_id)
        if record is None or record.account_id != account_id or record.status != "active":
            return [Check("strategy_limit", False, reason=f"strategy {strategy_id} is not active on this account")]
        limits = record.risk_limits
        out = []
        cap = limits.get("max_position_size")
        if cap is not None and increases:
            ok = notional <= Decimal(str(cap))
            out.append(
                Check(
                    "strategy_limit",
                    ok,
                    Decimal(str(cap)),
                    notional,
                    "" if ok else "exceeds the strategy's max position size",
                )
            )
        loss_cap = limits.get("max_daily_loss")
        if loss_cap is not None and increases:
            loss = -Decimal(record.state.get("day_pnl", "0")) if record.state.get("day") == today() else Decimal(0)
            ok = loss < Decimal(str(loss_cap))
            out.append(
                Check(
                    "strategy_daily_loss",
                    ok,
                    Decimal(str(loss_cap)),
                    loss,
                    "" if ok else "the strategy's daily loss limit is reached",
                )
            )
        return out

    def stop_loss_for(self, strategy_id: str, side: str, price: Decimal) -> Decimal | None:
        live = self._live.get(strategy_id)
        pct = live[0].risk_limits.get("stop_loss_pct") if live else None
        if pct is None:
            return None
        pct = Decimal(str(pct))
        return price * (1 - pct) if side == "buy" else price * (1 + pct)

    # feeding

    def listen(self, venues: Iterable[Exchange]) -> None:
        for venue in venues:
            venue.on_tick(functools.partial(self.on_tick, venue))

    def on_tick(self, venue: Exchange, ticker: Ticker) -> None:
        """A strategy hears the ticks of the venue its account trades its exchange on: one id can name a simulated
        venue for one account and a real one for another, and a strategy must never trade on the other's prices."""
        if self._reviving:
            return
        for record, instance in list(self._live.values()):
            if record.exchange != venue.id or record.symbol != ticker.symbol:
                continue
            if self.engine.venues.resolve(record.account_id, record.exchange) is not venue:
                continue
            try:
                wants = instance.on_tick(ticker)
            except Exception:
                log.exception("strategy tick failed", extra={"strategy_id": record.id})
                continue
            if wants:
                self._spawn(self._place(record, wants))

    async def run_clock(self) -> None:
        while True:
            await asyncio.sleep(CLOCK_S)
            await self.clock(time.time())

    async def clock(self, now: float) -> None:
        """One round of the clock: each live strategy places what it wants now; one that has done all it was
        deployed for (a DCA after its last buy) stops with stop_reason `completed`."""
        if self._reviving:
            return
        for record, instance in list(self._live.values()):
            try:
                venue = self.engine.venues.get(record.account_id, record.exchange)
                wants = instance.on_clock(now, await venue.ticker(record.symbol))
                if wants:
                    await self._place(record, wants)
                if instance.finished:
                    await self.stop_strategy(record.account_id, record.id, "completed")
            except RtError:
                continue
            except Exception:
                log.exception("strategy clock failed", extra={"strategy_id": record.id})

    async def run_fills(self) -> None:
        """Fills and closed positions of strategy orders, from the bus."""
        while True:
            try:
                async for delivery in self.engine.bus.subscribe():
                    try:
                        await self._on_delivery(delivery)
                    except Exception:
                        log.exception("strategy fill handling failed", extra={"event": delivery.event.event})
                return
            except BusLagged:
                log.error("fell behind the bus: fills of strategy orders may have been missed; subscribing again")

    async def _on_delivery(self, delivery: Delivery) -> None:
        event = delivery.event
        if delivery.channel == "events":
            return
        if delivery.channel == "strategies":
            await self._heard(event)
            return
        strategy_id = event.data.get("strategy_id")
        if not strategy_id:
            return
        live = self._live.get(strategy_id)
        if live is None:
            # Run elsewhere: this instance keeps its day's P&L for Cerberus's check all the same.
            known = self._active.get(strategy_id)
            if known is not None and event.event == "position.closed":
                _count_pnl(known, event)
            return
        record, instance = live
        if event.event == "order.filled":
            tag = record.state.get("orders", {}).pop(event.data["id"], None)
            if tag is None:
                return
            position_id = event.data.get("position_id")
            self._retie(record, _lots(record).pop(event.data["id"], None), position_id)
            wants = instance.on_fill(
                tag,
                event.data["side"],
                Decimal(str(event.data["average_price"])),
                Decimal(str(event.data["filled_quantity"])),
                position_id or "",
            )
            await self._place(record, wants)
            await self.store.save_strategy(record)
        elif event.event in ("position.closed", "position.updated"):
            _count_pnl(record, event)
            if event.event == "position.closed":
                if (event.data.get("close_reason") or event.data.get("reason")) != "order":
                    await self._lot_closed(record, instance, event.data["id"])
                await self.store.save_strategy(record)

    async def _heard(self, event: Event) -> None:
        """A strategy started or stopped, on this instance or another: keep the active ones, and on the leader run
        or drop it."""
        strategy_id = event.data.get("id")
        if event.id in self._own:
            self._own.discard(event.id)
            return
        if not isinstance(strategy_id, str) or event.event not in ("strategy.started", "strategy.stopped"):
            return
        async with self._locks[strategy_id]:
            if event.event == "strategy.started":
                if strategy_id in self._live:
                    return
                record = await self.store.get_strategy(event.account_id, strategy_id)
                if record is None or record.status != "active":
                    return  # stopped again meanwhile
                self._active[record.id] = record
                if self._leading:
                    await self._begin(record, await self._revive(record))
                return
            self._active.pop(strategy_id, None)
            live = self._live.pop(strategy_id, None)
            if live is None:
                return
            # Stopped on another instance while it ran here: its orders go, and what this runner saves says stopped.
            record = live[0]
            record.status = event.data.get("status", "stopped")
            record.stop_reason = event.data.get("stop_reason")
            for order_id in list(record.state.get("orders", {})):
                with contextlib.suppress(RtError):
                    await trading.cancel_order(self.engine, record.account_id, order_id)
            record.state["orders"], record.state["lots"] = {}, {}
            record.updated_at = _utcnow()
            await self.store.save_strategy(record)

    @staticmethod
    def _retie(record: StrategyRecord, lot: str | None, closed: str | None) -> None:
        """A sell meant for one lot nets FIFO and may close an older one of the same size: the order that was meant
        for the closed lot is now meant for the lot still open."""
        if lot is None or closed is None or closed == lot:
            return
        lots = _lots(record)
        for order_id, other in list(lots.items()):
            if other == closed:
                lots[order_id] = lot

    async def _lot_closed(self, record: StrategyRecord, instance: Strategy, position_id: str) -> None:
        """A lot closed other than by the strategy's own order (stop loss, take profit, a manual close, the kill
        switch): its orders are canceled and the strategy forgets the lot."""
        lots = _lots(record)
        for order_id in [o for o, lot in lots.items() if lot == position_id]:
            del lots[order_id]
            tag = record.state.get("orders", {}).pop(order_id, None)
            with contextlib.suppress(RtError):
                await trading.cancel_order(self.engine, record.account_id, order_id)
            if tag is not None:
                instance.on_lot_closed(tag)

    async def performance(self, record: StrategyRecord) -> dict[str, Any]:
        """From the strategy's own positions: realized (closed and partly closed, net of fees), unrealized of the
        open ones at the live mark, their total, the share of closed positions that made money, and filled orders."""
        perf = await self.store.strategy_performance(record.id)
        book = self.engine.cached_book(record.account_id)
        if book is not None:
            held = [p for p in book.open_positions() if p.strategy_id == record.id]
            perf["unrealized_pnl"] = sum((p.unrealized_pnl for p in held), Decimal(0))
            perf["total_pnl"] = perf["realized_pnl"] + perf["unrealized_pnl"]
        return perf

    async def _place(self, record: StrategyRecord, wants: list[Want]) -> None:
        venue = self.engine.venues.get(record.account_id, record.exchange)
        live = self._live.get(record.id)

        def refused(want: Want) -> None:
            if live is not None:
                live[1].on_refused(want, int(time.time() * 1000))

        # Cerberus refused a buy this large: a larger one in the same batch would be refused too (every check grows
        # with the notional or ignores it), so it is marked refused without storing another rejected order.
        refused_at: Decimal | None = None
        for want in wants:
            price = want.price
            if price is None:
                ticker = await venue.ticker(record.symbol)
                price = ticker.ask if want.side == "buy" else ticker.bid
            if want.side == "buy" and refused_at is not None and price * want.quantity >= refused_at:
                refused(want)
                continue
            stop_loss = self.stop_loss_for(record.id, want.side, price)
            if stop_loss is not None and live is not None:
                stop_loss = live[1].price(stop_loss)
            request = OrderRequest.model_validate(
                {
                    "exchange": record.exchange,
                    "symbol": record.symbol,
                    "side": want.side,
                    "type": want.type,
                    "quantity": want.quantity,
                    "price": want.price,
                    "strategy_id": record.id,
                    "stop_loss": stop_loss,
                }
            )
            try:
                order = await trading.place_order(self.engine, record.account_id, request)
            except RtError as exc:
                log.info("strategy order refused", extra={"strategy_id": record.id, "code": exc.code})
                if want.side == "buy" and exc.status in (422, 423):
                    notional = price * want.quantity
                    refused_at = notional if refused_at is None else min(refused_at, notional)
                refused(want)
                continue
            if order.status == "open" and record.id not in self._live:
                # Stopped while this order was on its way: it is nobody's now.
                with contextlib.suppress(RtError):
                    await trading.cancel_order(self.engine, record.account_id, order.id)
            elif order.status == "open":
                record.state.setdefault("orders", {})[order.id] = want.tag
                if want.lot is not None:
                    _lots(record)[order.id] = want.lot
            elif order.status == "filled":
                instance = self._live.get(record.id)
                if instance is not None:
                    self._retie(record, want.lot, order.position_id)
                    follow = instance[1].on_fill(
                        want.tag,
                        want.side,
                        order.average_price or Decimal(0),
                        order.filled_quantity,
                        order.position_id or "",
                    )
                    if follow:
                        await self._place(record, follow)
            else:
                refused(want)
        await self.store.save_strategy(record)


def _count_pnl(record: StrategyRecord, event: Event) -> None:
    """The strategy's realized P&L today, for its max_daily_loss."""
    if record.state.get("day") != today():
        record.state["day"], record.state["day_pnl"] = today(), "0"
    if event.event == "position.closed":
        realized = Decimal(str(event.data.get("realized_pnl", 0)))
        record.state["day_pnl"] = str(Decimal(record.state["day_pnl"]) + realized)


def _lots(record: StrategyRecord) -> dict[str, str]:
    """order id -> the position (lot) that order is for."""
    lots: dict[str, str] = record.state.setdefault("lots", {})
    return lots


def _validate(model: type[BaseModel], data: dict[str, Any], field: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(
            f"invalid {field}",
            errors=[
                {"field": ".".join([field, *(str(p) for p in e["loc"])]), "message": e["msg"]}
                for e in exc.errors(include_url=False)
            ],
        ) from None


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """Decimals as JSON numbers, the way the client sent them."""
    plain: dict[str, Any] = orjson.loads(dumps(data))
    return plain


def _utcnow() -> datetime:
    return datetime.now(UTC)
