"""``sptrader config check``: validate (loading already did), check the watchlist's
symbols against each feed's instrument list (in a running daemon's engine, or this
process's), and summarise."""

from __future__ import annotations

import asyncio
import sys

from sptrader.client.connect import connect
from sptrader.commands.instruments import suggestion, unknown_instruments
from sptrader.config import KNOWN_FEEDS, Settings, feed_config
from sptrader.errors import ConfigError, StoreLockedError
from sptrader.wording import live_venues_line


def run_config_check(settings: Settings, args: object = None) -> int:
    config = settings.config
    source = (
        str(settings.config_path)
        if settings.config_path
        else "built-in defaults (no config file found)"
    )
    feeds = [feed.lower() for feed in KNOWN_FEEDS if feed_config(config, feed).enabled]
    _check_symbols(settings, source)
    lines = [
        f"config: {source} is valid",
        f"home: {settings.home}",
        f"store: {settings.store_path} (ticks kept for: {', '.join(config.store.keep_ticks) or 'none'})",
        f"feeds enabled: {', '.join(feeds) or 'none'}",
        live_venues_line(config),
        f"watchlist ({len(config.watchlist)}): {', '.join(config.watchlist)}",
        f"timeframes: {', '.join(config.chart.timeframes)} (default {config.chart.default_timeframe})",
    ]
    if config.keymap:
        lines.append(f"keymap: {', '.join(f'{k}={v}' for k, v in config.keymap.items())}")
    print("\n".join(lines))
    return 0


def _check_symbols(settings: Settings, source: str) -> None:
    """Unknown watchlist symbols are a config error; feeds whose list cannot be fetched
    (offline) are only reported."""
    watchlist = list(settings.config.watchlist)

    async def check() -> tuple[list[str], list[str], str] | None:
        try:
            async with connect(settings) as client:
                _, unchecked = await client.unknown_symbols(watchlist)
                unknown = await unknown_instruments(client, watchlist)
                hint = await suggestion(client, unknown[0]) if unknown else ""
                return unknown, unchecked, hint
        except StoreLockedError:
            return None  # another process (not a daemon) holds the store

    checked = asyncio.run(check())
    if checked is None:
        print("symbols: not checked (the store is in use)", file=sys.stderr)
        return
    unknown, unchecked, hint = checked
    for problem in unchecked:
        print(f"symbols: could not check {problem}", file=sys.stderr)
    if unknown:
        index = watchlist.index(unknown[0])
        feed = unknown[0].split(":", 1)[0].lower()
        raise ConfigError(
            f"{source}: watchlist[{index}]: unknown symbol {unknown[0]} (not in {feed}'s"
            f" instrument list; {hint})"
        )
