"""Orders, positions and an account's book, and what one write of them stores. Money is Decimal here; floats only at
the wire."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal

from rt.records.events import Event

PositionSide = Literal["long", "short"]
PositionStatus = Literal["pending", "open", "closed", "rejected", "canceled"]
OrderStatus = Literal["open", "filled", "canceled", "rejected"]
TradingState = Literal["active", "reducing", "locked"]
# What a fill does: open a new position, reduce one position, or net against the symbol's positions (FIFO).
Intent = Literal["open", "close", "net"]

ZERO = Decimal(0)
ONE = Decimal(1)
MONEY_PLACES = Decimal("1E-8")
# The account keeps its money in USDT; amounts in these currencies count as they are (on paper USD = USDT = USDC).
ACCOUNT_CURRENCIES = ("USD", "USDT", "USDC")


def now() -> datetime:
    return datetime.now(UTC)


# ISO 4217 codes of currencies issued by a state (no metals, funds or stablecoins): a pair of two is an FX pair.
FIAT = frozenset(
    {
        "AED",
        "ARS",
        "AUD",
        "BGN",
        "BHD",
        "BRL",
        "CAD",
        "CHF",
        "CLP",
        "CNH",
        "CNY",
        "COP",
        "CZK",
        "DKK",
        "EGP",
        "EUR",
        "GBP",
        "HKD",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "ISK",
        "JPY",
        "KES",
        "KRW",
        "KWD",
        "MAD",
        "MXN",
        "MYR",
        "NGN",
        "NOK",
        "NZD",
        "OMR",
        "PEN",
        "PHP",
        "PKR",
        "PLN",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "SAR",
        "SEK",
        "SGD",
        "THB",
        "TRY",
        "TWD",
        "UAH",
        "USD",
        "VND",
        "ZAR",
    }
)


@lru_cache(maxsize=4096)  # asked of every open position on every tick
def currencies(symbol: str) -> tuple[str, str]:
    """`EUR/USD` -> (`EUR`, `USD`); a derivative's settlement currency (`BTC/USDT:USDT`) is left off."""
    base, _, quote = symbol.upper().partition("/")
    return base, quote.partition(":")[0]


def is_fiat_pair(symbol: str) -> bool:
    """Whether `symbol` is an FX pair, two fiat currencies (USD/MXN; not EUR/USDT, not XAU/USD)."""
    base, quote = currencies(symbol)
    return base in FIAT and quote in FIAT


def rate_from(currency: str, symbol: str, price: Decimal) -> Decimal | None:
    """Account currency per unit of `currency` that `symbol` trading at `price` gives, if it gives one: the base of a
    pair quoted in account currency is worth its price, the quote of a pair whose base is account currency 1 / price."""
    if currency in ACCOUNT_CURRENCIES:
        return ONE
    if price <= 0:
        return None
    base, quote = currencies(symbol)
    if base == currency and quote in ACCOUNT_CURRENCIES:
        return price
    if quote == currency and base in ACCOUNT_CURRENCIES:
        return ONE / price
    return None


def has_rate(symbol: str, price: Decimal, cross_rate: Decimal | None = None) -> bool:
    """Whether `to_account` knows the rate of `symbol`'s quote currency: Cerberus refuses to weigh an amount it would
    only count as it is."""
    base, quote = currencies(symbol)
    return quote in ACCOUNT_CURRENCIES or (base in ACCOUNT_CURRENCIES and price > 0) or cross_rate is not None


def to_account(amount: Decimal, symbol: str, price: Decimal, cross_rate: Decimal | None = None) -> Decimal:
    """`amount` of `symbol`'s quote currency in account currency with the symbol at `price`: as it is for a quote in
    account currency, divided by the price when the base is (USD/JPY), else at `cross_rate`, the quote's rate from
    another pair (EUR/GBP at GBP/USD's price); as it is when nothing gives a rate (see has_rate). Converted amounts
    keep 8 places."""
    base, quote = currencies(symbol)
    if quote in ACCOUNT_CURRENCIES:
        return amount
    if base in ACCOUNT_CURRENCIES and price > 0:
        value = amount / price
    elif cross_rate is not None:
        value = amount * cross_rate
    else:
        return amount
    try:
        return value.quantize(MONEY_PLACES)
    except InvalidOperation:  # too many digits for 8 places: kept as computed
        return value


@dataclass
class Envelope:
    max_position_size: Decimal = Decimal("25000")
    max_exposure: Decimal = Decimal("3")
    max_daily_loss: Decimal = Decimal("5000")
    max_concurrent_positions: int = 20

    def as_json(self) -> dict[str, Any]:
        return {
            "max_position_size": self.max_position_size,
            "max_exposure": self.max_exposure,
            "max_daily_loss": self.max_daily_loss,
            "max_concurrent_positions": self.max_concurrent_positions,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Envelope:
        return cls(
            max_position_size=Decimal(str(data["max_position_size"])),
            max_exposure=Decimal(str(data["max_exposure"])),
            max_daily_loss=Decimal(str(data["max_daily_loss"])),
            max_concurrent_positions=int(data["max_concurrent_positions"]),
        )


class Mark:
    """The last price of one market at one venue, shared by every open position following it: a tick moves them all
    with one write (see Position.follow)."""

    __slots__ = ("price", "seq")

    def __init__(self, price: Decimal = ZERO) -> None:
        self.price = price
        self.seq = 0  # ticks so far

    def move(self, price: Decimal) -> None:
        self.price = price
        self.seq += 1


class _MarkedPrice:
    """Position.current_price: the price the position was given (by a fill, the store or an assignment) until the
    market it follows next ticks, from then on that market's last price while the position is open."""

    def __get__(self, position: Position | None, owner: type | None = None) -> Decimal:
        if position is None:
            return ZERO
        state = vars(position)
        mark: Mark | None = state.get("_mark")
        if mark is not None and mark.seq > state["_since"] and state["status"] == "open":
            return mark.price
        price: Decimal = state["_price"]
        return price

    def __set__(self, position: Position, price: Decimal) -> None:
        state = vars(position)
        mark: Mark | None = state.get("_mark")
        state["_price"] = price
        state["_since"] = mark.seq if mark is not None else 0


@dataclass
class Position:
    id: str
    account_id: str
    exchange: str
    symbol: str
    side: PositionSide
    quantity: Decimal
    entry_price: Decimal
    status: PositionStatus
    current_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    strategy_id: str | None = None
    close_reason: str | None = None
    entry_order_id: str | None = None
    created_at: datetime = field(default_factory=now)
    closed_at: datetime | None = None
    # Booked on a simulated venue (paper, an alias of it, a sandbox): nothing real is at stake.
    simulated: bool = False

    def __post_init__(self) -> None:
        # The quote currency's rate from another pair, for a symbol whose own price does not give it (EUR/GBP); set
        # where positions are marked to the market, never stored (see to_account).
        self.cross_rate: Decimal | None = None

    def follow(self, mark: Mark | None) -> None:
        """Take the price of `mark`'s market from its next tick on (None: keep the price the position has)."""
        price = self.current_price
        state = vars(self)
        state["_mark"] = mark
        state["_price"] = price
        state["_since"] = mark.seq if mark is not None else 0

    def __getstate__(self) -> dict[str, Any]:
        """A copy (copy, deepcopy, pickle) keeps the price the position has now and follows no market: one sharing
        the mark would go on moving after the original closed."""
        state = dict(vars(self))
        state.update(_mark=None, _price=self.current_price, _since=0)
        return state

    @property
    def sign(self) -> int:
        return 1 if self.side == "long" else -1

    @property
    def unrealized_pnl(self) -> Decimal:
        """In account currency."""
        if self.status != "open":
            return ZERO
        pnl = (self.current_price - self.entry_price) * self.quantity * self.sign
        return to_account(pnl, self.symbol, self.current_price, self.cross_rate)

    @property
    def notional(self) -> Decimal:
        """In account currency."""
        return to_account(self.current_price * self.quantity, self.symbol, self.current_price, self.cross_rate)

    @property
    def entry_notional(self) -> Decimal:
        """The entry price times the quantity, in account currency at the current rate."""
        return to_account(self.entry_price * self.quantity, self.symbol, self.current_price, self.cross_rate)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "side": self.side,
            "entry_price": self.entry_price,
            "current_price": self.current_price,
            "quantity": self.quantity,
            "unrealized_pnl": self.unrealized_pnl,
            "realized_pnl": self.realized_pnl,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
            "status": self.status,
            "strategy_id": self.strategy_id,
            "close_reason": self.close_reason,
            "created_at": self.created_at,
            "closed_at": self.closed_at,
            "simulated": self.simulated,
        }


# Installed after the dataclass is made, so the field stays a Decimal column whose value __init__ hands to the setter.
setattr(Position, "current_price", _MarkedPrice())  # noqa: B010


def marked(mark: Mark, positions: Iterable[Position]) -> list[tuple[str, Decimal]]:
    """(id, price) of the positions following `mark` that its last tick moved; one given a price of its own since keeps
    it (and is stored with it)."""
    seq, price = mark.seq, mark.price
    return [(p.id, price) for p in positions if p.__dict__["_since"] < seq]


@dataclass
class Order:
    id: str
    account_id: str
    exchange: str
    symbol: str
    side: Literal["buy", "sell"]
    type: Literal["market", "limit", "stop"]
    quantity: Decimal
    status: OrderStatus
    intent: Intent = "net"
    price: Decimal | None = None
    stop_price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    client_order_id: str | None = None
    position_id: str | None = None
    strategy_id: str | None = None
    venue_order_id: str | None = None
    filled_quantity: Decimal = ZERO
    average_price: Decimal | None = None
    fee: Decimal = ZERO
    reject_reason: str | None = None
    created_at: datetime = field(default_factory=now)
    updated_at: datetime = field(default_factory=now)
    # Placed on a simulated venue (paper, an alias of it, a sandbox): nothing real is at stake.
    simulated: bool = False

    def __post_init__(self) -> None:
        # As Position.cross_rate: set when the order is placed and where open orders are marked, never stored.
        self.cross_rate: Decimal | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "side": self.side,
            "type": self.type,
            "quantity": self.quantity,
            "price": self.price,
            "stop_price": self.stop_price,
            "stop_loss": self.stop_loss,
            "take_profit": self.take_profit,
            "status": self.status,
            "filled_quantity": self.filled_quantity,
            "average_price": self.average_price,
            "fee": self.fee,
            "position_id": self.position_id,
            "strategy_id": self.strategy_id,
            "reject_reason": self.reject_reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "simulated": self.simulated,
        }


@dataclass
class Book:
    """One account's live trading state, owned by its writer."""

    account_id: str
    balance: Decimal
    currency: str = "USDT"
    state: TradingState = "active"
    envelope: Envelope = field(default_factory=Envelope)
    day: str = ""
    day_realized: Decimal = ZERO
    realized_total: Decimal = ZERO
    positions: dict[str, Position] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    alerts: dict[str, str] = field(default_factory=dict)
    # Counts the account's stored writes: an instance whose copy is behind the store's reloads it before writing.
    version: int = 0

    def open_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if p.status == "open"]


@dataclass(frozen=True)
class StoredResponse:
    """An idempotent write's first answer."""

    fingerprint: str
    status: int
    body: bytes


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first answer to an account's idempotency key, stored with what the write changed."""

    account_id: str
    key: str
    response: StoredResponse


@dataclass
class TradeBatch:
    """Everything one write changed, written in one transaction: a crash leaves all of it or none."""

    books: list[Book] = field(default_factory=list)
    positions: list[Position] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    responses: list[IdempotencyRecord] = field(default_factory=list)
