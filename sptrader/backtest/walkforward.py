"""Walk-forward optimisation (``--walk-forward train=90d,test=30d [--anchored]``).

The window is cut into folds. Each fold's parameters are chosen on its train (in-sample)
span by the grid or a TPE search (:mod:`sptrader.backtest.optimize`), then run once on
the test (out-of-sample) span that follows it, which the choice never saw. Rolling folds
slide by one test span (train ``[from + k·test, + train)``); anchored ones all train from
``--from`` and grow. The last test span may be shorter (cut at ``--to``), so every bar
after the first train span is tested exactly once.

The test runs are stitched into one out-of-sample account: each fold starts flat (a
position still open at its end is closed there, as at the end of any backtest) and its
P&L is added to what the folds before it made, so the stitched curve is the account a
trader re-optimising on that schedule would have had (with sizing from the fold's own
starting cash). Its statistics are set beside the in-sample ones (the mean over folds of
each fold's best run): the gap between them is the overfitting. The walk-forward
efficiency is the annualised out-of-sample return over the annualised in-sample one
(Pardo's measure: near 1 holds up, near 0 or below was fitted noise).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from sptrader.backtest import objectives
from sptrader.backtest.engine import BacktestResult, run_backtest, summarize
from sptrader.backtest.optimize import Dimension, search
from sptrader.backtest.sweep import (
    Runner,
    SweepInterrupted,
    build_strategy,
    param_text,
    window_of,
)
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import UsageError
from sptrader.models import US_PER_MINUTE, timeframe_minutes
from sptrader.schema import FILL_SCHEMA
from sptrader.strategies.base import Strategy

__all__ = ["Fold", "FoldResult", "WalkForward", "folds", "parse_walk_forward", "walk_forward"]

SPAN_US = {
    "m": US_PER_MINUTE,
    "h": 60 * US_PER_MINUTE,
    "d": 24 * 60 * US_PER_MINUTE,
    "w": 7 * 24 * 60 * US_PER_MINUTE,
}
_SPAN = re.compile(r"^(\d+)([mhdw])$")
_USAGE = "use --walk-forward train=SPAN,test=SPAN with spans like 90d, 12w, 36h"


def parse_span(text: str, what: str) -> int:
    """``90d`` as microseconds (units m, h, d, w)."""
    found = _SPAN.match(text.strip().lower())
    if found is None or int(found.group(1)) <= 0:
        raise UsageError(f"bad --walk-forward {what} span {text!r}: {_USAGE}")
    return int(found.group(1)) * SPAN_US[found.group(2)]


def parse_walk_forward(text: str) -> tuple[int, int]:
    """``train=90d,test=30d`` as (train, test) microseconds."""
    spans: dict[str, int] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("train", "test") or key in spans:
            raise UsageError(f"bad --walk-forward {text!r}: {_USAGE}")
        spans[key] = parse_span(value, key)
    if set(spans) != {"train", "test"}:
        raise UsageError(f"bad --walk-forward {text!r}: {_USAGE}")
    return spans["train"], spans["test"]


@dataclass(frozen=True)
class Fold:
    """One fold's spans, half-open ``[start, end)`` in microseconds."""

    index: int  # 1-based
    train_start: int
    train_end: int
    test_start: int
    test_end: int


def folds(start_us: int, end_us: int, train_us: int, test_us: int, anchored: bool) -> list[Fold]:
    """The folds of ``[start_us, end_us)``: a UsageError if not even one fits."""
    if start_us + train_us >= end_us:
        days = (end_us - start_us) / SPAN_US["d"]
        raise UsageError(
            f"--walk-forward: the window ({days:.1f} days) is not longer than one train span"
            f" ({train_us / SPAN_US['d']:.1f} days); widen --from/--to or shorten train"
        )
    out = []
    test_start = start_us + train_us
    while test_start < end_us:
        train_start = start_us if anchored else test_start - train_us
        out.append(
            Fold(
                len(out) + 1, train_start, test_start, test_start, min(test_start + test_us, end_us)
            )
        )
        test_start += test_us
    return out


@dataclass
class FoldResult:
    fold: Fold
    params: dict[str, Any] | None = None  # the chosen parameters (None: none could be)
    in_sample: dict[str, Any] | None = None  # the best train run's summary
    in_score: float | None = None
    out_sample: dict[str, Any] | None = None  # the test run's summary
    out_score: float | None = None
    evaluated: int = 0  # runs on the train span
    error: str | None = None


@dataclass
class WalkForward:
    strategy: str
    objective: str
    method: str  # "grid" or "tpe"
    train_us: int
    test_us: int
    anchored: bool
    folds: list[FoldResult]
    total_folds: int
    stitched: BacktestResult | None  # the out-of-sample runs as one account
    elapsed_s: float = 0.0
    interrupted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> list[FoldResult]:
        return [f for f in self.folds if f.out_sample is not None]

    def mean(self, side: str, key: str) -> float | None:
        """The mean over completed folds of a summary figure (``side``: in_sample or
        out_sample), finite values only."""
        values = [
            float(v)
            for f in self.done
            if (v := (getattr(f, side) or {}).get(key)) is not None and math.isfinite(float(v))
        ]
        return sum(values) / len(values) if values else None

    def mean_score(self, side: str) -> float | None:
        values = [s for f in self.done if (s := getattr(f, side)) is not None and math.isfinite(s)]
        return sum(values) / len(values) if values else None

    def annualised(self, side: str) -> float | None:
        """The mean over folds of each run's annualised return (in_sample / out_sample)."""
        values = []
        for f in self.done:
            summary = getattr(f, side)
            start, end = (
                (f.fold.train_start, f.fold.train_end)
                if side == "in_sample"
                else (f.fold.test_start, f.fold.test_end)
            )
            yearly = objectives.annualised_return(summary, objectives.years_between(start, end))
            if yearly is not None and math.isfinite(yearly):
                values.append(yearly)
        return sum(values) / len(values) if values else None

    @property
    def efficiency(self) -> float | None:
        """Annualised out-of-sample over in-sample return (None when in-sample lost)."""
        ins, outs = self.annualised("in_sample"), self.annualised("out_sample")
        if ins is None or outs is None or ins <= 0:
            return None
        return outs / ins


def walk_forward(
    cls: type[Strategy],
    dims: Sequence[Dimension],
    runner: Runner,
    bars: pl.DataFrame,
    broker_cfg: BrokerConfig,
    risk_cfg: RiskConfig,
    timeframe: str,
    *,
    start_us: int,
    end_us: int,
    train_us: int,
    test_us: int,
    anchored: bool = False,
    objective: str = "sharpe",
    trials: int | None = None,
    seed: int | None = None,
    instrument: str | None = None,
    gaps: Sequence[tuple[int, int]] = (),
    on_fold: Callable[[FoldResult, int], None] | None = None,
) -> WalkForward:
    """Every fold: a search on its train span in ``runner`` (which holds ``bars`` and
    scores by ``objective``), the best parameters run here on its test span. Ctrl+C
    returns the folds done so far (``interrupted``)."""
    started = time.perf_counter()
    plan = folds(start_us, end_us, train_us, test_us, anchored)
    ts = bars["ts"].cast(pl.Datetime("us")).dt.epoch("us").to_numpy()
    results: list[FoldResult] = []
    tests: list[BacktestResult] = []
    interrupted = False
    for fold in plan:
        outcome = FoldResult(fold)
        try:
            found = search(
                cls,
                dims,
                runner,
                objective=objective,
                trials=trials,
                seed=seed,
                start_us=fold.train_start,
                end_us=fold.train_end,
            )
        except (SweepInterrupted, KeyboardInterrupt):
            interrupted = True
            break
        outcome.evaluated = found.evaluated
        best = found.best
        if best is None:
            errors = {row.error for row in found.rows if row.error}
            outcome.error = (
                f"every run on the train span failed ({next(iter(errors))})"
                if errors
                else "no bars in the train span"
            )
        else:
            outcome.params = best.params
            outcome.in_sample, outcome.in_score = best.summary, best.score
            try:
                test = _run_test(
                    build_strategy(cls, {k: param_text(v) for k, v in best.params.items()}),
                    bars,
                    ts,
                    fold,
                    broker_cfg,
                    risk_cfg,
                    timeframe,
                    instrument,
                    gaps,
                )
            except KeyboardInterrupt:
                interrupted = True
                break
            except Exception as error:
                first_line = (str(error).strip().splitlines() or [""])[0]
                outcome.error = f"the test run failed: {type(error).__name__}: {first_line}"
            else:
                if test.summary.get("bars"):
                    tests.append(test)
                    outcome.out_sample = test.summary
                    outcome.out_score = objectives.score(objective, test)
                else:
                    outcome.error = "no bars in the test span"
        results.append(outcome)
        if on_fold is not None:
            on_fold(outcome, len(plan))
    stitched = stitch(tests, broker_cfg.starting_cash, timeframe) if tests else None
    extra = {}
    if stitched is not None:
        extra["stitched_score"] = objectives.score(objective, stitched)
    return WalkForward(
        strategy=cls.name,
        objective=objective,
        method="grid" if trials is None else "tpe",
        train_us=train_us,
        test_us=test_us,
        anchored=anchored,
        folds=results,
        total_folds=len(plan),
        stitched=stitched,
        elapsed_s=time.perf_counter() - started,
        interrupted=interrupted,
        extra=extra,
    )


def _run_test(
    strategy: Strategy,
    bars: pl.DataFrame,
    ts: np.ndarray,
    fold: Fold,
    broker_cfg: BrokerConfig,
    risk_cfg: RiskConfig,
    timeframe: str,
    instrument: str | None,
    gaps: Sequence[tuple[int, int]],
) -> BacktestResult:
    """``strategy`` on the test span, after its warm-up of the bars before it."""
    return run_backtest(
        strategy,
        window_of(bars, ts, strategy, timeframe, fold.test_start, fold.test_end),
        broker_cfg,
        risk_cfg,
        timeframe,
        instrument=instrument,
        start_us=fold.test_start,
        gaps=gaps,
    )


def stitch(tests: Sequence[BacktestResult], starting_cash: float, timeframe: str) -> BacktestResult:
    """The test runs as one account: each run's P&L (its equity less its starting cash)
    added to what the runs before it made; trades and fills kept in order."""
    curves, positions = [], []
    carried = 0.0
    for test in tests:
        equity = test.equity["equity"].to_numpy()
        curves.append(equity - test.summary["starting_cash"] + starting_cash + carried)
        positions.append(test.equity["position"].to_numpy())
        if equity.size:
            carried += float(equity[-1]) - test.summary["starting_cash"]
    equity = np.concatenate(curves)
    position = np.concatenate(positions)
    trades = pl.concat([t.trades for t in tests], how="vertical_relaxed")
    summary = summarize(
        trades["pnl"],
        equity,
        position,
        starting_cash,
        timeframe,
        fees=float(trades["fees"].sum()) if trades.height else 0.0,
    )
    summary.update(
        signals=sum(t.summary.get("signals", 0) for t in tests),
        rejected=sum(t.summary.get("rejected", 0) for t in tests),
        trades_spanning_gaps=int(trades["spans_gap"].sum()) if trades.height else 0,
    )
    width_us = timeframe_minutes(timeframe) * US_PER_MINUTE
    first, last = tests[0], tests[-1]
    fills = [t.fills for t in tests if t.fills.height]
    return BacktestResult(
        strategy=first.strategy,
        params={},  # each fold had its own
        instrument=first.instrument,
        timeframe=timeframe,
        start_us=first.start_us,
        end_us=max(last.end_us, last.start_us + width_us),
        summary=summary,
        trades=trades,
        fills=pl.concat(fills) if fills else pl.DataFrame(schema=FILL_SCHEMA),
        equity=pl.concat([t.equity for t in tests]).with_columns(
            pl.Series("equity", equity), pl.Series("position", position)
        ),
        rejected=[r for t in tests for r in t.rejected],
    )
