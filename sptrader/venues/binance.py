"""``BINANCE:`` spot order routing: the signed REST API (``/api/v3``) for orders and the
account, and the WebSocket API's user data stream (``userDataStream.subscribe.signature``)
for order updates and fills.

Signed requests carry ``timestamp`` and ``recvWindow`` and an HMAC-SHA256 ``signature``
of the query string, with the key in ``X-MBX-APIKEY``. A ``-1021`` (our clock is outside
the venue's window) syncs the clock with ``/api/v3/time`` and is sent once more: the venue
refused it, so nothing was placed.

Trading rules (LOT_SIZE, PRICE_FILTER, MIN_NOTIONAL / NOTIONAL) come from
``/api/v3/exchangeInfo``, loaded per symbol on first use and kept; ``check`` applies them
before anything is sent. Fill ids are ``SYMBOL:tradeId`` (Binance numbers trades per
symbol). Positions are the base-asset holdings (free + locked) of the symbols this venue
has loaded rules for (traded, looked up, or remembered in ``symbols``), one per asset;
spot holdings have no average price.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn
from urllib.parse import urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake

from sptrader.venues.base import (
    StreamReady,
    Venue,
    VenueAccount,
    VenueAuthError,
    VenueError,
    VenueEvent,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenuePosition,
    VenueRejected,
    VenueStatus,
    VenueUnavailable,
    VenueUncertain,
    secret,
)

ACCOUNT_CURRENCY = "USDT"
GET_ATTEMPTS = 3
TRADES_LIMIT = 1000
# Binance's rule for client order ids (newClientOrderId).
CLIENT_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
# A float quantity within this fraction of a step from the grid is float noise, not an
# off-grid quantity (0.1 + 0.2 is 0.30000000000000004).
GRID_TOLERANCE = Decimal("1e-6")

ORDER_TYPES = {"market": "MARKET", "limit": "LIMIT", "stop": "STOP_LOSS"}
OUR_TYPES = {"MARKET": "market", "LIMIT": "limit", "LIMIT_MAKER": "limit", "STOP_LOSS": "stop"}
STATUSES: dict[str, VenueStatus] = {
    "PENDING_NEW": "new",
    "NEW": "accepted",
    "PENDING_CANCEL": "accepted",
    "PARTIALLY_FILLED": "partially_filled",
    "FILLED": "filled",
    "CANCELED": "cancelled",
    "REJECTED": "rejected",
    "EXPIRED": "expired",
    "EXPIRED_IN_MATCH": "expired",
}
AUTH_CODES = (-1022, -2014, -2015)
CODE_TIMESTAMP = -1021
CODE_NO_SUCH_ORDER = -2013
# "Timeout waiting for response from backend server": the order's fate is unknown.
CODE_BACKEND_TIMEOUT = -1007


class _MaybeSent(Exception):
    """A transport error after the request may have left (time-out, dropped answer)."""


@dataclass(frozen=True, slots=True)
class SymbolRules:
    """One symbol's exchangeInfo: its assets, state, order types and filters."""

    symbol: str
    base: str
    quote: str
    status: str
    order_types: frozenset[str]
    filters: Mapping[str, Mapping[str, Any]]

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> SymbolRules:
        return cls(
            data["symbol"],
            data["baseAsset"],
            data["quoteAsset"],
            data.get("status", "TRADING"),
            frozenset(data.get("orderTypes", ORDER_TYPES.values())),
            {item["filterType"]: item for item in data.get("filters", [])},
        )

    def number(self, filter_type: str, key: str) -> Decimal:
        """A filter's value (0 when the filter or the key is absent: no limit)."""
        return _decimal(self.filters.get(filter_type, {}).get(key, "0"))


# --- numbers --------------------------------------------------------------------------


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return Decimal(0)


def _plain(value: Decimal) -> str:
    """A decimal as Binance takes and people read it: 0.0001, 50000 (no exponent)."""
    text = format(value.normalize(), "f")
    return text if text != "-0" else "0"


def _on_grid(value: Decimal, origin: Decimal, step: Decimal) -> Decimal | None:
    """``value`` on the grid ``origin + k * step`` (float noise removed), or None."""
    if step <= 0:
        return value
    steps = (value - origin) / step
    nearest = steps.to_integral_value()
    if abs(steps - nearest) > GRID_TOLERANCE:
        return None
    return origin + nearest * step


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


# --- the venue ------------------------------------------------------------------------


class BinanceVenue(Venue):
    name = "binance"
    prefix = "BINANCE"
    attached_protection = False

    def __init__(self, config: Any, **options: Any) -> None:
        super().__init__(config, **options)
        self._http: httpx.AsyncClient | None = None
        self._key = ""
        self._secret = ""
        self._offset_ms = 0  # the venue's clock minus ours
        self._rules: dict[str, SymbolRules] = {}
        # orderId -> client order id, from every answer and stream event seen: myTrades
        # has no client id.
        self._client_ids: dict[str, str] = {}
        # asset -> free + locked, from the last account answer and the stream's updates.
        self._balances: dict[str, float] | None = None
        self._request_id = 0

    # --- the session ------------------------------------------------------------------

    async def connect(self) -> None:
        self._credentials()
        if self._http is None:
            self._http = httpx.AsyncClient(
                base_url=self.config.rest_url, timeout=self.config.timeout_s
            )
        await self._sync_clock()
        account = await self._request("GET", "/api/v3/account", {"omitZeroBalances": "true"})
        if account.get("canTrade") is False:
            raise VenueAuthError(self.name, "the account may not trade now (canTrade is false)")
        self._keep_balances(account)
        await self._load_known_rules()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def _credentials(self) -> None:
        if not self._key:
            self._key = secret(self.env, self.config.key_env, self.name, "Binance API key")
        if not self._secret:
            self._secret = secret(self.env, self.config.secret_env, self.name, "Binance API secret")

    # --- orders -----------------------------------------------------------------------

    def check(self, request: VenueOrderRequest) -> None:
        """The venue's rules, as far as they are loaded (``place`` loads them first)."""
        rules = self._rules.get(self._symbol(request.instrument))
        if rules is not None:
            self._order_params(request, rules)

    async def place(self, request: VenueOrderRequest) -> VenueOrder:
        rules = await self._rules_for(request.instrument)
        params = self._order_params(request, rules)
        try:
            answer = await self._request("POST", "/api/v3/order", params)
        except VenueRejected as error:
            raise self._order_rejection(error, request, rules) from None
        return self._order(answer)

    async def cancel(self, order: VenueOrder) -> VenueOrder | None:
        params = {
            "symbol": self._symbol(order.instrument),
            "origClientOrderId": order.client_order_id,
        }
        try:
            answer = await self._request("DELETE", "/api/v3/order", params)
        except VenueRejected as error:
            if error.code == -2011:
                raise VenueRejected(
                    self.name,
                    f"order {order.client_order_id} is not open at Binance"
                    " (already filled, cancelled or never placed)",
                    code=error.code,
                ) from None
            raise
        return self._order(answer)

    async def lookup(self, client_order_id: str, instrument: str) -> VenueOrder | None:
        params = {"symbol": self._symbol(instrument), "origClientOrderId": client_order_id}
        try:
            answer = await self._request("GET", "/api/v3/order", params)
        except VenueRejected as error:
            if error.code == CODE_NO_SUCH_ORDER:
                return None
            raise
        return self._order(answer)

    async def open_orders(self) -> list[VenueOrder]:
        answer = await self._request("GET", "/api/v3/openOrders", {})
        return [self._order(item) for item in answer]

    async def fills_since(self, since_us: int | None, instruments: list[str]) -> list[VenueFill]:
        fills: list[VenueFill] = []
        for instrument in dict.fromkeys(name for name in instruments if self.trades(name)):
            symbol = self._symbol(instrument)
            for trade in await self._trades(symbol, since_us):
                fills.append(self._trade_fill(symbol, trade))
        fills.sort(key=lambda fill: fill.ts_us)  # stable: each symbol's stay in trade id order
        return fills

    async def _trades(self, symbol: str, since_us: int | None) -> list[dict[str, Any]]:
        """myTrades of one symbol from ``since_us`` on, oldest first. The first page is
        by time (or from trade id 0); later pages go on by trade id (Binance takes no
        fromId with startTime), until a page is short."""
        params: dict[str, Any] = {"symbol": symbol, "limit": TRADES_LIMIT}
        if since_us is None:
            params["fromId"] = 0
        else:
            params["startTime"] = since_us // 1000
        trades: list[dict[str, Any]] = list(await self._request("GET", "/api/v3/myTrades", params))
        if not trades and since_us is not None:
            # A window by time may be bounded: the most recent trades cover the rest.
            recent = await self._request("GET", "/api/v3/myTrades", {"symbol": symbol})
            return [trade for trade in recent if trade["time"] * 1000 >= since_us]
        more = since_us is not None or len(trades) >= TRADES_LIMIT
        while trades and more:
            params = {"symbol": symbol, "fromId": trades[-1]["id"] + 1, "limit": TRADES_LIMIT}
            page = list(await self._request("GET", "/api/v3/myTrades", params))
            trades.extend(page)
            more = len(page) >= TRADES_LIMIT
        if since_us is not None:
            trades = [trade for trade in trades if trade["time"] * 1000 >= since_us]
        return trades

    async def positions(self) -> list[VenuePosition]:
        await self._load_known_rules()
        account = await self._request("GET", "/api/v3/account", {"omitZeroBalances": "true"})
        return self._positions(self._keep_balances(account))

    async def account(self) -> VenueAccount:
        """USDT cash plus every other holding at its last XUSDT price (/ticker/price);
        assets without a USDT market are left out of the equity."""
        account = await self._request("GET", "/api/v3/account", {"omitZeroBalances": "true"})
        balances = self._keep_balances(account)
        prices = {
            item["symbol"]: _float(item["price"])
            for item in await self._request("GET", "/api/v3/ticker/price", {}, signed=False)
        }
        cash = balances.get(ACCOUNT_CURRENCY, 0.0)
        equity = cash + sum(
            qty * prices.get(asset + ACCOUNT_CURRENCY, 0.0)
            for asset, qty in balances.items()
            if asset != ACCOUNT_CURRENCY
        )
        free = sum(
            _float(item["free"])
            for item in account.get("balances", [])
            if item["asset"] == ACCOUNT_CURRENCY
        )
        return VenueAccount(ACCOUNT_CURRENCY, equity, cash, buying_power=free, balances=balances)

    # --- the user data stream ---------------------------------------------------------

    async def stream(self) -> AsyncIterator[VenueEvent]:
        self._credentials()
        try:
            websocket = await connect(
                self.config.ws_url, open_timeout=self.config.timeout_s, max_size=2**22
            )
        except (OSError, InvalidHandshake, TimeoutError) as error:
            raise VenueUnavailable(
                self.name, f"cannot open the user data stream at {self.config.ws_url} ({error})"
            ) from error
        async with websocket:
            try:
                await self._subscribe(websocket)
            except ConnectionClosed as error:
                raise VenueUnavailable(
                    self.name, f"the user data stream closed while subscribing ({error})"
                ) from error
            yield StreamReady()
            try:
                async for raw in websocket:
                    events = self._stream_events(raw)
                    if events is None:
                        return
                    for event in events:
                        yield event
            except ConnectionClosedOK:
                return
            except ConnectionClosed as error:
                raise VenueUnavailable(
                    self.name, f"the user data stream dropped ({error})"
                ) from error

    async def _subscribe(self, websocket: ClientConnection) -> None:
        """userDataStream.subscribe.signature; a -1021 syncs the clock and asks again."""
        for attempt in range(2):
            params: dict[str, Any] = {
                "apiKey": self._key,
                "recvWindow": self.config.recv_window_ms,
                "timestamp": self._now_ms(),
            }
            payload = "&".join(f"{key}={value}" for key, value in sorted(params.items()))
            params["signature"] = self._sign(payload)
            self._request_id += 1
            request_id = f"sptrader-{self._request_id}"
            message = {"id": request_id, "method": "userDataStream.subscribe.signature"}
            await websocket.send(json.dumps({**message, "params": params}))
            answer = await self._ws_answer(websocket, request_id)
            if answer.get("status") == 200:
                return
            error = answer.get("error") or {}
            code, text = error.get("code"), error.get("msg", "the subscription was refused")
            if code == CODE_TIMESTAMP and attempt == 0 and self._http is not None:
                await self._sync_clock()
                continue
            error = self._error(code, text)
            if isinstance(error, VenueUnavailable):
                raise error
            raise VenueUnavailable(
                self.name, f"the user data stream refused the subscription: {error.sentence}", code
            )

    async def _ws_answer(self, websocket: ClientConnection, request_id: str) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.config.timeout_s):
                async for raw in websocket:
                    with contextlib.suppress(ValueError):
                        message = json.loads(raw)
                        if isinstance(message, dict) and message.get("id") == request_id:
                            return message
        except (TimeoutError, ConnectionClosed) as error:
            raise VenueUnavailable(
                self.name, f"the user data stream did not answer the subscription ({error!r})"
            ) from error
        raise VenueUnavailable(self.name, "the user data stream closed before subscribing")

    def _stream_events(self, raw: str | bytes) -> list[VenueEvent] | None:
        """What one stream message says (None: the stream has ended)."""
        try:
            message = json.loads(raw)
            event = message["event"]
            kind = event["e"]
        except (ValueError, KeyError, TypeError):
            return []  # an answer to a request, or nothing we follow
        if kind in ("eventStreamTerminated", "serverShutdown"):
            return None
        try:
            if kind == "executionReport":
                return self._report(event)
            if kind == "outboundAccountPosition" and self._balances is not None:
                for item in event["B"]:
                    self._balances[item["a"]] = _float(item["f"]) + _float(item["l"])
                return [self._positions(self._balances)]
        except (KeyError, TypeError, ValueError):
            pass  # a malformed event: the broker's reconcile covers it
        return []

    def _report(self, event: Mapping[str, Any]) -> list[VenueEvent]:
        """An executionReport: the order's state, and for a TRADE the fill first."""
        symbol = event["s"]
        # A cancel's report carries the cancel request's id in c, the order's in C.
        client_id = event.get("C") or event["c"]
        order_id = str(event["i"])
        self._client_ids[order_id] = client_id
        binance_type = event["o"]
        filled = _float(event["z"])
        quote = _float(event.get("Z"))
        status = STATUSES.get(event["X"], "accepted")
        order = VenueOrder(
            client_order_id=client_id,
            venue_order_id=order_id,
            instrument=f"{self.prefix}:{symbol}",
            side=event["S"].lower(),
            qty=_float(event["q"]),
            type=OUR_TYPES.get(binance_type, binance_type.lower()),
            status=status,
            price=self._order_price(binance_type, event.get("p"), event.get("P")),
            filled_qty=filled,
            avg_price=quote / filled if filled > 0 and quote > 0 else None,
            updated_us=int(event.get("E") or event.get("T") or 0) * 1000,
            reason=self._reason(event["X"], event.get("r")),
            tif=str(event.get("f") or "GTC").lower(),
        )
        if event.get("x") != "TRADE":
            return [order]
        fill = VenueFill(
            venue_fill_id=f"{symbol}:{event['t']}",
            venue_order_id=order_id,
            client_order_id=client_id,
            instrument=order.instrument,
            side=order.side,
            qty=_float(event["l"]),
            price=_float(event["L"]),
            fee=self._fee_in_quote(symbol, _float(event.get("n")), event.get("N"), event["L"]),
            ts_us=int(event["T"]) * 1000,
            fee_asset=event.get("N") or "",
        )
        return [fill, order]

    # --- mapping ----------------------------------------------------------------------

    def _symbol(self, instrument: str) -> str:
        if not self.trades(instrument):
            raise VenueRejected(self.name, f"{instrument} is not a Binance instrument")
        return instrument.split(":", 1)[1].upper()

    def _order(self, data: Mapping[str, Any]) -> VenueOrder:
        """An order answer (POST, DELETE, GET /order, openOrders) as a VenueOrder."""
        # DELETE answers carry the order's id in origClientOrderId (clientOrderId is the
        # cancel request's own).
        client_id = data.get("origClientOrderId") or data["clientOrderId"]
        order_id = str(data["orderId"])
        self._client_ids[order_id] = client_id
        binance_type = data["type"]
        filled = _float(data.get("executedQty"))
        quote = _float(data.get("cummulativeQuoteQty"))
        updated_ms = data.get("updateTime") or data.get("transactTime") or data.get("time") or 0
        return VenueOrder(
            client_order_id=client_id,
            venue_order_id=order_id,
            instrument=f"{self.prefix}:{data['symbol']}",
            side=data["side"].lower(),
            qty=_float(data["origQty"]),
            type=OUR_TYPES.get(binance_type, binance_type.lower()),
            status=STATUSES.get(data["status"], "accepted"),
            price=self._order_price(binance_type, data.get("price"), data.get("stopPrice")),
            filled_qty=filled,
            avg_price=quote / filled if filled > 0 and quote > 0 else None,
            updated_us=int(updated_ms) * 1000,
            reason=self._reason(data["status"], None),
            tif=str(data.get("timeInForce") or "GTC").lower(),
        )

    @staticmethod
    def _order_price(binance_type: str, price: Any, stop_price: Any) -> float | None:
        """Our order's price: the trigger of a stop (market) order, else the limit."""
        value = _float(stop_price if binance_type == "STOP_LOSS" else price)
        return value if value > 0 else None

    @staticmethod
    def _reason(status: str, reject_reason: Any) -> str:
        if status == "REJECTED":
            detail = str(reject_reason or "").replace("_", " ").lower()
            return f"Binance rejected it ({detail})" if detail and detail != "none" else ""
        if status == "EXPIRED_IN_MATCH":
            return "expired by Binance's self-trade prevention"
        if status == "EXPIRED":
            return "Binance expired it (no more liquidity, or the venue cancelled it)"
        return ""

    def _fee_in_quote(self, symbol: str, fee: float, asset: str | None, price: Any) -> float:
        """A commission in the symbol's quote currency, as the ledger books fees: a buy's
        commission taken in the base asset (BTC) is worth qty x price. One paid in a third
        asset (BNB) is kept as its amount (``fee_asset`` says which)."""
        rules = self._rules.get(symbol)
        if rules is not None and asset == rules.base:
            return fee * _float(price)
        return fee

    def _trade_fill(self, symbol: str, trade: Mapping[str, Any]) -> VenueFill:
        order_id = str(trade["orderId"])
        return VenueFill(
            venue_fill_id=f"{symbol}:{trade['id']}",
            venue_order_id=order_id,
            client_order_id=self._client_ids.get(order_id),
            instrument=f"{self.prefix}:{symbol}",
            side="buy" if trade["isBuyer"] else "sell",
            qty=_float(trade["qty"]),
            price=_float(trade["price"]),
            fee=self._fee_in_quote(
                symbol, _float(trade["commission"]), trade.get("commissionAsset"), trade["price"]
            ),
            ts_us=int(trade["time"]) * 1000,
            fee_asset=trade.get("commissionAsset") or "",
        )

    def _keep_balances(self, account: Mapping[str, Any]) -> dict[str, float]:
        balances = {
            item["asset"]: _float(item["free"]) + _float(item["locked"])
            for item in account.get("balances", [])
        }
        self._balances = {asset: qty for asset, qty in balances.items() if qty}
        return dict(self._balances)

    def _positions(self, balances: Mapping[str, float]) -> list[VenuePosition]:
        """One position per base asset of the known symbols (USDT markets first)."""
        by_base: dict[str, str] = {}
        for symbol, rules in sorted(
            self._rules.items(), key=lambda item: (item[1].quote != ACCOUNT_CURRENCY, item[0])
        ):
            by_base.setdefault(rules.base, symbol)
        return [
            VenuePosition(f"{self.prefix}:{symbol}", balances[base])
            for base, symbol in by_base.items()
            if balances.get(base)
        ]

    # --- the trading rules ------------------------------------------------------------

    async def _rules_for(self, instrument: str) -> SymbolRules:
        symbol = self._symbol(instrument)
        rules = self._rules.get(symbol)
        if rules is not None:
            return rules
        try:
            answer = await self._request(
                "GET", "/api/v3/exchangeInfo", {"symbol": symbol}, signed=False
            )
        except VenueRejected as error:
            if error.code == -1121:
                raise VenueRejected(
                    self.name, f"{instrument} is not a Binance spot symbol", code=error.code
                ) from None
            raise
        found = [item for item in answer.get("symbols", []) if item.get("symbol") == symbol]
        if not found:
            raise VenueRejected(self.name, f"{instrument} is not a Binance spot symbol")
        rules = self._rules[symbol] = SymbolRules.parse(found[0])
        self.symbols[instrument] = symbol
        return rules

    async def _load_known_rules(self) -> None:
        """Rules of the instruments remembered in ``symbols`` (their positions are ours);
        one Binance no longer lists is skipped."""
        for instrument in [name for name in list(self.symbols) if self.trades(name)]:
            with contextlib.suppress(VenueRejected):
                await self._rules_for(instrument)

    def _order_params(self, request: VenueOrderRequest, rules: SymbolRules) -> dict[str, Any]:
        """The POST /api/v3/order parameters, after the venue's rules (VenueRejected)."""
        reject = self._reject
        binance_type = ORDER_TYPES.get(request.type)
        if binance_type is None:
            reject(f"Binance spot takes no {request.type} orders here")
        if not CLIENT_ID.match(request.client_order_id):
            reject(
                f"client order id {request.client_order_id!r} is not one Binance takes"
                " (1 to 36 of A-Z a-z 0-9 . : / _ -)"
            )
        if rules.status != "TRADING":
            reject(f"{rules.symbol} is not trading now (status {rules.status})")
        if binance_type not in rules.order_types:
            reject(f"{rules.symbol} takes no {binance_type} orders")
        if request.type == "limit" and request.tif != "gtc":
            reject("Binance spot has no day orders: send the limit order as gtc")
        params: dict[str, Any] = {
            "symbol": rules.symbol,
            "side": request.side.upper(),
            "type": binance_type,
            "quantity": _plain(self._checked_qty(request, rules)),
            "newClientOrderId": request.client_order_id,
            "newOrderRespType": "FULL",
        }
        if request.type == "market":
            return params
        if request.price is None or not request.price > 0:
            reject(f"a {request.type} order needs a price above 0")
        price = self._checked_price(_decimal(request.price), rules)
        if request.type == "limit":
            self._check_notional(_decimal(params["quantity"]) * price, rules)
            params.update(timeInForce="GTC", price=_plain(price))
        else:
            params["stopPrice"] = _plain(price)
        return params

    def _reject(self, message: str, code: str | None = None) -> NoReturn:
        raise VenueRejected(self.name, message, code=code)

    def _checked_qty(self, request: VenueOrderRequest, rules: SymbolRules) -> Decimal:
        qty = _decimal(request.qty)
        if qty <= 0:
            self._reject(f"the quantity must be above 0, got {_plain(qty)}")
        filters = ["LOT_SIZE"] + (["MARKET_LOT_SIZE"] if request.type == "market" else [])
        for name in filters:
            low, high = rules.number(name, "minQty"), rules.number(name, "maxQty")
            step = rules.number(name, "stepSize")
            shown = f"{_plain(qty)} {rules.base}"
            if qty < low:
                self._reject(f"{shown} is below the minimum quantity {_plain(low)}", name)
            if high > 0 and qty > high:
                self._reject(f"{shown} is above the maximum quantity {_plain(high)}", name)
            snapped = _on_grid(qty, low, step)
            if snapped is None:
                self._reject(f"{_plain(qty)} is not a multiple of the step {_plain(step)}", name)
            qty = snapped
        return qty

    def _checked_price(self, price: Decimal, rules: SymbolRules) -> Decimal:
        low = rules.number("PRICE_FILTER", "minPrice")
        high = rules.number("PRICE_FILTER", "maxPrice")
        tick = rules.number("PRICE_FILTER", "tickSize")
        shown = f"price {_plain(price)}"
        if low > 0 and price < low:
            self._reject(f"{shown} is below the minimum price {_plain(low)}", "PRICE_FILTER")
        if high > 0 and price > high:
            self._reject(f"{shown} is above the maximum price {_plain(high)}", "PRICE_FILTER")
        snapped = _on_grid(price, low, tick)
        if snapped is None:
            self._reject(
                f"{shown} is not a multiple of the tick size {_plain(tick)}", "PRICE_FILTER"
            )
        return snapped

    def _check_notional(self, notional: Decimal, rules: SymbolRules) -> None:
        """MIN_NOTIONAL / NOTIONAL of a limit order (Binance values market and stop
        orders at its own average price, which we do not have: it checks those itself)."""
        for name in ("NOTIONAL", "MIN_NOTIONAL"):
            if name not in rules.filters:
                continue
            low, high = rules.number(name, "minNotional"), rules.number(name, "maxNotional")
            value = f"the order's value {_plain(notional)} {rules.quote}"
            if notional < low:
                self._reject(f"{value} is below the minimum {_plain(low)} {rules.quote}", name)
            if high > 0 and notional > high:
                self._reject(f"{value} is above the maximum {_plain(high)} {rules.quote}", name)

    def _order_rejection(
        self, error: VenueRejected, request: VenueOrderRequest, rules: SymbolRules
    ) -> VenueError:
        """A refused order in plain words where Binance's text is terse."""
        text = error.sentence.lower()
        if error.code == -2010 and "insufficient balance" in text:
            qty = _plain(_decimal(request.qty))
            return VenueRejected(
                self.name, f"insufficient balance for {qty} {rules.base}", code=error.code
            )
        if error.code == -2010 and "duplicate order" in text:
            return VenueRejected(
                self.name,
                f"an open order already has the client id {request.client_order_id}",
                code=error.code,
            )
        return error

    # --- signed REST ------------------------------------------------------------------

    def _now_ms(self) -> int:
        return self.clock() // 1000 + self._offset_ms

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret.encode(), payload.encode(), hashlib.sha256).hexdigest()

    def _query(self, params: Mapping[str, Any], signed: bool) -> str:
        items = [(key, value) for key, value in params.items() if value is not None]
        if signed:
            items += [("recvWindow", self.config.recv_window_ms), ("timestamp", self._now_ms())]
        query = urlencode(items)
        if signed:
            query += "&signature=" + self._sign(query)
        return query

    async def _sync_clock(self) -> None:
        before = self.clock()
        answer = await self._request("GET", "/api/v3/time", {}, signed=False)
        after = self.clock()
        self._offset_ms = int(answer["serverTime"]) - (before + after) // 2000

    async def _request(
        self, method: str, path: str, params: Mapping[str, Any], *, signed: bool = True
    ) -> Any:
        """One REST call's JSON answer. Reads are tried up to GET_ATTEMPTS times; a request
        that changes orders is sent once (VenueUncertain when its fate is unknown), and
        again only after a -1021, which Binance refused before doing anything."""
        if self._http is None:
            raise VenueUnavailable(self.name, "not connected (connect first)")
        attempts = GET_ATTEMPTS if method == "GET" else 1
        synced = False
        attempt = 1
        while True:
            try:
                response = await self._send(method, path, params, signed)
                data, code = self._answer(response, method, path)
            except _MaybeSent as error:
                if method != "GET":
                    raise VenueUncertain(
                        self.name, f"no answer to {method} {path} ({error}): it may have been done"
                    ) from error
                if attempt >= attempts:
                    raise VenueUnavailable(self.name, f"no answer to {path} ({error})") from error
            except VenueUnavailable:
                if attempt >= attempts:
                    raise
            else:
                if code is None:
                    return data
                if code == CODE_TIMESTAMP and signed and not synced:
                    synced = True
                    await self._sync_clock()
                    continue
                if code != "retry" or attempt >= attempts:
                    raise self._error(code, data.get("msg", ""), response=response)
            await asyncio.sleep(0.2 * attempt)
            attempt += 1

    async def _send(
        self, method: str, path: str, params: Mapping[str, Any], signed: bool
    ) -> httpx.Response:
        assert self._http is not None
        if signed:
            self._credentials()
        url = f"{path}?{self._query(params, signed)}"
        headers = {"X-MBX-APIKEY": self._key} if signed else {}
        try:
            return await self._http.request(method, url, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            # Nothing was sent (a pool time-out is a wait for a free connection).
            raise VenueUnavailable(
                self.name, f"cannot reach {self.config.rest_url} ({type(error).__name__})"
            ) from error
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as error:
            raise _MaybeSent(type(error).__name__) from error

    def _answer(
        self, response: httpx.Response, method: str, path: str
    ) -> tuple[Any, int | str | None]:
        """(JSON, None) for a success, else (the error body, its code or "retry")."""
        try:
            data = response.json()
        except ValueError:
            data = {"msg": response.text[:200] or response.reason_phrase}
        if response.is_success:
            return data, None
        if not isinstance(data, dict):
            data = {"msg": str(data)[:200]}
        if response.status_code in (418, 429):
            return data, response.status_code
        if response.status_code >= 500 or data.get("code") == CODE_BACKEND_TIMEOUT:
            if method != "GET":
                raise VenueUncertain(
                    self.name,
                    f"{method} {path} answered HTTP {response.status_code}:"
                    " Binance says its fate is unknown",
                )
            return data, "retry"
        return data, data.get("code", response.status_code)

    def _error(
        self, code: Any, message: str, *, response: httpx.Response | None = None
    ) -> VenueError:
        """A Binance error code as the one sentence the broker shows."""
        if code in (418, 429) and response is not None:
            wait = response.headers.get("Retry-After", "?")
            what = "this IP is banned for now" if code == 418 else "too many requests"
            return VenueUnavailable(self.name, f"{what}: retry after {wait} s", code=code)
        if code == -1022:
            return VenueAuthError(
                self.name,
                f"the request's signature was refused: check the secret in {self.config.secret_env}",
                code=code,
            )
        if code in AUTH_CODES:
            return VenueAuthError(
                self.name,
                f"the API key was refused ({message.rstrip('.')}): check {self.config.key_env}",
                code=code,
            )
        if code == CODE_TIMESTAMP:
            return VenueRejected(
                self.name,
                "the request's time is outside recvWindow even after syncing the clock",
                code=code,
            )
        if code == CODE_NO_SUCH_ORDER:
            return VenueRejected(self.name, "Binance has no such order", code=code)
        if code == "retry":
            return VenueUnavailable(self.name, message or "Binance is unavailable")
        return VenueRejected(self.name, message.rstrip(".") or "refused", code=code)
