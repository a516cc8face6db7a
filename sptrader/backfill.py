"""History backfill: download 1m bars (and, for tick sources, ticks) for instruments
over a date range, in resumable ranges, a few requests at a time.

What is missing of each instrument's range (the coverage lacks it, and the market was
open) is cut on its feed's ``history_chunk_us`` grid; whatever is covered is skipped, so
an interrupted backfill resumes.
Pieces are fetched concurrently (at most the feed's ``max_concurrency`` in flight),
retried with backoff, and written through the store's idempotent upsert. For an
instrument the engine is streaming, ranges stop two minutes before now: the live edge
belongs to its feed.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sptrader.clock import now_us
from sptrader.errors import UsageError
from sptrader.feeds.base import Feed
from sptrader.intervals import clip, split, subtract
from sptrader.models import US_PER_MINUTE, BackfillProgressed
from sptrader.store import Store

log = logging.getLogger(__name__)

ATTEMPTS = 3
LIVE_EDGE_US = 2 * US_PER_MINUTE


class _Abandoned(Exception):
    """A piece fetched after the backfill was cancelled: not stored."""


@dataclass(slots=True)
class _Job:
    instrument: str
    feed: Feed
    pieces: list[tuple[int, int]]
    skipped: int
    done: int = 0
    rows: int = 0
    failed: str = ""
    started: float = 0.0

    @property
    def total(self) -> int:
        return len(self.pieces) + self.skipped


def plan_pieces(
    gaps: list[tuple[int, int]], start_us: int, end_us: int, chunk_us: int
) -> tuple[list[tuple[int, int]], int]:
    """The missing ranges of [start, end) cut on a ``chunk_us`` grid, and how many grid
    chunks of the range had nothing missing (reported as already stored)."""
    pieces = split(clip(gaps, start_us, end_us), chunk_us)
    first_chunk = start_us // chunk_us
    chunks = (end_us - 1) // chunk_us - first_chunk + 1
    with_gaps = {piece[0] // chunk_us for piece in pieces}
    return pieces, chunks - len(with_gaps)


class InFlight:
    """One lock per (instrument, chunk): two backfills of the same range (a chart and
    `data ensure`, say) fetch it once; the second finds it stored and skips it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, int], threading.Lock] = {}

    def lock(self, instrument: str, chunk: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((instrument, chunk), threading.Lock())


class Backfill:
    def __init__(
        self,
        store: Store,
        feed_for: Callable[[str], Feed | None],
        *,
        keep_ticks: Callable[[str], bool] = lambda instrument: False,
        on_progress: Callable[[BackfillProgressed], None] = lambda event: None,
        sleep: Callable[[float], None] | None = None,
        gaps: Callable[[str, int, int], list[tuple[int, int]]] | None = None,
        in_flight: InFlight | None = None,
        live_edge_us: Callable[[str], int] = lambda instrument: 0,
    ) -> None:
        self.store = store
        self.feed_for = feed_for
        # What is missing of a range: by default what coverage lacks; the data manager
        # also leaves out the hours the market is closed.
        self.gaps = gaps or self._uncovered
        self.in_flight = in_flight or InFlight()
        # How far behind now to stop: a streaming instrument's last minutes belong to
        # its live feed (the engine passes LIVE_EDGE_US for those).
        self.live_edge_us = live_edge_us
        self.keep_ticks = keep_ticks
        self.on_progress = on_progress
        self._lock = threading.Lock()
        # Held while a fetched piece is written: a cancel waits for that, not for fetches.
        self._storing = threading.Lock()
        self._cancelled = threading.Event()
        # Waiting between retries ends early when the backfill is cancelled.
        self.sleep = sleep or self._cancelled.wait

    def cancel(self) -> None:
        """Stop after the requests in flight (the engine is stopping)."""
        self._cancelled.set()

    def plan(self, instruments: list[str], start_us: int, end_us: int) -> list[_Job]:
        start_us -= start_us % US_PER_MINUTE
        jobs = []
        for instrument in instruments:
            feed = self.feed_for(instrument)
            if feed is None:
                raise UsageError(
                    f"{instrument}: no enabled feed serves its history (enable its [feeds.*])"
                )
            # Never reach the live edge, nor history the source has not published yet
            # (an empty answer there would be recorded as done, leaving a hole).
            last = min(end_us, now_us() - max(self.live_edge_us(instrument), feed.history_delay_us))
            last -= last % US_PER_MINUTE
            if start_us >= last:
                raise UsageError(
                    f"{instrument}: nothing to backfill: --from must be before --to and the past"
                )
            pieces, skipped = plan_pieces(
                self.gaps(instrument, start_us, last), start_us, last, feed.history_chunk_us
            )
            jobs.append(_Job(instrument, feed, pieces, skipped, done=skipped))
        return jobs

    def _uncovered(self, instrument: str, start_us: int, end_us: int) -> list[tuple[int, int]]:
        return subtract([(start_us, end_us)], self.store.coverage(instrument))

    def run(self, jobs: list[_Job]) -> list[_Job]:
        """Fetch and store every piece (blocking); returns the jobs with their outcome.

        Cancelled, it returns at once: requests still in flight are abandoned (their
        answers are not stored) rather than waited for, so Ctrl+C or an engine's stop
        takes well under a second even against a slow venue."""
        limits = {job.feed.name: threading.Semaphore(job.feed.max_concurrency) for job in jobs}
        workers = max((job.feed.max_concurrency for job in jobs), default=1) * len(limits)
        started = time.monotonic()
        for job in jobs:
            job.started = started
            self._report(job, "running" if job.pieces else "done")
        # Round-robin over instruments: all of them progress together.
        order = itertools.chain.from_iterable(
            itertools.zip_longest(*[[(job, piece) for piece in job.pieces] for job in jobs])
        )
        work: queue.SimpleQueue[tuple[_Job, tuple[int, int]] | None] = queue.SimpleQueue()
        for item in order:
            if item is not None:
                work.put(item)
        count = max(1, min(workers, work.qsize()))
        for _ in range(count):
            work.put(None)  # one stop mark per worker

        def worker() -> None:
            while (item := work.get()) is not None and not self._cancelled.is_set():
                job, piece = item
                self._piece(job, piece, limits[job.feed.name])

        # Daemon threads: a request in flight when the backfill is cancelled must not
        # keep the process alive (a pool's threads are joined at exit).
        threads = [
            threading.Thread(target=worker, name=f"backfill-{index}", daemon=True)
            for index in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive() and not self._cancelled.is_set():
                thread.join(0.05)
        # A piece being written when the cancel came finishes; none starts after it.
        with self._storing:
            pass
        for job in jobs:
            if self._cancelled.is_set() and not job.failed and job.done < job.total:
                job.failed = "cancelled (the engine stopped); run it again to resume"
            if job.pieces:
                self._report(job, "failed" if job.failed else "done", job.failed)
        return jobs

    def _piece(self, job: _Job, piece: tuple[int, int], limit: threading.Semaphore) -> None:
        if job.failed or self._cancelled.is_set():
            return  # failed for good (do not hammer the source), or cancelled
        chunk = piece[0] - piece[0] % job.feed.history_chunk_us
        rows = 0
        with limit, self.in_flight.lock(job.instrument, chunk):
            # Another backfill may have fetched it while this one waited.
            for sub_start, sub_end in subtract([piece], self.store.coverage(job.instrument)):
                for attempt in range(1, ATTEMPTS + 1):
                    try:
                        rows += self._fetch_and_store(job, sub_start, sub_end)
                        break
                    except Exception as error:
                        if self._cancelled.is_set():
                            return
                        if attempt == ATTEMPTS:
                            with self._lock:
                                job.failed = job.failed or f"{type(error).__name__}: {error}"
                            log.error("backfill %s: %s", job.instrument, error)
                            return
                        delay = 2.0**attempt
                        log.warning(
                            "backfill %s: %s; retrying in %.0fs", job.instrument, error, delay
                        )
                        self.sleep(delay)
                        if self._cancelled.is_set():
                            return
        with self._lock:
            job.done += 1
            job.rows += rows
            self._report(job, "running")

    def _fetch_and_store(self, job: _Job, start: int, end: int) -> int:
        feed, instrument = job.feed, job.instrument
        ticks = None
        fetch_ticks = getattr(feed, "history_with_ticks", None)
        if fetch_ticks is not None and self.keep_ticks(instrument):
            bars, ticks = fetch_ticks(instrument, start, end)
        else:
            bars = feed.history(instrument, start, end)
        rows = 0
        with self._storing:
            if self._cancelled.is_set():
                raise _Abandoned  # fetched after the cancel: the store may be closing
            if bars is not None and not bars.is_empty():
                rows = self.store.upsert_bars(bars)
            if ticks is not None and not ticks.is_empty():
                self.store.replace_ticks(instrument, start, end, ticks)
            # Recorded last: a crash before this line only means the piece is fetched again.
            self.store.add_coverage(instrument, "1m", feed.name, start, end)
        return rows

    def _report(self, job: _Job, state: str, message: str = "") -> None:
        self.on_progress(
            BackfillProgressed(
                now_us(),
                job.instrument,
                job.done,
                job.total,
                job.skipped,
                job.rows,
                time.monotonic() - job.started,
                state,
                message,
            )
        )
