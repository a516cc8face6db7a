"""Training sets: each labelled signal's features at its bar, beside its label
(`sptrader ml features`).

The features of a signal are the values at the signal's bar (of the scanner's
timeframe) of the strategy's own indicator columns (``Strategy.indicators()``) and of a
fixed set of context columns (``CONTEXT``): returns over 1, 5 and 20 bars, the bar's
range and the ATR(14) in % of its close, the RSI(14), the volume against its 20-bar
mean, and the bar's UTC hour and weekday. Every one is causal, computed per instrument
from bars up to and including the signal's bar: bars after it change nothing (a test
truncates the history at each signal and compares). The side is a feature too (+1 buy,
-1 sell).

Pure polars: the caller loads the bars (through the client) and writes the Parquet.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from sptrader.clock import format_us
from sptrader.config import ScannerConfig
from sptrader.indicators import add_indicators
from sptrader.models import US_PER_MINUTE, timeframe_minutes
from sptrader.strategies.base import Strategy

#: Context features every training set has (besides the strategy's indicators).
CONTEXT = (
    "ret_1",
    "ret_5",
    "ret_20",
    "range_pct",
    "atr14_pct",
    "rsi14",
    "volume_ratio_20",
    "hour",
    "weekday",
)
#: Bars a context feature needs before its first value.
CONTEXT_WARMUP = 30
#: What a training set's rows carry besides the features: the signal and its label.
LABEL_COLUMNS = ("label", "bars", "mfe", "mae", "return")


def feature_frame(bars: pl.DataFrame, specs: list[str]) -> tuple[pl.DataFrame, list[str]]:
    """``bars`` (instrument, ts, open, high, low, close, volume; each instrument's rows
    oldest first) with the feature columns, and their names."""
    asked = list(dict.fromkeys([*specs, "atr14", "rsi14"]))
    with_indicators = add_indicators(bars.sort("instrument", "ts"), asked, over="instrument")
    close = pl.col("close")
    by = "instrument"
    framed = with_indicators.with_columns(
        *[(close / close.shift(n).over(by) - 1).alias(f"ret_{n}") for n in (1, 5, 20)],
        ((pl.col("high") - pl.col("low")) / close * 100).alias("range_pct"),
        (pl.col("atr14") / close * 100).alias("atr14_pct"),
        (
            pl.col("volume").cast(pl.Float64)
            / pl.col("volume").cast(pl.Float64).rolling_mean(20).over(by)
        ).alias("volume_ratio_20"),
        pl.col("ts").dt.hour().cast(pl.Int8).alias("hour"),
        pl.col("ts").dt.weekday().cast(pl.Int8).alias("weekday"),
    )
    indicator_columns = [
        column
        for column in with_indicators.columns
        if column not in bars.columns and (column != "atr14" or "atr14" in specs)
    ]
    names = list(dict.fromkeys([*indicator_columns, *CONTEXT]))
    return framed, names


def training_set(
    labelled: list[dict[str, Any]], bars: pl.DataFrame, specs: list[str]
) -> tuple[pl.DataFrame, list[str]]:
    """One row per labelled signal (``EngineClient.signal_labels`` rows) found among
    ``bars``: instrument, ts, side, the features at its bar, then its label columns;
    and the feature names (side first)."""
    framed, names = feature_frame(bars, specs)
    signals = pl.DataFrame(
        {
            "instrument": [row["instrument"] for row in labelled],
            "ts": pl.Series([row["ts_us"] for row in labelled], dtype=pl.Int64).cast(
                pl.Datetime("us")
            ),
            "side": [row["side"] for row in labelled],
            **{column: [row[column] for row in labelled] for column in LABEL_COLUMNS},
        },
        schema_overrides={"bars": pl.Int64, "mfe": pl.Float64, "mae": pl.Float64},
    )
    at_bar = framed.select("instrument", pl.col("ts").cast(pl.Datetime("us")), *names)
    rows = signals.join(at_bar, on=["instrument", "ts"], how="inner").with_columns(
        pl.when(pl.col("side") == "buy").then(1).otherwise(-1).cast(pl.Int8).alias("side_sign")
    )
    features = ["side_sign", *names]
    return rows.select("instrument", "ts", "side", *features, *LABEL_COLUMNS).sort(
        "ts", "instrument"
    ), features


def bars_windows(
    labelled: list[dict[str, Any]], config: ScannerConfig, strategy: Strategy
) -> dict[str, tuple[int, int]]:
    """Per instrument of ``labelled``, the [start, end) of bars of the scanner's
    timeframe its features need: warm-up before its first signal to its last's bar."""
    from sptrader.backtest.sweep import warmup_of

    width = timeframe_minutes(config.timeframe) * US_PER_MINUTE
    lead = (warmup_of(strategy) + CONTEXT_WARMUP) * width
    windows: dict[str, tuple[int, int]] = {}
    for row in labelled:
        first, last = windows.get(row["instrument"], (row["ts_us"], row["ts_us"]))
        windows[row["instrument"]] = (min(first, row["ts_us"]), max(last, row["ts_us"]))
    return {name: (first - lead, last + width) for name, (first, last) in windows.items()}


def describe(
    config: ScannerConfig,
    frame: pl.DataFrame,
    features: list[str],
    start: int | None,
    end: int | None,
) -> dict[str, Any]:
    """A training set's description (beside its Parquet, in a model's file): what it
    was made of and from when."""
    stamps = frame["ts"].dt.epoch("us")
    return {
        "scanner": config.name,
        "strategy": config.strategy,
        "params": dict(config.params),
        "timeframe": config.timeframe,
        "features": features,
        "labels": dict(frame["label"].value_counts().sort("label").rows()),
        "rows": frame.height,
        "from": None if start is None else format_us(start),
        "to": None if end is None else format_us(end),
        "first_signal": format_us(int(stamps.min())) if frame.height else None,  # type: ignore[arg-type]
        "last_signal": format_us(int(stamps.max())) if frame.height else None,  # type: ignore[arg-type]
    }
