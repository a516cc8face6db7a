"""A fake OANDA v20 trading API for tests and benchmarks (test support, no tests here):
``FakeOandaTrading``, the uniform ``Fake<Name>Trading`` interface of the venue fakes.

Two ``tests.fakes.FakeHttpServer``s play OANDA's two hosts: ``rest`` (orders, pending
orders, open positions, the account summary and instruments, transactions by time, id
range and id) and ``streaming`` (the transaction stream: JSON lines, a HEARTBEAT every
``heartbeat_s``). Field names and answers follow OANDA's documentation (order, transaction,
position and account endpoints): 201 with orderCreateTransaction plus orderFillTransaction
or orderCancelTransaction, 400 with orderRejectTransaction, errorCode and errorMessage,
404 ORDER_DOESNT_EXIST for cancelling an order that is not pending, 401 for a bad token.

Like the real service, every request needs the bearer token (401, counted in
``auth_failures``), orders are found by id or by ``@<client id>``, transaction ids
increase by one, market orders are FOK (filled whole at ``prices`` or cancelled with
INSUFFICIENT_MARGIN), marketable limit orders fill at once, others rest, and fills open,
reduce and close trades first in, first out (attached stop-loss/take-profit become
STOP_LOSS/TAKE_PROFIT orders of the opened trade).

Simplified: every instrument's quote currency is the account's (USD), so P&L needs no
conversion; no financing; margin used is units x price x marginRate. ``fill(qty)`` of
part of an order leaves it PENDING (OANDA's order object has no filled quantity).
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import unquote

try:
    from fake_oanda import ACCOUNT_ID, INSTRUMENTS, TOKEN, TOKEN_ENV
    from fakes import FakeHttpServer, FakeRequest, FakeResponse
except ImportError:  # imported as tests.fake_oanda_trading, e.g. from bench/
    from tests.fake_oanda import ACCOUNT_ID, INSTRUMENTS, TOKEN, TOKEN_ENV
    from tests.fakes import FakeHttpServer, FakeRequest, FakeResponse

from sptrader.clock import now_us, rfc3339_to_us

INSTRUMENT = "OANDA:EUR_USD"
USER_ID = 1234567
#: (tradeUnitsPrecision, minimumTradeSize) per instrument; FX trades in whole units.
TRADE_UNITS = {
    "EUR_USD": (0, "1"),
    "USD_JPY": (0, "1"),
    "XAU_USD": (0, "1"),
    "SPX500_USD": (1, "0.1"),
}
RULES = {
    entry["name"]: {
        **entry,
        "tradeUnitsPrecision": TRADE_UNITS[entry["name"]][0],
        "minimumTradeSize": TRADE_UNITS[entry["name"]][1],
        "maximumOrderUnits": "100000000",
        "maximumPositionSize": "0",
        "minimumTrailingStopDistance": "0.00050",
    }
    for entry in INSTRUMENTS
}
ORDER_TRANSACTIONS = {"MARKET": "MARKET_ORDER", "LIMIT": "LIMIT_ORDER", "STOP": "STOP_ORDER"}
PROTECTION = {"stopLossOnFill": ("STOP_LOSS", "STOP_LOSS_ORDER"), "takeProfitOnFill": ("TAKE_PROFIT", "TAKE_PROFIT_ORDER")}  # fmt: skip

_ACCOUNT = re.compile(r"^/v3/accounts/([^/]+)(/.*)$")
_ORDER = re.compile(r"^/orders/([^/]+)$")
_CANCEL = re.compile(r"^/orders/([^/]+)/cancel$")
_TRANSACTION = re.compile(r"^/transactions/(\d+)$")


class FakeOandaTrading:
    instrument = INSTRUMENT

    def __init__(
        self, *, timeout_s: float = 0.5, balance: float = 100_000.0, heartbeat_s: float = 0.2
    ) -> None:
        self.prices: dict[str, float] = {
            "OANDA:EUR_USD": 1.1,
            "OANDA:USD_JPY": 150.0,
            "OANDA:XAU_USD": 2000.0,
            "OANDA:SPX500_USD": 5000.0,
        }
        self.orders: dict[str, dict] = {}  # client id -> the order as OANDA shows it
        self.placed = 0
        self.auth_failures = 0
        self.balance = balance
        #: Commission charged per fill, in the account's currency (0: OANDA's spread pricing).
        self.commission = 0.0
        self.heartbeat_s = heartbeat_s
        self.transactions: list[dict] = []
        self._timeout_s = timeout_s
        self._lock = threading.RLock()
        self._by_id: dict[str, dict] = {}  # OANDA order id -> order
        self._filled: dict[str, float] = {}  # OANDA order id -> units filled so far
        self._trades: dict[str, list[dict]] = {}  # EUR_USD -> open trades, oldest first
        self._last_id = 100
        self._streams: list[queue.Queue[str | None]] = []
        self._hang = 0
        self._fail: tuple[int | str, str] | None = None
        self._elsewhere = 0
        self.rest = FakeHttpServer(self._rest_route)
        self.streaming = FakeHttpServer(self._stream_route)
        self.config: dict[str, Any] = {
            "trading": "live",
            "rest_url": self.rest.url,
            "stream_url": self.streaming.url,
            "token_env": TOKEN_ENV,
            "account_id": ACCOUNT_ID,
            "timeout_s": timeout_s,
        }
        self.env: dict[str, str] = {TOKEN_ENV: TOKEN}

    def __enter__(self) -> Self:
        self.rest.__enter__()
        self.streaming.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop_stream()
        self.streaming.__exit__(*exc)
        self.rest.__exit__(*exc)

    # --- the uniform interface --------------------------------------------------------

    def fill(
        self, client_order_id: str, qty: float | None = None, price: float | None = None
    ) -> None:
        """Fill (part of) a pending order now: at ``price``, else the order's own price,
        else the market's. ``client_order_id`` may also be an OANDA order id."""
        with self._lock:
            order = self.orders.get(client_order_id) or self._by_id[client_order_id]
            if order["state"] != "PENDING":
                raise ValueError(f"order {client_order_id} is {order['state']}, not PENDING")
            total = abs(float(order["units"]))
            rest = total - self._filled.get(order["id"], 0.0)
            qty = rest if qty is None else qty
            if not 0 < qty <= rest:
                raise ValueError(f"cannot fill {qty} of the {rest} units left")
            price = price or float(order.get("price") or self.prices[_instrument(order)])
            sign = 1 if float(order["units"]) > 0 else -1
            self._fill_order(order, sign * qty, price, f"{order['type']}_ORDER")

    def place_elsewhere(
        self,
        instrument: str,
        side: str,
        qty: float,
        type: str = "limit",
        price: float | None = None,
        *,
        with_client_id: bool = True,
    ) -> str:
        """An order made outside SPtrader (OANDA's web platform); returns its client id,
        or its OANDA order id when made ``with_client_id=False`` (as the website does)."""
        symbol = instrument.split(":", 1)[1]
        market = self.prices[instrument]
        if price is None and type != "market":
            offset = 0.99 if (side == "buy") == (type == "limit") else 1.01
            price = market * offset
        spec: dict[str, Any] = {
            "type": type.upper(),
            "instrument": symbol,
            "units": _units(qty if side == "buy" else -qty),
            "timeInForce": "FOK" if type == "market" else "GTC",
            "positionFill": "DEFAULT",
        }
        if price is not None and type != "market":
            spec["price"] = _price(symbol, price)
        with self._lock:
            self._elsewhere += 1
            client_id = f"web-{self._elsewhere}"
            if with_client_id:
                spec["clientExtensions"] = {"id": client_id, "comment": "placed on the web"}
            answer = self._open_order(spec)
        return client_id if with_client_id else answer["orderCreateTransaction"]["id"]

    def accept_then_time_out(self, count: int = 1) -> None:
        """The next ``count`` orders are created, but their answer comes after the
        client's time-out (the handler sleeps past it)."""
        with self._lock:
            self._hang += count

    def drop_stream(self) -> None:
        """End every open transaction stream now (the client sees the response end)."""
        with self._lock:
            for feed in self._streams:
                feed.put(None)

    def fail_next(self, code_or_status: int | str, message: str) -> None:
        """The next order POST fails: a str is an OANDA reject reason (400 with an
        orderRejectTransaction), an int an HTTP status with this errorMessage."""
        with self._lock:
            self._fail = (code_or_status, message)

    # --- the account ------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        with self._lock:
            unrealized = sum(
                float(t["currentUnits"]) * (self.prices[f"OANDA:{symbol}"] - float(t["price"]))
                for symbol, trades in self._trades.items()
                for t in trades
            )
            margin = sum(
                abs(float(t["currentUnits"]))
                * self.prices[f"OANDA:{symbol}"]
                * float(RULES[symbol]["marginRate"])
                for symbol, trades in self._trades.items()
                for t in trades
            )
            nav = self.balance + unrealized
            return {
                "id": ACCOUNT_ID,
                "alias": "Primary",
                "currency": "USD",
                "createdTime": _time(0),
                "hedgingEnabled": False,
                "marginRate": "0.0333",
                "balance": _money(self.balance),
                "NAV": _money(nav),
                "unrealizedPL": _money(unrealized),
                "pl": "0.0000",
                "resettablePL": "0.0000",
                "financing": "0.0000",
                "commission": "0.0000",
                "marginUsed": _money(margin),
                "marginAvailable": _money(nav - margin),
                "positionValue": _money(margin / 0.0333 if margin else 0.0),
                "withdrawalLimit": _money(max(0.0, nav - margin)),
                "openTradeCount": sum(len(trades) for trades in self._trades.values()),
                "openPositionCount": sum(1 for trades in self._trades.values() if trades),
                "pendingOrderCount": len(self._pending()),
                "lastTransactionID": str(self._last_id),
            }

    # --- routes -----------------------------------------------------------------------

    def _refuse(self, request: FakeRequest) -> FakeResponse | None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            with self._lock:
                self.auth_failures += 1
            return _error(401, "Insufficient authorization to perform request.")
        return None

    def _rest_route(self, request: FakeRequest) -> FakeResponse | None:
        match = _ACCOUNT.match(request.path)
        if match is None or match.group(2) == "/transactions/stream":
            return None  # the stream is on the other host
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if match.group(1) != ACCOUNT_ID:
            return _error(403, "The provided request was forbidden.")
        path = match.group(2)
        if request.method == "POST" and path == "/orders":
            return self._create(request)
        if request.method == "PUT" and (cancel := _CANCEL.match(path)):
            return self._cancel(unquote(cancel.group(1)))
        if request.method != "GET":
            return None
        with self._lock:
            return self._read(path, request.query)

    def _read(self, path: str, query: dict[str, str]) -> FakeResponse | None:
        last = str(self._last_id)
        if path == "/summary":
            return FakeResponse(200, {"account": self.summary(), "lastTransactionID": last})
        if path == "/instruments":
            return FakeResponse(
                200, {"instruments": list(RULES.values()), "lastTransactionID": last}
            )
        if path == "/pendingOrders":
            return FakeResponse(200, {"orders": self._pending(), "lastTransactionID": last})
        if path == "/openPositions":
            return FakeResponse(200, {"positions": self._positions(), "lastTransactionID": last})
        if path == "/transactions":
            return self._transaction_pages(query)
        if path == "/transactions/idrange":
            first, final = int(query["from"]), int(query["to"])
            types = set(query["type"].split(",")) if "type" in query else None
            chosen = [
                t
                for t in self.transactions
                if first <= int(t["id"]) <= final and (types is None or t["type"] in types)
            ]
            return FakeResponse(200, {"transactions": chosen, "lastTransactionID": last})
        if transaction := _TRANSACTION.match(path):
            found = [t for t in self.transactions if t["id"] == transaction.group(1)]
            if not found:
                return _error(
                    404, "The Transaction specified does not exist", "NO_SUCH_TRANSACTION"
                )
            return FakeResponse(200, {"transaction": found[0], "lastTransactionID": last})
        if order := _ORDER.match(path):
            wire = self._find(unquote(order.group(1)))
            if wire is None:
                return _error(404, "The Order specified does not exist", "ORDER_DOESNT_EXIST")
            return FakeResponse(200, {"order": wire, "lastTransactionID": last})
        return None

    def _transaction_pages(self, query: dict[str, str]) -> FakeResponse:
        try:
            start = _time_param(query.get("from"), 0)
            end = _time_param(query.get("to"), now_us())
        except ValueError as error:
            return _error(400, str(error))
        size = int(query.get("pageSize", 100))
        if not 1 <= size <= 1000:
            return _error(400, "Invalid value specified for 'pageSize'")
        types = query["type"].split(",") if "type" in query else None
        chosen = [
            t
            for t in self.transactions
            if start <= rfc3339_to_us(t["time"]) <= end and (types is None or t["type"] in types)
        ]
        base = f"{self.rest.url}/v3/accounts/{ACCOUNT_ID}/transactions/idrange"
        suffix = f"&type={','.join(types)}" if types else ""
        pages = [
            f"{base}?from={chunk[0]['id']}&to={chunk[-1]['id']}{suffix}"
            for chunk in (chosen[i : i + size] for i in range(0, len(chosen), size))
        ]
        answer: dict[str, Any] = {
            "from": _time(start),
            "to": _time(end),
            "pageSize": size,
            "count": len(chosen),
            "pages": pages,
            "lastTransactionID": str(self._last_id),
        }
        if types:
            answer["type"] = types
        return FakeResponse(200, answer)

    def _stream_route(self, request: FakeRequest) -> FakeResponse | None:
        match = _ACCOUNT.match(request.path)
        if match is None or match.group(2) != "/transactions/stream":
            return None
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if match.group(1) != ACCOUNT_ID:
            return _error(403, "The provided request was forbidden.")
        # Subscribed before the answer's headers go out: nothing after them is missed.
        feed: queue.Queue[str | None] = queue.Queue()
        with self._lock:
            self._streams.append(feed)
        return FakeResponse(
            200, headers={"Content-Type": "application/octet-stream"}, stream=self._lines(feed)
        )

    def _lines(self, feed: queue.Queue[str | None]):
        try:
            while True:
                try:
                    line = feed.get(timeout=self.heartbeat_s)
                except queue.Empty:
                    beat = {
                        "type": "HEARTBEAT",
                        "lastTransactionID": str(self._last_id),
                        "time": _time(now_us()),
                    }
                    line = json.dumps(beat)
                if line is None:
                    return
                yield (line + "\n").encode()
        finally:
            with self._lock:
                if feed in self._streams:
                    self._streams.remove(feed)

    # --- orders -----------------------------------------------------------------------

    def _create(self, request: FakeRequest) -> FakeResponse:
        try:
            spec = json.loads(request.body)["order"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "Invalid JSON body or missing 'order'")
        with self._lock:
            if self._fail is not None:
                code, message = self._fail
                self._fail = None
                if isinstance(code, int):
                    return _error(code, message)
                return self._reject(spec, code, message)
            problem = self._invalid(spec)
            if problem is not None:
                if problem[0] is None:
                    return _error(400, problem[1])
                return self._reject(spec, *problem)
            answer = self._open_order(spec)
            hang = self._hang > 0
            self._hang -= hang
        if hang:  # created: the answer just comes too late
            time.sleep(self._timeout_s + 1.0)
        return FakeResponse(201, answer)

    def _invalid(self, spec: dict) -> tuple[str | None, str] | None:
        """(reject reason or None for a malformed field, errorMessage) of a bad order."""
        kind = spec.get("type")
        symbol = spec.get("instrument")
        if kind not in ORDER_TRANSACTIONS:
            return None, "Invalid value specified for 'type'"
        if symbol not in RULES:
            return None, "Invalid value specified for 'instrument'"
        try:
            units = float(spec["units"])
        except (KeyError, ValueError):
            return None, "Invalid value specified for 'units'"
        if units == 0:
            return "UNITS_INVALID", "The units specified is invalid"
        if _decimals(spec["units"]) > RULES[symbol]["tradeUnitsPrecision"]:
            return "UNITS_PRECISION_EXCEEDED", "The units specified exceed the precision allowed"
        tif = spec.get("timeInForce")
        allowed = ("FOK", "IOC") if kind == "MARKET" else ("GTC", "GFD", "GTD")
        if tif not in allowed:
            return "TIME_IN_FORCE_INVALID", "The time-in-force specified is invalid"
        if kind != "MARKET":
            if "price" not in spec:
                return "PRICE_MISSING", "The price is missing"
            if _decimals(spec["price"]) > RULES[symbol]["displayPrecision"]:
                return (
                    "PRICE_PRECISION_EXCEEDED",
                    "The price specified exceeds the precision allowed",
                )
        client_id = (spec.get("clientExtensions") or {}).get("id")
        if client_id and client_id in self.orders:
            return (
                "CLIENT_ORDER_ID_ALREADY_EXISTS",
                "The client Order ID specified is already in use",
            )
        return None

    def _reject(self, spec: dict, code: str, message: str) -> FakeResponse:
        kind = ORDER_TRANSACTIONS.get(str(spec.get("type")), "MARKET_ORDER")
        fields = {k: v for k, v in spec.items() if k != "type"}
        rejected = self._transaction(
            f"{kind}_REJECT", reason="CLIENT_ORDER", rejectReason=code, **fields
        )
        answer = {
            "orderRejectTransaction": rejected,
            "relatedTransactionIDs": [rejected["id"]],
            "lastTransactionID": rejected["id"],
            "errorCode": code,
            "errorMessage": message,
        }
        return FakeResponse(400, answer)

    def _open_order(self, spec: dict) -> dict:
        """Create the order (and fill or cancel a market order at once); the 201 answer."""
        kind = spec["type"]
        first = self._last_id + 1
        fields = {k: v for k, v in spec.items() if k != "type"}
        if kind != "MARKET":
            fields.setdefault("triggerCondition", "DEFAULT")
        created = self._transaction(ORDER_TRANSACTIONS[kind], reason="CLIENT_ORDER", **fields)
        order = {
            "id": created["id"],
            "createTime": created["time"],
            "type": kind,
            "state": "PENDING",
            **fields,
        }
        if kind != "MARKET":
            order["partialFill"] = "DEFAULT_FILL"
        self._by_id[order["id"]] = order
        client_id = (spec.get("clientExtensions") or {}).get("id")
        if client_id:
            self.orders[client_id] = order
        self.placed += 1
        answer: dict[str, Any] = {"orderCreateTransaction": created}
        units = float(spec["units"])
        market = self.prices[_instrument(order)]
        if kind == "MARKET":
            if self._margin_needed(order["instrument"], units, market) > float(
                self.summary()["marginAvailable"]
            ):
                answer["orderCancelTransaction"] = self._cancel_order(
                    order, "INSUFFICIENT_MARGIN", created["id"]
                )
            else:
                answer["orderFillTransaction"] = self._fill_order(
                    order, units, market, "MARKET_ORDER", created["id"]
                )
        elif kind == "LIMIT" and (
            market <= float(spec["price"]) if units > 0 else market >= float(spec["price"])
        ):
            answer["orderFillTransaction"] = self._fill_order(
                order, units, market, "LIMIT_ORDER", created["id"]
            )
        answer["relatedTransactionIDs"] = [str(i) for i in range(first, self._last_id + 1)]
        answer["lastTransactionID"] = str(self._last_id)
        return answer

    def _margin_needed(self, symbol: str, units: float, price: float) -> float:
        held = sum(float(t["currentUnits"]) for t in self._trades.get(symbol, []))
        opening = abs(held + units) - abs(held)
        return max(0.0, opening) * price * float(RULES[symbol]["marginRate"])

    def _cancel(self, specifier: str) -> FakeResponse:
        with self._lock:
            order = self._find(specifier)
            if (
                order is None
                or order["state"] != "PENDING"
                or order["type"] in ("STOP_LOSS", "TAKE_PROFIT")
            ):
                fields: dict[str, Any] = {
                    "reason": "CLIENT_REQUEST",
                    "rejectReason": "ORDER_DOESNT_EXIST",
                }
                if specifier.startswith("@"):
                    fields["clientOrderID"] = specifier[1:]
                else:
                    fields["orderID"] = specifier
                rejected = self._transaction("ORDER_CANCEL_REJECT", **fields)
                answer = {
                    "orderCancelRejectTransaction": rejected,
                    "relatedTransactionIDs": [rejected["id"]],
                    "lastTransactionID": rejected["id"],
                    "errorCode": "ORDER_DOESNT_EXIST",
                    "errorMessage": "The Order specified does not exist",
                }
                return FakeResponse(404, answer)
            cancelled = self._cancel_order(order, "CLIENT_REQUEST")
            answer = {
                "orderCancelTransaction": cancelled,
                "relatedTransactionIDs": [cancelled["id"]],
                "lastTransactionID": cancelled["id"],
            }
            return FakeResponse(200, answer)

    def _cancel_order(self, order: dict, reason: str, batch: str | None = None) -> dict:
        fields: dict[str, Any] = {"orderID": order["id"], "reason": reason}
        if client_id := (order.get("clientExtensions") or {}).get("id"):
            fields["clientOrderID"] = client_id
        cancelled = self._transaction("ORDER_CANCEL", batch, **fields)
        order.update(
            state="CANCELLED",
            cancellingTransactionID=cancelled["id"],
            cancelledTime=cancelled["time"],
        )
        return cancelled

    def _fill_order(
        self, order: dict, units: float, price: float, reason: str, batch: str | None = None
    ) -> dict:
        """Fill ``units`` (signed) of ``order`` at ``price``: trades opened, reduced or
        closed first in, first out; the ORDER_FILL transaction (and on-fill orders)."""
        symbol = order["instrument"]
        fill_id = str(self._last_id + 1)
        trades = self._trades.setdefault(symbol, [])
        remaining, realized = units, 0.0
        closed: list[dict] = []
        reduced: dict | None = None
        while remaining and trades and (float(trades[0]["currentUnits"]) > 0) != (remaining > 0):
            trade = trades[0]
            held = float(trade["currentUnits"])
            take = min(abs(remaining), abs(held)) * (1 if remaining > 0 else -1)
            profit = -take * (price - float(trade["price"]))
            part = {
                "tradeID": trade["id"],
                "units": _units(take),
                "price": _price(symbol, price),
                "realizedPL": _money(profit),
                "financing": "0.0000",
                "guaranteedExecutionFee": "0.0000",
                "halfSpreadCost": "0.0000",
            }
            trade["currentUnits"] = _units(held + take)
            if held + take == 0:
                trades.pop(0)
                closed.append(part)
            else:
                reduced = part
            remaining -= take
            realized += profit
        fields: dict[str, Any] = {}
        if remaining:
            opened = {
                "id": fill_id,
                "price": _price(symbol, price),
                "currentUnits": _units(remaining),
            }
            trades.append(opened)
            fields["tradeOpened"] = {
                "tradeID": fill_id,
                "units": _units(remaining),
                "price": _price(symbol, price),
                "guaranteedExecutionFee": "0.0000",
                "halfSpreadCost": "0.0000",
                "initialMarginRequired": _money(
                    abs(remaining) * price * float(RULES[symbol]["marginRate"])
                ),
            }
        if closed:
            fields["tradesClosed"] = closed
        if reduced:
            fields["tradeReduced"] = reduced
        if client_id := (order.get("clientExtensions") or {}).get("id"):
            fields["clientOrderID"] = client_id
        self.balance += realized - self.commission
        filled = self._transaction(
            "ORDER_FILL",
            batch,
            orderID=order["id"],
            instrument=symbol,
            units=_units(units),
            gainQuoteHomeConversionFactor="1",
            lossQuoteHomeConversionFactor="1",
            price=_price(symbol, price),
            fullVWAP=_price(symbol, price),
            reason=reason,
            pl=_money(realized),
            financing="0.0000",
            commission=_money(self.commission),
            guaranteedExecutionFee="0.0000",
            accountBalance=_money(self.balance),
            halfSpreadCost="0.0000",
            **fields,
        )
        done = self._filled.get(order["id"], 0.0) + abs(units)
        self._filled[order["id"]] = done
        if done >= abs(float(order["units"])):
            order.update(
                state="FILLED", fillingTransactionID=filled["id"], filledTime=filled["time"]
            )
            if remaining:
                order["tradeOpenedID"] = fill_id
            if closed:
                order["tradeClosedIDs"] = [part["tradeID"] for part in closed]
        if remaining:
            self._protect(order, fill_id, batch or filled["id"])
        return filled

    def _protect(self, order: dict, trade_id: str, batch: str) -> None:
        """The on-fill stop-loss/take-profit of a trade the order opened."""
        for key, (kind, transaction_type) in PROTECTION.items():
            details = order.get(key)
            if not details:
                continue
            created = self._transaction(
                transaction_type,
                batch,
                tradeID=trade_id,
                price=details["price"],
                timeInForce=details.get("timeInForce", "GTC"),
                triggerCondition="DEFAULT",
                reason="ON_FILL",
                orderFillTransactionID=str(int(trade_id)),
            )
            protective = {
                "id": created["id"],
                "createTime": created["time"],
                "type": kind,
                "tradeID": trade_id,
                "price": details["price"],
                "timeInForce": created["timeInForce"],
                "triggerCondition": "DEFAULT",
                "state": "PENDING",
            }
            self._by_id[protective["id"]] = protective

    # --- state helpers ----------------------------------------------------------------

    def _transaction(self, kind: str, batch: str | None = None, **fields: Any) -> dict:
        self._last_id += 1
        transaction_id = str(self._last_id)
        transaction = {
            "id": transaction_id,
            "time": _time(now_us()),
            "userID": USER_ID,
            "accountID": ACCOUNT_ID,
            "batchID": batch or transaction_id,
            "requestID": f"6{self._last_id:017d}",
            "type": kind,
            **fields,
        }
        self.transactions.append(transaction)
        line = json.dumps(transaction)
        for feed in self._streams:
            feed.put(line)
        return transaction

    def _find(self, specifier: str) -> dict | None:
        if specifier.startswith("@"):
            return self.orders.get(specifier[1:])
        return self._by_id.get(specifier)

    def _pending(self) -> list[dict]:
        pending = [order for order in self._by_id.values() if order["state"] == "PENDING"]
        return sorted(pending, key=lambda order: -int(order["id"]))  # newest first

    def _positions(self) -> list[dict]:
        positions = []
        for symbol, trades in self._trades.items():
            if not trades:
                continue
            sides = {}
            for name, chosen in (
                ("long", [t for t in trades if float(t["currentUnits"]) > 0]),
                ("short", [t for t in trades if float(t["currentUnits"]) < 0]),
            ):
                units = sum(float(t["currentUnits"]) for t in chosen)
                side: dict[str, Any] = {
                    "units": _units(units),
                    "pl": "0.0000",
                    "resettablePL": "0.0000",
                }
                market = self.prices[f"OANDA:{symbol}"]
                if chosen:
                    average = (
                        sum(float(t["currentUnits"]) * float(t["price"]) for t in chosen) / units
                    )
                    side["averagePrice"] = _price(symbol, average)
                    side["tradeIDs"] = [t["id"] for t in chosen]
                    side["unrealizedPL"] = _money(units * (market - average))
                else:
                    side["unrealizedPL"] = "0.0000"
                sides[name] = side
            unrealized = sum(float(side["unrealizedPL"]) for side in sides.values())
            positions.append(
                {
                    "instrument": symbol,
                    "long": sides["long"],
                    "short": sides["short"],
                    "pl": "0.0000",
                    "resettablePL": "0.0000",
                    "unrealizedPL": _money(unrealized),
                    "commission": "0.0000",
                    "financing": "0.0000",
                }
            )
        return positions


# --- wire helpers ---------------------------------------------------------------------


def _instrument(order: dict) -> str:
    return f"OANDA:{order['instrument']}"


def _error(status: int, message: str, code: str | None = None) -> FakeResponse:
    body: dict[str, Any] = {"errorMessage": message}
    if code is not None:
        body["errorCode"] = code
    return FakeResponse(status, body)


def _time(ts_us: int) -> str:
    """RFC 3339 with nine fractional digits, as OANDA writes times."""
    seconds, micros = divmod(ts_us, 1_000_000)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{micros:06d}000Z"


def _time_param(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        if "T" in text:
            return rfc3339_to_us(text)
        return int(float(text) * 1_000_000)  # OANDA's UNIX format
    except ValueError:
        raise ValueError("Invalid value specified for 'from' or 'to'") from None


def _units(units: float) -> str:
    return str(int(units)) if float(units).is_integer() else repr(round(units, 6))


def _price(symbol: str, price: float) -> str:
    return f"{price:.{RULES[symbol]['displayPrecision']}f}"


def _money(amount: float) -> str:
    return f"{amount:.4f}"


def _decimals(text: object) -> int:
    """How many decimals a wire number is written with (trailing zeros count, as
    OANDA counts them)."""
    value = str(text).lstrip("-")
    return len(value.split(".", 1)[1]) if "." in value else 0
