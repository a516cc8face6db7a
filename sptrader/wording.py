"""Counts in words, for every line a user reads (CLI and TUI): ``1 day``, ``2 days``,
``1,000 bars``. Only the standard library: screens and commands both import it."""

from __future__ import annotations


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """``count`` with its noun, singular for exactly one (thousands grouped)."""
    noun = singular if count == 1 else (plural or f"{singular}s")
    return f"{count:,} {noun}"
