"""UTC time helpers: integer microseconds in the hot path, ISO 8601 with Z at the edges."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from sptrader.errors import UsageError


def now_us() -> int:
    return time.time_ns() // 1000


def datetime_to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_time(text: str, *, what: str = "time") -> datetime:
    """Parse a user-given date or datetime as UTC; raise a one-line UsageError if bad."""
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise UsageError(
            f"bad {what} {text!r}: use ISO 8601, e.g. 2026-11-20 or 2026-11-20T14:30Z"
        ) from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_us(ts_us: int) -> str:
    """ISO 8601 UTC to the second, e.g. 2026-11-20T14:00:00Z."""
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
