"""Tradyn names and sizes: `EURUSD` for rt's `EUR/USD`, volumes in lots, prices with the market's digits.

A forex lot is 100,000 units of the base currency (MetaTrader's standard contract); any other market's lot is one unit,
so `BTCUSDT` volume 0.5 is half a bitcoin. Cerberus and the books only ever see units.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from rt.errors import BadRequest, RtError
from rt.exchanges import Market
from rt.records.trading import is_fiat_pair

FOREX_LOT = Decimal(100_000)
ONE = Decimal(1)
VOLUME_STEP = Decimal("0.01")
MAX_VOLUME = Decimal(1_000_000)


def to_tradyn(symbol: str) -> str:
    """`EUR/USD` -> `EURUSD`."""
    return symbol.replace("/", "")


def to_rt(name: str, known: Iterable[str], *, missing: type[RtError] = BadRequest) -> str:
    """The rt symbol among `known` that `name` names: `EURUSD`, `eurusd` and `EUR/USD` all give `EUR/USD`.
    Raises `missing` (BadRequest for a body field; a path parameter passes NotFound) naming it otherwise."""
    wanted = name.strip().upper()
    compact = wanted.replace("/", "")
    for symbol in known:
        upper = symbol.upper()
        if upper == wanted or (compact and to_tradyn(upper) == compact):
            return symbol
    raise missing(f"unknown symbol {name!r}", symbol=name)


def lot_size(symbol: str) -> Decimal:
    """Units of `symbol`'s base in one lot: 100,000 for a pair of two fiat currencies, else 1."""
    return FOREX_LOT if is_fiat_pair(symbol) else ONE


def volume_of(value: object) -> Decimal:
    """A client's volume as a Decimal: a positive number of lots on the 0.01 step, or a BadRequest saying why."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise BadRequest("volume must be a number of lots", errors=[{"field": "volume", "message": "not a number"}])
    try:
        volume = Decimal(str(value).strip())
    except InvalidOperation:
        raise BadRequest(
            "volume must be a number of lots", errors=[{"field": "volume", "message": "not a number"}]
        ) from None
    if not volume.is_finite() or volume <= 0 or volume > MAX_VOLUME:
        raise BadRequest(
            f"volume must be more than 0 and at most {MAX_VOLUME} lots",
            errors=[{"field": "volume", "message": "out of range"}],
        )
    if volume % VOLUME_STEP != 0:
        raise BadRequest(
            f"volume {value} is not on the {VOLUME_STEP} lot step",
            errors=[{"field": "volume", "message": f"not a multiple of {VOLUME_STEP}"}],
        )
    return volume


def to_units(volume: object, symbol: str) -> Decimal:
    """Lots -> units of the base, checked as `volume_of` does."""
    return _plain(volume_of(volume) * lot_size(symbol))


def to_lots(quantity: Decimal, symbol: str) -> Decimal:
    """Units of the base -> lots."""
    return _plain(quantity / lot_size(symbol))


def _plain(value: Decimal) -> Decimal:
    """Without trailing zeros, and never in exponent form (10000, not 1E+4)."""
    value = value.normalize()
    exponent = value.as_tuple().exponent
    return value.quantize(ONE) if isinstance(exponent, int) and exponent > 0 else value


def digits(market: Market) -> int:
    """Decimal places of the market's price step (5 for EUR/USD on 0.00001); 8 when the venue gives no step."""
    step = market.price_step
    if step <= 0:
        return 8
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 8
