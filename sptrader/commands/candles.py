"""``sptrader candles``: stored bars as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
import time

import polars as pl

from sptrader.client.paths import running_pid
from sptrader.client.wire import candles_frame
from sptrader.clock import datetime_to_us, format_us, now_us, parse_time
from sptrader.config import Settings
from sptrader.engine import Engine
from sptrader.errors import UsageError
from sptrader.indicators import Spec, add_indicators, max_lookback, parse_specs
from sptrader.intervals import total
from sptrader.models import US_PER_DAY, US_PER_MINUTE, normalize_instrument, timeframe_minutes
from sptrader.store import Store, queries

DEFAULT_LAST = 100


def run_candles(settings: Settings, args: argparse.Namespace) -> int:
    instrument = normalize_instrument(args.instrument)
    minutes = timeframe_minutes(args.tf)
    # --last and --wait are bounded by their argument types (commands.arguments).
    if args.last is not None and (args.start or args.end):
        raise UsageError("use either --last N or --from/--to, not both")
    start_us = datetime_to_us(parse_time(args.start, what="--from time")) if args.start else None
    end_us = datetime_to_us(parse_time(args.end, what="--to time")) if args.end else None
    if start_us is not None and end_us is not None and end_us <= start_us:
        raise UsageError("--to must be later than --from")
    if args.end and not args.start:
        raise UsageError("--to needs --from")
    specs = parse_specs(args.indicators) if getattr(args, "indicators", None) else []
    # Older bars read so the first printed rows have settled values (indicators.lookback).
    extra = max_lookback(specs)

    if running_pid(settings.home) is not None:
        # The daemon holds the store (one writing process): ask it.
        bars, missing = asyncio.run(
            _candles_from_daemon(
                settings, instrument, args.tf, args.last, start_us, end_us, args.wait, extra
            )
        )
        bars = _with_indicators(bars, specs, start_us, args.last or DEFAULT_LAST)
        write_bars(bars, args.format, instrument, args.tf)
        _say_missing(instrument, missing, "the daemon is fetching them")
        return 0
    engine = Engine(settings)
    store = engine.open_store()
    try:
        instrument = engine.check_instrument(instrument)
        last = None if start_us is not None else (args.last or DEFAULT_LAST) + extra
        window = _window(engine, instrument, minutes, last, start_us, end_us)
        if start_us is not None and extra:
            # Roughly the warm-up's time too (gaps may leave it short: then fewer of the
            # first rows have values); the read below takes whatever is stored before.
            window = (window[0] - extra * minutes * US_PER_MINUTE, window[1])
        missing = _fetch_for_a_while(engine, instrument, window, args.wait)
        if start_us is not None:
            bars = queries.bars_between(store, instrument, args.tf, start_us, end_us or now_us())
            if extra:
                older = _bars_before(store, instrument, args.tf, start_us, extra)
                bars = pl.concat([older, bars]) if not older.is_empty() else bars
        else:
            bars = queries.last_bars(store, instrument, args.tf, last or DEFAULT_LAST)
    finally:
        store.close()
    if specs:
        bars = _with_indicators(bars, specs, start_us, args.last or DEFAULT_LAST)
    write_bars(bars, args.format, instrument, args.tf)
    if missing:
        _continue_in_background(settings, instrument, window)
        _say_missing(instrument, missing, "fetching them in the background")
    return 0


def _with_indicators(
    bars: pl.DataFrame, specs: list[Spec], start_us: int | None, last: int = DEFAULT_LAST
) -> pl.DataFrame:
    """The indicator columns computed over all of ``bars`` (warm-up rows included), then
    only the asked-for rows: those from ``start_us`` on, else the newest ``last``."""
    if not specs:
        return bars
    bars = add_indicators(bars, specs)
    if start_us is not None:
        return bars.filter(pl.col("ts") >= pl.lit(start_us).cast(pl.Datetime("us")))
    return bars.tail(last)


def _bars_before(
    store: Store, instrument: str, timeframe: str, start_us: int, count: int
) -> pl.DataFrame:
    """Up to ``count`` stored bars opening before ``start_us`` (the newest of them),
    looking further back (x4 each time) over gaps, as far as the first stored bar."""
    width = timeframe_minutes(timeframe) * US_PER_MINUTE
    first = queries.first_bar_ts(store, instrument)
    start = start_us - start_us % width
    if first == 0 or first >= start:
        return queries.empty_bars()
    span = (count + 1) * width
    while True:
        piece = queries.bars_between(store, instrument, timeframe, start - span, start)
        if piece.height >= count or start - span <= first:
            return piece.tail(count)
        span *= 4


def _window(
    engine: Engine,
    instrument: str,
    minutes: int,
    last: int | None,
    start_us: int | None,
    end_us: int | None,
) -> tuple[int, int]:
    """The time range the answer needs: the given one, or enough open market time back
    from now for the last N bars."""
    now = now_us()
    if start_us is not None:
        return start_us, min(end_us or now, now)
    # One bar more: the current one is still forming, history ends before it.
    wanted = ((last or DEFAULT_LAST) + 1) * minutes * US_PER_MINUTE
    start = now - wanted
    while (
        start > 0
        and total(engine.data.open_ranges(instrument, max(start, 0), now)) < wanted
        and now - start < 400 * US_PER_DAY
    ):
        start -= wanted
    # Nothing is older than 1970 (many daily bars back would be).
    return max(0, start - start % (minutes * US_PER_MINUTE)), now


def _fetch_for_a_while(
    engine: Engine, instrument: str, window: tuple[int, int], wait_s: float
) -> list[tuple[int, int]]:
    """Fetch what is missing of ``window`` for at most ``wait_s`` seconds; returns what
    is still missing (whatever arrived is stored and covered)."""
    gaps = engine.data.gaps(instrument, *window)
    if not gaps or wait_s == 0 or engine.history_feed(instrument) is None:
        return gaps
    backfill = engine.make_backfill()
    try:
        jobs = backfill.plan([instrument], *window)
    except UsageError:
        return gaps  # only the live edge is missing
    worker = threading.Thread(target=backfill.run, args=(jobs,), daemon=True)
    worker.start()
    worker.join(wait_s)
    if worker.is_alive():
        backfill.cancel()
        worker.join()
    return engine.data.gaps(instrument, *window)


def _continue_in_background(settings: Settings, instrument: str, window: tuple[int, int]) -> None:
    """A detached `sptrader data ensure` finishes the fetch after this command exits."""
    command = [
        sys.executable,
        "-m",
        "sptrader.cli",
        "--home",
        str(settings.home),
        *(["--config", str(settings.config_path)] if settings.config_path else []),
        "data",
        "ensure",
        instrument,
        "--from",
        format_us(window[0]),
        "--to",
        format_us(window[1]),
    ]
    subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _say_missing(instrument: str, missing: list[tuple[int, int]], doing: str) -> None:
    if missing:
        minutes = sum(end - start for start, end in missing) // US_PER_MINUTE
        print(
            f"{instrument}: {minutes:,} minutes of this range are not stored yet; {doing}"
            " (run again to see them)",
            file=sys.stderr,
        )


async def _candles_from_daemon(
    settings: Settings,
    instrument: str,
    timeframe: str,
    last: int | None,
    start_us: int | None,
    end_us: int | None,
    wait_s: float,
    extra: int = 0,
) -> tuple[pl.DataFrame, list[tuple[int, int]]]:
    from sptrader.client.connection import ApiConnection

    connection = ApiConnection(settings.home)
    await connection.open()
    try:
        width = timeframe_minutes(timeframe) * US_PER_MINUTE
        if start_us is not None:
            # Warm-up bars: their time with room for a weekend (the caller trims).
            ahead = 3 * extra * width + 3 * US_PER_DAY if extra else 0
            window = {"start_us": start_us - ahead, "end_us": end_us or now_us()}
            check = (start_us, min(end_us or now_us(), now_us()))
        else:
            window = {"last": (last or DEFAULT_LAST) + extra}
            span = ((last or DEFAULT_LAST) + 1) * timeframe_minutes(timeframe) * US_PER_MINUTE
            check = (max(0, now_us() - span), now_us())
        missing = await _missing(connection, instrument, check)
        if missing and wait_s > 0:
            await connection.call(
                "start_backfill", instruments=[instrument], start_us=check[0], end_us=check[1]
            )
            deadline = time.monotonic() + wait_s
            while missing and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                missing = await _missing(connection, instrument, check)
        rows = await connection.call(
            "candles", instrument=instrument, timeframe=timeframe, **window
        )
        return candles_frame(rows), missing
    finally:
        await connection.close()


async def _missing(connection, instrument: str, window: tuple[int, int]) -> list[tuple[int, int]]:
    rows = await connection.call(
        "data_gaps", instrument=instrument, start_us=window[0], end_us=window[1]
    )
    return [(start, end) for start, end in rows]


def _iso_column(bars: pl.DataFrame) -> pl.DataFrame:
    # Sums of volumes carry float noise (3277.2887290000003): six decimals is exact enough.
    volumes = [name for name in ("volume", "buy_volume", "sell_volume") if name in bars.columns]
    return bars.with_columns(
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), pl.col(volumes).round(6)
    )


def write_bars(bars: pl.DataFrame, output_format: str, instrument: str, timeframe: str) -> None:
    out = sys.stdout
    if output_format == "csv":
        out.write(_iso_column(bars).write_csv())
    elif output_format == "json":
        json.dump(_iso_column(bars).to_dicts(), out)
        out.write("\n")
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{instrument} {timeframe}", title_justify="left", box=None)
        base = ("ts", "open", "high", "low", "close", "volume", "trades")
        added = [c for c in bars.columns if c not in base]  # indicator columns (--with)
        for column in ("ts (UTC)", *base[1:], *added):
            table.add_column(column, justify="left" if column.startswith("ts") else "right")
        rows = _iso_column(bars).select(*base, *added).iter_rows()
        for ts, open_, high, low, close, volume, trades, *values in rows:
            table.add_row(
                ts,
                f"{open_:g}",
                f"{high:g}",
                f"{low:g}",
                f"{close:g}",
                f"{volume:,.2f}",
                str(trades),
                *("" if value is None else f"{value:g}" for value in values),
            )
        console = Console(file=out, soft_wrap=True)
        if added:
            # Indicator columns make it wide: rather long lines than squeezed numbers.
            console = Console(
                file=out, soft_wrap=True, width=max(console.width, 110 + 12 * len(added))
            )
        console.print(table)
        if bars.is_empty():
            print("no bars in that range", file=sys.stderr)
