"""Choosing parameters: every combination of the ``--param`` grid, or a Bayesian search
of it (Optuna's TPE sampler) with a budget of ``--trials``, scored by an objective
(:mod:`sptrader.backtest.objectives`), maximised.

The search space is the grid :func:`sptrader.backtest.sweep.parse_params` makes: a range
(``fast=5..50:5``) is an ordered dimension (searched as the index of its values, so TPE
learns that 10 lies between 5 and 15, whether ints or floats), a list (``short=true,false``)
is categorical, a single value is fixed. Runs go to a
:class:`~sptrader.backtest.sweep.Runner` (the spawn process pool; the bars are sent to
each worker once) in batches: Optuna's ask/tell, a batch of ``max(8, workers)`` trials
asked, run on all cores, told (TPE with ``constant_liar``, so a batch's trials spread
out). A combination asked again is not re-run: it is told the score it got. The budget
counts combinations run; a space no larger than the budget is simply run in full (the
grid). ``--seed`` seeds the sampler: the same seed, data and core count give the same
trials. Only each run's summary is kept (its trades and curve stay in the worker), so
memory stays flat over any number of trials.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sptrader.backtest import objectives
from sptrader.backtest.sweep import (
    Runner,
    SweepInterrupted,
    SweepRow,
    Task,
    build_strategy,
    parse_params,
    ranked,
)
from sptrader.errors import UsageError
from sptrader.strategies.base import Strategy

__all__ = [
    "Dimension",
    "SearchResult",
    "dimensions",
    "grid_search",
    "search",
    "space_size",
    "tpe_search",
    "value_combinations",
]

Progress = Callable[[int, int], None]
MIN_BATCH = 8


@dataclass(frozen=True)
class Dimension:
    """One parameter's values (text, as the strategy's Params convert them); ``ordinal``
    for a range (its values in order), else categorical (or fixed, with one value)."""

    name: str
    values: tuple[str, ...]
    ordinal: bool = False


def dimensions(texts: Sequence[str]) -> list[Dimension]:
    """The ``--param`` texts as search dimensions (the grid of ``parse_params``)."""
    grid = parse_params(texts)
    ranges = {text.partition("=")[0].strip() for text in texts if ".." in text.partition("=")[2]}
    return [
        Dimension(name, tuple(values), ordinal=name in ranges and len(values) > 1)
        for name, values in grid.items()
    ]


def space_size(dims: Sequence[Dimension]) -> int:
    return math.prod(len(dim.values) for dim in dims)


def grid_of(dims: Sequence[Dimension]) -> dict[str, list[str]]:
    return {dim.name: list(dim.values) for dim in dims}


@dataclass
class SearchResult:
    """The combinations run (best first by the objective; failed ones last)."""

    method: str  # "grid" or "tpe"
    objective: str
    rows: list[SweepRow]
    space: int  # combinations in the grid
    trials: int | None = None  # the budget (tpe)
    asked: int = 0  # trials Optuna proposed, duplicates included
    duplicates: int = 0  # proposals of a combination already run (told, not re-run)
    seed: int | None = None
    elapsed_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def evaluated(self) -> int:
        return len(self.rows)

    @property
    def best(self) -> SweepRow | None:
        return self.rows[0] if self.rows and self.rows[0].summary is not None else None


def _key(params: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(params.items())


def grid_search(
    cls: type[Strategy],
    dims: Sequence[Dimension],
    runner: Runner,
    *,
    objective: str,
    start_us: int | None = None,
    end_us: int | None = None,
    progress: Progress | None = None,
) -> SearchResult:
    """Every combination of the grid over [start_us, end_us) (None: the runner's
    window), best first by ``objective`` (the runner must score with it)."""
    from sptrader.backtest.sweep import combinations

    started = time.perf_counter()
    combos = combinations(grid_of(dims))
    tasks = [Task(build_strategy(cls, combo), start_us, end_us) for combo in combos]
    rows: list[SweepRow] = []
    try:
        for _, row in runner.run(tasks):
            rows.append(row)
            if progress is not None:
                progress(len(rows), len(tasks))
    except KeyboardInterrupt:
        raise SweepInterrupted(ranked(rows, True), len(tasks)) from None
    return SearchResult(
        "grid",
        objective,
        ranked(rows, True),
        space=len(combos),
        elapsed_s=time.perf_counter() - started,
    )


def value_combinations(dims: Sequence[Dimension]) -> list[dict[str, str]]:
    """A combination for each value of each dimension (the others at their first
    value), plus the two corners (every dimension at its first, every one at its last
    value): built before a search starts, a bad value is a UsageError naming it (not at
    the 150th trial), and their warm-ups bound the space's (the longest lookbacks are
    at a corner)."""
    base = {dim.name: dim.values[0] for dim in dims}
    made = [base]
    for dim in dims:
        made.extend({**base, dim.name: value} for value in dim.values[1:])
    made.append({dim.name: dim.values[-1] for dim in dims})
    return made


def _check_values(cls: type[Strategy], dims: Sequence[Dimension]) -> None:
    for combo in value_combinations(dims):
        build_strategy(cls, combo)


def tpe_search(
    cls: type[Strategy],
    dims: Sequence[Dimension],
    runner: Runner,
    *,
    trials: int,
    objective: str,
    seed: int | None = None,
    start_us: int | None = None,
    end_us: int | None = None,
    batch: int | None = None,
    progress: Progress | None = None,
) -> SearchResult:
    """A TPE search of ``trials`` distinct combinations (all of them when the grid has
    no more), in batches of ``batch`` (default ``max(8, runner.workers)``)."""
    varied = [dim for dim in dims if len(dim.values) > 1]
    if not varied:
        raise UsageError(
            "--trials searches the --param ranges or lists: give at least one, e.g."
            " --param fast=5..50:5"
        )
    size = space_size(dims)
    if size <= trials:
        found = grid_search(
            cls,
            dims,
            runner,
            objective=objective,
            start_us=start_us,
            end_us=end_us,
            progress=progress,
        )
        found.trials, found.seed = trials, seed
        found.extra["exhaustive"] = True  # the budget covers the whole grid
        return found
    _check_values(cls, dims)
    import optuna
    from optuna.distributions import CategoricalDistribution, IntDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    fixed = {dim.name: dim.values[0] for dim in dims if len(dim.values) == 1}
    space = {
        dim.name: IntDistribution(0, len(dim.values) - 1)
        if dim.ordinal
        else CategoricalDistribution(list(dim.values))
        for dim in varied
    }
    by_name = {dim.name: dim for dim in varied}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    batch = max(1, batch or max(MIN_BATCH, runner.workers))
    seen: dict[tuple[tuple[str, str], ...], SweepRow] = {}
    rows: list[SweepRow] = []
    asked = duplicates = 0
    ask_limit = trials * 50  # TPE stuck on known points: stop rather than spin

    def tell(trial: Any, row: SweepRow) -> None:
        if row.summary is None or row.score is None:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, row.score)

    def params_of(trial: Any) -> dict[str, str]:
        chosen = {}
        for dim in dims:
            if dim.name in fixed:
                chosen[dim.name] = fixed[dim.name]
                continue
            value = trial.params[dim.name]
            chosen[dim.name] = by_name[dim.name].values[value] if dim.ordinal else value
        return chosen

    try:
        while len(rows) < trials and asked < ask_limit:
            pending: dict[tuple[tuple[str, str], ...], list[Any]] = {}
            combos: list[dict[str, str]] = []
            want = min(batch, trials - len(rows))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                while len(pending) < want and asked < ask_limit:
                    trial = study.ask(space)
                    asked += 1
                    combo = params_of(trial)
                    key = _key(combo)
                    if key in seen:
                        duplicates += 1
                        tell(trial, seen[key])
                    elif key in pending:
                        duplicates += 1
                        pending[key].append(trial)
                    else:
                        pending[key] = [trial]
                        combos.append(combo)
            tasks = [Task(build_strategy(cls, combo), start_us, end_us) for combo in combos]
            for index, row in runner.run(tasks):
                key = _key(combos[index])
                seen[key] = row
                rows.append(row)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for trial in pending[key]:
                        tell(trial, row)
                if progress is not None:
                    progress(len(rows), trials)
    except KeyboardInterrupt:
        raise SweepInterrupted(ranked(rows, True), trials) from None
    return SearchResult(
        "tpe",
        objective,
        ranked(rows, True),
        space=size,
        trials=trials,
        asked=asked,
        duplicates=duplicates,
        seed=seed,
        elapsed_s=time.perf_counter() - started,
    )


def search(
    cls: type[Strategy],
    dims: Sequence[Dimension],
    runner: Runner,
    *,
    objective: str,
    trials: int | None = None,
    seed: int | None = None,
    start_us: int | None = None,
    end_us: int | None = None,
    progress: Progress | None = None,
) -> SearchResult:
    """The grid without ``trials``, else a TPE search of that budget."""
    if trials is None:
        return grid_search(
            cls,
            dims,
            runner,
            objective=objective,
            start_us=start_us,
            end_us=end_us,
            progress=progress,
        )
    return tpe_search(
        cls,
        dims,
        runner,
        trials=trials,
        objective=objective,
        seed=seed,
        start_us=start_us,
        end_us=end_us,
        progress=progress,
    )


def validate_objective(spec: str) -> str:
    """The objective checked in this process (a one-line UsageError if not), so a typo
    is not found by every worker."""
    objectives.resolve(spec)
    return spec.strip()
