"""``ALPACA:`` US equities (and crypto pairs like ``ALPACA:BTC/USD``) through Alpaca's
Trading API v2: REST for orders, positions, the account and FILL activities, the
``trade_updates`` WebSocket stream for order events and executions.

Wire quirks:
- Every REST call carries ``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` (read from the
  environment variables ``brokers.alpaca.key_env`` / ``secret_env``); the stream takes
  the same pair in its first message (``{"action": "auth", "key", "secret"}``).
- Numbers are strings both ways. Errors are ``{"code": 40310000, "message": ...}``.
- Our client order id is Alpaca's ``client_order_id`` (at most 48 characters, unique
  per account: a resend is refused with 40010001), so ``lookup`` asks
  ``/v2/orders:by_client_order_id``.
- ``sl``/``tp`` ride attached: ``order_class`` ``bracket`` (both) or ``oto`` (one).
  Their legs are orders of their own at Alpaca (their own ids and client ids, status
  ``held`` until the entry fills): ``open_orders`` asks un-nested, so working legs are
  listed as separate orders; the stream reports their events like any order's.
- ``reduce_only`` is not sent: Alpaca's equity orders have no such flag.
- Fractional quantities are allowed only on market day orders (and never with
  attached legs); ``check`` says so before anything is sent. Prices of $1 and more go
  in cents, below $1 in hundredths of a cent (Alpaca refuses sub-penny prices).
- The paper stream sends binary frames (JSON in bytes; MessagePack only when asked
  for, which we never do): text and bytes frames are both read as JSON.
- FILL activities do not carry the client order id: it comes from the orders this
  venue has seen, else from one ``GET /v2/orders/{id}`` per unknown order. An
  activity's id is ``<time>::<uuid>``; the uuid is taken as the fill id, the same id
  the stream's ``execution_id`` gives (Alpaca does not document that they agree: if
  they do not, a fill seen on both paths is counted by the broker's own matching).
- Equities trade commission-free: fees are 0 (crypto fees are separate CFEE
  activities, not read here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake

from sptrader.clock import rfc3339_to_us
from sptrader.config import AlpacaBrokerConfig
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
    secret,
)

log = logging.getLogger(__name__)

VENUE = "alpaca"
#: Alpaca's order statuses that are final, as ours; every other one is still working.
FINAL_STATUSES: dict[str, VenueStatus] = {
    "filled": "filled",
    "canceled": "cancelled",
    "expired": "expired",
    "rejected": "rejected",
    "replaced": "cancelled",  # replaced by a new order (another id): this one is over
}
REASONS = {
    "canceled": "cancelled at Alpaca",
    "expired": "expired at the end of its time in force",
    "rejected": "rejected by Alpaca",
    "replaced": "replaced by another order at Alpaca",
}
#: Plain words for the common error codes; the venue's own text for the others.
CODE_WORDS = {
    40110000: "the API key was refused (request is not authorized)",
    40310000: "insufficient buying power",
    40010001: "an order with this client order id already exists",
    40410000: "no such order at Alpaca",
    42910000: "too many requests: Alpaca's rate limit",
}
GET_ATTEMPTS = 3
ACTIVITY_PAGE = 100


class AlpacaVenue(Venue):
    name = "alpaca"
    prefix = "ALPACA"
    attached_protection = True
    config: AlpacaBrokerConfig

    def __init__(self, config: AlpacaBrokerConfig, **options: Any) -> None:
        super().__init__(config, **options)
        self._client: httpx.AsyncClient | None = None
        # Alpaca order id -> our client order id (FILL activities carry only the former).
        self._client_ids: dict[str, str] = {}

    # --- the session ------------------------------------------------------------------

    def _credentials(self) -> tuple[str, str]:
        key = secret(self.env, self.config.key_env, VENUE, "Alpaca API key id")
        return key, secret(self.env, self.config.secret_env, VENUE, "Alpaca API secret key")

    async def connect(self) -> None:
        key, secret_key = self._credentials()
        await self.close()
        self._client = httpx.AsyncClient(
            base_url=self.config.rest_url.rstrip("/"),
            timeout=self.config.timeout_s,
            headers={"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret_key},
        )
        account = await self._get("/v2/account")
        if account.get("trading_blocked") or account.get("account_blocked"):
            raise VenueAuthError(
                VENUE, "trading is blocked on this account (see Alpaca's dashboard)"
            )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- orders -----------------------------------------------------------------------

    def check(self, request: VenueOrderRequest) -> None:
        if not self.trades(request.instrument):
            raise VenueRejected(VENUE, f"{request.instrument} is not an Alpaca instrument")
        if not 0 < len(request.client_order_id) <= 48:
            raise VenueRejected(
                VENUE, f"client order id {request.client_order_id!r} is not 1 to 48 characters"
            )
        qty = request.qty
        if not (math.isfinite(qty) and qty > 0):
            raise VenueRejected(VENUE, f"the quantity must be more than 0, got {qty}")
        if _decimals(qty) > 9:
            raise VenueRejected(VENUE, f"{qty} has more than 9 decimals, the finest Alpaca takes")
        crypto = "/" in _symbol(request.instrument)
        if qty != int(qty) and not crypto:
            if request.type != "market" or request.tif != "day":
                raise VenueRejected(
                    VENUE,
                    f"fractional quantities ({_text(qty)} shares) are allowed only on market "
                    f"day orders at Alpaca, not on a {request.type} {request.tif} order",
                )
            if request.sl is not None or request.tp is not None:
                raise VenueRejected(
                    VENUE,
                    f"an order with a stop-loss or take-profit needs whole shares, not {_text(qty)}",
                )
        if request.type != "market" and request.price is None:
            raise VenueRejected(VENUE, f"a {request.type} order needs a price")
        for what, price in (
            ("price", request.price),
            ("stop-loss", request.sl),
            ("take-profit", request.tp),
        ):
            if price is None:
                continue
            if not (math.isfinite(price) and price > 0):
                raise VenueRejected(VENUE, f"the {what} must be more than 0, got {price}")
            places = 2 if price >= 1 else 4
            if not crypto and _decimals(price) > places:
                raise VenueRejected(
                    VENUE,
                    f"the {what} {price} is finer than Alpaca allows "
                    f"({places} decimals at {'$1 and above' if places == 2 else 'under $1'})",
                )

    def _order_body(self, request: VenueOrderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "symbol": _symbol(request.instrument),
            "qty": _text(request.qty),
            "side": request.side,
            "type": request.type,
            "time_in_force": request.tif,
            "client_order_id": request.client_order_id,
        }
        if request.type == "limit":
            body["limit_price"] = _text(request.price)
        elif request.type == "stop":
            body["stop_price"] = _text(request.price)
        if request.sl is not None or request.tp is not None:
            both = request.sl is not None and request.tp is not None
            body["order_class"] = "bracket" if both else "oto"
            if request.tp is not None:
                body["take_profit"] = {"limit_price": _text(request.tp)}
            if request.sl is not None:
                body["stop_loss"] = {"stop_price": _text(request.sl)}
        return body

    async def place(self, request: VenueOrderRequest) -> VenueOrder:
        self.check(request)
        response = await self._change("POST", "/v2/orders", json=self._order_body(request))
        if response.status_code >= 400:
            raise _refusal(response, f"{_text(request.qty)} {_symbol(request.instrument)}")
        return self._order(response.json())

    async def cancel(self, order: VenueOrder) -> VenueOrder | None:
        venue_id = order.venue_order_id
        if venue_id is None:
            found = await self.lookup(order.client_order_id, order.instrument)
            if found is None:
                raise VenueRejected(VENUE, f"Alpaca has no order {order.client_order_id}")
            venue_id = found.venue_order_id
        response = await self._change("DELETE", f"/v2/orders/{venue_id}")
        if response.status_code >= 400:
            raise _refusal(response)
        # 204 has no body: the order's state after, asked once (the stream tells anyway).
        try:
            return self._order(await self._get(f"/v2/orders/{venue_id}"))
        except (VenueUnavailable, VenueRejected):
            return None

    async def lookup(self, client_order_id: str, instrument: str) -> VenueOrder | None:
        found = await self._get(
            "/v2/orders:by_client_order_id",
            params={"client_order_id": client_order_id},
            missing_ok=True,
        )
        return None if found is None else self._order(found)

    async def open_orders(self) -> list[VenueOrder]:
        # Not nested: a bracket's legs come as orders of their own, also once the entry
        # has filled (nested, a filled entry's working legs would hang off a closed order).
        answer = await self._get(
            "/v2/orders", params={"status": "open", "limit": "500", "nested": "false"}
        )
        orders: dict[str, VenueOrder] = {}
        for item in answer:
            for each in (item, *(item.get("legs") or [])):  # legs, should they come nested
                order = self._order(each)
                if order.status not in FINAL_STATUSES.values():
                    orders[order.venue_order_id or order.client_order_id] = order
        return list(orders.values())

    async def fills_since(self, since_us: int | None, instruments: list[str]) -> list[VenueFill]:
        params = {"direction": "asc", "page_size": str(ACTIVITY_PAGE)}
        if since_us is not None:
            # ``after`` is exclusive: one microsecond earlier keeps a fill at since_us.
            params["after"] = _rfc3339(since_us - 1)
        fills: list[VenueFill] = []
        while True:
            page = await self._get("/v2/account/activities/FILL", params=params)
            for activity in page:
                fill = await self._activity_fill(activity)
                if since_us is None or fill.ts_us >= since_us:
                    fills.append(fill)
            if len(page) < ACTIVITY_PAGE:
                return fills
            params["page_token"] = page[-1]["id"]

    async def _activity_fill(self, activity: dict[str, Any]) -> VenueFill:
        order_id = activity.get("order_id")
        client_id = self._client_ids.get(order_id) if order_id else None
        if order_id and client_id is None:
            # Asked once per unknown order; if that fails the broker maps it by order id.
            with contextlib.suppress(VenueUnavailable, VenueRejected):
                self._order(await self._get(f"/v2/orders/{order_id}"))
            client_id = self._client_ids.get(order_id)
        return VenueFill(
            venue_fill_id=str(activity["id"]).rsplit("::", 1)[-1],
            venue_order_id=order_id,
            client_order_id=client_id,
            instrument=f"{self.prefix}:{activity['symbol']}",
            side=activity["side"],
            qty=float(activity["qty"]),
            price=float(activity["price"]),
            fee=0.0,
            ts_us=_us(activity["transaction_time"]),
            fee_asset="USD",
        )

    async def positions(self) -> list[VenuePosition]:
        result = []
        for item in await self._get("/v2/positions"):
            qty = abs(float(item["qty"]))
            result.append(
                VenuePosition(
                    f"{self.prefix}:{item['symbol']}",
                    -qty if item.get("side") == "short" or float(item["qty"]) < 0 else qty,
                    _float(item.get("avg_entry_price")),
                )
            )
        return result

    async def account(self) -> VenueAccount:
        item = await self._get("/v2/account")
        currency = item.get("currency") or "USD"
        cash = float(item["cash"])
        return VenueAccount(
            currency=currency,
            equity=float(item["equity"]),
            cash=cash,
            buying_power=_float(item.get("buying_power")),
            balances={currency: cash},
        )

    # --- the stream -------------------------------------------------------------------

    async def stream(self) -> AsyncIterator[VenueEvent]:
        key, secret_key = self._credentials()
        timeout = self.config.timeout_s
        try:
            async with ws_connect(
                self.config.stream_url, open_timeout=timeout, max_size=2**22
            ) as websocket:
                async with asyncio.timeout(timeout * 2):
                    await websocket.send(
                        json.dumps({"action": "auth", "key": key, "secret": secret_key})
                    )
                    reply = await _next_message(websocket, "authorization")
                    if reply.get("data", {}).get("status") != "authorized":
                        raise VenueAuthError(
                            VENUE,
                            "the trade_updates stream refused the API key: check "
                            f"{self.config.key_env} and {self.config.secret_env}",
                        )
                    await websocket.send(
                        json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}})
                    )
                    reply = await _next_message(websocket, "listening")
                    if "trade_updates" not in reply.get("data", {}).get("streams", []):
                        raise VenueUnavailable(VENUE, "the stream did not subscribe trade_updates")
                yield StreamReady()
                async for frame in websocket:
                    message = _decode(frame)
                    if message is None or message.get("stream") != "trade_updates":
                        continue
                    for event in self._trade_update(message.get("data") or {}):
                        yield event
        except ConnectionClosedOK:
            return
        except ConnectionClosed as closed:
            raise VenueUnavailable(VENUE, f"the trade_updates stream dropped ({closed})") from None
        except (OSError, InvalidHandshake, TimeoutError) as error:
            raise VenueUnavailable(
                VENUE, f"cannot open the trade_updates stream: {error or type(error).__name__}"
            ) from None

    def _trade_update(self, data: dict[str, Any]) -> list[VenueEvent]:
        """One trade_updates event: the execution first (fill/partial_fill), then the
        order's new state."""
        try:
            order = self._order(data["order"])
        except (KeyError, TypeError, ValueError) as error:
            log.warning("Alpaca trade update without a readable order skipped: %s", error)
            return []
        events: list[VenueEvent] = []
        if data.get("event") in ("fill", "partial_fill"):
            try:
                events.append(
                    VenueFill(
                        venue_fill_id=str(data.get("execution_id") or data["id"]),
                        venue_order_id=order.venue_order_id,
                        client_order_id=order.client_order_id,
                        instrument=order.instrument,
                        side=order.side,
                        qty=float(data["qty"]),
                        price=float(data["price"]),
                        fee=0.0,
                        ts_us=_us(data["timestamp"]),
                        fee_asset="USD",
                    )
                )
            except (KeyError, TypeError, ValueError) as error:
                # Reconciliation (fills_since) still finds this execution.
                log.warning(
                    "Alpaca %s event without its execution skipped: %s", data.get("event"), error
                )
        events.append(order)
        return events

    # --- wire -------------------------------------------------------------------------

    def _order(self, item: dict[str, Any]) -> VenueOrder:
        """An Alpaca order object as ours (and its id remembered for FILL activities)."""
        venue_id = str(item["id"])
        client_id = str(item.get("client_order_id") or venue_id)
        self._client_ids[venue_id] = client_id
        kind = item.get("type") or item.get("order_type") or "market"
        filled = _float(item.get("filled_qty")) or 0.0
        alpaca_status = item.get("status", "")
        status = FINAL_STATUSES.get(alpaca_status)
        if status is None:  # new, accepted, pending_new, held, done_for_day, pending_cancel...
            status = "partially_filled" if filled > 0 else "accepted"
        price = _float(item.get("stop_price" if kind == "stop" else "limit_price"))
        return VenueOrder(
            client_order_id=client_id,
            venue_order_id=venue_id,
            instrument=f"{self.prefix}:{item['symbol']}",
            side=item["side"],
            qty=_float(item.get("qty")) or filled,  # a notional order has no qty
            type=kind,
            status=status,
            price=price,
            filled_qty=filled,
            avg_price=_float(item.get("filled_avg_price")),
            updated_us=_us(item.get("updated_at") or item.get("created_at")),
            reason=REASONS.get(alpaca_status, ""),
            tif=item.get("time_in_force") or "day",
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise VenueUnavailable(VENUE, "not connected (connect first)")
        return self._client

    async def _get(
        self, path: str, *, params: dict[str, str] | None = None, missing_ok: bool = False
    ) -> Any:
        """A read, tried again a couple of times when the connection or Alpaca fails."""
        problem = ""
        for attempt in range(GET_ATTEMPTS):
            if attempt:
                await asyncio.sleep(0.2 * attempt)
            try:
                response = await self._http().get(path, params=params)
            except httpx.TransportError as error:
                problem = f"{type(error).__name__} {error}".strip()
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}"
                continue
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code >= 400:
                raise _refusal(response)
            return response.json()
        raise VenueUnavailable(VENUE, f"GET {path} failed {GET_ATTEMPTS} times ({problem})")

    async def _change(self, method: str, path: str, **options: Any) -> httpx.Response:
        """An order-changing request, sent once: its fate is unknown when the answer is lost."""
        what = f"{method} {path}"
        try:
            response = await self._http().request(method, path, **options)
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            raise VenueUnavailable(VENUE, f"cannot reach Alpaca ({type(error).__name__})") from None
        except httpx.TimeoutException:
            raise VenueUncertain(
                VENUE, f"no answer to {what} within {self.config.timeout_s:g} s"
            ) from None
        except httpx.TransportError as error:
            raise VenueUncertain(
                VENUE, f"the connection failed during {what} ({type(error).__name__})"
            ) from None
        if response.status_code == 429:
            raise VenueUnavailable(VENUE, CODE_WORDS[42910000], code=42910000)
        if response.status_code >= 500:
            raise VenueUncertain(VENUE, f"Alpaca answered {what} with HTTP {response.status_code}")
        return response


# --- helpers ----------------------------------------------------------------------------


def _refusal(response: httpx.Response, about: str = "") -> VenueRejected | VenueAuthError:
    """Alpaca's error answer as one sentence with its code."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    text = str(body.get("message") or response.reason_phrase or "refused").strip().rstrip(".")
    status = response.status_code
    if status == 401 or code == 40110000 or (status == 403 and code is None):
        return VenueAuthError(
            VENUE, "the API key was refused (check the key id and secret key)", code=code or status
        )
    if status == 404 and code is None:
        code = 40410000
    sentence = CODE_WORDS.get(code, text) if isinstance(code, int) else text
    if code == 40310000 and about:
        sentence = f"{sentence} for {about}"
    return VenueRejected(VENUE, sentence, code=code if code is not None else status)


async def _next_message(websocket: Any, stream: str) -> dict[str, Any]:
    """The next control message of ``stream`` (anything else before it is skipped)."""
    while True:
        message = _decode(await websocket.recv())
        if message is not None and message.get("stream") == stream:
            return message


def _decode(frame: str | bytes) -> dict[str, Any] | None:
    try:
        message = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        log.warning("Alpaca stream frame that is not JSON skipped (%d bytes)", len(frame))
        return None
    return message if isinstance(message, dict) else None


def _symbol(instrument: str) -> str:
    return instrument.split(":", 1)[1]


def _text(number: float | None) -> str:
    """A number as Alpaca wants it: a string, exactly the float's shortest form."""
    text = format(Decimal(repr(float(number))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _decimals(number: float) -> int:
    exponent = Decimal(repr(float(number))).normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _float(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def _us(text: str | None) -> int:
    return rfc3339_to_us(text) if text else 0


def _rfc3339(ts_us: int) -> str:
    moment = datetime.fromtimestamp(ts_us // 1_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_us % 1_000_000:06d}Z"
