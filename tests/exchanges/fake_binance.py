"""A fake Binance spot venue on 127.0.0.1: the REST subset ccxt's `binance` class calls, with Binance's request
signatures (HMAC-SHA256 of the query string under the secret, key in X-MBX-APIKEY) and error bodies.

It keeps balances, fills market orders at its quote (buys at the ask, sells at the bid, fee 0.1% in the asset
received, as Binance charges it) and rests limit and stop orders until `set_price` moves the market through them.
It runs in a thread, so async tests and tests of a server subprocess can both use it; `stop()` takes it off the
network and `start()` brings it back on the same port.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.e2e.server import free_port

FEE_RATE = Decimal("0.001")
EIGHT = Decimal("0.00000001")


@dataclass(frozen=True)
class Pair:
    base: str
    quote: str
    tick: Decimal
    step: Decimal

    @property
    def id(self) -> str:
        return self.base + self.quote

    @property
    def symbol(self) -> str:
        return f"{self.base}/{self.quote}"


PAIRS = {
    p.id: p
    for p in (
        Pair("BTC", "USDT", Decimal("0.01"), Decimal("0.00001")),
        Pair("ETH", "USDT", Decimal("0.01"), Decimal("0.0001")),
    )
}


@dataclass(frozen=True)
class Seen:
    """One request the venue received, and whether its signature and key checked out (None: unsigned route)."""

    method: str
    path: str
    params: dict[str, str]
    api_key: str | None
    signed: bool | None


@dataclass
class VenueOrder:
    id: int
    client_id: str
    pair: Pair
    side: str
    type: str
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    status: str = "NEW"
    filled: Decimal = Decimal(0)
    quote_filled: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    updated_ms: int = 0
    trades: list[dict[str, Any]] = field(default_factory=list)


class BinanceError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _s(value: Decimal) -> str:
    return f"{value.quantize(EIGHT):f}"


def _unsigned(raw: str) -> str:
    return "&".join(part for part in raw.split("&") if part and not part.startswith("signature="))


class FakeBinance:
    def __init__(
        self,
        api_key: str,
        secret: str,
        prices: dict[str, Decimal] | None = None,
        balances: dict[str, Decimal] | None = None,
    ) -> None:
        self.api_key = api_key
        self.secret = secret
        self.port = free_port()
        self.prices = {"BTCUSDT": Decimal("65000"), "ETHUSDT": Decimal("3000"), **(prices or {})}
        self.free = {"USDT": Decimal("100000"), "BTC": Decimal("1"), "ETH": Decimal("10"), **(balances or {})}
        self.locked: dict[str, Decimal] = {}
        self.orders: dict[int, VenueOrder] = {}
        self.seen: list[Seen] = []
        self._ids = itertools.count(1000)
        self._trade_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(routes=self._routes())

    # running

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeBinance:
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            log_level="warning",
            lifespan="off",
            loop="asyncio",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"fake-binance-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the fake venue did not start on port {self.port}")
            time.sleep(0.01)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = self._thread = None

    def __enter__(self) -> FakeBinance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # the market, moved by tests

    def quote(self, pair: Pair) -> tuple[Decimal, Decimal]:
        price = self.prices[pair.id]
        return price - pair.tick, price + pair.tick

    def set_price(self, symbol: str, price: Decimal) -> None:
        """Move the market; resting orders the new quote reaches fill."""
        pair = PAIRS[symbol.replace("/", "")]
        with self._lock:
            self.prices[pair.id] = price
            for order in self.orders.values():
                if order.pair == pair and order.status == "NEW":
                    fill_at = self._reached(order)
                    if fill_at is not None:
                        self._fill(order, fill_at)

    def signed_requests(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and s.path == path and s.signed]

    def balance(self, asset: str) -> Decimal:
        return self.free.get(asset, Decimal(0)) + self.locked.get(asset, Decimal(0))

    # matching

    def _reached(self, order: VenueOrder) -> Decimal | None:
        bid, ask = self.quote(order.pair)
        last = self.prices[order.pair.id]
        buy = order.side == "BUY"
        if order.type == "MARKET":
            return ask if buy else bid
        if order.type == "LIMIT":
            assert order.price is not None
            if buy and ask <= order.price:
                return order.price
            if not buy and bid >= order.price:
                return order.price
            return None
        assert order.stop_price is not None
        if (buy and last >= order.stop_price) or (not buy and last <= order.stop_price):
            return ask if buy else bid
        return None

    def _move(self, asset: str, amount: Decimal, *, locked: bool = False) -> None:
        book = self.locked if locked else self.free
        book[asset] = book.get(asset, Decimal(0)) + amount

    def _fill(self, order: VenueOrder, price: Decimal) -> None:
        pair, qty = order.pair, order.quantity
        cost = price * qty
        self._move(pair.quote if order.side == "BUY" else pair.base, -order.locked, locked=True)
        if order.side == "BUY":
            self._move(pair.quote, order.locked - cost)
            fee, fee_asset = qty * FEE_RATE, pair.base
            self._move(pair.base, qty - fee)
        else:
            self._move(pair.base, order.locked - qty)
            fee, fee_asset = cost * FEE_RATE, pair.quote
            self._move(pair.quote, cost - fee)
        order.locked = Decimal(0)
        order.status, order.filled, order.quote_filled = "FILLED", qty, cost
        order.updated_ms = int(time.time() * 1000)
        order.trades.append(
            {"price": price, "qty": qty, "commission": fee, "commissionAsset": fee_asset, "id": next(self._trade_ids)}
        )

    # HTTP

    def _routes(self) -> list[Route]:
        def route(
            path: str, handler: Callable[[Request, dict[str, str]], Any], methods: list[str], signed: bool
        ) -> Route:
            return Route(path, self._endpoint(handler, signed), methods=methods)

        return [
            route("/api/v3/ping", lambda r, p: {}, ["GET"], False),
            route("/api/v3/time", lambda r, p: {"serverTime": int(time.time() * 1000)}, ["GET"], False),
            route("/api/v3/exchangeInfo", self._exchange_info, ["GET"], False),
            route("/api/v3/ticker/24hr", self._ticker_24hr, ["GET"], False),
            route("/api/v3/ticker/bookTicker", self._book_ticker, ["GET"], False),
            route("/api/v3/account", self._account, ["GET"], True),
            route("/api/v3/order", self._new_order, ["POST"], True),
            route("/api/v3/order", self._cancel_order, ["DELETE"], True),
            route("/api/v3/order", self._get_order, ["GET"], True),
            route("/api/v3/openOrders", self._open_orders, ["GET"], True),
            route("/api/v3/myTrades", self._my_trades, ["GET"], True),
        ]

    def _endpoint(
        self, handler: Callable[[Request, dict[str, str]], Any], signed: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            raw_query = request.scope["query_string"].decode()
            raw_body = (await request.body()).decode()
            params = dict(parse_qsl(raw_query)) | dict(parse_qsl(raw_body))
            api_key = request.headers.get("x-mbx-apikey")
            ok = self._verify(params, raw_query, raw_body, api_key) if signed else None
            self.seen.append(Seen(request.method, request.url.path, params, api_key, ok))
            try:
                if signed:
                    self._authorize(params, api_key, bool(ok))
                with self._lock:
                    body = handler(request, params)
            except BinanceError as exc:
                return Response(
                    orjson.dumps({"code": exc.code, "msg": exc.msg}), exc.status, media_type="application/json"
                )
            return Response(orjson.dumps(body), 200, media_type="application/json")

        return endpoint

    def _verify(self, params: dict[str, str], raw_query: str, raw_body: str, api_key: str | None) -> bool:
        # Binance signs the query string followed by the body, each without the signature itself.
        payload = (_unsigned(raw_query) + _unsigned(raw_body)).encode()
        expected = hmac.new(self.secret.encode(), payload, hashlib.sha256).hexdigest()
        given = params.get("signature", "")
        return api_key == self.api_key and hmac.compare_digest(expected, given)

    def _authorize(self, params: dict[str, str], api_key: str | None, ok: bool) -> None:
        if api_key != self.api_key:
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        if not ok:
            raise BinanceError(400, -1022, "Signature for this request is not valid.")
        window = int(params.get("recvWindow", "5000"))
        if abs(time.time() * 1000 - int(params.get("timestamp", "0"))) > window:
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")

    def _pair(self, params: dict[str, str]) -> Pair:
        pair = PAIRS.get(params.get("symbol", ""))
        if pair is None:
            raise BinanceError(400, -1121, "Invalid symbol.")
        return pair

    def _pairs(self, params: dict[str, str]) -> Iterator[Pair]:
        if "symbol" in params:
            yield self._pair(params)
        elif "symbols" in params:
            for symbol in orjson.loads(params["symbols"]):
                yield self._pair({"symbol": symbol})
        else:
            yield from PAIRS.values()

    def _exchange_info(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        symbols = []
        for pair in PAIRS.values():
            symbols.append(
                {
                    "symbol": pair.id,
                    "status": "TRADING",
                    "baseAsset": pair.base,
                    "baseAssetPrecision": 8,
                    "quoteAsset": pair.quote,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT"],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": _s(pair.tick),
                            "maxPrice": "1000000.00000000",
                            "tickSize": _s(pair.tick),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": _s(pair.step),
                            "maxQty": "9000.00000000",
                            "stepSize": _s(pair.step),
                        },
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                }
            )
        return {
            "timezone": "UTC",
            "serverTime": int(time.time() * 1000),
            "rateLimits": [],
            "exchangeFilters": [],
            "symbols": symbols,
        }

    def _ticker_24hr(self, request: Request, params: dict[str, str]) -> Any:
        now = int(time.time() * 1000)
        out = []
        for pair in self._pairs(params):
            bid, ask = self.quote(pair)
            last = self.prices[pair.id]
            out.append(
                {
                    "symbol": pair.id,
                    "priceChange": "0",
                    "priceChangePercent": "0",
                    "weightedAvgPrice": _s(last),
                    "prevClosePrice": _s(last),
                    "lastPrice": _s(last),
                    "lastQty": "0.01",
                    "bidPrice": _s(bid),
                    "bidQty": "1",
                    "askPrice": _s(ask),
                    "askQty": "1",
                    "openPrice": _s(last),
                    "highPrice": _s(last),
                    "lowPrice": _s(last),
                    "volume": "100",
                    "quoteVolume": _s(last * 100),
                    "openTime": now - 86_400_000,
                    "closeTime": now,
                    "firstId": 1,
                    "lastId": 2,
                    "count": 2,
                }
            )
        return out[0] if "symbol" in params else out

    def _book_ticker(self, request: Request, params: dict[str, str]) -> Any:
        out = []
        for pair in self._pairs(params):
            bid, ask = self.quote(pair)
            out.append({"symbol": pair.id, "bidPrice": _s(bid), "bidQty": "1", "askPrice": _s(ask), "askQty": "1"})
        return out[0] if "symbol" in params else out

    def _account(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        assets = sorted(set(self.free) | set(self.locked))
        return {
            "makerCommission": 10,
            "takerCommission": 10,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": int(time.time() * 1000),
            "accountType": "SPOT",
            "permissions": ["SPOT"],
            "uid": 1,
            "balances": [
                {"asset": a, "free": _s(self.free.get(a, Decimal(0))), "locked": _s(self.locked.get(a, Decimal(0)))}
                for a in assets
            ],
        }

    def _new_order(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        pair = self._pair(params)
        kind, side = params.get("type", ""), params.get("side", "")
        if kind not in {"MARKET", "LIMIT", "STOP_LOSS"} or side not in {"BUY", "SELL"}:
            raise BinanceError(400, -1116, "Invalid orderType.")
        qty = Decimal(params.get("quantity", "0"))
        if qty <= 0 or qty % pair.step:
            raise BinanceError(400, -1013, "Filter failure: LOT_SIZE")
        price = Decimal(params["price"]) if "price" in params else None
        stop = Decimal(params["stopPrice"]) if "stopPrice" in params else None
        if (kind == "LIMIT" and price is None) or (kind == "STOP_LOSS" and stop is None):
            raise BinanceError(400, -1102, "Mandatory parameter was not sent, was empty/null, or malformed.")
        client_id = params.get("newClientOrderId") or f"fake-{next(self._ids)}"
        if any(o.client_id == client_id and o.status == "NEW" for o in self.orders.values()):
            raise BinanceError(400, -2010, "Duplicate order sent.")
        order = VenueOrder(next(self._ids), client_id, pair, side, kind, qty, price, stop)
        fill_at = self._reached(order)
        # Funds for the whole order, at the price it is expected to fill at.
        estimate = price or stop or fill_at
        assert estimate is not None
        need_asset, need = (pair.quote, qty * estimate) if side == "BUY" else (pair.base, qty)
        if self.free.get(need_asset, Decimal(0)) < need:
            raise BinanceError(400, -2010, "Account has insufficient balance for requested action.")
        self._move(need_asset, -need)
        self._move(need_asset, need, locked=True)
        order.locked = need
        self.orders[order.id] = order
        if fill_at is not None:
            self._fill(order, fill_at)
        return self._order_json(order, full=True)

    def _find(self, params: dict[str, str], unknown: BinanceError) -> VenueOrder:
        pair = self._pair(params)
        order = None
        if "orderId" in params:
            order = self.orders.get(int(params["orderId"]))
        elif "origClientOrderId" in params:
            order = next((o for o in self.orders.values() if o.client_id == params["origClientOrderId"]), None)
        if order is None or order.pair != pair:
            raise unknown
        return order

    def _cancel_order(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        order = self._find(params, BinanceError(400, -2011, "Unknown order sent."))
        if order.status != "NEW":
            raise BinanceError(400, -2011, "Unknown order sent.")
        asset = order.pair.quote if order.side == "BUY" else order.pair.base
        self._move(asset, -order.locked, locked=True)
        self._move(asset, order.locked)
        order.locked = Decimal(0)
        order.status, order.updated_ms = "CANCELED", int(time.time() * 1000)
        return self._order_json(order)

    def _get_order(self, request: Request, params: dict[str, str]) -> dict[str, Any]:
        return self._order_json(self._find(params, BinanceError(400, -2013, "Order does not exist.")), query=True)

    def _open_orders(self, request: Request, params: dict[str, str]) -> list[dict[str, Any]]:
        pairs = set(self._pairs(params)) if "symbol" in params else set(PAIRS.values())
        return [self._order_json(o, query=True) for o in self.orders.values() if o.status == "NEW" and o.pair in pairs]

    def _my_trades(self, request: Request, params: dict[str, str]) -> list[dict[str, Any]]:
        pair = self._pair(params)
        out = []
        for order in self.orders.values():
            if order.pair != pair or ("orderId" in params and order.id != int(params["orderId"])):
                continue
            for t in order.trades:
                out.append(
                    {
                        "symbol": pair.id,
                        "id": t["id"],
                        "orderId": order.id,
                        "orderListId": -1,
                        "price": _s(t["price"]),
                        "qty": _s(t["qty"]),
                        "quoteQty": _s(t["price"] * t["qty"]),
                        "commission": _s(t["commission"]),
                        "commissionAsset": t["commissionAsset"],
                        "time": order.updated_ms,
                        "isBuyer": order.side == "BUY",
                        "isMaker": order.type != "MARKET",
                        "isBestMatch": True,
                    }
                )
        return out

    def _order_json(self, order: VenueOrder, *, full: bool = False, query: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "symbol": order.pair.id,
            "orderId": order.id,
            "orderListId": -1,
            "clientOrderId": order.client_id,
            "price": _s(order.price or Decimal(0)),
            "origQty": _s(order.quantity),
            "executedQty": _s(order.filled),
            "cummulativeQuoteQty": _s(order.quote_filled),
            "status": order.status,
            "timeInForce": "GTC",
            "type": order.type,
            "side": order.side,
            "selfTradePreventionMode": "NONE",
        }
        if order.stop_price is not None:
            body["stopPrice"] = _s(order.stop_price)
        if query:
            body |= {
                "time": order.created_ms,
                "updateTime": order.updated_ms or order.created_ms,
                "isWorking": order.status == "NEW",
                "origQuoteOrderQty": "0.00000000",
            }
        else:
            body |= {"transactTime": order.updated_ms or order.created_ms, "workingTime": order.created_ms}
        if full:
            body["fills"] = [
                {
                    "price": _s(t["price"]),
                    "qty": _s(t["qty"]),
                    "commission": _s(t["commission"]),
                    "commissionAsset": t["commissionAsset"],
                    "tradeId": t["id"],
                }
                for t in order.trades
            ]
        return body
