"""When scanners and scheduled reports run: cron expressions (APScheduler 3's CronTrigger,
UTC) against a clock that tests replace.

The clock's ``sleep`` waits in chunks and the caller re-reads the wall clock after it:
``asyncio.sleep`` runs on the monotonic clock, which stops while the machine sleeps, so
a long wait would otherwise wake hours late without noticing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.triggers.cron import CronTrigger

# The longest single wait: a wall-clock jump (machine asleep) is noticed within this.
MAX_SLEEP_S = 30.0
# Missed fire times are counted up to this many (a year-old last run of "* * * * *").
MAX_COUNT = 100_000


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when told (``advance``/``set``); sleepers wake when the
    time they wait for has come."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._changed = asyncio.Event()

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment
        self._changed.set()

    def advance(self, seconds: float) -> None:
        self.set(self._now + timedelta(seconds=seconds))

    async def sleep(self, seconds: float) -> None:
        until = self._now + timedelta(seconds=max(0.0, seconds))
        while self._now < until:
            self._changed.clear()
            await self._changed.wait()
        await asyncio.sleep(0)


class CronSchedule:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.trigger = CronTrigger.from_crontab(expression, timezone=UTC)

    def next_after(self, moment: datetime) -> datetime | None:
        """The first fire time strictly after ``moment``."""
        # get_next_fire_time(previous, now) answers the first fire time >= now.
        probe = moment + timedelta(microseconds=1)
        return self.trigger.get_next_fire_time(None, probe)

    def count_between(self, after: datetime, until: datetime) -> int:
        """Fire times in (after, until]."""
        count = 0
        moment = self.next_after(after)
        while moment is not None and moment <= until and count < MAX_COUNT:
            count += 1
            moment = self.next_after(moment)
        return count

    def last_at_or_before(self, moment: datetime, after: datetime) -> datetime | None:
        """The newest fire time in (after, moment], or None."""
        newest = None
        probe = self.next_after(after)
        while probe is not None and probe <= moment:
            newest = probe
            probe = self.next_after(probe)
        return newest
