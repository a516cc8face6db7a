"""``sptrader shadow report [SCANNER] [--days N] [--format table|json]``: each shadow
variation of a scanner beside its live parameters, over the signals of the last N days
(``EngineClient.shadow_report``: the daemon's engine while one runs, else this process's
store; pending outcomes are resolved first)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from sptrader.client.connect import connect
from sptrader.commands.trading import iso_fields, print_table, write_json
from sptrader.config import Settings
from sptrader.errors import UsageError

HEADERS = (
    "SCANNER",
    "VARIATION",
    "PARAMS",
    "SIGNALS",
    "OPEN",
    "TARGET",
    "STOP",
    "TIMEOUT",
    "HIT %",
    "AVG %",
    "TOTAL %",
    "AVG VS LIVE",
)


def run_shadow(settings: Settings, args: argparse.Namespace) -> int:
    names = [config.name for config in settings.config.scanners]
    if args.scanner is not None and args.scanner not in names:
        known = ", ".join(names) or "none configured"
        raise UsageError(f"unknown scanner {args.scanner!r} (scanners: {known})")

    async def read() -> list[dict[str, Any]]:
        async with connect(settings) as client:
            return await client.shadow_report(args.scanner, args.days)

    rows = asyncio.run(read())
    if args.format == "json":
        write_json([iso_fields(row) for row in rows])
        return 0
    if not rows:
        if args.scanner:
            print(f"scanner {args.scanner!r} has no shadow variations (add [[scanners.shadow]])")
        else:
            print("no scanner has shadow variations (add [[scanners.shadow]] to one)")
        return 0
    print_table(
        f"Shadow testing, signals of the last {args.days} days (entry at the next bar's"
        " open; out at the target, the stop or a timeout)",
        HEADERS,
        [cells(row) for row in rows],
        left=("SCANNER", "VARIATION", "PARAMS"),
        width=120,  # whole rows when piped, not squeezed to 80 columns
    )
    return 0


def cells(row: dict[str, Any]) -> list[str]:
    """One report row as the table shows it."""
    return [
        row["scanner"],
        row["variation"],
        params_cell(row),
        str(row["signals"]),
        str(row["pending"]),
        str(row["wins"]),
        str(row["losses"]),
        str(row["timeouts"]),
        "-" if row["hit_rate_pct"] is None else f"{row['hit_rate_pct']:.1f}",
        number(row["avg_return_pct"], places=3),
        number(row["total_return_pct"]),
        number(row["vs_live_avg_return_pct"], places=3),
    ]


def params_cell(row: dict[str, Any]) -> str:
    """Live's params; a variation's as it differs from live's."""
    shown = row["params"] if row["variation"] == "live" else row["changed"]
    text = ", ".join(f"{key}={value}" for key, value in shown.items())
    if not text:
        text = "defaults" if row["variation"] == "live" else "as live"
    return text if row["configured"] else f"{text} (not configured)"


def number(value: float | None, *, places: int = 2) -> str:
    """A signed percentage ("-" when there is none)."""
    return "-" if value is None else f"{value:+.{places}f}"
