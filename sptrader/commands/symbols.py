"""``sptrader symbols [QUERY] [--feed NAME] [--refresh]``: search the enabled feeds'
instrument lists (fetched again first with --refresh), in a running daemon's engine or
this process's."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from sptrader.client.connect import connect
from sptrader.config import Settings
from sptrader.models import SymbolInfo


def run_symbols(settings: Settings, args: argparse.Namespace) -> int:
    feed = args.feed.lower() if args.feed else None

    async def search() -> list[SymbolInfo]:
        async with connect(settings) as client:
            if args.refresh:
                await client.refresh_symbols(feed)
            return await client.search_symbols(args.query, feed, args.limit)

    found = asyncio.run(search())
    if args.json:
        json.dump([_as_dict(item) for item in found], sys.stdout)
        sys.stdout.write("\n")
        return 0
    if not found:
        print(f"no instrument matches {args.query!r}", file=sys.stderr)
        return 1
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for column in ("instrument", "description", "kind"):
        table.add_column(column)
    for item in found:
        table.add_row(item.instrument, item.description, item.kind)
    Console(soft_wrap=True).print(table)
    return 0


def _as_dict(item: SymbolInfo) -> dict[str, str]:
    return {
        "instrument": item.instrument,
        "description": item.description,
        "kind": item.kind,
        "base": item.base,
        "quote": item.quote,
    }
