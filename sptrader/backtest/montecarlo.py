"""Monte Carlo of a trade list (``--monte-carlo N``): how much of a backtest's result
is the luck of the order its trades came in.

Two experiments, N runs each, on the closed trades' net P&L (fees included), added to
the starting cash one after the other:

- **reshuffled**: the same trades in a random order (a permutation). The final equity
  is the same in every run; the drawdown is not: the distribution shows how deep it
  could have been had the losers come together.
- **resampled**: as many trades drawn with replacement (a bootstrap): both the final
  equity and the drawdown vary; it estimates the spread of outcomes and the chance of a
  loss from a trade list like this one.

The drawdown here is of the closed-trade equity (trade to trade), not the per-bar
mark-to-market curve of the report, so the original run's own figure is computed the
same way and ranked within the reshuffled ones (its percentile: near 50 is typical, low
means the real order was kind). Runs are computed in chunks of matrices (numpy, no
Python loop per run), so a million runs of a thousand trades stay in bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sptrader.errors import UsageError

__all__ = ["PERCENTILES", "Distribution", "MonteCarlo", "monte_carlo", "path_stats", "to_json"]

PERCENTILES = (5, 25, 50, 75, 95)
_CHUNK_CELLS = 4_000_000  # runs x trades per matrix: ~32 MB of float64 at a time
MAX_RUNS = 1_000_000


@dataclass
class Distribution:
    """One experiment's percentiles (``PERCENTILES``) of each figure."""

    method: str  # "reshuffled" or "resampled"
    runs: int
    max_drawdown: dict[int, float]  # money
    max_drawdown_pct: dict[int, float]  # of the peak equity
    final_equity: dict[int, float]
    return_pct: dict[int, float]
    loss_pct: float  # runs that ended below the starting cash, %
    ruin_pct: float  # runs whose equity reached zero or below at some trade, %


@dataclass
class MonteCarlo:
    trades: int
    starting_cash: float
    seed: int | None
    original: dict[str, float]  # the real order's max_drawdown(_pct), final_equity
    original_drawdown_percentile: float  # % of reshuffled runs with a smaller drawdown
    reshuffled: Distribution
    resampled: Distribution


def path_stats(pnl: np.ndarray, starting_cash: float) -> tuple[np.ndarray, ...]:
    """For each row of trade P&L (runs x trades): max drawdown in money and as a
    fraction of the peak, final equity, and whether equity reached zero."""
    equity = starting_cash + np.cumsum(pnl, axis=1)
    start = np.full((pnl.shape[0], 1), float(starting_cash))
    curve = np.concatenate((start, equity), axis=1)
    peaks = np.maximum.accumulate(curve, axis=1)
    fall = peaks - curve
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(peaks > 0, fall / peaks, 0.0)
    return fall.max(axis=1), fraction.max(axis=1), curve[:, -1], (curve <= 0).any(axis=1)


def monte_carlo(
    pnl: np.ndarray | list[float], starting_cash: float, runs: int, seed: int | None = None
) -> MonteCarlo:
    """``runs`` reshuffled and ``runs`` resampled runs of the trades' P&L."""
    pnl = np.asarray(pnl, dtype=np.float64)
    pnl = pnl[np.isfinite(pnl)]
    if pnl.size < 2:
        raise UsageError(f"--monte-carlo needs at least 2 closed trades; this run has {pnl.size}")
    if not 1 <= runs <= MAX_RUNS:
        raise UsageError(f"--monte-carlo takes 1 to {MAX_RUNS:,} runs, not {runs:,}")
    rng = np.random.default_rng(seed)
    drawdown, fraction, final, _ = path_stats(pnl[None, :], starting_cash)
    reshuffled, shuffled_drawdowns = _experiment("reshuffled", pnl, starting_cash, runs, rng)
    resampled, _ = _experiment("resampled", pnl, starting_cash, runs, rng)
    below = float(np.count_nonzero(shuffled_drawdowns < drawdown[0]))
    ties = float(np.count_nonzero(shuffled_drawdowns == drawdown[0]))
    return MonteCarlo(
        trades=int(pnl.size),
        starting_cash=float(starting_cash),
        seed=seed,
        original={
            "max_drawdown": float(drawdown[0]),
            "max_drawdown_pct": float(fraction[0] * 100),
            "final_equity": float(final[0]),
        },
        # Ties counted half (a mid-rank), so a list whose every order draws down alike
        # sits at 50, not at 0 or 100.
        original_drawdown_percentile=(below + ties / 2) / runs * 100,
        reshuffled=reshuffled,
        resampled=resampled,
    )


def _experiment(
    method: str, pnl: np.ndarray, starting_cash: float, runs: int, rng: np.random.Generator
) -> tuple[Distribution, np.ndarray]:
    """The experiment's percentiles, and every run's max drawdown (money)."""
    size = pnl.size
    chunk = max(1, _CHUNK_CELLS // size)
    parts: list[tuple[np.ndarray, ...]] = []
    done = 0
    while done < runs:
        rows = min(chunk, runs - done)
        if method == "reshuffled":
            # Sorting random keys per row gives independent permutations in one call.
            order = np.argsort(rng.random((rows, size)), axis=1)
            drawn = pnl[order]
        else:
            drawn = pnl[rng.integers(0, size, (rows, size))]
        parts.append(path_stats(drawn, starting_cash))
        done += rows
    drawdown, fraction, final, ruined = (
        np.concatenate(column) for column in zip(*parts, strict=True)
    )

    def spread(values: np.ndarray) -> dict[int, float]:
        points = np.percentile(values, PERCENTILES)
        return {p: float(v) for p, v in zip(PERCENTILES, points, strict=True)}

    distribution = Distribution(
        method=method,
        runs=runs,
        max_drawdown=spread(drawdown),
        max_drawdown_pct=spread(fraction * 100),
        final_equity=spread(final),
        return_pct=spread((final - starting_cash) / starting_cash * 100)
        if starting_cash
        else {p: float("nan") for p in PERCENTILES},
        loss_pct=float(np.count_nonzero(final < starting_cash) / runs * 100),
        ruin_pct=float(np.count_nonzero(ruined) / runs * 100),
    )
    return distribution, drawdown


def to_json(result: MonteCarlo) -> dict[str, Any]:
    def dist(d: Distribution) -> dict[str, Any]:
        def named(values: dict[int, float]) -> dict[str, float]:
            return {f"p{p}": v for p, v in values.items()}

        return {
            "runs": d.runs,
            "max_drawdown": named(d.max_drawdown),
            "max_drawdown_pct": named(d.max_drawdown_pct),
            "final_equity": named(d.final_equity),
            "return_pct": named(d.return_pct),
            "loss_pct": d.loss_pct,
            "ruin_pct": d.ruin_pct,
        }

    return {
        "trades": result.trades,
        "starting_cash": result.starting_cash,
        "seed": result.seed,
        "original": result.original,
        "original_drawdown_percentile": result.original_drawdown_percentile,
        "reshuffled": dist(result.reshuffled),
        "resampled": dist(result.resampled),
    }
