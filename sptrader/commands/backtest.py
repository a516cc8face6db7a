"""``sptrader backtest STRATEGY INSTRUMENT [--tf TF] --from T [--to T] [--param k=v]...
[--format table|json] [--plot] [--allow-gaps]``.

The data, through the engine client (``connect``: the daemon's while one runs, it holds
the store): the window's missing history is fetched first, as ``sptrader data ensure``
does, then its bars are read with up to the strategy's warm-up of bars stored before
``--from`` (for its indicators; they are not traded). If open market time of the window
is still missing, the backtest refuses to run (exit 1) unless ``--allow-gaps``; then
trades whose holding period spans a gap are marked. The report gives the window's
coverage either way.

Several values for a parameter (``--param fast=5..30:5``, ``slow=20,40``) make a sweep:
every combination runs on all cores and one table row shows each (sptrader.backtest.sweep).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from typing import Any

import polars as pl

from sptrader.client.connect import connect
from sptrader.client.protocol import EngineClient
from sptrader.clock import datetime_to_us, format_us, now_us, parse_time
from sptrader.config import Settings
from sptrader.errors import SptraderError, UsageError
from sptrader.formatting import price_decimals
from sptrader.models import US_PER_MINUTE, normalize_instrument, timeframe_minutes

log = logging.getLogger(__name__)


class _Data:
    def __init__(
        self,
        instrument: str,
        bars: pl.DataFrame,
        gaps: list[tuple[int, int]],
        coverage_pct: float | None,
        seconds: float,
        price_decimals: int | None = None,
    ) -> None:
        self.instrument = instrument
        self.price_decimals = price_decimals  # the trades table's prices
        self.bars = bars
        self.gaps = gaps
        self.coverage_pct = coverage_pct
        self.seconds = seconds


def run_backtest_command(settings: Settings, args: argparse.Namespace) -> int:
    from sptrader.backtest import report, sweep
    from sptrader.indicators import max_lookback, parse_specs
    from sptrader.strategies import registry

    cls = registry.resolve(args.strategy, settings.config.strategies.modules)
    grid = sweep.parse_params(args.params or [])
    combos = sweep.combinations(grid)
    strategies = [sweep.build_strategy(cls, combo) for combo in combos]
    varied = [name for name, values in grid.items() if len(values) > 1]
    instrument = normalize_instrument(args.instrument)
    timeframe_minutes(args.tf)
    start = datetime_to_us(parse_time(args.start, what="--from time"))
    end = datetime_to_us(parse_time(args.end, what="--to time")) if args.end else now_us()
    if end <= start:
        raise UsageError("--to must be later than --from")
    if args.plot and (args.format == "json" or len(strategies) > 1):
        raise UsageError(
            "--plot draws one run's equity curve: use it with --format table, no sweep"
        )
    warmup = 0
    for strategy, combo in zip(strategies, combos, strict=True):
        try:
            asked = strategy.indicators()
            # No indicators (the base class's default) is a strategy on bare bars.
            specs = parse_specs(asked) if asked else []
        except Exception as error:
            given = " ".join(f"{key}={value}" for key, value in combo.items())
            raise UsageError(
                f"strategy {cls.name} cannot run with {given or 'its defaults'}: {error}"
            ) from None
        warmup = max(warmup, strategy.warmup_bars(), max_lookback(specs))

    data = _load(settings, instrument, args.tf, start, end, warmup)
    instrument = data.instrument
    if data.gaps and not args.allow_gaps:
        raise SptraderError(_refusal(instrument, start, end, data.gaps))
    traded = data.bars.filter(pl.col("ts") >= pl.lit(start).cast(pl.Datetime("us")))
    if traded.is_empty():
        raise SptraderError(
            f"no {args.tf} bars of {instrument} stored between {format_us(start)} and"
            f" {format_us(end)}"
        )
    coverage = {
        "from_us": start,
        "to_us": end,
        "coverage_pct": data.coverage_pct,
        "gaps": data.gaps,
        "allow_gaps": args.allow_gaps,
    }
    config = settings.config
    if len(strategies) == 1:
        from sptrader.backtest import run_backtest

        try:
            result = run_backtest(
                strategies[0],
                data.bars,
                config.broker,
                config.risk,
                args.tf,
                instrument=instrument,
                start_us=start,
                gaps=data.gaps,
            )
        except SptraderError:
            raise
        except Exception as error:
            log.exception("backtest of %s failed", cls.name)
            first_line = (str(error).strip().splitlines() or [""])[0]
            raise SptraderError(
                f"strategy {cls.name} failed: {type(error).__name__}: {first_line}"
            ) from None
        if args.format == "json":
            report.write_json(report.result_json(result, coverage, data.seconds))
        else:
            report.print_result(
                result,
                coverage,
                data_s=data.seconds,
                plot=args.plot,
                decimals=price_decimals(
                    data.price_decimals, data.bars["close"].tail(200).to_list()
                ),
            )
        return 0

    import os

    workers = max(1, min(os.cpu_count() or 1, len(strategies)))
    started = time.perf_counter()
    interrupted: sweep.SweepInterrupted | None = None
    try:
        rows = sweep.run_sweep(
            strategies,
            data.bars,
            config.broker,
            config.risk,
            args.tf,
            instrument=instrument,
            start_us=start,
            gaps=data.gaps,
            workers=workers,
        )
    except sweep.SweepInterrupted as stopped:
        interrupted, rows = stopped, stopped.rows  # Ctrl+C: print what was computed
    elapsed = time.perf_counter() - started
    context: dict[str, Any] = {
        "strategy": cls.name,
        "instrument": instrument,
        "timeframe": args.tf,
        "coverage": coverage,
        "elapsed_s": elapsed,
    }
    if args.format == "json":
        report.write_json(report.sweep_json(rows, **context))
    else:
        report.print_sweep(rows, varied=varied, workers=workers, **context)
    if interrupted is not None:
        print(
            f"interrupted: {len(rows)}/{interrupted.total} combinations run"
            f"{' (the results so far above)' if rows else ''}",
            file=sys.stderr,
        )
        return 130
    return 0


def _refusal(instrument: str, start: int, end: int, gaps: list[tuple[int, int]]) -> str:
    minutes = sum(e - s for s, e in gaps) // US_PER_MINUTE
    first = gaps[0]
    count = len(gaps)
    return (
        f"{instrument}: {minutes:,} minutes of open market time in the window are not stored"
        f" ({count} gap{'s' if count != 1 else ''}, the first {format_us(first[0])} →"
        f" {format_us(first[1])}); fetch them with `sptrader data ensure {instrument}"
        f" --from {format_us(start)} --to {format_us(end)}` or run with --allow-gaps"
    )


# --- loading ----------------------------------------------------------------------------


def _load(
    settings: Settings, instrument: str, timeframe: str, start: int, end: int, warmup: int
) -> _Data:
    async def load() -> _Data:
        async with connect(settings) as client:
            return await _load_bars(client, instrument, timeframe, start, end, warmup)

    return asyncio.run(load())


async def _load_bars(
    client: EngineClient, instrument: str, timeframe: str, start: int, end: int, warmup: int
) -> _Data:
    """The window's bars (its missing history fetched first), preceded by up to
    ``warmup`` stored bars, and its coverage."""
    gaps = await client.data_gaps(instrument, start, end)  # an unknown one: a usage error
    if gaps and await client.history_source(instrument) is not None:
        await _fetch(client, instrument, start, end)
    started = time.perf_counter()
    statuses = await client.data_status([instrument], start, end)
    status = statuses[0] if statuses else {"gaps": [], "coverage_pct": None}
    bars = await client.candles(instrument, timeframe, start_us=start, end_us=end)
    if warmup > 0:
        older = await client.bars_before(instrument, timeframe, start, warmup)
        if older.height:
            bars = pl.concat([older, bars])
    return _Data(
        instrument,
        bars,
        [tuple(gap) for gap in status["gaps"]],
        status["coverage_pct"],
        time.perf_counter() - started,
        (await client.price_decimals([instrument])).get(instrument),
    )


async def _fetch(client: EngineClient, instrument: str, start: int, end: int) -> None:
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
