"""Charon: the kill switch. Lock first (so queued commands fail fast), then cancel, close and halt everything."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from rt import metrics
from rt.engine.engine import Changes, Engine
from rt.engine.trading import _close, _mark_canceled, book_resting_fill
from rt.errors import RtError
from rt.exchanges import VenueOrder
from rt.records.ids import new_id
from rt.records.trading import Order, Position, now
from rt.wire import rfc3339

log = logging.getLogger("rt.charon")

Action = Literal["KILL", "CLOSE_ALL", "FLATTEN", "LOCK", "UNLOCK"]

# What each action does: (cancel open orders, close positions, lock the account).
_PLAN: dict[str, tuple[bool, bool, bool]] = {
    "KILL": (True, True, True),
    "CLOSE_ALL": (False, True, False),
    "FLATTEN": (True, True, False),
    "LOCK": (False, False, True),
    "UNLOCK": (False, False, False),
}


async def execute(
    engine: Engine, account_id: str, action: Action, reason: str = "", actor: str | None = None
) -> dict[str, Any]:
    started = time.perf_counter()
    command_id = new_id("cmd")
    cancel, close, lock = _PLAN[action]
    book = await engine.book(account_id)
    if lock:
        book.state = "locked"  # before the writer lock: commands queued behind us see it and stop
    halted = 0
    if action in ("KILL", "FLATTEN", "LOCK") and engine.strategies is not None:
        # Outside the writer lock: the runner takes it to save what it stops; their orders go with everyone's below.
        try:
            halted = await engine.strategies.halt(account_id)
        except Exception:
            log.exception("halting strategies failed", extra={"account_id": account_id})

    async def command(changes: Changes) -> dict[str, Any]:
        # The book as stored now: another instance may have written it since the copy above was read.
        book = changes.book
        if lock:
            book.state = "locked"
        canceled, unanswered = await _cancel_all(engine, changes) if cancel else ([], [])
        closed, failed = await _close_all(engine, changes) if close else ([], [])
        if lock:
            book.state = "locked"
        elif action == "UNLOCK":
            book.state = "active"
        changes.book_changed = True
        report = {
            "command_id": command_id,
            "action": action,
            "account_id": account_id,
            "trading_state": book.state,
            "orders_canceled": len(canceled),
            "orders_failed": len(unanswered),
            "positions_closed": len(closed),
            "positions_failed": len(failed),
            "strategies_halted": halted,
            "reason": reason,
            "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            # Kerosyne's fields. Every cancel and close has its venue's answer before the reply, so nothing is
            # still executing: "completed", or "partial" when a venue refused or failed some (counted above).
            "status": "partial" if unanswered or failed else "completed",
            "positions_closing": len(closed),
            "strategies_halting": halted,
            "estimated_completion": rfc3339(now()),
        }
        changes.event("risk.unlocked" if action == "UNLOCK" else "emergency.kill_triggered", {**report, "actor": actor})
        return report

    report = await engine.run(account_id, command)
    report["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
    report["estimated_completion"] = rfc3339(now())  # stored and published: done
    metrics.KILL_SECONDS.labels(action).observe(time.perf_counter() - started)
    return report


async def _cancel_all(engine: Engine, changes: Changes) -> tuple[list[Order], list[Order]]:
    """(canceled, failed): the orders canceled and those whose cancel the venue failed (still open)."""
    resting = [o for o in changes.book.orders.values() if o.status == "open"]

    async def cancel(order: Order) -> VenueOrder:
        venue = engine.venues.get(order.account_id, order.exchange)
        assert order.venue_order_id is not None
        return await venue.cancel(order.venue_order_id, order.symbol)

    results = await asyncio.gather(*(cancel(o) for o in resting), return_exceptions=True)
    canceled, failed = [], []
    for order, answer in zip(resting, results, strict=True):
        if not isinstance(answer, VenueOrder):
            failed.append(order)
            continue
        if answer.status == "canceled":
            _mark_canceled(engine, changes, order)
            canceled.append(order)
        elif answer.fill is not None:
            # Filled at the venue before the cancel got there: book it now, so the close that follows sees it.
            book_resting_fill(engine, changes, order, answer.fill)
    return canceled, failed


async def close_positions(engine: Engine, account_id: str, reason: str = "manual") -> tuple[int, int]:
    """(closed, failed): every open position of the account closed at market in one engine command, each as
    `trading.close_position` closes one (its reason, its order and position events). A routine close-all, not a kill:
    nothing is locked or canceled and no `emergency.kill_triggered` goes out."""

    async def command(changes: Changes) -> tuple[int, int]:
        closed, failed = await _close_all(engine, changes, reason)
        return len(closed), len(failed)

    return await engine.run(account_id, command)


async def _close_all(
    engine: Engine, changes: Changes, reason: str = "kill_switch"
) -> tuple[list[Position], list[Position]]:
    targets = changes.book.open_positions()

    async def close(position: Position) -> Position:
        await _close(engine, changes, position, reason)
        return position

    results = await asyncio.gather(*(close(p) for p in targets), return_exceptions=True)
    closed = [r for r in results if isinstance(r, Position)]
    failed = [p for p, r in zip(targets, results, strict=True) if isinstance(r, BaseException)]
    for exc in results:
        if isinstance(exc, BaseException) and not isinstance(exc, RtError):
            raise exc
    return closed, failed
