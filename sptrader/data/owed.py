"""Owed re-fetches: ranges of an instrument whose stored bars are known to be short,
fetched again from the venue's history until that succeeds.

A range is owed when trades were proven lost (a hole in the venue's trade ids, see
``feeds.sequence``) or a stream (re)joined mid-minute. Until it is fetched the range is
not covered: its coverage is removed when it becomes owed, and live coverage leaves it
out, so ``data check`` lists it as a hole. Every owed range is kept in the store's
``owed_refetch`` table, so a restart does not forget it; a failed fetch (REST down,
429, 503) is retried with a growing delay, never given up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from sptrader.clock import format_us, now_us
from sptrader.feeds.base import empty_bars
from sptrader.intervals import Interval, merge
from sptrader.models import US_PER_MINUTE, US_PER_SECOND, HistoryFetched
from sptrader.store import Store

log = logging.getLogger(__name__)

#: The venue's own bar of a minute is final this long after the minute closed.
SETTLE_US = 5 * US_PER_SECOND
#: Retry delays grow from this to RETRY_MAX_US.
RETRY_FIRST_US = 5 * US_PER_SECOND
RETRY_MAX_US = 300 * US_PER_SECOND
#: An empty answer for a range with live trades may mean "not published yet": asked
#: this many times before the venue's "nothing there" is believed.
EMPTY_ANSWERS_BELIEVED = 3


@dataclass(slots=True)
class Owed:
    instrument: str
    start_us: int
    end_us: int
    reason: str
    attempts: int = 0
    next_try_us: int = 0
    last_error: str = ""

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.instrument, self.start_us, self.end_us)


class OwedRefetches:
    """The owed ranges in memory (mirrored in ``owed_refetch``). Blocking methods say
    so; the rest run on the event loop."""

    def __init__(self, clock: Callable[[], int] = now_us) -> None:
        self._owed: dict[tuple[str, int, int], Owed] = {}
        self._in_flight: set[tuple[str, int, int]] = set()
        self._clock = clock
        self.fetched = 0
        self.failures = 0

    # --- what is owed -----------------------------------------------------------------

    def owe(self, instrument: str, start_us: int, end_us: int, reason: str) -> Owed | None:
        """Register a range (whole minutes); None if an owed range already holds it.
        Persist the returned one with ``save`` (blocking)."""
        start = start_us - start_us % US_PER_MINUTE
        end = -(-end_us // US_PER_MINUTE) * US_PER_MINUTE
        if start >= end:
            return None
        for owed in self._owed.values():
            if owed.instrument == instrument and owed.start_us <= start and end <= owed.end_us:
                return None
        owed = Owed(instrument, start, end, reason, next_try_us=end + SETTLE_US)
        self._owed[owed.key] = owed
        return owed

    def ranges(self, instrument: str) -> list[Interval]:
        """What of ``instrument`` is owed (not covered until fetched)."""
        return merge(
            (owed.start_us, owed.end_us)
            for owed in self._owed.values()
            if owed.instrument == instrument
        )

    def pending(self) -> list[Owed]:
        return sorted(self._owed.values(), key=lambda owed: (owed.instrument, owed.start_us))

    def count(self, instruments: list[str] | None = None) -> int:
        return sum(
            1
            for owed in self._owed.values()
            if instruments is None or owed.instrument in instruments
        )

    def due(self) -> list[Owed]:
        """Owed ranges to fetch now (closed, settled, their retry delay passed)."""
        now = self._clock()
        due = [
            owed
            for owed in self._owed.values()
            if now >= owed.next_try_us and owed.key not in self._in_flight
        ]
        # In flight from here until ``fetch`` ends: not handed out twice.
        self._in_flight.update(owed.key for owed in due)
        return due

    # --- fetching ---------------------------------------------------------------------

    def fetch(
        self, owed: Owed, history: Callable[[str, int, int], pl.DataFrame | None]
    ) -> HistoryFetched | None:
        """Fetch one owed range ``due`` handed out (blocking). The HistoryFetched to publish on success (the
        bar builder then hands it to the writer, which stores it and its coverage);
        None when it failed and stays owed, to be tried again later."""
        try:
            bars = history(owed.instrument, owed.start_us, owed.end_us)
        except Exception as error:
            self._retry_later(owed, (str(error) or type(error).__name__).splitlines()[0])
            return None
        finally:
            self._in_flight.discard(owed.key)
        if (bars is None or bars.is_empty()) and owed.attempts + 1 < EMPTY_ANSWERS_BELIEVED:
            self._retry_later(owed, "the venue has no bars there yet")
            return None
        self._owed.pop(owed.key, None)
        self.fetched += 1
        return HistoryFetched(
            owed.instrument, owed.start_us, owed.end_us, bars if bars is not None else empty_bars()
        )

    def _retry_later(self, owed: Owed, error: str) -> None:
        owed.attempts += 1
        owed.last_error = error
        delay = min(RETRY_MAX_US, RETRY_FIRST_US * 2 ** min(owed.attempts - 1, 16))
        owed.next_try_us = self._clock() + delay
        self.failures += 1
        if owed.attempts <= 3 or owed.attempts % 10 == 0:
            log.warning(
                "could not re-fetch %s %s-%s (%s, attempt %d): %s; trying again in %.0fs",
                owed.instrument,
                format_us(owed.start_us),
                format_us(owed.end_us),
                owed.reason,
                owed.attempts,
                error,
                delay / US_PER_SECOND,
            )

    # --- the store (blocking) ---------------------------------------------------------

    def load(self, store: Store) -> int:
        """Read what a previous run still owed."""
        rows = (
            store.cursor()
            .execute(
                "SELECT instrument, epoch_us(start_ts), epoch_us(end_ts), reason, attempts,"
                " epoch_us(next_try), last_error FROM owed_refetch"
            )
            .fetchall()
        )
        for row in rows:
            owed = Owed(*row)
            self._owed[owed.key] = owed
        return len(rows)

    def save(self, store: Store, owed: Owed) -> None:
        """Persist an owed range and take its coverage away: it is a hole until fetched."""
        with store.transaction() as cursor:
            cursor.execute(
                "DELETE FROM owed_refetch WHERE instrument = ? AND start_ts = make_timestamp(?)"
                " AND end_ts = make_timestamp(?)",
                list(owed.key),
            )
            cursor.execute(
                "INSERT INTO owed_refetch VALUES (?, make_timestamp(?), make_timestamp(?), ?,"
                " ?, make_timestamp(?), ?, make_timestamp(?))",
                [
                    *owed.key,
                    owed.reason,
                    owed.attempts,
                    owed.next_try_us,
                    owed.last_error,
                    self._clock(),
                ],
            )
            remove_coverage(cursor, owed.instrument, owed.start_us, owed.end_us)

    def sync(self, store: Store) -> None:
        """Mirror the in-memory state into the table: settled rows go, attempts and
        next tries are kept (blocking; cheap, the table is small)."""
        frame = pl.DataFrame(
            {
                "instrument": [owed.instrument for owed in self._owed.values()],
                "start_us": [owed.start_us for owed in self._owed.values()],
                "end_us": [owed.end_us for owed in self._owed.values()],
                "reason": [owed.reason for owed in self._owed.values()],
                "attempts": [owed.attempts for owed in self._owed.values()],
                "next_us": [owed.next_try_us for owed in self._owed.values()],
                "last_error": [owed.last_error for owed in self._owed.values()],
            },
            schema={
                "instrument": pl.String,
                "start_us": pl.Int64,
                "end_us": pl.Int64,
                "reason": pl.String,
                "attempts": pl.Int32,
                "next_us": pl.Int64,
                "last_error": pl.String,
            },
        )
        with store.transaction() as cursor:
            cursor.register("owed_now", frame)
            try:
                cursor.execute("DELETE FROM owed_refetch")
                cursor.execute(
                    "INSERT INTO owed_refetch SELECT instrument, make_timestamp(start_us),"
                    " make_timestamp(end_us), reason, attempts, make_timestamp(next_us),"
                    " last_error, now()::TIMESTAMP FROM owed_now"
                )
            finally:
                cursor.unregister("owed_now")


def remove_coverage(cursor: object, instrument: str, start_us: int, end_us: int) -> None:
    """Cut [start, end) out of every coverage range of ``instrument`` (1m), in the
    caller's transaction."""
    cursor.execute(  # type: ignore[attr-defined]
        "INSERT INTO coverage SELECT instrument, timeframe, source, make_timestamp(?), end_ts"
        " FROM coverage WHERE instrument = ? AND timeframe = '1m'"
        " AND start_ts < make_timestamp(?) AND end_ts > make_timestamp(?)",
        [end_us, instrument, end_us, end_us],
    )
    cursor.execute(  # type: ignore[attr-defined]
        "UPDATE coverage SET end_ts = make_timestamp(?) WHERE instrument = ? AND timeframe = '1m'"
        " AND start_ts < make_timestamp(?) AND end_ts > make_timestamp(?)",
        [start_us, instrument, start_us, start_us],
    )
    # Rows starting inside the range: gone, or (ending after it) already re-inserted
    # from its end above.
    cursor.execute(  # type: ignore[attr-defined]
        "DELETE FROM coverage WHERE instrument = ? AND timeframe = '1m'"
        " AND start_ts >= make_timestamp(?) AND start_ts < make_timestamp(?)",
        [instrument, start_us, end_us],
    )
