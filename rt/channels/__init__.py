"""What can be subscribed: each channel's snapshot. Scopes live in rt.session.protocol; fan-out in hub.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rt.engine import ledger, risk
from rt.engine.engine import Engine
from rt.errors import BadRequest
from rt.session.protocol import TICKS

if TYPE_CHECKING:
    from rt.strategies.runner import Runner


async def _positions(engine: Engine, account_id: str) -> list[dict[str, Any]]:
    book = await engine.book(account_id)
    return [p.as_json() for p in book.positions.values() if p.status in ("open", "pending")]


async def _orders(engine: Engine, account_id: str) -> list[dict[str, Any]]:
    book = await engine.book(account_id)
    return [o.as_json() for o in book.orders.values() if o.status == "open"]


async def _risk(engine: Engine, account_id: str) -> dict[str, Any]:
    return risk.report(await engine.book(account_id), engine.config.leverage)


async def _account(engine: Engine, account_id: str) -> dict[str, Any]:
    return ledger.summary(await engine.book(account_id), engine.config.leverage)


async def snapshot(engine: Engine, account_id: str, channel: str, runner: Runner | None = None) -> Any:
    """The channel's current state for this account; call it under the account's writer lock for a consistent seq."""
    if channel == "positions":
        return {"positions": await _positions(engine, account_id)}
    if channel == "orders":
        return {"orders": await _orders(engine, account_id)}
    if channel == "strategies":
        if runner is None:
            return {"strategies": []}
        # The account's running strategies as GET /v1/strategies/{id} shows them, live performance included.
        running = [r for r in runner.active() if r.account_id == account_id]
        return {"strategies": [r.as_json(await runner.performance(r)) for r in running]}
    if channel == "risk":
        return await _risk(engine, account_id)
    if channel == "account":
        return await _account(engine, account_id)
    if channel == "events":
        return {
            "account": await _account(engine, account_id),
            "positions": await _positions(engine, account_id),
            "orders": await _orders(engine, account_id),
        }
    if channel.startswith(TICKS):
        symbol = channel[len(TICKS) :]
        try:
            ticker = await engine.venues.paper.ticker(symbol)
        except BadRequest:
            raise BadRequest(f"no market data for {symbol!r}") from None
        return tick_json(ticker)
    raise BadRequest(f"unknown channel {channel!r}")


def tick_json(ticker: Any) -> dict[str, Any]:
    return {
        "symbol": ticker.symbol,
        "bid": ticker.bid,
        "ask": ticker.ask,
        "last": ticker.last,
        "timestamp": ticker.ts_ms,
    }
