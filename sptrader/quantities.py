"""Numbers as traders type them (``1,000``, ``10k``, ``1.5m``): one parser for the
order ticket and the CLI, so both accept the same quantities and prices."""

from __future__ import annotations

import math

from sptrader.errors import UsageError

SUFFIXES = {"k": 1e3, "m": 1e6}


def parse_number(text: str, what: str) -> float | None:
    """A number as a trader types it (``1,000``, ``100k``, ``1.5m``); None when empty;
    a UsageError naming ``what`` when it is not a (finite) number."""
    cleaned = text.strip().replace(",", "").replace("_", "").lower()
    if not cleaned:
        return None
    scale = 1.0
    if cleaned[-1] in SUFFIXES:
        scale = SUFFIXES[cleaned[-1]]
        cleaned = cleaned[:-1]
    try:
        value = float(cleaned) * scale
    except ValueError:
        raise UsageError(f"{what} must be a number, not {text.strip()!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"{what} must be a finite number")
    return value
