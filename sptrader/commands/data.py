"""``sptrader data check | ensure | status``: what is stored, what is missing, fetching it."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from sptrader.client.paths import running_pid
from sptrader.clock import datetime_to_us, now_us, parse_time
from sptrader.config import Settings
from sptrader.data_view import heat_text
from sptrader.errors import UsageError
from sptrader.intervals import merge
from sptrader.models import US_PER_DAY, US_PER_MINUTE, normalize_instrument, timeframe_minutes


def _window(args: argparse.Namespace) -> tuple[int, int]:
    start = datetime_to_us(parse_time(args.start, what="--from time"))
    end = datetime_to_us(parse_time(args.end, what="--to time")) if args.end else now_us()
    if end <= start:
        raise UsageError("--to must be later than --from")
    return start, end


def widen(gaps: list[tuple[int, int]], timeframe: str) -> list[tuple[int, int]]:
    """Gaps in whole bars of ``timeframe``: a bar with any missing minute is missing."""
    width = timeframe_minutes(timeframe) * US_PER_MINUTE
    return merge((start - start % width, -(-end // width) * width) for start, end in gaps)


def gap_rows(gaps: list[tuple[int, int]]) -> list[dict[str, Any]]:
    from sptrader.clock import format_us

    return [
        {"from": format_us(start), "to": format_us(end), "minutes": (end - start) // US_PER_MINUTE}
        for start, end in gaps
    ]


def run_data(settings: Settings, args: argparse.Namespace) -> int:
    if args.data_command == "check":
        return _check(settings, args)
    if args.data_command == "ensure":
        return _ensure(settings, args)
    return _status(settings, args)


def _check(settings: Settings, args: argparse.Namespace) -> int:
    instrument = normalize_instrument(args.instrument)
    timeframe_minutes(args.tf)
    start, end = _window(args)
    gaps = widen(_gaps(settings, instrument, start, end), args.tf)
    rows = gap_rows(gaps)
    if args.format == "json":
        json.dump({"instrument": instrument, "complete": not gaps, "gaps": rows}, sys.stdout)
        sys.stdout.write("\n")
    elif not gaps:
        print(f"{instrument}: complete ({args.tf} bars, market hours only)")
    else:
        missing = sum(row["minutes"] for row in rows)
        print(
            f"{instrument}: {len(rows)} gap{'s' if len(rows) != 1 else ''}, {missing:,} minutes missing"
        )
        for row in rows:
            print(f"  {row['from']}  →  {row['to']}  ({row['minutes']:,} min)")
    return 1 if gaps else 0


def _gaps(settings: Settings, instrument: str, start: int, end: int) -> list[tuple[int, int]]:
    if running_pid(settings.home) is not None:
        from sptrader.client.connection import call_daemon

        rows = asyncio.run(
            call_daemon(
                settings.home, "data_gaps", instrument=instrument, start_us=start, end_us=end
            )
        )
        return [tuple(row) for row in rows]
    from sptrader.engine import Engine

    engine = Engine(settings)
    store = engine.open_store()
    try:
        return engine.data.gaps(engine.check_instrument(instrument), start, end)
    finally:
        store.close()


def _ensure(settings: Settings, args: argparse.Namespace) -> int:
    from sptrader.commands.backfill import backfill_with_progress

    instruments = list(dict.fromkeys(normalize_instrument(name) for name in args.instruments))
    start, end = _window(args)
    outcome = backfill_with_progress(settings, instruments, start, end)
    incomplete = 0
    for instrument in instruments:
        event = outcome.get(instrument)
        if event is not None and event.state == "failed":
            print(f"sptrader: fetching {instrument} failed: {event.message}", file=sys.stderr)
        gaps = _gaps(settings, instrument, start, end)
        fetched = event.rows if event is not None else 0
        if gaps:
            incomplete += 1
            minutes = sum(e - s for s, e in gaps) // US_PER_MINUTE
            print(
                f"{instrument}: fetched {fetched:,} bars; still {len(gaps)} gaps ({minutes:,} min)"
            )
        else:
            print(f"{instrument}: complete (fetched {fetched:,} bars)")
    return 1 if incomplete else 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    days = args.days  # 1 to limits.MAX_DAYS
    now = now_us()
    end = now - now % US_PER_DAY + US_PER_DAY
    start = end - days * US_PER_DAY
    instruments = [normalize_instrument(name) for name in args.instruments]
    statuses = _statuses(settings, instruments, start, end)
    if args.json:
        json.dump([status for status in statuses], sys.stdout)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from sptrader.clock import format_us

    table = Table(
        box=None, title=f"stored data, coverage of the last {days} days", title_justify="left"
    )
    for column in (
        "instrument",
        "source",
        "first bar",
        "last bar",
        "bars",
        "cover",
        "by day (old → new)",
    ):
        table.add_column(column, justify="right" if column in ("bars", "cover") else "left")
    for status in statuses:
        table.add_row(
            status["instrument"],
            status["source"] or "-",
            format_us(status["first_us"])[:16].replace("T", " ") if status["first_us"] else "-",
            format_us(status["last_us"])[:16].replace("T", " ") if status["last_us"] else "-",
            f"{status['bars']:,}",
            f"{status['coverage_pct']:.1f}%",
            heat_text(status["days"], Text),
        )
    Console(soft_wrap=True).print(table)
    return 0


def _statuses(settings: Settings, instruments: list[str], start: int, end: int) -> list[dict]:
    if running_pid(settings.home) is not None:
        from sptrader.client.connection import call_daemon

        return asyncio.run(
            call_daemon(
                settings.home, "data_status", instruments=instruments, start_us=start, end_us=end
            )
        )
    from sptrader.engine import Engine

    engine = Engine(settings)
    store = engine.open_store()
    try:
        return engine.data.statuses(instruments or None, start, end)
    finally:
        store.close()
