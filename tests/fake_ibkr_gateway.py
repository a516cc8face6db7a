"""A fake Client Portal Web API gateway (IBKR) on 127.0.0.1, in the documented wire
format: the session (``logged_in``; logged out, /iserver and /portfolio answer 401
"not authenticated"), the /iserver/accounts precondition ("Please query /accounts
first"), conid search, orders with confirmation questions answered at
/iserver/reply/{id}, live orders, trades, positions and the account summary.

It keeps orders by client id (``order_ref`` = the cOID sent) and fills market orders at
once at ``prices``; limit orders fill at once when marketable; stops rest (PreSubmitted)
until ``fill``. ``placed`` counts the orders placed through the API (not
``place_elsewhere``'s). ``auth_failures`` counts requests refused as not authenticated
(and auth/status answers saying the gateway is logged out).
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from typing import Any, Self

try:
    from fakes import FakeHttpServer, FakeRequest, FakeResponse
except ImportError:  # imported as tests.fake_ibkr_gateway
    from tests.fakes import FakeHttpServer, FakeRequest, FakeResponse

ACCOUNT = "DU1234567"
API = "/v1/api"
#: symbol -> (conid, company, listing exchange) of the fake's stocks.
STOCKS = {
    "AAPL": (265598, "APPLE INC", "NASDAQ"),
    "MSFT": (272093, "MICROSOFT CORP", "NASDAQ"),
    "SPY": (756733, "SPDR S&P 500 ETF TRUST", "ARCA"),
}
NO_MARKET_DATA = (
    "You are submitting an order without market data. We strongly recommend against this"
    " as it may result in erroneous and unexpected trades.\nAre you sure you want to submit"
    " this order?"
)
PERCENT_LIMIT = 0.03  # the precautionary "price exceeds the Percentage constraint of 3%"


class _Dropped(Exception):
    """Raised in a route: the server closes the connection without an answer."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FakeIbkrTrading:
    instrument = "IBKR:AAPL"

    def __init__(self, timeout_s: float = 0.5, tickle_s: float = 55.0) -> None:
        self.timeout_s = timeout_s
        self.tickle_s = tickle_s
        self.env: dict[str, str] = {}  # the gateway holds the session: no secrets
        self.prices = {
            f"IBKR:{s}": p for s, p in (("AAPL", 190.0), ("MSFT", 410.0), ("SPY", 500.0))
        }
        self.orders: dict[str, dict[str, Any]] = {}
        self.trades: list[dict[str, Any]] = []
        self.placed = 0
        self.auth_failures = 0
        self.searches = 0
        self.tickles = 0
        self.questions: list[str] = []  # every question's text, as asked
        self.cash = 100_000.0
        self.holdings: dict[int, tuple[float, float]] = {}  # conid -> (position, avg cost)
        self._lock = threading.RLock()
        self._ids = itertools.count(1_000_000_001)
        self._executions = itertools.count(1)
        self._elsewhere = itertools.count(1)
        self._pending: dict[str, tuple[dict[str, Any], list[str]]] = {}
        self._fail: tuple[int, str] | None = None
        self._time_outs = 0
        self._drop_next = False
        self._logged_in = True
        self._new_session()
        self._http = FakeHttpServer(self._route)
        original = self._http._server.handle_error

        def quiet(request: Any, address: Any) -> None:
            # A dropped poll, or the answer to a client that timed out, is intended.
            if not isinstance(sys.exc_info()[1], _Dropped | BrokenPipeError | ConnectionResetError):
                original(request, address)

        self._http._server.handle_error = quiet

    # --- the uniform interface --------------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        return {
            "trading": "live",
            "gateway_url": self._http.url + API,
            "account_id": "",
            "tickle_s": self.tickle_s,
            "timeout_s": self.timeout_s,
        }

    def __enter__(self) -> Self:
        self._http.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.__exit__(*exc)

    @property
    def logged_in(self) -> bool:
        return self._logged_in

    @logged_in.setter
    def logged_in(self, value: bool) -> None:
        """Logging in again opens a new session (accounts not queried, first question)."""
        with self._lock:
            if value and not self._logged_in:
                self._new_session()
            self._logged_in = value

    def reset_session(self) -> None:
        """The gateway's nightly reset: /iserver/accounts must be queried again."""
        with self._lock:
            self._primed = False

    def fill(
        self, client_order_id: str, qty: float | None = None, price: float | None = None
    ) -> None:
        with self._lock:
            order = self.orders[client_order_id]
            qty = order["remainingQuantity"] if qty is None else qty
            if price is None:
                price = float(order.get("price") or order.get("auxPrice") or self._market(order))
            self._execute(order, qty, price)

    def place_elsewhere(
        self,
        instrument: str,
        side: str,
        qty: float,
        type: str = "limit",
        price: float | None = None,
    ) -> str:
        """An order made in TWS (its order reference set there)."""
        with self._lock:
            ref = f"tws-{next(self._elsewhere)}"
            kind = {"market": "MKT", "limit": "LMT", "stop": "STP"}[type]
            ticket = {"conid": STOCKS[instrument.split(":", 1)[1]][0], "cOID": ref}
            ticket |= {"orderType": kind, "side": side.upper(), "quantity": qty, "tif": "GTC"}
            if price is not None:
                ticket["price"] = price
            self._accept(ticket, counted=False)
            return ref

    def accept_then_time_out(self, count: int = 1) -> None:
        self._time_outs += count

    def drop_stream(self) -> None:
        """The next live-orders or trades poll gets its connection closed unanswered."""
        self._drop_next = True

    def fail_next(self, code_or_status: int, message: str) -> None:
        """The next order POST is refused with this HTTP status and ``{"error": message}``."""
        self._fail = (int(code_or_status), message)

    # --- the market -------------------------------------------------------------------

    def _new_session(self) -> None:
        self._primed = False  # /iserver/accounts queried
        self._warm = False  # live orders answered once (the first answer is empty)
        self._first_order = True  # the session's first order gets a question

    def _market(self, order: dict[str, Any]) -> float:
        return self.prices[f"IBKR:{order['ticker']}"]

    def _accept(self, ticket: dict[str, Any], counted: bool = True) -> dict[str, Any]:
        """Place a confirmed ticket: it rests, or fills at once (market, marketable limit)."""
        symbol = next(s for s, (conid, *_) in STOCKS.items() if conid == int(ticket["conid"]))
        conid, company, exchange = STOCKS[symbol]
        kind = ticket["orderType"]
        qty = float(ticket["quantity"])
        order: dict[str, Any] = {
            "acct": ACCOUNT,
            "conidex": str(conid),
            "conid": conid,
            "account": ACCOUNT,
            "orderId": next(self._ids),
            "cashCcy": "USD",
            "sizeAndFills": f"0/{qty:g}",
            "orderDesc": f"{ticket['side'].title()} {qty:g} {kind} {ticket['tif']}",
            "description1": symbol,
            "ticker": symbol,
            "secType": "STK",
            "listingExchange": f"{exchange}.NMS" if exchange == "NASDAQ" else exchange,
            "remainingQuantity": qty,
            "filledQuantity": 0.0,
            "totalSize": qty,
            "companyName": company,
            "status": "PreSubmitted" if kind == "STP" else "Submitted",
            "origOrderType": {"MKT": "MARKET", "LMT": "LIMIT", "STP": "STOP"}[kind],
            "orderType": {"MKT": "Market", "LMT": "Limit", "STP": "Stop"}[kind],
            "order_ref": ticket.get("cOID") or "",
            "timeInForce": ticket["tif"],
            "lastExecutionTime_r": _now_ms(),
            "side": ticket["side"],
        }
        if kind == "LMT":
            order["price"] = f"{float(ticket['price']):.2f}"
        if kind == "STP":
            order["auxPrice"] = f"{float(ticket['price']):.2f}"
        order["order_ccp_status"] = order["status"]
        self.orders[order["order_ref"] or str(order["orderId"])] = order
        self.placed += counted
        market = self._market(order)
        buy = ticket["side"] == "BUY"
        limit = float(ticket.get("price") or 0)
        if kind == "MKT" or (kind == "LMT" and (limit >= market if buy else limit <= market)):
            self._execute(order, qty, market)
        return order

    def _execute(self, order: dict[str, Any], qty: float, price: float) -> None:
        qty = min(qty, order["remainingQuantity"])
        done = order["filledQuantity"]
        avg = float(order.get("avgPrice") or 0)
        order["filledQuantity"] = done + qty
        order["remainingQuantity"] = order["totalSize"] - order["filledQuantity"]
        order["avgPrice"] = f"{(avg * done + price * qty) / (done + qty):.4f}"
        order["status"] = "Filled" if order["remainingQuantity"] <= 0 else "Submitted"
        order["order_ccp_status"] = order["status"]
        order["sizeAndFills"] = f"{order['filledQuantity']:g}/{order['totalSize']:g}"
        order["lastExecutionTime_r"] = _now_ms()
        buy = order["side"] == "BUY"
        commission = max(1.0, 0.005 * qty)  # IBKR Pro fixed: $0.005 a share, $1 minimum
        self.trades.append(
            {
                "execution_id": f"0000e0d5.{next(self._executions):08x}.01.01",
                "symbol": order["ticker"],
                "supports_tax_opt": "1",
                "side": "B" if buy else "S",
                "order_description": f"{'Bot' if buy else 'Sold'} {qty:g} @ {price:.2f} on ISLAND",
                "trade_time": time.strftime("%Y%m%d-%H:%M:%S", time.gmtime()),
                "trade_time_r": _now_ms(),
                "size": qty,
                "price": f"{price:.2f}",
                "order_ref": order["order_ref"],
                "submitter": "fakeuser",
                "exchange": "ISLAND",
                "commission": f"{commission:.2f}",
                "net_amount": round(qty * price, 2),
                "account": ACCOUNT,
                "accountCode": ACCOUNT,
                "company_name": order["companyName"],
                "contract_description_1": order["ticker"],
                "sec_type": "STK",
                "listing_exchange": order["listingExchange"],
                "conid": order["conid"],
                "conidEx": order["conidex"],
                "clearing_id": "IB",
                "clearing_name": "IB",
                "liquidation_trade": "0",
            }
        )
        signed = qty if buy else -qty
        held, cost = self.holdings.get(order["conid"], (0.0, 0.0))
        now = held + signed
        if now == 0:
            cost = 0.0
        elif held == 0 or (held > 0) == (signed > 0):
            cost = (cost * held + price * signed) / now
        self.holdings[order["conid"]] = (now, cost)
        self.cash -= signed * price + commission

    # --- HTTP -------------------------------------------------------------------------

    def _route(self, request: FakeRequest) -> FakeResponse | None:
        if not request.path.startswith(API):
            return None
        path = request.path.removeprefix(API)
        body = json.loads(request.body) if request.body else None
        with self._lock:
            if path == "/iserver/auth/status" and request.method == "POST":
                if not self._logged_in:
                    self.auth_failures += 1
                return FakeResponse(body=self._auth_status())
            if path == "/tickle" and request.method == "POST":
                self.tickles += 1
                return FakeResponse(body=self._tickle())
            if path.startswith(("/iserver", "/portfolio")) and not self._logged_in:
                self.auth_failures += 1
                return FakeResponse(401, {"error": "not authenticated"})
            if path == "/iserver/accounts":
                self._primed = True
                return FakeResponse(body=self._accounts())
            if path == "/portfolio/accounts":
                return FakeResponse(body=[{"id": ACCOUNT, "accountId": ACCOUNT, "currency": "USD"}])
            if path == "/iserver/secdef/search":
                self.searches += 1
                return FakeResponse(body=self._search(request.query.get("symbol", "")))
            if path.startswith("/portfolio/"):
                return self._portfolio(path, request.method)
            if path.startswith("/iserver/") and not self._primed:
                return FakeResponse(500, {"error": "Please query /accounts first"})
            if path in ("/iserver/account/orders", "/iserver/account/trades"):
                if self._drop_next:
                    self._drop_next = False
                    raise _Dropped(path)
                if path.endswith("trades"):
                    return FakeResponse(body=self._recent_trades(request.query.get("days", "1")))
                return FakeResponse(body=self._live_orders(request.query.get("force") == "true"))
            if path == f"/iserver/account/{ACCOUNT}/orders" and request.method == "POST":
                return self._place(body or {})
            if path.startswith("/iserver/reply/") and request.method == "POST":
                return self._reply(path.rsplit("/", 1)[1], body or {})
            if path.startswith(f"/iserver/account/{ACCOUNT}/order/") and request.method == "DELETE":
                return self._cancel(path.rsplit("/", 1)[1])
            if path.startswith("/iserver/account/") and "/order" in path:
                return FakeResponse(400, {"error": f"account {path.split('/')[3]} is not yours"})
        return None

    def _auth_status(self) -> dict[str, Any]:
        return {
            "authenticated": self._logged_in,
            "competing": False,
            "connected": True,
            "message": "",
            "MAC": "12:34:56:78:90:AB",
            "serverInfo": {"serverName": "JifN19053", "serverVersion": "Build 10.25.0p"},
            "fail": "",
        }

    def _tickle(self) -> dict[str, Any]:
        return {
            "session": "bb665d0f55b6289d70bc5c4d27cd4abc",
            "ssoExpires": 460311,
            "collission": False,
            "userId": 123456789,
            "hmds": {"error": "no bridge"},
            "iserver": {"authStatus": self._auth_status()},
        }

    def _accounts(self) -> dict[str, Any]:
        return {
            "accounts": [ACCOUNT],
            "acctProps": {ACCOUNT: {"hasChildAccounts": False, "supportsFractions": False}},
            "aliases": {ACCOUNT: ACCOUNT},
            "allowFeatures": {"allowCrypto": False, "allowFractions": False},
            "groups": [],
            "profiles": [],
            "selectedAccount": ACCOUNT,
            "isPaper": True,
        }

    def _search(self, symbol: str) -> list[dict[str, Any]]:
        if symbol.upper() not in STOCKS:
            return []
        conid, company, exchange = STOCKS[symbol.upper()]
        stock = {
            "conid": str(conid),
            "companyHeader": f"{company} - {exchange}",
            "companyName": company,
            "symbol": symbol.upper(),
            "description": exchange,
            "restricted": None,
            "sections": [
                {"secType": "STK"},
                {"secType": "OPT", "months": "JAN27", "exchange": "SMART"},
            ],
        }
        # The same company listed in Mexico comes first, as the real search may order it.
        mexico = stock | {"conid": str(conid + 38_000_000), "description": "MEXI"}
        mexico["companyHeader"] = f"{company} - MEXI"
        return [mexico, stock]

    def _live_orders(self, force: bool) -> dict[str, Any]:
        if force or not self._warm:
            self._warm = True
            return {"orders": [], "snapshot": False}
        return {"orders": [dict(o) for o in self.orders.values()], "snapshot": True}

    def _recent_trades(self, days: str) -> list[dict[str, Any]]:
        since = _now_ms() - int(days) * 86_400_000
        return [dict(t) for t in self.trades if t["trade_time_r"] >= since]

    def _question(self, ticket: dict[str, Any]) -> list[str]:
        """The questions this ticket raises (the first order of a session; a price far
        from the market)."""
        asked = []
        if self._first_order:
            asked.append(NO_MARKET_DATA)
        symbol = next(s for s, (conid, *_) in STOCKS.items() if conid == int(ticket["conid"]))
        market = self.prices[f"IBKR:{symbol}"]
        price = ticket.get("price")
        if price is not None and abs(float(price) - market) / market > PERCENT_LIMIT:
            asked.append(
                f'The following order "{ticket["side"]} {ticket["quantity"]} {symbol}'
                f' NASDAQ.NMS @ {float(price)}" price exceeds \nthe Percentage constraint of'
                " 3%.\nAre you sure you want to submit this order?"
            )
        return asked

    def _ask(self, ticket: dict[str, Any], asked: list[str]) -> FakeResponse:
        reply_id = f"07a13a5a-4a48-44a5-bb25-{len(self.questions):012x}"
        self._pending[reply_id] = (ticket, asked[1:])
        self.questions.append(asked[0])
        ids = ["o354"] if asked[0] == NO_MARKET_DATA else ["o163"]
        return FakeResponse(
            body=[{"id": reply_id, "message": [asked[0]], "isSuppressed": False, "messageIds": ids}]
        )

    def _place(self, body: dict[str, Any]) -> FakeResponse:
        if self._fail is not None:
            status, message = self._fail
            self._fail = None
            return FakeResponse(status, {"error": message})
        tickets = body.get("orders") or []
        if len(tickets) != 1:
            return FakeResponse(400, {"error": "the fake takes one order per request"})
        ticket = tickets[0]
        missing = [k for k in ("conid", "orderType", "side", "quantity", "tif") if k not in ticket]
        if missing or ticket["orderType"] not in ("MKT", "LMT", "STP"):
            return FakeResponse(400, {"error": f"Bad Request: {missing or ticket['orderType']}"})
        if ticket["orderType"] != "MKT" and "price" not in ticket:
            return FakeResponse(400, {"error": "Bad Request: price is required"})
        if ticket.get("cOID") in self.orders:
            return FakeResponse(
                400, {"error": f"Local order ID={ticket['cOID']} is already registered."}
            )
        asked = self._question(ticket)
        self._first_order = False
        return self._ask(ticket, asked) if asked else self._acknowledge(ticket)

    def _reply(self, reply_id: str, body: dict[str, Any]) -> FakeResponse:
        if reply_id not in self._pending:
            return FakeResponse(400, {"error": f"Reply ID {reply_id} not found"})
        ticket, asked = self._pending.pop(reply_id)
        if body.get("confirmed") is not True:
            return FakeResponse(body=[{"error": "The order was not confirmed: it was discarded"}])
        return self._ask(ticket, asked) if asked else self._acknowledge(ticket)

    def _acknowledge(self, ticket: dict[str, Any]) -> FakeResponse:
        order = self._accept(ticket)
        if self._time_outs:
            # Placed, but the answer comes after the client has given up.
            self._time_outs -= 1
            self._lock.release()
            try:
                time.sleep(self.timeout_s * 2 + 0.2)
            finally:
                self._lock.acquire()
        ack = {"order_id": str(order["orderId"]), "order_status": order["status"]}
        return FakeResponse(
            body=[ack | {"local_order_id": order["order_ref"], "encrypt_message": "1"}]
        )

    def _cancel(self, order_id: str) -> FakeResponse:
        order = next((o for o in self.orders.values() if str(o["orderId"]) == order_id), None)
        if order is None:
            return FakeResponse(400, {"error": f"OrderID {order_id} doesn't exist"})
        if order["status"] in ("Filled", "Cancelled", "Inactive"):
            return FakeResponse(
                400, {"error": f"OrderID {order_id} cannot be cancelled: it is {order['status']}"}
            )
        order["status"] = order["order_ccp_status"] = "Cancelled"
        order["lastExecutionTime_r"] = _now_ms()
        return FakeResponse(
            body={
                "msg": "Request was submitted",
                "order_id": int(order_id),
                "conid": order["conid"],
                "account": ACCOUNT,
            }
        )

    def _portfolio(self, path: str, method: str) -> FakeResponse | None:
        if path == f"/portfolio/{ACCOUNT}/positions/invalidate" and method == "POST":
            return FakeResponse(body={"message": "success"})
        if path.startswith(f"/portfolio/{ACCOUNT}/positions/"):
            page = int(path.rsplit("/", 1)[1])
            return FakeResponse(body=self._positions() if page == 0 else [])
        if path == f"/portfolio/{ACCOUNT}/summary":
            return FakeResponse(body=self._summary())
        return FakeResponse(400, {"error": "unknown account"}) if "/portfolio/" in path else None

    def _positions(self) -> list[dict[str, Any]]:
        rows = []
        for conid, (position, cost) in self.holdings.items():
            if position == 0:
                continue
            symbol = next(s for s, (c, *_) in STOCKS.items() if c == conid)
            price = self.prices[f"IBKR:{symbol}"]
            rows.append(
                {
                    "acctId": ACCOUNT,
                    "conid": conid,
                    "contractDesc": symbol,
                    "position": position,
                    "mktPrice": price,
                    "mktValue": round(position * price, 2),
                    "currency": "USD",
                    "avgCost": cost,
                    "avgPrice": cost,
                    "realizedPnl": 0.0,
                    "unrealizedPnl": round(position * (price - cost), 2),
                    "assetClass": "STK",
                    "ticker": symbol,
                    "listingExchange": STOCKS[symbol][2],
                }
            )
        return rows

    def _summary(self) -> dict[str, Any]:
        stock = sum(
            position * self.prices[f"IBKR:{s}"]
            for conid, (position, _) in self.holdings.items()
            for s, (c, *_) in STOCKS.items()
            if c == conid
        )

        def entry(amount: float | None, value: str | None = None) -> dict[str, Any]:
            return {
                "amount": 0.0 if amount is None else round(amount, 2),
                "currency": None if amount is None else "USD",
                "isNull": False,
                "timestamp": _now_ms(),
                "value": value,
                "severity": 0,
            }

        equity = self.cash + stock
        return {
            "accountcode": entry(None, ACCOUNT),
            "accounttype": entry(None, "INDIVIDUAL"),
            "netliquidation": entry(equity),
            "totalcashvalue": entry(self.cash),
            "grosspositionvalue": entry(abs(stock)),
            "buyingpower": entry(equity * 4),
            "availablefunds": entry(equity),
        }
