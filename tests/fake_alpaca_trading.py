"""A fake Alpaca Trading API v2 (paper) for venue and live-broker tests: REST orders,
positions, account and FILL activities on a FakeHttpServer, the ``trade_updates``
WebSocket stream on a websockets server running in its own thread and loop.

It speaks Alpaca's documented wire format (numbers as strings, ``{"code", "message"}``
errors) and checks what Alpaca checks: the ``APCA-API-KEY-ID``/``APCA-API-SECRET-KEY``
headers (401 40110000 otherwise), the stream's auth message, a unique client order id
(422 40010001), buying power for buys (403 40310000), fractional quantities only on
market day orders (422 42210000).

Simplifications, on purpose: market hours are ignored (orders fill at any time of day);
buying power is the cash less what working buy orders reserve (no margin multiple);
a market order (or a marketable limit) fills at once in full at ``prices`` and the
POST answers with the order as it is then (filled); the paper stream's frames are
binary JSON (``binary_frames=False`` sends text frames).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Self

try:
    from fakes import FakeHttpServer, FakeRequest, FakeResponse
except ImportError:  # imported as tests.fake_alpaca_trading, e.g. from bench/
    from tests.fakes import FakeHttpServer, FakeRequest, FakeResponse

from sptrader.clock import rfc3339_to_us

KEY = "PKFAKE0ALPACA0KEY"
SECRET = "fake-alpaca-secret-0123456789"
WORKING = ("new", "accepted", "pending_new", "partially_filled", "held")
NOT_AUTHORIZED = {"code": 40110000, "message": "request is not authorized"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _num(value: float) -> str:
    text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text or "0"


def _error(status: int, code: int, message: str) -> FakeResponse:
    return FakeResponse(status, {"code": code, "message": message})


class FakeAlpacaTrading:
    def __init__(
        self, *, cash: float = 100_000.0, timeout_s: float = 1.0, binary_frames: bool = True
    ) -> None:
        self.instrument = "ALPACA:AAPL"
        self.prices: dict[str, float] = {"ALPACA:AAPL": 190.0, "ALPACA:MSFT": 410.0}
        self.orders: dict[str, dict] = {}
        self.placed = 0
        self.auth_failures = 0
        self.cash = cash
        self.activities: list[dict] = []
        self.holdings: dict[str, list[float]] = {}  # symbol -> [signed qty, avg entry price]
        self.binary_frames = binary_frames
        self.timeout_s = timeout_s
        self._lock = threading.RLock()
        self._by_id: dict[str, dict] = {}
        self._time_outs = 0
        self._failures: list[tuple[int, int, str]] = []
        self.http = FakeHttpServer(self._route)
        # Headers and body go out in separate writes: without TCP_NODELAY each answer
        # waits ~40 ms for a delayed ACK (this fake's own handler class, nobody else's).
        self.http._server.RequestHandlerClass.disable_nagle_algorithm = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queues: dict[Any, asyncio.Queue] = {}  # websocket -> its outgoing frames
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve_stream, daemon=True)
        self.ws_port = 0
        self.config: dict[str, Any] = {}
        self.env = {"FAKE_APCA_KEY_ID": KEY, "FAKE_APCA_SECRET_KEY": SECRET}

    # --- the uniform fake interface -----------------------------------------------------

    def __enter__(self) -> Self:
        self.http.__enter__()
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("the fake trade_updates stream did not start")
        self.config = {
            "trading": "live",
            "rest_url": self.http.url,
            "stream_url": f"ws://127.0.0.1:{self.ws_port}/stream",
            "key_env": "FAKE_APCA_KEY_ID",
            "secret_env": "FAKE_APCA_SECRET_KEY",
            "timeout_s": self.timeout_s,
        }
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(5)
        self.http.__exit__(*exc)

    def fill(
        self, client_order_id: str, qty: float | None = None, price: float | None = None
    ) -> None:
        with self._lock:
            order = self.orders[client_order_id]
            if order["status"] not in WORKING:
                raise ValueError(f"order {client_order_id} is {order['status']}, not working")
            left = float(order["qty"]) - float(order["filled_qty"])
            self._execute(
                order, left if qty is None else min(qty, left), price or self._price_of(order)
            )

    def place_elsewhere(
        self,
        instrument: str,
        side: str,
        qty: float,
        type: str = "limit",
        price: float | None = None,
    ) -> str:
        body: dict[str, Any] = {
            "symbol": instrument.split(":", 1)[1],
            "qty": _num(qty),
            "side": side,
            "type": type,
            "time_in_force": "gtc" if type != "market" else "day",
            "client_order_id": str(uuid.uuid4()),  # what Alpaca's dashboard gives
        }
        if type == "limit":
            body["limit_price"] = _num(price)
        elif type == "stop":
            body["stop_price"] = _num(price)
        with self._lock:
            answer = self._new_order(body)
        if answer.status != 200:
            raise ValueError(f"the fake refused the order: {answer.body}")
        return body["client_order_id"]

    def accept_then_time_out(self, count: int = 1) -> None:
        self._time_outs += count

    def drop_stream(self) -> None:
        """Cut every stream connection (no close frame: the client sees an abnormal drop)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cut_all)

    def fail_next(self, code_or_status: int, message: str) -> None:
        """The next order POST is refused: an Alpaca code (40310000, 42210000) picks its
        HTTP status; a bare HTTP status (500, 422) gets code status * 100000."""
        if code_or_status >= 10_000_000:
            status, code = code_or_status // 100_000, code_or_status
        else:
            status, code = code_or_status, code_or_status * 100_000
        self._failures.append((status, code, message))

    def streams_open(self) -> int:
        return len(self._queues)

    # --- REST -------------------------------------------------------------------------

    def _route(self, request: FakeRequest) -> FakeResponse | None:
        if (
            request.headers.get("apca-api-key-id") != KEY
            or request.headers.get("apca-api-secret-key") != SECRET
        ):
            with self._lock:
                self.auth_failures += 1
            return FakeResponse(401, NOT_AUTHORIZED)
        path, method = request.path, request.method
        if method == "POST" and path == "/v2/orders":
            return self._post_order(request)
        with self._lock:
            if method == "GET" and path == "/v2/orders":
                return FakeResponse(200, self._list_orders(request.query))
            if method == "GET" and path == "/v2/orders:by_client_order_id":
                order = self.orders.get(request.query.get("client_order_id", ""))
                return self._order_answer(order)
            if path.startswith("/v2/orders/"):
                order = self._by_id.get(path.rsplit("/", 1)[1])
                if method == "GET":
                    return self._order_answer(order)
                if method == "DELETE":
                    return self._cancel(order)
            if method == "GET" and path == "/v2/positions":
                return FakeResponse(200, self._positions())
            if method == "GET" and path == "/v2/account":
                return FakeResponse(200, self._account())
            if method == "GET" and path == "/v2/account/activities/FILL":
                return FakeResponse(200, self._fill_activities(request.query))
        return None

    def _post_order(self, request: FakeRequest) -> FakeResponse:
        try:
            body = json.loads(request.body)
        except ValueError:
            return _error(400, 40010000, "request body format is invalid")
        with self._lock:
            if self._failures:
                status, code, message = self._failures.pop(0)
                return _error(status, code, message)
            answer = self._new_order(body)
            time_out = answer.status == 200 and self._time_outs > 0
            if time_out:
                self._time_outs -= 1
        if time_out:  # accepted, but the answer arrives after the client gave up
            time.sleep(self.timeout_s + 0.5)
        return answer

    def _new_order(self, body: dict[str, Any]) -> FakeResponse:
        symbol = str(body.get("symbol", ""))
        instrument = f"ALPACA:{symbol}"
        if instrument not in self.prices:
            return _error(422, 40410000, f'asset "{symbol}" not found')
        client_id = str(body.get("client_order_id") or uuid.uuid4())
        if client_id in self.orders:
            return _error(422, 40010001, "client_order_id must be unique")
        if len(client_id) > 48:
            return _error(422, 40010000, "client_order_id must be no more than 48 characters")
        try:
            qty = float(body["qty"])
        except (KeyError, TypeError, ValueError):
            return _error(422, 40010000, "qty is required")
        kind, tif, side = body.get("type"), body.get("time_in_force"), body.get("side")
        if qty <= 0 or side not in ("buy", "sell") or kind not in ("market", "limit", "stop"):
            return _error(422, 42210000, "invalid order: check qty, side and type")
        if qty != int(qty) and (kind != "market" or tif != "day"):
            return _error(422, 42210000, "fractional orders must be market orders with day tif")
        if kind == "limit" and not body.get("limit_price"):
            return _error(422, 42210000, "limit_price is required for limit orders")
        if kind == "stop" and not body.get("stop_price"):
            return _error(422, 42210000, "stop_price is required for stop orders")
        at_price = float(
            body.get("limit_price") or body.get("stop_price") or self.prices[instrument]
        )
        if side == "buy" and qty * at_price > self._buying_power():
            return _error(403, 40310000, "insufficient buying power")
        order = self._order_object(body, client_id, symbol, kind, qty)
        order["legs"] = self._legs(body, order) or None
        self.placed += 1
        self._push("new", order)
        if kind == "market" or (kind == "limit" and self._marketable(order)):
            self._execute(order, qty, self._price_of(order))
        return FakeResponse(200, order)

    def _order_object(
        self, body: dict[str, Any], client_id: str, symbol: str, kind: str, qty: float
    ) -> dict[str, Any]:
        now = _now()
        order = {
            "id": str(uuid.uuid4()),
            "client_order_id": client_id,
            "created_at": now,
            "updated_at": now,
            "submitted_at": now,
            "filled_at": None,
            "expired_at": None,
            "canceled_at": None,
            "failed_at": None,
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
            "symbol": symbol,
            "asset_class": "us_equity",
            "notional": None,
            "qty": _num(qty),
            "filled_qty": "0",
            "filled_avg_price": None,
            "order_class": body.get("order_class") or "simple",
            "order_type": kind,
            "type": kind,
            "side": body["side"],
            "time_in_force": body.get("time_in_force", "day"),
            "limit_price": body.get("limit_price"),
            "stop_price": body.get("stop_price"),
            "status": "new",
            "extended_hours": False,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
        }
        self.orders[client_id] = order
        self._by_id[order["id"]] = order
        return order

    def _legs(self, body: dict[str, Any], parent: dict[str, Any]) -> list[dict[str, Any]]:
        """A bracket's or oto's exit orders: held until the entry fills."""
        exit_side = "sell" if parent["side"] == "buy" else "buy"
        legs = []
        for key, kind, price_key in (
            ("take_profit", "limit", "limit_price"),
            ("stop_loss", "stop", "stop_price"),
        ):
            if not body.get(key):
                continue
            leg_body = {
                "side": exit_side,
                "time_in_force": parent["time_in_force"],
                "order_class": parent["order_class"],
                price_key: body[key][price_key],
            }
            leg = self._order_object(
                leg_body, str(uuid.uuid4()), parent["symbol"], kind, float(parent["qty"])
            )
            leg["status"] = "held"
            leg["_parent"] = parent["id"]
            legs.append(leg)
        return legs

    def _list_orders(self, query: dict[str, str]) -> list[dict[str, Any]]:
        # Nested, legs hang off their entry order, which is listed while any leg works.
        nested = query.get("nested") == "true"
        only_open = query.get("status", "open") == "open"
        chosen = []
        for order in self._by_id.values():
            if nested and "_parent" in order:
                continue
            group = [order, *(order.get("legs") or [])] if nested else [order]
            if not only_open or any(each["status"] in WORKING for each in group):
                chosen.append(order)
        chosen.sort(key=lambda order: order["created_at"], reverse=True)
        return [self._wire(order) for order in chosen[: int(query.get("limit", "50"))]]

    def _order_answer(self, order: dict[str, Any] | None) -> FakeResponse:
        if order is None:
            return _error(404, 40410000, "order not found")
        return FakeResponse(200, self._wire(order))

    def _cancel(self, order: dict[str, Any] | None) -> FakeResponse:
        if order is None:
            return _error(404, 40410000, "order not found")
        if order["status"] not in WORKING:
            return _error(422, 42210000, f"order is not cancelable (it is {order['status']})")
        self._close(order, "canceled")
        for leg in order.get("legs") or []:
            if leg["status"] in WORKING:
                self._close(leg, "canceled")
        return FakeResponse(204, b"")

    def _positions(self) -> list[dict[str, Any]]:
        result = []
        for symbol, (qty, avg) in self.holdings.items():
            if qty == 0:
                continue
            price = self.prices[f"ALPACA:{symbol}"]
            result.append(
                {
                    "asset_id": str(uuid.uuid5(uuid.NAMESPACE_URL, symbol)),
                    "symbol": symbol,
                    "exchange": "NASDAQ",
                    "asset_class": "us_equity",
                    "avg_entry_price": _num(avg),
                    "qty": _num(qty),
                    "qty_available": _num(qty),
                    "side": "long" if qty > 0 else "short",
                    "market_value": _num(qty * price),
                    "cost_basis": _num(qty * avg),
                    "unrealized_pl": _num(qty * (price - avg)),
                    "current_price": _num(price),
                }
            )
        return result

    def _account(self) -> dict[str, Any]:
        market_value = sum(
            qty * self.prices[f"ALPACA:{symbol}"] for symbol, (qty, _) in self.holdings.items()
        )
        equity = self.cash + market_value
        return {
            "id": "5a6b3f0e-fake-4f00-a1a1-000000000001",
            "account_number": "PA3FAKE00001",
            "status": "ACTIVE",
            "currency": "USD",
            "cash": _num(self.cash),
            "equity": _num(equity),
            "portfolio_value": _num(equity),
            "buying_power": _num(self._buying_power()),
            "long_market_value": _num(max(market_value, 0)),
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "shorting_enabled": True,
        }

    def _fill_activities(self, query: dict[str, str]) -> list[dict[str, Any]]:
        chosen = self.activities
        if "after" in query:
            after_us = rfc3339_to_us(query["after"])
            chosen = [item for item in chosen if rfc3339_to_us(item["transaction_time"]) > after_us]
        if query.get("direction", "desc") == "desc":
            chosen = chosen[::-1]
        if "page_token" in query:
            ids = [item["id"] for item in chosen]
            if query["page_token"] in ids:
                chosen = chosen[ids.index(query["page_token"]) + 1 :]
        return chosen[: int(query.get("page_size", "100"))]

    # --- the venue's matching ---------------------------------------------------------

    def _buying_power(self) -> float:
        reserved = sum(
            (float(order["qty"]) - float(order["filled_qty"]))
            * float(order["limit_price"] or order["stop_price"] or 0)
            for order in self._by_id.values()
            if order["side"] == "buy" and order["status"] in WORKING and "_parent" not in order
        )
        return self.cash - reserved

    def _price_of(self, order: dict[str, Any]) -> float:
        market = self.prices[f"ALPACA:{order['symbol']}"]
        if order["type"] == "limit":
            limit = float(order["limit_price"])
            return min(limit, market) if order["side"] == "buy" else max(limit, market)
        return market

    def _marketable(self, order: dict[str, Any]) -> bool:
        market, limit = self.prices[f"ALPACA:{order['symbol']}"], float(order["limit_price"])
        return market <= limit if order["side"] == "buy" else market >= limit

    def _execute(self, order: dict[str, Any], qty: float, price: float) -> None:
        filled_before = float(order["filled_qty"])
        filled = filled_before + qty
        average = ((float(order["filled_avg_price"] or 0) * filled_before) + price * qty) / filled
        now = _now()
        done = filled >= float(order["qty"]) - 1e-12
        order.update(
            filled_qty=_num(filled),
            filled_avg_price=_num(round(average, 6)),
            status="filled" if done else "partially_filled",
            updated_at=now,
            filled_at=now if done else None,
        )
        signed = qty if order["side"] == "buy" else -qty
        self.cash -= signed * price
        position = self._hold(order["symbol"], signed, price)
        execution_id = str(uuid.uuid4())
        event = "fill" if done else "partial_fill"
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")[:-3]
        self.activities.append(
            {
                "id": f"{stamp}::{execution_id}",
                "activity_type": "FILL",
                "transaction_time": now,
                "type": event,
                "price": _num(price),
                "qty": _num(qty),
                "side": order["side"],
                "symbol": order["symbol"],
                "leaves_qty": _num(float(order["qty"]) - filled),
                "order_id": order["id"],
                "cum_qty": _num(filled),
                "order_status": order["status"],
            }
        )
        self._push(
            event,
            order,
            execution_id=execution_id,
            price=_num(price),
            qty=_num(qty),
            position_qty=_num(position),
            timestamp=now,
        )
        if done:
            self._after_fill(order)

    def _after_fill(self, order: dict[str, Any]) -> None:
        """An entry's exits start working; a filled exit cancels its sibling."""
        for leg in order.get("legs") or []:
            if leg["status"] == "held":
                leg.update(status="new", updated_at=_now())
                self._push("new", leg)
        parent = self._by_id.get(order.get("_parent", ""))
        for sibling in (parent or {}).get("legs") or []:
            if sibling is not order and sibling["status"] in WORKING:
                self._close(sibling, "canceled")

    def _hold(self, symbol: str, signed_qty: float, price: float) -> float:
        qty, avg = self.holdings.get(symbol, [0.0, 0.0])
        new_qty = qty + signed_qty
        if qty == 0 or (qty > 0) == (signed_qty > 0):  # opening or adding
            avg = (qty * avg + signed_qty * price) / new_qty if new_qty else 0.0
        elif (new_qty > 0) != (qty > 0) and new_qty != 0:  # flipped through zero
            avg = price
        self.holdings[symbol] = [new_qty, avg if new_qty else 0.0]
        return new_qty

    def _close(self, order: dict[str, Any], status: str) -> None:
        now = _now()
        order.update(status=status, updated_at=now)
        order[{"canceled": "canceled_at", "expired": "expired_at"}.get(status, "failed_at")] = now
        self._push(status, order)

    def _wire(self, order: dict[str, Any]) -> dict[str, Any]:
        """The order as Alpaca shows it: legs nested, no fake bookkeeping."""
        shown = {key: value for key, value in order.items() if not key.startswith("_")}
        if order.get("legs"):
            shown["legs"] = [self._wire(leg) for leg in order["legs"]]
        return shown

    # --- the trade_updates stream -------------------------------------------------------

    def _push(self, event: str, order: dict[str, Any], **fields: Any) -> None:
        data = {"event": event, "execution_id": str(uuid.uuid4()), "timestamp": _now()}
        data.update(fields)
        data["order"] = self._wire(order)
        message = json.dumps({"stream": "trade_updates", "data": data})
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._enqueue, message)

    def _enqueue(self, message: str) -> None:
        for queue in self._queues.values():
            queue.put_nowait(message)

    def _frame(self, message: dict[str, Any] | str) -> str | bytes:
        text = message if isinstance(message, str) else json.dumps(message)
        return text.encode() if self.binary_frames else text

    def _cut_all(self) -> None:
        for websocket in list(self._queues):
            websocket.transport.abort()

    def _serve_stream(self) -> None:
        from websockets.asyncio.server import serve

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            async with serve(self._handler, "127.0.0.1", 0, compression=None) as server:
                self.ws_port = next(iter(server.sockets)).getsockname()[1]
                self._ready.set()
                await self._stopped.wait()
                for websocket in list(self._queues):
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(websocket.close(1001, "shutting down"), 1)

        asyncio.run(main())

    async def _handler(self, websocket: Any) -> None:
        try:
            if not await self._authorized(websocket):
                return
            while True:  # until trade_updates is listened to
                message = json.loads(await websocket.recv())
                if message.get("action") != "listen":
                    continue
                streams = [name for name in message["data"]["streams"] if name == "trade_updates"]
                await websocket.send(
                    self._frame({"stream": "listening", "data": {"streams": streams}})
                )
                if streams:
                    break
            queue: asyncio.Queue = asyncio.Queue()
            self._queues[websocket] = queue
            closed = asyncio.ensure_future(websocket.wait_closed())
            while not closed.done():
                getting = asyncio.ensure_future(queue.get())
                await asyncio.wait({getting, closed}, return_when=asyncio.FIRST_COMPLETED)
                if not getting.done():
                    getting.cancel()
                    break
                await websocket.send(self._frame(getting.result()))
        except Exception:
            return
        finally:
            self._queues.pop(websocket, None)

    async def _authorized(self, websocket: Any) -> bool:
        message = json.loads(await asyncio.wait_for(websocket.recv(), 5))
        data = message.get("data") or {}
        # Alpaca takes both forms: {"action":"auth","key","secret"} and the older
        # {"action":"authenticate","data":{"key_id","secret_key"}}.
        given = (
            (message.get("key"), message.get("secret"))
            if message.get("action") == "auth"
            else (data.get("key_id"), data.get("secret_key"))
        )
        ok = message.get("action") in ("auth", "authenticate") and given == (KEY, SECRET)
        status = "authorized" if ok else "unauthorized"
        await websocket.send(
            self._frame(
                {"stream": "authorization", "data": {"status": status, "action": "authenticate"}}
            )
        )
        if not ok:
            with self._lock:
                self.auth_failures += 1
            await websocket.close(1008, "unauthorized")
        return ok
