"""Scanners: one run (``Scanner.scan``, blocking, in a thread) and the service that runs
it on its cron schedule.

A run: skip each instrument (with the reason recorded) whose feed is stale or whose
window (the last ``bars`` closed bars of ``timeframe``; the forming bar is never part of
it) has a gap in stored coverage — a signal is never computed from holes; then load the
bars, add the strategy's indicator columns, evaluate, and keep only the signals on the
newest closed bar: a scanner acts on what just happened, and older rows of the frame
were (or would have been) raised by earlier runs. Signals are recorded with the run's
lineage, published on the bus as SignalRaised and handed to the alerter.

Batched: the coverage of all instruments is checked at once, their bars are loaded in
one query (stacked, sorted by instrument, ts) and their indicators computed in one
polars query (``.over("instrument")``); a ``stacked`` strategy (all built-ins) evaluates
them in one call. Those steps are recorded once for the run (instrument NULL); skips
are recorded per instrument, and so are the evaluate/emit steps of a strategy that is
not stacked, which gets one instrument's bars per call. A batched step that raises is
recorded with its traceback and the run goes on instrument by instrument, so one bad
instrument fails only itself (the run is then "partial").

The service: the next fire time comes from the cron expression; a run still going when
the next one is due makes that one skipped (counter ``skipped_overlap``). Fire times
missed while the service was stopped (from the last recorded run) or while the machine
slept are made up by one catch-up run; the counter ``coalesced`` counts the missed fire
times folded into it. A run that fails is recorded (status failed, the traceback on its
step) and the service keeps its schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from sptrader.alerting.webhooks import Alerter
from sptrader.clock import format_us, now_us
from sptrader.config import AlertsConfig, LlmConfig, ScannerConfig
from sptrader.errors import SptraderError, UsageError
from sptrader.models import US_PER_MINUTE, SignalRaised, timeframe_minutes
from sptrader.scanners import labels, lineage, shadow
from sptrader.scanners.llm_step import LlmStep
from sptrader.scanners.model_filter import ModelFilter
from sptrader.schedule import MAX_SLEEP_S, Clock, CronSchedule, SystemClock
from sptrader.schema import STORED_BAR_COLUMNS
from sptrader.store import Store, queries
from sptrader.strategies import registry
from sptrader.strategies.base import OPTIONAL_SIGNAL_SCHEMA, SIGNAL_SCHEMA, Strategy
from sptrader.supervisor import Service, ServiceContext, Supervisor
from sptrader.threads import run_in_thread

if TYPE_CHECKING:
    from sptrader.backfill import Backfill
    from sptrader.bus import Bus
    from sptrader.data.manager import DataManager
    from sptrader.feeds.base import Feed

log = logging.getLogger(__name__)

SERVICE_PREFIX = "scanner:"


def service_name(scanner: str) -> str:
    return f"{SERVICE_PREFIX}{scanner}"


@dataclass
class ScanResult:
    scanner: str
    run_id: int
    status: str
    scanned: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    signals: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As plain JSON-able data (times and other values as text): what a client's
        ``scan`` returns, locally or over the API."""
        return json.loads(json.dumps(asdict(self), default=str))


def load_filters(
    home: Path | None, llm: LlmConfig | None, config: ScannerConfig
) -> tuple[ModelFilter | None, LlmStep | None]:
    """The scanner's model and LLM step, if it has them (blocking); a missing model or
    template is a SptraderError (the scanner never runs without its filters)."""
    return ModelFilter.load(home, config), LlmStep.load(home, llm, config)


def going_on(signals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The signals its model and LLM step did not hold back: those the broker and the
    alerts get."""
    return [signal for signal in signals if signal.get("taken") is not False]


def unknown_scanner(name: str, known: list[str]) -> UsageError:
    return UsageError(
        f"unknown scanner {name!r} (scanners: {', '.join(known) or 'none configured'})"
    )


class _StepFailed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ScannerDeps:
    """What scanners use of the rest of SPtrader (the engine hands it over)."""

    #: The open store (raises when it is not).
    store: Callable[[], Store]
    #: Stored coverage and market hours: what a window lacks.
    data: DataManager
    #: The watched instruments: streamed, so their gaps mean a feed is down.
    watchlist: Callable[[], list[str]]
    #: The feed that serves an instrument's history, if one is enabled.
    history_feed: Callable[[str], Feed | None]
    #: A Backfill of open market hours the store lacks.
    make_backfill: Callable[[], Backfill]
    #: True when an instrument's feed is not delivering.
    is_stale: Callable[[str], bool]
    #: Lets the minute that just closed reach the store (``wait=False``: coverage only).
    settle_bars: Callable[..., Awaitable[None]]
    bus: Bus
    #: User strategy modules ([strategies] modules).
    strategy_modules: list[str]
    #: The home, where trained models live (a scanner's ``model``).
    home: Path | None = None
    #: The LLM endpoint a scanner's ``llm_prompt`` asks ([llm]).
    llm: LlmConfig | None = None


def _to_us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _from_us(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC)


class Scanner:
    """One scanner's runs over the store (blocking: call from a thread)."""

    def __init__(
        self,
        deps: ScannerDeps,
        config: ScannerConfig,
        strategy: Strategy,
        model: ModelFilter | None = None,
        llm: LlmStep | None = None,
    ) -> None:
        self.deps = deps
        self.config = config
        self.strategy = strategy
        #: The model in front of the orders (``model =``), loaded with the strategy.
        self.model = model
        #: The LLM's verdict on each signal the model let through (``llm_prompt``).
        self.llm = llm
        #: The newest run's window and the bars it loaded at once (None: it loaded none,
        #: or instrument by instrument): what its shadow variations evaluate.
        self.loaded: tuple[int, int, pl.DataFrame | None] = (0, 0, None)

    def window(self, at_us: int) -> tuple[int, int]:
        """[start, end) of the last ``bars`` closed bars of the timeframe at ``at_us``."""
        width = timeframe_minutes(self.config.timeframe) * US_PER_MINUTE
        end = at_us - at_us % width
        return end - self.config.bars * width, end

    def scan(
        self,
        trigger: str,
        scheduled_us: int | None = None,
        stale: set[str] | frozenset[str] = frozenset(),
        at_us: int | None = None,
    ) -> ScanResult:
        store = self.deps.store()
        recorder = lineage.RunRecorder(self.config.name, trigger, scheduled_us)
        start, end = self.window(now_us() if at_us is None else at_us)
        self.loaded = (start, end, None)
        result = ScanResult(self.config.name, 0, "ok")
        reasons, errors = self._skip_reasons(recorder, stale, start, end)
        to_scan = []
        for instrument in dict.fromkeys(self.config.instruments):
            reason = reasons[instrument]
            if reason is None:
                to_scan.append(instrument)
            elif reason:
                recorder.skip(instrument, reason)
                result.skipped.append((instrument, reason))
            else:
                result.failed.append((instrument, errors.get(instrument, "")))
        if to_scan:
            self._scan_all(store, recorder, result, to_scan, start, end)
        if self.model is not None and result.signals:
            self._score(store, recorder, result, start, end)
        if self.llm is not None and result.signals:
            self._ask_llm(store, recorder, result, start, end)
        recorder.signals = result.signals
        if result.failed:
            result.status = "partial" if result.scanned else "failed"
            first = result.failed[0]
            more = f" (and {len(result.failed) - 1} more)" if len(result.failed) > 1 else ""
            result.error = f"{first[0]}: {first[1].splitlines()[0] if first[1] else 'failed'}{more}"
        result.run_id = recorder.finish(
            store,
            result.status,
            result.error,
            instruments=len(self.config.instruments),
            skipped=len(result.skipped),
        )
        for signal in result.signals:
            signal["run_id"] = result.run_id
        return result

    def _score(
        self,
        store: Store,
        recorder: lineage.RunRecorder,
        result: ScanResult,
        start: int,
        end: int,
    ) -> None:
        """The model's probability on each signal (a "model" step); a failure lets no
        signal of the run go on and makes the run partial."""
        assert self.model is not None
        try:
            with recorder.step(
                None, "model", f"{self.model.name}: p >= {self.model.min_probability:g}"
            ) as step:
                bars = self._run_bars(store, result, start, end)
                step.output_summary = self.model.score(
                    bars, self._specs(recorder, None), result.signals
                )
        except Exception as error:
            for signal in result.signals:
                signal["taken"] = False
            result.failed.append(("model", f"{self.model.name}: {error}"))
            log.error("%s: scoring failed, no signal goes on: %s", self.config.name, error)

    def _run_bars(self, store: Store, result: ScanResult, start: int, end: int) -> pl.DataFrame:
        """The run's bars of its signals' instruments (loaded at once, else read)."""
        bars = self.loaded[2]
        if bars is None or bars.is_empty():
            names = sorted({signal["instrument"] for signal in result.signals})
            bars = queries.bars_between_many(store, names, self.config.timeframe, start, end)
        return bars

    def _ask_llm(
        self,
        store: Store,
        recorder: lineage.RunRecorder,
        result: ScanResult,
        start: int,
        end: int,
    ) -> None:
        """The LLM's verdict on each entry signal still going on: an ``llm`` step each;
        a failed call follows ``llm_on_error``."""
        assert self.llm is not None
        asking = [
            signal
            for signal in result.signals
            if signal["side"] != "exit" and signal.get("taken") is not False
        ]
        if not asking:
            return
        specs = self.strategy.indicators()
        bars = _add_indicators(self._run_bars(store, result, start, end), specs, over="instrument")
        columns = _indicator_columns(bars)
        for signal in asking:
            try:
                mine = bars.filter(
                    (pl.col("instrument") == signal["instrument"])
                    & (pl.col("ts").dt.epoch("us") <= signal["ts_us"])
                )
                prompt = self.llm.prompt(
                    {**signal, "timeframe": self.config.timeframe}, mine, columns
                )
                with recorder.step(signal["instrument"], "llm", prompt) as step:
                    verdict = self.llm.ask(prompt)
                    step.output_summary = verdict.summary()
                signal["taken"] = verdict.verdict == "take"
            except Exception as error:
                signal["taken"] = self.llm.on_error == "take"
                log.warning(
                    "%s: the LLM step failed for %s %s (%s): %s it",
                    self.config.name,
                    signal["side"],
                    signal["instrument"],
                    str(error).splitlines()[0],
                    "taking" if signal["taken"] else "skipping",
                )

    # --- coverage ---------------------------------------------------------------------

    def _skip_reasons(
        self,
        recorder: lineage.RunRecorder,
        stale: set[str] | frozenset[str],
        start: int,
        end: int,
    ) -> tuple[dict[str, str | None], dict[str, str]]:
        """Per instrument, why it is skipped (None: scan it; "": checking failed), and
        the errors of the failed checks. All instruments' coverage in one check; if that
        fails (recorded as a run step), instrument by instrument."""
        instruments = list(dict.fromkeys(self.config.instruments))
        checked = [name for name in instruments if name not in stale]
        gaps: dict[str, list[tuple[int, int]]] | None = None
        if checked:
            try:
                with recorder.step(
                    None, "load_bars", f"coverage check of {_count(checked)} {_span(start, end)}"
                ):
                    gaps = self.deps.data.gaps_many(checked, start, end)
            except Exception as error:
                self._batch_failed("the coverage check", error)
            else:
                recorder.steps.pop()  # a passing check is part of load_bars below
        reasons: dict[str, str | None] = {}
        errors: dict[str, str] = {}
        for instrument in instruments:
            if instrument in stale or gaps is None:
                reason = self._skip_reason(recorder, instrument, stale, start, end)
                if reason == "":
                    errors[instrument] = recorder.steps[-1].error or ""
            else:
                reason = self._gap_reason(instrument, gaps.get(instrument, []), start, end)
            reasons[instrument] = reason
        return reasons, errors

    def _skip_reason(
        self,
        recorder: lineage.RunRecorder,
        instrument: str,
        stale: set[str] | frozenset[str],
        start: int,
        end: int,
    ) -> str | None:
        """Why ``instrument`` is skipped; None to scan it; "" when checking failed (the
        failure is recorded as a load_bars step)."""
        if instrument in stale:
            return "stale: its feed is not delivering live data"
        try:
            with recorder.step(instrument, "load_bars", f"coverage check {_span(start, end)}"):
                gaps = self.deps.data.gaps(instrument, start, end)
        except Exception:
            log.exception(
                "coverage check of %s failed", instrument, extra={"source": self.config.name}
            )
            return ""
        recorder.steps.pop()  # a passing check is part of load_bars below
        return self._gap_reason(instrument, gaps, start, end)

    def _gap_reason(
        self, instrument: str, gaps: list[tuple[int, int]], start: int, end: int
    ) -> str | None:
        """The skip reason for the window's ``gaps`` (None: none left to skip for)."""
        if gaps and instrument not in self.deps.watchlist():
            # Not streamed, so nothing keeps it up to date: fetch what is missing first
            # (a live instrument's gap means its feed is down, and is skipped).
            remaining = self._fetch_missing(instrument, start, end)
            if remaining is not None:
                gaps = remaining
        if gaps:
            minutes = sum(gap_end - gap_start for gap_start, gap_end in gaps) // US_PER_MINUTE
            first = gaps[0]
            return (
                f"gap: {minutes} min missing in the window ({len(gaps)} range"
                f"{'s' if len(gaps) > 1 else ''}, first {_span(*first)})"
            )
        return None

    def _fetch_missing(self, instrument: str, start: int, end: int) -> list[tuple[int, int]] | None:
        """Fetch the window's missing history from the instrument's feed (blocking);
        returns what is still missing, or None when nothing could be tried."""
        if self.deps.history_feed(instrument) is None:
            return None
        try:
            backfill = self.deps.make_backfill()
            backfill.run(backfill.plan([instrument], start, end))
        except Exception as error:  # offline: the gap stays, and the reason says so
            log.warning("could not fetch %s's missing bars: %s", instrument, error)
            return None
        return self.deps.data.gaps(instrument, start, end)

    # --- the batched steps ------------------------------------------------------------

    def _scan_all(
        self,
        store: Store,
        recorder: lineage.RunRecorder,
        result: ScanResult,
        instruments: list[str],
        start: int,
        end: int,
    ) -> None:
        """Load, compute and (for a stacked strategy) evaluate ``instruments`` at once;
        instrument by instrument from the first batched step that fails."""
        timeframe = self.config.timeframe
        bars: pl.DataFrame | None = None
        try:
            with recorder.step(
                None,
                "load_bars",
                f"{_count(instruments)} ({_names(instruments)}): {timeframe}"
                f" x{self.config.bars} {_span(start, end)}",
            ) as step:
                bars = queries.bars_between_many(store, instruments, timeframe, start, end)
                step.output_summary = _loaded(bars, instruments)
                self.loaded = (start, end, bars)
        except Exception as error:
            self._batch_failed("load_bars", error)
        if bars is None:
            self._scan_each(store, recorder, result, instruments, start, end, None, False)
            return
        if bars.is_empty():
            result.scanned.extend(instruments)  # nothing to evaluate, as for one instrument
            return
        try:
            specs = self._specs(recorder, None)
        except Exception as error:  # the same for every instrument: they all fail
            self._batch_failed("indicators", error)
            message = f"indicators: {type(error).__name__}: {error}"
            result.failed.extend((instrument, message) for instrument in instruments)
            return
        informative = bool(self.strategy.informative())
        with_indicators = not specs and not informative
        if specs or informative:
            try:
                enriched = bars  # kept only if every step succeeds
                if specs:
                    with recorder.step(None, "indicators", ", ".join(specs)) as step:
                        enriched = _add_indicators(enriched, specs, over="instrument")
                        step.output_summary = f"columns: {', '.join(_indicator_columns(enriched))}"
                if informative:
                    enriched = self._informative(recorder, None, enriched, over="instrument")
                bars, with_indicators = enriched, True
            except Exception as error:
                self._batch_failed("indicators", error)
        if with_indicators and self.strategy.stacked:
            try:
                signals = self._evaluate_stacked(recorder, bars, instruments, end)
            except Exception as error:
                self._batch_failed("evaluate", error)
            else:
                result.scanned.extend(instruments)
                result.signals.extend(signals)
                return
        self._scan_each(store, recorder, result, instruments, start, end, bars, with_indicators)

    def _evaluate_stacked(
        self, recorder: lineage.RunRecorder, bars: pl.DataFrame, instruments: list[str], end: int
    ) -> list[dict[str, Any]]:
        strategy = self.strategy
        newest_ts = end - timeframe_minutes(self.config.timeframe) * US_PER_MINUTE
        loaded = bars["instrument"].n_unique()
        with recorder.step(
            None,
            "evaluate",
            f"{strategy.name} on {_count(loaded)}, {bars.height} bars (stacked)",
        ) as step:
            frame = _check_signals(strategy.evaluate(bars))
            if frame["instrument"].null_count():
                raise ValueError("a stacked evaluate must fill in each signal's instrument")
            strays = set(frame["instrument"].unique()) - set(instruments)
            if strays:
                raise ValueError(f"evaluate signalled instruments it was not given: {strays}")
            fresh = frame.filter(pl.col("ts") == pl.lit(newest_ts).cast(pl.Datetime("us")))
            step.output_summary = (
                f"{frame.height} signal row{'s' if frame.height != 1 else ''},"
                f" {fresh.height} on the newest bar {format_us(newest_ts)}"
                f" ({_count(fresh['instrument'].n_unique())})"
            )
        if fresh.is_empty():
            return []
        with recorder.step(None, "emit", f"{fresh.height} signal(s)") as step:
            order = {name: index for index, name in enumerate(instruments)}
            signals = sorted(
                self._signals(fresh, newest_ts), key=lambda signal: order[signal["instrument"]]
            )
            shown = [f"{signal['instrument']} {_side(signal)}" for signal in signals[:10]]
            if len(signals) > 10:
                shown.append(f"and {len(signals) - 10} more")
            step.output_summary = ", ".join(shown)
        return signals

    def _informative(
        self,
        recorder: lineage.RunRecorder,
        instrument: str | None,
        bars: pl.DataFrame,
        over: str | None = None,
    ) -> pl.DataFrame:
        """``bars`` with the higher timeframes the strategy reads (a lineage step)."""
        from sptrader.strategies.informative import informative_columns, with_informative

        timeframe = self.config.timeframe
        columns = informative_columns(self.strategy, timeframe)
        with recorder.step(instrument, "informative", ", ".join(columns)) as step:
            bars = with_informative(self.strategy, bars, timeframe, over=over)
            step.output_summary = f"columns: {', '.join(columns)}"
        return bars

    def _specs(self, recorder: lineage.RunRecorder, instrument: str | None) -> list[str]:
        """The strategy's indicator specs; if asking for them raises, that is recorded
        as a failed indicators step (and raised)."""
        try:
            return self.strategy.indicators()
        except Exception:
            with recorder.step(instrument, "indicators", f"{self.strategy.name}.indicators()"):
                raise

    def _batch_failed(self, step: str, error: Exception) -> None:
        log.error(
            "%s: %s of all instruments at once failed (%s: %s); going on instrument by instrument",
            self.config.name,
            step,
            type(error).__name__,
            error,
            exc_info=error,
            extra={"source": service_name(self.config.name)},
        )

    def _signals(self, fresh: pl.DataFrame, newest_ts: int) -> list[dict[str, Any]]:
        """Signal dicts of ``fresh`` (rows of SIGNAL_SCHEMA on the newest bar)."""
        created = now_us()
        return [
            {
                "scanner": self.config.name,
                "instrument": row["instrument"],
                "ts": format_us(newest_ts),
                "ts_us": newest_ts,
                "side": row["side"],
                "strength": row["strength"],
                "reason": row["reason"] or "",
                "stop": row["stop"],
                "target": row["target"],
                "trail": row.get("trail"),
                "trail_pct": row.get("trail_pct"),
                "paper": self.config.order_venue == "paper",
                "broker": self.config.order_venue,
                "created_us": created,
            }
            for row in fresh.iter_rows(named=True)
        ]

    # --- instrument by instrument -----------------------------------------------------

    def _scan_each(
        self,
        store: Store,
        recorder: lineage.RunRecorder,
        result: ScanResult,
        instruments: list[str],
        start: int,
        end: int,
        bars: pl.DataFrame | None,
        with_indicators: bool,
    ) -> None:
        """Each instrument on its own (its bars taken from ``bars`` when loaded, else
        read); one that fails fails alone."""
        parts: dict[str, pl.DataFrame] = {}
        if bars is not None:
            parts = {
                str(key[0]): part
                for key, part in bars.partition_by(
                    "instrument", as_dict=True, maintain_order=True
                ).items()
            }
        for instrument in instruments:
            own = None if bars is None else parts.get(instrument, bars.clear())
            try:
                signals = self._scan_one(
                    store, recorder, instrument, start, end, own, with_indicators
                )
            except _StepFailed as error:
                result.failed.append((instrument, str(error)))
                continue
            result.scanned.append(instrument)
            result.signals.extend(signals)

    def _scan_one(
        self,
        store: Store,
        recorder: lineage.RunRecorder,
        instrument: str,
        start: int,
        end: int,
        bars: pl.DataFrame | None = None,
        with_indicators: bool = False,
    ) -> list[dict[str, Any]]:
        """One instrument's steps: load its bars (unless given), add the indicators
        (unless ``with_indicators``), evaluate and emit."""
        strategy = self.strategy
        timeframe = self.config.timeframe
        try:
            if bars is None:
                with recorder.step(
                    instrument, "load_bars", f"{timeframe} x{self.config.bars} {_span(start, end)}"
                ) as step:
                    bars = queries.bars_between(store, instrument, timeframe, start, end)
                    bars = bars.select(pl.lit(instrument).alias("instrument"), pl.all())
                    newest = (
                        format_us(int(bars["ts"].max().timestamp() * 1e6)) if bars.height else "-"
                    )
                    step.output_summary = f"{bars.height} bars, newest {newest}"
                if bars.is_empty():
                    recorder.steps[-1].output_summary = "no bars (the market was quiet or closed)"
                    return []
            elif bars.is_empty():
                return []  # the run's load_bars step says it had none
            specs = self._specs(recorder, instrument)
            if specs and not with_indicators:
                with recorder.step(instrument, "indicators", ", ".join(specs)) as step:
                    bars = _add_indicators(bars, specs)
                    step.output_summary = f"columns: {', '.join(_indicator_columns(bars))}"
            if not with_indicators and strategy.informative():
                bars = self._informative(recorder, instrument, bars)
            with recorder.step(
                instrument, "evaluate", f"{strategy.name} on {bars.height} bars"
            ) as step:
                frame = strategy.evaluate(bars)
                frame = _check_signals(frame)
                newest_ts = end - timeframe_minutes(timeframe) * US_PER_MINUTE
                fresh = frame.filter(
                    pl.col("ts") == pl.lit(newest_ts).cast(pl.Datetime("us"))
                ).filter(pl.col("instrument").is_null() | (pl.col("instrument") == instrument))
                step.output_summary = (
                    f"{frame.height} signal row{'s' if frame.height != 1 else ''},"
                    f" {fresh.height} on the newest bar {format_us(newest_ts)}"
                )
            if fresh.is_empty():
                return []
            with recorder.step(instrument, "emit", f"{fresh.height} signal(s)") as step:
                fresh = fresh.with_columns(pl.lit(instrument).alias("instrument"))
                signals = self._signals(fresh, newest_ts)
                step.output_summary = ", ".join(_side(signal) for signal in signals)
            return signals
        except Exception as error:
            log.error(
                "%s: %s failed on %s: %s",
                self.config.name,
                recorder.steps[-1].step,
                instrument,
                error,
                exc_info=error,
                extra={"source": service_name(self.config.name)},
            )
            raise _StepFailed(
                f"{recorder.steps[-1].step}: {type(error).__name__}: {error}"
            ) from None


def _count(instruments: list[str] | int) -> str:
    n = instruments if isinstance(instruments, int) else len(instruments)
    return f"{n} instrument{'s' if n != 1 else ''}"


def _names(instruments: list[str], shown: int = 3) -> str:
    """The first few names, e.g. "SIM:A, SIM:B, SIM:C and 97 more"."""
    names = ", ".join(instruments[:shown])
    return names if len(instruments) <= shown else f"{names} and {len(instruments) - shown} more"


def _loaded(bars: pl.DataFrame, instruments: list[str]) -> str:
    """The run's load_bars output: how many bars of how many instruments, which had none."""
    if bars.is_empty():
        return f"{_count(instruments)}, no bars (the market was quiet or closed)"
    newest = format_us(int(bars["ts"].max().timestamp() * 1e6))
    summary = f"{_count(instruments)}, {bars.height} bars, newest {newest}"
    present = set(bars["instrument"].unique())
    without = [name for name in instruments if name not in present]
    if without:
        summary += f"; no bars for {_names(without)}"
    return summary


def _side(signal: dict[str, Any]) -> str:
    strength = signal["strength"]
    return signal["side"] + (f" {strength:.2f}" if strength is not None else "")


def _span(start: int, end: int) -> str:
    return f"{format_us(start)} → {format_us(end)}"


def _add_indicators(bars: pl.DataFrame, specs: list[str], over: str | None = None) -> pl.DataFrame:
    try:
        from sptrader import indicators
    except ModuleNotFoundError as error:
        if error.name != "sptrader.indicators":
            raise
        raise SptraderError(
            f"the strategy asks for indicators {specs} but sptrader.indicators is not available"
        ) from None
    return indicators.add_indicators(bars, specs, over=over)


def _check_signals(frame: pl.DataFrame) -> pl.DataFrame:
    if not isinstance(frame, pl.DataFrame):
        raise TypeError(f"evaluate returned {type(frame).__name__}, not a polars DataFrame")
    missing = [name for name in ("ts", "side") if name not in frame.columns]
    if missing:
        raise ValueError(f"evaluate's frame lacks the column(s) {', '.join(missing)}")
    # The optional columns (a trailing stop) are kept: the broker trails as the backtest does.
    schema = {**SIGNAL_SCHEMA, **OPTIONAL_SIGNAL_SCHEMA}
    for name, dtype in schema.items():
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype).alias(name))
    frame = frame.select(list(schema)).cast(schema)  # type: ignore[arg-type]
    bad = frame.filter(~pl.col("side").is_in(["buy", "sell", "exit"]))
    if bad.height:
        raise ValueError(f"bad signal side {bad['side'][0]!r} (expected buy, sell or exit)")
    return frame


class ScannerService(Service):
    kind = "scanner"

    def __init__(
        self,
        deps: ScannerDeps,
        config: ScannerConfig,
        alerter: Alerter | None = None,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(service_name(config.name))
        self.deps = deps
        self.config = config
        self.alerter = alerter
        self.clock: Clock = clock or SystemClock()
        self.schedule = CronSchedule(config.schedule)
        self.scanner: Scanner | None = None
        self.context: ServiceContext | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[ScanResult | None] | None = None
        #: The fire time the service waits for (None while stopped).
        self.next_due: datetime | None = None

    # --- strategy ---------------------------------------------------------------------

    async def load(self) -> Scanner:
        """Build the strategy (importing user modules); a failure is a SptraderError
        naming the problem, its traceback logged."""
        modules = self.deps.strategy_modules
        try:
            strategy = await run_in_thread(
                registry.build, self.config.strategy, dict(self.config.params), modules
            )
        except registry.StrategyLoadError as error:
            if self.context is not None:
                self.context.problem = str(error)
            details = f"\n{error.details}" if error.details else ""
            log.error("%s%s", error, details, extra={"source": self.name})
            raise
        try:
            model, llm = await run_in_thread(
                load_filters, self.deps.home, self.deps.llm, self.config
            )
        except SptraderError as error:
            if self.context is not None:
                self.context.problem = str(error)
            log.error("%s", error, extra={"source": self.name})
            raise
        self.scanner = Scanner(self.deps, self.config, strategy, model, llm)
        return self.scanner

    # --- the schedule -----------------------------------------------------------------

    async def run(self, context: ServiceContext) -> None:
        self.context = context
        context.problem = ""
        await self.load()
        context.mark_running()
        try:
            store = self.deps.store()
            last = await run_in_thread(lineage.last_scheduled_us, store, self.config.name)
            now = self.clock.now()
            if last is not None:
                missed = self.schedule.count_between(_from_us(last), now)
                if missed:
                    context.count("coalesced", missed)
                    log.info(
                        "%d scheduled run(s) missed while stopped: one catch-up run",
                        missed,
                        extra={"source": self.name},
                    )
                    self._launch("catchup", now)
            due = self.schedule.next_after(now)
            while due is not None:
                self.next_due = due
                await self._sleep_until(due)
                now = self.clock.now()
                # Fire times after `due` that passed too (the machine slept): one run.
                missed = self.schedule.count_between(due, now)
                trigger = "schedule"
                if missed:
                    context.count("coalesced", missed)
                    trigger = "catchup"
                    log.info(
                        "%d scheduled run(s) missed (the machine slept?): one catch-up run",
                        missed,
                        extra={"source": self.name},
                    )
                if self._lock.locked() or (self._task is not None and not self._task.done()):
                    context.count("skipped_overlap")
                    log.warning(
                        "the run due at %s was skipped: the previous run is still going",
                        due.strftime("%H:%M:%S"),
                        extra={"source": self.name},
                    )
                else:
                    self._launch(trigger, now if missed else due)
                due = self.schedule.next_after(now)
        finally:
            self.next_due = None
            task, self._task = self._task, None
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _sleep_until(self, due: datetime) -> None:
        while True:
            left = (due - self.clock.now()).total_seconds()
            if left <= 0:
                return
            await self.clock.sleep(min(left, MAX_SLEEP_S))

    def _launch(self, trigger: str, scheduled: datetime) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._scheduled_run(trigger, _to_us(scheduled)), name=f"{self.name}:run"
        )

    async def _scheduled_run(self, trigger: str, scheduled_us: int) -> ScanResult | None:
        try:
            # Fired on the minute: the bar that just closed is still on its way to the store.
            await self.deps.settle_bars()
            return await self.run_now(trigger, scheduled_us)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # one bad run must never end the schedule
            if self.context is not None:
                self.context.count("runs_failed")
            log.error("scan run failed: %s", error, exc_info=error, extra={"source": self.name})
            return None

    # --- one run ----------------------------------------------------------------------

    async def run_now(self, trigger: str = "manual", scheduled_us: int | None = None) -> ScanResult:
        """Run a scan now (waiting for one in progress: runs never overlap)."""
        async with self._lock:
            scanner = self.scanner or await self.load()
            await self.deps.settle_bars(wait=False)  # live coverage up to the last minute
            stale = {name for name in self.config.instruments if self.deps.is_stale(name)}
            result = await run_in_thread(scanner.scan, trigger, scheduled_us, stale)
            await self._emit(result)
            # The live signals are out: now the shadow variations (never raises).
            await run_in_thread(shadow.after_run, scanner, result)
            await run_in_thread(labels.after_run, scanner, result)
            return result

    async def _emit(self, result: ScanResult) -> None:
        context = self.context
        if context is not None:
            context.count("runs")
            context.count("signals", len(result.signals))
            context.count("instruments_skipped", len(result.skipped))
            if result.status != "ok":
                context.count("runs_" + result.status)
        if result.status != "ok":
            log.warning(
                "run %d %s: %s",
                result.run_id,
                result.status,
                result.error,
                extra={"source": self.name},
            )
        going = going_on(result.signals)
        for signal in result.signals:
            if signal.get("taken") is not False:
                continue  # going on
            probability = signal.get("probability")
            log.info(
                "%s %s held back by its model or LLM step (p %s)",
                signal["side"],
                signal["instrument"],
                "not scored" if probability is None else f"{probability:.2f}",
                extra={"source": self.name},
            )
        if not going:
            if context is not None:
                context.touch()
            return
        events = [signal_event(signal) for signal in going]
        if context is not None:
            await context.publish(events)
        else:
            await self.deps.bus.publish(events)
        for signal in going:
            log.info(
                "%s %s: %s",
                signal["side"],
                signal["instrument"],
                signal["reason"],
                extra={"source": self.name},
            )
        if self.alerter is not None:
            loop = asyncio.get_running_loop()
            report = None
            if context is not None:

                def report(counter: str, context: ServiceContext = context) -> None:
                    loop.call_soon_threadsafe(context.count, counter)

            for signal in going:
                self.alerter.submit(alert_payload(signal), report)


def signal_event(signal: dict[str, Any]) -> SignalRaised:
    return SignalRaised(
        signal["created_us"],
        signal["scanner"],
        signal["run_id"],
        signal["instrument"],
        signal["ts_us"],
        signal["side"],
        signal["strength"],
        signal["reason"],
        signal["stop"],
        signal["target"],
        signal["paper"],
        signal.get("broker", "paper" if signal["paper"] else ""),
        signal.get("trail"),
        signal.get("trail_pct"),
    )


def alert_payload(signal: dict[str, Any]) -> dict[str, Any]:
    """The signal as webhooks get it (the generic json format sends exactly this)."""
    keys = ("scanner", "run_id", "instrument", "ts", "side", "strength", "reason", "stop", "target")
    return {key: signal.get(key) for key in keys}


# --- the engine's side ----------------------------------------------------------------


def add_scanners(
    supervisor: Supervisor,
    deps: ScannerDeps,
    configs: list[ScannerConfig],
    alerts: AlertsConfig,
    clock: Clock | None = None,
) -> dict[str, ScannerService]:
    """A service per ``[[scanners]]`` entry, added to the supervisor (the caller starts
    the enabled ones). One alerter serves them all."""
    alerter = Alerter(alerts)
    services: dict[str, ScannerService] = {}
    for config in configs:
        service = ScannerService(deps, config, alerter, clock)
        supervisor.add(service)
        services[config.name] = service
    return services


def find_scanner(services: dict[str, ScannerService], name: str) -> ScannerService:
    if name not in services:
        raise SptraderError(
            f"unknown scanner {name!r} (scanners: {', '.join(services) or 'none configured'})"
        )
    return services[name]


def _indicator_columns(bars: pl.DataFrame) -> list[str]:
    """The columns indicators added to a bar frame (not the stored bar layout)."""
    return [column for column in bars.columns if column not in STORED_BAR_COLUMNS]
