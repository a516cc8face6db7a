"""``sptrader config check``: validate (loading already did) and summarise."""

from __future__ import annotations

from sptrader.config import Settings


def run_config_check(settings: Settings) -> int:
    config = settings.config
    source = (
        str(settings.config_path)
        if settings.config_path
        else "built-in defaults (no config file found)"
    )
    feeds = [name for name in ("sim", "replay") if getattr(config.feeds, name).enabled]
    lines = [
        f"config: {source} is valid",
        f"home: {settings.home}",
        f"store: {settings.store_path} (ticks kept for: {', '.join(config.store.keep_ticks) or 'none'})",
        f"feeds enabled: {', '.join(feeds) or 'none'}",
        f"watchlist ({len(config.watchlist)}): {', '.join(config.watchlist)}",
        f"timeframes: {', '.join(config.chart.timeframes)} (default {config.chart.default_timeframe})",
    ]
    if config.keymap:
        lines.append(f"keymap: {', '.join(f'{k}={v}' for k, v in config.keymap.items())}")
    print("\n".join(lines))
    return 0
