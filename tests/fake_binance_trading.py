"""Test support: a fake Binance spot account for order routing (no tests in here; used
by tests/venues/test_binance.py and the live broker's tests and bench).

It speaks Binance's documented wire format: the signed REST API (``/api/v3/order``,
``openOrders``, ``account``, ``myTrades``, ``exchangeInfo``, ``ticker/price``, ``time``)
on a FakeHttpServer, and the WebSocket API's user data stream
(``userDataStream.subscribe.signature``, then ``{"subscriptionId", "event"}`` messages
with ``executionReport`` and ``outboundAccountPosition``) on a websockets server in its
own thread. Like Binance it refuses a missing or wrong API key (-2014 / -2015), a bad
HMAC signature (-1022) and a timestamp outside recvWindow (-1021; ``clock_skew_ms`` puts
the venue's clock off ours), enforces LOT_SIZE / PRICE_FILTER / NOTIONAL (-1013),
balances (-2010 insufficient balance) and a duplicate client id of an open order (-2010).

Market orders fill at once at ``prices``; a limit order fills at once when marketable,
else rests; a stop rests until ``fill``. The commission is ``fee_rate`` of what is
received (base asset on a buy, quote on a sell), as Binance charges without BNB.

The FakeHttpServer gives routes the parsed query, so the signature is checked over the
query re-encoded with ``urlencode`` (what any client sending these parameters sends).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

try:
    from fakes import FakeHttpServer, FakeRequest, FakeResponse
except ImportError:  # imported as tests.fake_binance_trading, e.g. from bench/
    from tests.fakes import FakeHttpServer, FakeRequest, FakeResponse

KEY_ENV = "FAKE_BINANCE_API_KEY"
SECRET_ENV = "FAKE_BINANCE_API_SECRET"
CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
WORKING = ("NEW", "PARTIALLY_FILLED")
ZERO = Decimal(0)

#: The symbols' exchangeInfo entries, as Binance serves them (BTCUSDT with the current
#: NOTIONAL filter, ETHUSDT with the older MIN_NOTIONAL).
EXCHANGE_SYMBOLS: dict[str, dict[str, Any]] = {
    "BTCUSDT": {
        "symbol": "BTCUSDT",
        "status": "TRADING",
        "baseAsset": "BTC",
        "baseAssetPrecision": 8,
        "quoteAsset": "USDT",
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": [
            "LIMIT",
            "LIMIT_MAKER",
            "MARKET",
            "STOP_LOSS",
            "STOP_LOSS_LIMIT",
            "TAKE_PROFIT",
            "TAKE_PROFIT_LIMIT",
        ],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01000000",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.01000000",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00010000",
                "maxQty": "9000.00000000",
                "stepSize": "0.00010000",
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "100.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": "5.00000000",
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    },
    "ETHUSDT": {
        "symbol": "ETHUSDT",
        "status": "TRADING",
        "baseAsset": "ETH",
        "baseAssetPrecision": 8,
        "quoteAsset": "USDT",
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "isSpotTradingAllowed": True,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.01000000",
                "maxPrice": "100000.00000000",
                "tickSize": "0.01000000",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00100000",
                "maxQty": "9000.00000000",
                "stepSize": "0.00100000",
            },
            {
                "filterType": "MIN_NOTIONAL",
                "minNotional": "10.00000000",
                "applyToMarket": True,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
    },
}


def _s(value: Decimal) -> str:
    return f"{value:.8f}"


def _error(code: int, message: str, status: int = 400) -> FakeResponse:
    return FakeResponse(status, {"code": code, "msg": message})


def _missing(name: str) -> FakeResponse:
    return _error(
        -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed."
    )


class FakeBinanceTrading:
    """``with FakeBinanceTrading() as fake:`` a Binance spot account on 127.0.0.1."""

    instrument = "BINANCE:BTCUSDT"

    def __init__(self, *, timeout_s: float = 1.0, fee_rate: str = "0.001") -> None:
        self.api_key = secrets.token_hex(32)
        self.api_secret = secrets.token_hex(32)
        self.env = {KEY_ENV: self.api_key, SECRET_ENV: self.api_secret}
        self.timeout_s = timeout_s
        self.fee_rate = Decimal(fee_rate)
        self.prices: dict[str, float] = {"BINANCE:BTCUSDT": 50_000.0, "BINANCE:ETHUSDT": 2_500.0}
        # asset -> [free, locked]
        self.balances: dict[str, list[Decimal]] = {
            "USDT": [Decimal(100_000), ZERO],
            "BTC": [Decimal(1), ZERO],
            "ETH": [ZERO, ZERO],
        }
        self.orders: dict[str, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []  # myTrades entries, oldest first
        self.placed = 0
        self.auth_failures = 0
        self.subscriptions = 0
        self.clock_skew_ms = 0  # the venue's clock minus the real one
        self.hang_s = 2 * timeout_s + 0.5  # how long an answer that "times out" takes
        self._lock = threading.RLock()
        self._reserved: dict[str, Decimal] = {}  # client id -> price a buy's USDT is held at
        self._next_order_id = 4_000_000
        self._next_trade_id = {symbol: 1_000 for symbol in EXCHANGE_SYMBOLS}
        self._hangs = 0
        self._failures: list[tuple[int, int, str]] = []  # (HTTP status, code, message)
        self._http = FakeHttpServer(self._route)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[ServerConnection] = set()
        self._subscribers: dict[ServerConnection, tuple[asyncio.Queue[str], int]] = {}
        self._ws_port = 0
        self._routes: dict[tuple[str, str], Callable[[dict[str, str]], FakeResponse]] = {
            ("GET", "/api/v3/time"): lambda _: FakeResponse(200, {"serverTime": self.now_ms()}),
            ("GET", "/api/v3/exchangeInfo"): self._exchange_info,
            ("GET", "/api/v3/ticker/price"): self._ticker_price,
            ("POST", "/api/v3/order"): self._new_order,
            ("DELETE", "/api/v3/order"): self._cancel_order,
            ("GET", "/api/v3/order"): self._query_order,
            ("GET", "/api/v3/openOrders"): self._open_orders,
            ("GET", "/api/v3/account"): self._account,
            ("GET", "/api/v3/myTrades"): self._my_trades,
        }
        unsigned = {"/api/v3/time", "/api/v3/exchangeInfo", "/api/v3/ticker/price"}
        self._signed = {key for key in self._routes if key[1] not in unsigned}

    # --- the uniform interface ----------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        return {
            "trading": "live",
            "rest_url": self._http.url,
            "ws_url": f"ws://127.0.0.1:{self._ws_port}/ws-api/v3",
            "key_env": KEY_ENV,
            "secret_env": SECRET_ENV,
            "recv_window_ms": 5000,
            "timeout_s": self.timeout_s,
        }

    def config_toml(self) -> str:
        """``config`` as the lines of a ``[brokers.binance]`` table in a config file."""
        return "\n".join(f"{key} = {json.dumps(value)}" for key, value in self.config.items())

    def __enter__(self) -> Self:
        self._http.__enter__()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run_ws, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(5):
            raise RuntimeError("the fake Binance WebSocket API did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(5)
        self._http.__exit__(*exc)

    def fill(
        self, client_order_id: str, qty: float | None = None, price: float | None = None
    ) -> None:
        with self._lock:
            order = self.orders[client_order_id]
            if order["status"] not in WORKING:
                raise ValueError(f"order {client_order_id} is {order['status']}, not working")
            remaining = Decimal(order["origQty"]) - Decimal(order["executedQty"])
            size = remaining if qty is None else min(Decimal(repr(qty)), remaining)
            if price is not None:
                at = Decimal(repr(price))
            elif order["type"] == "LIMIT":
                at = Decimal(order["price"])
            else:
                at = self._market_price(order["symbol"])
            self._execute(order, size, at, maker=order["type"] == "LIMIT")
            self._push_balances(order["symbol"])

    def place_elsewhere(
        self,
        instrument: str,
        side: str,
        qty: float,
        type: str = "limit",
        price: float | None = None,
    ) -> str:
        client_id = "web_" + secrets.token_hex(8)
        params = {
            "symbol": instrument.split(":", 1)[1],
            "side": side.upper(),
            "type": {"market": "MARKET", "limit": "LIMIT", "stop": "STOP_LOSS"}[type],
            "quantity": repr(qty),
            "newClientOrderId": client_id,
        }
        if type == "limit":
            params.update(price=repr(price), timeInForce="GTC")
        elif type == "stop":
            params["stopPrice"] = repr(price)
        with self._lock:
            answer = self._new_order(params)
        if answer.status != 200:
            raise ValueError(f"the fake refused the order: {answer.body}")
        return client_id

    def accept_then_time_out(self, count: int = 1) -> None:
        with self._lock:
            self._hangs += count

    def drop_stream(self) -> None:
        loop = self._loop
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            if loop is not None and connection.transport is not None:
                loop.call_soon_threadsafe(connection.transport.abort)

    def fail_next(self, code_or_status: int, message: str) -> None:
        """The next POST /api/v3/order gets this error: a Binance code (< 0, HTTP 400)
        or an HTTP status (429 and 418 with Retry-After, 5xx)."""
        if code_or_status < 0:
            status, code = 400, code_or_status
        else:  # Binance's codes for a rate limit and for an internal error
            status, code = code_or_status, -1003 if code_or_status in (418, 429) else -1001
        with self._lock:
            self._failures.append((status, code, message))

    # --- more for tests -----------------------------------------------------------------

    def now_ms(self) -> int:
        return int(time.time() * 1000) + self.clock_skew_ms

    def requests_to(self, path: str) -> list[FakeRequest]:
        return [request for request in self._http.requests if request.path == path]

    def balance(self, asset: str) -> Decimal:
        with self._lock:
            free, locked = self.balances.get(asset, [ZERO, ZERO])
            return free + locked

    # --- REST -------------------------------------------------------------------------

    def _route(self, request: FakeRequest) -> FakeResponse | None:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            return None
        body_items = parse_qsl(request.body.decode()) if request.body else []
        params = {**request.query, **dict(body_items)}
        if (request.method, request.path) in self._signed:
            refusal = self._authenticate(request, body_items)
            if refusal is not None:
                return refusal
        hang = False
        with self._lock:
            if request.method == "POST" and self._failures:
                status, code, message = self._failures.pop(0)
                headers = {"Retry-After": "7"} if status in (418, 429) else {}
                return FakeResponse(status, {"code": code, "msg": message}, headers)
            response = handler(params)
            if request.method == "POST" and self._hangs and response.status == 200:
                self._hangs -= 1
                hang = True
        if hang:
            time.sleep(self.hang_s)  # accepted; the answer comes after the client gave up
        return response

    def _authenticate(
        self, request: FakeRequest, body_items: list[tuple[str, str]]
    ) -> FakeResponse | None:
        key = request.headers.get("x-mbx-apikey")
        if not key:
            return self._refuse(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(key, self.api_key):
            return self._refuse(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        query_items = list(request.query.items())
        signature = dict(query_items + body_items).get("signature")
        if not signature:
            return self._refuse(-1102, _missing("signature").body["msg"], 400)
        # totalParams: the query string, then the body, each without the signature.
        total = urlencode([item for item in query_items if item[0] != "signature"]) + urlencode(
            [item for item in body_items if item[0] != "signature"]
        )
        if not hmac.compare_digest(signature, self._sign(total)):
            return self._refuse(-1022, "Signature for this request is not valid.", 400)
        params = dict(query_items + body_items)
        return self._check_time(params.get("timestamp"), params.get("recvWindow"))

    def _refuse(self, code: int, message: str, status: int) -> FakeResponse:
        with self._lock:
            self.auth_failures += 1
        return _error(code, message, status)

    def _check_time(self, timestamp: Any, recv_window: Any) -> FakeResponse | None:
        """Binance's rule: timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow."""
        try:
            stamp, window = int(timestamp), int(recv_window or 5000)
        except (TypeError, ValueError):
            return _missing("timestamp")
        if window > 60_000:
            return _error(-1131, "recvWindow must be less than 60000")
        server = self.now_ms()
        if not (stamp < server + 1000 and server - stamp <= window):
            return _error(-1021, "Timestamp for this request is outside of the recvWindow.")
        return None

    def _sign(self, payload: str) -> str:
        return hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()

    def _exchange_info(self, params: dict[str, str]) -> FakeResponse:
        if "symbol" in params:
            names = [params["symbol"]]
        elif "symbols" in params:
            names = json.loads(params["symbols"])
        else:
            names = list(EXCHANGE_SYMBOLS)
        if any(name not in EXCHANGE_SYMBOLS for name in names):
            return _error(-1121, "Invalid symbol.")
        return FakeResponse(
            200,
            {
                "timezone": "UTC",
                "serverTime": self.now_ms(),
                "rateLimits": [
                    {
                        "rateLimitType": "REQUEST_WEIGHT",
                        "interval": "MINUTE",
                        "intervalNum": 1,
                        "limit": 6000,
                    },
                    {
                        "rateLimitType": "ORDERS",
                        "interval": "SECOND",
                        "intervalNum": 10,
                        "limit": 100,
                    },
                ],
                "exchangeFilters": [],
                "symbols": [EXCHANGE_SYMBOLS[name] for name in names],
            },
        )

    def _ticker_price(self, params: dict[str, str]) -> FakeResponse:
        prices = [
            {"symbol": symbol, "price": _s(self._market_price(symbol))}
            for symbol in EXCHANGE_SYMBOLS
        ]
        if "symbol" in params:
            found = [item for item in prices if item["symbol"] == params["symbol"]]
            return FakeResponse(200, found[0]) if found else _error(-1121, "Invalid symbol.")
        return FakeResponse(200, prices)

    def _market_price(self, symbol: str) -> Decimal:
        return Decimal(repr(self.prices[f"BINANCE:{symbol}"]))

    def _new_order(self, params: dict[str, str]) -> FakeResponse:
        symbol = params.get("symbol", "")
        if symbol not in EXCHANGE_SYMBOLS:
            return _error(-1121, "Invalid symbol.") if symbol else _missing("symbol")
        info = EXCHANGE_SYMBOLS[symbol]
        side, kind = params.get("side"), params.get("type")
        if side not in ("BUY", "SELL"):
            return _missing("side")
        if kind not in ("MARKET", "LIMIT", "STOP_LOSS") or kind not in info["orderTypes"]:
            return _error(-1116, "Invalid orderType.")
        needed = {"MARKET": ["quantity"], "LIMIT": ["timeInForce", "quantity", "price"]}
        for name in needed.get(kind, ["quantity", "stopPrice"]):
            if not params.get(name):
                return _missing(name)
        if kind == "LIMIT" and params["timeInForce"] != "GTC":
            return _error(-1115, "Invalid timeInForce.")
        client_id = params.get("newClientOrderId") or "x-" + secrets.token_hex(10)
        if not CLIENT_ID.match(client_id):
            return _error(
                -1100,
                "Illegal characters found in parameter 'newClientOrderId';"
                " legal range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.",
            )
        numbers: dict[str, Decimal] = {}
        for name in ("quantity", "price", "stopPrice"):
            if name in params:
                value = Decimal(params[name])
                if -value.as_tuple().exponent > 8:  # type: ignore[operator]
                    return _error(-1111, f"Parameter '{name}' has too much precision.")
                numbers[name] = value
        qty = numbers["quantity"]
        limit = numbers.get("price") or numbers.get("stopPrice")
        failed = self._filter_failure(info, kind, qty, limit)
        if failed:
            return _error(-1013, f"Filter failure: {failed}")
        existing = self.orders.get(client_id)
        if existing is not None and existing["status"] in WORKING:
            return _error(-2010, "Duplicate order sent.")
        market = self._market_price(symbol)
        if kind == "STOP_LOSS" and (limit <= market if side == "BUY" else limit >= market):
            return _error(-2010, "Stop price would trigger immediately.")
        base, quote = info["baseAsset"], info["quoteAsset"]
        if side == "BUY":
            need, asset = qty * (limit if kind != "MARKET" else market), quote
        else:
            need, asset = qty, base
        if self.balances.setdefault(asset, [ZERO, ZERO])[0] < need:
            return _error(-2010, "Account has insufficient balance for requested action.")
        now = self.now_ms()
        self._next_order_id += 1
        order = {
            "symbol": symbol,
            "orderId": self._next_order_id,
            "orderListId": -1,
            "clientOrderId": client_id,
            "price": _s(numbers.get("price", ZERO)),
            "origQty": _s(qty),
            "executedQty": _s(ZERO),
            "cummulativeQuoteQty": _s(ZERO),
            "status": "NEW",
            "timeInForce": params.get("timeInForce", "GTC"),
            "type": kind,
            "side": side,
            "stopPrice": _s(numbers.get("stopPrice", ZERO)),
            "icebergQty": _s(ZERO),
            "time": now,
            "updateTime": now,
            "isWorking": kind != "STOP_LOSS",
            "workingTime": now if kind != "STOP_LOSS" else -1,
            "origQuoteOrderQty": _s(ZERO),
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }
        self.orders[client_id] = order
        self.placed += 1
        if kind != "MARKET":  # a resting order holds what it may spend
            self.balances[asset][0] -= need
            self.balances[asset][1] += need
            self._reserved[client_id] = limit if side == "BUY" else ZERO
        self._report(order, "NEW")
        marketable = kind == "MARKET" or (
            kind == "LIMIT" and (market <= limit if side == "BUY" else market >= limit)
        )
        fills = [self._execute(order, qty, market, maker=False)] if marketable else []
        self._push_balances(symbol)
        answer = {
            key: order[key] for key in order if key not in ("time", "updateTime", "isWorking")
        }
        answer |= {"transactTime": now, "fills": fills}
        if kind != "STOP_LOSS":
            answer.pop("stopPrice")
        return FakeResponse(200, answer)

    @staticmethod
    def _filter_failure(
        info: dict[str, Any], kind: str, qty: Decimal, price: Decimal | None
    ) -> str:
        filters = {item["filterType"]: item for item in info["filters"]}
        lot = filters["LOT_SIZE"]
        low, high, step = (Decimal(lot[key]) for key in ("minQty", "maxQty", "stepSize"))
        if qty < low or qty > high or (qty - low) % step:
            return "LOT_SIZE"
        if price is not None:
            rule = filters["PRICE_FILTER"]
            low, high, tick = (Decimal(rule[key]) for key in ("minPrice", "maxPrice", "tickSize"))
            if price < low or price > high or (price - low) % tick:
                return "PRICE_FILTER"
        if kind == "LIMIT" and price is not None:
            for name in ("NOTIONAL", "MIN_NOTIONAL"):
                rule = filters.get(name)
                if rule and qty * price < Decimal(rule["minNotional"]):
                    return name
                if rule and "maxNotional" in rule and qty * price > Decimal(rule["maxNotional"]):
                    return name
        return ""

    def _execute(
        self, order: dict[str, Any], qty: Decimal, price: Decimal, *, maker: bool
    ) -> dict[str, Any]:
        """One trade of ``order``: balances, the order's state, myTrades, the stream."""
        info = EXCHANGE_SYMBOLS[order["symbol"]]
        base, quote = info["baseAsset"], info["quoteAsset"]
        client_id = order["clientOrderId"]
        buy = order["side"] == "BUY"
        if client_id in self._reserved:  # release what the resting order held for this part
            held, asset = (qty * self._reserved[client_id], quote) if buy else (qty, base)
            self.balances[asset][1] -= held
            self.balances[asset][0] += held
        notional = qty * price
        if buy:
            fee, fee_asset = qty * self.fee_rate, base
            self.balances[quote][0] -= notional
            self.balances.setdefault(base, [ZERO, ZERO])[0] += qty - fee
        else:
            fee, fee_asset = notional * self.fee_rate, quote
            self.balances[base][0] -= qty
            self.balances.setdefault(quote, [ZERO, ZERO])[0] += notional - fee
        filled = Decimal(order["executedQty"]) + qty
        now = self.now_ms()
        order["executedQty"] = _s(filled)
        order["cummulativeQuoteQty"] = _s(Decimal(order["cummulativeQuoteQty"]) + notional)
        order["status"] = "FILLED" if filled >= Decimal(order["origQty"]) else "PARTIALLY_FILLED"
        order["updateTime"] = now
        if order["status"] == "FILLED":
            self._reserved.pop(client_id, None)
        trade_id = self._next_trade_id[order["symbol"]] = self._next_trade_id[order["symbol"]] + 1
        self.trades.append(
            {
                "symbol": order["symbol"],
                "id": trade_id,
                "orderId": order["orderId"],
                "orderListId": -1,
                "price": _s(price),
                "qty": _s(qty),
                "quoteQty": _s(notional),
                "commission": _s(fee),
                "commissionAsset": fee_asset,
                "time": now,
                "isBuyer": buy,
                "isMaker": maker,
                "isBestMatch": True,
            }
        )
        trade = {
            "l": _s(qty),
            "L": _s(price),
            "n": _s(fee),
            "N": fee_asset,
            "t": trade_id,
            "m": maker,
        }
        self._report(order, "TRADE", **trade)
        return {
            "price": _s(price),
            "qty": _s(qty),
            "commission": _s(fee),
            "commissionAsset": fee_asset,
            "tradeId": trade_id,
        }

    def _cancel_order(self, params: dict[str, str]) -> FakeResponse:
        order = self._find(params)
        if isinstance(order, FakeResponse):
            return order
        if order is None or order["status"] not in WORKING:
            return _error(-2011, "Unknown order sent.")
        info = EXCHANGE_SYMBOLS[order["symbol"]]
        remaining = Decimal(order["origQty"]) - Decimal(order["executedQty"])
        reserved = self._reserved.pop(order["clientOrderId"], None)
        if reserved is not None:
            buy = order["side"] == "BUY"
            held, asset = (
                (remaining * reserved, info["quoteAsset"])
                if buy
                else (remaining, info["baseAsset"])
            )
            self.balances[asset][1] -= held
            self.balances[asset][0] += held
        cancel_id = params.get("newClientOrderId") or "x-" + secrets.token_hex(10)
        now = self.now_ms()
        order["status"] = "CANCELED"
        order["updateTime"] = now
        order["isWorking"] = False
        self._report(order, "CANCELED", c=cancel_id, C=order["clientOrderId"])
        self._push_balances(order["symbol"])
        answer = {
            "symbol": order["symbol"],
            "origClientOrderId": order["clientOrderId"],
            "orderId": order["orderId"],
            "orderListId": -1,
            "clientOrderId": cancel_id,
            "transactTime": now,
            "price": order["price"],
            "origQty": order["origQty"],
            "executedQty": order["executedQty"],
            "cummulativeQuoteQty": order["cummulativeQuoteQty"],
            "status": "CANCELED",
            "timeInForce": order["timeInForce"],
            "type": order["type"],
            "side": order["side"],
            "selfTradePreventionMode": order["selfTradePreventionMode"],
        }
        if order["type"] == "STOP_LOSS":
            answer["stopPrice"] = order["stopPrice"]
        return FakeResponse(200, answer)

    def _find(self, params: dict[str, str]) -> dict[str, Any] | FakeResponse | None:
        """The order named by origClientOrderId or orderId (of ``symbol``)."""
        if not params.get("symbol"):
            return _missing("symbol")
        if "origClientOrderId" in params:
            order = self.orders.get(params["origClientOrderId"])
        elif "orderId" in params:
            order = next(
                (
                    item
                    for item in self.orders.values()
                    if str(item["orderId"]) == params["orderId"]
                ),
                None,
            )
        else:
            return _missing("orderId")
        return order if order is not None and order["symbol"] == params["symbol"] else None

    def _query_order(self, params: dict[str, str]) -> FakeResponse:
        order = self._find(params)
        if isinstance(order, FakeResponse):
            return order
        if order is None:
            return _error(-2013, "Order does not exist.")
        return FakeResponse(200, dict(order))

    def _open_orders(self, params: dict[str, str]) -> FakeResponse:
        symbol = params.get("symbol")
        if symbol is not None and symbol not in EXCHANGE_SYMBOLS:
            return _error(-1121, "Invalid symbol.")
        return FakeResponse(
            200,
            [
                dict(order)
                for order in self.orders.values()
                if order["status"] in WORKING and symbol in (None, order["symbol"])
            ],
        )

    def _account(self, params: dict[str, str]) -> FakeResponse:
        omit_zero = params.get("omitZeroBalances") == "true"
        balances = [
            {"asset": asset, "free": _s(free), "locked": _s(locked)}
            for asset, (free, locked) in self.balances.items()
            if not (omit_zero and free == 0 and locked == 0)
        ]
        return FakeResponse(
            200,
            {
                "makerCommission": 10,
                "takerCommission": 10,
                "buyerCommission": 0,
                "sellerCommission": 0,
                "commissionRates": {
                    "maker": _s(self.fee_rate),
                    "taker": _s(self.fee_rate),
                    "buyer": _s(ZERO),
                    "seller": _s(ZERO),
                },
                "canTrade": True,
                "canWithdraw": True,
                "canDeposit": True,
                "brokered": False,
                "requireSelfTradePrevention": False,
                "preventSor": False,
                "updateTime": self.now_ms(),
                "accountType": "SPOT",
                "balances": balances,
                "permissions": ["SPOT"],
                "uid": 354937868,
            },
        )

    def _my_trades(self, params: dict[str, str]) -> FakeResponse:
        symbol = params.get("symbol")
        if not symbol:
            return _missing("symbol")
        if symbol not in EXCHANGE_SYMBOLS:
            return _error(-1121, "Invalid symbol.")
        if "fromId" in params and ("startTime" in params or "endTime" in params):
            return _error(-1128, "Combination of optional parameters invalid.")
        start, end = int(params.get("startTime", 0)), int(params.get("endTime", 2**62))
        if "startTime" in params and "endTime" in params and end - start > 86_400_000:
            return _error(-1127, "More than 24 hours between startTime and endTime.")
        limit = min(int(params.get("limit", 500)), 1000)
        trades = [trade for trade in self.trades if trade["symbol"] == symbol]
        if "orderId" in params:
            trades = [trade for trade in trades if str(trade["orderId"]) == params["orderId"]]
        if "fromId" in params:
            trades = [trade for trade in trades if trade["id"] >= int(params["fromId"])][:limit]
        elif "startTime" in params:
            trades = [trade for trade in trades if start <= trade["time"] <= end][:limit]
        else:  # the most recent ones
            trades = [trade for trade in trades if trade["time"] <= end][-limit:]
        return FakeResponse(200, trades)

    # --- the user data stream ---------------------------------------------------------

    def _report(self, order: dict[str, Any], execution: str, **fields: Any) -> None:
        """Push an executionReport of ``order`` (its state now) in Binance's format."""
        filled = Decimal(order["executedQty"])
        event = {
            "e": "executionReport",
            "E": self.now_ms(),
            "s": order["symbol"],
            "c": order["clientOrderId"],
            "S": order["side"],
            "o": order["type"],
            "f": order["timeInForce"],
            "q": order["origQty"],
            "p": order["price"],
            "P": order["stopPrice"],
            "F": _s(ZERO),
            "g": -1,
            "C": "",
            "x": execution,
            "X": order["status"],
            "r": "NONE",
            "i": order["orderId"],
            "l": _s(ZERO),
            "z": _s(filled),
            "L": _s(ZERO),
            "n": "0",
            "N": None,
            "T": order["updateTime"],
            "t": -1,
            "v": 0,
            "I": 8641984,
            "w": order["status"] in WORKING and order["isWorking"],
            "m": False,
            "M": False,
            "O": order["time"],
            "Z": order["cummulativeQuoteQty"],
            "Y": _s(ZERO),
            "Q": _s(ZERO),
            "W": order["workingTime"],
            "V": order["selfTradePreventionMode"],
        }
        event.update(fields)
        if execution == "TRADE":
            event["Y"] = _s(Decimal(event["l"]) * Decimal(event["L"]))
        self._push(event)

    def _push_balances(self, symbol: str) -> None:
        info = EXCHANGE_SYMBOLS[symbol]
        now = self.now_ms()
        changed = [
            {"a": asset, "f": _s(self.balances[asset][0]), "l": _s(self.balances[asset][1])}
            for asset in (info["baseAsset"], info["quoteAsset"])
        ]
        self._push({"e": "outboundAccountPosition", "E": now, "u": now, "B": changed})

    def _push(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every subscribed connection, in order (called under the lock)."""
        loop = self._loop
        if loop is None:
            return
        for queue, subscription_id in self._subscribers.values():
            message = json.dumps({"subscriptionId": subscription_id, "event": event})
            loop.call_soon_threadsafe(queue.put_nowait, message)

    def _run_ws(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with serve(self._ws_handler, "127.0.0.1", 0) as server:
                self._ws_port = server.sockets[0].getsockname()[1]
                ready.set()
                await self._stop.wait()

        asyncio.run(main())

    async def _ws_handler(self, websocket: ServerConnection) -> None:
        queue: asyncio.Queue[str] = asyncio.Queue()
        sender = asyncio.create_task(self._send_queued(websocket, queue))
        with self._lock:
            self._connections.add(websocket)
        try:
            async for raw in websocket:
                with self._lock:
                    queue.put_nowait(json.dumps(self._ws_request(raw, websocket, queue)))
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._connections.discard(websocket)
                self._subscribers.pop(websocket, None)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    @staticmethod
    async def _send_queued(websocket: ServerConnection, queue: asyncio.Queue[str]) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await websocket.send(await queue.get())

    def _ws_request(
        self, raw: str | bytes, websocket: ServerConnection, queue: asyncio.Queue[str]
    ) -> dict[str, Any]:
        try:
            request = json.loads(raw)
            request_id, method = request.get("id"), request["method"]
            params = dict(request.get("params") or {})
        except (ValueError, KeyError, AttributeError):
            return {
                "id": None,
                "status": 400,
                "error": {"code": -1102, "msg": "Malformed request."},
            }

        def refuse(code: int, message: str, status: int = 400) -> dict[str, Any]:
            return {"id": request_id, "status": status, "error": {"code": code, "msg": message}}

        if method != "userDataStream.subscribe.signature":
            return refuse(-1020, "This operation is not supported.")
        if params.get("apiKey") != self.api_key:
            self.auth_failures += 1
            return refuse(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        signature = str(params.pop("signature", ""))
        payload = "&".join(f"{key}={value}" for key, value in sorted(params.items()))
        if not hmac.compare_digest(signature, self._sign(payload)):
            self.auth_failures += 1
            return refuse(-1022, "Signature for this request is not valid.")
        late = self._check_time(params.get("timestamp"), params.get("recvWindow"))
        if late is not None:
            return refuse(late.body["code"], late.body["msg"])
        subscription_id = self.subscriptions
        self.subscriptions += 1
        self._subscribers[websocket] = (queue, subscription_id)
        return {"id": request_id, "status": 200, "result": {"subscriptionId": subscription_id}}
