"""Indicator throughput: bars/s per indicator and for the full set, on 1M synthetic bars,
then side by side with TA-Lib on the same bars: our seconds, TA-Lib's, the ratio and the
largest absolute difference of the values after the warm-up.

Run: ``.venv/bin/python bench/indicators.py [--bars N] [--repeat R]``. Prints the median
of R runs per row (these machines are noisy: +/-10-25%). TA-Lib (``pip install -e
.[bench]``) is imported only for the comparison; without it that table is skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import polars as pl

from sptrader.indicators import add_indicators, parse_spec, warmup

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
    against_talib(bars, args.repeat)


def talib_calls(talib, bars: pl.DataFrame) -> dict[str, object]:
    """Per spec, a call giving TA-Lib's outputs in the order of our spec's columns."""
    h, lo, c = (bars[name].to_numpy() for name in ("high", "low", "close"))
    return {
        "sma20": lambda: (talib.SMA(c, 20),),
        "ema20": lambda: (talib.EMA(c, 20),),
        "rsi14": lambda: (talib.RSI(c, 14),),
        "macd": lambda: talib.MACD(c, 12, 26, 9),
        "bb20": lambda: talib.BBANDS(c, 20, 2.0, 2.0, 0),
        "atr14": lambda: (talib.ATR(h, lo, c, 14),),
    }


def against_talib(bars: pl.DataFrame, repeat: int) -> None:
    try:
        import talib  # only here: the rest of the bench runs without it
    except ImportError:
        print("\nTA-Lib is not installed (pip install -e .[bench]): no comparison")
        return
    print(f"\nagainst TA-Lib {talib.__version__}, median of {repeat}")
    print(f"{'indicator':<14}{'ours s':>10}{'TA-Lib s':>10}{'ratio':>8}{'max abs diff':>14}")
    for spec, call in talib_calls(talib, bars).items():
        # Interleaved, so that a load change on a shared machine hits both sides.
        ours_runs, their_runs = [], []
        for _ in range(repeat):
            ours_runs.append(timed(bars, [spec], 1))
            start = time.perf_counter()
            reference = call()
            their_runs.append(time.perf_counter() - start)
        ours, theirs = statistics.median(ours_runs), statistics.median(their_runs)
        out = add_indicators(bars, [spec])
        first = warmup(spec)
        diff = max(
            float(np.max(np.abs(out[name].to_numpy()[first:] - expected[first:])))
            for name, expected in zip(parse_spec(spec).columns, reference, strict=True)
        )
        print(f"{spec:<14}{ours:>10.4f}{theirs:>10.4f}{ours / theirs:>8.1f}{diff:>14.1e}")


if __name__ == "__main__":
    main()
