"""Counts in words, for every line a user reads (CLI and TUI): ``1 day``, ``2 days``,
``1,000 bars``; which venues trade live. Only the standard library: screens and
commands both import it."""

from __future__ import annotations

from typing import Any


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` with its noun, singular for exactly one (thousands grouped)."""
    noun = singular if count == 1 else (plural or f"{singular}s")
    return f"{count:,} {noun}"


def live_venues_line(config: Any) -> str:
    """Which venues route real orders, said at every start (paper only, by default)."""
    live = [
        f"{name} at {getattr(section, 'rest_url', '') or getattr(section, 'gateway_url', '')}"
        for name in type(config.brokers).__struct_fields__
        if (section := getattr(config.brokers, name)).live
    ]
    if not live:
        return 'trading: paper only (no [brokers.NAME] has trading = "live")'
    return "LIVE trading (real orders): " + ", ".join(live)
