"""``sptrader ml labels [SCANNER] [--from --to] [--format table|csv|json]``: one row per
labelled signal (``EngineClient.signal_labels``: the daemon's engine while one runs,
else this process's store; what became known is labelled first) and, in the table,
label counts and hit rates per strategy."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from sptrader.client.connect import connect
from sptrader.clock import datetime_to_us, parse_time
from sptrader.commands.trading import iso_fields, print_table, write_csv, write_json
from sptrader.config import Settings
from sptrader.errors import UsageError
from sptrader.scanners.labels import summary

COLUMNS = ("scanner", "instrument", "ts", "side", "label", "bars", "mfe", "mae", "return")
HEADERS = ("SCANNER", "INSTRUMENT", "BAR", "SIDE", "LABEL", "BARS", "MFE %", "MAE %", "RETURN %")


def run_ml(settings: Settings, args: argparse.Namespace) -> int:
    names = [config.name for config in settings.config.scanners]
    if args.scanner is not None and args.scanner not in names:
        known = ", ".join(names) or "none configured"
        raise UsageError(f"unknown scanner {args.scanner!r} (scanners: {known})")
    start = datetime_to_us(parse_time(args.start, what="--from time")) if args.start else None
    end = datetime_to_us(parse_time(args.end, what="--to time")) if args.end else None
    if start is not None and end is not None and end <= start:
        raise UsageError("--to must be after --from")

    async def read() -> list[dict[str, Any]]:
        async with connect(settings) as client:
            return await client.signal_labels(args.scanner, start, end)

    rows = [iso_fields(row) for row in asyncio.run(read())]
    if args.format == "json":
        write_json(rows)
        return 0
    if args.format == "csv":
        write_csv([{column: row[column] for column in COLUMNS} for row in rows], COLUMNS)
        return 0
    if not rows:
        print("no labelled signal yet (a signal is labelled once its horizon has closed)")
        return 0
    print_table(
        "Labelled signals (entry at the next bar's open; target, stop or timeout)",
        HEADERS,
        [_cells(row) for row in rows],
        left=("SCANNER", "INSTRUMENT", "BAR", "SIDE", "LABEL"),
        width=120,
    )
    strategies = {config.name: config.strategy for config in settings.config.scanners}
    print_table(
        "Per strategy (hit rate: targets of targets and stops)",
        ("STRATEGY", "SIGNALS", "TARGET", "STOP", "TIMEOUT", "HIT %", "AVG RETURN %"),
        [
            [
                entry["strategy"],
                str(entry["signals"]),
                str(entry["target"]),
                str(entry["stop"]),
                str(entry["timeout"]),
                "-" if entry["hit_rate_pct"] is None else f"{entry['hit_rate_pct']:.1f}",
                f"{entry['avg_return_pct']:+.3f}",
            ]
            for entry in summary(rows, strategies)
        ],
        left=("STRATEGY",),
        width=120,
    )
    return 0


def _cells(row: dict[str, Any]) -> list[str]:
    return [
        row["scanner"],
        row["instrument"],
        str(row["ts"]),
        row["side"],
        row["label"],
        str(row["bars"]),
        f"{row['mfe']:.3f}",
        f"{row['mae']:.3f}",
        f"{row['return']:+.3f}",
    ]
