"""Research tools at full size: a 200-trial TPE search and a 12-fold walk-forward over a
year of 1m bars of one instrument (525,600 synthetic bars, EURUSD-like), on every core.

1. TPE: sma_cross over fast=2..60:1 x slow=10..400:5 (59 x 79 = 4,661 combinations),
   200 trials scored by Sharpe, in batches of max(8, cores). Wall time, trials/s, and
   the resident memory (RSS) of the parent and of each worker after every batch: peers'
   optimisers are known for growing until they run out of memory; ours keep only each
   run's summary, so it must stay flat.
2. Walk-forward: train=92d, test=23d, rolling (12 folds, the last one cut at the end),
   a grid of fast=5..30:5 x slow=20..100:20 (30 combinations) on each train span, the
   best run on the next test span; wall time, and the same RSS samples per fold.
3. Monte Carlo of the walk-forward's stitched trades: 10,000 reshuffled and 10,000
   resampled runs; wall time.

Run: .venv/bin/python bench/research.py [--days 365] [--trials 200] [--workers N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backtest import START_US, make_bars

from sptrader.backtest import optimize
from sptrader.backtest.montecarlo import monte_carlo
from sptrader.backtest.sweep import Runner
from sptrader.backtest.walkforward import parse_walk_forward, walk_forward
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.models import US_PER_MINUTE
from sptrader.strategies import registry

MB = 1024 * 1024


def rss_mb(runner: Runner) -> tuple[float, list[float]]:
    """The parent's RSS and each worker's, in MB."""
    parent = psutil.Process().memory_info().rss / MB
    workers = []
    for process in getattr(runner.pool, "_processes", {}).values():
        with contextlib.suppress(psutil.Error):  # a worker gone meanwhile
            workers.append(psutil.Process(process.pid).memory_info().rss / MB)
    return parent, workers


def samples_text(samples: list[tuple[float, list[float]]]) -> str:
    def one(sample: tuple[float, list[float]]) -> str:
        parent, workers = sample
        return f"parent {parent:.0f}, workers {'/'.join(f'{w:.0f}' for w in workers) or '-'}"

    middle = samples[len(samples) // 2]
    return f"first {one(samples[0])}; middle {one(middle)}; last {one(samples[-1])}"


def growth(samples: list[tuple[float, list[float]]]) -> str:
    """The last sample less the first (parent, then the largest worker), in MB."""
    (p0, w0), (p1, w1) = samples[0], samples[-1]
    worker = (max(w1) - max(w0)) if w0 and w1 else 0.0
    return f"{p1 - p0:+.0f} MB parent, {worker:+.0f} MB largest worker"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    count = args.days * 24 * 60
    bars = make_bars(count)
    end_us = START_US + count * US_PER_MINUTE
    cls = registry.resolve("sma_cross")
    broker, risk = BrokerConfig(), RiskConfig()
    print(
        f"{count:,} 1m bars ({args.days} days) of one instrument; {args.workers} worker"
        f" process(es) on {os.cpu_count()} cores"
    )

    # 1. TPE
    dims = optimize.dimensions(["fast=2..60:1", "slow=10..400:5"])
    runner = Runner(bars, broker, risk, "1m", workers=args.workers, objective="sharpe")
    samples: list[tuple[float, list[float]]] = []
    batch = max(optimize.MIN_BATCH, args.workers)

    def sampled(done: int, total: int) -> None:
        if done % batch == 0 or done == total:
            samples.append(rss_mb(runner))

    started = time.perf_counter()
    with runner:
        warm = time.perf_counter() - started
        found = optimize.search(
            cls,
            dims,
            runner,
            objective="sharpe",
            trials=args.trials,
            seed=args.seed,
            progress=sampled,
        )
    wall = time.perf_counter() - started
    best = found.best
    print(
        f"TPE {found.evaluated} trials of {found.space:,} combinations: {wall:.1f} s wall"
        f" ({found.evaluated / wall:.1f} trials/s, pool start {warm:.1f} s),"
        f" {found.duplicates} duplicate proposals; best"
        f" {' '.join(f'{k}={v}' for k, v in best.params.items())} Sharpe {best.score:.2f}"
    )
    print(f"  RSS MB after each batch of {batch}: {samples_text(samples)}")
    print(f"  RSS growth over {len(samples)} batches: {growth(samples)}")

    # 2. Walk-forward
    train_us, test_us = parse_walk_forward("train=92d,test=23d")
    dims = optimize.dimensions(["fast=5..30:5", "slow=20..100:20"])
    runner = Runner(bars, broker, risk, "1m", workers=args.workers, objective="sharpe")
    fold_samples: list[tuple[float, list[float]]] = []
    started = time.perf_counter()
    with runner:
        result = walk_forward(
            cls,
            dims,
            runner,
            bars,
            broker,
            risk,
            "1m",
            start_us=START_US,
            end_us=end_us,
            train_us=train_us,
            test_us=test_us,
            objective="sharpe",
            on_fold=lambda fold, total: fold_samples.append(rss_mb(runner)),
        )
    wall = time.perf_counter() - started
    stitched = result.stitched.summary if result.stitched is not None else {}
    runs = sum(fold.evaluated for fold in result.folds)
    print(
        f"walk-forward train 92d / test 23d, {len(result.folds)} folds x 30 combinations"
        f" ({runs} train runs + {len(result.done)} test runs): {wall:.1f} s wall;"
        f" stitched out-of-sample {stitched.get('trades', 0):,} trades,"
        f" efficiency {result.efficiency if result.efficiency is not None else '-'}"
    )
    print(f"  RSS MB after each fold: {samples_text(fold_samples)}")
    print(f"  RSS growth over {len(fold_samples)} folds: {growth(fold_samples)}")

    # 3. Monte Carlo of the stitched trades
    if result.stitched is not None and result.stitched.trades.height >= 2:
        pnl = result.stitched.trades["pnl"].to_numpy()
        started = time.perf_counter()
        monte_carlo(pnl, broker.starting_cash, 10_000, seed=args.seed)
        wall = time.perf_counter() - started
        print(
            f"Monte Carlo of {pnl.size:,} trades, 10,000 reshuffled + 10,000 resampled runs:"
            f" {wall:.2f} s"
        )


if __name__ == "__main__":
    main()
