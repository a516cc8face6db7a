"""Lineage of scanner runs (tables of migration 004): what each run did, step by step,
and the signals it raised.

A step belongs to one instrument, or (instrument NULL) to the whole run: a run that
loads, computes and evaluates all its instruments at once records those steps once,
their summaries covering every instrument ("100 instruments, 100000 bars"); skips, and
the steps of strategies evaluated instrument by instrument (and of a fallback after a
failed batched step), are per instrument.

A ``RunRecorder`` collects a run's steps in memory and writes the run, its steps and its
signals in one transaction when the run ends (a run is short; a half-written run is
never visible), the steps and signals each with one INSERT from a polars frame. The
reads below serve ``sptrader runs``, the Strategies screen and the API. Blocking: call
from a thread.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from sptrader.clock import now_us
from sptrader.store import Store

# "shadow": a shadow variation evaluated after the run (sptrader.scanners.shadow), or
# its pending outcomes resolved; "label": the scanner's signals whose outcome became
# known labelled (sptrader.scanners.labels); both appended once the run is written.
STEPS = (
    "load_bars",
    "indicators",
    "informative",
    "evaluate",
    "emit",
    "skip",
    "model",
    "llm",
    "shadow",
    "label",
)
STATUSES = ("ok", "partial", "failed")


@dataclass(slots=True)
class Step:
    instrument: str | None
    step: str
    started_us: int
    duration_ms: float = 0.0
    input_summary: str = ""
    output_summary: str = ""
    error: str | None = None


@dataclass(slots=True)
class StepHandle:
    """What a step fills in while it runs."""

    output_summary: str = ""


@dataclass
class RunRecorder:
    scanner: str
    trigger: str
    scheduled_us: int | None
    started_us: int = field(default_factory=now_us)
    steps: list[Step] = field(default_factory=list)
    signals: list[dict[str, Any]] = field(default_factory=list)
    _start: float = field(default_factory=time.perf_counter)

    @contextmanager
    def step(
        self, instrument: str | None, name: str, input_summary: str = ""
    ) -> Iterator[StepHandle]:
        """Time one step; an exception is recorded on it (with its traceback), then
        raised again for the caller to decide."""
        assert name in STEPS, name
        record = Step(instrument, name, now_us(), input_summary=input_summary)
        self.steps.append(record)
        handle = StepHandle()
        begin = time.perf_counter()
        try:
            yield handle
        except Exception as error:
            record.error = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
            raise
        finally:
            record.duration_ms = (time.perf_counter() - begin) * 1000
            record.output_summary = handle.output_summary

    def skip(self, instrument: str, reason: str) -> None:
        self.steps.append(Step(instrument, "skip", now_us(), 0.0, "", reason))

    def finish(
        self,
        store: Store,
        status: str,
        error: str | None = None,
        *,
        instruments: int = 0,
        skipped: int = 0,
    ) -> int:
        """Write the run; returns its id."""
        assert status in STATUSES, status
        duration_ms = (time.perf_counter() - self._start) * 1000
        cursor = store.cursor()
        with store._write_lock:  # the store's one-writer-at-a-time lock
            cursor.execute("BEGIN TRANSACTION")
            try:
                run_id = cursor.execute(
                    "SELECT coalesce(max(run_id), 0) + 1 FROM scan_runs"
                ).fetchall()[0][0]
                cursor.execute(
                    "INSERT INTO scan_runs VALUES (?, ?, ?, make_timestamp(?), make_timestamp(?),"
                    " ?, ?, ?, ?, ?, ?)",
                    [
                        run_id,
                        self.scanner,
                        self.trigger,
                        self.scheduled_us,
                        self.started_us,
                        duration_ms,
                        status,
                        error,
                        instruments,
                        skipped,
                        len(self.signals),
                    ],
                )
                if self.steps:
                    _insert(cursor, "scan_steps", self._steps_frame(run_id))
                if self.signals:
                    _insert(cursor, "signals", self._signals_frame(run_id))
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return int(run_id)

    def _steps_frame(self, run_id: int) -> pl.DataFrame:
        return _steps_frame(run_id, self.steps)

    def _signals_frame(self, run_id: int) -> pl.DataFrame:
        signals = self.signals
        return pl.DataFrame(
            {
                "run_id": [run_id] * len(signals),
                "scanner": [self.scanner] * len(signals),
                **{
                    column: [signal.get(key) for signal in signals]
                    for column, key in _SIGNAL_KEYS.items()
                },
            },
            schema=_SIGNAL_SCHEMA,
        )


def append_step(
    store: Store, run_id: int, scanner: str, name: str, input_summary: str, work: Callable[[], str]
) -> None:
    """One more step of run ``run_id``, already written: ``work`` does it and returns its
    output summary. Never raises: a failure is the step's error and a log line."""
    recorder = RunRecorder(scanner, name, None)
    try:
        with recorder.step(None, name, input_summary) as step:
            step.output_summary = work()
    except Exception as error:
        logging.getLogger(__name__).warning("%s: %s failed: %s", scanner, input_summary, error)
    with store.transaction() as cursor:
        append_steps(cursor, run_id, recorder.steps)


def append_steps(cursor: duckdb.DuckDBPyConnection, run_id: int, steps: list[Step]) -> None:
    """Steps taken after run ``run_id`` was written (its shadow variations'), numbered
    on from its last; call inside the caller's write transaction."""
    if steps:
        first = cursor.execute(
            "SELECT coalesce(max(step_no), 0) + 1 FROM scan_steps WHERE run_id = ?", [run_id]
        ).fetchall()[0][0]
        _insert(cursor, "scan_steps", _steps_frame(run_id, steps, int(first)))


def _steps_frame(run_id: int, steps: list[Step], first: int = 1) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "run_id": [run_id] * len(steps),
            "step_no": list(range(first, first + len(steps))),
            "instrument": [step.instrument for step in steps],
            "step": [step.step for step in steps],
            "started": [step.started_us for step in steps],
            "duration_ms": [step.duration_ms for step in steps],
            "input_summary": [step.input_summary for step in steps],
            "output_summary": [step.output_summary for step in steps],
            "error": [step.error for step in steps],
        },
        schema=_STEP_SCHEMA,
    )


_STEP_SCHEMA = {
    "run_id": pl.Int64,
    "step_no": pl.Int32,
    "instrument": pl.String,
    "step": pl.String,
    "started": pl.Int64,  # µs, made a TIMESTAMP by _insert
    "duration_ms": pl.Float64,
    "input_summary": pl.String,
    "output_summary": pl.String,
    "error": pl.String,
}
_SIGNAL_SCHEMA = {
    "run_id": pl.Int64,
    "scanner": pl.String,
    "instrument": pl.String,
    "ts": pl.Int64,
    "side": pl.String,
    "strength": pl.Float64,
    "reason": pl.String,
    "stop": pl.Float64,
    "target": pl.Float64,
    "trail": pl.Float64,
    "trail_pct": pl.Float64,
    "created": pl.Int64,
    "probability": pl.Float64,
    "taken": pl.Boolean,
}
# signals columns from the keys of a scanner's signal dicts
_SIGNAL_KEYS = {
    "instrument": "instrument",
    "ts": "ts_us",
    "side": "side",
    "strength": "strength",
    "reason": "reason",
    "stop": "stop",
    "target": "target",
    "trail": "trail",
    "trail_pct": "trail_pct",
    "created": "created_us",
    "probability": "probability",
    "taken": "taken",
}
_TIMESTAMPS = {"started", "ts", "created"}


def _insert(cursor: duckdb.DuckDBPyConnection, table: str, frame: pl.DataFrame) -> None:
    """``INSERT INTO table SELECT ... FROM frame`` (columns by name; µs integers in the
    timestamp columns): one statement, however many rows."""
    name = f"incoming_{table}"
    columns = ", ".join(frame.columns)
    values = ", ".join(
        f"make_timestamp({column})" if column in _TIMESTAMPS else column for column in frame.columns
    )
    cursor.register(name, frame)
    try:
        cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {values} FROM {name}")
    finally:
        cursor.unregister(name)


# --- reads ----------------------------------------------------------------------------


def last_scheduled_us(store: Store, scanner: str) -> int | None:
    """The newest fire time a run of ``scanner`` stood for (scheduled or catch-up)."""
    row = (
        store.cursor()
        .execute(
            "SELECT epoch_us(max(scheduled)) FROM scan_runs"
            " WHERE scanner = ? AND trigger IN ('schedule', 'catchup')",
            [scanner],
        )
        .fetchall()[0]
    )
    return None if row[0] is None else int(row[0])


def recent_runs(store: Store, last: int = 20) -> pl.DataFrame:
    return (
        store.cursor()
        .sql(
            "SELECT run_id, scanner, trigger, epoch_us(started) AS started_us, duration_ms,"
            " status, instruments, skipped, signals, error FROM scan_runs"
            " ORDER BY run_id DESC LIMIT ?",
            params=[last],
        )
        .pl()
    )


def run_detail(
    store: Store, run_id: int
) -> tuple[dict[str, Any] | None, pl.DataFrame, pl.DataFrame]:
    """(the run's row, its steps, its signals); the row is None for an unknown id."""
    cursor = store.cursor()
    runs = cursor.sql(
        "SELECT run_id, scanner, trigger, epoch_us(scheduled) AS scheduled_us,"
        " epoch_us(started) AS started_us, duration_ms, status, error, instruments, skipped,"
        " signals FROM scan_runs WHERE run_id = ?",
        params=[run_id],
    ).pl()
    if runs.is_empty():
        return None, pl.DataFrame(), pl.DataFrame()
    steps = cursor.sql(
        "SELECT step_no, instrument, step, duration_ms, input_summary, output_summary, error"
        " FROM scan_steps WHERE run_id = ? ORDER BY step_no",
        params=[run_id],
    ).pl()
    signals = cursor.sql(
        "SELECT instrument, epoch_us(ts) AS ts_us, side, strength, reason, stop, target,"
        " trail, trail_pct FROM signals WHERE run_id = ? ORDER BY instrument, ts",
        params=[run_id],
    ).pl()
    return runs.row(0, named=True), steps, signals


def last_runs(store: Store) -> dict[str, dict]:
    """The newest run of every scanner, by scanner name: last_run_id, last_status,
    last_duration_ms, last_started_us."""
    frame = (
        store.cursor()
        .sql(
            "SELECT scanner, arg_max(run_id, run_id) AS last_run_id,"
            " arg_max(status, run_id) AS last_status,"
            " arg_max(duration_ms, run_id) AS last_duration_ms,"
            " arg_max(epoch_us(started), run_id) AS last_started_us"
            " FROM scan_runs GROUP BY scanner"
        )
        .pl()
    )
    return {row["scanner"]: row for row in frame.to_dicts()}


def recent_signals(store: Store, limit: int) -> list[dict]:
    """The newest ``limit`` signals, newest first."""
    return (
        store.cursor()
        .sql(
            "SELECT run_id, scanner, instrument, epoch_us(ts) AS ts_us, side, strength, reason,"
            " stop, target, epoch_us(created) AS created_us FROM signals"
            " ORDER BY created DESC, run_id DESC, instrument LIMIT ?",
            params=[limit],
        )
        .pl()
        .to_dicts()
    )


def run_steps(store: Store, run_id: int) -> list[dict]:
    """A run's lineage steps in order (instrument None: a step of the whole run)."""
    _, steps, _ = run_detail(store, run_id)
    return steps.to_dicts()
