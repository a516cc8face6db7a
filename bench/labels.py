"""Outcome labelling speed: signals per second over a year of 1m bars of one instrument
(525,600 synthetic bars, a EURUSD-like random walk), with ``label_outcomes`` (the
vectorised pass ``sptrader ml labels`` and every scan run use), and the same through the
store (``label_pending``: read the waiting signals and the bars, label, insert).

Scoring latency: a scanner's model filter (``ModelFilter.score``: the features of a
200-bar window and a gbm's probability) for one signal, and for 100 signals of 100
instruments in one run.

Run: .venv/bin/python bench/labels.py [--signals 10000] [--horizon 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sptrader.config import ScannerConfig
from sptrader.models import US_PER_MINUTE
from sptrader.scanners.labels import label_outcomes, label_pending
from sptrader.store import Store

START_US = 1_735_689_600_000_000  # 2025-01-01T00:00Z
MINUTES = 525_600


def year_of_bars() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    close = 1.08 * np.exp(np.cumsum(rng.normal(0, 0.0002, MINUTES)))
    open_ = np.concatenate([[1.08], close[:-1]])
    spread = np.abs(rng.normal(0, 0.0001, MINUTES))
    return pl.DataFrame(
        {
            "instrument": "SIM:EURUSD",
            "ts": START_US + np.arange(MINUTES, dtype=np.int64) * US_PER_MINUTE,
            "open": open_,
            "high": np.maximum(open_, close) + spread,
            "low": np.minimum(open_, close) - spread,
            "close": close,
        }
    )


def signals(count: int, horizon: int) -> pl.DataFrame:
    rng = np.random.default_rng(11)
    minutes = np.sort(rng.choice(MINUTES - horizon - 2, count, replace=False))
    return pl.DataFrame(
        {
            "key": np.arange(count, dtype=np.int64),
            "instrument": "SIM:EURUSD",
            "side": rng.choice(["buy", "sell"], count),
            "ts": START_US + minutes.astype(np.int64) * US_PER_MINUTE,
            "width": US_PER_MINUTE,
            "horizon_bars": horizon,
            "stop": None,
            "target": None,
            "stop_pct": 0.1,
            "target_pct": 0.2,
        }
    )


def best_of(runs: int, work) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        work()
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--signals", type=int, default=10_000)
    parser.add_argument("--horizon", type=int, default=60)
    args = parser.parse_args()
    bars = year_of_bars()
    pending = signals(args.signals, args.horizon)
    now = START_US + MINUTES * US_PER_MINUTE
    labelled = label_outcomes(pending, bars, now)
    counts = labelled["label"].value_counts().sort("label").rows()
    seconds = best_of(3, lambda: label_outcomes(pending, bars, now))
    print(
        f"label_outcomes: {args.signals:,} signals over {MINUTES:,} 1m bars, horizon "
        f"{args.horizon} bars: {seconds * 1000:.0f} ms best of 3 "
        f"({args.signals / seconds:,.0f} signals/s); labels {dict(counts)}"
    )
    with tempfile.TemporaryDirectory() as directory:
        store = Store(Path(directory) / "bench.duckdb")
        store.migrate()
        stored = bars.with_columns(
            pl.col("ts").cast(pl.Datetime("us")), volume=pl.lit(1.0), trades=pl.lit(1)
        )
        store.upsert_bars(stored)
        rows = pending.select(
            pl.lit(1).alias("run_id"),
            pl.lit("bench").alias("scanner"),
            "instrument",
            pl.col("ts").cast(pl.Datetime("us")),
            "side",
            pl.lit(1.0).alias("strength"),
            pl.lit("bench").alias("reason"),
            pl.lit(None, pl.Float64).alias("stop"),
            pl.lit(None, pl.Float64).alias("target"),
            pl.lit(datetime.now(UTC).replace(tzinfo=None)).alias("created"),
        )
        with store.transaction() as cursor:
            cursor.register("bench_signals", rows)
            cursor.execute(
                "INSERT INTO signals (run_id, scanner, instrument, ts, side, strength, reason,"
                " stop, target, created) SELECT * FROM bench_signals"
            )
            cursor.unregister("bench_signals")
        config = ScannerConfig(
            name="bench",
            strategy="sma_cross",
            label_bars=args.horizon,
            label_stop_pct=0.1,
            label_target_pct=0.2,
        )
        began = time.perf_counter()
        done, waiting = label_pending(store, [config], now=now)
        seconds = time.perf_counter() - began
        print(
            f"label_pending (store: read, label, insert): {done:,} of {waiting:,} in "
            f"{seconds * 1000:.0f} ms ({done / seconds:,.0f} signals/s)"
        )
        store.close()
    scoring(bars)


def scoring(bars: pl.DataFrame) -> None:
    bars = bars.with_columns(pl.lit(1.0).alias("volume"))
    from sptrader.scanners import models
    from sptrader.scanners.features import feature_frame
    from sptrader.scanners.model_filter import ModelFilter

    specs = ["sma10", "sma30"]
    framed, names = feature_frame(
        bars.head(20_000).with_columns(pl.col("ts").cast(pl.Datetime("us"))), specs
    )
    rng = np.random.default_rng(5)
    sample = framed.sample(2000, seed=1).with_columns(
        side_sign=pl.lit(1), label=pl.Series(rng.choice(["target", "stop"], 2000)), ts=pl.col("ts")
    )
    features = ["side_sign", *names]
    trained = models.walk_forward(
        sample.with_columns(pl.lit(0.0).alias("return")), features, "gbm", folds=2
    )
    model = ModelFilter("bench", trained.estimator, {"features": features, "version": 1}, 0.6)
    for count in (1, 100):
        window = pl.concat(
            bars.head(200).with_columns(
                pl.lit(f"SIM:I{index}").alias("instrument"), pl.col("ts").cast(pl.Datetime("us"))
            )
            for index in range(count)
        )
        newest = int(bars["ts"][199])
        signals = [
            {"instrument": f"SIM:I{index}", "side": "buy", "ts_us": newest}
            for index in range(count)
        ]
        seconds = best_of(
            5, lambda window=window, signals=signals: model.score(window, specs, signals)
        )
        print(
            f"model filter, {count} signal(s) over 200 bars each: {seconds * 1000:.1f} ms best of 5"
            f" ({seconds * 1000 / count:.2f} ms a signal)"
        )


if __name__ == "__main__":
    main()
