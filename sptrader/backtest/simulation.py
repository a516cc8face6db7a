"""The account through a backtest's events: entries, exits, stops and targets (fixed or
trailing), the daily loss limit, fills capped by the bars' volume, and the trades and
equity curve they add up to (the semantics are in :mod:`sptrader.backtest.engine`'s doc).
Python per event, numpy between events; with the volume cap on, Python per bar while an
order is working (``run`` picks the loop)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import polars as pl

from sptrader.backtest.signals_only import SignalsOnly, run_signals_only
from sptrader.broker import performance
from sptrader.broker import risk as risk_limits
from sptrader.broker.fill_model import FillModel
from sptrader.broker.ledger import QTY_EPSILON, Ledger
from sptrader.broker.realism import bar_capacity, ratchet, take, trail_level
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.models import US_PER_DAY, US_PER_MINUTE
from sptrader.schema import FILL_SCHEMA

__all__ = ["TRADE_COLUMNS", "TRADE_SCHEMA", "Simulation", "frame_of", "volume_cap"]

NAN = math.nan
#: Per event, the signal's trail: (distance, %), NaN for none.
Trails = list[tuple[float, float]]
NO_TRAIL = (NAN, NAN)

#: The columns of ``BacktestResult.trades``: the journal's trade columns up to ``fees``
#: (:data:`sptrader.broker.performance.TRADE_SCHEMA`; ``exit_time_us`` is the open time
#: of the bar it left in, ``pnl`` net of both fees), then what a backtest knows of each.
TRADE_SCHEMA: dict[str, Any] = {
    **{name: kind for name, kind in performance.TRADE_SCHEMA.items() if name != "open"},
    "exit_reason": pl.String,  # signal, reverse, stop, target, end
    "stop": pl.Float64,
    "target": pl.Float64,
    "bars": pl.Int64,  # bars from the entry bar to the exit bar
    "reason": pl.String,  # the entry signal's reason
    "spans_gap": pl.Boolean,
    "gap_minutes": pl.Int64,
}
TRADE_COLUMNS = tuple(TRADE_SCHEMA)


class Simulation:
    """The account through the events: Python per event, numpy between them."""

    def __init__(
        self,
        instrument: str,
        arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        ts: np.ndarray,
        first: int,
        broker: BrokerConfig,
        limits: RiskConfig,
        *,
        volume: np.ndarray | None = None,
    ) -> None:
        self.instrument = instrument
        self.open, self.high, self.low, self.close = arrays
        self.ts = ts
        self.first = first
        self.count = ts.size
        self.broker = broker
        self.limits = limits
        self.model = FillModel(broker.slippage_bps, broker.fee_bps, broker.fee_per_unit)
        self.ledger = Ledger(broker.starting_cash)
        self.book = self.ledger.position(instrument)
        # The open position: direction (1, -1; 0 flat), size, fill, bar, fee, orders.
        self.direction = 0
        self.qty = 0.0
        self.entry_price = 0.0
        self.entry_bar = -1
        self.entry_fee = 0.0
        self.stop = NAN
        self.target = NAN
        self.protected = False  # a position with a stop or a target
        self.reason = ""
        # A trailing stop: its distance or % (None: fixed), and the first bar whose
        # extreme has not moved it yet.
        self.trail: float | None = None
        self.trail_pct: float | None = None
        self.trail_from = 0
        self.fills: list[tuple] = []
        # The columns of TRADE_SCHEMA up to "reason", then entry bar, exit bar, entry fee.
        self.trades: list[tuple] = []
        self.rejected: list[dict[str, Any]] = []
        self.next_id = 1
        # Exits on a bar whose range reached both the stop and the target (the stop is
        # assumed first): what a finer path (--detail) would settle.
        self.ambiguous = 0
        # Daily loss limit: the UTC day being traded and the equity it started with.
        self.watch_day = limits.daily_loss_limit > 0
        self.day = -1
        self.day_start_equity = broker.starting_cash
        # The volume cap (0: off): each bar fills at most this share of its volume.
        self.share = broker.max_volume_share
        if self.share > 0 and volume is None:
            raise ValueError("broker.max_volume_share needs the bars' volume")
        self.volume = volume
        # Fills that left part of their order working (the volume cap).
        self.partial_fills = 0
        # A run of signals alone, done in numpy (then self.trades and self.fills stay
        # empty: the frames are there).
        self.vectorised: SignalsOnly | None = None

    # --- the event loop ---------------------------------------------------------------

    def run(
        self,
        events: tuple[list[int], list[int], list[float], list[float], list[str]],
        trails: Trails | None = None,
    ) -> None:
        """The account through ``events`` (bar, side, stop, target, reason per signal)
        and, when any signal trails, their ``trails``."""
        if self.share > 0:
            return self.run_capped(events, trails)
        if trails is None and run_signals_only(self, events):
            return None  # signals alone: the same account, computed in numpy
        bars, sides, stops, targets, reasons = events
        opens = self.open
        searched = self.first  # protective orders are checked on bars from here on
        for index, (bar, side, stop, target, reason) in enumerate(
            zip(bars, sides, stops, targets, reasons, strict=True)
        ):
            fill_bar = bar + 1
            if self.protected:
                self.protect(searched, fill_bar)
                if self.protected:
                    self.open_crossed(fill_bar)
            if self.watch_day:
                self.roll_day(fill_bar)
            if side == 0:
                if self.direction:
                    self.exit(
                        fill_bar,
                        self.model.open_fill(self._closing_side(), opens[fill_bar]),
                        "signal",
                    )
            elif side != self.direction:
                if self.direction:
                    self.exit(
                        fill_bar,
                        self.model.open_fill(self._closing_side(), opens[fill_bar]),
                        "reverse",
                    )
                trail = NO_TRAIL if trails is None else trails[index]
                self.enter(fill_bar, side, stop, target, reason, trail)
            searched = fill_bar
        if self.direction:
            if self.protected:
                self.protect(searched, self.count)
            if self.direction:
                last = self.count - 1
                price = self.model.slipped(self._closing_side(), float(self.close[last]))
                self.exit(last, price, "end")

    def _closing_side(self) -> str:
        return "sell" if self.direction > 0 else "buy"

    # --- entries and exits ------------------------------------------------------------

    def enter(
        self,
        bar: int,
        direction: int,
        stop: float,
        target: float,
        reason: str,
        trail: tuple[float, float] = NO_TRAIL,
    ) -> None:
        sized = self.size_entry(bar, direction, stop, target)
        if sized is None:
            return
        qty, price = sized
        side = "buy" if direction > 0 else "sell"
        fee = self.model.fee(qty, price)
        self.fill(side, qty, price, fee, bar)
        self.direction = direction
        self.qty = qty
        self.entry_price = price
        self.entry_bar = bar
        self.entry_fee = fee
        self.stop = stop
        self.target = target
        self.protected = not (math.isnan(stop) and math.isnan(target))
        self.reason = reason
        if trail is not NO_TRAIL:
            self.start_trail(bar, trail)

    def start_trail(self, bar: int, trail: tuple[float, float]) -> None:
        """A trailing stop from ``bar``'s open on (the market when the position opened),
        at least the signal's stop."""
        distance, pct = trail
        if math.isnan(distance) and math.isnan(pct):
            self.trail = self.trail_pct = None
            return
        self.trail = None if math.isnan(distance) else distance
        self.trail_pct = None if math.isnan(pct) else pct
        side = self._closing_side()
        level = trail_level(side, float(self.open[bar]), self.trail, self.trail_pct)
        self.stop = ratchet(side, self.stop, level)
        self.trail_from = bar
        self.protected = True

    def size_entry(
        self, bar: int, direction: int, stop: float, target: float
    ) -> tuple[float, float] | None:
        """(quantity, fill price) of an entry at ``bar``'s open, or None: rejected (and
        listed) for a stop or target on the wrong side, no size, or a risk limit."""
        side = "buy" if direction > 0 else "sell"
        open_ = float(self.open[bar])
        price = self.model.open_fill(side, open_)
        # Flat here: equity is the cash (the ledger's, for its one position).
        book = self.book
        equity = self.broker.starting_cash + book.realized - book.fees
        has_stop = not math.isnan(stop)
        has_target = not math.isnan(target)
        if has_stop and (stop >= price if direction > 0 else stop <= price):
            where = "below" if direction > 0 else "above"
            return self.reject(
                bar,
                side,
                "invalid_stop",
                f"the stop {stop:g} is not {where} the entry fill {price:g}",
            )
        if has_target and (target <= price if direction > 0 else target >= price):
            where = "above" if direction > 0 else "below"
            return self.reject(
                bar,
                side,
                "invalid_target",
                f"the target {target:g} is not {where} the entry fill {price:g}",
            )
        pct = self.limits.risk_per_trade_pct
        if has_stop and pct > 0:
            qty = risk_limits.size_from_risk(equity, pct, price, stop)
        else:
            qty = self.broker.signal_notional / price if price > 0 else 0.0
        if not qty > 0:
            return self.reject(bar, side, "size", f"no size: equity {equity:,.2f}, price {price:g}")
        proposal = risk_limits.Proposal(
            self.instrument, qty * direction, price, stop if has_stop else None
        )
        day_pnl = equity - self.day_start_equity if self.watch_day else 0.0
        if book.is_flat:  # every entry but one into a position still closing (the cap)
            rejection = risk_limits.check_flat_entry(
                proposal, self.limits, equity=equity, day_pnl=day_pnl
            )
        else:
            rejection = risk_limits.check(
                proposal,
                self.limits,
                self.ledger,
                {self.instrument: open_},
                equity=equity,
                day_pnl=day_pnl,
            )
        if rejection is not None:
            return self.reject(bar, side, rejection.limit, rejection.message)
        return qty, price

    def exit(self, bar: int, price: float, why: str) -> None:
        side = self._closing_side()
        qty = self.qty
        fee = self.model.fee(qty, price)
        self.fill(side, qty, price, fee, bar)
        gross = (price - self.entry_price) * qty * self.direction
        self.trades.append(
            (
                self.instrument,
                "long" if self.direction > 0 else "short",
                qty,
                int(self.ts[self.entry_bar]),
                self.entry_price,
                int(self.ts[bar]),
                price,
                gross - self.entry_fee - fee,
                self.entry_fee + fee,
                why,
                None if math.isnan(self.stop) else self.stop,
                None if math.isnan(self.target) else self.target,
                bar - self.entry_bar,
                self.reason,
                self.entry_bar,
                bar,
                self.entry_fee,
            )
        )
        self.direction = 0
        self.qty = 0.0
        self.stop = self.target = NAN
        self.protected = False
        self.trail = self.trail_pct = None

    def fill(
        self, side: str, qty: float, price: float, fee: float, bar: int, order_id: int = 0
    ) -> None:
        fill_id = self.next_id
        self.next_id += 1
        ts_us = int(self.ts[bar])
        self.fills.append(
            (
                fill_id,
                order_id or fill_id,
                self.instrument,
                side,
                qty,
                price,
                fee,
                ts_us,
                "paper",
                None,
            )
        )
        self.book.apply(qty if side == "buy" else -qty, price, fee, ts_us)

    def reject(self, bar: int, side: str, limit: str, message: str) -> None:
        self.rejected.append(
            {"ts_us": int(self.ts[bar]), "side": side, "limit": limit, "message": message}
        )

    def roll_day(self, bar: int) -> None:
        """Start the UTC day of ``bar`` with the equity marked at the close of the bar
        before its first bar (the position held then is the one held now: this runs
        before every event)."""
        day = int(self.ts[bar]) // US_PER_DAY
        if day == self.day:
            return
        self.day = day
        first_of_day = int(np.searchsorted(self.ts, day * US_PER_DAY))
        before = first_of_day - 1
        if before < self.first:
            self.day_start_equity = self.broker.starting_cash
            return
        equity = self.ledger.cash()
        if self.direction:
            equity += (float(self.close[before]) - self.entry_price) * self.qty * self.direction
        self.day_start_equity = equity

    # --- stops and targets ------------------------------------------------------------

    def protect(self, start: int, end: int) -> None:
        """Fill the stop or target at the first bar of [start, end) that reaches one."""
        if self.trail is None and self.trail_pct is None:
            hit = self.first_hit(start, end)
        else:
            hit = self.first_hit_trailing(start, end)
        if hit < 0:
            return
        if self.watch_day:
            self.roll_day(hit)
        o, h, lo = float(self.open[hit]), float(self.high[hit]), float(self.low[hit])
        side = self._closing_side()
        stop_price = (
            None if math.isnan(self.stop) else self.model.stop_fill(side, self.stop, o, h, lo)
        )
        target_price = (
            None if math.isnan(self.target) else self.model.limit_fill(side, self.target, o, h, lo)
        )
        opened_past_target = target_price is not None and (
            o >= self.target if self.direction > 0 else o <= self.target
        )
        if target_price is not None and (opened_past_target or stop_price is None):
            self.exit(hit, target_price, "target")
        elif stop_price is not None:
            opened_past_stop = o <= self.stop if self.direction > 0 else o >= self.stop
            if target_price is not None and not opened_past_stop:
                self.ambiguous += 1
            self.exit(hit, stop_price, "stop")

    def open_crossed(self, bar: int) -> None:
        """Stops and targets the open of ``bar`` already crossed fill there (before the
        market order decided on the bar before)."""
        o = float(self.open[bar])
        long = self.direction > 0
        side = self._closing_side()
        if not math.isnan(self.target) and (o >= self.target if long else o <= self.target):
            if self.watch_day:
                self.roll_day(bar)
            self.exit(bar, o, "target")
        elif not math.isnan(self.stop) and (o <= self.stop if long else o >= self.stop):
            if self.watch_day:
                self.roll_day(bar)
            self.exit(bar, self.model.slipped(side, o), "stop")

    def first_hit(self, start: int, end: int) -> int:
        """The first bar in [start, end) whose range reaches the stop or the target of
        the position, or -1; searched in growing chunks (a hit is usually near)."""
        stop, target = self.stop, self.target
        long = self.direction > 0
        # For a long the stop is below (lows reach it) and the target above (highs).
        toward_stop = self.low if long else self.high
        toward_target = self.high if long else self.low
        size = 64
        while start < end:
            stop_at = min(end, start + size)
            if long:
                reached = (toward_stop[start:stop_at] <= stop) | (
                    toward_target[start:stop_at] >= target
                )
            else:
                reached = (toward_stop[start:stop_at] >= stop) | (
                    toward_target[start:stop_at] <= target
                )
            found = int(reached.argmax())
            if reached[found]:
                return start + found
            start = stop_at
            size *= 4
        return -1

    def first_hit_trailing(self, start: int, end: int) -> int:
        """``first_hit`` for a trailing stop, whose level on each bar comes from the
        extremes of the bars before it (highs for a long, lows for a short: a bar's new
        extreme moves the stop for the next bar, so one bar cannot both move and hit it).
        Leaves ``stop`` at its level on the bar hit, or on ``end`` when none is."""
        self.fold_trail(start)
        long = self.direction > 0
        side = self._closing_side()
        trail, pct, target = self.trail, self.trail_pct, self.target
        level = self.stop
        size = 64
        while start < end:
            stop_at = min(end, start + size)
            highs = self.high[start:stop_at]
            lows = self.low[start:stop_at]
            best = np.maximum.accumulate(highs) if long else np.minimum.accumulate(lows)
            levels = np.empty(best.size)
            levels[0] = level
            if best.size > 1:
                moved = trail_level(side, best[:-1], trail, pct)
                levels[1:] = np.maximum(moved, level) if long else np.minimum(moved, level)
            if long:
                reached = (lows <= levels) | (highs >= target)
            else:
                reached = (highs >= levels) | (lows <= target)
            found = int(reached.argmax())
            if reached[found]:
                self.stop = float(levels[found])
                self.trail_from = start + found
                return start + found
            level = ratchet(side, level, trail_level(side, float(best[-1]), trail, pct))
            start = stop_at
            size *= 4
        self.stop = level
        self.trail_from = max(self.trail_from, end)
        return -1

    def fold_trail(self, upto: int) -> None:
        """Move a trailing stop by the extremes of the bars from ``trail_from`` up to
        ``upto`` (the stop as it stands at ``upto``'s open)."""
        if upto <= self.trail_from or (self.trail is None and self.trail_pct is None):
            return
        side = self._closing_side()
        if self.direction > 0:
            best = float(self.high[self.trail_from : upto].max())
        else:
            best = float(self.low[self.trail_from : upto].min())
        self.stop = ratchet(side, self.stop, trail_level(side, best, self.trail, self.trail_pct))
        self.trail_from = upto

    # --- the volume cap ---------------------------------------------------------------
    #
    # Each bar fills at most ``share`` of its volume, over every order of that bar. What
    # an order does not fill stays working: an entry or a market exit (a signal's, or a
    # stop's once triggered) fills at the next bars' opens; a target rests at its price
    # with the stop still working. The loop jumps from event to event (and, with a
    # position protected, to the first bar reaching its stop or target) while nothing
    # works at the opens, and goes bar by bar while something does.

    def run_capped(
        self,
        events: tuple[list[int], list[int], list[float], list[float], list[str]],
        trails: Trails | None,
    ) -> None:
        bars, sides, stops, targets, reasons = events
        assert self.volume is not None
        self.fill_bars: list[int] = []  # each fill's bar (the equity curve and the day)
        self.entry_left = 0.0  # what the entry has still to fill
        self.entered = 0.0  # what it filled, at what value
        self.entry_value = 0.0
        self.entry_trail: tuple[float, float] = NO_TRAIL
        self.market_exit = False  # a market exit is working
        self.exit_reason = ""  # the exit under way ("": none), then what completed it
        self.exit_qty = self.exit_value = self.exit_fee = 0.0
        self.follow: tuple | None = None  # the entry to make once the exit is done
        self.order_id = 0  # the order the fills belong to
        self.entry_orders: dict[int, float] = {}  # each entry's order id and size
        self.room = 0.0  # what the bar being filled has left
        count = self.count
        fill_at = [bar + 1 for bar in bars]
        total = len(fill_at)
        k = 0
        b = self.first
        while b < count:
            next_event = fill_at[k] if k < total else count
            if b < next_event and not (self.entry_left or self.market_exit or self.follow):
                # Nothing works at the opens: jump to the next event, or to the first bar
                # that reaches the position's stop or target.
                if not (self.qty > 0 and self.protected):
                    b = next_event
                    continue
                if self.trail is None and self.trail_pct is None:
                    hit = self.first_hit(b, next_event)
                else:
                    hit = self.first_hit_trailing(b, next_event)
                if hit < 0:
                    b = next_event
                    continue
                b = hit
            event = None
            if k < total and fill_at[k] == b:
                trail = trails[k] if trails is not None else NO_TRAIL
                event = (sides[k], stops[k], targets[k], reasons[k], trail)
                k += 1
            self.step(b, event)
            b += 1
        if self.direction and self.qty > 0:
            last = count - 1
            self.entry_left = 0.0
            self.order_id = self.next_id  # the close at the end is an order of its own
            price = self.model.slipped(self._closing_side(), float(self.close[last]))
            self.fill_exit(last, price, "end", capped=False)

    def step(self, b: int, event: tuple | None) -> None:
        """Bar ``b``: working orders at its open, the signal acting there (after any
        stop or target its open crossed), then the stop and target over its range."""
        assert self.volume is not None
        self.room = bar_capacity(self.share, float(self.volume[b]))
        o = float(self.open[b])
        if event is not None and self.market_exit:
            # An exit under way completes; the signal says what comes after it.
            side = event[0]
            self.follow = None if side == 0 else event
            event = None
        if self.market_exit:
            self.fill_exit(b, self.model.open_fill(self._closing_side(), o), self.exit_reason)
            if not self.direction and self.follow is not None:
                follow, self.follow = self.follow, None
                self.start_entry(b, *follow)
        elif self.entry_left:
            self.fill_entry(b, self.model.open_fill("buy" if self.direction > 0 else "sell", o))
        if event is not None:
            if self.qty > 0 and self.protected:
                self.fold_trail(b)
                self.protect_bar(b, open_only=True)
            self.act(b, *event)
        if self.qty > 0 and self.protected and not self.market_exit:
            self.fold_trail(b)
            self.protect_bar(b, open_only=False)
        if self.direction:
            self.fold_trail(b + 1)

    def act(
        self,
        b: int,
        side: int,
        stop: float,
        target: float,
        reason: str,
        trail: tuple[float, float],
    ) -> None:
        """A signal at ``b``'s open, no market exit working."""
        if side == self.direction:
            return
        if self.direction:
            self.entry_left = 0.0  # what the entry has not filled is cancelled
            if self.qty > 0:
                if side:
                    self.follow = (side, stop, target, reason, trail)
                self.start_exit("reverse" if side else "signal")
                self.fill_exit(b, self.model.open_fill(self._closing_side(), float(self.open[b])))
                if self.direction or self.follow is None:
                    return
                self.follow = None
            else:
                self._flat()
        if side:
            self.start_entry(b, side, stop, target, reason, trail)

    def start_entry(
        self,
        b: int,
        direction: int,
        stop: float,
        target: float,
        reason: str,
        trail: tuple[float, float],
    ) -> None:
        """An entry sized and checked at ``b``'s open, for its whole quantity."""
        if self.watch_day:
            self.roll_day_from_fills(b)
        sized = self.size_entry(b, direction, stop, target)
        if sized is None:
            return
        qty, price = sized
        self.order_id = self.next_id
        self.entry_orders[self.order_id] = qty
        self.direction = direction
        self.entry_left = qty
        self.entered = self.entry_value = self.entry_fee = 0.0
        self.stop, self.target, self.reason = stop, target, reason
        self.entry_trail = trail
        self.fill_entry(b, price)

    def fill_entry(self, b: int, price: float) -> None:
        qty = take(self.entry_left, self.room)
        if not qty:
            return
        side = "buy" if self.direction > 0 else "sell"
        fee = self.model.fee(qty, price)
        self.capped_fill(side, qty, price, fee, b, qty < self.entry_left)
        first = self.entered == 0
        self.entry_left = self.entry_left - qty if qty < self.entry_left else 0.0
        self.qty += qty
        self.entered += qty
        self.entry_value += qty * price
        self.entry_fee += fee
        self.entry_price = self.entry_value / self.entered
        if first:
            # Protected from the first fill on: the stop and target, a trail from here.
            self.entry_bar = b
            self.protected = not (math.isnan(self.stop) and math.isnan(self.target))
            if self.entry_trail is not NO_TRAIL:
                self.start_trail(b, self.entry_trail)

    def start_exit(self, why: str) -> None:
        self.entry_left = 0.0
        self.market_exit = True
        self.exit_reason = why
        self.order_id = self.next_id

    def fill_exit(
        self, b: int, price: float, why: str | None = None, *, capped: bool = True
    ) -> None:
        """Close what the bar's room allows of the position at ``price``; the trade is
        done when nothing is left."""
        qty = take(self.qty, self.room) if capped else self.qty
        if not qty:
            return
        fee = self.model.fee(qty, price)
        self.capped_fill(self._closing_side(), qty, price, fee, b, qty < self.qty)
        self.qty = self.qty - qty if qty < self.qty else 0.0
        self.exit_qty += qty
        self.exit_value += qty * price
        self.exit_fee += fee
        if self.qty > QTY_EPSILON:
            return
        exit_price = self.exit_value / self.exit_qty
        direction = self.direction
        gross = (exit_price - self.entry_price) * self.entered * direction
        self.trades.append(
            (
                self.instrument,
                "long" if direction > 0 else "short",
                self.entered,
                int(self.ts[self.entry_bar]),
                self.entry_price,
                int(self.ts[b]),
                exit_price,
                gross - self.entry_fee - self.exit_fee,
                self.entry_fee + self.exit_fee,
                why or self.exit_reason,
                None if math.isnan(self.stop) else self.stop,
                None if math.isnan(self.target) else self.target,
                b - self.entry_bar,
                self.reason,
                self.entry_bar,
                b,
                self.entry_fee,
            )
        )
        self._flat()

    def _flat(self) -> None:
        self.direction = 0
        self.qty = self.entered = self.entry_value = self.entry_left = 0.0
        self.market_exit = False
        self.exit_reason = ""
        self.exit_qty = self.exit_value = self.exit_fee = 0.0
        self.stop = self.target = NAN
        self.protected = False
        self.trail = self.trail_pct = None
        self.entry_trail = NO_TRAIL

    def capped_fill(
        self, side: str, qty: float, price: float, fee: float, b: int, partial: bool
    ) -> None:
        self.room -= qty
        if partial:
            self.partial_fills += 1
        self.fill(side, qty, price, fee, b, self.order_id)
        self.fill_bars.append(b)

    def protect_bar(self, b: int, *, open_only: bool) -> None:
        """The held position's stop and target on bar ``b``: only what its open crossed
        (before a signal acting at that open), or over its whole range."""
        o = float(self.open[b])
        long = self.direction > 0
        side = self._closing_side()
        stop, target = self.stop, self.target
        if open_only:
            if not math.isnan(target) and (o >= target if long else o <= target):
                self.fill_target(b, o)
            elif not math.isnan(stop) and (o <= stop if long else o >= stop):
                self.trigger_stop(b, self.model.slipped(side, o))
            return
        h, lo = float(self.high[b]), float(self.low[b])
        stop_price = None if math.isnan(stop) else self.model.stop_fill(side, stop, o, h, lo)
        target_price = None if math.isnan(target) else self.model.limit_fill(side, target, o, h, lo)
        opened_past_target = target_price is not None and (o >= target if long else o <= target)
        if target_price is not None and (opened_past_target or stop_price is None):
            self.fill_target(b, target_price)
            if stop_price is not None and self.qty > 0:
                self.trigger_stop(b, stop_price)  # the rest: the stop, later in the bar
        elif stop_price is not None:
            opened_past_stop = o <= stop if long else o >= stop
            if target_price is not None and not opened_past_stop:
                self.ambiguous += 1
            self.trigger_stop(b, stop_price)

    def fill_target(self, b: int, price: float) -> None:
        """The target (a resting limit) fills what the room allows; the rest rests."""
        self.entry_left = 0.0
        if not self.exit_reason:
            self.exit_reason = "target"
            self.order_id = self.next_id
        self.fill_exit(b, price, "target")

    def trigger_stop(self, b: int, price: float) -> None:
        """The stop triggers: a market exit, filled from here as the room allows."""
        self.start_exit("stop")
        self.fill_exit(b, price)

    def roll_day_from_fills(self, b: int) -> None:
        """``roll_day`` with the equity at the day's start rebuilt from the fills up to
        then (orders fill between events here, so the position held then may not be the
        one held now)."""
        day = int(self.ts[b]) // US_PER_DAY
        if day == self.day:
            return
        self.day = day
        before = int(np.searchsorted(self.ts, day * US_PER_DAY)) - 1
        if before < self.first:
            self.day_start_equity = self.broker.starting_cash
            return
        close = float(self.close[before])
        if not self.fill_bars or self.fill_bars[-1] <= before:
            self.day_start_equity = self.ledger.cash() + self.book.unrealized(close)
            return
        cash, held = self.broker.starting_cash, 0.0
        for fill, bar in zip(self.fills, self.fill_bars, strict=True):
            if bar > before:
                break
            signed = fill[4] if fill[3] == "buy" else -fill[4]
            cash -= signed * fill[5] + fill[6]
            held += signed
        self.day_start_equity = cash + held * close

    # --- results ----------------------------------------------------------------------

    def fills_frame(self) -> pl.DataFrame:
        """Every fill (FILL_SCHEMA), in order."""
        if self.vectorised is not None:
            return self.vectorised.fills
        return frame_of(self.fills, FILL_SCHEMA)

    def trades_frame(self, gaps: Sequence[tuple[int, int]]) -> pl.DataFrame:
        if self.vectorised is not None:
            frame = self.vectorised.trades
        else:
            frame = frame_of(self.trades, {name: TRADE_SCHEMA[name] for name in TRADE_COLUMNS[:14]})
        minutes = _gap_minutes(
            gaps, frame["entry_time_us"].to_numpy(), frame["exit_time_us"].to_numpy()
        )
        return frame.with_columns(
            pl.Series("spans_gap", minutes > 0, dtype=pl.Boolean),
            pl.Series("gap_minutes", minutes, dtype=pl.Int64),
        )

    def equity_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Equity and the signed position at each traded bar's close (vectorised from
        the trades: a trade is held at the closes of its entry bar up to the bar before
        its exit bar; with the volume cap, from the fills, which change the position
        inside a trade)."""
        count, first = self.count, self.first
        if self.share > 0:
            return self.equity_from_fills()
        cash_change = np.zeros(count)
        held = np.zeros(count + 1, dtype=np.int64)  # +trade number at entry, - at exit
        fast = self.vectorised
        if self.trades or fast is not None:
            if fast is not None:
                signed, entry_price, exit_price = fast.signed, fast.entry_price, fast.exit_price
                fees, entry_fee = fast.fees, fast.entry_fee
                entry_bar, exit_bar = fast.entry_bar, fast.exit_bar
            else:
                columns = list(zip(*self.trades, strict=True))
                long = np.array([side == "long" for side in columns[1]])
                signed = np.where(long, 1.0, -1.0) * np.array(columns[2])
                entry_price = np.array(columns[4])
                exit_price = np.array(columns[6])
                fees = np.array(columns[8])
                entry_bar = np.array(columns[14], dtype=np.int64)
                exit_bar = np.array(columns[15], dtype=np.int64)
                entry_fee = np.array(columns[16])
            gross = (exit_price - entry_price) * signed
            # Cash moves by the entry fee at the entry bar, by the P&L less the exit fee
            # at the exit bar. (bincount sums in the order given, as np.add.at does, at a
            # tenth of its cost.)
            cash_change = np.bincount(entry_bar, -entry_fee, count) + np.bincount(
                exit_bar, gross - (fees - entry_fee), count
            )
            number = np.arange(1, signed.size + 1, dtype=np.float64)
            held = (
                np.bincount(entry_bar, number, count + 1) - np.bincount(exit_bar, number, count + 1)
            ).astype(np.int64)
            trade_at = np.cumsum(held[:count])  # 1-based trade held at each close, 0: flat
            holding = trade_at > 0
            index = np.maximum(trade_at - 1, 0)
            position = np.where(holding, signed[index], 0.0)
            unrealized = np.where(holding, (self.close - entry_price[index]) * signed[index], 0.0)
        else:
            position = np.zeros(count)
            unrealized = np.zeros(count)
        cash = self.broker.starting_cash + np.cumsum(cash_change)
        equity = cash + unrealized
        return equity[first:], position[first:]

    def equity_from_fills(self) -> tuple[np.ndarray, np.ndarray]:
        """Equity and the signed position at each bar's close from every fill: cash
        moves by each fill's value and fee at its bar, the position by its quantity."""
        count, first = self.count, self.first
        flow = np.zeros(count)
        moved = np.zeros(count)
        if self.fills:
            columns = list(zip(*self.fills, strict=True))
            signed = np.where(np.array(columns[3]) == "buy", 1.0, -1.0) * np.array(columns[4])
            bars = np.array(self.fill_bars, dtype=np.int64)
            np.add.at(flow, bars, -signed * np.array(columns[5]) - np.array(columns[6]))
            np.add.at(moved, bars, signed)
        position = np.cumsum(moved)
        # Dust left by float sums of a position's fills is flat.
        position[np.abs(position) <= QTY_EPSILON] = 0.0
        equity = self.broker.starting_cash + np.cumsum(flow) + position * self.close
        return equity[first:], position[first:]


def volume_cap(
    broker: BrokerConfig, frame: pl.DataFrame, first: int
) -> tuple[BrokerConfig, np.ndarray | None, str]:
    """The config a simulation of ``frame`` (traded from row ``first``) runs with, the
    bars' volume when fills are capped by it, and what the summary says of the cap."""
    share = broker.max_volume_share
    if share <= 0:
        return broker, None, "off"
    volume = frame["volume"].cast(pl.Float64).fill_null(0.0).to_numpy()
    if not (volume[first:] > 0).any():
        return msgspec.structs.replace(broker, max_volume_share=0.0), None, "off: no volume"
    return broker, volume, f"{share:g} of each bar's volume"


def frame_of(rows: list[tuple], schema: dict[str, Any]) -> pl.DataFrame:
    """A frame of the first ``len(schema)`` fields of ``rows``, built column by column
    (faster than polars' row path)."""
    if not rows:
        return pl.DataFrame(schema=schema)
    columns = list(zip(*rows, strict=True))
    return pl.DataFrame(
        [pl.Series(name, columns[i], dtype=dtype) for i, (name, dtype) in enumerate(schema.items())]
    )


def _gap_minutes(
    gaps: Sequence[tuple[int, int]], starts: np.ndarray, ends: np.ndarray
) -> np.ndarray:
    """Per [start, end) holding period: minutes of ``gaps`` inside it."""
    if not gaps or starts.size == 0:
        return np.zeros(starts.size, dtype=np.int64)
    ordered = sorted(gaps)
    gap_start = np.array([g[0] for g in ordered], dtype=np.int64)
    gap_end = np.array([g[1] for g in ordered], dtype=np.int64)
    before = np.concatenate(([0], np.cumsum(gap_end - gap_start)))

    def missing_before(moments: np.ndarray) -> np.ndarray:
        # Gap time before each moment: whole gaps that started before it, clipped.
        k = np.searchsorted(gap_start, moments, side="right")
        last = np.maximum(k - 1, 0)
        partial = np.where(
            k > 0, np.clip(moments - gap_start[last], 0, gap_end[last] - gap_start[last]), 0
        )
        return np.where(k > 0, before[last], 0) + partial

    overlap = missing_before(ends) - missing_before(starts)
    return overlap // US_PER_MINUTE + (overlap % US_PER_MINUTE > 0)
