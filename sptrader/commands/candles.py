"""``sptrader candles``: stored bars as a table, CSV or JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import polars as pl

from sptrader.api.connection import call_daemon
from sptrader.api.protocol import candles_frame
from sptrader.clock import datetime_to_us, now_us, parse_time
from sptrader.config import Settings
from sptrader.daemon import running_pid
from sptrader.engine import Engine
from sptrader.errors import UsageError
from sptrader.models import normalize_instrument, timeframe_minutes
from sptrader.store import queries

DEFAULT_LAST = 100


def run_candles(settings: Settings, args: argparse.Namespace) -> int:
    instrument = normalize_instrument(args.instrument)
    timeframe_minutes(args.tf)
    if args.last is not None and (args.start or args.end):
        raise UsageError("use either --last N or --from/--to, not both")
    if args.last is not None and args.last <= 0:
        raise UsageError(f"--last must be a positive number of bars, got {args.last}")
    start_us = datetime_to_us(parse_time(args.start, what="--from time")) if args.start else None
    end_us = datetime_to_us(parse_time(args.end, what="--to time")) if args.end else None
    if start_us is not None and end_us is not None and end_us <= start_us:
        raise UsageError("--to must be later than --from")
    if args.end and not args.start:
        raise UsageError("--to needs --from")

    if running_pid(settings.home) is not None:
        # The daemon holds the store (one writing process): ask it.
        bars = asyncio.run(
            _candles_from_daemon(settings, instrument, args.tf, args.last, start_us, end_us)
        )
        write_bars(bars, args.format, instrument, args.tf)
        return 0
    engine = Engine(settings)
    store = engine.open_store()
    try:
        instrument = engine.check_instrument(instrument)
        engine.seed_history([instrument])
        if start_us is not None:
            bars = queries.bars_between(store, instrument, args.tf, start_us, end_us or now_us())
        else:
            bars = queries.last_bars(store, instrument, args.tf, args.last or DEFAULT_LAST)
    finally:
        store.close()
    write_bars(bars, args.format, instrument, args.tf)
    return 0


async def _candles_from_daemon(
    settings: Settings,
    instrument: str,
    timeframe: str,
    last: int | None,
    start_us: int | None,
    end_us: int | None,
) -> pl.DataFrame:
    if start_us is not None:
        window = {"start_us": start_us, "end_us": end_us or now_us()}
    else:
        window = {"last": last or DEFAULT_LAST}
    rows = await call_daemon(
        settings.home, "candles", instrument=instrument, timeframe=timeframe, **window
    )
    return candles_frame(rows)


def _iso_column(bars: pl.DataFrame) -> pl.DataFrame:
    # Sums of volumes carry float noise (3277.2887290000003): six decimals is exact enough.
    return bars.with_columns(
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), pl.col("volume").round(6)
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
        for column in ("ts (UTC)", "open", "high", "low", "close", "volume", "trades"):
            table.add_column(column, justify="left" if column.startswith("ts") else "right")
        for ts, open_, high, low, close, volume, trades in _iso_column(bars).iter_rows():
            table.add_row(
                ts,
                f"{open_:g}",
                f"{high:g}",
                f"{low:g}",
                f"{close:g}",
                f"{volume:,.2f}",
                str(trades),
            )
        Console(file=out, soft_wrap=True).print(table)
        if bars.is_empty():
            print("no bars in that range", file=sys.stderr)
