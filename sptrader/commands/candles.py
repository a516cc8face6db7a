"""``sptrader candles``: stored bars as a table, CSV or JSON. What is missing of the range
is fetched first, for up to --wait seconds, then in the background (by a running daemon,
or a detached `sptrader data ensure`).

``--source lake`` reads the ``[lake]`` Delta table instead (nothing fetched, no store
opened); ``--source auto`` the store, completed by the lake where the store holds no
bar (nothing fetched from the feeds either)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import polars as pl

from sptrader.client.connect import connect
from sptrader.clock import datetime_to_us, now_us, parse_time
from sptrader.commands.instruments import refuse_unknown
from sptrader.config import Settings
from sptrader.errors import UsageError
from sptrader.formatting import format_price, price_decimals
from sptrader.indicators import Spec, add_indicators, max_lookback, parse_specs
from sptrader.lake.candles import (
    completed,
    finish,
    lake_candles,
    last_lake_candles,
    one_minute_window,
)
from sptrader.lake.location import Lake, lake_of
from sptrader.lake.read import read_bars
from sptrader.models import US_PER_MINUTE, normalize_instrument, timeframe_minutes

DEFAULT_LAST = 100


def run_candles(settings: Settings, args: argparse.Namespace) -> int:
    instrument = normalize_instrument(args.instrument)
    timeframe_minutes(args.tf)
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
    last = args.last or DEFAULT_LAST
    source = getattr(args, "source", "store")
    if source == "store":
        bars, missing, attached, decimals = asyncio.run(
            _read(settings, instrument, args.tf, last, start_us, end_us, args.wait, specs)
        )
    else:
        lake = configured_lake(settings)
        bars, missing, attached, decimals = asyncio.run(
            _read_with_lake(
                settings, lake, source, instrument, args.tf, last, start_us, end_us, specs
            )
        )
    bars = _with_indicators(bars, specs, start_us, last)
    write_bars(bars, args.format, instrument, args.tf, decimals)
    if missing:
        doing = "the daemon is fetching them" if attached else "fetching them in the background"
        minutes = sum(end - start for start, end in missing) // US_PER_MINUTE
        print(
            f"{instrument}: {minutes:,} minutes of this range are not stored yet; {doing}"
            " (run again to see them)",
            file=sys.stderr,
        )
    return 0


async def _read(
    settings: Settings,
    instrument: str,
    timeframe: str,
    last: int,
    start_us: int | None,
    end_us: int | None,
    wait_s: float,
    specs: list[Spec],
) -> tuple[pl.DataFrame, list[tuple[int, int]], bool, int | None]:
    """The bars asked for, with the older ones the indicators warm up on, after fetching
    what is missing of them for up to ``wait_s`` seconds; what is still missing;
    whether a daemon answered; and the instrument's price decimals."""
    # Older bars read so the first printed rows have settled values (indicators.lookback).
    extra = max_lookback(specs)
    width = timeframe_minutes(timeframe) * US_PER_MINUTE
    async with connect(settings) as client:
        await refuse_unknown(client, [instrument])
        if start_us is not None:
            now = now_us()
            # Roughly the warm-up's time too (gaps may leave it short: then fewer of the
            # first rows have values); the read below takes whatever is stored before.
            window = (start_us - extra * width, min(end_us or now, now))
        else:
            window = await client.recent_window(instrument, timeframe, last + extra)
        missing = await client.fetch_missing(instrument, *window, wait_s)
        if start_us is None:
            bars = await client.candles(instrument, timeframe, last=last + extra)
        else:
            bars = await client.candles(
                instrument, timeframe, start_us=start_us, end_us=end_us or now_us()
            )
            if extra:
                older = await client.bars_before(instrument, timeframe, start_us, extra)
                bars = pl.concat([older, bars]) if not older.is_empty() else bars
        decimals = (await client.price_decimals([instrument])).get(instrument)
        return bars, missing, client.attached, decimals


def configured_lake(settings: Settings) -> Lake:
    """The ``[lake]`` a ``--source lake|auto`` reads; a usage error when none is set."""
    if not settings.config.lake.uri.strip():
        raise UsageError("--source lake and auto read [lake] uri: set it in the config")
    return lake_of(settings.config.lake, settings.home)


async def _read_with_lake(
    settings: Settings,
    lake: Lake,
    source: str,
    instrument: str,
    timeframe: str,
    last: int,
    start_us: int | None,
    end_us: int | None,
    specs: list[Spec],
) -> tuple[pl.DataFrame, list[tuple[int, int]], bool, int | None]:
    """``--source lake``: the lake's bars only (no feed is asked, no store opened).
    ``--source auto``: the store's bars (as ``--wait 0`` reads them), and the lake's
    for the minutes the store does not hold."""
    extra = max_lookback(specs)
    width = timeframe_minutes(timeframe) * US_PER_MINUTE
    if source == "lake":
        if start_us is None:
            bars = await asyncio.to_thread(
                last_lake_candles, lake, instrument, timeframe, last + extra
            )
        else:
            bars = await asyncio.to_thread(
                lake_candles,
                lake,
                instrument,
                timeframe,
                start_us - extra * width,
                end_us or now_us(),
            )
        return bars, [], False, None
    async with connect(settings) as client:
        if start_us is None:
            bars = await client.candles(instrument, timeframe, last=last + extra)
            if bars.height < last + extra:
                before = bars["ts"].dt.epoch("us").item(0) if bars.height else None
                older = await asyncio.to_thread(
                    last_lake_candles,
                    lake,
                    instrument,
                    timeframe,
                    last + extra - bars.height,
                    before,
                )
                bars = pl.concat([older, bars]) if older.height else bars
        else:
            end = end_us or now_us()
            first, rows_end = one_minute_window(timeframe, start_us - extra * width, end)
            stored = await client.candles(instrument, "1m", start_us=first, end_us=rows_end)
            held = await asyncio.to_thread(read_bars, lake, instrument, first, rows_end)
            bars = finish(completed(stored, held), timeframe, end)
        decimals = (await client.price_decimals([instrument])).get(instrument)
        return bars, [], client.attached, decimals


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


def _iso_column(bars: pl.DataFrame) -> pl.DataFrame:
    # Sums of volumes carry float noise (3277.2887290000003): six decimals is exact enough.
    volumes = [name for name in ("volume", "buy_volume", "sell_volume") if name in bars.columns]
    return bars.with_columns(
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ"), pl.col(volumes).round(6)
    )


def write_bars(
    bars: pl.DataFrame,
    output_format: str,
    instrument: str,
    timeframe: str,
    decimals: int | None = None,
) -> None:
    """The bars as CSV, JSON or a table whose prices (and price-scale indicator values)
    show the instrument's ``decimals``: every digit, grouped (48,109.96)."""
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
        places = price_decimals(decimals, bars["close"].tail(200).to_list())
        for ts, open_, high, low, close, volume, trades, *values in rows:
            table.add_row(
                ts,
                *(format_price(price, places) for price in (open_, high, low, close)),
                f"{volume:,.2f}",
                str(trades),
                *(format_price(value, places, missing="") for value in values),
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
