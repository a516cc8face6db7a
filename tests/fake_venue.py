"""An in-memory venue for the live broker's tests (test support, no tests here).

It implements ``sptrader.venues.base.Venue`` the way a real venue behaves where the live
broker's safety depends on it: orders keyed by client id, market orders filled at once,
limits resting, partial fills on demand, a stream that can drop, a placement accepted
whose answer is lost, orders made elsewhere. The HTTP/WebSocket fakes of each real venue
(tests/fake_*_trading.py) check the wire formats; this one checks the broker.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from sptrader.venues.base import (
    StreamReady,
    Venue,
    VenueAccount,
    VenueAuthError,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenuePosition,
    VenueRejected,
    VenueUnavailable,
    VenueUncertain,
)

INSTRUMENT = "FAKE:BTCUSD"


class MemoryVenue(Venue):
    name = "binance"  # it stands in for a [brokers.binance] venue
    prefix = "FAKE"

    def __init__(self, config: object = None, **options: object) -> None:
        super().__init__(config, **options)  # type: ignore[arg-type]
        self.price = 100.0
        self.cash = 1_000_000.0
        self.orders: dict[str, VenueOrder] = {}
        self.executions: list[VenueFill] = []
        self.placed = 0
        self.lost_answers = 0  # placements accepted whose answer is lost
        self.lookups_fail = 0  # lookups that cannot reach the venue
        self.reject_next: str | None = None
        self.down = False  # refuse connections (VenueUnavailable)
        self.holdings: dict[str, float] = {}  # held before any trade here (deposits)
        self.auth_refused = False  # connect: the keys are refused
        self.connected = False
        self._queues: list[asyncio.Queue] = []
        self._ids = itertools.count(1000)
        self._trade_ids = itertools.count(1)

    # --- the venue's side (what a test does to it) ---------------------------------------

    def push(self, event: object) -> None:
        for queue in self._queues:
            queue.put_nowait(event)

    def drop_stream(self) -> None:
        for queue in self._queues:
            queue.put_nowait(None)

    def fill(
        self,
        client_order_id: str,
        qty: float | None = None,
        price: float | None = None,
        *,
        stream: bool = True,
    ) -> VenueFill:
        order = self.orders[client_order_id]
        qty = order.qty - order.filled_qty if qty is None else qty
        price = self.price if price is None else price
        total = order.filled_qty + qty
        order.avg_price = (
            price
            if not order.filled_qty
            else ((order.avg_price or 0) * order.filled_qty + price * qty) / total
        )
        order.filled_qty = total
        order.status = "filled" if total >= order.qty - 1e-12 else "partially_filled"
        order.updated_us = self.clock()
        trade = VenueFill(
            f"t{next(self._trade_ids)}",
            order.venue_order_id,
            None,
            order.instrument,
            order.side,
            qty,
            price,
            0.0,
            self.clock(),
        )
        self.executions.append(trade)
        if stream:
            self.push(trade)
            self.push(_copy(order))
        return trade

    def place_elsewhere(self, side: str = "buy", qty: float = 1.0, price: float = 90.0) -> str:
        client_id = f"web-{next(self._ids)}"
        self.orders[client_id] = VenueOrder(
            client_id,
            str(next(self._ids)),
            INSTRUMENT,
            side,
            qty,
            "limit",
            "accepted",
            price=price,
            updated_us=self.clock(),
        )
        return client_id

    # --- the Venue interface -----------------------------------------------------------

    async def connect(self) -> None:
        if self.auth_refused:
            raise VenueAuthError(self.name, "set BINANCE_API_SECRET")
        if self.down:
            raise VenueUnavailable(self.name, "connection refused")
        self.connected = True

    async def close(self) -> None:
        self.connected = False

    async def place(self, request: VenueOrderRequest) -> VenueOrder:
        if self.down:
            raise VenueUnavailable(self.name, "connection refused")
        if self.reject_next:
            reason, self.reject_next = self.reject_next, None
            raise VenueRejected(self.name, reason, code=-2010)
        if request.client_order_id in self.orders:
            raise VenueRejected(self.name, "Duplicate order sent.", code=-2010)
        self.placed += 1
        order = VenueOrder(
            request.client_order_id,
            str(next(self._ids)),
            request.instrument,
            request.side,
            request.qty,
            request.type,
            "accepted",
            price=request.price,
            updated_us=self.clock(),
            tif=request.tif,
        )
        self.orders[request.client_order_id] = order
        if request.type == "market":
            self.fill(request.client_order_id)
        if self.lost_answers:
            self.lost_answers -= 1
            raise VenueUncertain(self.name, "timed out waiting for the answer")
        self.push(_copy(order)) if request.type != "market" else None
        return _copy(order)

    async def cancel(self, order: VenueOrder) -> VenueOrder | None:
        found = self.orders.get(order.client_order_id)
        if found is None or found.status in ("filled", "cancelled", "rejected", "expired"):
            raise VenueRejected(self.name, "Unknown order sent.", code=-2011)
        found.status = "cancelled"
        self.push(_copy(found))
        return _copy(found)

    async def lookup(self, client_order_id: str, instrument: str) -> VenueOrder | None:
        if self.lookups_fail:
            self.lookups_fail -= 1
            raise VenueUnavailable(self.name, "connection refused")
        found = self.orders.get(client_order_id)
        return None if found is None else _copy(found)

    async def open_orders(self) -> list[VenueOrder]:
        return [
            _copy(o) for o in self.orders.values() if o.status in ("accepted", "partially_filled")
        ]

    async def fills_since(self, since_us: int | None, instruments: list[str]) -> list[VenueFill]:
        return [t for t in self.executions if since_us is None or t.ts_us >= since_us]

    async def positions(self) -> list[VenuePosition]:
        held: dict[str, float] = dict(self.holdings)
        for trade in self.executions:
            held[trade.instrument] = held.get(trade.instrument, 0.0) + (
                trade.qty if trade.side == "buy" else -trade.qty
            )
        return [VenuePosition(name, qty) for name, qty in held.items() if qty]

    async def account(self) -> VenueAccount:
        return VenueAccount("USD", self.cash, self.cash)

    async def stream(self) -> AsyncIterator[object]:  # type: ignore[override]
        queue: asyncio.Queue = asyncio.Queue()
        self._queues.append(queue)
        try:
            yield StreamReady()
            while True:
                event = await queue.get()
                if event is None:
                    return
                yield event
        finally:
            self._queues.remove(queue)


def _copy(order: VenueOrder) -> VenueOrder:
    return VenueOrder(**order.to_dict())
