"""``OANDA:`` live order routing through OANDA's v20 REST API (FX, metals, CFDs).

Wire notes (developer.oanda.com/rest-live-v20: order, transaction, position, account):
- Every request carries ``Authorization: Bearer <token>``, the token read from the
  environment variable ``brokers.oanda.token_env`` (never logged); 401/403 is a
  VenueAuthError. Times are asked for as RFC 3339 (``Accept-Datetime-Format``).
- Orders go to ``POST /v3/accounts/{id}/orders`` with our client order id in
  ``clientExtensions.id`` (tag ``sptrader``). OANDA names any order ``@<client id>`` in a
  path, so lookup and cancel need only the client id. An order made elsewhere without
  client extensions is reported with the client id ``oanda:<order id>``, which lookup and
  cancel turn back into the plain order id: the broker can use every order the same way.
- Market orders are FOK: they fill whole in the answer (``orderFillTransaction``) or are
  cancelled in it (``orderCancelTransaction``, e.g. INSUFFICIENT_MARGIN, MARKET_HALTED),
  which ``place`` returns as a ``rejected`` order with the reason in words. A 400 answer
  (``orderRejectTransaction``) raises VenueRejected with OANDA's ``errorCode``.
- OANDA fills orders whole in practice. An ORDER_FILL for fewer units than the order
  leaves it PENDING; OANDA's order object has no filled quantity, so such an order is
  reported ``partially_filled`` with the units this venue object has seen filled.
- Stop-loss and take-profit go attached (``stopLossOnFill``/``takeProfitOnFill``) and
  become STOP_LOSS/TAKE_PROFIT orders of the trade. The broker never placed those, so
  ``open_orders`` and the stream's order updates leave them out; their fills are still
  reported (with ``client_order_id`` None), since they change the position.
- ``fills_since``: ``/transactions?from=...&type=ORDER_FILL`` answers with idrange page
  URLs; each page's id range is then fetched from ``rest_url`` (never from the host a page
  URL names, so the token goes nowhere else). OANDA serves at most 365 days per query:
  ``since_us`` None, or older, means the last 364 days.
- The transaction stream (``stream_url``) is one chunked response of JSON lines with a
  HEARTBEAT every 5 s; 20 s of silence (a read time-out) ends it as a dropped connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from sptrader.clock import format_us, rfc3339_to_us
from sptrader.config import OandaBrokerConfig
from sptrader.venues.base import (
    WORKING,
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
    VenueUnavailable,
    VenueUncertain,
    advances,
    secret,
)

log = logging.getLogger(__name__)

VENUE = "oanda"
#: The client id given to orders that have none at OANDA (made on its website).
NO_CLIENT_ID = "oanda:"
#: Silence on the transaction stream that means it is dead (heartbeats come every 5 s).
STREAM_SILENCE_S = 20.0
GET_ATTEMPTS = 3
#: OANDA's transaction queries span at most 365 days; a day's margin for clock skew.
HISTORY_US = 364 * 86_400 * 1_000_000

ORDER_TYPES = {"MARKET": "market", "LIMIT": "limit", "STOP": "stop", "MARKET_IF_TOUCHED": "mit"}
TIMES_IN_FORCE = {"gtc": "GTC", "day": "GFD"}
ORDER_STATES = {
    "PENDING": "accepted",
    "TRIGGERED": "accepted",
    "FILLED": "filled",
    "CANCELLED": "cancelled",
}
#: Transactions that create an order the broker may care about.
CREATED = {f"{kind}_ORDER": name for kind, name in ORDER_TYPES.items()}
#: ORDER_FILL reasons for those orders (the others fill a trade's stop-loss/take-profit).
FILLED_BY = {
    **{f"{kind}_ORDER": name for kind, name in ORDER_TYPES.items()},
    "MARKET_ORDER_TRADE_CLOSE": "market",
    "MARKET_ORDER_POSITION_CLOSEOUT": "market",
    "MARKET_ORDER_MARGIN_CLOSEOUT": "market",
    "MARKET_ORDER_DELAYED_TRADE_CLOSE": "market",
}

#: OANDA's reject and cancel reasons most often met, in words; others keep OANDA's text.
REASONS = {
    "INSUFFICIENT_MARGIN": "not enough margin available for this order",
    "INSUFFICIENT_LIQUIDITY": "not enough liquidity to fill the order",
    "MARKET_HALTED": "the market is closed or halted for this instrument",
    "ACCOUNT_LOCKED": "the account is locked",
    "ACCOUNT_NEW_POSITIONS_LOCKED": "the account may not open new positions",
    "ACCOUNT_ORDER_CREATION_LOCKED": "the account may not create orders",
    "ACCOUNT_ORDER_FILL_LOCKED": "the account may not fill orders",
    "BOUNDS_VIOLATION": "the price moved past the order's price bound",
    "FIFO_VIOLATION": "it would close trades out of FIFO order (US accounts)",
    "CLIENT_REQUEST": "cancelled on request",
    "TIME_IN_FORCE_EXPIRED": "its time in force ran out",
    "LINKED_TRADE_CLOSED": "the trade it belonged to was closed",
    "STOP_LOSS_ON_FILL_LOSS": "the stop-loss is on the wrong side of the fill price",
    "TAKE_PROFIT_ON_FILL_LOSS": "the take-profit is on the wrong side of the fill price",
    "UNITS_PRECISION_EXCEEDED": "the units have more decimals than the instrument allows",
    "UNITS_MINIMUM_NOT_MET": "fewer units than the instrument's minimum trade size",
    "UNITS_LIMIT_EXCEEDED": "more units than the instrument allows in one order",
    "PRICE_PRECISION_EXCEEDED": "the price has more decimals than the instrument allows",
    "POSITION_SIZE_EXCEEDED": "the position would exceed the account's size limit",
    "PENDING_ORDERS_ALLOWED_EXCEEDED": "the account has too many pending orders",
    "OPEN_TRADES_ALLOWED_EXCEEDED": "the account has too many open trades",
    "CLIENT_ORDER_ID_ALREADY_EXISTS": "an order with this client id already exists",
    "ORDER_DOESNT_EXIST": "the order is not pending (filled, cancelled, or never placed)",
    "INSTRUMENT_NOT_TRADEABLE": "the instrument cannot be traded now",
}


class OandaVenue(Venue):
    name = "oanda"
    prefix = "OANDA"
    attached_protection = True
    config: OandaBrokerConfig

    #: Transactions per idrange page asked of OANDA (its maximum is 1000).
    page_size = 1000

    def __init__(self, config: OandaBrokerConfig, **options: Any) -> None:
        super().__init__(config, **options)
        self._client: httpx.AsyncClient | None = None
        self._headers: dict[str, str] = {}
        self._currency = ""
        # EUR_USD -> the account's instrument entry (tradeUnitsPrecision, displayPrecision...)
        self._rules: dict[str, dict] = {}
        # OANDA order id -> its latest known state, and the fills seen of it (id -> units, price)
        self._orders: dict[str, VenueOrder] = {}
        self._fills: dict[str, dict[str, tuple[float, float]]] = {}
        self._not_ours: set[str] = set()  # ids of trades' stop-loss/take-profit orders

    # --- the session ------------------------------------------------------------------

    async def connect(self) -> None:
        token = secret(self.env, self.config.token_env, VENUE, "OANDA v20 API token")
        if not self.config.account_id.strip():
            raise VenueAuthError(
                VENUE,
                "set brokers.oanda.account_id to the v20 account id "
                "(e.g. 101-004-1234567-001, shown in OANDA's account settings)",
            )
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept-Datetime-Format": "RFC3339",
        }
        self._client = httpx.AsyncClient(
            base_url=self.config.rest_url.rstrip("/"),
            timeout=self.config.timeout_s,
            headers=self._headers,
        )
        try:
            summary = await self._get("/summary", "the account summary")
            self._currency = summary["account"]["currency"]
            listing = await self._get("/instruments", "the account's instruments")
        except BaseException:
            await self.close()
            raise
        self._rules = {entry["name"]: entry for entry in listing.get("instruments", [])}

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- orders -----------------------------------------------------------------------

    def check(self, request: VenueOrderRequest) -> None:
        if not self.trades(request.instrument):
            raise VenueRejected(VENUE, f"{request.instrument} is not an OANDA instrument")
        symbol = _symbol(request.instrument)
        if self._rules and symbol not in self._rules:
            raise VenueRejected(VENUE, f"this account cannot trade {symbol}")
        rules = self._rules.get(symbol, {})
        if not (math.isfinite(request.qty) and request.qty > 0):
            raise VenueRejected(
                VENUE, f"the quantity must be a positive number of units, got {request.qty}"
            )
        step = int(rules.get("tradeUnitsPrecision", 0))
        if not _has_decimals(request.qty, step):
            steps = "whole units" if step == 0 else f"steps of {Decimal(1).scaleb(-step)} units"
            raise VenueRejected(
                VENUE, f"OANDA trades {symbol} in {steps}: {request.qty:g} is not one"
            )
        minimum = float(rules.get("minimumTradeSize", 0))
        if request.qty < minimum:
            raise VenueRejected(
                VENUE, f"{symbol} trades at least {minimum:g} units at OANDA, not {request.qty:g}"
            )
        if request.type != "market" and not (request.price and request.price > 0):
            raise VenueRejected(VENUE, f"a {request.type} order needs a price")
        digits = rules.get("displayPrecision")
        for what, price in (
            ("price", request.price),
            ("stop-loss", request.sl),
            ("take-profit", request.tp),
        ):
            if price is None or (what == "price" and request.type == "market"):
                continue
            if not (math.isfinite(price) and price > 0):
                raise VenueRejected(VENUE, f"the {what} must be a positive price, got {price}")
            if digits is not None and not _has_decimals(price, int(digits)):
                raise VenueRejected(
                    VENUE,
                    f"OANDA prices {symbol} to {digits} decimals: the {what} {price!r} has more",
                )

    async def place(self, request: VenueOrderRequest) -> VenueOrder:
        self.check(request)
        what = f"the order {request.client_order_id}"
        response = await self._send(
            "POST", "/orders", what, body={"order": self._order_body(request)}
        )
        if response.status_code != 201:
            raise self._refusal(response, what, changes=True)
        answer = response.json()
        created = answer.get("orderCreateTransaction") or {}
        order = self._update(
            VenueOrder(
                client_order_id=request.client_order_id,
                venue_order_id=str(created["id"]) if "id" in created else None,
                instrument=request.instrument,
                side=request.side,
                qty=request.qty,
                type=request.type,
                status="accepted",
                price=None if request.type == "market" else request.price,
                updated_us=_time_us(created) or self.clock(),
                tif=request.tif,
            )
        )
        if "orderFillTransaction" in answer:
            order = self._apply_fill(answer["orderFillTransaction"]) or order
        if "orderCancelTransaction" in answer:
            order = self._apply_cancel(answer["orderCancelTransaction"]) or order
        return dataclasses.replace(order)

    def _order_body(self, request: VenueOrderRequest) -> dict[str, Any]:
        symbol = _symbol(request.instrument)
        rules = self._rules.get(symbol, {})
        units = _decimal_text(request.qty, int(rules.get("tradeUnitsPrecision", 0)))
        body: dict[str, Any] = {
            "type": request.type.upper(),
            "instrument": symbol,
            "units": units if request.side == "buy" else f"-{units}",
            # A market order fills whole now or not at all (OANDA's default for them).
            "timeInForce": "FOK" if request.type == "market" else TIMES_IN_FORCE[request.tif],
            "positionFill": "REDUCE_ONLY" if request.reduce_only else "DEFAULT",
            "clientExtensions": {"id": request.client_order_id, "tag": "sptrader"},
        }
        digits = rules.get("displayPrecision")
        if request.type != "market" and request.price is not None:
            body["price"] = _price_text(request.price, digits)
        if request.sl is not None:
            body["stopLossOnFill"] = {
                "price": _price_text(request.sl, digits),
                "timeInForce": "GTC",
            }
        if request.tp is not None:
            body["takeProfitOnFill"] = {
                "price": _price_text(request.tp, digits),
                "timeInForce": "GTC",
            }
        return body

    async def cancel(self, order: VenueOrder) -> VenueOrder | None:
        what = f"the cancel of {order.client_order_id}"
        path = f"{_order_path(order.client_order_id, order.venue_order_id)}/cancel"
        response = await self._send("PUT", path, what)
        if response.status_code == 404:
            code, message = _error_of(response)
            sentence = REASONS.get(code or "", message or "OANDA has no such pending order")
            raise VenueRejected(
                VENUE, f"cannot cancel {order.client_order_id}: {sentence}", code=code
            )
        if response.status_code != 200:
            raise self._refusal(response, what, changes=True)
        if order.venue_order_id is not None and order.venue_order_id not in self._orders:
            self._update(dataclasses.replace(order))
        cancelled = self._apply_cancel(response.json().get("orderCancelTransaction") or {})
        return dataclasses.replace(cancelled) if cancelled is not None else None

    async def lookup(self, client_order_id: str, instrument: str) -> VenueOrder | None:
        what = f"the order {client_order_id}"
        answer = await self._get(_order_path(client_order_id, None), what, missing_ok=True)
        if answer is None:
            return None
        wire = answer["order"]
        order = self._order_of(wire)
        if order is None:
            return None
        # The order object only points at the transactions that filled or cancelled it.
        if wire.get("state") == "FILLED" and str(wire["id"]) not in self._fills:
            filling = await self._transaction(wire.get("fillingTransactionID"), what)
            if filling is not None:
                self._apply_fill(filling)
        elif wire.get("state") == "CANCELLED":
            cancelling = await self._transaction(wire.get("cancellingTransactionID"), what)
            if cancelling is not None:
                order = _cancelled(order, cancelling)
        return dataclasses.replace(self._update(order))

    async def open_orders(self) -> list[VenueOrder]:
        answer = await self._get("/pendingOrders", "the pending orders")
        orders = (self._from_wire(wire) for wire in answer.get("orders", []))
        return [dataclasses.replace(order) for order in orders if order is not None]

    async def fills_since(self, since_us: int | None, instruments: list[str]) -> list[VenueFill]:
        # ``instruments`` is not needed: OANDA's transactions cover the whole account.
        oldest = self.clock() - HISTORY_US
        start = oldest if since_us is None else max(since_us, oldest)
        params = {"from": format_us(start), "type": "ORDER_FILL", "pageSize": self.page_size}
        listing = await self._get("/transactions", "the account's fills", params=params)
        fills: list[VenueFill] = []
        for page in listing.get("pages", []):
            query = parse_qs(urlsplit(page).query)
            span = {"from": query["from"][0], "to": query["to"][0], "type": "ORDER_FILL"}
            answer = await self._get("/transactions/idrange", "the account's fills", params=span)
            for transaction in answer.get("transactions", []):
                if transaction.get("type") == "ORDER_FILL":
                    fill = self._venue_fill(transaction)
                    if fill.ts_us >= start:
                        fills.append(fill)
        fills.sort(key=lambda fill: (fill.ts_us, int(fill.venue_fill_id)))
        return fills

    async def positions(self) -> list[VenuePosition]:
        answer = await self._get("/openPositions", "the open positions")
        positions = []
        for position in answer.get("positions", []):
            qty = float(position["long"]["units"]) + float(position["short"]["units"])
            if qty == 0:
                continue
            # A hedging account may hold both sides: the net's side gives the price.
            side = position["long"] if qty > 0 else position["short"]
            average = side.get("averagePrice")
            positions.append(
                VenuePosition(
                    f"{self.prefix}:{position['instrument']}",
                    qty,
                    float(average) if average is not None else None,
                )
            )
        return positions

    async def account(self) -> VenueAccount:
        account = (await self._get("/summary", "the account summary"))["account"]
        balance = float(account["balance"])
        return VenueAccount(
            currency=account["currency"],
            equity=float(account["NAV"]),
            cash=balance,
            buying_power=float(account["marginAvailable"]),
            balances={account["currency"]: balance},
        )

    # --- the transaction stream -------------------------------------------------------

    async def stream(self) -> AsyncIterator[VenueEvent]:
        self._session()
        url = (
            f"{self.config.stream_url.rstrip('/')}/v3/accounts/"
            f"{self._account_id()}/transactions/stream"
        )
        timeout = httpx.Timeout(
            self.config.timeout_s, read=max(STREAM_SILENCE_S, self.config.timeout_s)
        )
        try:
            async with (
                httpx.AsyncClient(timeout=timeout, headers=self._headers) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    await response.aread()
                    raise self._refusal(response, "the transaction stream", changes=False)
                yield StreamReady()
                async for line in response.aiter_lines():
                    for event in await self._stream_events(line):
                        yield event
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise VenueUnavailable(
                VENUE, f"cannot reach OANDA's transaction stream ({type(error).__name__})"
            ) from None
        except httpx.TimeoutException as error:
            raise VenueUnavailable(
                VENUE, f"the transaction stream went silent ({type(error).__name__})"
            ) from None
        except httpx.TransportError as error:
            raise VenueUnavailable(
                VENUE, f"the transaction stream dropped ({type(error).__name__})"
            ) from None

    async def _stream_events(self, line: str) -> list[VenueEvent]:
        if not line.strip():
            return []
        try:
            transaction = json.loads(line)
            kind = transaction["type"]
            if kind in CREATED:
                return self._created(transaction)
            if kind == "ORDER_FILL":
                events: list[VenueEvent] = [self._venue_fill(transaction)]
                if transaction.get("reason") in FILLED_BY and await self._known(
                    transaction["orderID"]
                ):
                    events.append(dataclasses.replace(self._apply_fill(transaction)))
                return events
            if kind == "ORDER_CANCEL" and await self._known(transaction["orderID"]):
                return [dataclasses.replace(self._apply_cancel(transaction))]
        except (ValueError, KeyError, TypeError) as error:
            log.warning(
                "OANDA: skipped a malformed stream line (%s: %s)", type(error).__name__, error
            )
        return []  # HEARTBEAT and transactions that change no order of ours

    def _created(self, transaction: dict) -> list[VenueEvent]:
        order_id = str(transaction["id"])
        known = self._orders.get(order_id)
        if known is not None:  # placed here: the answer came first
            return [dataclasses.replace(known)]
        units = float(transaction["units"])
        order = VenueOrder(
            client_order_id=_client_id(transaction, order_id),
            venue_order_id=order_id,
            instrument=f"{self.prefix}:{transaction['instrument']}",
            side="buy" if units > 0 else "sell",
            qty=abs(units),
            type=CREATED[transaction["type"]],
            status="accepted",
            price=_optional_float(transaction.get("price")),
            updated_us=_time_us(transaction),
            tif="day" if transaction.get("timeInForce") == "GFD" else "gtc",
        )
        return [dataclasses.replace(self._update(order))]

    async def _known(self, order_id: str) -> bool:
        """Whether the order is one we report (asking OANDA about one not seen yet)."""
        order_id = str(order_id)
        if order_id in self._orders:
            return True
        if order_id in self._not_ours:
            return False
        try:
            answer = await self._get(
                f"/orders/{order_id}", f"the order {order_id}", missing_ok=True
            )
        except VenueError as error:
            log.warning("OANDA: cannot look up order %s from the stream: %s", order_id, error)
            return False
        if answer is None or self._from_wire(answer["order"]) is None:
            self._not_ours.add(order_id)  # a trade's stop-loss/take-profit, or gone
            return False
        return True

    # --- order state ------------------------------------------------------------------

    def _from_wire(self, wire: dict) -> VenueOrder | None:
        """An OANDA order object, stored as ours; None for a trade's stop-loss/take-profit."""
        order = self._order_of(wire)
        return None if order is None else self._update(order)

    def _order_of(self, wire: dict) -> VenueOrder | None:
        kind = ORDER_TYPES.get(wire.get("type", ""))
        if kind is None:
            return None
        order_id = str(wire["id"])
        units = float(wire["units"])
        state = wire.get("state", "PENDING")
        return VenueOrder(
            client_order_id=_client_id(wire, order_id),
            venue_order_id=order_id,
            instrument=f"{self.prefix}:{wire['instrument']}",
            side="buy" if units > 0 else "sell",
            qty=abs(units),
            type=kind,
            status=ORDER_STATES.get(state, "accepted"),
            price=_optional_float(wire.get("price")),
            filled_qty=abs(units) if state == "FILLED" else 0.0,
            updated_us=_time_us(wire, "filledTime", "cancelledTime", "createTime"),
            tif="day" if wire.get("timeInForce") == "GFD" else "gtc",
        )

    def _update(self, order: VenueOrder) -> VenueOrder:
        """Store ``order`` unless the state known already is further along (the same
        state may be restated with more detail); the fills seen of it give its filled
        quantity and average price."""
        order_id = order.venue_order_id
        if order_id is None:
            return order
        known = self._orders.get(order_id)
        if known is not None:
            if known.status != order.status and not advances(known.status, order.status):
                return known
            order.reason = order.reason or known.reason
        fills = self._fills.get(order_id)
        if fills:
            filled = sum(abs(units) for units, _ in fills.values())
            order.filled_qty = max(order.filled_qty, filled)
            order.avg_price = sum(abs(units) * price for units, price in fills.values()) / filled
            if order.status in WORKING:
                order.status = "filled" if filled >= order.qty - 1e-9 else "partially_filled"
        self._orders[order_id] = order
        return order

    def _apply_fill(self, transaction: dict) -> VenueOrder | None:
        """Record an ORDER_FILL; the order it filled, updated (None if not known)."""
        order_id = str(transaction["orderID"])
        units = float(transaction["units"])
        self._fills.setdefault(order_id, {})[str(transaction["id"])] = (
            units,
            _fill_price(transaction),
        )
        known = self._orders.get(order_id)
        if known is None:
            return None
        return self._update(dataclasses.replace(known, updated_us=_time_us(transaction)))

    def _apply_cancel(self, transaction: dict) -> VenueOrder | None:
        known = self._orders.get(str(transaction.get("orderID", "")))
        return None if known is None else self._update(_cancelled(known, transaction))

    def _venue_fill(self, transaction: dict) -> VenueFill:
        units = float(transaction["units"])
        order_id = transaction.get("orderID")
        return VenueFill(
            venue_fill_id=str(transaction["id"]),
            venue_order_id=str(order_id) if order_id is not None else None,
            client_order_id=transaction.get("clientOrderID") or None,
            instrument=f"{self.prefix}:{transaction['instrument']}",
            side="buy" if units > 0 else "sell",
            qty=abs(units),
            price=_fill_price(transaction),
            fee=_fee(transaction),
            ts_us=_time_us(transaction),
            fee_asset=self._currency,
        )

    async def _transaction(self, transaction_id: object, what: str) -> dict | None:
        if not transaction_id:
            return None
        answer = await self._get(f"/transactions/{transaction_id}", what, missing_ok=True)
        return None if answer is None else answer.get("transaction")

    # --- HTTP -------------------------------------------------------------------------

    def _session(self) -> httpx.AsyncClient:
        if self._client is None:
            raise VenueUnavailable(VENUE, "not connected (connect() first)")
        return self._client

    def _account_id(self) -> str:
        return quote(self.config.account_id.strip(), safe="")

    async def _send(
        self,
        method: str,
        path: str,
        what: str,
        *,
        body: dict | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """One request under the account; errors say whether it may have reached OANDA
        (every method but GET changes an order: VenueUncertain then)."""
        client = self._session()
        url = f"/v3/accounts/{self._account_id()}{path}"
        try:
            return await client.request(method, url, json=body, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            # Nothing was sent: no connection was made (or none was free).
            raise VenueUnavailable(
                VENUE, f"cannot reach OANDA for {what} ({type(error).__name__})"
            ) from None
        except httpx.TransportError as error:
            if method == "GET":
                raise VenueUnavailable(
                    VENUE, f"no answer from OANDA for {what} ({type(error).__name__})"
                ) from None
            raise VenueUncertain(
                VENUE,
                f"no answer from OANDA for {what} ({type(error).__name__}): it may have been done",
            ) from None

    async def _get(
        self,
        path: str,
        what: str,
        *,
        params: Mapping[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> dict | None:
        """A GET's JSON (None for a 404 when ``missing_ok``), retried a couple of times
        when OANDA is unreachable, throttles or fails (reads change nothing)."""
        for attempt in range(1, GET_ATTEMPTS + 1):
            try:
                response = await self._send("GET", path, what, params=params)
            except VenueUnavailable:
                if attempt == GET_ATTEMPTS:
                    raise
            else:
                if response.status_code == 200:
                    return response.json()
                if response.status_code == 404 and missing_ok:
                    return None
                retryable = response.status_code == 429 or response.status_code >= 500
                if not retryable or attempt == GET_ATTEMPTS:
                    raise self._refusal(response, what, changes=False)
            await asyncio.sleep(0.25 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    def _refusal(self, response: httpx.Response, what: str, *, changes: bool) -> VenueError:
        """The error for a non-success answer, as one sentence."""
        status = response.status_code
        code, message = _error_of(response)
        detail = f" (HTTP {status}: {message})" if message else f" (HTTP {status})"
        if status == 401:
            return VenueAuthError(
                VENUE,
                f"OANDA refused the token in {self.config.token_env}{detail}; "
                "practice tokens work only with the fxpractice hosts",
            )
        if status == 403:
            return VenueAuthError(
                VENUE,
                f"OANDA refused the token in {self.config.token_env} for account "
                f"{self.config.account_id}{detail}",
            )
        if status == 429:
            return VenueUnavailable(VENUE, f"OANDA refused {what}: too many requests{detail}")
        if status >= 500:
            error = VenueUncertain if changes else VenueUnavailable
            return error(VENUE, f"OANDA failed on {what}{detail}")
        if code:
            return VenueRejected(
                VENUE, REASONS.get(code, message or code.replace("_", " ").lower()), code=code
            )
        return VenueRejected(
            VENUE, f"OANDA refused {what}: {message or 'no reason given'}", code=status
        )


# --- wire helpers ---------------------------------------------------------------------


def _symbol(instrument: str) -> str:
    return instrument.split(":", 1)[1]


def _order_path(client_order_id: str, venue_order_id: str | None) -> str:
    """``/orders/@<client id>``, or by OANDA's id for an order without a client id."""
    if client_order_id.startswith(NO_CLIENT_ID):
        return f"/orders/{quote(client_order_id[len(NO_CLIENT_ID) :], safe='')}"
    if not client_order_id and venue_order_id:
        return f"/orders/{quote(venue_order_id, safe='')}"
    return f"/orders/@{quote(client_order_id, safe='')}"


def _cancelled(order: VenueOrder, transaction: dict) -> VenueOrder:
    """``order`` after its ORDER_CANCEL: cancelled, expired, or (a market order OANDA
    could not fill) rejected, with the reason in words."""
    reason = transaction.get("reason", "")
    if reason == "CLIENT_REQUEST":
        status = "cancelled"
    elif reason == "TIME_IN_FORCE_EXPIRED":
        status = "expired"
    else:  # a FOK market order that could not fill, or OANDA's own cancel
        status = "rejected" if order.type == "market" else "cancelled"
    words = REASONS.get(reason, reason.replace("_", " ").lower())
    return dataclasses.replace(
        order,
        status=status,
        reason=f"{words} ({reason})" if reason else order.reason,
        updated_us=_time_us(transaction) or order.updated_us,
    )


def _client_id(wire: dict, order_id: str) -> str:
    return (wire.get("clientExtensions") or {}).get("id") or f"{NO_CLIENT_ID}{order_id}"


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    """(errorCode or the reject reason, errorMessage) of an error answer."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:200].strip()
    if not isinstance(body, dict):
        return None, ""
    code = body.get("errorCode")
    if code is None:
        rejected = next((v for k, v in body.items() if k.endswith("RejectTransaction")), {})
        code = rejected.get("rejectReason") if isinstance(rejected, dict) else None
    return code, str(body.get("errorMessage", ""))


def _has_decimals(value: float, digits: int) -> bool:
    """Whether ``value`` has at most ``digits`` decimals (up to float noise)."""
    return abs(value - round(value, digits)) <= 1e-9 * max(1.0, abs(value))


def _decimal_text(value: float, digits: int) -> str:
    return f"{round(value, digits):.{digits}f}"


def _price_text(price: float, digits: object) -> str:
    if digits is not None:
        return _decimal_text(price, int(str(digits)))
    return format(Decimal(repr(price)), "f")


def _optional_float(value: object) -> float | None:
    return None if value is None else float(str(value))


def _time_us(wire: dict, *fields: str) -> int:
    for field_name in fields or ("time",):
        text = wire.get(field_name)
        if text:
            return rfc3339_to_us(text, utc_only=True)
    return 0


def _fill_price(transaction: dict) -> float:
    """The fill's average price: of the trades it opened, reduced and closed (OANDA
    deprecated the fill's own ``price`` for these), else ``price``."""
    parts = [transaction.get("tradeOpened"), transaction.get("tradeReduced")]
    parts += transaction.get("tradesClosed") or []
    priced = [(abs(float(p["units"])), float(p["price"])) for p in parts if p and "price" in p]
    units = sum(size for size, _ in priced)
    if units > 0:
        return sum(size * price for size, price in priced) / units
    return float(transaction["price"])


def _fee(transaction: dict) -> float:
    """What the fill cost in the account's currency: commission and the guaranteed
    stop's fee are charged as positive numbers; financing is signed (negative = paid)."""
    commission = float(transaction.get("commission", 0) or 0)
    guarantee = float(transaction.get("guaranteedExecutionFee", 0) or 0)
    financing = float(transaction.get("financing", 0) or 0)
    return commission + guarantee - financing
