"""When markets are open, so that a closed market is not a gap.

Sessions:
- ``24x7``: always open (crypto, and the simulator, which has no weekends).
- ``fx``: open from Sunday to Friday, closed over the weekend window of the config
  (``data.fx_week_close`` to ``data.fx_week_open``, UTC; Friday 22:00 to Sunday 22:00
  by default). FX, metals and CFD indices use it.
- An exchange (``nyse``, ``lse``, ``xetra``, ``tse``): Monday to Friday between its
  local opening and closing times, in its time zone, so daylight saving moves the
  session in UTC. Exchange holidays are not known: a holiday shows as a gap.

A pure helper of the base layer: the config validates session names and the weekend
window with it, and the data manager finds gaps with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sptrader.errors import ConfigError
from sptrader.intervals import Interval, subtract
from sptrader.models import US_PER_DAY, US_PER_MINUTE

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True, slots=True)
class Exchange:
    zone: str
    opens: time
    closes: time


EXCHANGES = {
    "nyse": Exchange("America/New_York", time(9, 30), time(16, 0)),
    "nasdaq": Exchange("America/New_York", time(9, 30), time(16, 0)),
    "lse": Exchange("Europe/London", time(8, 0), time(16, 30)),
    "xetra": Exchange("Europe/Berlin", time(9, 0), time(17, 30)),
    "tse": Exchange("Asia/Tokyo", time(9, 0), time(15, 0)),
}
SESSIONS = ("24x7", "fx", *EXCHANGES)

# What an instrument kind trades like, unless the config says otherwise.
KIND_SESSIONS = {
    "crypto": "24x7",
    "fx": "fx",
    "metal": "fx",
    "index": "fx",
    "cfd": "fx",
    "commodity": "fx",
    "equity": "nyse",
}

_WEEK_TIME_RE = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)\s+(\d{1,2}):(\d\d)$", re.IGNORECASE)


def parse_week_time(text: str, key: str) -> int:
    """ "Fri 22:00" -> microseconds since Monday 00:00 UTC."""
    match = _WEEK_TIME_RE.match(text.strip())
    if not match or int(match.group(2)) > 23 or int(match.group(3)) > 59:
        raise ConfigError(f'{key}: expected a weekday and UTC time like "Fri 22:00", got {text!r}')
    day = WEEKDAYS.index(match.group(1).lower())
    return day * US_PER_DAY + (int(match.group(2)) * 60 + int(match.group(3))) * US_PER_MINUTE


# 1970-01-05 was a Monday: weeks are counted from there.
_MONDAY_US = 4 * US_PER_DAY
_WEEK_US = 7 * US_PER_DAY


def open_ranges(
    session: str, start_us: int, end_us: int, *, fx_close_us: int, fx_open_us: int
) -> list[Interval]:
    """The parts of [start, end) in which ``session`` is open."""
    if start_us >= end_us:
        return []
    if session == "24x7":
        return [(start_us, end_us)]
    if session == "fx":
        return subtract([(start_us, end_us)], _fx_closed(start_us, end_us, fx_close_us, fx_open_us))
    exchange = EXCHANGES.get(session)
    if exchange is None:
        raise ConfigError(f"unknown session {session!r} (known: {', '.join(SESSIONS)})")
    return _exchange_open(exchange, start_us, end_us)


def _fx_closed(start_us: int, end_us: int, close_us: int, open_us: int) -> list[Interval]:
    """Weekly closed windows overlapping [start, end) (the window may wrap into the
    next week: Friday close to Sunday open)."""
    length = (open_us - close_us) % _WEEK_US
    week = (start_us - _MONDAY_US) // _WEEK_US - 1
    closed = []
    while True:
        closes = _MONDAY_US + week * _WEEK_US + close_us
        if closes >= end_us:
            break
        closed.append((closes, closes + length))
        week += 1
    return closed


def _exchange_open(exchange: Exchange, start_us: int, end_us: int) -> list[Interval]:
    zone = ZoneInfo(exchange.zone)
    first = datetime.fromtimestamp(start_us / 1e6, UTC).date() - timedelta(days=1)
    last = datetime.fromtimestamp(end_us / 1e6, UTC).date() + timedelta(days=1)
    ranges = []
    day: date = first
    while day <= last:
        if day.weekday() < 5:
            opens = datetime.combine(day, exchange.opens, zone).timestamp()
            closes = datetime.combine(day, exchange.closes, zone).timestamp()
            session = (max(start_us, int(opens * 1e6)), min(end_us, int(closes * 1e6)))
            if session[0] < session[1]:
                ranges.append(session)
        day += timedelta(days=1)
    return ranges
