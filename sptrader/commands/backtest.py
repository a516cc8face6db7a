"""``sptrader backtest STRATEGY INSTRUMENT [--tf TF] --from T [--to T] [--param k=v]...
[--format table|json] [--plot] [--allow-gaps]`` and the research options.

The data, through the engine client (``connect``: the daemon's while one runs, it holds
the store): the window's missing history is fetched first, as ``sptrader data ensure``
does, then its bars are read with up to the strategy's warm-up of bars stored before
``--from`` (for its indicators and informative higher timeframes; they are not traded).
If open market time of the window is still missing, the backtest refuses to run (exit 1)
unless ``--allow-gaps``; then trades whose holding period spans a gap are marked. The
report gives the window's coverage either way.

What runs (``_mode``):

- one parameter set: one backtest (``--monte-carlo N`` adds the trade-order Monte Carlo,
  :mod:`sptrader.backtest.montecarlo`);
- several values for a parameter (``--param fast=5..30:5``, ``slow=20,40``): a sweep of
  every combination on all cores, best ``--objective`` first, or a TPE search of
  ``--trials N`` of them (:mod:`sptrader.backtest.optimize`); ``--top N`` shows the best N;
- ``--walk-forward train=90d,test=30d [--anchored]``: that choice made on each train
  fold and tested on the next (:mod:`sptrader.backtest.walkforward`);
- ``--check-bias``: the lookahead check of one parameter set (exit 1 when biased,
  :mod:`sptrader.backtest.bias`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

from sptrader.backtest.window import (
    WindowData,
    checked_coverage,
    load_bars,
    load_bars_with_lake,
    strategies_and_warmup,
)
from sptrader.client.connect import connect
from sptrader.client.protocol import EngineClient
from sptrader.clock import datetime_to_us, now_us, parse_time
from sptrader.config import Settings
from sptrader.errors import SptraderError, UsageError
from sptrader.formatting import price_decimals
from sptrader.models import normalize_instrument, timeframe_minutes

log = logging.getLogger(__name__)


def run_backtest_command(settings: Settings, args: argparse.Namespace) -> int:
    from sptrader.backtest import optimize
    from sptrader.strategies import registry

    cls = registry.resolve(args.strategy, settings.config.strategies.modules)
    dims = optimize.dimensions(args.params or [])
    varied = [dim.name for dim in dims if len(dim.values) > 1]
    objective = optimize.validate_objective(args.objective)
    instrument = normalize_instrument(args.instrument)
    timeframe_minutes(args.tf)
    start = datetime_to_us(parse_time(args.start, what="--from time"))
    end = datetime_to_us(parse_time(args.end, what="--to time")) if args.end else now_us()
    if end <= start:
        raise UsageError("--to must be later than --from")
    mode = _mode(args, varied)
    spans = None
    if mode == "walk-forward":
        from sptrader.backtest.walkforward import folds, parse_walk_forward

        spans = parse_walk_forward(args.walk_forward)
        folds(start, end, *spans, args.anchored)  # a window too short: said before loading
    strategies, warmup = strategies_and_warmup(cls, dims, args.trials, args.tf)

    data = _load(
        settings,
        instrument,
        args.tf,
        start,
        end,
        warmup,
        args.detail,
        getattr(args, "source", "store"),
    )
    coverage = checked_coverage(data, args.tf, start, end, args.allow_gaps)
    run = _Run(settings, args, cls, data, coverage, objective, start, end)
    if mode == "bias":
        return run.check_bias(strategies[0])
    if mode == "single":
        return run.single(strategies[0])
    if mode == "walk-forward":
        assert spans is not None
        return run.walk_forward(dims, varied, spans)
    return run.search(dims, varied, len(strategies))


def _mode(args: argparse.Namespace, varied: list[str]) -> str:
    """Which run the options ask for, refusing combinations that mean nothing (an
    option that would do nothing is an error, not silence)."""
    several = bool(varied)
    if args.plot and args.format == "json":
        raise UsageError("--plot draws an equity curve in the table format, not in JSON")
    if args.anchored and not args.walk_forward:
        raise UsageError("--anchored is a kind of walk-forward: give --walk-forward too")
    if args.detail:
        from sptrader.backtest.detail import check_detail

        check_detail(args.detail, args.tf)
        if several or args.walk_forward or args.check_bias:
            raise UsageError(
                "--detail fills one backtest on the finer bars: use it without a sweep,"
                " --walk-forward or --check-bias"
            )
    if args.check_bias:
        if several or args.walk_forward or args.trials or args.monte_carlo or args.top or args.plot:
            raise UsageError(
                "--check-bias checks one parameter set: give single --param values and no"
                " --walk-forward, --trials, --top, --monte-carlo or --plot"
            )
        return "bias"
    if args.walk_forward:
        if not several:
            raise UsageError(
                "--walk-forward optimises the --param ranges on each fold: give at least"
                " one, e.g. --param fast=5..30:5"
            )
        if args.top:
            raise UsageError("--top ranks a sweep's combinations; a walk-forward shows its folds")
        return "walk-forward"
    if args.trials is not None and not several:
        raise UsageError(
            "--trials searches the --param ranges or lists: give at least one, e.g."
            " --param fast=5..50:5"
        )
    if several:
        if args.monte_carlo:
            raise UsageError(
                "--monte-carlo reshuffles one run's trades: use it without a sweep, or with"
                " --walk-forward (its stitched out-of-sample trades)"
            )
        if args.plot:
            raise UsageError(
                "--plot draws one run's equity curve: use it with --format table, no sweep"
            )
        return "search"
    if args.top:
        raise UsageError("--top N ranks a sweep's combinations: give several --param values")
    if args.seed is not None and not args.monte_carlo:
        raise UsageError("--seed seeds a --trials search or --monte-carlo draws")
    return "single"


class _Run:
    """One backtest command's run, once its data is loaded: each mode prints its report
    and returns the exit code."""

    def __init__(
        self,
        settings: Settings,
        args: argparse.Namespace,
        cls: type,
        data: WindowData,
        coverage: dict[str, Any],
        objective: str,
        start: int,
        end: int,
    ) -> None:
        self.args = args
        self.cls = cls
        self.data = data
        self.coverage = coverage
        self.objective = objective
        self.start = start
        self.end = end
        self.config = settings.config

    def runner(self, runs: int) -> Any:
        import os

        from sptrader.backtest.sweep import Runner

        return Runner(
            self.data.bars,
            self.config.broker,
            self.config.risk,
            self.args.tf,
            instrument=self.data.instrument,
            start_us=self.start,
            gaps=self.data.gaps,
            workers=max(1, min(os.cpu_count() or 1, runs)),
            objective=self.objective,
        )

    def single(self, strategy: Any) -> int:
        from sptrader.backtest import report, run_backtest

        try:
            result = run_backtest(
                strategy,
                self.data.bars,
                self.config.broker,
                self.config.risk,
                self.args.tf,
                instrument=self.data.instrument,
                start_us=self.start,
                gaps=self.data.gaps,
                detail=self.data.detail,
                detail_timeframe=self.args.detail,
            )
        except SptraderError:
            raise
        except Exception as error:
            log.exception("backtest of %s failed", self.cls.name)
            raise _failed(self.cls.name, error) from None
        monte_carlo = self.monte_carlo(result)
        if self.args.format == "json":
            data = report.result_json(result, self.coverage, self.data.seconds)
            if monte_carlo is not None:
                from sptrader.backtest.montecarlo import to_json

                data["monte_carlo"] = report.clean(to_json(monte_carlo))
            report.write_json(data)
            return 0
        report.print_result(
            result,
            self.coverage,
            data_s=self.data.seconds,
            plot=self.args.plot,
            decimals=price_decimals(
                self.data.price_decimals, self.data.bars["close"].tail(200).to_list()
            ),
        )
        if monte_carlo is not None:
            from sptrader.backtest.research_report import print_monte_carlo

            print_monte_carlo(monte_carlo)
        return 0

    def monte_carlo(self, result: Any) -> Any:
        if not self.args.monte_carlo:
            return None
        from sptrader.backtest.montecarlo import monte_carlo

        return monte_carlo(
            result.trades["pnl"].to_numpy(),
            self.config.broker.starting_cash,
            self.args.monte_carlo,
            self.args.seed,
        )

    def search(self, dims: list[Any], varied: list[str], runs: int) -> int:
        from sptrader.backtest import optimize, report
        from sptrader.backtest.sweep import SweepInterrupted

        args = self.args
        started = time.perf_counter()
        runner = self.runner(runs if args.trials is None else max(runs, args.trials))
        interrupted: SweepInterrupted | None = None
        try:
            with runner:
                found = optimize.search(
                    self.cls,
                    dims,
                    runner,
                    objective=self.objective,
                    trials=args.trials,
                    seed=args.seed,
                )
            rows, how = found.rows, _search_info(found)
        except SweepInterrupted as stopped:
            interrupted, rows = stopped, stopped.rows  # Ctrl+C: print what was computed
            how = {"method": "grid" if args.trials is None else "tpe"}
        context: dict[str, Any] = {
            "strategy": self.cls.name,
            "instrument": self.data.instrument,
            "timeframe": args.tf,
            "coverage": self.coverage,
            "elapsed_s": time.perf_counter() - started,
            "objective": self.objective,
            "search": how,
            "top": args.top,
        }
        if args.format == "json":
            report.write_json(report.sweep_json(rows, **context))
        else:
            report.print_sweep(rows, varied=varied, workers=runner.workers, **context)
        if interrupted is not None:
            print(
                f"interrupted: {len(rows)}/{interrupted.total} combinations run"
                f"{' (the results so far above)' if rows else ''}",
                file=sys.stderr,
            )
            return 130
        return 0

    def walk_forward(self, dims: list[Any], varied: list[str], spans: tuple[int, int]) -> int:
        from sptrader.backtest import optimize
        from sptrader.backtest.research_report import (
            print_monte_carlo,
            print_walk_forward,
            walk_forward_json,
        )
        from sptrader.backtest.sweep import param_text
        from sptrader.backtest.walkforward import walk_forward

        args = self.args

        def said(fold: Any, total: int) -> None:
            chosen = " ".join(f"{k}={param_text(v)}" for k, v in (fold.params or {}).items())
            text = fold.error or f"best {chosen}"
            print(f"fold {fold.fold.index}/{total}: {text}", file=sys.stderr)

        runs = optimize.space_size(dims) if args.trials is None else args.trials
        with self.runner(runs) as runner:
            result = walk_forward(
                self.cls,
                dims,
                runner,
                self.data.bars,
                self.config.broker,
                self.config.risk,
                args.tf,
                start_us=self.start,
                end_us=self.end,
                train_us=spans[0],
                test_us=spans[1],
                anchored=args.anchored,
                objective=self.objective,
                trials=args.trials,
                seed=args.seed,
                instrument=self.data.instrument,
                gaps=self.data.gaps,
                on_fold=said,
            )
        monte_carlo = None
        if args.monte_carlo and result.stitched is not None:
            monte_carlo = self.monte_carlo(result.stitched)
        where = {
            "instrument": self.data.instrument,
            "timeframe": args.tf,
            "coverage": self.coverage,
        }
        if args.format == "json":
            from sptrader.backtest import report

            report.write_json(walk_forward_json(result, monte_carlo=monte_carlo, **where))
        else:
            print_walk_forward(result, varied=varied, workers=runner.workers, **where)
            if monte_carlo is not None:
                print_monte_carlo(monte_carlo)
            if args.plot and result.stitched is not None:
                from sptrader.backtest.report import equity_chart

                sys.stdout.write(equity_chart(result.stitched) + "\n")
        if result.interrupted:
            print(
                f"interrupted: {len(result.folds)}/{result.total_folds} folds run",
                file=sys.stderr,
            )
            return 130
        return 0

    def check_bias(self, strategy: Any) -> int:
        from sptrader.backtest import bias, report

        try:
            found = bias.check_bias(
                strategy,
                self.data.bars,
                self.args.tf,
                instrument=self.data.instrument,
                start_us=self.start,
            )
        except SptraderError:
            raise
        except Exception as error:
            log.exception("bias check of %s failed", self.cls.name)
            raise _failed(self.cls.name, error) from None
        if self.args.format == "json":
            report.write_json(report.clean(bias.findings_json(found)))
        else:
            bias.print_report(found, sys.stdout)
        return 1 if found.biased else 0


def _search_info(found: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"method": found.method, "space": found.space}
    if found.method == "tpe":
        info.update(
            trials=found.trials,
            asked=found.asked,
            duplicates=found.duplicates,
            seed=found.seed,
        )
    if found.extra.get("exhaustive"):
        info["exhaustive"] = True
    return info


def _failed(name: str, error: Exception) -> SptraderError:
    first_line = (str(error).strip().splitlines() or [""])[0]
    return SptraderError(f"strategy {name} failed: {type(error).__name__}: {first_line}")


# --- loading ----------------------------------------------------------------------------


def _load(
    settings: Settings,
    instrument: str,
    timeframe: str,
    start: int,
    end: int,
    warmup: int,
    detail: str | None = None,
    source: str = "store",
) -> WindowData:
    lake = None
    if source != "store":
        from sptrader.commands.candles import configured_lake

        lake = configured_lake(settings)

    async def load() -> WindowData:
        async with connect(settings) as client:
            if lake is not None:
                return await load_bars_with_lake(
                    client, lake, source, instrument, timeframe, start, end, warmup, detail
                )
            data = await load_bars(
                client, instrument, timeframe, start, end, warmup, fetch_showing_progress
            )
            if detail:
                # The finer path of the traded window (the gaps are the same minutes).
                data.detail = await client.candles(
                    data.instrument, detail, start_us=start, end_us=end
                )
            return data

    return asyncio.run(load())


async def fetch_showing_progress(
    client: EngineClient, instrument: str, start: int, end: int
) -> None:
    """Fetch what is missing as `sptrader data ensure` does; its progress bar goes to
    stderr, keeping stdout for the report."""
    from sptrader.commands.backfill import backfill_showing_progress

    print(f"{instrument}: fetching missing history…", file=sys.stderr)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            outcome = await backfill_showing_progress(client, [instrument], start, end)
    except SptraderError as error:
        # Nothing the feed can serve (the live edge only...): the gap check that follows
        # says what is missing.
        log.info("no backfill of %s: %s", instrument, error)
        return
    event = outcome.get(instrument)
    if event is not None and event.state == "failed":
        print(f"sptrader: fetching {instrument} failed: {event.message}", file=sys.stderr)
