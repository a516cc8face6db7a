"""Our backtester and indicators beside vectorbt and TA-Lib, in one run on one machine.

1. SMA 10/30 cross, long only, over N synthetic 1m bars (bench/backtest.py's random walk):
   ``run_backtest`` (indicators, signals, the fill model, risk limits, the report's
   figures) against vectorbt's ``Portfolio.from_signals`` on the same bars with the same
   semantics (a cross on bar t fills at bar t+1's open: signals shifted one bar, price =
   the open; a fixed notional per entry; no fees or slippage on either side). The trades
   must be the same (count, entry and exit times); the script says so or stops.
   vectorbt's first call compiles its numba kernels: it is run once before timing.
2. Indicators on the same bars against TA-Lib: see bench/indicators.py (run it too).

Needs the bench extra (``make bench`` installs it; or ``pip install -e .[bench]``).
Run: .venv/bin/python bench/peers.py [--bars N] [--runs R]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backtest import make_bars

from sptrader.backtest import run_backtest
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.strategies import registry

NOTIONAL = 10_000.0


def best_and_median(function, runs: int) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    try:
        import pandas as pd
        import vectorbt as vbt
    except ImportError:
        sys.exit("vectorbt is not installed: pip install -e '.[bench]' (make bench does)")
    bars = make_bars(args.bars)
    broker = BrokerConfig(slippage_bps=0, fee_bps=0, fee_per_unit=0, signal_notional=NOTIONAL)
    limits = RiskConfig()
    strategy = registry.build("sma_cross", {"fast": 10, "slow": 30})

    def ours():
        return run_backtest(strategy, bars, broker, limits, "1m")

    index = pd.DatetimeIndex(bars["ts"].to_numpy())
    close = pd.Series(bars["close"].to_numpy(), index=index)
    open_ = pd.Series(bars["open"].to_numpy(), index=index)

    def theirs():
        fast = vbt.MA.run(close, 10).ma
        slow = vbt.MA.run(close, 30).ma
        entries = fast.vbt.crossed_above(slow).shift(1, fill_value=False)
        exits = fast.vbt.crossed_below(slow).shift(1, fill_value=False)
        return vbt.Portfolio.from_signals(
            close,
            entries,
            exits,
            price=open_,
            size=NOTIONAL,
            size_type="value",
            fees=0.0,
            init_cash=broker.starting_cash,
            freq="1min",
        )

    ours()
    theirs()  # numba compiles here
    our_best, our_median, result = best_and_median(ours, args.runs)
    their_best, their_median, portfolio = best_and_median(theirs, args.runs)

    trades = portfolio.trades.records_readable
    closed = trades[trades["Status"] == "Closed"]
    their_entries = closed["Entry Timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64)
    their_exits = closed["Exit Timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64)
    mine = result.trades.filter(result.trades["exit_reason"] != "end")
    same = (
        mine.height == len(closed)
        and np.array_equal(mine["entry_time_us"].to_numpy(), their_entries)
        and np.array_equal(mine["exit_time_us"].to_numpy(), their_exits)
    )
    if not same:
        sys.exit(f"the trades differ: ours {mine.height}, vectorbt {len(closed)}: not comparable")
    print(
        f"SMA 10/30 cross over {bars.height:,} 1m bars, {mine.height:,} trades (the same in"
        f" both), best / median of {args.runs}; load {os.getloadavg()[0]:.1f} on"
        f" {os.cpu_count()} cores"
    )
    print(
        f"  sptrader run_backtest   {our_best * 1000:6.0f} / {our_median * 1000:6.0f} ms"
        f"  ({bars.height / our_best / 1e6:.2f}M bars/s)"
    )
    print(
        f"  vectorbt from_signals   {their_best * 1000:6.0f} / {their_median * 1000:6.0f} ms"
        f"  ({bars.height / their_best / 1e6:.2f}M bars/s)"
    )
    print(f"  ratio (ours / vectorbt, best): {our_best / their_best:.2f}")


if __name__ == "__main__":
    main()
