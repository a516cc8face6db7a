"""``IBKR:`` US stocks through Interactive Brokers' Client Portal Web API gateway.

The gateway is a small Java program the user runs and logs into in a browser; it holds
the session, so requests carry no credentials. Wire quirks this module handles:

- The gateway's certificate is self-signed: it is accepted only when ``gateway_url``
  names this machine (``localhost``, ``127.0.0.1``, ``::1``); any other host must
  present a certificate that verifies.
- An idle session logs out: ``POST /tickle`` keeps it alive every ``tickle_s``.
  ``GET /iserver/accounts`` must be called before any order endpoint, and again after
  the gateway's nightly reset (its "Please query /accounts first" answer): the call
  that got that answer placed nothing, so it is repeated once after re-querying.
- Orders name instruments by IB's contract id (conid), found once with
  ``/iserver/secdef/search`` and kept in ``symbols`` (conids never change).
- A placement may be answered by a question ("order reply message": a precaution such
  as a price far from the market) that must be confirmed with ``/iserver/reply/{id}``,
  sometimes several in a row; each question's text is logged.
- There is no order stream here: ``stream()`` polls the live orders and the trades.
  IBKR paces ``/iserver/account/orders`` and ``/iserver/account/trades`` at one
  request per 5 s (a 429 and a 10-minute penalty box past it), so every call to them
  is spaced by ``pace_s`` and the stream polls every ``poll_s`` (5 s by default).
- ``/iserver/account/orders`` lists only the orders of recent days (the gateway's
  session), so ``lookup`` of an older client id finds nothing; its first answer in a
  session is empty, so ``connect`` asks once with ``force=true`` to warm it up.
- Trades carry the client id (``order_ref``) but not the order id.
- Attached stop-loss/take-profit (bracket orders) are not sent: the broker places
  protective orders itself (``attached_protection`` is False).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from sptrader.config import IbkrBrokerConfig
from sptrader.venues.base import (
    StreamReady,
    Venue,
    VenueAccount,
    VenueAuthError,
    VenueEvent,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenuePosition,
    VenueRejected,
    VenueStatus,
    VenueUnavailable,
    VenueUncertain,
)

log = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Primary exchanges of US stocks, as /iserver/secdef/search's ``description`` names them.
US_EXCHANGES = frozenset({"NASDAQ", "NYSE", "ARCA", "AMEX", "BATS", "IEX", "PINK", "NYSENAT"})
#: The endpoints IBKR paces at 1 request / 5 s.
PACED = ("/iserver/account/orders", "/iserver/account/trades")
PACE_S = 5.2
#: Confirmation questions answered for one order before giving up.
MAX_REPLIES = 5
#: Read retries after a network error (order-changing requests are never retried).
READ_RETRIES = 2
NOT_PRIMED = "query /accounts first"
ORDER_TYPES = {"market": "MKT", "limit": "LMT", "stop": "STP"}
WORKING_STATUSES = ("pendingsubmit", "presubmitted", "submitted", "pendingcancel", "apipending")
US_PER_DAY = 86_400_000_000


def verify_certificate(gateway_url: str) -> bool:
    """Whether the gateway's TLS certificate must verify: not for the local gateway,
    whose certificate is self-signed; always for any other host."""
    host = (urlsplit(gateway_url).hostname or "").lower()
    return host not in LOCAL_HOSTS


def gateway_root(gateway_url: str) -> str:
    """Where the user logs in: the gateway's address without the API path."""
    parts = urlsplit(gateway_url)
    return f"{parts.scheme}://{parts.netloc}"


def venue_status(status: str, filled: float, remaining: float) -> VenueStatus:
    """IBKR's order status (PreSubmitted: held by IB until triggered, e.g. a stop)."""
    key = status.lower()
    if key == "filled":
        return "filled"
    if key in ("cancelled", "apicancelled"):
        return "cancelled"
    if key == "inactive":
        return "rejected"
    if key not in WORKING_STATUSES:
        log.warning("IBKR order status %r not known; taken as working", status)
    return "partially_filled" if filled > 0 and remaining > 0 else "accepted"


def _number(value: Any, default: float = 0.0) -> float:
    """IBKR sends numbers as numbers or strings ("192.26", "1,300")."""
    if value is None or value == "":
        return default
    try:
        return float(str(value).replace(",", ""))
    except ValueError:
        return default


def _order_type(wire: str) -> str:
    # Live orders say "Market", "Limit", "Stop", "Stop Limit"; acks say MKT/LMT/STP.
    key = wire.lower().replace(" ", "_")
    return {"mkt": "market", "lmt": "limit", "stp": "stop", "stp_lmt": "stop_limit"}.get(key, key)


class IbkrVenue(Venue):
    name = "ibkr"
    prefix = "IBKR"
    attached_protection = False
    config: IbkrBrokerConfig

    def __init__(self, config: IbkrBrokerConfig, **options: Any) -> None:
        super().__init__(config, **options)
        #: Seconds between the stream's polls, and the least between two calls to a
        #: paced endpoint (tests set both small).
        self.poll_s = PACE_S
        self.pace_s = PACE_S
        self.account_id = ""
        self._client: httpx.AsyncClient | None = None
        self._tickler: asyncio.Task | None = None
        self._paced_at: dict[str, float] = {}
        self._pace_locks: dict[str, asyncio.Lock] = {}

    # --- the session ------------------------------------------------------------------

    async def connect(self) -> None:
        await self.close()
        url = self.config.gateway_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=url, timeout=self.config.timeout_s, verify=verify_certificate(url)
        )
        try:
            status = await self._request("POST", "/iserver/auth/status", changes=False)
            self._check_session(status)
            await self._prime()
            # Required before the /portfolio endpoints.
            await self._request("GET", "/portfolio/accounts")
            # The first live-orders answer of a session is empty: warm it up now.
            await self._request("GET", "/iserver/account/orders", params={"force": "true"})
        except BaseException:
            await self.close()
            raise
        self._tickler = asyncio.create_task(self._tickle_forever(), name="ibkr-tickle")

    def _check_session(self, status: Any) -> None:
        status = status if isinstance(status, dict) else {}
        url, root = self.config.gateway_url, gateway_root(self.config.gateway_url)
        if not status.get("authenticated"):
            raise VenueAuthError(
                "ibkr", f"the gateway at {url} is not logged in: log in at {root}/ in a browser"
            )
        if status.get("competing"):
            raise VenueAuthError(
                "ibkr",
                "another session (TWS, the website or another gateway) uses this login:"
                f" close it, then log in again at {root}/",
            )
        if not status.get("connected"):
            raise VenueUnavailable(
                "ibkr", f"the gateway at {url} is logged in but not connected to IBKR's servers"
            )

    async def _prime(self) -> None:
        """``/iserver/accounts``: the gateway's precondition for every order endpoint."""
        answer = await self._request("GET", "/iserver/accounts")
        accounts = [str(a) for a in (answer or {}).get("accounts", [])]
        wanted = self.config.account_id
        if wanted and wanted not in accounts:
            listed = ", ".join(accounts) or "none"
            raise VenueAuthError(
                "ibkr", f"account {wanted} is not one this login trades (it has: {listed})"
            )
        if not wanted and not accounts:
            raise VenueAuthError("ibkr", "this login has no account to trade")
        self.account_id = wanted or accounts[0]

    async def _tickle_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tickle_s)
            try:
                answer = await self._request("POST", "/tickle", changes=False)
            except VenueUnavailable as error:
                log.warning("IBKR keep-alive failed: %s", error)
                continue
            auth = ((answer or {}).get("iserver") or {}).get("authStatus") or {}
            if auth and not auth.get("authenticated"):
                log.warning("IBKR gateway session is logged out: log in again in the browser")

    async def close(self) -> None:
        if self._tickler is not None:
            self._tickler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tickler
            self._tickler = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- requests ---------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        changes: bool | None = None,
        retries: int = READ_RETRIES,
        reprime: bool = True,
    ) -> Any:
        """The gateway's JSON answer. ``changes``: the request may change orders (POST and
        DELETE unless told), so after it may have been sent it is never retried and its
        failure is VenueUncertain; reads retry network errors ``retries`` times."""
        if self._client is None:
            raise VenueUnavailable("ibkr", "not connected to the gateway (connect first)")
        changes = method in ("POST", "DELETE") if changes is None else changes
        attempts = 1 if changes else retries + 1
        for attempt in range(attempts):
            await self._pace(path)
            try:
                response = await self._client.request(method, path, json=json, params=params)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                failure: Exception = VenueUnavailable("ibkr", self._unreachable(error))
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as error:
                if changes:
                    raise VenueUncertain(
                        "ibkr",
                        f"no answer from the gateway ({type(error).__name__}):"
                        " the order may or may not have been changed",
                    ) from None
                failure = VenueUnavailable("ibkr", self._unreachable(error))
            if attempt == attempts - 1:
                raise failure from None
            await asyncio.sleep(0.2 * (attempt + 1))
        body = self._json(response)
        error = _error_of(body)
        if response.status_code == 401:
            self._check_session({"authenticated": False})
        if isinstance(error, str) and NOT_PRIMED in error.lower() and reprime:
            # Refused before anything was done: prime the session and ask once more.
            await self._prime()
            return await self._request(
                method, path, json=json, params=params, changes=changes, reprime=False
            )
        if response.status_code == 429:
            raise VenueUnavailable("ibkr", "the gateway's request rate limit was hit (429)")
        if response.status_code >= 500 and changes:
            raise VenueUncertain(
                "ibkr",
                f"the gateway answered {response.status_code} ({error or 'no reason'}):"
                " the order may or may not have been changed",
            )
        if response.status_code >= 400 or error:
            text = error or response.text.strip()[:200] or f"HTTP {response.status_code}"
            raise (VenueRejected if changes else VenueUnavailable)("ibkr", self._sentence(text))
        return body

    def _unreachable(self, error: Exception) -> str:
        url, kind = self.config.gateway_url, type(error).__name__
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
            return f"cannot reach the gateway at {url} ({kind}): is it running?"
        if isinstance(error, httpx.TimeoutException):
            return f"the gateway at {url} did not answer in time ({kind})"
        return f"the connection to the gateway at {url} dropped ({kind})"

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return None

    @staticmethod
    def _sentence(text: str) -> str:
        # The gateway's texts carry line breaks and trailing spaces.
        return " ".join(str(text).split()).rstrip(".")

    async def _pace(self, path: str) -> None:
        key = next((p for p in PACED if path.startswith(p)), None)
        if key is None or self.pace_s <= 0:
            return
        lock = self._pace_locks.setdefault(key, asyncio.Lock())
        async with lock:
            wait = self._paced_at.get(key, -math.inf) + self.pace_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._paced_at[key] = time.monotonic()

    # --- contracts --------------------------------------------------------------------

    async def conid(self, instrument: str) -> str:
        """IB's contract id of ``IBKR:SYMBOL``: from ``symbols``, else searched once."""
        if not self.trades(instrument):
            raise VenueRejected("ibkr", f"{instrument} is not an IBKR instrument")
        known = self.symbols.get(instrument)
        if known:
            return known
        symbol = instrument.split(":", 1)[1]
        found = await self._request("GET", "/iserver/secdef/search", params={"symbol": symbol})
        conid = _pick_stock(found if isinstance(found, list) else [], symbol)
        if conid is None:
            raise VenueRejected("ibkr", f"IBKR has no stock {symbol} (secdef search)")
        self.symbols[instrument] = conid
        return conid

    def _instrument(self, conid: Any, ticker: Any) -> str:
        for instrument, known in self.symbols.items():
            if known == str(conid):
                return instrument
        return f"IBKR:{ticker or conid}"

    # --- orders -----------------------------------------------------------------------

    def check(self, request: VenueOrderRequest) -> None:
        if not self.trades(request.instrument):
            raise VenueRejected("ibkr", f"{request.instrument} is not an IBKR instrument")
        if not (math.isfinite(request.qty) and request.qty > 0):
            raise VenueRejected("ibkr", f"the quantity must be above 0, got {request.qty}")
        if request.type not in ORDER_TYPES:
            raise VenueRejected("ibkr", f"{request.type} orders are not supported")
        if request.type != "market" and not (request.price and request.price > 0):
            raise VenueRejected("ibkr", f"a {request.type} order needs a price above 0")

    async def place(self, request: VenueOrderRequest) -> VenueOrder:
        self.check(request)
        conid = await self.conid(request.instrument)
        ticket: dict[str, Any] = {
            "conid": int(conid),
            "cOID": request.client_order_id,
            "orderType": ORDER_TYPES[request.type],
            "side": request.side.upper(),
            "quantity": int(request.qty) if float(request.qty).is_integer() else request.qty,
            "tif": request.tif.upper(),
        }
        if request.type != "market":
            ticket["price"] = request.price  # LMT: the limit; STP: the stop's trigger
        path = f"/iserver/account/{self.account_id}/orders"
        answer = await self._request("POST", path, json={"orders": [ticket]})
        answer = await self._confirm(answer, request.client_order_id)
        ack = _ack_for(answer, request.client_order_id)
        if ack is None:
            raise VenueUncertain("ibkr", f"the gateway's answer has no order id: {answer!r:.200}")
        status = venue_status(str(ack.get("order_status", "")), 0.0, request.qty)
        return VenueOrder(
            client_order_id=request.client_order_id,
            venue_order_id=str(ack["order_id"]),
            instrument=request.instrument,
            side=request.side,
            qty=request.qty,
            type=request.type,
            status=status,
            price=request.price,
            filled_qty=request.qty if status == "filled" else 0.0,
            updated_us=self.clock(),
            reason="IBKR made the order inactive (rejected)" if status == "rejected" else "",
            tif=request.tif,
        )

    async def _confirm(self, answer: Any, client_order_id: str) -> Any:
        """Answer the gateway's confirmation questions (each logged) until the order's
        acknowledgement comes back."""
        for _ in range(MAX_REPLIES):
            question = _question(answer)
            if question is None:
                return answer
            text = self._sentence(" ".join(str(m) for m in question.get("message") or []))
            log.warning("IBKR asks about order %s: %s (confirmed)", client_order_id, text)
            answer = await self._request(
                "POST", f"/iserver/reply/{question['id']}", json={"confirmed": True}
            )
        raise VenueRejected(
            "ibkr", f"the gateway kept asking to confirm order {client_order_id}; it was not sent"
        )

    async def cancel(self, order: VenueOrder) -> VenueOrder | None:
        order_id = order.venue_order_id
        if not order_id:
            found = await self.lookup(order.client_order_id, order.instrument)
            if found is None:
                raise VenueRejected("ibkr", f"no order {order.client_order_id} at IBKR to cancel")
            order_id = found.venue_order_id
        answer = await self._request(
            "DELETE", f"/iserver/account/{self.account_id}/order/{order_id}"
        )
        await self._confirm(answer, order.client_order_id)
        return None  # "Request was submitted": the next poll tells the outcome

    async def _live_orders(self, retries: int = READ_RETRIES) -> list[dict[str, Any]]:
        answer = await self._request("GET", "/iserver/account/orders", retries=retries)
        orders = (answer or {}).get("orders") or []
        return [o for o in orders if str(o.get("acct", self.account_id)) == self.account_id]

    def _order(self, wire: dict[str, Any]) -> VenueOrder:
        filled = _number(wire.get("filledQuantity"))
        remaining = _number(wire.get("remainingQuantity"))
        kind = _order_type(str(wire.get("orderType") or wire.get("origOrderType") or ""))
        price = wire.get("auxPrice") if kind == "stop" else wire.get("price")
        changed_ms = wire.get("lastExecutionTime_r")
        status = venue_status(str(wire.get("status", "")), filled, remaining)
        return VenueOrder(
            client_order_id=str(wire.get("order_ref") or f"ibkr-{wire.get('orderId')}"),
            venue_order_id=str(wire.get("orderId")),
            instrument=self._instrument(wire.get("conid"), wire.get("ticker")),
            side=str(wire.get("side", "")).lower(),
            qty=_number(wire.get("totalSize"), filled + remaining),
            type=kind,
            status=status,
            price=_number(price) or None,
            filled_qty=filled,
            avg_price=_number(wire.get("avgPrice")) or None,
            updated_us=int(changed_ms) * 1000 if changed_ms else self.clock(),
            reason="IBKR made the order inactive (rejected)" if status == "rejected" else "",
            tif=str(wire.get("timeInForce") or "gtc").lower(),
        )

    async def lookup(self, client_order_id: str, instrument: str) -> VenueOrder | None:
        """The order among the gateway's live orders (recent days only: an order older
        than the gateway's list is not found)."""
        for wire in await self._live_orders():
            order = self._order(wire)
            if order.client_order_id == client_order_id:
                return order
        return None

    async def open_orders(self) -> list[VenueOrder]:
        orders = [self._order(wire) for wire in await self._live_orders()]
        return [o for o in orders if o.status in ("new", "accepted", "partially_filled")]

    # --- fills, positions, account ------------------------------------------------------

    async def _trades(self, days: int, retries: int = READ_RETRIES) -> list[dict[str, Any]]:
        answer = await self._request(
            "GET", "/iserver/account/trades", params={"days": str(days)}, retries=retries
        )
        return answer if isinstance(answer, list) else []

    def _fill(self, wire: dict[str, Any], order_ids: dict[str, str]) -> VenueFill:
        ref = wire.get("order_ref") or None
        return VenueFill(
            venue_fill_id=str(wire["execution_id"]),
            venue_order_id=order_ids.get(ref) if ref else None,
            client_order_id=ref,
            instrument=self._instrument(wire.get("conid"), wire.get("symbol")),
            side="buy" if str(wire.get("side", "")).upper().startswith("B") else "sell",
            qty=_number(wire.get("size")),
            price=_number(wire.get("price")),
            fee=_number(wire.get("commission")),
            ts_us=int(_number(wire.get("trade_time_r"))) * 1000,
        )

    async def fills_since(self, since_us: int | None, instruments: list[str]) -> list[VenueFill]:
        """Executions of the last 7 days at most (as far back as the gateway goes)."""
        days = 7 if since_us is None else (self.clock() - since_us) // US_PER_DAY + 1
        fills = [self._fill(t, {}) for t in await self._trades(int(max(1, min(7, days))))]
        fills = [f for f in fills if since_us is None or f.ts_us >= since_us]
        return sorted(fills, key=lambda f: (f.ts_us, f.venue_fill_id))

    async def positions(self) -> list[VenuePosition]:
        # The portfolio is cached by the gateway: ask for a fresh one first.
        with contextlib.suppress(VenueUnavailable, VenueRejected, VenueUncertain):
            await self._request(
                "POST", f"/portfolio/{self.account_id}/positions/invalidate", changes=False
            )
        held: list[VenuePosition] = []
        for page in range(20):
            rows = await self._request("GET", f"/portfolio/{self.account_id}/positions/{page}")
            rows = rows if isinstance(rows, list) else []
            for row in rows:
                qty = _number(row.get("position"))
                if qty and row.get("assetClass", "STK") == "STK":
                    instrument = self._instrument(
                        row.get("conid"), row.get("ticker") or row.get("contractDesc")
                    )
                    held.append(VenuePosition(instrument, qty, _number(row.get("avgCost")) or None))
            # Pages hold 30 or 100 positions (the docs say both): a shorter one is the last.
            if len(rows) < 30:
                break
        return held

    async def account(self) -> VenueAccount:
        summary = await self._request("GET", f"/portfolio/{self.account_id}/summary")
        summary = summary if isinstance(summary, dict) else {}

        def amount(key: str) -> float | None:
            entry = summary.get(key) or {}
            return None if entry.get("isNull") else _number(entry.get("amount"), math.nan)

        equity, cash = amount("netliquidation"), amount("totalcashvalue")
        if equity is None or cash is None or math.isnan(equity) or math.isnan(cash):
            raise VenueUnavailable("ibkr", "the account summary has no net liquidation or cash")
        currency = (summary.get("netliquidation") or {}).get("currency") or "USD"
        power = amount("buyingpower")
        return VenueAccount(
            currency=currency,
            equity=equity,
            cash=cash,
            buying_power=None if power is None or math.isnan(power) else power,
            balances={currency: cash},
        )

    # --- the stream (polled) ----------------------------------------------------------

    async def stream(self) -> AsyncIterator[VenueEvent]:
        """Polls live orders and today's trades every ``poll_s``: yields StreamReady once
        the first poll has answered, then each order whose state changed and each new
        execution. A failed poll raises (the broker reconnects and reconciles)."""
        orders = await self._live_orders(retries=0)
        states = {str(o.get("orderId")): _state(o) for o in orders}
        seen = {str(t.get("execution_id")) for t in await self._trades(1, retries=0)}
        yield StreamReady()
        while True:
            await asyncio.sleep(self.poll_s)
            orders = await self._live_orders(retries=0)
            trades = await self._trades(1, retries=0)
            for wire in orders:
                key, state = str(wire.get("orderId")), _state(wire)
                if states.get(key) != state:
                    states[key] = state
                    yield self._order(wire)
            order_ids = {
                str(o["order_ref"]): str(o["orderId"]) for o in orders if o.get("order_ref")
            }
            new = [t for t in trades if str(t.get("execution_id")) not in seen]
            for wire in sorted(new, key=lambda t: _number(t.get("trade_time_r"))):
                seen.add(str(wire.get("execution_id")))
                yield self._fill(wire, order_ids)


def _state(wire: dict[str, Any]) -> tuple:
    return tuple(
        str(wire.get(k)) for k in ("status", "filledQuantity", "remainingQuantity", "avgPrice")
    )


def _pick_stock(found: list[dict[str, Any]], symbol: str) -> str | None:
    """The conid of ``symbol``'s US stock listing among secdef search results (else the
    first stock listing, else the first result with a conid)."""

    def is_stock(row: dict[str, Any]) -> bool:
        return any(s.get("secType") == "STK" for s in row.get("sections") or [])

    rows = [
        r
        for r in found
        if r.get("conid") and str(r.get("symbol", symbol)).upper() == symbol.upper()
    ]
    for choice in (
        [r for r in rows if is_stock(r) and str(r.get("description", "")).upper() in US_EXCHANGES],
        [r for r in rows if is_stock(r)],
        rows,
    ):
        if choice:
            return str(choice[0]["conid"])
    return None


def _error_of(body: Any) -> str | None:
    """The gateway's error text: ``{"error": ...}``, sometimes inside a one-item list."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    return str(error) if error else None


def _question(answer: Any) -> dict[str, Any] | None:
    """A confirmation question: ``[{"id": ..., "message": [...], "messageIds": [...]}]``."""
    rows = answer if isinstance(answer, list) else [answer]
    for row in rows:
        if isinstance(row, dict) and row.get("id") and "message" in row:
            return row
    return None


def _ack_for(answer: Any, client_order_id: str) -> dict[str, Any] | None:
    rows = [r for r in (answer if isinstance(answer, list) else [answer]) if isinstance(r, dict)]
    acks = [r for r in rows if r.get("order_id") is not None]
    mine = [r for r in acks if r.get("local_order_id") in (None, client_order_id)]
    return (mine or acks or [None])[0]
