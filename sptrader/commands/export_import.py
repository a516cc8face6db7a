"""``sptrader export`` (stored bars to Hive-partitioned Parquet/CSV) and ``sptrader
import`` (a file or an export's directory into the store). The formats, the checks and
the guarantees are in ``sptrader.data.transfer``.

With a daemon running it holds the DuckDB file (one process may open it for writing,
and then no other may open it at all): ``export`` then reads the bars through the
daemon's ``candles`` method (as ``sptrader candles`` does; an instrument outside the
watchlist is first topped up from its feed), and ``import`` refuses with one line
saying to stop the daemon (the API has no method to write bars).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import polars as pl

from sptrader.client.paths import running_pid
from sptrader.clock import datetime_to_us, now_us, parse_time
from sptrader.config import Settings
from sptrader.data import transfer
from sptrader.errors import SptraderError, StoreLockedError, UsageError
from sptrader.models import US_PER_DAY, normalize_instrument, timeframe_minutes
from sptrader.store import Store, queries


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
    out_dir = Path(args.out).expanduser()

    if running_pid(settings.home) is not None:
        summary = _export_through_daemon(
            settings, instruments, args.tf, start_us, end_us, out_dir, args.format
        )
    else:
        path = settings.store_path
        if not path.is_file():
            raise SptraderError(f"no database at {path}: nothing to export")
        store = Store.for_reading(path)
        try:
            _check_instruments(settings, store, instruments)

            def read(instrument: str, start: int, end: int) -> pl.DataFrame:
                return queries.bars_between(store, instrument, args.tf, start, end)

            summary = transfer.export_bars(
                read, instruments, start_us, end_us, out_dir, args.format, args.tf
            )
        finally:
            store.close()

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
        f" to {out_dir}: {summary.files:,} {args.format} file{'s' if summary.files != 1 else ''}"
        + (f", {summary.removed} stale day directories removed" if summary.removed else "")
    )
    if empty:
        print(f"no bars in {window} for {', '.join(empty)}", file=sys.stderr)
    return 0


def _check_instruments(settings: Settings, store: Store, instruments: list[str]) -> None:
    """An instrument that nothing stored and no configured feed serves is a mistake (a
    typo), said as the daemon's ``candles`` method says it (Engine.check_instrument)."""
    from sptrader.engine import Engine

    engine = Engine(settings)
    engine.store = store
    for name in instruments:
        engine.check_instrument(name)


def _day_us(text: str, what: str) -> int:
    moment = parse_time(text, what=f"{what} date")
    if moment.hour or moment.minute or moment.second or moment.microsecond:
        raise UsageError(
            f"{what} {text!r}: give a date (an export covers whole UTC days, one directory per day)"
        )
    return datetime_to_us(moment)


def _export_through_daemon(
    settings: Settings,
    instruments: list[str],
    timeframe: str,
    start_us: int,
    end_us: int,
    out_dir: Path,
    output_format: str,
) -> transfer.ExportSummary:
    from sptrader.client.connection import ApiConnection
    from sptrader.client.wire import candles_frame

    with asyncio.Runner() as runner:
        connection = ApiConnection(settings.home)
        runner.run(connection.open())
        try:

            def read(instrument: str, start: int, end: int) -> pl.DataFrame:
                rows = runner.run(
                    connection.call(
                        "candles",
                        instrument=instrument,
                        timeframe=timeframe,
                        start_us=start,
                        end_us=end,
                    )
                )
                return candles_frame(rows)

            # One reader at a time: the connection lives on this thread's loop.
            return transfer.export_bars(
                read, instruments, start_us, end_us, out_dir, output_format, timeframe
            )
        finally:
            runner.run(connection.close())


def run_import(settings: Settings, args: argparse.Namespace) -> int:
    pid = running_pid(settings.home)
    if pid is not None:
        raise StoreLockedError(
            f"the daemon (pid {pid}) holds the database: stop it (`sptrader stop`), import,"
            " then start it again"
        )
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
    store = Store(settings.store_path)
    try:
        store.migrate()
        summary = transfer.import_bars(store, loaded.bars)
    finally:
        store.close()
    duplicates = f"; {loaded.duplicates:,} repeated rows kept once" if loaded.duplicates else ""
    print(
        f"imported {summary.rows:,} bars of {summary.instruments} instrument"
        f"{'s' if summary.instruments != 1 else ''}"
        f" ({transfer.iso(summary.first_us)} .. {transfer.iso(summary.last_us)}){duplicates}"
    )
    return 0
