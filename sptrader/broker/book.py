"""The paper account in memory: open orders matched against quotes, positions, risk.

Synchronous and free of I/O (the service persists what it returns), so the same code is
tested directly, run on the engine's loop, and benchmarked. Every call that changes
something returns a ``Changes``: the orders whose state changed and the new fills.

Orders fill whole unless ``[broker] max_volume_share`` caps them: then one quote fills
at most that share of the size at its touch (the ask size for a buy, the bid size for a
sell), shared by every order on that side and quote (a quote seen again, with the same
time, has no new size); the rest stays working for the next quotes, the order's
``filled_qty`` and ``avg_price`` tracking its fills. A quote with no size (0: the feed
gives none) fills whole. A resting entry is checked against the limits when it first
triggers, for its whole quantity; its later fills are of an order already accepted. A
stop that has filled part is triggered: the rest fills like a market order. An entry's
stop-loss and take-profit come with its first fill that leaves the position on the
entry's side, and grow with its later fills; a fill of either (a stop-loss's first, a
take-profit's last) cancels the other, and a fill of either cancels what the entry has
not filled yet.

Trailing stop-losses (an entry's ``trail``/``trail_pct``) start from the quote the entry
fills on (the bid for a long, the ask for a short) and are ratcheted by every later
quote, after it is checked against them (:mod:`sptrader.broker.realism`).

``[broker] latency_ms``: an order a trader or a scanner places fills only on quotes
timed at least that long after it was placed (stop-losses and take-profits, placed by
the book at a fill as a venue would, have none).

Positions are marked where they could be closed: longs at the bid, shorts at the ask (or,
until an instrument's first live quote, at ``fallback_marks``). Stop-losses, take-profits
and closing orders close only what is left of the position, never flip it; a fill that
leaves a position flat or reverses it cancels those of the old position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sptrader.broker import risk
from sptrader.broker.fill_model import FillModel
from sptrader.broker.ids import Ids
from sptrader.broker.ledger import QTY_EPSILON, Ledger
from sptrader.broker.orders import (
    Fill,
    Order,
    OrderRequest,
    OrderResult,
    Rejection,
    opposite,
    side_sign,
    validate,
)
from sptrader.broker.realism import (
    quote_capacity,
    ratchet,
    ratchet_threshold,
    take,
    trail_level,
)
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import UsageError
from sptrader.models import US_PER_DAY


@dataclass(slots=True)
class Quote:
    bid: float
    ask: float
    ts_us: int
    bid_size: float = 0.0  # 0: not given
    ask_size: float = 0.0


@dataclass
class Changes:
    orders: dict[int, Order] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.orders or self.fills)

    def add(self, other: Changes) -> None:
        self.orders.update(other.orders)
        self.fills.extend(other.fills)


def day_start(ts_us: int) -> int:
    return ts_us - ts_us % US_PER_DAY


class PaperBook:
    def __init__(
        self,
        broker: BrokerConfig,
        limits: RiskConfig,
        *,
        ledger: Ledger | None = None,
        open_orders: list[Order] | None = None,
        next_order_id: int = 1,
        next_fill_id: int = 1,
        stale: Callable[[str], str | None] = lambda instrument: None,
        ids: Ids | None = None,
        halted: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.config = broker
        self.limits = limits
        self.model = FillModel(broker.slippage_bps, broker.fee_bps, broker.fee_per_unit)
        self.ledger = ledger if ledger is not None else Ledger(broker.starting_cash)
        self.orders: dict[int, Order] = {order.order_id: order for order in open_orders or []}
        #: Open orders by instrument (read-only outside the book: the service checks it
        #: per quote to skip instruments with nothing working).
        self.working: dict[str, dict[int, Order]] = {}
        for order in self.orders.values():
            self.working.setdefault(order.instrument, {})[order.order_id] = order
        #: Shared with the live brokers (one id sequence per store).
        self.ids = ids if ids is not None else Ids(next_order_id, next_fill_id)
        self.quotes: dict[str, Quote] = {}
        #: Marks for positions without a live quote yet (the last stored close after a
        #: restart); never used to fill or to pass the no-quote rule.
        self.fallback_marks: dict[str, float] = {}
        #: Per instrument with working orders, the touch prices between which none of
        #: them triggers (see ``_trigger_bounds``): a quote inside is two comparisons.
        self._bounds: dict[str, tuple[float, float, float, float, float]] = {}
        #: Why the last order refused when it triggered was refused (see ``place``).
        self._last_rejection: Rejection | None = None
        #: Why an instrument's quotes cannot be trusted (None: live); the engine's view.
        self.stale = stale
        #: Why new entries are refused now (``sptrader halt``), or None.
        self.halted = halted
        self.day_start_us: int | None = None
        self.day_start_equity: float | None = None
        #: The volume cap (0: off) and the placing latency (µs) of [broker].
        self.share = broker.max_volume_share
        self.latency_us = round(broker.latency_ms * 1000)
        #: Per instrument, the size left to fill at the touch of its newest quote:
        #: [quote time, buy room, sell room] (only with the volume cap on).
        self._room: dict[str, list[float]] = {}

    @property
    def next_order_id(self) -> int:
        return self.ids.next_order_id

    @property
    def next_fill_id(self) -> int:
        return self.ids.next_fill_id

    # --- the account ------------------------------------------------------------------

    def mark(self, instrument: str) -> float | None:
        position = self.ledger.positions.get(instrument)
        quote = self.quotes.get(instrument)
        if quote is None:
            return self.fallback_marks.get(instrument)
        if position is not None and position.qty < 0:
            return quote.ask
        return quote.bid

    def marks(self) -> dict[str, float | None]:
        return {p.instrument: self.mark(p.instrument) for p in self.ledger.open_positions()}

    def equity(self) -> float:
        return self.ledger.equity(self.marks())

    def roll_day(self, now_us: int, start_equity: float | None = None) -> None:
        """Start a new UTC day's P&L at ``now_us``'s day (equity now, or the given one:
        the service passes the equity at midnight rebuilt from fills after a restart)."""
        start = day_start(now_us)
        if self.day_start_us != start:
            self.day_start_us = start
            self.day_start_equity = self.equity() if start_equity is None else start_equity

    def day_pnl(self) -> float:
        if self.day_start_equity is None:
            return 0.0
        return self.equity() - self.day_start_equity

    def account(self) -> dict[str, float | int | str]:
        marks = self.marks()
        unrealized = self.ledger.unrealized(marks)
        return {
            "currency": self.config.currency,
            "starting_cash": self.ledger.starting_cash,
            "cash": self.ledger.cash(),
            "equity": self.ledger.cash() + unrealized,
            "unrealized": unrealized,
            "realized": self.ledger.realized,
            "fees": self.ledger.fees,
            "exposure": self.ledger.exposure(marks),
            "day_pnl": self.day_pnl(),
            "open_positions": len(self.ledger.open_positions()),
            "open_orders": sum(1 for order in self.orders.values() if order.is_open),
        }

    def positions(self) -> list[dict[str, object]]:
        return [
            p.to_dict(self.mark(p.instrument))
            for p in sorted(self.ledger.open_positions(), key=lambda p: p.instrument)
        ]

    def open_orders(self) -> list[Order]:
        return sorted(
            (order for order in self.orders.values() if order.is_open),
            key=lambda order: order.order_id,
        )

    # --- placing and cancelling -------------------------------------------------------

    def place(self, request: OrderRequest, now_us: int) -> tuple[OrderResult, Changes]:
        """Validate, size, check the limits, then fill at once (market, or a limit or
        stop already crossed) or rest. A UsageError is raised for a malformed request;
        a refused one comes back as a rejected order."""
        quote = self.quotes.get(request.instrument)
        reference = None if quote is None else (quote.ask if request.side == "buy" else quote.bid)
        validate(request, reference)
        self.roll_day(now_us)
        self._last_rejection = None
        changes = Changes()
        expected = request.price if request.type != "market" else reference
        qty = request.qty
        if request.risk_pct is not None:
            assert request.sl is not None  # validate() requires it
            if expected is None:
                raise UsageError(f"no quote for {request.instrument} yet to size the order from")
            qty = risk.size_from_risk(self.equity(), request.risk_pct, expected, request.sl)
            if qty <= 0:
                raise UsageError("the stop is at the entry price: no size can be computed")
        assert qty is not None
        qty = float(qty)
        order = self._new_order(request, qty, now_us)
        rejection = self._check(order, expected)
        if rejection is not None:
            self._finish(order, "rejected", now_us, rejection.message, changes)
            return OrderResult(order, [], rejection), changes
        self._rest(order, changes)
        if quote is not None and not self.latency_us:  # the quote at hand is too early
            changes.add(self._try_fill(order, quote, now_us))
        result_fills = [fill for fill in changes.fills if fill.order_id == order.order_id]
        rejected = None
        if order.status == "rejected":
            rejected = self._last_rejection or Rejection("risk", order.reason)
        return OrderResult(order, result_fills, rejected), changes

    def refuse(
        self, request: OrderRequest, now_us: int, limit: str, message: str
    ) -> tuple[OrderResult, Changes]:
        """Record a request that cannot even be placed (a scanner's signal with no price
        to size from, or a malformed one) as a rejected order, so it shows in the order
        history with its reason."""
        changes = Changes()
        order = self._new_order(request, request.qty if request.qty is not None else 0.0, now_us)
        self._finish(order, "rejected", now_us, message, changes)
        return OrderResult(order, [], Rejection(limit, message)), changes

    def cancel(
        self, order_id: int, now_us: int, reason: str = "cancelled"
    ) -> tuple[Order, Changes]:
        order = self.orders.get(order_id)
        if order is None or not order.is_open:
            known = "not open" if order is not None else "not an open order"
            raise UsageError(f"order {order_id} is {known}")
        changes = Changes()
        self._finish(order, "cancelled", now_us, reason, changes)
        return order, changes

    def close_position(
        self, instrument: str, now_us: int, source: str = "close"
    ) -> tuple[OrderResult, Changes]:
        """A market order for the whole position; once it fills, the position's
        stop-loss and take-profit go (if it is refused, they stay: the position is
        still open and still protected)."""
        position = self.ledger.positions.get(instrument)
        if position is None or position.is_flat:
            raise UsageError(f"no open position in {instrument}")
        request = OrderRequest(
            instrument,
            "sell" if position.qty > 0 else "buy",
            qty=abs(position.qty),
            role="close",
            source=source,
        )
        return self.place(request, now_us)

    def set_quote(
        self,
        instrument: str,
        ts_us: int,
        bid: float,
        ask: float,
        bid_size: float = 0.0,
        ask_size: float = 0.0,
    ) -> None:
        """Record a quote without matching (for marks: an instrument with no working
        orders, whose every quote need not be checked)."""
        quote = self.quotes.get(instrument)
        if quote is None:
            self.quotes[instrument] = Quote(bid, ask, ts_us, bid_size, ask_size)
        else:
            quote.bid, quote.ask, quote.ts_us = bid, ask, ts_us
            quote.bid_size, quote.ask_size = bid_size, ask_size

    # --- quotes -----------------------------------------------------------------------

    def on_quote(
        self,
        instrument: str,
        ts_us: int,
        bid: float,
        ask: float,
        bid_size: float = 0.0,
        ask_size: float = 0.0,
    ) -> Changes | None:
        """Record the quote, fill what it triggers, then move the trailing stops it
        improves (None: nothing changed)."""
        quote = self.quotes.get(instrument)
        if quote is None:
            quote = self.quotes[instrument] = Quote(bid, ask, ts_us, bid_size, ask_size)
        else:
            quote.bid, quote.ask, quote.ts_us = bid, ask, ts_us
            quote.bid_size, quote.ask_size = bid_size, ask_size
        working = self.working.get(instrument)
        if not working:
            return None
        bounds = self._bounds.get(instrument)
        if bounds is None:
            bounds = self._bounds[instrument] = _trigger_bounds(working.values())
        buy_limit, buy_stop, sell_limit, sell_stop, expires = bounds
        if buy_limit < ask < buy_stop and sell_stop < bid < sell_limit and ts_us < expires:
            return None  # the common case: nothing here triggers or trails on this quote
        changes: Changes | None = None
        latency = self.latency_us
        trailing = False
        for order in list(working.values()):
            if not order.is_open:
                continue
            if order.expires_us is not None and ts_us >= order.expires_us:
                changes = changes or Changes()
                self._finish(order, "expired", ts_us, "day order expired", changes)
                continue
            if order.role == "sl" and order.trailing:
                trailing = True
            if latency and order.role in ("entry", "close") and ts_us < order.created_us + latency:
                continue  # not at the market yet
            kind = _fill_type(order)
            if self.model.quote_fill(order.side, kind, order.price, bid, ask) is None:
                continue
            changes = changes or Changes()
            changes.add(self._try_fill(order, quote, ts_us))
        if trailing:
            moved = self._trail(working, quote, ts_us)
            if moved:
                changes = changes or Changes()
                changes.add(moved)
        return changes

    def expire(self, now_us: int) -> Changes:
        """Day orders past their day (also called on a timer: quiet markets expire too)."""
        changes = Changes()
        for order in list(self.orders.values()):
            if order.is_open and order.expires_us is not None and now_us >= order.expires_us:
                self._finish(order, "expired", now_us, "day order expired", changes)
        return changes

    # --- inside -----------------------------------------------------------------------

    def _new_order(self, request: OrderRequest, qty: float, now_us: int) -> Order:
        return Order(
            order_id=self._take_order_id(),
            instrument=request.instrument,
            side=request.side,
            qty=qty,
            type=request.type,
            price=request.price,
            tif=request.tif,
            created_us=now_us,
            updated_us=now_us,
            sl=request.sl,
            tp=request.tp,
            role=request.role,
            source=request.source,
            expires_us=day_start(now_us) + US_PER_DAY if request.tif == "day" else None,
            trail=request.trail,
            trail_pct=request.trail_pct,
        )

    def _take_order_id(self) -> int:
        return self.ids.order()

    def _rest(self, order: Order, changes: Changes) -> None:
        self._bounds.pop(order.instrument, None)
        self.orders[order.order_id] = order
        self.working.setdefault(order.instrument, {})[order.order_id] = order
        changes.orders[order.order_id] = order

    def _finish(
        self, order: Order, status: str, now_us: int, reason: str, changes: Changes
    ) -> None:
        order.status = status
        order.updated_us = now_us
        order.reason = reason
        self._bounds.pop(order.instrument, None)
        self.orders.pop(order.order_id, None)
        working = self.working.get(order.instrument)
        if working is not None:
            working.pop(order.order_id, None)
        changes.orders[order.order_id] = order

    def _check(self, order: Order, expected: float | None) -> Rejection | None:
        stale = self.stale(order.instrument)
        if stale is None and order.instrument not in self.quotes and order.type == "market":
            stale = "no quote yet"
        if expected is None:
            expected = order.price or 0.0
        signed = order.qty * side_sign(order.side)
        marks = self.marks()  # once: equity and the day's P&L are at the same marks
        equity = self.ledger.equity(marks)
        start = self.day_start_equity
        return risk.check(
            risk.Proposal(order.instrument, signed, expected, order.sl),
            self.limits,
            self.ledger,
            marks,
            equity=equity,
            day_pnl=0.0 if start is None else equity - start,
            stale=stale,
            halted=self.halted(),
        )

    def _try_fill(self, order: Order, quote: Quote, now_us: int) -> Changes:
        changes = Changes()
        kind = _fill_type(order)
        price = self.model.quote_fill(order.side, kind, order.price, quote.bid, quote.ask)
        if price is None:
            return changes
        remaining = order.remaining
        if order.role in ("sl", "tp", "close"):
            # Protective and closing orders close what is left of the position, never
            # flip it (another order may have closed part of it since they were placed).
            position = self.ledger.positions.get(order.instrument)
            left = 0.0 if position is None else -position.qty * side_sign(order.side)
            if left <= QTY_EPSILON:
                self._finish(order, "cancelled", now_us, "position already closed", changes)
                return changes
            if remaining > left:
                order.qty = order.filled_qty + left
                remaining = left
        elif order.type != "market" and order.filled_qty == 0:
            # A resting entry is checked again when it triggers: the account has moved
            # (and a new UTC day may have begun since the last order).
            self.roll_day(now_us)
            rejection = self._check(order, price)
            self._last_rejection = rejection
            if rejection is not None:
                self._finish(order, "rejected", now_us, rejection.message, changes)
                return changes
        qty = remaining
        if self.share:
            room = self._room_of(order.instrument, quote)
            at = 1 if order.side == "buy" else 2
            qty = take(remaining, room[at])
            if not qty:
                return changes  # this quote's size is taken: the order waits for the next
            room[at] -= qty
        fill = Fill(
            self.ids.fill(),
            order.order_id,
            order.instrument,
            order.side,
            qty,
            price,
            self.model.fee(qty, price),
            now_us,
        )
        position = self.ledger.position(order.instrument)
        before = position.qty
        self.ledger.apply(fill)
        changes.fills.append(fill)
        first_fill = order.filled_qty == 0
        if first_fill:
            order.avg_price = price
        else:
            assert order.avg_price is not None
            order.avg_price = (order.avg_price * order.filled_qty + price * qty) / (
                order.filled_qty + qty
            )
        order.filled_qty += qty
        done = order.remaining <= QTY_EPSILON
        if done:
            self._finish(order, "filled", now_us, "", changes)
        else:
            # Partly filled: it keeps working (a stop, now triggered, as a market order).
            order.updated_us = now_us
            self._bounds.pop(order.instrument, None)
            changes.orders[order.order_id] = order
        if order.role in ("sl", "tp") and order.parent_id is not None:
            # One-cancels-the-other: a stop-loss's first fill (it is triggered) or a
            # take-profit's last; and either stops the entry's unfilled rest.
            name = "stop-loss" if order.role == "sl" else "take-profit"
            for other in list(self.working.get(order.instrument, {}).values()):
                if not other.is_open or other is order:
                    continue
                sibling = other.parent_id == order.parent_id and (order.role == "sl" or done)
                if sibling or other.order_id == order.parent_id:
                    self._finish(other, "cancelled", now_us, f"{name} filled", changes)
        flipped = abs(before) > QTY_EPSILON and before * position.qty < 0
        if position.is_flat or flipped:
            # The old position's stop-losses, take-profits and closing orders have
            # nothing to do now (an entry's own, for the new position, come below).
            for other in list(self.working.get(order.instrument, {}).values()):
                if other.role in ("sl", "tp", "close") and other.is_open:
                    why = "position closed" if position.is_flat else "position reversed"
                    self._finish(other, "cancelled", now_us, why, changes)
        if order.role == "entry" and (
            order.sl is not None or order.tp is not None or order.trailing
        ):
            sign = side_sign(order.side)
            on_its_side = position.qty * sign > QTY_EPSILON
            # Protected from the fill that takes the position to the entry's side (a
            # reversal's covering fills leave the old position's protection working).
            if on_its_side and (first_fill or before * sign <= QTY_EPSILON):
                self._protect(order, quote, now_us, changes)
            elif on_its_side:
                self._grow_protection(order, now_us, changes)
        return changes

    def _protect(self, entry: Order, quote: Quote, now_us: int, changes: Changes) -> None:
        """The entry's stop-loss and take-profit, for the filled quantity, OCO. A trailing
        stop-loss starts from this quote's price on its side (at least ``sl``)."""
        closing = opposite(entry.side)
        stop = entry.sl
        if entry.trailing:
            best = quote.bid if closing == "sell" else quote.ask
            level = trail_level(closing, best, entry.trail, entry.trail_pct)
            stop = level if stop is None else ratchet(closing, stop, level)
        for role, order_type, price in (("sl", "stop", stop), ("tp", "limit", entry.tp)):
            if price is None:
                continue
            child = Order(
                order_id=self._take_order_id(),
                instrument=entry.instrument,
                side=closing,
                qty=entry.filled_qty,
                type=order_type,
                price=price,
                tif="gtc",
                created_us=now_us,
                updated_us=now_us,
                role=role,
                parent_id=entry.order_id,
                source=entry.source,
            )
            if role == "sl":
                child.trail, child.trail_pct = entry.trail, entry.trail_pct
            self._rest(child, changes)
        # A stop already crossed at the entry's own fill triggers at once.
        for child in [o for o in changes.orders.values() if o.parent_id == entry.order_id]:
            if child.is_open:
                changes.add(self._try_fill(child, quote, now_us))

    def _grow_protection(self, entry: Order, now_us: int, changes: Changes) -> None:
        """A later fill of the entry: its working stop-loss and take-profit cover it too."""
        for child in list(self.working.get(entry.instrument, {}).values()):
            grows = child.parent_id == entry.order_id and child.qty != entry.filled_qty
            if grows and child.is_open:
                child.qty = entry.filled_qty
                child.updated_us = now_us
                changes.orders[child.order_id] = child

    def _trail(self, working: dict[int, Order], quote: Quote, now_us: int) -> Changes | None:
        """Ratchet the untriggered trailing stop-losses from this quote (the bid for a
        sell stop, the ask for a buy stop)."""
        changes: Changes | None = None
        for order in working.values():
            if order.role != "sl" or not order.trailing or order.filled_qty or not order.is_open:
                continue
            assert order.price is not None
            best = quote.bid if order.side == "sell" else quote.ask
            level = ratchet(
                order.side, order.price, trail_level(order.side, best, order.trail, order.trail_pct)
            )
            if level != order.price:
                order.price = level
                order.updated_us = now_us
                self._bounds.pop(order.instrument, None)
                changes = changes or Changes()
                changes.orders[order.order_id] = order
        return changes

    def _room_of(self, instrument: str, quote: Quote) -> list[float]:
        """[time, buy room, sell room] of the instrument's newest quote (new for a quote
        with a new time)."""
        room = self._room.get(instrument)
        if room is None or room[0] != quote.ts_us:
            room = self._room[instrument] = [
                quote.ts_us,
                quote_capacity(self.share, quote.ask_size),
                quote_capacity(self.share, quote.bid_size),
            ]
        return room


def _fill_type(order: Order) -> str:
    """How an order fills now: a stop that has filled part is triggered (a market order)."""
    if order.type == "stop" and order.filled_qty > 0:
        return "market"
    return order.type


def _trigger_bounds(orders: Iterable[Order]) -> tuple[float, float, float, float, float]:
    """(highest buy limit, lowest buy stop, lowest sell limit, highest sell stop, first
    expiry) of working orders: a quote with ``buy limit < ask < buy stop``, ``sell stop <
    bid < sell limit`` and a time before the expiry triggers none of them (the same
    rules as ``FillModel.quote_fill``). A working market order (or a triggered stop)
    triggers on anything. An untriggered trailing stop-loss adds the price past which it
    moves (a sell stop's bid above it, a buy stop's ask below it) to the limits' bounds,
    so a quote that would move it is checked too."""
    inf = math.inf
    buy_limit, buy_stop, sell_limit, sell_stop, expires = -inf, inf, inf, -inf, inf
    for order in orders:
        if order.expires_us is not None:
            expires = min(expires, order.expires_us)
        price = order.price
        if _fill_type(order) == "market" or price is None:
            return inf, -inf, -inf, inf, expires
        if order.side == "buy":
            if order.type == "limit":
                buy_limit = max(buy_limit, price)
            else:
                buy_stop = min(buy_stop, price)
                if order.role == "sl" and order.trailing:
                    moves = ratchet_threshold("buy", price, order.trail, order.trail_pct)
                    buy_limit = max(buy_limit, moves)
        elif order.type == "limit":
            sell_limit = min(sell_limit, price)
        else:
            sell_stop = max(sell_stop, price)
            if order.role == "sl" and order.trailing:
                moves = ratchet_threshold("sell", price, order.trail, order.trail_pct)
                sell_limit = min(sell_limit, moves)
    return buy_limit, buy_stop, sell_limit, sell_stop, expires
