"""Cerberus: the pre-trade checks every order and position passes before a venue sees it.

The checks see what is open and what is already resting, so no set of orders can together pass a limit. Every
amount they weigh is in the account's currency (a USD/JPY notional counts in USD, not in yen); an order whose quote
currency has no known rate is refused, never weighed as if it were in account currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from rt import metrics
from rt.engine import ledger
from rt.errors import Locked, ValidationFailed
from rt.records.trading import ZERO, Book, currencies, has_rate, to_account

WARNING_AT = Decimal("0.8")

POSITION_SIZE = "position_size"
EXPOSURE = "exposure_limit"
DAILY_LOSS = "daily_loss_limit"
CONCURRENT = "concurrent_positions"
MARGIN = "margin"
TRADING_STATE = "trading_state"
CURRENCY_RATE = "currency_rate"
STRATEGY = "strategy_limit"

# The checks that weigh the order's notional: none can pass without its quote currency's rate.
WEIGHED = frozenset({POSITION_SIZE, EXPOSURE, MARGIN})

CHECKS = (TRADING_STATE, CURRENCY_RATE, POSITION_SIZE, EXPOSURE, DAILY_LOSS, CONCURRENT, MARGIN)


@dataclass(frozen=True)
class Proposal:
    """What an order would do, as Cerberus needs to see it."""

    exchange: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal
    reduce_only_position: str | None = None
    # A net order closes opposite positions first; a position's entry order always opens a new one.
    nets: bool = True
    # Who places it: a strategy id, or None for a manual order (netting is per owner).
    strategy_id: str | None = None
    # The quote currency's rate from another pair, when the symbol's own price does not give it (see to_account).
    cross_rate: Decimal | None = None

    def value(self, quantity: Decimal) -> Decimal:
        """The notional of `quantity` at the proposal's price, in account currency."""
        return to_account(quantity * self.price, self.symbol, self.price, self.cross_rate)


@dataclass(frozen=True)
class Check:
    check: str
    passed: bool
    limit: Decimal | int | None = None
    requested: Decimal | int | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "passed": self.passed,
            "limit": self.limit,
            "requested": self.requested,
            "reason": self.reason,
        }


def increase_of(book: Book, proposal: Proposal) -> Decimal:
    """The part of the quantity that adds exposure (the rest closes opposite positions)."""
    if proposal.reduce_only_position is not None:
        return ZERO
    if not proposal.nets:
        return proposal.quantity
    owner = proposal.strategy_id
    mine = ledger.nettable(book, proposal.exchange, proposal.symbol, proposal.side, owner)
    reducible = sum((p.quantity for p in mine), ZERO)
    # Resting orders of the same owner on the same side reduce those positions first, so not reducible twice.
    claimed = sum(
        (
            o.quantity
            for o in book.orders.values()
            if o.status == "open"
            and o.intent != "open"
            and o.exchange == proposal.exchange
            and o.symbol == proposal.symbol
            and o.side == proposal.side
            and o.strategy_id == owner
        ),
        ZERO,
    )
    return max(proposal.quantity - max(reducible - claimed, ZERO), ZERO)


def pending(book: Book) -> tuple[Decimal, int]:
    """Notional (in account currency) and count of resting orders that would open positions."""
    notional, count = ZERO, 0
    for order in book.orders.values():
        if order.status == "open" and order.intent != "close":
            price = order.price or order.stop_price or ZERO
            notional += to_account(price * order.quantity, order.symbol, price, order.cross_rate)
            count += 1
    return notional, count


def evaluate(book: Book, proposal: Proposal, leverage: Decimal) -> list[Check]:
    """Every check, passed or not. Raises Locked when the account is locked (closing a position still works)."""
    if book.state == "locked" and proposal.reduce_only_position is None:
        metrics.ORDERS_REFUSED.labels(TRADING_STATE).inc()
        raise Locked(
            "trading is locked by the kill switch; POST /v1/risk/kill with action UNLOCK to resume", check=TRADING_STATE
        )
    env = book.envelope
    increase = increase_of(book, proposal)
    added = proposal.value(increase)
    checks: list[Check] = []
    if book.state == "reducing":
        checks.append(
            Check(
                TRADING_STATE,
                increase == 0,
                reason="account is reducing: only orders that shrink exposure are accepted" if increase else "",
            )
        )
    else:
        checks.append(Check(TRADING_STATE, True))
    if increase == 0:
        return checks + [Check(name, True, reason="reduces exposure") for name in CHECKS[1:]]

    rated = has_rate(proposal.symbol, proposal.price, proposal.cross_rate)
    unrated = "" if rated else f"no rate from {currencies(proposal.symbol)[1]} to {book.currency}"
    checks.append(Check(CURRENCY_RATE, rated, reason=unrated))

    limit_size = env.max_position_size
    checks.append(
        Check(
            POSITION_SIZE,
            added <= limit_size,
            limit_size,
            added,
            "" if added <= limit_size else "exceeds max position size",
        )
    )

    eq = ledger.equity(book)
    pend_notional, pend_count = pending(book)
    total = ledger.exposure_notional(book) + pend_notional + added
    ratio = total / eq if eq > 0 else Decimal("Infinity")
    ok = ratio <= env.max_exposure
    checks.append(
        Check(
            EXPOSURE,
            ok,
            env.max_exposure,
            rounded(ratio) if eq > 0 else None,
            "" if ok else "exceeds max exposure (open and resting notional / equity)",
        )
    )

    loss = daily_loss(book)
    ok = -loss < env.max_daily_loss
    checks.append(Check(DAILY_LOSS, ok, env.max_daily_loss, loss, "" if ok else "daily loss limit reached"))

    count = len(book.open_positions()) + pend_count + 1
    ok = count <= env.max_concurrent_positions
    checks.append(
        Check(CONCURRENT, ok, env.max_concurrent_positions, count, "" if ok else "too many concurrent positions")
    )

    need = ledger.margin_used(book, leverage) + (pend_notional + added) / leverage
    ok = need <= eq
    checks.append(Check(MARGIN, ok, eq, need, "" if ok else "insufficient free margin"))
    if not rated:  # the notional is unknown: what weighs it fails too, with nothing requested
        return [Check(c.check, False, c.limit, None, unrated) if c.check in WEIGHED else c for c in checks]
    return checks


def enforce(checks: list[Check], **extra: Any) -> None:
    failed = [c for c in checks if not c.passed]
    if failed:
        first = failed[0]
        metrics.ORDERS_REFUSED.labels(first.check).inc()
        raise ValidationFailed(
            f"Cerberus rejected the request: {first.reason} ({first.check})",
            details={"check": first.check, "reason": first.reason, "limit": first.limit, "requested": first.requested},
            checks=[c.as_json() for c in checks],
            **extra,
        )


def daily_loss(book: Book) -> Decimal:
    """The day's loss, signed as P&L is (a loss of 120 is -120); 0 on a day that is up. Its limit is positive."""
    pnl = ledger.daily_pnl(book)
    return pnl if pnl < 0 else ZERO


def exposure(book: Book, resting_notional: Decimal) -> Decimal | None:
    """What max_exposure limits: (open + resting notional, see pending) / equity, four places; None without equity."""
    eq = ledger.equity(book)
    if eq <= 0:
        return None
    return rounded((ledger.exposure_notional(book) + resting_notional) / eq)


def concurrent(book: Book, resting_count: int) -> int:
    """What max_concurrent_positions limits: open positions and resting orders that would open one (see pending)."""
    return len(book.open_positions()) + resting_count


def utilization(book: Book) -> dict[str, tuple[Decimal, Decimal | int, Decimal | int]]:
    """check -> (used fraction, limit, current) for the limits that warn at 80%; current as Cerberus counts it."""
    env = book.envelope
    resting_notional, resting_count = pending(book)
    ratio = exposure(book, resting_notional)
    exposed = ratio if ratio is not None else ZERO
    loss = daily_loss(book)
    count = concurrent(book, resting_count)
    return {
        EXPOSURE: (_used(exposed, env.max_exposure), env.max_exposure, exposed),
        DAILY_LOSS: (_used(-loss, env.max_daily_loss), env.max_daily_loss, loss),
        CONCURRENT: (_used(Decimal(count), env.max_concurrent_positions), env.max_concurrent_positions, count),
    }


def _used(current: Decimal, limit: Decimal | int) -> Decimal:
    """current / limit; a limit stored before limits were bounded (1e-999999) that the quotient overflows is used up."""
    if not limit:
        return ZERO
    try:
        return current / limit
    except ArithmeticError:
        return Decimal(1)


def status(book: Book) -> str:
    if book.state == "locked":
        return "locked"
    levels = [u for u, _, _ in utilization(book).values()]
    if any(u >= 1 for u in levels):
        return "breached"
    if any(u >= WARNING_AT for u in levels):
        return "warning"
    return "ok"


def rounded(value: Decimal) -> Decimal:
    """Four places, unless the value is too large for that (a tiny equity)."""
    try:
        return value.quantize(Decimal("0.0001"))
    except InvalidOperation:
        return value


def report(book: Book, leverage: Decimal) -> dict[str, Any]:
    """The envelope, its use and the status: GET /v1/risk/envelope and the `risk` channel's snapshot."""
    eq = ledger.equity(book)
    pending_notional, pending_count = pending(book)
    return {
        "envelope": book.envelope.as_json(),
        "current": {
            "total_exposure": exposure(book, pending_notional),
            "exposure_notional": ledger.exposure_notional(book),
            "pending_notional": pending_notional,
            "daily_loss": daily_loss(book),
            "daily_pnl": ledger.daily_pnl(book),
            "active_positions": concurrent(book, pending_count),
            "open_positions": len(book.open_positions()),
            "available_capital": eq - ledger.margin_used(book, leverage),
        },
        "status": status(book),
        "trading_state": book.state,
    }
