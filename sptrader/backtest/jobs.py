"""Backtest jobs: a backtest, a sweep (grid or TPE search) or a walk-forward that a client
asks the engine for (the TUI's Backtest screen, a client over the API), run in the
background with its progress, cancel and a compact result.

``start(request)`` checks the request at once (one line for an unknown strategy, a bad
param, a window shorter than one train span ...: the checks of ``sptrader backtest``,
:mod:`sptrader.backtest.window`) and returns the job. In the background the window's
bars are loaded through the engine's client as the command loads them (missing history
fetched first; a window with holes refused unless ``allow_gaps``), then handed to one
process of its own that runs everything: the engine and a TUI hosting it share one
interpreter, and a simulation is Python work that a thread would run under the screen's
feet. A sweep or a walk-forward fans out from there over
:class:`~sptrader.backtest.sweep.Runner`'s own worker processes. Progress (combinations
or folds done, of how many) comes back over a pipe; ``cancel`` stops the process and its
workers (SIGTERM: the runner terminates its workers; SIGKILL to its session's process
group if it has not gone a few seconds later). Its stdout and stderr go nowhere (a TUI
draws on the terminal); a failure comes back as one line (the traceback is logged here).

A result is small enough for the API: the summary, the equity curve cut to at most
:data:`EQUITY_POINTS` points (each stretch's low and high kept, so drawdowns keep their
depth), the first :data:`TRADES_KEPT` trades with the count, a sweep's best ``top``
rows (and the best combination's own run), a walk-forward's folds and its stitched
out-of-sample run. Times are µs since 1970, non-finite numbers null. At most
:data:`MAX_RUNNING` jobs run at once; the newest :data:`KEEP_FINISHED` finished ones are
kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import msgspec
import numpy as np
import polars as pl

from sptrader.backtest.window import checked_coverage, load_bars, strategies_and_warmup
from sptrader.clock import now_us
from sptrader.config import BrokerConfig, RiskConfig
from sptrader.errors import SptraderError, UsageError
from sptrader.models import normalize_instrument, timeframe_minutes

__all__ = [
    "EQUITY_POINTS",
    "KEEP_FINISHED",
    "MAX_RUNNING",
    "MODES",
    "TRADES_KEPT",
    "BacktestJobs",
    "BacktestRequest",
    "JobSpec",
    "execute",
    "parse_request",
]

log = logging.getLogger(__name__)

MODES = ("single", "sweep", "walk-forward")
EQUITY_POINTS = 1000
TRADES_KEPT = 2000
MAX_TOP = 1000
MAX_RUNNING = 2
KEEP_FINISHED = 5
#: How much lower than the engine's the job's processes' CPU priority is.
NICENESS = 10
#: After SIGTERM, how long the process may take to stop its workers and go.
STOP_GRACE_S = 3.0
#: The summary figures a sweep row and a fold side carry (the table's columns).
ROW_FIGURES = (
    "trades",
    "net_pnl",
    "return_pct",
    "win_rate",
    "profit_factor",
    "max_drawdown_pct",
    "sharpe",
    "sortino",
)
TRADE_FIELDS = (
    "side",
    "qty",
    "entry_time_us",
    "entry_price",
    "exit_time_us",
    "exit_price",
    "pnl",
    "fees",
    "exit_reason",
    "stop",
    "target",
    "bars",
    "reason",
    "spans_gap",
)
FINISHED = ("done", "failed", "cancelled")


class BacktestRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What a client asks for. ``params``: the command's ``--param`` texts
    (``fast=5..30:5``, ``slow=20,40``, ``short=true``); ``end_us`` None: now; ``train`` and
    ``test``: a walk-forward's spans (``90d``, ``12w``, ``36h``); ``trials``: a TPE search
    of that budget instead of the grid; ``top``: the sweep rows returned; ``detail``: a
    single run filled on these finer bars (``1m``); ``monte_carlo``: that many
    reshuffled and resampled runs of a single run's (or the stitched walk-forward's)
    trades; ``seed``: the search's and the Monte Carlo's random draws."""

    strategy: str
    instrument: str
    start_us: int
    end_us: int | None = None
    timeframe: str = "1m"
    params: list[str] = []
    mode: str = "single"
    train: str | None = None
    test: str | None = None
    anchored: bool = False
    trials: int | None = None
    objective: str = "sharpe"
    seed: int | None = None
    top: int = 20
    allow_gaps: bool = False
    detail: str | None = None
    monte_carlo: int = 0


def parse_request(data: object) -> BacktestRequest:
    """A request from a client's dict; a malformed one is a one-line UsageError."""
    try:
        return msgspec.convert(data, BacktestRequest)
    except msgspec.ValidationError as error:
        raise UsageError(f"backtest request: {error}") from None


@dataclass(frozen=True)
class JobSpec:
    """Everything the job's process needs (picklable): the request as checked, the bars
    (warm-up first), the window's holes and the account's configuration."""

    strategy: str
    modules: tuple[str, ...]
    params: tuple[str, ...]
    mode: str
    instrument: str
    timeframe: str
    start_us: int
    end_us: int
    bars: pl.DataFrame
    gaps: tuple[tuple[int, int], ...]
    broker: BrokerConfig
    risk: RiskConfig
    objective: str = "sharpe"
    trials: int | None = None
    seed: int | None = None
    top: int = 20
    spans: tuple[int, int] | None = None
    anchored: bool = False
    workers: int = 1
    coverage: dict[str, Any] = field(default_factory=dict)
    price_decimals: int | None = None
    detail: pl.DataFrame | None = None  # the finer bars a single run is filled on
    detail_timeframe: str | None = None
    monte_carlo: int = 0


@dataclass
class _Plan:
    request: BacktestRequest
    instrument: str
    start_us: int
    end_us: int
    warmup: int
    runs: int  # combinations or trials a search makes (1: a single run)
    spans: tuple[int, int] | None


def plan(request: BacktestRequest, modules: tuple[str, ...] = ()) -> _Plan:
    """The request checked as ``sptrader backtest`` checks its options (UsageError or
    SptraderError, one line, in the form's words rather than the command's options)."""
    try:
        return _plan(request, modules)
    except SptraderError as error:
        raise type(error)(_plain(str(error))) from None


def _plan(request: BacktestRequest, modules: tuple[str, ...]) -> _Plan:
    from sptrader.backtest import optimize
    from sptrader.backtest.walkforward import folds, parse_span
    from sptrader.strategies import registry

    if request.mode not in MODES:
        raise UsageError(f"unknown mode {request.mode!r}: single, sweep or walk-forward")
    cls = registry.resolve(request.strategy.strip(), modules)
    dims = optimize.dimensions(request.params)
    varied = [dim.name for dim in dims if len(dim.values) > 1]
    optimize.validate_objective(request.objective)
    instrument = normalize_instrument(request.instrument)
    timeframe_minutes(request.timeframe)
    start = request.start_us
    end = now_us() if request.end_us is None else request.end_us
    if end <= start:
        raise UsageError("the end must be later than the start")
    if request.trials is not None and request.trials < 1:
        raise UsageError("trials must be at least 1")
    if not 1 <= request.top <= MAX_TOP:
        raise UsageError(f"top must be from 1 to {MAX_TOP}")
    if request.anchored and request.mode != "walk-forward":
        raise UsageError("anchored is a kind of walk-forward: choose the walk-forward mode")
    spans = None
    if request.mode == "single":
        if varied:
            raise UsageError(
                f"several values of {', '.join(varied)}: give one value each, or run a sweep"
                " or a walk-forward"
            )
        if request.trials is not None:
            raise UsageError("trials searches a sweep's ranges: run a sweep or a walk-forward")
    elif request.detail:
        raise UsageError("detail fills one backtest on the finer bars: choose the single mode")
    elif not varied:
        raise UsageError(
            f"a {request.mode} searches ranges or lists: give at least one, e.g. fast=5..30:5"
        )
    if request.detail:
        from sptrader.backtest.detail import check_detail

        check_detail(request.detail, request.timeframe)
    if request.monte_carlo:
        from sptrader.backtest.montecarlo import MAX_RUNS

        if request.mode == "sweep":
            raise UsageError(
                "the Monte Carlo reshuffles one run's trades: choose the single mode or a"
                " walk-forward (its stitched out-of-sample trades)"
            )
        if not 1 <= request.monte_carlo <= MAX_RUNS:
            raise UsageError(f"the Monte Carlo takes 1 to {MAX_RUNS:,} runs")
    if request.mode == "walk-forward":
        if not (request.train and request.test):
            raise UsageError("a walk-forward needs train and test spans, e.g. 90d and 30d")
        spans = (parse_span(request.train, "train"), parse_span(request.test, "test"))
        folds(start, end, *spans, request.anchored)  # too short a window: said now
    _, warmup = strategies_and_warmup(cls, dims, request.trials, request.timeframe)
    runs = 1 if request.mode == "single" else optimize.space_size(dims)
    if request.trials is not None:
        runs = min(runs, request.trials)
    return _Plan(request, instrument, start, end, warmup, runs, spans)


_OPTION = re.compile(r"(?<![\w`-])--(?=[a-z])")


def _plain(message: str) -> str:
    """The command's wording of a mistake in the form's (``--param`` → ``param``)."""
    return _OPTION.sub("", message).replace("from/to", "from and to")


# --- the engine's side ------------------------------------------------------------------


@dataclass
class _Job:
    job_id: int
    request: BacktestRequest
    state: str = "loading"  # loading, running, done, failed, cancelled
    message: str = "checking the window…"
    done: int = 0
    total: int = 0
    unit: str = "runs"
    error: str | None = None
    result: dict[str, Any] | None = None
    started_us: int = field(default_factory=now_us)
    finished_us: int | None = None
    process: Any = None
    task: asyncio.Task | None = None
    cancel_requested: bool = False

    def status(self) -> dict[str, Any]:
        ended = self.finished_us or now_us()
        return {
            "job_id": self.job_id,
            "state": self.state,
            "message": self.message,
            "done": self.done,
            "total": self.total,
            "unit": self.unit,
            "error": self.error,
            "started_us": self.started_us,
            "finished_us": self.finished_us,
            "elapsed_s": (ended - self.started_us) / 1e6,
            "request": msgspec.to_builtins(self.request),
            "result": self.result,
        }


class BacktestJobs:
    """The engine's backtest jobs (ids from 1), each loaded through ``client`` (an
    EngineClient of the engine) and run in a process of its own."""

    def __init__(self) -> None:
        self._jobs: dict[int, _Job] = {}
        self._next_id = 1
        # A thread per running job follows its process (not the loop's default pool,
        # which the store's reads share).
        self._threads: ThreadPoolExecutor | None = None

    def _running(self) -> list[_Job]:
        return [job for job in self._jobs.values() if job.state not in FINISHED]

    async def start(self, data: object, client: Any, broker: Any, risk: Any, modules=()) -> dict:
        """Check ``data`` (a BacktestRequest's fields) and start the job; its status."""
        request = parse_request(data)
        if len(self._running()) >= MAX_RUNNING:
            raise SptraderError(
                f"{MAX_RUNNING} backtests are running already: wait for one, or cancel it"
            )
        checked = await asyncio.to_thread(plan, request, tuple(modules))
        job = _Job(self._next_id, request)
        self._next_id += 1
        self._jobs[job.job_id] = job
        job.task = asyncio.create_task(
            self._run(job, checked, client, broker, risk, tuple(modules)),
            name=f"backtest-job-{job.job_id}",
        )
        return job.status()

    def status(self, job_id: int) -> dict:
        return self._job(job_id).status()

    def _job(self, job_id: int) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise UsageError(
                f"no backtest job {job_id} (the newest {KEEP_FINISHED} finished ones are kept)"
            )
        return job

    async def cancel(self, job_id: int) -> dict:
        """Stop the job (a finished one stays as it ended); its status."""
        job = self._job(job_id)
        if job.state in FINISHED:
            return job.status()
        job.cancel_requested = True
        job.message = "cancelling…"
        if job.state == "loading" and job.task is not None:
            job.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job.task
            self._cancelled_before_it_ran(job)
        else:
            await asyncio.to_thread(_stop_process, job.process)
            if job.task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(asyncio.shield(job.task), STOP_GRACE_S + 2)
        return job.status()

    async def close(self) -> None:
        """Stop every running job at once (the engine stops: nobody waits for them)."""
        tasks = []
        for job in self._running():
            job.cancel_requested = True
            if job.process is not None:
                _kill_group(job.process)
            elif job.task is not None:
                job.task.cancel()
            if job.task is not None:
                tasks.append(job.task)
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_S + 2)
        for job in self._running():
            self._cancelled_before_it_ran(job)
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
            self._threads = None

    def _cancelled_before_it_ran(self, job: _Job) -> None:
        """A task cancelled before its first step never ran its own ending."""
        if job.state not in FINISHED:
            job.state, job.message = "cancelled", "cancelled"
            job.finished_us = now_us()
            self._forget_old()

    async def _run(
        self,
        job: _Job,
        checked: _Plan,
        client: Any,
        broker: Any,
        risk: Any,
        modules: tuple[str, ...],
    ) -> None:
        request = checked.request
        try:
            job.message = "loading bars…"
            data = await load_bars(
                client,
                checked.instrument,
                request.timeframe,
                checked.start_us,
                checked.end_us,
                checked.warmup,
                _quiet_fetch(job),
            )
            if request.detail:
                job.message = f"loading the {request.detail} bars…"
                # The finer path of the traded window (the gaps are the same minutes).
                data.detail = await client.candles(
                    data.instrument,
                    request.detail,
                    start_us=checked.start_us,
                    end_us=checked.end_us,
                )
            job.message = "loading bars…"
            coverage = checked_coverage(
                data,
                request.timeframe,
                checked.start_us,
                checked.end_us,
                request.allow_gaps,
                "allow gaps to run anyway",
            )
            spec = JobSpec(
                strategy=request.strategy.strip(),
                modules=modules,
                params=tuple(request.params),
                mode=request.mode,
                instrument=data.instrument,
                timeframe=request.timeframe,
                start_us=checked.start_us,
                end_us=checked.end_us,
                bars=data.bars,
                gaps=tuple(data.gaps),
                broker=broker,
                risk=risk,
                objective=request.objective.strip(),
                trials=request.trials,
                seed=request.seed,
                top=request.top,
                spans=checked.spans,
                anchored=request.anchored,
                workers=max(1, min(os.cpu_count() or 1, checked.runs)),
                coverage=coverage,
                price_decimals=_decimals(data.price_decimals, data.bars),
                detail=data.detail,
                detail_timeframe=request.detail,
                monte_carlo=request.monte_carlo,
            )
            job.state, job.message = "running", "starting…"
            if self._threads is None:
                self._threads = ThreadPoolExecutor(MAX_RUNNING, thread_name_prefix="backtest-job")
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._threads, _supervise, job, spec)
        except asyncio.CancelledError:
            job.state = "cancelled"
            job.message = "cancelled"
        except SptraderError as error:
            job.state, job.error = "failed", str(error)
        except Exception as error:
            log.exception("backtest job %d failed", job.job_id)
            job.state, job.error = "failed", _one_line(error)
        finally:
            if job.state not in FINISHED:  # the process went away without a word
                job.state, job.error = "failed", "the backtest process stopped unexpectedly"
            if job.cancel_requested and job.state != "done":
                job.state, job.message = "cancelled", "cancelled"
            if job.state == "failed":
                job.message = job.error or "failed"
            job.finished_us = now_us()
            job.process = None
            self._forget_old()

    def _forget_old(self) -> None:
        finished = [job for job in self._jobs.values() if job.state in FINISHED]
        for job in sorted(finished, key=lambda job: job.job_id)[:-KEEP_FINISHED]:
            del self._jobs[job.job_id]


def _quiet_fetch(job: _Job) -> Callable[..., Any]:
    async def fetch(client: Any, instrument: str, start: int, end: int) -> None:
        job.message = f"fetching missing history of {instrument}…"

        def said(event: Any) -> None:
            if event.total:
                job.message = (
                    f"fetching missing history of {instrument}: {event.done}/{event.total}"
                )

        try:
            await client.backfill([instrument], start, end, on_progress=said)
        except SptraderError as error:  # what stays missing is said by the gap check
            log.info("no backfill of %s: %s", instrument, error)

    return fetch


def _decimals(known: int | None, bars: pl.DataFrame) -> int | None:
    from sptrader.formatting import price_decimals

    return price_decimals(known, bars["close"].tail(200).to_list() if bars.height else [])


def _one_line(error: BaseException) -> str:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def _supervise(job: _Job, spec: JobSpec) -> None:
    """In a thread of the engine's: the job's process started (a session of its own, so
    its workers go with it; stdout and stderr nowhere near the terminal), the spec
    handed over on its stdin, its messages read from a pipe until it ends, the job's
    state set from them. (Not multiprocessing's spawn: it asks sys.stderr for a file
    descriptor, which a Textual app's capture does not have.)"""
    if job.cancel_requested:
        return
    read_fd, write_fd = os.pipe()
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", f"{_ENTRY}({write_fd})"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    receiver = Connection(read_fd, writable=False)
    job.process = process
    if job.cancel_requested:  # cancelled while it started
        _stop_process(process)
    try:
        with contextlib.suppress(OSError):  # it died early: its pipe says no more
            assert process.stdin is not None
            pickle.dump(list(sys.path), process.stdin)
            pickle.dump(spec, process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            process.stdin.close()
        while True:
            try:
                message = receiver.recv()
            except Exception:  # EOF: it ended (a message cut short by a kill too)
                break
            kind = message[0]
            if kind == "progress":
                job.done, job.total, job.unit = message[1], message[2], message[3]
                job.message = f"{job.done}/{job.total} {job.unit}"
            elif kind == "done":
                job.result = message[1]
                job.state, job.message = "done", "done"
            elif kind == "failed":
                job.state, job.error = "failed", message[1]
                if message[2]:
                    log.error("backtest job %d failed:\n%s", job.job_id, message[2])
            elif kind == "cancelled":
                job.state = "cancelled"
    finally:
        receiver.close()
        if not _ended(process, STOP_GRACE_S):
            _kill_group(process)
            _ended(process, 1.0)


_ENTRY = "from sptrader.backtest.jobs import process_main; process_main"


def _ended(process: Any, timeout: float) -> bool:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _stop_process(process: Any) -> None:
    """SIGTERM (the process stops its workers and goes), SIGKILL to its process group if
    it is still there after STOP_GRACE_S."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    if not _ended(process, STOP_GRACE_S):
        _kill_group(process)


def _kill_group(process: Any) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        os.killpg(process.pid, signal.SIGKILL)  # its session's group: it and its workers
    with contextlib.suppress(ProcessLookupError, OSError):
        process.kill()


# --- the job's process ----------------------------------------------------------------


class _Cancelled(KeyboardInterrupt):
    """SIGTERM in the job's process: raised where it runs, so the runner terminates its
    workers on the way out (as for Ctrl+C in the command)."""


_cancelled = threading.Event()


def _on_sigterm(signum: int, frame: Any) -> None:
    _cancelled.set()
    raise _Cancelled()


def process_main(fd: int) -> None:
    """The job's process (``python -c``): sys.path and the JobSpec from stdin, messages
    to pipe ``fd``; deaf to the terminal's Ctrl+C, niced, gone with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Below the engine (and a TUI) for the CPU, its workers too (they inherit it): a
    # sweep on every core then waits for the screen rather than the screen for it.
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    sender = Connection(fd, readable=False)
    sys.path[:] = pickle.load(sys.stdin.buffer)
    spec = pickle.load(sys.stdin.buffer)
    parent = os.getppid()
    threading.Thread(target=_orphan_watch, args=(parent,), daemon=True).start()
    signal.signal(signal.SIGTERM, _on_sigterm)
    last_sent = [0.0]

    def progress(done: int, total: int, unit: str) -> None:
        now = time.monotonic()
        if done < total and now - last_sent[0] < 0.05:
            return  # a burst of fast runs: the newest count soon enough
        last_sent[0] = now
        sender.send(("progress", done, total, unit))

    try:
        result = execute(spec, progress)
        if _cancelled.is_set():
            raise _Cancelled()
        sender.send(("done", result))
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            sender.send(("cancelled",))
    except SptraderError as error:
        sender.send(("failed", str(error), ""))
    except Exception as error:
        sender.send(("failed", _one_line(error), traceback.format_exc()))
    finally:
        sender.close()


def _orphan_watch(parent: int) -> None:
    """The engine went away (killed): take the workers down too."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            with contextlib.suppress(OSError):
                os.killpg(0, signal.SIGKILL)
            os._exit(1)


Progress = Callable[[int, int, str], None]


def execute(spec: JobSpec, progress: Progress | None = None) -> dict[str, Any]:
    """The job's work, in whatever process calls it (the job's own; a test's): its
    compact result. ``progress(done, total, unit)`` as runs or folds complete."""
    from sptrader.strategies import registry

    say = progress or (lambda done, total, unit: None)
    cls = registry.resolve(spec.strategy, spec.modules)
    result: dict[str, Any] = {
        "mode": spec.mode,
        "strategy": spec.strategy,
        "instrument": spec.instrument,
        "timeframe": spec.timeframe,
        "start_us": spec.start_us,
        "end_us": spec.end_us,
        "objective": spec.objective,
        "price_decimals": spec.price_decimals,
        "coverage": _coverage(spec.coverage),
    }
    trades = None
    if spec.mode == "single":
        say(0, 1, "runs")
        run = _run_one(spec, cls, list(spec.params), detailed=True)
        result["run"] = run_json(run)
        trades = run.trades
        say(1, 1, "runs")
    elif spec.mode == "sweep":
        result.update(_sweep(spec, cls, say))
    else:
        found, stitched = _walk_forward(spec, cls, say)
        result.update(found)
        trades = None if stitched is None else stitched.trades
    if spec.monte_carlo:
        result["monte_carlo"] = _monte_carlo(spec, trades)
    return _clean(result)


def _monte_carlo(spec: JobSpec, trades: pl.DataFrame | None) -> dict[str, Any]:
    """The Monte Carlo of the run's trades; one too short for it keeps the run and says
    why in ``error``."""
    from sptrader.backtest.montecarlo import monte_carlo, to_json

    pnl = [] if trades is None else trades["pnl"].to_numpy()
    try:
        found = monte_carlo(pnl, spec.broker.starting_cash, spec.monte_carlo, spec.seed)
    except UsageError as error:
        return {"error": _plain(str(error)).replace("monte-carlo", "Monte Carlo")}
    return to_json(found)


def _run_one(spec: JobSpec, cls: type, texts: list[str], *, detailed: bool = False) -> Any:
    """One run of ``texts``' parameters; ``detailed``: filled on the spec's finer bars."""
    from sptrader.backtest import optimize
    from sptrader.backtest.engine import run_backtest
    from sptrader.backtest.sweep import build_strategy

    combo = {dim.name: dim.values[0] for dim in optimize.dimensions(texts)}
    return run_backtest(
        build_strategy(cls, combo),
        spec.bars,
        spec.broker,
        spec.risk,
        spec.timeframe,
        instrument=spec.instrument,
        start_us=spec.start_us,
        gaps=list(spec.gaps),
        detail=spec.detail if detailed else None,
        detail_timeframe=spec.detail_timeframe if detailed else None,
    )


def _runner(spec: JobSpec) -> Any:
    from sptrader.backtest.sweep import Runner

    return Runner(
        spec.bars,
        spec.broker,
        spec.risk,
        spec.timeframe,
        instrument=spec.instrument,
        start_us=spec.start_us,
        gaps=list(spec.gaps),
        workers=spec.workers,
        objective=spec.objective,
    )


def _sweep(spec: JobSpec, cls: type, say: Progress) -> dict[str, Any]:
    from sptrader.backtest import optimize

    dims = optimize.dimensions(list(spec.params))
    total = optimize.space_size(dims) if spec.trials is None else spec.trials
    say(0, min(total, optimize.space_size(dims)), "combinations")
    with _runner(spec) as runner:
        found = optimize.search(
            cls,
            dims,
            runner,
            objective=spec.objective,
            trials=spec.trials,
            seed=spec.seed,
            progress=lambda done, total: say(done, total, "combinations"),
        )
        if _cancelled.is_set():
            raise _Cancelled()
    best = found.best
    best_run = None
    if best is not None:
        # The best combination's own run: its curve and trades (a sweep keeps summaries).
        best_run = run_json(_run_one(spec, cls, _texts(best.params)))
    return {
        "sweep": {
            "method": found.method,
            "combinations": found.evaluated,
            "space": found.space,
            "trials": found.trials,
            "seed": found.seed,
            "varied": [dim.name for dim in dims if len(dim.values) > 1],
            "rows": [_row_json(row) for row in found.rows[: spec.top]],
            "elapsed_s": found.elapsed_s,
            "workers": runner.workers,
        },
        "run": best_run,
    }


def _walk_forward(spec: JobSpec, cls: type, say: Progress) -> tuple[dict[str, Any], Any]:
    """The walk-forward's part of the result, and its stitched out-of-sample run (whose
    trades a Monte Carlo draws from; None without one)."""
    from sptrader.backtest import optimize
    from sptrader.backtest.walkforward import folds, walk_forward

    assert spec.spans is not None
    dims = optimize.dimensions(list(spec.params))
    total = len(folds(spec.start_us, spec.end_us, *spec.spans, spec.anchored))
    say(0, total, "folds")
    with _runner(spec) as runner:
        found = walk_forward(
            cls,
            dims,
            runner,
            spec.bars,
            spec.broker,
            spec.risk,
            spec.timeframe,
            start_us=spec.start_us,
            end_us=spec.end_us,
            train_us=spec.spans[0],
            test_us=spec.spans[1],
            anchored=spec.anchored,
            objective=spec.objective,
            trials=spec.trials,
            seed=spec.seed,
            instrument=spec.instrument,
            gaps=list(spec.gaps),
            on_fold=lambda fold, count: say(fold.fold.index, count, "folds"),
        )
        if _cancelled.is_set() or found.interrupted:
            raise _Cancelled()
    return {
        "walk_forward": {
            "method": found.method,
            "train_us": found.train_us,
            "test_us": found.test_us,
            "anchored": found.anchored,
            "total_folds": found.total_folds,
            "varied": [dim.name for dim in dims if len(dim.values) > 1],
            "folds": [
                {
                    "fold": fold.fold.index,
                    "train_start_us": fold.fold.train_start,
                    "train_end_us": fold.fold.train_end,
                    "test_start_us": fold.fold.test_start,
                    "test_end_us": fold.fold.test_end,
                    "params": fold.params,
                    "evaluated": fold.evaluated,
                    "in_score": fold.in_score,
                    "out_score": fold.out_score,
                    "in_sample": _figures(fold.in_sample),
                    "out_sample": _figures(fold.out_sample),
                    "error": fold.error,
                }
                for fold in found.folds
            ],
            "in_sample_mean": {key: found.mean("in_sample", key) for key in ROW_FIGURES},
            "out_sample_mean": {key: found.mean("out_sample", key) for key in ROW_FIGURES},
            "in_score_mean": found.mean_score("in_score"),
            "out_score_mean": found.mean_score("out_score"),
            "stitched_score": found.extra.get("stitched_score"),
            "efficiency": found.efficiency,
            "elapsed_s": found.elapsed_s,
            "workers": runner.workers,
        },
        "run": None if found.stitched is None else run_json(found.stitched),
    }, found.stitched


def _texts(params: dict[str, Any]) -> list[str]:
    """Chosen params back as ``k=v`` texts (``True`` → ``true``)."""
    return [
        f"{name}={str(value).lower() if isinstance(value, bool) else value}"
        for name, value in params.items()
    ]


def _figures(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if summary is None else {key: summary.get(key) for key in ROW_FIGURES}


def _row_json(row: Any) -> dict[str, Any]:
    if row.error is not None:
        return {"params": row.params, "error": row.error}
    return {"params": row.params, "score": row.score, "summary": _figures(row.summary)}


def _coverage(coverage: dict[str, Any]) -> dict[str, Any]:
    gaps = coverage.get("gaps") or []
    return {
        "coverage_pct": coverage.get("coverage_pct"),
        "gaps": len(gaps),
        "missing_minutes": sum(end - start for start, end in gaps) // 60_000_000,
        "allow_gaps": bool(coverage.get("allow_gaps")),
    }


def run_json(result: Any) -> dict[str, Any]:
    """One run (a BacktestResult) as the screen shows it: summary, curve, trades."""
    trades = result.trades
    kept = trades.head(TRADES_KEPT).select(TRADE_FIELDS)
    ts = result.equity["ts"].cast(pl.Datetime("us")).dt.epoch("us").to_numpy()
    times, values = downsample(ts, result.equity["equity"].to_numpy(), EQUITY_POINTS)
    return _clean(
        {
            "summary": {
                "strategy": result.strategy,
                "params": result.params,
                "instrument": result.instrument,
                "timeframe": result.timeframe,
                "start_us": result.start_us,
                "end_us": result.end_us,
                **result.summary,
            },
            "equity": {"ts_us": times, "equity": values, "points": int(ts.size)},
            "trades": kept.to_dicts(),
            "trades_total": trades.height,
            "rejected": len(result.rejected),
        }
    )


def downsample(ts: np.ndarray, values: np.ndarray, points: int) -> tuple[list[int], list[float]]:
    """At most ``points`` of the curve: the first and last, and each stretch's lowest and
    highest point in time order (a drawdown keeps its depth)."""
    count = int(values.size)
    if count <= points:
        return [int(t) for t in ts], [float(v) for v in values]
    stretches = max(1, (points - 2) // 2)
    edges = np.linspace(0, count, stretches + 1).astype(np.int64)
    keep = {0, count - 1}
    for low, high in itertools.pairwise(edges):
        if high > low:
            part = values[low:high]
            keep.add(int(low + part.argmin()))
            keep.add(int(low + part.argmax()))
    index = np.array(sorted(keep), dtype=np.int64)
    return [int(t) for t in ts[index]], [float(v) for v in values[index]]


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities null, tuples lists, numpy scalars Python's."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value
