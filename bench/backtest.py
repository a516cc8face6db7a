"""Backtest speed: bars/s of a strategy over 1M 1m bars, and a 100-combination sweep.

1. ``run_backtest`` of sma_cross (10/30, long only; then with ``short``, which reverses
   at every cross) over N synthetic 1m bars built in memory (a random walk around 1.10,
   EURUSD-like), the default [broker] and [risk] config: indicators, evaluate and the
   simulation all included. Also rsi_reversion and breakout (stops and targets) for
   comparison, and the split of sma_cross's time into indicators / evaluate / the rest.
2. The same sma_cross run on bars read from a DuckDB store (``queries.bars_between``
   of the N bars written to a temporary file): read time and total.
3. A sweep of fast=5..50:5 x slow=20..200:20 (100 combinations) over M bars, on every
   core (ProcessPoolExecutor, spawn; the bars are sent to each worker once), and on
   one process for comparison (``--serial``).

Prints medians of ``--runs`` runs. Run: .venv/bin/python bench/backtest.py
[--bars N] [--sweep-bars M] [--runs R] [--serial]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sptrader.backtest import run_backtest
from sptrader.backtest.sweep import build_strategy, combinations, parse_params, run_sweep
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.indicators import add_indicators
from sptrader.models import US_PER_MINUTE
from sptrader.strategies import registry

START_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z


def make_bars(count: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 1.10 * np.exp(np.cumsum(rng.normal(0, 0.0003, count)))
    open_ = np.concatenate(([1.10], close[:-1])) * (1 + rng.normal(0, 0.00002, count))
    wick = np.abs(rng.normal(0, 0.0001, (2, count)))
    return pl.DataFrame(
        {
            "instrument": pl.Series(["SIM:EURUSD"] * count, dtype=pl.String),
            "ts": pl.Series(START_US + np.arange(count, dtype=np.int64) * US_PER_MINUTE).cast(
                pl.Datetime("us")
            ),
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wick[0]),
            "low": np.minimum(open_, close) * (1 - wick[1]),
            "close": close,
            "volume": rng.uniform(1, 100, count),
            "trades": rng.integers(1, 50, count),
        }
    )


def median_time(function, runs: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def bench_strategies(bars: pl.DataFrame, runs: int) -> None:
    broker, limits = BrokerConfig(), RiskConfig()
    print(f"run_backtest over {bars.height:,} 1m bars (median of {runs}):")
    for name, params in [
        ("sma_cross", {}),
        ("sma_cross", {"short": True}),
        ("rsi_reversion", {}),
        ("breakout", {}),
    ]:
        strategy = registry.build(name, params)
        seconds, result = median_time(
            lambda s=strategy: run_backtest(s, bars, broker, limits, "1m"), runs
        )
        label = name + (" short" if params else "")
        print(
            f"  {label:<18} {seconds * 1000:7.0f} ms  {bars.height / seconds / 1e6:5.2f}M bars/s"
            f"  {result.summary['signals']:>7,} signals  {result.summary['trades']:>7,} trades"
        )
    strategy = registry.build("sma_cross", {})
    specs = strategy.indicators()
    indicators, with_columns = median_time(lambda: add_indicators(bars, specs), runs)
    evaluate, _ = median_time(lambda: strategy.evaluate(with_columns), runs)
    total, _ = median_time(lambda: run_backtest(strategy, bars, broker, limits, "1m"), runs)
    print(
        f"  sma_cross split: indicators {indicators * 1000:.0f} ms, evaluate"
        f" {evaluate * 1000:.0f} ms, simulation and summary {(total - indicators - evaluate) * 1000:.0f} ms"
    )


def bench_store(bars: pl.DataFrame, runs: int) -> None:
    from sptrader.store import Store, queries

    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "bench.duckdb")
        try:
            store.migrate()
            store.upsert_bars(bars)
            first = START_US
            last = START_US + bars.height * US_PER_MINUTE
            read, stored = median_time(
                lambda: queries.bars_between(store, "SIM:EURUSD", "1m", first, last), runs
            )
            strategy = registry.build("sma_cross", {})
            total, _ = median_time(
                lambda: run_backtest(
                    strategy,
                    queries.bars_between(store, "SIM:EURUSD", "1m", first, last),
                    BrokerConfig(),
                    RiskConfig(),
                    "1m",
                    instrument="SIM:EURUSD",
                ),
                runs,
            )
            hourly, rolled = median_time(
                lambda: queries.bars_between(store, "SIM:EURUSD", "1h", first, last), runs
            )
        finally:
            store.close()
    print(
        f"from DuckDB: read {stored.height:,} 1m bars {read * 1000:.0f} ms;"
        f" read + sma_cross {total * 1000:.0f} ms = {stored.height / total / 1e6:.2f}M bars/s;"
        f" 1h rollup ({rolled.height:,} bars) {hourly * 1000:.0f} ms"
    )


def bench_sweep(bars: pl.DataFrame, serial: bool) -> None:
    cls = registry.resolve("sma_cross")
    combos = combinations(parse_params(["fast=5..50:5", "slow=20..200:20"]))
    strategies = [build_strategy(cls, combo) for combo in combos]
    workers = os.cpu_count() or 1
    before = _children_cpu()
    started = time.perf_counter()
    rows = run_sweep(strategies, bars, BrokerConfig(), RiskConfig(), "1m", workers=workers)
    pooled = time.perf_counter() - started
    worker_cpu = _children_cpu() - before
    best = rows[0]
    print(
        f"sweep of {len(rows)} combinations over {bars.height:,} bars on {workers} processes:"
        f" {pooled:.2f} s ({pooled / len(rows) * 1000:.0f} ms per combination,"
        f" {len(rows) * bars.height / pooled / 1e6:.2f}M bar-runs/s), workers' CPU time"
        f" {worker_cpu:.2f} s; best fast={best.params['fast']} slow={best.params['slow']}"
        f" net P&L {best.summary['net_pnl']:,.2f}"
    )
    if serial:
        cpu = time.process_time()
        started = time.perf_counter()
        run_sweep(strategies, bars, BrokerConfig(), RiskConfig(), "1m", workers=1)
        alone = time.perf_counter() - started
        print(
            f"  the same on 1 process: {alone:.2f} s, CPU time {time.process_time() - cpu:.2f} s"
            f" ({alone / pooled:.2f}x the pooled time)"
        )
    print(f"  load average while measuring: {os.getloadavg()[0]:.1f} on {workers} cores")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--sweep-bars", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serial", action="store_true", help="also time the sweep on 1 process")
    args = parser.parse_args()
    bars = make_bars(args.bars)
    bench_strategies(bars, args.runs)
    bench_store(bars, args.runs)
    bench_sweep(make_bars(args.sweep_bars, seed=11), args.serial)


if __name__ == "__main__":
    main()
