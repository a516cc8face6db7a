"""``sptrader data check | ensure | status``: what is stored, what is missing, fetching it
(through the client ``connect()`` gives: a running daemon's engine, or this process's)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from sptrader.client.connect import connect
from sptrader.client.protocol import EngineClient
from sptrader.clock import datetime_to_us, now_us, parse_time
from sptrader.commands.backfill import backfill_showing_progress, interrupted_line
from sptrader.config import Settings
from sptrader.data_view import heat_text
from sptrader.errors import UsageError
from sptrader.intervals import merge
from sptrader.models import (
    US_PER_DAY,
    US_PER_MINUTE,
    BackfillProgressed,
    normalize_instrument,
    timeframe_minutes,
)
from sptrader.wording import counted


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


def status_json(status: dict[str, Any], window_start_us: int) -> dict[str, Any]:
    """One instrument's status with ISO 8601 UTC times, as every command's JSON has them:
    ``first``/``last`` bar, gaps as ``{"from", "to"}`` and each day's covered fraction."""
    from sptrader.clock import format_us

    def iso(us: int | None) -> str | None:
        return format_us(int(us)) if us else None

    return {
        "instrument": status["instrument"],
        "source": status["source"],
        "first": iso(status["first_us"]),
        "last": iso(status["last_us"]),
        "bars": status["bars"],
        "coverage_pct": status["coverage_pct"],
        "gaps": [{"from": iso(start), "to": iso(end)} for start, end in status["gaps"]],
        "days": [
            {"day": format_us(window_start_us + index * US_PER_DAY)[:10], "covered": covered}
            for index, covered in enumerate(status["days"])
        ],
    }


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

    async def read() -> list[tuple[int, int]]:
        async with connect(settings) as client:
            return await client.data_gaps(instrument, start, end)

    gaps = widen(asyncio.run(read()), args.tf)
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


def _ensure(settings: Settings, args: argparse.Namespace) -> int:
    instruments = list(dict.fromkeys(normalize_instrument(name) for name in args.instruments))
    start, end = _window(args)

    latest: dict[str, BackfillProgressed] = {}

    async def fetch() -> int:
        async with connect(settings) as client:
            outcome = await backfill_showing_progress(
                client, instruments, start, end, latest=latest
            )
            return await _report(client, outcome, instruments, start, end)

    try:
        return asyncio.run(fetch())
    except KeyboardInterrupt:
        print(interrupted_line(latest), file=sys.stderr)
        return 130


async def _report(
    client: EngineClient,
    outcome: dict[str, BackfillProgressed],
    instruments: list[str],
    start: int,
    end: int,
) -> int:
    """Each instrument's fetch and what is still missing; 1 when anything is."""
    incomplete = 0
    for instrument in instruments:
        event = outcome.get(instrument)
        if event is not None and event.state == "failed":
            print(f"sptrader: fetching {instrument} failed: {event.message}", file=sys.stderr)
        gaps = await client.data_gaps(instrument, start, end)
        fetched = event.rows if event is not None else 0
        if gaps:
            incomplete += 1
            minutes = sum(e - s for s, e in gaps) // US_PER_MINUTE
            print(
                f"{instrument}: fetched {counted(fetched, 'bar')}; still {counted(len(gaps), 'gap')}"
                f" ({minutes:,} min)"
            )
        else:
            print(f"{instrument}: complete (fetched {counted(fetched, 'bar')})")
    return 1 if incomplete else 0


def _status(settings: Settings, args: argparse.Namespace) -> int:
    days = args.days  # 1 to limits.MAX_DAYS
    now = now_us()
    end = now - now % US_PER_DAY + US_PER_DAY
    start = end - days * US_PER_DAY
    instruments = [normalize_instrument(name) for name in args.instruments]

    async def read() -> list[dict]:
        async with connect(settings) as client:
            return await client.data_status(instruments or None, start, end)

    statuses = asyncio.run(read())
    held = _lake_held(settings, instruments)
    if args.json:
        rows = [status_json(status, start) for status in statuses]
        if settings.config.lake.uri.strip():
            for row in rows:
                row["lake"] = _lake_json(held.get(row["instrument"]))
            listed = {row["instrument"] for row in rows}
            rows += [
                {"instrument": name, "lake": _lake_json(held[name])}
                for name in sorted(held)
                if name not in listed
            ]
        json.dump(rows, sys.stdout)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from sptrader.clock import format_us

    table = Table(
        box=None,
        title=f"stored data, coverage of the last {counted(days, 'day')}",
        title_justify="left",
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
    if held:
        listed = [status["instrument"] for status in statuses]
        names = [name for name in listed if name in held] + sorted(set(held) - set(listed))
        print(f"lake {settings.config.lake.uri}:")
        for name in names:
            row = held[name]
            print(
                f"  {name}: {counted(row.rows, 'bar')} on {counted(row.days, 'day')},"
                f" {format_us(row.first_us)[:16].replace('T', ' ')}"
                f" → {format_us(row.last_us)[:16].replace('T', ' ')}"
            )
    return 0


def _lake_held(settings: Settings, instruments: list[str]) -> dict:
    """The lake's coverage per instrument (those asked for, or all); a lake that cannot
    be read is one line on stderr, not a failure of the store's status."""
    from sptrader.data.manager import lake_coverage
    from sptrader.errors import SptraderError

    try:
        held = lake_coverage(settings.config.lake, settings.home)
    except SptraderError as error:
        print(f"sptrader: {error}", file=sys.stderr)
        return {}
    return {name: row for name, row in held.items() if not instruments or name in instruments}


def _lake_json(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    from sptrader.clock import format_us

    return {
        "first": format_us(row.first_us),
        "last": format_us(row.last_us),
        "bars": row.rows,
        "days": row.days,
    }
