"""Trading statistics shared by the journal and the backtester.

- :func:`round_trips`: fills -> trades (flat to flat, per instrument), with the
  average-cost semantics of :mod:`sptrader.broker.ledger`.
- :func:`trade_stats`: win rate, average win/loss, profit factor, expectancy... of a list
  of trade P&Ls.
- :func:`max_drawdown`, :func:`sharpe`, :func:`sortino` of an equity curve or its
  returns, :func:`equity_returns`, :func:`periods_per_year` of a timeframe.

Conventions:

- Money is not rounded here (only when shown).
- A drawdown is a positive fall from a peak, in money and as a percentage of the peak
  equity, and is shown so everywhere (backtest report and sweep, the journal in the CLI
  and the TUI, their JSON and CSV): ``max drawdown 1,234.00 (3.20%)``, never ``-3.20%``.
- A ratio with nothing to divide by is ``None`` (no trades: no win rate); a profit factor
  with wins but no losing trade is ``math.inf`` (JSON writers turn it into null).
- Sharpe uses the *sample* standard deviation (ddof=1) of the per-period returns;
  Sortino divides by the downside deviation ``sqrt(sum(min(r, 0)**2) / n)`` over *all*
  n periods (target 0, as Sortino and Price define it). Both assume a risk-free rate of
  0 and are annualised by ``sqrt(periods_per_year)``.
- :func:`periods_per_year` counts a 365-day calendar year of 24-hour days (the crypto
  calendar): 525,600 one-minute bars. Markets that close (FX weekends, exchange
  sessions) have fewer bars a year, so their annualised ratios come out somewhat higher
  (about sqrt(365/260) = 1.18x for a 5-day FX week).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from sptrader.broker.ledger import QTY_EPSILON, Position

__all__ = [
    "TRADE_SCHEMA",
    "equity_returns",
    "max_drawdown",
    "periods_per_year",
    "round_trips",
    "sharpe",
    "sortino",
    "trade_stats",
]

#: One row per trade. ``qty`` is the largest absolute size the position reached;
#: ``entry_price`` the quantity-weighted average of the fills that opened or added to it
#: (its average cost when it was never partly closed), ``exit_price`` the quantity-weighted average of the fills that closed it;
#: ``pnl`` is realized P&L net of every fee of the trade (``fees``). ``open`` is True for
#: a position still open after the last fill (only with ``include_open``): its exit
#: time and price are null and its ``pnl`` is what it realized so far (partial closes)
#: minus its fees.
TRADE_SCHEMA: dict[str, Any] = {
    "instrument": pl.String,
    "side": pl.String,  # long / short
    "qty": pl.Float64,
    "entry_time_us": pl.Int64,
    "entry_price": pl.Float64,
    "exit_time_us": pl.Int64,
    "exit_price": pl.Float64,
    "pnl": pl.Float64,
    "fees": pl.Float64,
    "open": pl.Boolean,
}


class _Trade:
    __slots__ = (
        "entry_qty",
        "entry_time_us",
        "entry_value",
        "exit_qty",
        "exit_time_us",
        "exit_value",
        "fees",
        "instrument",
        "max_qty",
        "realized",
        "side",
    )

    def __init__(self, instrument: str, side: str, ts_us: int) -> None:
        self.instrument = instrument
        self.side = side
        self.entry_time_us = ts_us
        self.exit_time_us: int | None = None
        self.entry_qty = self.entry_value = 0.0
        self.exit_qty = self.exit_value = 0.0
        self.max_qty = 0.0
        self.realized = 0.0
        self.fees = 0.0

    def row(self, is_open: bool) -> tuple:
        return (
            self.instrument,
            self.side,
            self.max_qty,
            self.entry_time_us,
            self.entry_value / self.entry_qty if self.entry_qty else None,
            None if is_open else self.exit_time_us,
            None if is_open or not self.exit_qty else self.exit_value / self.exit_qty,
            self.realized - self.fees,
            self.fees,
            is_open,
        )


def round_trips(fills: pl.DataFrame, *, include_open: bool = False) -> pl.DataFrame:
    """The trades of ``fills`` (sptrader.schema's ``FILL_COLUMNS``; ``ts_us`` integer µs
    or a Datetime; ``side`` buy/sell; ``qty`` positive), one row per position taken from
    flat back to flat, per instrument (:data:`TRADE_SCHEMA`), in the order they closed.

    Fills are booked in time order (ties keep their order) on a
    :class:`~sptrader.broker.ledger.Position` (average cost). A fill that flips the
    position closes the trade and opens the next with the rest; its fee is split between
    the two in proportion to the quantities. A trade still open after the last fill is
    left out, unless ``include_open`` (then it comes last, with ``open`` True).
    """
    if fills.is_empty():
        return pl.DataFrame(schema=TRADE_SCHEMA)
    missing = [c for c in ("instrument", "side", "qty", "price", "fee", "ts_us") if c not in fills]
    if missing:
        raise ValueError(f"the fills have no {', '.join(missing)} column")
    ts = fills["ts_us"]
    if ts.dtype.is_temporal():
        ts = ts.dt.epoch("us")
    frame = (
        fills.select("instrument", "side", "qty", "price", "fee")
        .with_columns(ts.cast(pl.Int64).alias("ts_us"))
        .sort("ts_us", maintain_order=True)
    )
    positions: dict[str, Position] = {}
    current: dict[str, _Trade] = {}
    rows: list[tuple] = []
    for instrument, side, qty, price, fee, ts_us in frame.iter_rows():
        qty = abs(qty)
        if qty <= QTY_EPSILON:
            continue
        fee = fee or 0.0
        signed = qty if side == "buy" else -qty
        position = positions.get(instrument)
        if position is None:
            position = positions[instrument] = Position(instrument)
        trade = current.get(instrument)
        if position.is_flat:
            trade = current[instrument] = _Trade(
                instrument, "long" if signed > 0 else "short", ts_us
            )
        assert trade is not None
        if position.is_flat or (position.qty > 0) == (signed > 0):
            position.apply(signed, price, fee, ts_us)
            trade.entry_qty += qty
            trade.entry_value += qty * price
            trade.fees += fee
            trade.max_qty = max(trade.max_qty, abs(position.qty))
            continue
        closing = min(qty, abs(position.qty))
        rest = qty - closing
        trade.realized += position.apply(signed, price, fee, ts_us)
        trade.exit_qty += closing
        trade.exit_value += closing * price
        trade.exit_time_us = ts_us
        if not position.is_flat and (position.qty > 0) == (trade.side == "long"):
            trade.fees += fee  # a partial close: the trade goes on
            continue
        flipped = not position.is_flat
        closing_fee = fee * closing / qty if flipped else fee
        trade.fees += closing_fee
        rows.append(trade.row(False))
        del current[instrument]
        if flipped and rest > QTY_EPSILON:
            following = current[instrument] = _Trade(
                instrument, "long" if signed > 0 else "short", ts_us
            )
            following.entry_qty = rest
            following.entry_value = rest * price
            following.fees = fee - closing_fee
            following.max_qty = abs(position.qty)
    if include_open:
        rows.extend(trade.row(True) for trade in current.values())
    return pl.DataFrame(rows, schema=TRADE_SCHEMA, orient="row")


def _floats(values: Sequence[float] | pl.Series | np.ndarray) -> np.ndarray:
    if isinstance(values, pl.Series):
        return values.cast(pl.Float64).drop_nulls().to_numpy()
    array = np.asarray(values, dtype=np.float64)
    return array[~np.isnan(array)] if array.size else array


def trade_stats(pnl: Sequence[float] | pl.Series | np.ndarray) -> dict[str, Any]:
    """Statistics of trade P&Ls (net of fees), in money unless named a rate:

    ``trades, wins, losses, breakeven`` (P&L exactly 0 is neither a win nor a loss),
    ``win_rate`` (wins / trades, 0..1), ``avg_win`` (mean of the wins), ``avg_loss``
    (mean of the losses, a negative number), ``gross_profit``, ``gross_loss`` (the sum
    of the losses, negative), ``profit_factor`` (gross profit / -gross loss; ``math.inf``
    with wins and no loss, None with neither), ``expectancy`` (mean P&L per trade),
    ``net_pnl``, ``largest_win``, ``largest_loss`` (the most negative P&L). A figure of
    an empty set (no trades, no wins, no losses) is None.
    """
    values = _floats(pnl)
    count = int(values.size)
    wins = values[values > 0]
    losses = values[values < 0]
    gross_profit = float(wins.sum())
    gross_loss = float(losses.sum())
    if losses.size:
        profit_factor: float | None = gross_profit / -gross_loss
    elif wins.size:
        profit_factor = math.inf
    else:
        profit_factor = None
    net = float(values.sum())
    return {
        "trades": count,
        "wins": int(wins.size),
        "losses": int(losses.size),
        "breakeven": count - int(wins.size) - int(losses.size),
        "win_rate": wins.size / count if count else None,
        "avg_win": float(wins.mean()) if wins.size else None,
        "avg_loss": float(losses.mean()) if losses.size else None,
        "gross_profit": gross_profit,
        "gross_loss": gross_loss,
        "profit_factor": profit_factor,
        "expectancy": net / count if count else None,
        "net_pnl": net,
        "largest_win": float(wins.max()) if wins.size else None,
        "largest_loss": float(losses.min()) if losses.size else None,
    }


def max_drawdown(equity: Sequence[float] | pl.Series | np.ndarray) -> tuple[float, float]:
    """The largest fall of ``equity`` from a previous peak: ``(amount, fraction)``, both
    positive (0.0 when it never fell). ``amount`` is the largest ``peak - equity`` in
    money; ``fraction`` the largest ``(peak - equity) / peak`` (over peaks above 0), so
    the two may come from different falls (a small fall from a low peak can be the
    larger share)."""
    values = _floats(equity)
    if values.size == 0:
        return 0.0, 0.0
    peaks = np.maximum.accumulate(values)
    falls = peaks - values
    amount = float(falls.max())
    positive = peaks > 0
    fraction = float((falls[positive] / peaks[positive]).max()) if positive.any() else 0.0
    return amount, fraction


def equity_returns(
    equity: Sequence[float] | pl.Series | np.ndarray, start: float | None = None
) -> np.ndarray:
    """Per-period simple returns of an equity curve (``start``: the equity before its
    first point, which then gets a return too). Periods from an equity at or below 0
    have no meaningful return and are left out."""
    values = _floats(equity)
    if start is not None:
        values = np.concatenate(([float(start)], values))
    if values.size < 2:
        return np.empty(0)
    before, after = values[:-1], values[1:]
    valid = before > 0
    return after[valid] / before[valid] - 1.0


def sharpe(
    returns: Sequence[float] | pl.Series | np.ndarray, periods_per_year: float
) -> float | None:
    """Annualised Sharpe ratio of per-period ``returns`` (risk-free rate 0): mean over the
    sample standard deviation (ddof=1), times sqrt(periods_per_year). None with fewer
    than 2 returns or none varying."""
    values = _floats(returns)
    if values.size < 2:
        return None
    std = float(values.std(ddof=1))
    if not std > 1e-15:
        return None
    return float(values.mean()) / std * math.sqrt(periods_per_year)


def sortino(
    returns: Sequence[float] | pl.Series | np.ndarray, periods_per_year: float
) -> float | None:
    """Annualised Sortino ratio (target 0): mean return over the downside deviation
    ``sqrt(sum(min(r, 0)**2) / n)`` of all n periods, times sqrt(periods_per_year).
    None without returns or without a losing period."""
    values = _floats(returns)
    if values.size == 0:
        return None
    downside = math.sqrt(float(np.square(np.minimum(values, 0.0)).sum()) / values.size)
    if not downside > 1e-15:
        return None
    return float(values.mean()) / downside * math.sqrt(periods_per_year)


def periods_per_year(timeframe: str) -> float:
    """Bars of ``timeframe`` (1m 5m 15m 1h 4h 1d ...) in a 365-day year of 24-hour days."""
    from sptrader.models import timeframe_minutes

    return 365 * 24 * 60 / timeframe_minutes(timeframe)
