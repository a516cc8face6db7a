"""``sptrader symbols [QUERY] [--feed NAME]``: search every configured feed's instruments."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from sptrader.client.connection import call_daemon
from sptrader.client.paths import running_pid
from sptrader.config import Settings
from sptrader.engine import Engine
from sptrader.errors import UsageError
from sptrader.feeds.base import SymbolInfo


def check_feed(engine: Engine, feed: str | None) -> None:
    """A --feed that is not enabled is a usage error (here and in the daemon's API)."""
    names = [item.name for item in engine.enabled_feeds()]
    if feed is not None and feed not in names:
        raise UsageError(
            f"--feed {feed}: not an enabled feed (enabled: {', '.join(names) or 'none'})"
        )


def run_symbols(settings: Settings, args: argparse.Namespace) -> int:
    feed = args.feed.lower() if args.feed else None
    if running_pid(settings.home) is not None:
        # The daemon holds the store (and the cache): ask it.
        rows = asyncio.run(
            call_daemon(
                settings.home, "search_symbols", query=args.query, feed=feed, limit=args.limit
            )
        )
        found = [SymbolInfo(*row) for row in rows]
    else:
        engine = Engine(settings)
        store = engine.open_store()
        try:
            check_feed(engine, feed)
            if args.refresh:
                for item in engine.enabled_feeds():
                    if feed is None or item.name == feed:
                        engine.symbols.ensure(item, refresh=True)
            found = engine.symbols.search(args.query, feed, args.limit)
        finally:
            store.close()
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
