"""Parameter sweeps: ``--param NAME=VALUE`` values, ranges and lists, their cartesian
product, and running every combination over the same bars on all cores.

Forms of a ``--param`` value:

- ``fast=10``: one value;
- ``fast=5..30:5``: ``start..stop:step``, both ends included (``:step`` defaults to 1;
  integers when all three are whole numbers, else floats);
- ``fast=5,10,20``: a list.

Values are converted to the strategy's typed ``Params`` (msgspec, lax: ``"5"`` -> 5 for
an int, ``"true"`` -> True for a bool); a bad or unknown name is a UsageError (exit 2).

The sweep runs in a ``ProcessPoolExecutor`` (``os.cpu_count()`` workers, at most one per
combination) started with the *spawn* method: polars keeps a thread pool, and a forked
child of a process whose threads hold locks can deadlock. The bars are loaded once in
the parent and handed to each worker once, as Arrow IPC bytes, by the pool's
initializer; each task then carries only the strategy (a small pickle) and returns only
the summary. Each worker gets its share of the cores for polars' thread pool
(POLARS_MAX_THREADS, unless set already). A combination whose strategy raises gets
its error in its row.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import multiprocessing
import os
import re
import signal
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import polars as pl

from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import UsageError
from sptrader.strategies.base import Strategy

__all__ = [
    "MAX_COMBINATIONS",
    "Runner",
    "SweepInterrupted",
    "SweepRow",
    "Task",
    "build_strategy",
    "combinations",
    "parse_params",
    "ranked",
    "run_sweep",
    "warmup_of",
]

MAX_COMBINATIONS = 10_000
_INTEGER = re.compile(r"^[+-]?\d+$")
_USAGE = "use NAME=VALUE, NAME=START..STOP:STEP or NAME=A,B,C"


def parse_params(texts: Sequence[str]) -> dict[str, list[str]]:
    """``["fast=5..15:5", "slow=30"]`` -> ``{"fast": ["5", "10", "15"], "slow": ["30"]}``
    (values stay text: the strategy's Params convert them)."""
    grid: dict[str, list[str]] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise UsageError(f"bad --param {text!r}: {_USAGE}")
        if name in grid:
            raise UsageError(f"--param {name} is given twice (give a list: {name}=A,B,C)")
        if ".." in value:
            values = expand_range(name, value)
        elif "," in value:
            values = [part.strip() for part in value.split(",")]
            if any(not part for part in values):
                raise UsageError(f"bad --param {text!r}: an empty value in the list")
        else:
            values = [value]
        grid[name] = list(dict.fromkeys(values))
    return grid


def expand_range(name: str, text: str) -> list[str]:
    """``"5..30:5"`` -> ``["5", "10", ..., "30"]`` (stop included when a step lands on
    it); ``"0.5..1.5:0.25"`` -> floats."""
    low, _, rest = text.partition("..")
    high, _, step = rest.partition(":")
    parts = [low.strip(), high.strip(), step.strip() or "1"]
    whole = all(_INTEGER.match(part) for part in parts)
    try:
        numbers = [int(part) if whole else float(part) for part in parts]
    except ValueError:
        raise UsageError(
            f"bad --param {name}={text}: a range is START..STOP:STEP of numbers"
        ) from None
    start, stop, step_value = numbers
    if not all(math.isfinite(number) for number in numbers):
        raise UsageError(f"bad --param {name}={text}: a range needs finite numbers")
    if step_value <= 0:
        raise UsageError(f"bad --param {name}={text}: the step must be above 0")
    if stop < start:
        raise UsageError(f"bad --param {name}={text}: the range ends before it starts")
    count = math.floor((stop - start) / step_value + 1e-9) + 1
    if count > MAX_COMBINATIONS:
        raise UsageError(
            f"--param {name}={text} gives {count:,} values; at most {MAX_COMBINATIONS:,}"
        )
    if whole:
        return [str(start + i * step_value) for i in range(count)]
    return [_number_text(start + i * step_value) for i in range(count)]


def _number_text(value: float) -> str:
    # 0.1 + 2 * 0.1 is 0.30000000000000004: twelve significant digits are plenty.
    return f"{round(value, 12):.12g}"


def combinations(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """The cartesian product of the values, the first parameter varying slowest."""
    names = list(grid)
    total = math.prod(len(values) for values in grid.values())
    if total > MAX_COMBINATIONS:
        raise UsageError(f"the sweep has {total:,} combinations; at most {MAX_COMBINATIONS:,}")
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def build_strategy(cls: type[Strategy], params: dict[str, str]) -> Strategy:
    """An instance of ``cls`` with ``params`` converted to its typed Params; a bad or
    unknown one is a UsageError naming the strategy's parameters."""
    try:
        typed = msgspec.convert(params, cls.Params, strict=False)
    except msgspec.ValidationError as error:
        fields = msgspec.structs.fields(cls.Params)
        known = ", ".join(f"{f.name}={_default_text(f)}" for f in fields) or "none"
        raise UsageError(f"bad --param for {cls.name}: {error} (its params: {known})") from None
    return cls(typed)


def _default_text(field: Any) -> str:
    return param_text(field.default) if field.default is not msgspec.NODEFAULT else "?"


def param_text(value: Any) -> str:
    """A parameter's value as the text ``build_strategy`` converts (``True`` -> ``true``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass
class SweepRow:
    """One combination's outcome: its params, the run's summary (or its error) and its
    score by the objective (None when no objective was asked for)."""

    params: dict[str, Any]
    summary: dict[str, Any] | None = None
    error: str | None = None
    score: float | None = None

    @property
    def sort_key(self) -> tuple[int, float]:
        if self.summary is None:
            return (1, 0.0)
        return (0, -(self.summary.get("net_pnl") or 0.0))

    @property
    def score_key(self) -> tuple[int, float]:
        """Best score first (-inf: a run without trades), failed runs last."""
        if self.summary is None or self.score is None:
            return (1, 0.0)
        return (0, -self.score)


def ranked(rows: Sequence[SweepRow], by_score: bool = False) -> list[SweepRow]:
    """Best first: by the objective's score, else by net P&L; failed runs last. Ties
    keep their order (stable)."""
    return sorted(rows, key=lambda row: row.score_key if by_score else row.sort_key)


def warmup_of(strategy: Strategy) -> int:
    """Bars the strategy needs before the first traded bar: its own ``warmup_bars`` or
    its indicators' longest lookback, whichever is more."""
    from sptrader.indicators import max_lookback, parse_specs

    asked = strategy.indicators()
    specs = parse_specs(asked) if asked else []
    return max(strategy.warmup_bars(), max_lookback(specs))


def window_of(
    bars: pl.DataFrame,
    ts: np.ndarray,
    strategy: Strategy,
    timeframe: str,
    start_us: int | None,
    end_us: int | None,
) -> pl.DataFrame:
    """The bars of [start_us, end_us) (None: from the first, to the last) after up to the
    strategy's warm-up of earlier bars, its informative higher timeframes' included;
    ``ts``: the bars' open times in µs."""
    from sptrader.strategies.informative import informative_warmup

    first = int(np.searchsorted(ts, start_us)) if start_us is not None else 0
    first = max(0, first - warmup_of(strategy) - informative_warmup(strategy, timeframe))
    last = int(np.searchsorted(ts, end_us)) if end_us is not None else ts.size
    return bars.slice(first, max(0, last - first))


@dataclass(frozen=True)
class Task:
    """One run: ``strategy`` traded on the bars of [start_us, end_us) (None: the
    runner's start, the bars' end), after up to its warm-up of earlier bars."""

    strategy: Strategy
    start_us: int | None = None
    end_us: int | None = None


# --- workers ------------------------------------------------------------------------

_shared: dict[str, Any] = {}


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl+C during a sweep: the rows computed so far (sorted) out of ``total``."""

    def __init__(self, rows: list[SweepRow], total: int) -> None:
        super().__init__(f"{len(rows)}/{total} combinations run")
        self.rows = rows
        self.total = total


def _init_worker(bars_ipc: bytes, context: dict[str, Any]) -> None:
    # Ctrl+C reaches the whole process group: the parent stops the sweep, so a worker
    # ignores it (instead of dying with a traceback each).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _install(pl.read_ipc(io.BytesIO(bars_ipc)), context)


def _install(bars: pl.DataFrame, context: dict[str, Any]) -> None:
    _shared.clear()
    _shared.update(context, bars=bars)
    ts = bars["ts"]
    if ts.dtype.is_temporal():
        ts = ts.cast(pl.Datetime("us")).dt.epoch("us")
    _shared["ts"] = ts.to_numpy()


def _run_one(strategy: Strategy) -> SweepRow:
    return _run_task(Task(strategy))


def _run_task(task: Task) -> SweepRow:
    from sptrader.backtest import objectives
    from sptrader.backtest.engine import run_backtest, strategy_params

    strategy = task.strategy
    params = strategy_params(strategy)
    bars = _shared["bars"]
    start_us = _shared["start_us"] if task.start_us is None else task.start_us
    try:
        if task.start_us is not None or task.end_us is not None:
            bars = window_of(
                bars, _shared["ts"], strategy, _shared["timeframe"], start_us, task.end_us
            )
        result = run_backtest(
            strategy,
            bars,
            _shared["broker"],
            _shared["risk"],
            _shared["timeframe"],
            instrument=_shared["instrument"],
            start_us=start_us,
            gaps=_shared["gaps"],
        )
        objective = _shared.get("objective")
        score = objectives.score(objective, result) if objective else None
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        return SweepRow(params, error=f"{type(error).__name__}: {first_line}")
    # Only the summary travels back (and is kept): a result's trades and equity curve
    # are dropped here, so memory stays flat however many runs a search makes.
    return SweepRow(params, summary=result.summary, score=score)


@contextlib.contextmanager
def _polars_threads(count: int) -> Iterator[None]:
    """Workers started inside get ``count`` polars threads each (the cores shared out
    rather than every worker's pool competing for all of them), unless the user set
    POLARS_MAX_THREADS. Spawned children read it when they import polars."""
    if "POLARS_MAX_THREADS" in os.environ:
        yield
        return
    os.environ["POLARS_MAX_THREADS"] = str(count)
    try:
        yield
    finally:
        os.environ.pop("POLARS_MAX_THREADS", None)


class Runner:
    """Runs of strategies over one instrument's bars, in ``workers`` spawned processes
    that each get the bars once (or in this process when ``workers`` is 1). Used as a
    context manager; one runner serves a sweep, a search's batches or every fold of a
    walk-forward. ``objective`` (a name or ``module:function``,
    :mod:`sptrader.backtest.objectives`) scores each run in the worker."""

    def __init__(
        self,
        bars: pl.DataFrame,
        broker_cfg: BrokerConfig,
        risk_cfg: RiskConfig,
        timeframe: str,
        *,
        instrument: str | None = None,
        start_us: int | None = None,
        gaps: Sequence[tuple[int, int]] = (),
        workers: int = 1,
        objective: str | None = None,
    ) -> None:
        self.bars = bars
        self.workers = max(1, workers)
        self.context = {
            "broker": broker_cfg,
            "risk": risk_cfg,
            "timeframe": timeframe,
            "instrument": instrument,
            "start_us": start_us,
            "gaps": list(gaps),
            "objective": objective,
        }
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Runner:
        if self.workers == 1:
            _install(self.bars, self.context)
            return self
        buffer = io.BytesIO()
        self.bars.write_ipc(buffer)
        with _polars_threads(max(1, (os.cpu_count() or 1) // self.workers)):
            self.pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(buffer.getvalue(), self.context),
            )
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if self.pool is None:
            _shared.clear()
            return
        if kind is not None and issubclass(kind, BaseException) and not issubclass(kind, Exception):
            _stop_now(self.pool)  # Ctrl+C: do not wait for runs nobody wants
        else:
            self.pool.shutdown()
        self.pool = None

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, SweepRow]]:
        """``(index in tasks, row)`` of each run, in the order they complete."""
        if self.pool is None:
            for index, task in enumerate(tasks):
                yield index, _run_task(task)
            return
        with _sigint_blocked():  # the workers, spawned here, are born deaf to Ctrl+C
            futures = {self.pool.submit(_run_task, task): i for i, task in enumerate(tasks)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def run_sweep(
    strategies: Sequence[Strategy],
    bars: pl.DataFrame,
    broker_cfg: BrokerConfig,
    risk_cfg: RiskConfig,
    timeframe: str,
    *,
    instrument: str | None = None,
    start_us: int | None = None,
    gaps: Sequence[tuple[int, int]] = (),
    workers: int | None = None,
    objective: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[SweepRow]:
    """Every strategy over ``bars``, in worker processes when there are several, rows
    sorted best first (by ``objective``'s score when given, else by net P&L; failed
    runs last). ``progress(done, total)`` after each run. Ctrl+C stops it at once (the
    workers are terminated) with SweepInterrupted, holding the rows computed so far."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(strategies)))
    rows: list[SweepRow] = []
    by_score = objective is not None
    runner = Runner(
        bars,
        broker_cfg,
        risk_cfg,
        timeframe,
        instrument=instrument,
        start_us=start_us,
        gaps=gaps,
        workers=workers,
        objective=objective,
    )
    try:
        with runner:
            for _, row in runner.run([Task(strategy) for strategy in strategies]):
                rows.append(row)
                if progress is not None:
                    progress(len(rows), len(strategies))
    except KeyboardInterrupt:
        raise SweepInterrupted(ranked(rows, by_score), len(strategies)) from None
    return ranked(rows, by_score)


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """SIGINT blocked in this block: children started in it inherit the mask (a
    terminal's Ctrl+C reaches them too, before their initializer runs); a Ctrl+C that
    came meanwhile is delivered here when the block ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers (a combination running
    can take seconds; its result is not wanted any more)."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(0.5)
