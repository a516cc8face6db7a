"""Intra-bar detail (``--detail 1m``): a strategy decided on its own bars (1h, 4h...)
filled on the finer stored path inside them.

On coarse bars alone a bar whose range reaches both the stop and the target cannot say
which came first (the engine assumes the stop), and a stop's fill after a gap inside
the bar is only known to the bar. With detail the strategy's signals stay those of its
bars (evaluated once on them, acted on at the next bar's open), but the account is run
on the finer bars: the entry at the open of the first fine bar of the next coarse bar,
stops and targets checked fine bar by fine bar, so their order and gaps are as they
happened. A trailing stop follows the fine bars' extremes (each moving it for the next
fine bar), and the volume cap (``broker.max_volume_share``) takes its share of each fine
bar's own volume, so a partial fill's rest works on at the next fine bar. The equity curve is sampled back at each coarse bar's close, so the figures
(Sharpe, drawdown, exposure) stay per coarse bar and compare with a run without detail.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from sptrader.backtest.simulation import Simulation, Trails, volume_cap
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import UsageError
from sptrader.models import timeframe_minutes

__all__ = ["DetailRun", "check_detail", "run_detailed"]

Events = tuple[list[int], list[int], list[float], list[float], list[str]]


class DetailRun:
    """The finer path's simulation, its curve sampled at the coarse closes."""

    def __init__(
        self,
        sim: Simulation,
        equity: np.ndarray,
        position: np.ndarray,
        coarse_ts: np.ndarray,
        bars: int,
        volume_cap: str,
    ) -> None:
        self.sim = sim
        self.equity = equity
        self.position = position
        self.coarse_ts = coarse_ts
        self.bars = bars  # fine bars simulated
        self.volume_cap = volume_cap  # what the summary says of the cap on the fine bars

    def trades(self, gaps: Sequence[tuple[int, int]]) -> pl.DataFrame:
        """The trades, their ``bars`` counted in coarse bars (as without detail)."""
        trades = self.sim.trades_frame(gaps)
        if trades.is_empty():
            return trades
        ts = self.coarse_ts

        def coarse_index(column: str) -> np.ndarray:
            return np.searchsorted(ts, trades[column].to_numpy(), side="right") - 1

        held = coarse_index("exit_time_us") - coarse_index("entry_time_us")
        return trades.with_columns(pl.Series("bars", held, dtype=pl.Int64))


def check_detail(detail: str, timeframe: str) -> None:
    """A UsageError (in the command's words) unless ``detail`` bars fill ``timeframe``
    bars whole: finer, and dividing them."""
    detail_minutes = timeframe_minutes(detail)
    if detail_minutes >= timeframe_minutes(timeframe):
        raise UsageError(f"--detail {detail} must be finer than --tf {timeframe}")
    if timeframe_minutes(timeframe) % detail_minutes:
        raise UsageError(f"--detail {detail} must divide --tf {timeframe} into whole bars")


def run_detailed(
    instrument: str,
    fine: pl.DataFrame,
    ts: np.ndarray,
    first: int,
    width_us: int,
    signals: tuple[Events, Trails | None],
    broker: BrokerConfig,
    limits: RiskConfig,
) -> DetailRun:
    """The account on ``fine`` bars (prepared, oldest first) for coarse bars ``ts``
    (open times, µs; traded from index ``first``) of ``width_us`` each, through the
    coarse ``signals``: their events and, when any trails, their trails."""
    fine_ts_all = fine["ts"].dt.epoch("us").to_numpy()
    lo = int(np.searchsorted(fine_ts_all, ts[first]))
    hi = int(np.searchsorted(fine_ts_all, ts[-1] + width_us))
    window = fine.slice(lo, hi - lo)
    fine_ts = fine_ts_all[lo:hi]
    arrays = tuple(
        window[column].cast(pl.Float64).to_numpy() for column in ("open", "high", "low", "close")
    )
    config, volume, cap = volume_cap(broker, window, 0)
    sim = Simulation(instrument, arrays, fine_ts, 0, config, limits, volume=volume)
    if fine_ts.size:
        sim.run(*_fine_events(*signals, ts, fine_ts))
    equity, position = sim.equity_curve()
    # The fine bar that closes each coarse bar (the last one opening before its end).
    closing = np.searchsorted(fine_ts, ts[first:] + width_us) - 1
    has = closing >= 0
    at = np.maximum(closing, 0)
    coarse_equity = np.where(has, equity[at] if equity.size else 0.0, broker.starting_cash)
    coarse_position = np.where(has, position[at] if position.size else 0.0, 0.0)
    return DetailRun(sim, coarse_equity, coarse_position, ts, int(fine_ts.size), cap)


def _fine_events(
    events: Events, trails: Trails | None, ts: np.ndarray, fine_ts: np.ndarray
) -> tuple[Events, Trails | None]:
    """Each coarse event (and its trail) moved to the fine bar before the first fine bar
    of the next coarse bar (the simulation fills at the open of the bar after an
    event's); an event with no fine bar after it is dropped, two landing on one fine bar
    keep the last."""
    bars, sides, stops, targets, reasons = events
    if not bars:
        return events, trails
    fills = np.searchsorted(fine_ts, ts[np.asarray(bars) + 1])
    kept: dict[int, int] = {}
    for i, fill in enumerate(fills.tolist()):
        if fill < fine_ts.size:
            kept[fill - 1] = i  # a later event on the same fine bar wins
    order = sorted(kept)
    picks = [kept[bar] for bar in order]
    moved = (
        order,
        [sides[i] for i in picks],
        [stops[i] for i in picks],
        [targets[i] for i in picks],
        [reasons[i] for i in picks],
    )
    return moved, None if trails is None else [trails[i] for i in picks]
