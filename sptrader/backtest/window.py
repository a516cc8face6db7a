"""What every backtest needs before it runs, shared by ``sptrader backtest`` and the
engine's backtest jobs (:mod:`sptrader.backtest.jobs`), so both refuse the same things
in the same words:

- :func:`strategies_and_warmup`: every parameter set built (a bad value is a usage error
  naming it) and the bars of warm-up the longest lookback needs;
- :func:`load_bars`: the window's bars through an engine client (its missing history
  fetched first when a feed can serve it), preceded by that warm-up, with the window's
  coverage;
- :func:`checked_coverage`: a window with holes refused (unless allowed), one without
  bars refused, and the coverage a report shows.

The client is any ``EngineClient`` (typed loosely here: the client package sits above
the backtester).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import polars as pl

from sptrader.clock import format_us
from sptrader.errors import SptraderError, UsageError
from sptrader.models import US_PER_MINUTE
from sptrader.strategies.base import Strategy

__all__ = [
    "WindowData",
    "checked_coverage",
    "load_bars",
    "load_bars_with_lake",
    "refusal",
    "strategies_and_warmup",
]

#: How the command's user runs over holes anyway.
ALLOW_GAPS_OPTION = "run with --allow-gaps"

#: ``fetch(client, instrument, start_us, end_us)``: fetch the missing history of the
#: window (how progress is shown is the caller's).
Fetch = Callable[[Any, str, int, int], Awaitable[None]]


class WindowData:
    """A window's bars (warm-up first), its holes and coverage, and the instrument's
    price precision from its feed (None: unknown)."""

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
        self.detail: pl.DataFrame | None = None  # --detail's finer bars


def strategies_and_warmup(
    cls: type[Strategy], dims: Sequence[Any], trials: int | None, timeframe: str
) -> tuple[list[Strategy], int]:
    """Every combination a grid runs, built (and its indicators checked) up front, or for
    a TPE search of ``trials`` (whose space may be far larger) each value on its own; and
    the warm-up bars the longest of them needs (informative higher timeframes too)."""
    from sptrader.backtest import optimize, sweep

    combos = (
        sweep.combinations(optimize.grid_of(dims))
        if trials is None
        else optimize.value_combinations(dims)
    )
    strategies = [sweep.build_strategy(cls, combo) for combo in combos]
    warmup = max(
        _warmup(cls, strategy, combo) for strategy, combo in zip(strategies, combos, strict=True)
    )
    return strategies, warmup + _informative_warmup(strategies, timeframe)


def _warmup(cls: type, strategy: Any, combo: dict[str, str]) -> int:
    from sptrader.backtest.sweep import warmup_of

    try:
        return warmup_of(strategy)
    except Exception as error:
        given = " ".join(f"{key}={value}" for key, value in combo.items())
        raise UsageError(
            f"strategy {cls.name} cannot run with {given or 'its defaults'}: {error}"
        ) from None


def _informative_warmup(strategies: list[Any], timeframe: str) -> int:
    """Bars of ``timeframe`` the informative (higher timeframe) columns need first."""
    from sptrader.strategies.informative import informative_warmup

    return max(informative_warmup(strategy, timeframe) for strategy in strategies)


async def load_bars(
    client: Any,
    instrument: str,
    timeframe: str,
    start: int,
    end: int,
    warmup: int,
    fetch: Fetch | None = None,
) -> WindowData:
    """The window's bars (its missing history fetched first with ``fetch`` when a feed
    can serve it), preceded by up to ``warmup`` stored bars, and its coverage."""
    gaps = await client.data_gaps(instrument, start, end)  # an unknown one: a usage error
    if gaps and fetch is not None and await client.history_source(instrument) is not None:
        await fetch(client, instrument, start, end)
    started = time.perf_counter()
    statuses = await client.data_status([instrument], start, end)
    status = statuses[0] if statuses else {"gaps": [], "coverage_pct": None}
    bars = await client.candles(instrument, timeframe, start_us=start, end_us=end)
    if warmup > 0:
        older = await client.bars_before(instrument, timeframe, start, warmup)
        if older.height:
            bars = pl.concat([older, bars])
    return WindowData(
        instrument,
        bars,
        [tuple(gap) for gap in status["gaps"]],
        status["coverage_pct"],
        time.perf_counter() - started,
        (await client.price_decimals([instrument])).get(instrument),
    )


async def load_bars_with_lake(
    client: Any,
    lake: Any,
    source: str,
    instrument: str,
    timeframe: str,
    start: int,
    end: int,
    warmup: int,
    detail: str | None = None,
) -> WindowData:
    """``load_bars`` for ``--source lake`` (the lake's bars only) or ``auto`` (the
    store's, completed by the lake's minutes the store does not hold). Nothing is
    fetched from the feeds. The holes are the open market time the store does not hold
    (its gaps) that no run of the lake's bars covers either."""
    from sptrader.intervals import subtract
    from sptrader.lake.candles import completed, finish, held_runs, last_lake_candles
    from sptrader.lake.candles import one_minute_window as rows_of
    from sptrader.lake.read import read_bars

    started = time.perf_counter()
    statuses = await client.data_status([instrument], start, end)
    status = statuses[0] if statuses else {"gaps": [], "coverage_pct": None}
    store_gaps = [tuple(gap) for gap in status["gaps"]]

    async def one_minute(tf: str) -> tuple[pl.DataFrame, int]:
        first, rows_end = rows_of(tf, start, end)
        held = await asyncio.to_thread(read_bars, lake, instrument, first, rows_end)
        if source == "auto":
            stored = await client.candles(instrument, "1m", start_us=first, end_us=rows_end)
            held = completed(stored, held)
        return held, rows_end

    minutes, _ = await one_minute(timeframe)
    bars = finish(minutes, timeframe, end)
    if warmup > 0:
        older = pl.DataFrame(schema=bars.schema)
        if source == "auto":
            older = await client.bars_before(instrument, timeframe, start, warmup)
        if older.height < warmup:
            before = older["ts"].dt.epoch("us").item(0) if older.height else start
            lake_older = await asyncio.to_thread(
                last_lake_candles, lake, instrument, timeframe, warmup - older.height, before
            )
            older = pl.concat([lake_older, older]) if lake_older.height else older
        if older.height:
            bars = pl.concat([older.select(bars.columns).cast(bars.schema), bars])
    gaps = subtract(store_gaps, held_runs(minutes))
    coverage_pct = status["coverage_pct"]
    if coverage_pct is not None and coverage_pct < 100 and store_gaps:
        missing = sum(e - s for s, e in store_gaps)
        open_time = missing / (1 - coverage_pct / 100)
        coverage_pct = 100 * (1 - sum(e - s for s, e in gaps) / open_time)
    data = WindowData(
        instrument,
        bars,
        [tuple(gap) for gap in gaps],
        coverage_pct,
        time.perf_counter() - started,
        (await client.price_decimals([instrument])).get(instrument),
    )
    if detail:
        finer, _ = await one_minute(detail)
        data.detail = finish(finer, detail, end).filter(
            pl.col("ts") >= pl.lit(start).cast(pl.Datetime("us"))
        )
    return data


def checked_coverage(
    data: WindowData,
    timeframe: str,
    start: int,
    end: int,
    allow_gaps: bool,
    remedy: str = ALLOW_GAPS_OPTION,
) -> dict[str, Any]:
    """The window's coverage (``report.coverage_dict``'s input); an SptraderError when
    open market time is missing (unless ``allow_gaps``; ``remedy`` says how to allow
    them) or no bar is stored in it."""
    if data.gaps and not allow_gaps:
        raise SptraderError(refusal(data.instrument, start, end, data.gaps, remedy))
    traded = data.bars.filter(pl.col("ts") >= pl.lit(start).cast(pl.Datetime("us")))
    if traded.is_empty():
        raise SptraderError(
            f"no {timeframe} bars of {data.instrument} stored between {format_us(start)} and"
            f" {format_us(end)}"
        )
    return {
        "from_us": start,
        "to_us": end,
        "coverage_pct": data.coverage_pct,
        "gaps": data.gaps,
        "allow_gaps": allow_gaps,
    }


def refusal(
    instrument: str,
    start: int,
    end: int,
    gaps: list[tuple[int, int]],
    remedy: str = ALLOW_GAPS_OPTION,
) -> str:
    minutes = sum(e - s for s, e in gaps) // US_PER_MINUTE
    first = gaps[0]
    count = len(gaps)
    return (
        f"{instrument}: {minutes:,} minutes of open market time in the window are not stored"
        f" ({count} gap{'s' if count != 1 else ''}, the first {format_us(first[0])} →"
        f" {format_us(first[1])}); fetch them with `sptrader data ensure {instrument}"
        f" --from {format_us(start)} --to {format_us(end)}` or {remedy}"
    )
