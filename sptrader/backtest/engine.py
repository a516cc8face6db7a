"""The backtest engine: one strategy over one instrument's bars, with the paper broker's
fill model (:class:`~sptrader.broker.fill_model.FillModel`) and risk limits.

Semantics
---------

- **Signals.** The strategy's ``evaluate`` runs once over all the bars (warm-up bars
  included, with the indicator columns it asks for). A signal on bar t is acted on at
  the open of bar t+1 (``FillModel.open_fill``: the open moved against the trader by
  ``slippage_bps``), and pays ``fee_bps`` of the notional plus ``fee_per_unit`` per
  unit. A signal on the last bar has no next bar and is not filled. Signals on bars
  before ``start_us`` (the warm-up) are ignored. Several signals on one bar: the last one
  (in the strategy's output order) counts.
- **Sides.** ``buy`` = be long (a short is closed first: a reversal), ``sell`` = be short
  (a long is closed first), ``exit`` = be flat. A signal in the direction of the
  position held is ignored (no adding); ``exit`` while flat is ignored. One position at
  a time.
- **Size.** A signal with a stop (and ``risk.risk_per_trade_pct`` > 0) is sized so that
  hitting the stop loses that % of equity: ``size_from_risk(equity, pct, fill price,
  stop)``; without a stop, ``broker.signal_notional / fill price``. Equity is the cash
  after any close at the same open (the account is flat when an entry is sized).
- **Risk limits.** Every entry passes :func:`sptrader.broker.risk.check`
  (max_position_notional, max_total_notional, max_qty, max_open_positions,
  risk_per_trade_pct, daily_loss_limit: the day's P&L, against the equity marked at the
  close of the day's last bar before 00:00 UTC, blocks entries until the next UTC day).
  Quotes are never stale in a backtest. Closing is always allowed. A rejected entry
  leaves the account flat (after a reversal's close) and is listed in ``rejected``. So
  is an entry whose stop (or target) is on the wrong side of its fill price (as the paper
  broker refuses it) or that computes to no size.
- **Stop and target.** The signal's ``stop`` and ``target`` become a stop order and a
  limit order, one-cancels-the-other, working from the entry bar on (after the entry
  filled at its open: the entry bar's high and low count). A bar whose range reaches the
  stop fills it at the stop price, or at the open when the bar opened beyond it (a gap:
  the worse price), with slippage (``FillModel.stop_fill``); the target fills at its
  price, or at a better open, without slippage (``FillModel.limit_fill``). When one bar
  reaches both, the stop is assumed to fill first (the conservative choice; we cannot
  know the order inside a bar), unless the bar opened beyond the target; the summary's
  ``ambiguous_bars`` counts those exits. With ``detail`` (finer bars of the same
  instrument, ``--detail 1m``) the account is run on them instead, so the order and any
  gap inside the bar are as they happened (:mod:`sptrader.backtest.detail`). At a bar where
  a signal's order fills at the open, resting stops and targets that the open already
  crossed fill first (they were there first), then the signal acts.
- **Trailing stops.** A signal's optional ``trail`` (a price distance) or ``trail_pct``
  (a % of the price; :data:`sptrader.strategies.base.OPTIONAL_SIGNAL_SCHEMA`) makes its
  stop trail the best price since the entry: a long's stop at ``best - trail`` (``best *
  (1 - trail_pct / 100)``), where best is the entry bar's open, then the highest high,
  and only ever up; a short's from the lowest low, down. A bar's high (low) moves the
  stop for the next bar, never for itself, so a bar cannot both raise the stop and hit
  it (the conservative choice: we do not know which came first inside a bar). Its stop,
  if given, is the level's floor (a short's: ceiling) and still sizes the entry; without
  one the entry is sized from ``signal_notional``. The trade's ``stop`` is the level it
  stood at when the trade ended. The paper broker trails the same way from its quotes
  (:mod:`sptrader.broker.realism`). With ``detail`` the finer bars' highs and lows move
  it, each for the next finer bar.
- **Volume cap.** ``broker.max_volume_share`` > 0: a bar fills at most that share of its
  volume, over all the orders filled on it; the rest keeps working. An entry's rest and
  a market exit's (a signal's, a reversal's, or a stop's once triggered) fill at the
  following bars' opens (with slippage); a target's rest stays a limit at its price, the
  stop still working beside it. Entries are sized and checked against the limits once,
  for the whole quantity, and protected by their stop and target from their first fill
  (a trail starts at that bar's open); a stop or target filling cancels what the entry
  has not filled. An exit under way completes: signals arriving meanwhile only say what
  to enter once it has (a reversal's new side enters at the open where the close
  completes, in what is left of that bar's volume). A bar without volume fills nothing.
  A trade's ``qty`` is what its entry filled, its prices the averages of its fills, its
  exit time and reason those of the fill that completed it; ``partial_fills`` in the
  summary counts the fills that left part of their order working. The close at the end
  is not capped. Bars with no volume at all (none in the window) cannot be capped: the
  run is uncapped and the summary's ``volume_cap`` says so. With ``detail`` each finer bar
  fills at most its share of its own volume.
- **Latency.** ``broker.latency_bars`` = N: a signal on bar t reaches the market N bars
  later and fills at the open of bar t+1+N (exactly a run with every signal moved N bars
  later); one with no bar t+1+N is not filled. Stops and targets, resting at the venue,
  have none.
- **End.** A position still open after the last bar is closed at the last bar's close
  (with slippage and fees; ``exit_reason`` "end"), so the trades' P&L adds up to the
  change in equity.
- **Equity.** Marked at each bar's close: cash (starting cash + realized P&L - fees) plus
  the open position's unrealized P&L at the close. ``exposure`` is the share of bars that
  closed with a position open. Returns for Sharpe/Sortino are per bar, annualised for
  the timeframe (:func:`sptrader.broker.performance.periods_per_year`).
- **Gaps.** ``gaps`` (missing [start, end) µs ranges of the window): every trade whose
  holding period [entry bar open, exit bar open) overlaps one gets ``spans_gap`` and
  the ``gap_minutes`` it overlaps.

Speed: indicators and signals are vectorised (polars); the simulation does Python work
only per signal and per trade; stop/target hits between events are found with numpy
searches over slices of the bars (doubling chunks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import polars as pl

from sptrader.backtest.simulation import (
    TRADE_COLUMNS,
    TRADE_SCHEMA,
    Simulation,
    Trails,
    volume_cap,
)
from sptrader.broker.performance import (
    equity_returns,
    max_drawdown,
    periods_per_year,
    sharpe,
    sortino,
    trade_stats,
)
from sptrader.broker.realism import trail_problem
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.indicators import add_indicators
from sptrader.models import US_PER_MINUTE, timeframe_minutes
from sptrader.schema import FILL_SCHEMA, ORDER_FLOW_SCHEMA, STORED_BAR_COLUMNS
from sptrader.strategies.base import OPTIONAL_SIGNAL_SCHEMA, Strategy
from sptrader.strategies.informative import with_informative

__all__ = ["TRADE_COLUMNS", "BacktestResult", "run_backtest"]

NAN = math.nan
_SIDE_CODES = {"buy": 1, "sell": -1, "exit": 0}


@dataclass
class BacktestResult:
    strategy: str
    params: dict[str, Any]
    instrument: str
    timeframe: str
    start_us: int  # the first traded bar's open time
    end_us: int  # the last bar's close time
    summary: dict[str, Any]
    trades: pl.DataFrame  # TRADE_SCHEMA
    fills: pl.DataFrame  # FILL_SCHEMA (sptrader.broker.performance.round_trips reads it)
    equity: pl.DataFrame  # ts (Datetime us), equity, position (signed qty at the close)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def strategy_params(strategy: Strategy) -> dict[str, Any]:
    params = strategy.params
    return msgspec.to_builtins(params) if isinstance(params, msgspec.Struct) else {}


def run_backtest(
    strategy: Strategy,
    bars: pl.DataFrame,
    broker_cfg: BrokerConfig | None = None,
    risk_cfg: RiskConfig | None = None,
    timeframe: str = "1m",
    *,
    instrument: str | None = None,
    start_us: int | None = None,
    gaps: Sequence[tuple[int, int]] = (),
    detail: pl.DataFrame | None = None,
    detail_timeframe: str | None = None,
) -> BacktestResult:
    """Run ``strategy`` over ``bars`` (one instrument, oldest first: ``ts`` and OHLC,
    plus ``volume``/``trades`` when its indicators need them) and return the trades, the
    equity curve and the summary. Bars opening before ``start_us`` only warm the
    indicators up. ``gaps`` marks trades that span missing data (see the module doc).
    ``detail``: finer bars of the same instrument (``detail_timeframe``) that the
    account is filled on (:mod:`sptrader.backtest.detail`)."""
    started = time.perf_counter()
    broker_cfg = broker_cfg or BrokerConfig()
    risk_cfg = risk_cfg or RiskConfig()
    width_us = timeframe_minutes(timeframe) * US_PER_MINUTE
    frame = _prepared(bars, instrument)
    name = instrument or (frame["instrument"][0] if frame.height else "BACKTEST")
    ts = frame["ts"].dt.epoch("us").to_numpy()
    first = 0 if start_us is None else int(np.searchsorted(ts, start_us))
    count = frame.height
    if count - first <= 0:
        return _empty_result(strategy, name, timeframe, start_us or 0, broker_cfg, started)

    # The same spec twice (sma_cross with fast == slow) is one set of columns.
    specs = list(dict.fromkeys(strategy.indicators()))
    with_indicators = add_indicators(frame, specs) if specs else frame
    # Higher timeframes the strategy reads (informative bars), rolled up from these bars.
    with_indicators = with_informative(strategy, with_indicators, timeframe)
    signals = strategy.evaluate(with_indicators)
    events, trails = _events(signals, ts, first, broker_cfg.latency_bars)

    arrays = tuple(
        frame[column].cast(pl.Float64).to_numpy() for column in ("open", "high", "low", "close")
    )
    sim_cfg, volume, cap = volume_cap(broker_cfg, frame, first)
    sim = Simulation(name, arrays, ts, first, sim_cfg, risk_cfg, volume=volume)
    sim.run(events, trails)
    # Exits that assumed the stop came first on a bar reaching both.
    extra: dict[str, Any] = {
        "ambiguous_bars": sim.ambiguous,
        "partial_fills": sim.partial_fills,
        "volume_cap": cap,
    }
    if detail is None:
        trades = sim.trades_frame(gaps)
        equity, position = sim.equity_curve()
    else:
        from sptrader.backtest.detail import run_detailed

        without = float(sim.trades_frame(gaps)["pnl"].sum())
        fine = run_detailed(
            name,
            _prepared(detail, instrument),
            ts,
            first,
            width_us,
            (events, trails),
            broker_cfg,
            risk_cfg,
        )
        sim = fine.sim
        trades = fine.trades(gaps)
        equity, position = fine.equity, fine.position
        extra.update(
            detail_timeframe=detail_timeframe,
            detail_bars=fine.bars,
            net_pnl_without_detail=without,
            # The cap is on the finer bars' volume, and their partial fills are counted.
            partial_fills=sim.partial_fills,
            volume_cap=fine.volume_cap,
        )
    summary = summarize(
        trades["pnl"],
        equity,
        position,
        broker_cfg.starting_cash,
        timeframe,
        fees=float(trades["fees"].sum()),
    )
    elapsed = time.perf_counter() - started
    summary.update(
        signals=len(events[0]),
        rejected=len(sim.rejected),
        trades_spanning_gaps=int(trades["spans_gap"].sum()),
        **extra,
        elapsed_s=elapsed,
        bars_per_s=(count / elapsed) if elapsed > 0 else None,
    )
    return BacktestResult(
        strategy=strategy.name,
        params=strategy_params(strategy),
        instrument=name,
        timeframe=timeframe,
        start_us=int(ts[first]),
        end_us=int(ts[-1]) + width_us,
        summary=summary,
        trades=trades,
        fills=sim.fills_frame(),
        equity=pl.DataFrame(
            {
                "ts": pl.Series(ts[first:]).cast(pl.Datetime("us")),
                "equity": equity,
                "position": position,
            }
        ),
        rejected=sim.rejected,
    )


def summarize(
    pnl: pl.Series | Sequence[float],
    equity: np.ndarray,
    position: np.ndarray,
    starting_cash: float,
    timeframe: str,
    *,
    fees: float = 0.0,
) -> dict[str, Any]:
    """The report's figures from the trades' P&L and the per-bar equity curve."""
    stats = trade_stats(pnl)
    curve = np.concatenate(([starting_cash], equity))
    drawdown, drawdown_fraction = max_drawdown(curve)
    returns = equity_returns(equity, start=starting_cash)
    per_year = periods_per_year(timeframe)
    final = float(equity[-1]) if equity.size else starting_cash
    return {
        "bars": int(equity.size),
        **stats,
        "return_pct": (final - starting_cash) / starting_cash * 100 if starting_cash else None,
        "fees": fees,
        "max_drawdown": drawdown,
        "max_drawdown_pct": drawdown_fraction * 100,
        "sharpe": sharpe(returns, per_year),
        "sortino": sortino(returns, per_year),
        "exposure_pct": float(np.count_nonzero(position) / position.size * 100)
        if position.size
        else 0.0,
        "starting_cash": starting_cash,
        "final_equity": final,
    }


def _prepared(bars: pl.DataFrame, instrument: str | None) -> pl.DataFrame:
    missing = [c for c in ("ts", "open", "high", "low", "close") if c not in bars.columns]
    if missing:
        raise ValueError(f"the bars have no {', '.join(missing)} column")
    frame = bars
    if frame.schema["ts"] != pl.Datetime("us"):
        ts = frame["ts"]
        frame = frame.with_columns(
            (ts.cast(pl.Datetime("us")) if ts.dtype.is_temporal() else ts.cast(pl.Int64))
            .cast(pl.Datetime("us"))
            .alias("ts")
        )
    if "instrument" in frame.columns:
        names = frame["instrument"].unique()
        if names.len() > 1:
            raise ValueError(f"the bars hold {names.len()} instruments: backtest one at a time")
        if instrument is not None:
            frame = frame.with_columns(pl.lit(instrument).alias("instrument"))
    else:
        frame = frame.with_columns(pl.lit(instrument or "BACKTEST").alias("instrument"))
    for column, value in (("volume", 0.0), ("trades", 0)):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(value).alias(column))
    # Order flow is unknown (NULL) unless the bars have it: strategies see one layout.
    frame = frame.with_columns(
        pl.lit(None, dtype=kind).alias(column)
        for column, kind in ORDER_FLOW_SCHEMA.items()
        if column not in frame.columns
    )
    frame = frame.select(
        *STORED_BAR_COLUMNS, *[c for c in frame.columns if c not in STORED_BAR_COLUMNS]
    )
    if frame.height > 1 and not frame["ts"].is_sorted():
        frame = frame.sort("ts")
    return frame


def _events(
    signals: pl.DataFrame, ts: np.ndarray, first: int, latency: int = 0
) -> tuple[tuple[list[int], list[int], list[float], list[float], list[str]], Trails | None]:
    """The signals to act on, one per bar (the last of each), in time order: their bar
    index (``latency`` bars after the signal's), side code (1 buy, -1 sell, 0 exit), stop,
    target (NaN: none) and reason; and their (trail, trail_pct) when any signal trails."""
    empty: tuple[list[int], list[int], list[float], list[float], list[str]] = ([], [], [], [], [])
    if signals is None or signals.is_empty():
        return empty, None
    for column in ("ts", "side"):
        if column not in signals.columns:
            raise ValueError(f"the strategy's signals have no {column!r} column")
    sides = signals["side"].cast(pl.String)
    unknown = sides.filter(~sides.is_in(list(_SIDE_CODES))).unique().to_list()
    if unknown:
        raise ValueError(f"the strategy returned signal side(s) {unknown}: use buy, sell or exit")
    at = signals["ts"]
    at_us = (at.cast(pl.Datetime("us")).dt.epoch("us") if at.dtype.is_temporal() else at).to_numpy()
    index = np.searchsorted(ts, at_us)
    inside = index < ts.size
    found = np.zeros(index.size, dtype=bool)
    found[inside] = ts[index[inside]] == at_us[inside]
    # Acted on at the open of the bar after the latency: that bar must exist; warm-up
    # bars do not trade.
    usable = found & (index >= first) & (index + 1 + latency < ts.size)
    if not usable.any():
        return empty, None

    def column(name: str) -> pl.Series:
        if name in signals.columns:
            return signals[name].cast(pl.Float64).fill_null(NAN)
        return pl.Series(name, [NAN] * signals.height, dtype=pl.Float64)

    trailing = [name for name in OPTIONAL_SIGNAL_SCHEMA if name in signals.columns]
    table = (
        pl.DataFrame(
            {
                "bar": index + latency,
                "side": sides.replace_strict(_SIDE_CODES, return_dtype=pl.Int8),
                "stop": column("stop"),
                "target": column("target"),
                "reason": signals["reason"].cast(pl.String).fill_null("")
                if "reason" in signals.columns
                else pl.Series("reason", [""] * signals.height),
                **{name: column(name) for name in trailing},
            }
        )
        .filter(pl.Series(usable))
        .unique("bar", keep="last", maintain_order=True)
        .sort("bar", maintain_order=True)
    )
    events = (
        table["bar"].to_list(),
        table["side"].to_list(),
        table["stop"].to_list(),
        table["target"].to_list(),
        table["reason"].to_list(),
    )
    return events, _trails(table, ts) if trailing else None


def _trails(table: pl.DataFrame, ts: np.ndarray) -> Trails | None:
    """Each event's (trail, trail_pct), NaN for none; None when no signal trails. A bad
    value is the strategy's error, named with its bar."""
    trail = table["trail"] if "trail" in table.columns else pl.Series([NAN] * table.height)
    pct = table["trail_pct"] if "trail_pct" in table.columns else pl.Series([NAN] * table.height)
    given = ~trail.is_nan() | ~pct.is_nan()
    if not given.any():
        return None
    for bar, distance, percent in zip(
        table["bar"].filter(given), trail.filter(given), pct.filter(given), strict=True
    ):
        problem = trail_problem(
            None if math.isnan(distance) else distance, None if math.isnan(percent) else percent
        )
        if problem:
            at = np.datetime64(int(ts[bar]), "us")
            raise ValueError(f"the strategy's signal at {at}Z: {problem}")
    return list(zip(trail.to_list(), pct.to_list(), strict=True))


def _empty_result(
    strategy: Strategy,
    instrument: str,
    timeframe: str,
    start_us: int,
    broker_cfg: BrokerConfig,
    started: float,
) -> BacktestResult:
    empty = np.zeros(0)
    summary = summarize([], empty, empty, broker_cfg.starting_cash, timeframe)
    summary.update(
        signals=0,
        rejected=0,
        trades_spanning_gaps=0,
        ambiguous_bars=0,
        partial_fills=0,
        volume_cap="off" if broker_cfg.max_volume_share <= 0 else "off: no bars",
        elapsed_s=time.perf_counter() - started,
        bars_per_s=None,
    )
    return BacktestResult(
        strategy=strategy.name,
        params=strategy_params(strategy),
        instrument=instrument,
        timeframe=timeframe,
        start_us=start_us,
        end_us=start_us,
        summary=summary,
        trades=pl.DataFrame(schema=TRADE_SCHEMA),
        fills=pl.DataFrame(schema=FILL_SCHEMA),
        equity=pl.DataFrame(
            schema={"ts": pl.Datetime("us"), "equity": pl.Float64, "position": pl.Float64}
        ),
    )
