"""The account through a backtest's events: entries, exits, stops and targets, the
daily loss limit, and the trades and equity curve they add up to (the semantics are in
:mod:`sptrader.backtest.engine`'s doc). Python per event, numpy between events."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from sptrader.broker import performance
from sptrader.broker import risk as risk_limits
from sptrader.broker.fill_model import FillModel
from sptrader.broker.ledger import Ledger
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.models import US_PER_DAY, US_PER_MINUTE

__all__ = ["TRADE_COLUMNS", "TRADE_SCHEMA", "Simulation", "frame_of"]

NAN = math.nan

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

    # --- the event loop ---------------------------------------------------------------

    def run(self, events: tuple[list[int], list[int], list[float], list[float], list[str]]) -> None:
        bars, sides, stops, targets, reasons = events
        opens = self.open
        searched = self.first  # protective orders are checked on bars from here on
        for bar, side, stop, target, reason in zip(
            bars, sides, stops, targets, reasons, strict=True
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
                self.enter(fill_bar, side, stop, target, reason)
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

    def enter(self, bar: int, direction: int, stop: float, target: float, reason: str) -> None:
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
        rejection = risk_limits.check(
            risk_limits.Proposal(
                self.instrument, qty * direction, price, stop if has_stop else None
            ),
            self.limits,
            self.ledger,
            {self.instrument: open_},
            equity=equity,
            day_pnl=equity - self.day_start_equity if self.watch_day else 0.0,
        )
        if rejection is not None:
            return self.reject(bar, side, rejection.limit, rejection.message)
        fee = self.model.fee(qty, price)
        self.fill(side, qty, price, fee, bar)
        self.direction = direction
        self.qty = qty
        self.entry_price = price
        self.entry_bar = bar
        self.entry_fee = fee
        self.stop = stop
        self.target = target
        self.protected = has_stop or has_target
        self.reason = reason

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

    def fill(self, side: str, qty: float, price: float, fee: float, bar: int) -> None:
        fill_id = self.next_id
        self.next_id += 1
        ts_us = int(self.ts[bar])
        self.fills.append(
            (fill_id, fill_id, self.instrument, side, qty, price, fee, ts_us, "paper", None)
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
        hit = self.first_hit(start, end)
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

    # --- results ----------------------------------------------------------------------

    def trades_frame(self, gaps: Sequence[tuple[int, int]]) -> pl.DataFrame:
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
        its exit bar)."""
        count, first = self.count, self.first
        cash_change = np.zeros(count)
        held = np.zeros(count + 1, dtype=np.int64)  # +trade number at entry, - at exit
        if self.trades:
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
            # at the exit bar.
            np.add.at(cash_change, entry_bar, -entry_fee)
            np.add.at(cash_change, exit_bar, gross - (fees - entry_fee))
            number = np.arange(1, len(self.trades) + 1, dtype=np.int64)
            np.add.at(held, entry_bar, number)
            np.add.at(held, exit_bar, -number)
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
