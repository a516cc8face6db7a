"""What a sweep, a search or a walk-forward maximises (``--objective``).

Named objectives, from a run's summary (:func:`sptrader.backtest.engine.summarize`):

- ``sharpe``, ``sortino``: the annualised ratios of the per-bar returns;
- ``profit_factor``: gross profit / gross loss (``inf`` with wins and no loss);
- ``net_pnl``: the net P&L in money, fees included;
- ``calmar``: the annualised return (compounded over the run's calendar span) over the
  max drawdown as a fraction of its peak (``inf`` when it never fell, with a gain).

A run **without trades scores -inf** whatever the objective (nothing to choose it for),
and so does a ratio with nothing to divide by (a Sharpe of a flat curve): any run that
traded ranks above one that did not.

A user objective is ``module:function``: the module is imported (it must be on the
Python path, like a strategy module), and the function is called with the
:class:`~sptrader.backtest.engine.BacktestResult` (``result.summary``, ``result.trades``,
``result.equity``) and returns a number to maximise; NaN counts as -inf. It runs in the
worker processes, so it must be importable by name (not defined in ``__main__``).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from functools import cache
from typing import Any

from sptrader.errors import UsageError

__all__ = [
    "NAMES",
    "NO_SCORE",
    "annualised_return",
    "describe",
    "resolve",
    "score",
    "score_summary",
    "years_between",
]

NAMES = ("sharpe", "sortino", "profit_factor", "net_pnl", "calmar")
NO_SCORE = -math.inf
US_PER_YEAR = 365 * 24 * 3600 * 1_000_000
_LABELS = {
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "profit_factor": "profit factor",
    "net_pnl": "net P&L",
    "calmar": "Calmar",
}


def years_between(start_us: int, end_us: int) -> float:
    return max(0, end_us - start_us) / US_PER_YEAR


def annualised_return(summary: dict[str, Any], years: float) -> float | None:
    """The compounded yearly return (0.25 = 25% a year) of a run that went from its
    starting cash to its final equity in ``years``; -1.0 when the account was wiped
    out; None without a span or a starting cash."""
    start = summary.get("starting_cash") or 0.0
    final = summary.get("final_equity")
    if years <= 0 or start <= 0 or final is None:
        return None
    if final <= 0:
        return -1.0
    try:
        return (final / start) ** (1.0 / years) - 1.0
    except OverflowError:
        return math.inf


def score_summary(name: str, summary: dict[str, Any], years: float) -> float:
    """A named objective of a summary (``years``: its calendar span, for Calmar)."""
    if not summary.get("trades"):
        return NO_SCORE
    if name == "calmar":
        yearly = annualised_return(summary, years)
        if yearly is None:
            return NO_SCORE
        drawdown = (summary.get("max_drawdown_pct") or 0.0) / 100
        if drawdown <= 0:
            return math.inf if yearly > 0 else NO_SCORE if yearly < 0 else 0.0
        return yearly / drawdown
    value = summary.get(name)
    if value is None:
        return NO_SCORE
    value = float(value)
    return NO_SCORE if math.isnan(value) else value


def describe(spec: str) -> str:
    """How the objective is shown: ``Sharpe``, ``module:function``."""
    return _LABELS.get(spec, spec)


def resolve(spec: str) -> Callable[[Any], float]:
    """The objective ``spec`` names as a function of a BacktestResult; a UsageError (one
    line) for an unknown name or a user function that cannot be loaded."""
    return _resolve(spec.strip())


@cache
def _resolve(spec: str) -> Callable[[Any], float]:
    if spec in NAMES:

        def named(result: Any) -> float:
            return score_summary(
                spec, result.summary, years_between(result.start_us, result.end_us)
            )

        named.__name__ = spec
        return named
    if ":" not in spec:
        raise UsageError(f"unknown --objective {spec!r}: use {', '.join(NAMES)} or module:function")
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise UsageError(f"bad --objective {spec!r}: a user objective is module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UsageError(f"--objective {spec}: cannot import {module_name}: {error}") from None
    except Exception as error:
        raise UsageError(
            f"--objective {spec}: importing {module_name} failed: {type(error).__name__}: {error}"
        ) from None
    function = getattr(module, function_name, None)
    if function is None:
        raise UsageError(f"--objective {spec}: {module_name} has no {function_name}")
    if not callable(function):
        raise UsageError(f"--objective {spec}: {module_name}.{function_name} is not callable")
    return function


def score(spec: str, result: Any) -> float:
    """``result`` scored by the objective ``spec`` (a user function's answer checked: a
    number, NaN counted as -inf)."""
    value = resolve(spec)(result)
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)  # numpy scalars
        except (TypeError, ValueError):
            raise TypeError(
                f"the objective {spec} returned {type(value).__name__}, not a number"
            ) from None
    value = float(value)
    return NO_SCORE if math.isnan(value) else value
