"""An alert's body as a sender such as TradingView writes it: symbols in any of their common forms, actions in any
case, numbers as numbers or as the strings a template renders. Every refusal is a 400 naming the field."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, cast

import orjson
from pydantic import TypeAdapter, ValidationError

from rt.engine.requests import Amount
from rt.errors import BadRequest

Action = Literal["buy", "sell", "close", "flat"]
OrderType = Literal["market", "limit", "stop"]
ACTIONS: tuple[Action, ...] = ("buy", "sell", "close", "flat")
TYPES: tuple[OrderType, ...] = ("market", "limit", "stop")

# Quote currencies a compact symbol (BTCUSDT) may end in, longest first so USDT wins over USD.
QUOTES = tuple(
    sorted(
        ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "DAI", "USD", "EUR", "GBP", "JPY", "TRY", "BRL", "BTC", "ETH", "BNB"),
        key=len,
        reverse=True,
    )
)
_PART = re.compile(r"[A-Z0-9]{1,20}")
_ID = re.compile(r"[\x21-\x7e]{1,128}")
_AMOUNT: TypeAdapter[Decimal] = TypeAdapter(Amount)
SYMBOL_FORMS = "BTC/USDT, BTCUSDT or BINANCE:BTCUSDT"


@dataclass(frozen=True)
class Alert:
    symbol: str  # rt's form, BTC/USDT
    action: Action
    quantity: Decimal | None = None
    type: OrderType | None = None
    price: Decimal | None = None
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    id: str | None = None


def refuse(field: str, message: str) -> BadRequest:
    return BadRequest(f"{field}: {message}", errors=[{"field": field, "message": message}])


def symbol_of(value: object, field: str = "symbol") -> str:
    """BTC/USDT, btc-usdt, BTCUSDT, BINANCE:BTCUSDT and BYBIT:BTCUSDT.P all mean BTC/USDT."""
    if not isinstance(value, str) or not value.strip():
        raise refuse(field, f"a symbol is required, such as {SYMBOL_FORMS}")
    text = value.strip().upper().rsplit(":", 1)[-1].strip()
    text = text.removesuffix(".P")
    for separator in ("-", "_"):
        text = text.replace(separator, "/")
    if "/" in text:
        base, _, quote = text.partition("/")
    else:
        quote = next((q for q in QUOTES if text.endswith(q) and len(text) > len(q)), "")
        base = text[: len(text) - len(quote)]
    if not (_PART.fullmatch(base) and _PART.fullmatch(quote)):
        raise refuse(field, f"{value!r} is not a symbol rt can read: send {SYMBOL_FORMS}")
    return f"{base}/{quote}"


def amount_of(value: object, field: str) -> Decimal | None:
    """A positive number, or the numeric string a template renders ("0.5", " 1 "); absent, null or "" is None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise refuse(field, "must be a number or a numeric string")
    try:
        return _AMOUNT.validate_python(value.strip() if isinstance(value, str) else value)
    except ValidationError as exc:
        raise refuse(field, exc.errors(include_url=False)[0]["msg"]) from None


def _choice(value: object, field: str, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    word = value.strip().lower() if isinstance(value, str) else None
    if word not in allowed:
        raise refuse(field, f"must be one of {', '.join(allowed)}")
    return word


def _id_of(value: object) -> str | None:
    if value is None or value == "":
        return None
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
    if text is None or not _ID.fullmatch(text):
        raise refuse("id", "must be 1 to 128 printable characters without spaces")
    return text


def parse(body: object) -> Alert:
    """The alert a body asks for; fields rt does not use (TradingView's time, ticker ...) are ignored."""
    if not isinstance(body, dict):
        raise refuse("body", "must be a JSON object")
    action = _choice(body.get("action"), "action", ACTIONS)
    if action is None:
        raise refuse("action", f"is required: one of {', '.join(ACTIONS)}")
    kind = _choice(body.get("type"), "type", TYPES)
    price = amount_of(body.get("price"), "price")
    if kind in ("limit", "stop") and price is None:
        raise refuse("price", f"a {kind} alert needs a price")
    return Alert(
        symbol=symbol_of(body.get("symbol")),
        action=cast(Action, action),
        quantity=amount_of(body.get("quantity"), "quantity"),
        type=cast(OrderType | None, kind),
        price=price,
        stop_loss=amount_of(body.get("stop_loss"), "stop_loss"),
        take_profit=amount_of(body.get("take_profit"), "take_profit"),
        id=_id_of(body.get("id")),
    )


def without_passphrase(body: object) -> dict[str, Any]:
    """What the log keeps of a body, and what a body's dedupe hash covers."""
    if not isinstance(body, dict):
        return {} if body is None else {"body": body}
    # Any spelling of the key: a template that writes "Passphrase" fails to authenticate, and its secret is still one.
    return {k: v for k, v in body.items() if not (isinstance(k, str) and k.strip().lower() == "passphrase")}


def body_hash(body: object) -> str:
    """The same body, whatever the order of its keys or its spacing, hashes the same."""
    return hashlib.sha256(orjson.dumps(without_passphrase(body), option=orjson.OPT_SORT_KEYS)).hexdigest()
