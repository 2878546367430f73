"""Real venues through ccxt (async): one CcxtExchange per (account, exchange), reconnecting with backoff.

ccxt speaks REST, so resting orders and tickers are polled: open orders at `poll_interval`, the tickers of symbols
rt has asked about (or holds positions in) at `tick_interval`. While the venue cannot be reached, `connected` is
False, every call raises ExchangeUnavailable (503) and a background task reloads the markets with capped
exponential backoff until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
import orjson
from ccxt.base import errors as ccxt_errors
from ccxt.base.decimal_to_precision import TICK_SIZE

from rt.errors import BadRequest, NotFound, RtError
from rt.exchanges import (
    ExchangeRejected,
    ExchangeUnavailable,
    Fill,
    FillHandler,
    Market,
    OrderSpec,
    Ticker,
    TickHandler,
    VenueOrder,
)
from rt.records.candles import Candle, opened_at

if TYPE_CHECKING:
    from rt.auth.vault import Box
    from rt.records.accounts import VenueRecord

log = logging.getLogger("rt.ccxt")
# ccxt logs every request and response at debug level, API key header included: keep it out of rt's logs.
logging.getLogger("ccxt").setLevel(logging.WARNING)

T = TypeVar("T")

# rt trades spot. These keep ccxt to the spot API and away from calls that need more than trading permissions.
_SPOT_OPTIONS: dict[str, dict[str, Any]] = {
    "binance": {
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
        "fetchMargins": False,
        "warnOnFetchOpenOrdersWithoutSymbol": False,
    },
}
_DONE = {"canceled", "expired", "rejected"}


async def check_venue(exchange_id: str, *, sandbox: bool = False, url: str | None = None) -> None:
    """Refuse a venue that could never connect: raises ValueError saying why."""
    if exchange_id not in ccxt_async.exchanges:
        close = difflib.get_close_matches(exchange_id.lower(), ccxt_async.exchanges, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else " (see https://docs.ccxt.com for the ids)"
        raise ValueError(f"ccxt has no exchange {exchange_id!r}{hint}")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--url must be an http(s) URL such as http://127.0.0.1:9000, not {url!r}")
    if sandbox:
        client = getattr(ccxt_async, exchange_id)()
        try:
            if "test" not in client.urls:
                raise ValueError(f"{exchange_id} has no sandbox (test network) in ccxt")
        finally:
            await client.close()


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def _rebase(urls: Any, base: str) -> Any:
    """Point every API URL ccxt knows for a venue at `base`, keeping each URL's path."""
    if isinstance(urls, str):
        return base.rstrip("/") + urlsplit(urls).path
    if isinstance(urls, dict):
        return {name: _rebase(url, base) for name, url in urls.items()}
    return urls


class CcxtExchange:
    def __init__(
        self,
        exchange_id: str,
        credentials: Mapping[str, str] | None = None,
        *,
        account_id: str = "",
        sandbox: bool = False,
        url: str | None = None,
        options: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
        poll_interval: float = 1.0,
        tick_interval: float = 2.0,
        heartbeat: float = 15.0,
        backoff: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        if exchange_id not in ccxt_async.exchanges:
            raise ValueError(f"ccxt has no exchange {exchange_id!r}")
        creds = dict(credentials or {})
        self.id = exchange_id
        self.account_id = account_id
        self._sandbox = sandbox
        self._client = getattr(ccxt_async, exchange_id)(
            {
                "apiKey": creds.get("api_key", ""),
                "secret": creds.get("secret", ""),
                "password": creds.get("password", ""),
                "enableRateLimit": True,
                "timeout": int(timeout * 1000),
                "options": {"defaultType": "spot", **_SPOT_OPTIONS.get(exchange_id, {}), **(options or {})},
            }
        )
        if sandbox:
            self._client.set_sandbox_mode(True)
        if url:
            self._client.urls["api"] = _rebase(self._client.urls["api"], url)
        self._hidden = [v for v in creds.values() if v]
        self._poll_interval = poll_interval
        self._tick_interval = tick_interval
        self._heartbeat = heartbeat
        self._backoff = backoff
        self._connected = False
        self._lost = asyncio.Event()
        self._open: dict[str, str] = {}
        self._watched: set[str] = set()
        self._fill_handlers: list[FillHandler] = []
        self._tick_handlers: list[TickHandler] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_record(cls, record: VenueRecord, box: Box, **settings: Any) -> CcxtExchange:
        """A venue as `rt venues add` stored it: credentials unsealed here and handed to ccxt only."""
        credentials = orjson.loads(box.open(record.sealed_credentials))
        options = record.options
        return cls(
            record.exchange,
            credentials,
            account_id=record.account_id,
            sandbox=bool(options.get("sandbox")),
            url=options.get("url") or None,
            options=options.get("ccxt") or {},
            **settings,
        )

    def __repr__(self) -> str:
        return f"CcxtExchange({self.id!r}, account_id={self.account_id!r}, connected={self._connected})"

    # lifecycle

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def simulated(self) -> bool:
        """A sandbox venue trades on the exchange's test network: its orders and positions say they are simulated."""
        return self._sandbox

    async def start(self) -> None:
        for name, loop in (("connect", self._supervise), ("orders", self._poll_orders), ("ticks", self._poll_ticks)):
            task = asyncio.create_task(loop(), name=f"ccxt-{self.id}-{self.account_id}-{name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._connected = False
        await self._client.close()

    def on_fill(self, handler: FillHandler) -> None:
        self._fill_handlers.append(handler)

    def on_tick(self, handler: TickHandler) -> None:
        self._tick_handlers.append(handler)

    def watch(self, symbol: str) -> None:
        """Poll this symbol's ticker from now on (a position is open on it)."""
        self._watched.add(symbol)

    def adopt(self, venue_order_id: str, spec: OrderSpec) -> None:
        """Follow an order the store holds open (placed before a restart, or by another instance) until it fills."""
        self._open[venue_order_id] = spec.symbol
        self._watched.add(spec.symbol)

    def forget(self, venue_order_id: str) -> None:
        self._open.pop(venue_order_id, None)

    # the Exchange protocol

    async def markets(self) -> list[Market]:
        self._require()
        return [self._market(m) for _, m in sorted(self._client.markets.items()) if m.get("active") is not False]

    async def market(self, symbol: str) -> Market | None:
        self._require()
        raw = self._client.markets.get(symbol)
        return self._market(raw) if raw is not None and raw.get("active") is not False else None

    async def ticker(self, symbol: str) -> Ticker:
        self._known(symbol)
        raw = await self._call(self._client.fetch_ticker, symbol)
        self._watched.add(symbol)
        return self._ticker(symbol, raw)

    async def balances(self) -> dict[str, Decimal]:
        raw = await self._call(self._client.fetch_balance)
        return {asset: _dec(total) for asset, total in (raw.get("total") or {}).items() if total}

    async def candles(self, symbol: str, timeframe: str, *, limit: int, since: int | None = None) -> list[Candle]:
        """The venue's own bars (ccxt's fetch_ohlcv), oldest first; its current bar is still open."""
        self._known(symbol)
        if not self._client.has.get("fetchOHLCV"):
            raise BadRequest(f"{self.id} serves no candles")
        offered = self._client.timeframes or {}
        if timeframe not in offered:
            raise BadRequest(
                f"{self.id} has no {timeframe} candles",
                errors=[{"field": "timeframe", "message": f"one of {', '.join(offered)}"}],
            )
        rows = await self._call(self._client.fetch_ohlcv, symbol, timeframe, since, limit)
        bars = [_candle(row) for row in rows if len(row) >= 5 and None not in row[:5]]
        return bars[:limit] if since is not None else bars[-limit:]

    async def place(self, spec: OrderSpec) -> VenueOrder:
        self._known(spec.symbol)
        params: dict[str, Any] = {"clientOrderId": spec.client_id} if spec.client_id else {}
        kind, price = spec.type, spec.price
        if spec.type == "stop":
            assert spec.stop_price is not None
            kind, price = "market", None
            params["triggerPrice"] = float(spec.stop_price)
        raw = await self._call(
            self._client.create_order,
            spec.symbol,
            kind,
            spec.side,
            float(spec.quantity),
            None if price is None else float(price),
            params,
        )
        self._watched.add(spec.symbol)
        venue_order_id = str(raw["id"])
        if spec.type == "market" and raw.get("status") == "open":
            # Some venues acknowledge a market order before it fills: ask once more before leaving it to the poller.
            raw = await self._call(self._client.fetch_order, venue_order_id, spec.symbol)
        status = raw.get("status")
        if status == "closed":
            return VenueOrder(venue_order_id, "filled", await self._fill(raw, spec.symbol))
        if status in _DONE:
            return VenueOrder(venue_order_id, "rejected")
        self._open[venue_order_id] = spec.symbol
        return VenueOrder(venue_order_id, "open")

    async def cancel(self, venue_order_id: str, symbol: str) -> VenueOrder:
        try:
            await self._call(self._client.cancel_order, venue_order_id, symbol)
        except NotFound:
            # The venue no longer has it open: it filled (the poller delivers that fill) or was canceled before.
            raw = await self._call(self._client.fetch_order, venue_order_id, symbol)
            if raw.get("status") == "closed":
                return VenueOrder(venue_order_id, "filled")
        self._open.pop(venue_order_id, None)
        return VenueOrder(venue_order_id, "canceled")

    # calls and errors

    def _require(self) -> None:
        if not self._connected:
            raise ExchangeUnavailable(f"exchange {self.id} is not connected; rt is reconnecting")

    def _known(self, symbol: str) -> None:
        self._require()
        if symbol not in self._client.markets:
            raise BadRequest(
                f"unknown symbol {symbol!r} on {self.id}",
                errors=[{"field": "symbol", "message": f"not listed on {self.id} (see GET /v1/markets)"}],
            )

    def _reason(self, exc: BaseException) -> str:
        """The venue's own words, with any credential blanked out."""
        text = str(exc)
        for value in self._hidden:
            text = text.replace(value, "***")
        return text[:300]

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        self._require()
        try:
            return await fn(*args)
        except ccxt_errors.NetworkError as exc:
            self._lose(exc)
            raise ExchangeUnavailable(f"exchange {self.id} is unreachable; rt is reconnecting") from None
        except ccxt_errors.BadSymbol as exc:
            raise BadRequest(f"{self.id} does not know this symbol: {self._reason(exc)}") from None
        except ccxt_errors.OrderNotFound as exc:
            raise NotFound(f"{self.id} has no such order: {self._reason(exc)}") from None
        except ccxt_errors.AuthenticationError as exc:
            raise ExchangeUnavailable(
                f"{self.id} refused this account's credentials ({self._reason(exc)}); replace them with "
                "`rt venues add` and restart rt"
            ) from None
        except (ccxt_errors.InsufficientFunds, ccxt_errors.InvalidOrder, ccxt_errors.ExchangeError) as exc:
            reason = self._reason(exc)
            raise ExchangeRejected(
                f"{self.id} rejected the request: {reason}", details={"check": "exchange", "reason": reason}
            ) from None
        except ccxt_errors.BaseError as exc:
            raise ExchangeUnavailable(f"exchange {self.id} failed: {type(exc).__name__}") from None

    def _lose(self, exc: BaseException) -> None:
        if self._connected:
            log.warning(
                "exchange disconnected",
                extra={"exchange": self.id, "account_id": self.account_id, "error": type(exc).__name__},
            )
        self._connected = False
        self._lost.set()

    # background loops

    async def _supervise(self) -> None:
        """Connect, then reconnect with capped exponential backoff whenever a call finds the venue gone."""
        first, cap = self._backoff
        delay = first
        while True:
            self._lost.clear()
            if not self._connected:
                if not await self._connect(delay):
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    delay = min(delay * 2, cap)
                    continue
                delay = first
            try:
                await asyncio.wait_for(self._lost.wait(), self._heartbeat)
            except TimeoutError:
                await self._ping()

    async def _connect(self, delay: float) -> bool:
        try:
            await self._client.load_markets(reload=True)
        except ccxt_errors.BaseError as exc:
            log.warning(
                "exchange unreachable",
                extra={
                    "exchange": self.id,
                    "account_id": self.account_id,
                    "error": type(exc).__name__,
                    "retry_in_s": round(delay, 2),
                },
            )
            return False
        self._connected = True
        log.info(
            "exchange connected",
            extra={"exchange": self.id, "account_id": self.account_id, "markets": len(self._client.markets)},
        )
        return True

    async def _ping(self) -> None:
        """When nothing else has talked to the venue for a while, find out whether it is still there."""
        probe = self._client.fetch_time if self._client.has.get("fetchTime") else self._client.fetch_markets
        try:
            await probe()
        except ccxt_errors.NetworkError as exc:
            self._lose(exc)
        except ccxt_errors.BaseError:
            pass

    async def _poll_orders(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            for venue_order_id, symbol in list(self._open.items()):
                if not self._connected:
                    break
                try:
                    await self._check(venue_order_id, symbol)
                except ExchangeUnavailable:
                    break
                except RtError as exc:
                    log.warning(
                        "order check failed",
                        extra={"exchange": self.id, "venue_order_id": venue_order_id, "code": exc.code},
                    )
                except Exception:
                    log.exception("order check failed", extra={"exchange": self.id, "venue_order_id": venue_order_id})

    async def _check(self, venue_order_id: str, symbol: str) -> None:
        try:
            raw = await self._call(self._client.fetch_order, venue_order_id, symbol)
        except NotFound:
            self._open.pop(venue_order_id, None)
            log.warning("order vanished at the venue", extra={"exchange": self.id, "venue_order_id": venue_order_id})
            return
        status = raw.get("status")
        if status == "closed" or (status in _DONE and raw.get("filled")):
            fill = await self._fill(raw, symbol)
            if self._open.pop(venue_order_id, None) is not None:
                await self._deliver(fill)
        elif status in _DONE:
            self._open.pop(venue_order_id, None)
            log.warning(
                "order ended at the venue without a fill",
                extra={"exchange": self.id, "venue_order_id": venue_order_id, "status": status},
            )

    async def _deliver(self, fill: Fill) -> None:
        for handler in self._fill_handlers:
            try:
                await handler(fill)
            except Exception:
                log.exception("fill handler failed", extra={"venue_order_id": fill.venue_order_id})

    async def _poll_ticks(self) -> None:
        while True:
            await asyncio.sleep(self._tick_interval)
            symbols = sorted(s for s in self._watched if s in self._client.markets)
            if not (self._connected and symbols and self._tick_handlers):
                continue
            try:
                quotes = await self._tickers(symbols)
            except RtError:
                continue
            for quote in quotes:
                for handler in self._tick_handlers:
                    try:
                        handler(quote)
                    except Exception:
                        log.exception("tick handler failed", extra={"exchange": self.id, "symbol": quote.symbol})

    async def _tickers(self, symbols: list[str]) -> list[Ticker]:
        if self._client.has.get("fetchTickers"):
            raw = await self._call(self._client.fetch_tickers, symbols)
            return [self._ticker(s, raw[s]) for s in symbols if s in raw]
        return [self._ticker(s, await self._call(self._client.fetch_ticker, s)) for s in symbols]

    # ccxt structures -> rt's

    def _ticker(self, symbol: str, raw: Mapping[str, Any]) -> Ticker:
        last = raw.get("last") or raw.get("close")
        bid, ask = raw.get("bid") or last, raw.get("ask") or last
        if last is None and bid is not None and ask is not None:
            last = (bid + ask) / 2
        if bid is None or ask is None or last is None:
            raise ExchangeUnavailable(f"{self.id} sent no price for {symbol}")
        return Ticker(symbol, _dec(bid), _dec(ask), _dec(last), int(raw.get("timestamp") or time.time() * 1000))

    def _step(self, precision: Any) -> Decimal:
        if precision is None:
            return Decimal(0)
        if self._client.precisionMode == TICK_SIZE:
            return _dec(precision)
        return Decimal(1).scaleb(-int(precision))

    def _market(self, raw: Mapping[str, Any]) -> Market:
        precision = raw.get("precision") or {}
        amount_step = self._step(precision.get("amount"))
        minimum = ((raw.get("limits") or {}).get("amount") or {}).get("min")
        return Market(
            raw["symbol"],
            raw["base"],
            raw["quote"],
            self._step(precision.get("price")),
            amount_step,
            amount_step if minimum is None else _dec(minimum),
        )

    async def _fill(self, raw: Mapping[str, Any], symbol: str) -> Fill:
        quantity = _dec(raw.get("filled") or raw.get("amount") or 0)
        price = _dec(raw.get("average") or raw.get("price") or 0)
        fees = [f for f in (raw.get("fees") or [raw.get("fee")]) if f and f.get("cost") is not None]
        if not fees and self._client.has.get("fetchOrderTrades"):
            # Venues that report an order without its fee (Binance's order query) report it on the trades.
            with contextlib.suppress(RtError):
                trades = await self._call(self._client.fetch_order_trades, str(raw["id"]), symbol)
                fees = [t["fee"] for t in trades if t.get("fee") and t["fee"].get("cost") is not None]
        return Fill(str(raw["id"]), price, quantity, self._fee_in_quote(fees, symbol, price))

    def _fee_in_quote(self, fees: Iterable[Mapping[str, Any]], symbol: str, price: Decimal) -> Decimal:
        """rt books fees in the quote currency; a fee taken in the base asset is worth its amount times the price."""
        market = self._client.markets[symbol]
        total = Decimal(0)
        for fee in fees:
            cost, currency = _dec(fee["cost"]), fee.get("currency")
            if currency in (None, market["quote"]):
                total += cost
            elif currency == market["base"]:
                total += cost * price
            else:
                log.info("fee in a third currency not booked", extra={"exchange": self.id, "currency": currency})
        return total


def _candle(row: list[Any]) -> Candle:
    volume = row[5] if len(row) > 5 and row[5] is not None else 0
    return Candle(opened_at(int(row[0])), _dec(row[1]), _dec(row[2]), _dec(row[3]), _dec(row[4]), _dec(volume))


def venues_from(records: Iterable[VenueRecord], box: Box) -> list[CcxtExchange]:
    """One CcxtExchange per stored venue; a record rt cannot use is logged and skipped, so the server still starts."""
    made = []
    for record in records:
        try:
            made.append(CcxtExchange.from_record(record, box))
        except Exception as exc:
            log.error(
                "venue not loaded",
                extra={"exchange": record.exchange, "account_id": record.account_id, "error": type(exc).__name__},
            )
    return made
