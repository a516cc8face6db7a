"""``sptrader export`` (stored bars to Hive-partitioned Parquet/CSV, or 1m bars to a
Delta Lake table: ``--format delta --out DIR|file://DIR|s3://bucket/prefix``) and ``sptrader
import`` (a file or an export's directory into the store). The formats, the checks and
the guarantees are in ``sptrader.data.transfer``.

Both go through the client ``connect()`` gives. ``export`` reads the bars with its
``candles`` (from a running daemon, which holds the DuckDB file, or this process's
store); ``import`` writes them with its ``import_bars``, which a daemon refuses with one
line saying to stop it (one process may open the file for writing, and the API carries
no bars).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import msgspec
import polars as pl

from sptrader.client.connect import connect
from sptrader.clock import datetime_to_us, now_us, parse_time
from sptrader.config import Settings
from sptrader.data import transfer
from sptrader.errors import SptraderError, UsageError
from sptrader.lake.location import Lake, lake_of
from sptrader.models import US_PER_DAY, normalize_instrument, timeframe_minutes


def run_export(settings: Settings, args: argparse.Namespace) -> int:
    instruments = list(dict.fromkeys(normalize_instrument(name) for name in args.instruments))
    timeframe_minutes(args.tf)
    start_us = _day_us(args.start, "--from")
    if args.end:
        end_us = _day_us(args.end, "--to")
    else:
        now = now_us()
        end_us = now - now % US_PER_DAY + US_PER_DAY  # tomorrow: today is included
    if end_us <= start_us:
        raise UsageError("--to must be later than --from")
    if args.format == "delta":
        if args.tf != "1m":
            raise UsageError("--format delta writes the lake's 1m bars: leave out --tf")
        # [lake]'s endpoint, region and key env vars serve an s3:// --out too.
        lake = lake_of(msgspec.structs.replace(settings.config.lake, uri=args.out))
        out: object = lake
    else:
        out = out_dir = Path(args.out).expanduser()

    if not settings.store_path.is_file():  # (a daemon's store is always there)
        raise SptraderError(f"no database at {settings.store_path}: nothing to export")
    if args.format == "delta":
        summary = asyncio.run(_export_delta(settings, instruments, start_us, end_us, lake))
    else:
        summary = asyncio.run(
            _export(settings, instruments, args.tf, start_us, end_us, out_dir, args.format)
        )

    window = f"{transfer.iso(start_us)[:10]} .. {transfer.iso(end_us)[:10]} (exclusive)"
    if summary.rows == 0:
        raise SptraderError(
            f"no {args.tf} bars of {', '.join(instruments)} in {window}; nothing written"
        )
    assert summary.first_us is not None and summary.last_us is not None
    empty = [name for name, count in summary.bars.items() if count == 0]
    exported = len(instruments) - len(empty)
    print(
        f"exported {summary.rows:,} {args.tf} bars of {exported} instrument{'s' if exported != 1 else ''}"
        f" ({transfer.iso(summary.first_us)} .. {transfer.iso(summary.last_us)})"
        + (
            f" to the Delta table {lake.bars_uri}: {summary.files:,} commit{'s' if summary.files != 1 else ''}"
            if args.format == "delta"
            else f" to {out}: {summary.files:,} {args.format} file{'s' if summary.files != 1 else ''}"
        )
        + (f", {summary.removed} stale day directories removed" if summary.removed else "")
    )
    if empty:
        print(f"no bars in {window} for {', '.join(empty)}", file=sys.stderr)
    return 0


def _day_us(text: str, what: str) -> int:
    moment = parse_time(text, what=f"{what} date")
    if moment.hour or moment.minute or moment.second or moment.microsecond:
        raise UsageError(
            f"{what} {text!r}: give a date (an export covers whole UTC days, one directory per day)"
        )
    return datetime_to_us(moment)


async def _export(
    settings: Settings,
    instruments: list[str],
    timeframe: str,
    start_us: int,
    end_us: int,
    out_dir: Path,
    output_format: str,
) -> transfer.ExportSummary:
    """``transfer.export_bars`` in a thread (it writes files), reading each chunk of bars
    through the client on this loop."""
    loop = asyncio.get_running_loop()
    async with connect(settings) as client:

        def read(instrument: str, start: int, end: int) -> pl.DataFrame:
            reading = client.candles(instrument, timeframe, start_us=start, end_us=end)
            return asyncio.run_coroutine_threadsafe(reading, loop).result()

        return await asyncio.to_thread(
            transfer.export_bars,
            read,
            instruments,
            start_us,
            end_us,
            out_dir,
            output_format,
            timeframe,
        )


async def _export_delta(
    settings: Settings, instruments: list[str], start_us: int, end_us: int, lake: Lake
) -> transfer.ExportSummary:
    """``transfer.export_delta`` in a thread, reading 1m bars through the client."""
    loop = asyncio.get_running_loop()
    async with connect(settings) as client:

        def read(instrument: str, start: int, end: int) -> pl.DataFrame:
            reading = client.candles(instrument, "1m", start_us=start, end_us=end)
            return asyncio.run_coroutine_threadsafe(reading, loop).result()

        return await asyncio.to_thread(
            transfer.export_delta, read, instruments, start_us, end_us, lake
        )


def run_import(settings: Settings, args: argparse.Namespace) -> int:
    instrument = normalize_instrument(args.instrument) if args.instrument else None
    path = Path(args.path).expanduser()
    loaded = transfer.load_bars(path, args.format, instrument)
    if loaded.bad_count:
        for bad in loaded.bad:
            print(f"{bad.where}: {bad.reason}", file=sys.stderr)
        if loaded.bad_count > len(loaded.bad):
            print(f"... and {loaded.bad_count - len(loaded.bad):,} more", file=sys.stderr)
        raise UsageError(
            f"{loaded.bad_count:,} bad row{'s' if loaded.bad_count != 1 else ''} in {path};"
            " nothing imported"
        )

    async def store() -> dict:
        async with connect(settings) as client:
            return await client.import_bars(loaded.bars)

    summary = asyncio.run(store())
    duplicates = f"; {loaded.duplicates:,} repeated rows kept once" if loaded.duplicates else ""
    print(
        f"imported {summary['rows']:,} bars of {summary['instruments']} instrument"
        f"{'s' if summary['instruments'] != 1 else ''}"
        f" ({transfer.iso(summary['first_us'])} .. {transfer.iso(summary['last_us'])}){duplicates}"
    )
    return 0
