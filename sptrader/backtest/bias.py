"""Lookahead and recursive-indicator analysis (``sptrader backtest --check-bias``).

Lookahead: a strategy is run once on all the bars, then again on truncated histories
(``bars[:cut]`` for a number of cuts spread over the traded window). A causal strategy
gives, on every row the truncated run has, exactly what the full run gave: any
indicator, informative or evaluate-made column, or any signal before the cut, that
changes when later bars are removed was computed from those later bars.

- Columns compared: those the pipeline adds to the bars (indicators, informative bars)
  and those ``evaluate`` adds itself. The latter are seen by tracing, during the call,
  the frames ``DataFrame.with_columns``/``select`` (and their ``_seq`` forms) return
  that still hold the bars' rows in order (same height, same ``ts``); a column reused
  under one name with other values gets ``#2``, ``#3``. Raw bar columns are compared
  only when ``evaluate`` replaces them. Lazy queries inside ``evaluate`` are not traced:
  their effect still shows in the signals.
- Tolerance: floating noise only (relative 1e-9, absolute 1e-12); null against a value
  is a change.
- Signals: those with ``ts`` before the cut, matched by bar (and order within a bar):
  one appearing, disappearing or changing side is a ``signal`` finding; a matched
  signal whose ``stop``, ``target`` or ``strength`` changes is ``signal stop`` etc.
  The reason text is not compared.
- Each biased column or signal is reported once: the earliest bar where any cut
  changed it, with that cut.

Recursive indicators (warnings, not lookahead): smoothers seeded at the start of the
series (EMA, RSI, ATR, ADX, MACD) depend on how much history precedes a bar. At a few
probe bars near the end, the indicator and informative columns computed from just the
strategy's declared warm-up (``warmup_bars()`` bars before the probe) are compared with
the full run's (all the history before it); a relative difference above 1e-6, or a
null where the full run has a value, is reported with the history from which the value
was stable (doubling from the declared warm-up). ``sptrader backtest`` itself reads the
longer :func:`~sptrader.backtest.sweep.warmup_of` before ``--from``; a scanner reads
only its window.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import IO, Any

import numpy as np
import polars as pl

from sptrader.backtest.engine import _prepared  # the bars exactly as a backtest sees them
from sptrader.backtest.sweep import warmup_of
from sptrader.clock import format_us
from sptrader.indicators import add_indicators, parse_spec
from sptrader.strategies.base import Strategy
from sptrader.strategies.informative import informative_warmup, with_informative

__all__ = [
    "BiasFinding",
    "BiasReport",
    "check_bias",
    "findings_json",
    "print_report",
]

#: Lookahead tolerance: floating noise only.
REL_TOL = 1e-9
ABS_TOL = 1e-12
#: Recursive-indicator tolerance (relative).
RECURSIVE_TOL = 1e-6
#: Default number of cuts.
CUTS = 16
#: Probe bars for the recursive check.
PROBES = 3

_SIGNAL_FIELDS = ("stop", "target", "strength")


@dataclass(frozen=True)
class BiasFinding:
    """One biased column or signal (``kind`` "indicator" or "signal"), or one indicator
    whose value depends on the history before it (``kind`` "recursive", a warning).

    Lookahead: ``first_ts_us`` is the earliest bar whose value changed when later bars
    were removed, ``full_value``/``truncated_value`` its value in the full and the
    truncated run, ``cut_ts_us`` the open time of the first bar that run left out.
    Recursive: ``first_ts_us`` is the probe bar, ``full_value`` its value with all the
    history, ``truncated_value`` with ``history_bars`` bars before it (the declared
    warm-up), which start at ``cut_ts_us``; ``rel_diff`` the relative difference and
    ``stable_bars`` the history from which it stayed within tolerance (None: not within
    the bars available)."""

    strategy: str
    kind: str  # "indicator" | "signal" | "recursive"
    column: str  # a column name, or "signal", "signal stop", "signal target", ...
    first_ts_us: int
    full_value: Any
    truncated_value: Any
    cut_ts_us: int
    source: str = ""  # "indicator", "informative", "evaluate" or "signals"
    rel_diff: float | None = None
    history_bars: int | None = None
    stable_bars: int | None = None


@dataclass
class BiasReport:
    strategy: str
    instrument: str
    timeframe: str
    bars: int
    cuts_us: list[int]  # each cut: the open time of the first bar left out
    declared_warmup: int  # the strategy's warmup_bars()
    read_warmup: int  # what a backtest reads before the first traded bar
    probes_us: list[int]  # the recursive check's probe bars
    findings: list[BiasFinding] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def lookahead(self) -> list[BiasFinding]:
        return [f for f in self.findings if f.kind != "recursive"]

    @property
    def recursive(self) -> list[BiasFinding]:
        return [f for f in self.findings if f.kind == "recursive"]

    @property
    def biased(self) -> bool:
        """True when a column or signal changed when later bars were removed."""
        return bool(self.lookahead)


def check_bias(
    strategy: Strategy,
    bars: pl.DataFrame,
    timeframe: str = "1m",
    *,
    instrument: str | None = None,
    start_us: int | None = None,
    cuts: int = CUTS,
) -> BiasReport:
    """Check ``strategy`` on ``bars`` (one instrument, oldest first, warm-up included
    as for :func:`~sptrader.backtest.run_backtest`) for lookahead and for indicators
    its declared warm-up is too short for (see the module doc). ``cuts``: how many
    truncated runs, spread from right after the warm-up (or ``start_us``) to the end."""
    started = time.perf_counter()
    frame = _prepared(bars, instrument)
    name = instrument or (frame["instrument"][0] if frame.height else "BACKTEST")
    ts = frame["ts"].dt.epoch("us").to_numpy()
    count = frame.height
    declared = max(0, int(strategy.warmup_bars()))
    read = warmup_of(strategy) + informative_warmup(strategy, timeframe)
    kept = _cut_points(ts, start_us, read, cuts)
    report = BiasReport(
        strategy=strategy.name,
        instrument=name,
        timeframe=timeframe,
        bars=count,
        cuts_us=[int(ts[k]) for k in kept],
        declared_warmup=declared,
        read_warmup=read,
        probes_us=[],
    )
    if count == 0:
        return report

    full = _run(strategy, frame, timeframe)
    found: dict[tuple[str, str], BiasFinding] = {}
    for k in kept:
        truncated = _run(strategy, frame.slice(0, k), timeframe)
        for finding in _compare(strategy.name, full, truncated, ts, k):
            key = (finding.kind, finding.column)
            if key not in found or finding.first_ts_us < found[key].first_ts_us:
                found[key] = finding
    lookahead = sorted(found.values(), key=lambda f: (f.first_ts_us, f.kind, f.column))

    probes = _probes(count, declared)
    report.probes_us = [int(ts[p]) for p in probes]
    recursive = _recursive(strategy, frame, timeframe, full, probes, declared, read, ts)
    report.findings = lookahead + recursive
    report.elapsed_s = time.perf_counter() - started
    return report


# --- the pipeline -----------------------------------------------------------------------


@dataclass
class _Run:
    frame: pl.DataFrame  # the bars with the indicator and informative columns
    sources: dict[str, str]  # column -> "indicator" | "informative" (added by the pipeline)
    traced: dict[str, pl.Series]  # columns evaluate added (or replaced)
    signals: pl.DataFrame  # ts_us, side, stop, target, strength, n (order within the bar)


def _indicator_frame(
    strategy: Strategy, frame: pl.DataFrame, timeframe: str
) -> tuple[pl.DataFrame, dict[str, str]]:
    """``frame`` with the columns the backtest adds before ``evaluate`` (as
    :func:`~sptrader.backtest.run_backtest` does), and where each came from."""
    # The same spec twice (sma_cross with fast == slow) is one set of columns.
    specs = list(dict.fromkeys(strategy.indicators()))
    with_indicators = add_indicators(frame, specs) if specs else frame
    indicator_columns = {c for spec in specs for c in parse_spec(spec).columns}
    with_indicators = with_informative(strategy, with_indicators, timeframe)
    sources = {
        c: "indicator" if c in indicator_columns else "informative"
        for c in with_indicators.columns
        if c not in frame.columns
    }
    return with_indicators, sources


def _run(strategy: Strategy, frame: pl.DataFrame, timeframe: str) -> _Run:
    with_indicators, sources = _indicator_frame(strategy, frame, timeframe)
    with _tracing(with_indicators) as tracer:
        signals = strategy.evaluate(with_indicators)
    return _Run(with_indicators, sources, tracer.columns, _signal_table(signals))


def _signal_table(signals: pl.DataFrame | None) -> pl.DataFrame:
    """The compared fields of ``signals``, ts in µs, and ``n``: the signal's order
    among those on the same bar (to match them between runs)."""
    schema = {"ts_us": pl.Int64, "side": pl.String}
    schema.update({name: pl.Float64 for name in _SIGNAL_FIELDS})
    if signals is None or signals.is_empty() or "ts" not in signals.columns:
        return pl.DataFrame(schema={**schema, "n": pl.UInt32})
    at = signals["ts"]
    ts_us = at.cast(pl.Datetime("us")).dt.epoch("us") if at.dtype.is_temporal() else at
    given = set(signals.columns)
    table = signals.select(
        ts_us.cast(pl.Int64).alias("ts_us"),
        (pl.col("side") if "side" in given else pl.lit(None)).cast(pl.String).alias("side"),
        *[
            (pl.col(name) if name in given else pl.lit(None)).cast(pl.Float64).alias(name)
            for name in _SIGNAL_FIELDS
        ],
    )
    table = table.sort("ts_us", maintain_order=True)
    # The order within a bar: the row number minus that of the bar's first signal (no
    # group-by: the rows are sorted by ts).
    row = pl.int_range(pl.len(), dtype=pl.UInt32)
    starts = pl.col("ts_us") != pl.col("ts_us").shift(1)
    first = pl.when(starts.fill_null(True)).then(row).forward_fill()
    return table.with_columns((row - first).alias("n"))


# --- tracing the columns evaluate adds ---------------------------------------------------

_TRACED_METHODS = ("with_columns", "with_columns_seq", "select", "select_seq")
_trace_lock = threading.Lock()


class _Tracer:
    """Collects the columns of frames that hold ``bars``' rows in order."""

    def __init__(self, bars: pl.DataFrame) -> None:
        self.thread = threading.get_ident()
        self.height = bars.height
        self.ts = bars["ts"] if "ts" in bars.columns else None
        self.inputs = {name: bars[name] for name in bars.columns}
        self.columns: dict[str, pl.Series] = {}
        self._variants: dict[str, list[pl.Series]] = {}

    def record(self, frame: Any) -> None:
        if threading.get_ident() != self.thread or not isinstance(frame, pl.DataFrame):
            return
        if self.ts is None or frame.height != self.height or "ts" not in frame.columns:
            return
        if not frame["ts"].equals(self.ts):  # reordered or other rows: not aligned
            return
        for name in frame.columns:
            series = frame[name]
            original = self.inputs.get(name)
            if original is not None and _same(series, original):
                continue
            variants = self._variants.setdefault(name, [])
            if any(_same(series, seen) for seen in variants):
                continue
            variants.append(series)
            label = name if len(variants) == 1 else f"{name}#{len(variants)}"
            self.columns[label] = series


def _same(a: pl.Series, b: pl.Series) -> bool:
    try:
        return a.equals(b, check_dtypes=False, check_names=False, null_equal=True)
    except Exception:  # dtypes that cannot be compared: treat as different
        return False


@contextmanager
def _tracing(bars: pl.DataFrame) -> Iterator[_Tracer]:
    """Trace the frames built during the ``with`` block (this thread only)."""
    tracer = _Tracer(bars)
    with _trace_lock:
        originals = {name: pl.DataFrame.__dict__[name] for name in _TRACED_METHODS}

        def traced(method: Callable[..., Any]) -> Callable[..., Any]:
            def call(self: pl.DataFrame, *args: Any, **kwargs: Any) -> Any:
                result = method(self, *args, **kwargs)
                tracer.record(result)
                return result

            return call

        for name, method in originals.items():
            setattr(pl.DataFrame, name, traced(method))
        try:
            yield tracer
        finally:
            for name, method in originals.items():
                setattr(pl.DataFrame, name, method)


# --- lookahead ---------------------------------------------------------------------------


def _cut_points(ts: np.ndarray, start_us: int | None, warmup: int, cuts: int) -> list[int]:
    """How many bars each truncated run keeps: spread from the first traded bar after
    the warm-up (kept alone, the next one left out) to all but the last bar."""
    count = ts.size
    if count < 3 or cuts <= 0:
        return []
    first = 0 if start_us is None else int(np.searchsorted(ts, start_us))
    low = min(max(first, warmup), count - 2)  # the last bar kept by the first cut
    points = np.rint(np.linspace(low + 1, count - 1, num=cuts)).astype(np.int64)
    return sorted({int(p) for p in points})


def _compare(name: str, full: _Run, truncated: _Run, ts: np.ndarray, k: int) -> list[BiasFinding]:
    cut_us = int(ts[k])
    findings: list[BiasFinding] = []
    columns = [(c, s, full.frame[c], truncated.frame) for c, s in full.sources.items()]
    columns += [(c, "evaluate", series, truncated.traced) for c, series in full.traced.items()]
    for column, source, series, other in columns:
        if column not in other:  # a traced column the truncated run did not make
            continue
        short = other[column]
        row = _first_change(series.slice(0, k), short.slice(0, k), REL_TOL, ABS_TOL)
        if row is not None:
            findings.append(
                BiasFinding(
                    name, "indicator", column, int(ts[row]), series[row], short[row], cut_us, source
                )
            )
    findings += _compare_signals(name, full.signals, truncated.signals, cut_us)
    return findings


def _compare_signals(
    name: str, full: pl.DataFrame, truncated: pl.DataFrame, cut_us: int
) -> list[BiasFinding]:
    before = pl.col("ts_us") < cut_us
    full, truncated = full.filter(before), truncated.filter(before)
    if full.equals(truncated, null_equal=True):  # the usual case, and much faster
        return []
    joined = full.join(truncated, on=["ts_us", "n"], how="full", coalesce=True, suffix="_t")
    if joined.is_empty():
        return []
    joined = joined.sort("ts_us", "n")
    findings = []
    moved = joined.filter(pl.col("side").ne_missing(pl.col("side_t")))
    if moved.height:
        row = moved.row(0, named=True)
        findings.append(
            BiasFinding(
                name,
                "signal",
                "signal",
                row["ts_us"],
                row["side"],
                row["side_t"],
                cut_us,
                "signals",
            )
        )
    matched = joined.filter(pl.col("side").eq_missing(pl.col("side_t")))
    for field_name in _SIGNAL_FIELDS:
        row_index = _first_change(matched[field_name], matched[f"{field_name}_t"], REL_TOL, ABS_TOL)
        if row_index is not None:
            row = matched.row(row_index, named=True)
            findings.append(
                BiasFinding(
                    name,
                    "signal",
                    f"signal {field_name}",
                    row["ts_us"],
                    row[field_name],
                    row[f"{field_name}_t"],
                    cut_us,
                    "signals",
                )
            )
    return findings


def _changed(a: pl.Series, b: pl.Series, rel: float, abs_: float) -> pl.Series:
    """Row by row: does ``b`` differ from ``a`` (null against a value counts)?"""
    if a.dtype == pl.Null:
        a = a.cast(b.dtype)
    if b.dtype == pl.Null:
        b = b.cast(a.dtype)
    numeric = (a.dtype.is_numeric() or a.dtype == pl.Null) and (
        b.dtype.is_numeric() or b.dtype == pl.Null
    )
    if not numeric:
        try:
            return a.ne_missing(b)
        except Exception:  # different kinds of column: compare their text
            return a.cast(pl.String).ne_missing(b.cast(pl.String))
    x, y = pl.col("x"), pl.col("y")
    close = (
        (x == y)
        | (x.is_nan() & y.is_nan())
        | ((x - y).abs() <= abs_ + rel * pl.max_horizontal(x.abs(), y.abs()))
    )
    nulls_differ = x.is_null() != y.is_null()
    return (
        pl.DataFrame({"x": a.cast(pl.Float64), "y": b.cast(pl.Float64)})
        .select((nulls_differ | (x.is_not_null() & y.is_not_null() & ~close)).alias("changed"))
        .to_series()
    )


def _first_change(a: pl.Series, b: pl.Series, rel: float, abs_: float) -> int | None:
    if _same(a, b):  # the usual case, and much faster
        return None
    rows = _changed(a, b, rel, abs_).fill_null(True).arg_true()
    return int(rows[0]) if rows.len() else None


# --- recursive indicators ----------------------------------------------------------------


def _probes(count: int, declared: int) -> list[int]:
    """Probe bars near the end (the most history behind them), each with more bars
    before it than the declared warm-up."""
    last = count - 1
    step = max(1, (last - declared) // (2 * PROBES))
    probes = [last - i * step for i in range(PROBES)]
    return sorted({p for p in probes if p > declared})


def _recursive(
    strategy: Strategy,
    frame: pl.DataFrame,
    timeframe: str,
    full: _Run,
    probes: list[int],
    declared: int,
    read: int,
    ts: np.ndarray,
) -> list[BiasFinding]:
    if not probes or not full.sources:
        return []
    columns = list(full.sources)
    scale = {c: _scale(full.frame[c]) for c in columns}

    def at(history: int, probe: int) -> dict[str, Any]:
        short, _ = _indicator_frame(strategy, frame.slice(probe - history, history + 1), timeframe)
        return {c: short[c][-1] if c in short.columns else None for c in columns}

    # Per column: the probe with the largest difference at the declared warm-up.
    worst: dict[str, tuple[float, int, Any, Any]] = {}
    for probe in probes:
        values = at(declared, probe)
        for column in columns:
            reference, value = full.frame[column][probe], values[column]
            diff = _relative(reference, value, scale[column])
            if diff is not None and (column not in worst or diff > worst[column][0]):
                worst[column] = (diff, probe, reference, value)
    if not worst:
        return []

    # From how much history each flagged value stays within tolerance (doubling).
    ladder = _ladder(declared, read, min(probes))
    unstable: dict[str, int] = {}  # column -> the longest history where it still differed
    for history in ladder:
        for probe in probes:
            values = at(history, probe)
            for column in worst:
                reference = full.frame[column][probe]
                if _relative(reference, values[column], scale[column]) is not None:
                    unstable[column] = history
    findings = []
    for column, (diff, probe, reference, value) in worst.items():
        last_bad = unstable.get(column, declared)
        later = [h for h in ladder if h > last_bad]
        findings.append(
            BiasFinding(
                strategy.name,
                "recursive",
                column,
                int(ts[probe]),
                reference,
                value,
                int(ts[probe - declared]),
                full.sources[column],
                rel_diff=diff,
                history_bars=declared,
                stable_bars=later[0] if later else None,
            )
        )
    return sorted(findings, key=lambda f: f.column)


def _ladder(declared: int, read: int, room: int) -> list[int]:
    """Histories to try after the declared one: doubling, plus what a backtest reads,
    all shorter than ``room`` (the bars before the earliest probe)."""
    histories = {read} if read < room else set()
    history = max(2 * declared, 16)
    while history < room:
        histories.add(history)
        history *= 2
    return sorted(h for h in histories if h > declared)


def _scale(series: pl.Series) -> float:
    """The column's typical size (for an absolute floor near zero)."""
    if not series.dtype.is_numeric():
        return 0.0
    values = series.cast(pl.Float64).abs().fill_nan(None).drop_nulls()
    values = values.filter(values < math.inf)
    return float(values.median()) if values.len() else 0.0


def _relative(reference: Any, value: Any, scale: float) -> float | None:
    """The relative difference when it is beyond the recursive tolerance (inf for
    null against a value), else None."""
    if reference is None and value is None:
        return None
    if reference is None or value is None:
        return math.inf
    if not isinstance(reference, int | float) or not isinstance(value, int | float):
        return None if reference == value else math.inf
    if reference == value or (math.isnan(reference) and math.isnan(value)):
        return None
    diff = abs(reference - value)
    size = max(abs(reference), abs(value))
    if not diff > RECURSIVE_TOL * size or diff <= 1e-9 * scale:
        return None
    return diff / size if size else math.inf


# --- output ------------------------------------------------------------------------------


def findings_json(report: BiasReport) -> list[dict[str, Any]]:
    """The findings as JSON-ready dicts (ISO 8601 times with Z; NaN and infinities as
    null), lookahead first, then the recursive warnings."""
    return [
        {
            "strategy": f.strategy,
            "kind": f.kind,
            "column": f.column,
            "source": f.source,
            "first_ts": format_us(f.first_ts_us),
            "full_value": _json_value(f.full_value),
            "truncated_value": _json_value(f.truncated_value),
            "cut_ts": format_us(f.cut_ts_us),
            "rel_diff": _json_value(f.rel_diff),
            "history_bars": f.history_bars,
            "stable_bars": f.stable_bars,
        }
        for f in report.findings
    ]


def print_report(report: BiasReport, out: IO[str]) -> None:
    """One line per finding, then the verdict."""
    for f in report.lookahead:
        what = f.column if f.kind == "signal" else f"column {f.column}"
        out.write(
            f"{f.strategy}: {what} changes when later bars are removed, first at"
            f" {_when(f.first_ts_us)} (full {_text(f.full_value, f)},"
            f" truncated {_text(f.truncated_value, f)})\n"
        )
    for f in report.recursive:
        stable = (
            f"stable from {f.stable_bars:,} bars of history"
            if f.stable_bars is not None
            else "not stable within the bars available"
        )
        off = "" if f.rel_diff is None or math.isinf(f.rel_diff) else f", {f.rel_diff:.1e} off"
        out.write(
            f"{f.strategy}: warning: {f.column} depends on the history before it: with the"
            f" declared warm-up of {f.history_bars:,} bars it is {_text(f.truncated_value, f)}"
            f" at {_when(f.first_ts_us)} against {_text(f.full_value, f)} with all the bars"
            f" before it{off}; {stable}\n"
        )
    cuts = len(report.cuts_us)
    if not cuts:
        out.write(f"{report.strategy}: not checked for lookahead: too few bars ({report.bars})\n")
    elif report.biased:
        count = len(report.lookahead)
        out.write(
            f"{report.strategy}: lookahead bias found: {count} column(s) or signal(s) change"
            f" when later bars are removed ({cuts} cuts)\n"
        )
    else:
        out.write(f"{report.strategy}: no lookahead found in {cuts} cuts\n")


def _when(ts_us: int) -> str:
    moment = datetime.fromtimestamp(ts_us / 1_000_000, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if moment.second else "%Y-%m-%d %H:%M")


def _text(value: Any, f: BiasFinding) -> str:
    if value is None:
        return "no signal" if f.column == "signal" else "null"
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date):
        return value.isoformat()
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)
