"""Lineage of scanner runs (tables of migration 004): what each run did, step by step,
and the signals it raised.

A ``RunRecorder`` collects a run's steps in memory and writes the run, its steps and its
signals in one transaction when the run ends (a run is short; a half-written run is
never visible). Blocking: call from a thread.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from sptrader.clock import now_us
from sptrader.store import Store

STEPS = ("load_bars", "indicators", "evaluate", "emit", "skip")
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
                    cursor.executemany(
                        "INSERT INTO scan_steps VALUES (?, ?, ?, ?, make_timestamp(?), ?, ?, ?, ?)",
                        [
                            [
                                run_id,
                                number,
                                step.instrument,
                                step.step,
                                step.started_us,
                                step.duration_ms,
                                step.input_summary,
                                step.output_summary,
                                step.error,
                            ]
                            for number, step in enumerate(self.steps, start=1)
                        ],
                    )
                if self.signals:
                    cursor.executemany(
                        "INSERT INTO signals VALUES (?, ?, ?, make_timestamp(?), ?, ?, ?, ?, ?,"
                        " make_timestamp(?))",
                        [
                            [
                                run_id,
                                self.scanner,
                                signal["instrument"],
                                signal["ts_us"],
                                signal["side"],
                                signal["strength"],
                                signal["reason"],
                                signal["stop"],
                                signal["target"],
                                signal["created_us"],
                            ]
                            for signal in self.signals
                        ],
                    )
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
        return int(run_id)


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
        "SELECT instrument, epoch_us(ts) AS ts_us, side, strength, reason, stop, target"
        " FROM signals WHERE run_id = ? ORDER BY instrument, ts",
        params=[run_id],
    ).pl()
    return runs.row(0, named=True), steps, signals
