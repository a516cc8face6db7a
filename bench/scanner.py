"""Scanner run time: one full run of a scanner over 100 instruments x 1,000 1m bars.

A temporary store gets 1,000 closed 1m bars (random walks) for each of 100 SIM
instruments (SIM:S000..S099), fully covered so nothing is skipped for gaps. For each
strategy a Config with one ``[[scanners]]`` entry is built and ``Scanner.scan`` runs it
(the code path of ``sptrader scan`` after its history fetch): the coverage check of all
instruments, load_bars (one query), indicators (one polars query over the stacked
instruments), evaluate and emit (one call: the built-ins are ``stacked``), then the
lineage write. Prints the p50 of the runs and the split per step from ``scan_steps``
(summed over a step's rows: one per run for the batched steps, one per instrument for a
strategy evaluated instrument by instrument). ``check+other`` is the run's recorded
duration minus its steps (the coverage check, which is not kept as a step when it
passes, and the rest); ``lineage`` is the wall time minus the recorded duration
(writing scan_runs/scan_steps/signals); ``steps`` the step rows the run recorded.

Run: .venv/bin/python bench/scanner.py [--instruments N] [--bars N] [--runs R]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import make_settings

from sptrader.clock import now_us
from sptrader.engine import Engine
from sptrader.models import US_PER_MINUTE
from sptrader.scanners.service import Scanner
from sptrader.strategies import registry

STRATEGIES = ["sma_cross", "rsi_reversion", "breakout"]
STEPS = ["load_bars", "indicators", "evaluate", "emit"]


def make_bars(instruments: list[str], bars: int, end_us: int) -> pl.DataFrame:
    rng = np.random.default_rng(7)
    n = len(instruments) * bars
    start = end_us - bars * US_PER_MINUTE
    steps = rng.normal(0, 0.1, (len(instruments), bars))
    close = (100 + np.cumsum(steps, axis=1)).ravel()
    opens = close + rng.normal(0, 0.03, n)
    return pl.DataFrame(
        {
            "instrument": np.repeat(instruments, bars),
            "ts": np.tile(
                start + np.arange(bars, dtype=np.int64) * US_PER_MINUTE, len(instruments)
            ),
            "open": opens,
            "high": np.maximum(opens, close) + rng.random(n) * 0.05,
            "low": np.minimum(opens, close) - rng.random(n) * 0.05,
            "close": close,
            "volume": rng.random(n) * 1000,
            "trades": rng.integers(1, 500, n),
        }
    ).with_columns(pl.col("ts").cast(pl.Datetime("us")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--bars", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    instruments = [f"SIM:S{i:03d}" for i in range(args.instruments)]
    now = now_us()
    at = now - now % US_PER_MINUTE  # the window ends here: all its bars closed
    scanners = [
        {
            "name": name,
            "strategy": name,
            "timeframe": "1m",
            "bars": args.bars,
            "instruments": instruments,
            "schedule": "0 0 1 1 *",
        }
        for name in STRATEGIES
    ]
    home = Path(tempfile.mkdtemp(prefix="sptrader-bench-scanner-"))
    engine = Engine(make_settings(home, watchlist=["SIM:EURUSD"], scanners=scanners))
    store = engine.open_store()
    started = time.perf_counter()
    store.upsert_bars(make_bars(instruments, args.bars, at))
    start_us = at - args.bars * US_PER_MINUTE
    # Covered up to the (forming) minute after the window, as a live feed leaves it.
    cover = [(name, "1m", "sim", start_us, at + US_PER_MINUTE) for name in instruments]
    store.add_coverage_many(cover)
    print(f"store: {len(instruments)} x {args.bars} bars in {time.perf_counter() - started:.2f} s")
    print(f"{len(instruments)} instruments x {args.bars} 1m bars, p50 of {args.runs} runs (ms)")
    header = ["strategy", "p50", "min", "check+other", *STEPS, "lineage", "signals", "steps"]
    print("".join(f"{h:>12}" if i else f"{h:<14}" for i, h in enumerate(header)))
    cursor = store.cursor()
    try:
        for config in engine.config.scanners:
            strategy = registry.build(config.strategy, dict(config.params), [])
            scanner = Scanner(engine.scanner_deps, config, strategy)
            walls, splits, signals, rows = [], [], 0, 0
            for _ in range(args.runs):
                started = time.perf_counter()
                result = scanner.scan("manual", at_us=at)
                wall = (time.perf_counter() - started) * 1000
                assert result.status == "ok" and not result.skipped, (
                    result.status,
                    result.skipped[:2],
                )
                assert len(result.scanned) == len(instruments)
                recorded = cursor.execute(
                    "SELECT duration_ms FROM scan_runs WHERE run_id = ?", [result.run_id]
                ).fetchall()[0][0]
                per_step = dict(
                    cursor.execute(
                        "SELECT step, sum(duration_ms) FROM scan_steps WHERE run_id = ?"
                        " GROUP BY step",
                        [result.run_id],
                    ).fetchall()
                )
                rows = cursor.execute(
                    "SELECT count(*) FROM scan_steps WHERE run_id = ?", [result.run_id]
                ).fetchall()[0][0]
                steps = [per_step.get(step, 0.0) for step in STEPS]
                walls.append(wall)
                splits.append([recorded - sum(steps), *steps, wall - recorded])
                signals = len(result.signals)
            # The split of the run whose wall time is the median.
            median_run = sorted(range(len(walls)), key=walls.__getitem__)[len(walls) // 2]
            row = [statistics.median(walls), min(walls), *splits[median_run]]
            print(
                f"{config.strategy:<14}"
                + "".join(f"{value:>12.1f}" for value in row)
                + f"{signals:>12}{rows:>12}"
            )
    finally:
        store.close()


if __name__ == "__main__":
    main()
