"""Indicator throughput: bars/s per indicator and for the full set, on 1M synthetic bars.

Run: ``.venv/bin/python bench/indicators.py [--bars N] [--repeat R]``. Prints the median
of R runs per row (these machines are noisy: +/-10-25%).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import polars as pl

from sptrader.indicators import add_indicators

SPECS = ["sma20", "ema20", "wma10", "rsi14", "atr14", "adx14", "macd", "bb20", "stoch"]
SPECS += ["donchian20", "vwap"]


def make_bars(n: int) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    close = 100 + np.cumsum(rng.normal(0, 0.05, n))
    return pl.DataFrame(
        {
            "ts": np.datetime64("2020-01-01T00:00", "us")
            + np.arange(n, dtype=np.int64) * np.timedelta64(60_000_000, "us"),
            "open": close + rng.normal(0, 0.01, n),
            "high": close + rng.random(n) * 0.05,
            "low": close - rng.random(n) * 0.05,
            "close": close,
            "volume": rng.random(n) * 1000,
            "trades": rng.integers(1, 500, n),
        }
    )


def timed(bars: pl.DataFrame, specs: list[str], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        add_indicators(bars, specs)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bars = make_bars(args.bars)
    add_indicators(bars.head(1000), SPECS)  # warm up
    print(f"{args.bars:,} bars, median of {args.repeat}")
    print(f"{'indicator':<14}{'seconds':>10}{'M bars/s':>12}")
    for name, specs in [*((s, [s]) for s in SPECS), ("all 11", SPECS)]:
        seconds = timed(bars, specs, args.repeat)
        print(f"{name:<14}{seconds:>10.4f}{args.bars / seconds / 1e6:>12.1f}")
    holed = bars.with_columns(
        pl.when(pl.int_range(pl.len()) % 1000 == 0)
        .then(None)
        .otherwise(pl.col("close"))
        .alias("close")
    )
    seconds = timed(holed, SPECS, args.repeat)
    print(f"{'all, 0.1% null':<14}{seconds:>10.4f}{args.bars / seconds / 1e6:>12.1f}")


if __name__ == "__main__":
    main()
