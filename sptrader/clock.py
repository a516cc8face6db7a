"""UTC time helpers: integer microseconds in the hot path, ISO 8601 with Z at the edges."""

from __future__ import annotations

import functools
import time
from datetime import UTC, date, datetime

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


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


@functools.lru_cache(maxsize=64)
def _day_start_us(day: str) -> int:
    # Cached: a stream's timestamps share a handful of dates.
    return (date.fromisoformat(day).toordinal() - _EPOCH_ORDINAL) * 86_400_000_000


def rfc3339_to_us(text: str, *, utc_only: bool = False) -> int:
    """``2023-02-09T20:30:37.167359596Z`` (any number of fractional digits, ``Z`` or
    ``±HH:MM``) to integer microseconds since the epoch, without a datetime per call
    (feeds parse one per message); digits past the microsecond are dropped.
    ``utc_only`` accepts only the ``T`` separator and ``Z``. ValueError otherwise."""
    if len(text) < 20 or text[13] != ":" or text[16] != ":":
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    if text[10] not in ("T" if utc_only else "Tt ") or (utc_only and text[-1] != "Z"):
        raise ValueError(f"not an RFC 3339 UTC time: {text!r}")
    us = (
        _day_start_us(text[:10])
        + (int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])) * 1_000_000
    )
    rest = text[19:]
    if rest[-1:] in ("Z", "z"):
        fraction = rest[:-1]
    elif len(rest) >= 6 and rest[-6] in "+-" and rest[-3] == ":":
        fraction = rest[:-6]
        offset_us = (int(rest[-5:-3]) * 3600 + int(rest[-2:]) * 60) * 1_000_000
        us += offset_us if rest[-6] == "-" else -offset_us
    else:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    if fraction:
        digits = fraction[1:]
        if fraction[0] != "." or not (digits.isascii() and digits.isdigit()):
            raise ValueError(f"not an RFC 3339 time: {text!r}")
        us += int(digits[:6].ljust(6, "0"))
    return us
